/* kiln._kiln: the module object, kiln statuses as Python exceptions, the
 * argument converters, and the module-level functions of kiln.nd and
 * kiln.autograd (creation, the op library, barriers, recording).
 *
 * Op calls keep the GIL: they only check, infer and push (a few hundred
 * nanoseconds), and dropping and retaking the GIL would cost about as much.
 * Waits drop it, so other Python threads run while the engine computes. */
#include "kilnpy.h"

_Thread_local int kp_callback_depth;

/* KilnError and one subclass per status, each also deriving from the
 * built-in exception a Python programmer would catch for it. */
static PyObject *kp_errors[KILN_STATUS_COUNT];
static PyObject *kp_base_error;

PyObject *kp_raise(kiln_status status, const char *message) {
  PyObject *cls = (unsigned)status < KILN_STATUS_COUNT && kp_errors[status] ? kp_errors[status] : kp_base_error;
  PyObject *exc = PyObject_CallFunction(cls, "s", message && *message ? message : kiln_status_str(status));
  if (!exc) return NULL;
  PyObject *st = PyUnicode_FromString(kiln_status_name(status));
  if (st) PyObject_SetAttrString(exc, "status", st);
  Py_XDECREF(st);
  PyErr_SetObject(cls, exc);
  Py_DECREF(exc);
  return NULL;
}

PyObject *kp_raise_last(kiln_status status) { return kp_raise(status, kiln_last_error()); }

PyObject *kp_wrap(kiln_tensor *t) {
  if (kiln_tensor_failed(t)) {
    PyObject *r = kp_raise(kiln_tensor_status(t), kiln_tensor_error(t));
    kiln_tensor_release(t);
    return r;
  }
  kp_array *a = PyObject_New(kp_array, &kp_array_type);
  if (!a) {
    kiln_tensor_release(t);
    return NULL;
  }
  a->t = t;
  return (PyObject *)a;
}

static PyObject *stash_type, *stash_value, *stash_tb;

void kp_stash_exception(void) {
  if (stash_type) {
    PyErr_Clear(); /* the innermost exception is the cause; keep it */
    return;
  }
  PyErr_Fetch(&stash_type, &stash_value, &stash_tb);
}

int kp_restore_stashed(void) {
  if (!stash_type) return 0;
  PyErr_Restore(stash_type, stash_value, stash_tb);
  stash_type = stash_value = stash_tb = NULL;
  return 1;
}

int kp_dtype_from(PyObject *o, kiln_dtype *out) {
  if (o == Py_None) {
    *out = KILN_F32;
    return 0;
  }
  PyObject *s = PyUnicode_Check(o) ? (Py_INCREF(o), o) : PyObject_Str(o);
  if (!s) return -1;
  const char *name = PyUnicode_AsUTF8(s);
  int found = -1;
  for (int i = 0; name && i < KILN_DTYPE_COUNT; i++)
    if (!strcmp(name, kiln_dtype_name((kiln_dtype)i)) || (i == KILN_BOOL && !strcmp(name, "bool_"))) found = i;
  /* str(numpy.float32) is "<class 'numpy.float32'>"; accept the type's name too. */
  if (found < 0 && PyType_Check(o)) {
    const char *tn = ((PyTypeObject *)o)->tp_name;
    const char *dot = strrchr(tn, '.');
    tn = dot ? dot + 1 : tn;
    for (int i = 0; i < KILN_DTYPE_COUNT; i++)
      if (!strcmp(tn, kiln_dtype_name((kiln_dtype)i)) || (i == KILN_BOOL && !strcmp(tn, "bool_"))) found = i;
  }
  Py_DECREF(s);
  if (found < 0) {
    if (!PyErr_Occurred()) PyErr_Format(PyExc_TypeError, "kiln has no dtype %R (float32, float64, int32, int64, uint8, bool)", o);
    return -1;
  }
  *out = (kiln_dtype)found;
  return 0;
}

int kp_shape_from(PyObject *o, int64_t *shape) {
  if (PyLong_Check(o)) {
    shape[0] = PyLong_AsLongLong(o);
    return PyErr_Occurred() ? -1 : 1;
  }
  PyObject *seq = PySequence_Fast(o, "a shape is an int or a sequence of ints");
  if (!seq) return -1;
  Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
  if (n > KILN_MAX_DIMS) {
    Py_DECREF(seq);
    PyErr_Format(PyExc_ValueError, "a shape has at most %d dims, got %zd", KILN_MAX_DIMS, n);
    return -1;
  }
  for (Py_ssize_t i = 0; i < n; i++) {
    shape[i] = PyLong_AsLongLong(PySequence_Fast_GET_ITEM(seq, i));
    if (PyErr_Occurred()) {
      Py_DECREF(seq);
      return -1;
    }
  }
  Py_DECREF(seq);
  return (int)n;
}

int kp_axes_from(PyObject *o, int *axes, int *n) {
  *n = 0;
  if (!o || o == Py_None) return 0;
  int64_t tmp[KILN_MAX_DIMS];
  int k = kp_shape_from(o, tmp);
  if (k < 0) return -1;
  for (int i = 0; i < k; i++) axes[i] = (int)tmp[i];
  *n = k;
  return 0;
}

kiln_tensor *kp_tensor_arg(PyObject *o, const char *what) {
  if (kp_is_array(o)) return ((kp_array *)o)->t;
  PyErr_Format(PyExc_TypeError, "%s must be a kiln array, not %.100s", what, Py_TYPE(o)->tp_name);
  return NULL;
}

/* ------------------------------------------------------------ creation */

static PyObject *f_filled(PyObject *args, PyObject *kw, int which) {
  static char *names[] = {"shape", "dtype", "value", NULL};
  PyObject *shape_o, *dt_o = Py_None;
  double value = 0;
  if (!PyArg_ParseTupleAndKeywords(args, kw, "O|Od", names, &shape_o, &dt_o, &value)) return NULL;
  int64_t shape[KILN_MAX_DIMS];
  kiln_dtype dt;
  int nd = kp_shape_from(shape_o, shape);
  if (nd < 0 || kp_dtype_from(dt_o, &dt) < 0) return NULL;
  kiln_tensor *t = which == 0 ? kiln_zeros(dt, nd, shape) : which == 1 ? kiln_ones(dt, nd, shape) : kiln_full(dt, nd, shape, value);
  return kp_wrap(kp_own(t));
}
static PyObject *f_zeros(PyObject *m, PyObject *a, PyObject *k) { return f_filled(a, k, 0); }
static PyObject *f_ones(PyObject *m, PyObject *a, PyObject *k) { return f_filled(a, k, 1); }
static PyObject *f_full(PyObject *m, PyObject *a, PyObject *k) { return f_filled(a, k, 2); }

static PyObject *f_arange(PyObject *m, PyObject *args, PyObject *kw) {
  static char *names[] = {"start", "stop", "step", "dtype", NULL};
  double start, step = 1;
  PyObject *stop_o = Py_None, *dt_o = Py_None;
  if (!PyArg_ParseTupleAndKeywords(args, kw, "d|OdO", names, &start, &stop_o, &step, &dt_o)) return NULL;
  double stop = start;
  if (stop_o == Py_None) {
    start = 0; /* arange(n) counts 0 .. n-1, as numpy */
  } else {
    stop = PyFloat_AsDouble(stop_o);
    if (PyErr_Occurred()) return NULL;
  }
  kiln_dtype dt;
  if (kp_dtype_from(dt_o, &dt) < 0) return NULL;
  return kp_wrap(kp_own(kiln_arange(start, stop, step, dt)));
}

static PyObject *f_random(PyObject *args, PyObject *kw, int which) {
  static char *names[] = {"a", "b", "shape", "dtype", NULL};
  double a, b;
  PyObject *shape_o, *dt_o = Py_None;
  if (!PyArg_ParseTupleAndKeywords(args, kw, "ddO|O", names, &a, &b, &shape_o, &dt_o)) return NULL;
  int64_t shape[KILN_MAX_DIMS];
  kiln_dtype dt;
  int nd = kp_shape_from(shape_o, shape);
  if (nd < 0 || kp_dtype_from(dt_o, &dt) < 0) return NULL;
  kiln_tensor *t = which == 0 ? kiln_random_uniform(NULL, a, b, dt, nd, shape) : kiln_random_normal(NULL, a, b, dt, nd, shape);
  return kp_wrap(kp_own(t));
}
static PyObject *f_uniform(PyObject *m, PyObject *a, PyObject *k) { return f_random(a, k, 0); }
static PyObject *f_normal(PyObject *m, PyObject *a, PyObject *k) { return f_random(a, k, 1); }

static PyObject *f_seed(PyObject *m, PyObject *arg) {
  unsigned long long s = PyLong_AsUnsignedLongLong(arg);
  if (PyErr_Occurred()) return NULL;
  kiln_seed(s);
  Py_RETURN_NONE;
}

/* A kiln dtype for a PEP 3118 format character and item size. */
int kp_dtype_of_format(const char *fmt, Py_ssize_t itemsize, kiln_dtype *out) {
  if (*fmt == '@' || *fmt == '=' || *fmt == '<') fmt++;
  if (fmt[0] && fmt[1]) return -1;
  switch (fmt[0]) {
    case 'f': *out = KILN_F32; return 0;
    case 'd': *out = KILN_F64; return 0;
    case 'B': *out = KILN_U8; return 0;
    case '?': *out = KILN_BOOL; return 0;
    case 'i': case 'l': case 'q':
      if (itemsize == 4) *out = KILN_I32;
      else if (itemsize == 8) *out = KILN_I64;
      else return -1;
      return 0;
    default: return -1;
  }
}

/* from_buffer(obj, dtype=None): a new array holding a copy of the
 * C-contiguous buffer obj exports (a numpy array, array.array, memoryview),
 * cast to dtype when given. */
static PyObject *f_from_buffer(PyObject *m, PyObject *args, PyObject *kw) {
  static char *names[] = {"obj", "dtype", "shape", NULL};
  PyObject *obj, *dt_o = Py_None, *shape_o = Py_None;
  if (!PyArg_ParseTupleAndKeywords(args, kw, "O|OO", names, &obj, &dt_o, &shape_o)) return NULL;
  Py_buffer view;
  if (PyObject_GetBuffer(obj, &view, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0) return NULL;
  kiln_dtype src;
  PyObject *res = NULL;
  if (kp_dtype_of_format(view.format ? view.format : "B", view.itemsize, &src) < 0) {
    PyErr_Format(PyExc_TypeError, "kiln has no dtype for buffer format '%s'", view.format ? view.format : "B");
    goto done;
  }
  int64_t shape[KILN_MAX_DIMS];
  int nd;
  if (shape_o != Py_None) {
    nd = kp_shape_from(shape_o, shape);
    if (nd < 0) goto done;
    int64_t count = 1;
    for (int i = 0; i < nd; i++) count *= shape[i];
    if (count * view.itemsize != view.len) {
      PyErr_Format(PyExc_ValueError, "shape holds %lld elements, the buffer %zd", (long long)count, view.len / view.itemsize);
      goto done;
    }
  } else {
    if (view.ndim > KILN_MAX_DIMS) {
      PyErr_Format(PyExc_ValueError, "kiln arrays have at most %d dims, got %d", KILN_MAX_DIMS, view.ndim);
      goto done;
    }
    nd = view.ndim;
    for (int i = 0; i < nd; i++) shape[i] = view.shape ? view.shape[i] : view.len / view.itemsize;
  }
  kiln_tensor *t = kp_own(kiln_from_data(src, nd, shape, view.buf));
  if (dt_o != Py_None) {
    kiln_dtype want;
    if (kp_dtype_from(dt_o, &want) < 0) {
      kiln_tensor_release(t);
      goto done;
    }
    if (want != src) {
      kiln_tensor *c = kp_own(kiln_cast(t, want));
      kiln_tensor_release(t);
      t = c;
    }
  }
  res = kp_wrap(t);
done:
  PyBuffer_Release(&view);
  return res;
}

/* ------------------------------------------------------------ the op library */

#define UNARY(name)                                                          \
  static PyObject *f_##name(PyObject *m, PyObject *x) {                      \
    kiln_tensor *t = kp_tensor_arg(x, #name "'s argument");                  \
    return t ? kp_wrap(kp_own(kiln_##name(t))) : NULL;                       \
  }
UNARY(neg) UNARY(abs) UNARY(exp) UNARY(log) UNARY(sqrt) UNARY(rsqrt) UNARY(square) UNARY(sin) UNARY(cos)
UNARY(tanh) UNARY(sigmoid) UNARY(relu) UNARY(gelu) UNARY(softplus) UNARY(erf) UNARY(sign) UNARY(floor)
UNARY(ceil) UNARY(round) UNARY(logical_not) UNARY(contiguous) UNARY(copy)
#undef UNARY

/* Two operands, each an array or a Python number; a number becomes a 0-d
 * array of the other operand's dtype (kiln computes in one dtype). */
static PyObject *binary_fn(PyObject *const *args, Py_ssize_t n, kiln_tensor *(*f)(kiln_tensor *, kiln_tensor *),
                           const char *name) {
  if (n != 2) return PyErr_Format(PyExc_TypeError, "%s takes 2 arguments, got %zd", name, n);
  kiln_tensor *ta = kp_is_array(args[0]) ? ((kp_array *)args[0])->t : NULL;
  kiln_tensor *tb = kp_is_array(args[1]) ? ((kp_array *)args[1])->t : NULL;
  if (!ta && !tb) return PyErr_Format(PyExc_TypeError, "%s needs at least one kiln array", name);
  kiln_tensor *tmp = NULL;
  PyObject *num = ta ? args[1] : args[0];
  if (!ta || !tb) {
    double v = PyFloat_AsDouble(num);
    if (PyErr_Occurred()) return NULL;
    tmp = kp_own(kiln_full(kiln_tensor_dtype(ta ? ta : tb), 0, NULL, v));
    if (!ta) ta = tmp;
    else tb = tmp;
  }
  kiln_tensor *r = kp_own(f(ta, tb));
  kiln_tensor_release(tmp);
  return kp_wrap(r);
}

#define BINARY(name)                                                         \
  static PyObject *f_##name(PyObject *m, PyObject *const *a, Py_ssize_t n) { \
    return binary_fn(a, n, kiln_##name, #name);                              \
  }
BINARY(add) BINARY(sub) BINARY(mul) BINARY(div) BINARY(pow) BINARY(maximum) BINARY(minimum) BINARY(equal)
BINARY(not_equal) BINARY(less) BINARY(less_equal) BINARY(greater) BINARY(greater_equal) BINARY(logical_and)
BINARY(logical_or) BINARY(matmul)
#undef BINARY

typedef kiln_tensor *(*reduce_fn)(kiln_tensor *, int, const int *, bool);
static PyObject *reduce_call(PyObject *args, PyObject *kw, reduce_fn f) {
  static char *names[] = {"x", "axis", "keepdims", NULL};
  PyObject *x, *axis = Py_None;
  int keepdims = 0;
  if (!PyArg_ParseTupleAndKeywords(args, kw, "O|Op", names, &x, &axis, &keepdims)) return NULL;
  kiln_tensor *t = kp_tensor_arg(x, "x");
  int axes[KILN_MAX_DIMS], n;
  if (!t || kp_axes_from(axis, axes, &n) < 0) return NULL;
  return kp_wrap(kp_own(f(t, n, axes, keepdims)));
}
#define REDUCE(name) \
  static PyObject *f_##name(PyObject *m, PyObject *a, PyObject *k) { return reduce_call(a, k, kiln_##name); }
REDUCE(sum) REDUCE(mean) REDUCE(max) REDUCE(min) REDUCE(prod) REDUCE(logsumexp)
#undef REDUCE

static PyObject *arg_extreme(PyObject *args, PyObject *kw, kiln_tensor *(*f)(kiln_tensor *, int, bool)) {
  static char *names[] = {"x", "axis", "keepdims", NULL};
  PyObject *x, *axis = Py_None;
  int keepdims = 0;
  if (!PyArg_ParseTupleAndKeywords(args, kw, "O|Op", names, &x, &axis, &keepdims)) return NULL;
  kiln_tensor *t = kp_tensor_arg(x, "x");
  if (!t) return NULL;
  int ax = KILN_ALL_AXES;
  if (axis != Py_None) {
    ax = PyLong_AsLong(axis);
    if (PyErr_Occurred()) return NULL;
  }
  return kp_wrap(kp_own(f(t, ax, keepdims)));
}
static PyObject *f_argmax(PyObject *m, PyObject *a, PyObject *k) { return arg_extreme(a, k, kiln_argmax); }
static PyObject *f_argmin(PyObject *m, PyObject *a, PyObject *k) { return arg_extreme(a, k, kiln_argmin); }

/* An op of one array and an int axis (default given). */
static PyObject *axis_op(PyObject *args, PyObject *kw, kiln_tensor *(*f)(kiln_tensor *, int), int dflt) {
  static char *names[] = {"x", "axis", NULL};
  PyObject *x;
  int axis = dflt;
  if (!PyArg_ParseTupleAndKeywords(args, kw, "O|i", names, &x, &axis)) return NULL;
  kiln_tensor *t = kp_tensor_arg(x, "x");
  return t ? kp_wrap(kp_own(f(t, axis))) : NULL;
}
static PyObject *f_softmax(PyObject *m, PyObject *a, PyObject *k) { return axis_op(a, k, kiln_softmax, -1); }
static PyObject *f_log_softmax(PyObject *m, PyObject *a, PyObject *k) { return axis_op(a, k, kiln_log_softmax, -1); }
static PyObject *f_expand_dims(PyObject *m, PyObject *a, PyObject *k) { return axis_op(a, k, kiln_expand_dims, 0); }
static PyObject *f_squeeze(PyObject *m, PyObject *a, PyObject *k) { return axis_op(a, k, kiln_squeeze, KILN_ALL_AXES); }

static PyObject *f_var(PyObject *m, PyObject *args, PyObject *kw) {
  static char *names[] = {"x", "axis", "keepdims", "ddof", NULL};
  PyObject *x, *axis = Py_None;
  int keepdims = 0, ddof = 0;
  if (!PyArg_ParseTupleAndKeywords(args, kw, "O|Opi", names, &x, &axis, &keepdims, &ddof)) return NULL;
  kiln_tensor *t = kp_tensor_arg(x, "x");
  int axes[KILN_MAX_DIMS], n;
  if (!t || kp_axes_from(axis, axes, &n) < 0) return NULL;
  return kp_wrap(kp_own(kiln_var(t, n, axes, keepdims, ddof)));
}

static PyObject *f_leaky_relu(PyObject *m, PyObject *args, PyObject *kw) {
  static char *names[] = {"x", "slope", NULL};
  PyObject *x;
  double slope = 0.01;
  if (!PyArg_ParseTupleAndKeywords(args, kw, "O|d", names, &x, &slope)) return NULL;
  kiln_tensor *t = kp_tensor_arg(x, "x");
  return t ? kp_wrap(kp_own(kiln_leaky_relu(t, slope))) : NULL;
}

static PyObject *f_clip(PyObject *m, PyObject *args) {
  PyObject *x;
  double lo, hi;
  if (!PyArg_ParseTuple(args, "Odd", &x, &lo, &hi)) return NULL;
  kiln_tensor *t = kp_tensor_arg(x, "x");
  return t ? kp_wrap(kp_own(kiln_clip(t, lo, hi))) : NULL;
}

static PyObject *f_cast(PyObject *m, PyObject *args) {
  PyObject *x, *dt_o;
  kiln_dtype dt;
  if (!PyArg_ParseTuple(args, "OO", &x, &dt_o)) return NULL;
  kiln_tensor *t = kp_tensor_arg(x, "x");
  if (!t || kp_dtype_from(dt_o, &dt) < 0) return NULL;
  return kp_wrap(kp_own(kiln_cast(t, dt)));
}

static PyObject *f_where(PyObject *m, PyObject *args) {
  PyObject *c, *a, *b;
  if (!PyArg_ParseTuple(args, "OOO", &c, &a, &b)) return NULL;
  kiln_tensor *tc = kp_tensor_arg(c, "condition"), *ta = tc ? kp_tensor_arg(a, "x") : NULL, *tb = ta ? kp_tensor_arg(b, "y") : NULL;
  return tb ? kp_wrap(kp_own(kiln_where(tc, ta, tb))) : NULL;
}

static PyObject *f_linear(PyObject *m, PyObject *args) {
  PyObject *x, *w, *b = Py_None;
  if (!PyArg_ParseTuple(args, "OO|O", &x, &w, &b)) return NULL;
  kiln_tensor *tx = kp_tensor_arg(x, "x"), *tw = tx ? kp_tensor_arg(w, "weight") : NULL, *tb = NULL;
  if (!tw || (b != Py_None && !(tb = kp_tensor_arg(b, "bias")))) return NULL;
  return kp_wrap(kp_own(kiln_linear(tx, tw, tb)));
}

static PyObject *f_take(PyObject *m, PyObject *args, PyObject *kw) {
  static char *names[] = {"x", "indices", "axis", NULL};
  PyObject *x, *i;
  int axis = 0;
  if (!PyArg_ParseTupleAndKeywords(args, kw, "OO|i", names, &x, &i, &axis)) return NULL;
  kiln_tensor *tx = kp_tensor_arg(x, "x"), *ti = tx ? kp_tensor_arg(i, "indices") : NULL;
  return ti ? kp_wrap(kp_own(kiln_take(tx, ti, axis))) : NULL;
}

static PyObject *f_gather(PyObject *m, PyObject *args) {
  PyObject *x, *i;
  int axis;
  if (!PyArg_ParseTuple(args, "OiO", &x, &axis, &i)) return NULL;
  kiln_tensor *tx = kp_tensor_arg(x, "x"), *ti = tx ? kp_tensor_arg(i, "index") : NULL;
  return ti ? kp_wrap(kp_own(kiln_gather(tx, axis, ti))) : NULL;
}

static PyObject *f_one_hot(PyObject *m, PyObject *args, PyObject *kw) {
  static char *names[] = {"indices", "depth", "dtype", NULL};
  PyObject *x, *dt_o = Py_None;
  long long depth;
  kiln_dtype dt;
  if (!PyArg_ParseTupleAndKeywords(args, kw, "OL|O", names, &x, &depth, &dt_o)) return NULL;
  kiln_tensor *t = kp_tensor_arg(x, "indices");
  if (!t || kp_dtype_from(dt_o, &dt) < 0) return NULL;
  return kp_wrap(kp_own(kiln_one_hot(t, depth, dt)));
}

/* concat / stack over a sequence of arrays. */
static PyObject *join(PyObject *args, PyObject *kw, kiln_tensor *(*f)(int, kiln_tensor *const *, int)) {
  static char *names[] = {"arrays", "axis", NULL};
  PyObject *seq_o;
  int axis = 0;
  if (!PyArg_ParseTupleAndKeywords(args, kw, "O|i", names, &seq_o, &axis)) return NULL;
  PyObject *seq = PySequence_Fast(seq_o, "expected a sequence of kiln arrays");
  if (!seq) return NULL;
  Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
  kiln_tensor **ts = PyMem_Malloc(sizeof(kiln_tensor *) * (size_t)(n ? n : 1));
  PyObject *res = NULL;
  if (!ts) {
    PyErr_NoMemory();
    goto done;
  }
  for (Py_ssize_t i = 0; i < n; i++)
    if (!(ts[i] = kp_tensor_arg(PySequence_Fast_GET_ITEM(seq, i), "each element"))) goto done;
  res = kp_wrap(kp_own(f((int)n, ts, axis)));
done:
  PyMem_Free(ts);
  Py_DECREF(seq);
  return res;
}
static PyObject *f_concat(PyObject *m, PyObject *a, PyObject *k) { return join(a, k, kiln_concat); }
static PyObject *f_stack(PyObject *m, PyObject *a, PyObject *k) { return join(a, k, kiln_stack); }

static PyObject *f_softmax_cross_entropy(PyObject *m, PyObject *args) {
  PyObject *x, *y;
  if (!PyArg_ParseTuple(args, "OO", &x, &y)) return NULL;
  kiln_tensor *tx = kp_tensor_arg(x, "logits"), *ty = tx ? kp_tensor_arg(y, "labels") : NULL;
  return ty ? kp_wrap(kp_own(kiln_softmax_cross_entropy(tx, ty))) : NULL;
}

static PyObject *f_dropout(PyObject *m, PyObject *args) {
  PyObject *x;
  double p;
  if (!PyArg_ParseTuple(args, "Od", &x, &p)) return NULL;
  kiln_tensor *t = kp_tensor_arg(x, "x");
  return t ? kp_wrap(kp_own(kiln_dropout(NULL, t, p))) : NULL;
}

/* ------------------------------------------------------------ barriers */

static PyObject *f_waitall(PyObject *m, PyObject *unused) {
  kiln_status st;
  Py_BEGIN_ALLOW_THREADS st = kiln_waitall();
  Py_END_ALLOW_THREADS
  /* Memory kiln was sharing goes back to Python now, not at the next
   * bytecode boundary: tests and users count references after a wait. */
  kp_drain_releases();
  if (st != KILN_OK) return kp_raise_last(st);
  Py_RETURN_NONE;
}

/* ------------------------------------------------------------ autograd */

static PyObject *f_record_begin(PyObject *m, PyObject *train) {
  kiln_status st = kiln_record_begin(PyObject_IsTrue(train) == 1);
  if (st != KILN_OK) return kp_raise_last(st);
  Py_RETURN_NONE;
}
static PyObject *f_record_end(PyObject *m, PyObject *unused) {
  kiln_status st = kiln_record_end();
  if (st != KILN_OK) return kp_raise_last(st);
  Py_RETURN_NONE;
}
static PyObject *f_pause_begin(PyObject *m, PyObject *unused) {
  kiln_status st = kiln_pause_begin();
  if (st != KILN_OK) return kp_raise_last(st);
  Py_RETURN_NONE;
}
static PyObject *f_pause_end(PyObject *m, PyObject *unused) {
  kiln_status st = kiln_pause_end();
  if (st != KILN_OK) return kp_raise_last(st);
  Py_RETURN_NONE;
}
static PyObject *f_is_recording(PyObject *m, PyObject *unused) { return PyBool_FromLong(kiln_is_recording()); }
static PyObject *f_is_training(PyObject *m, PyObject *unused) { return PyBool_FromLong(kiln_is_training()); }

static PyObject *f_use_reference_kernels(PyObject *m, PyObject *on) {
  return PyBool_FromLong(kiln_use_reference_kernels(PyObject_IsTrue(on) == 1));
}

#define KW (METH_VARARGS | METH_KEYWORDS)
#define U(name) {#name, (PyCFunction)f_##name, METH_O, NULL}
#define B(name) {#name, KP_FN(f_##name), METH_FASTCALL, NULL}
#define K(name) {#name, KP_FN(f_##name), KW, NULL}
PyMethodDef kp_nd_methods[] = {
    K(zeros), K(ones), K(full), K(arange), K(uniform), K(normal), U(seed), K(from_buffer),
    U(neg), U(abs), U(exp), U(log), U(sqrt), U(rsqrt), U(square), U(sin), U(cos), U(tanh), U(sigmoid), U(relu),
    U(gelu), U(softplus), U(erf), U(sign), U(floor), U(ceil), U(round), U(logical_not), U(contiguous), U(copy),
    B(add), B(sub), B(mul), B(div), B(pow), B(maximum), B(minimum), B(equal), B(not_equal), B(less), B(less_equal),
    B(greater), B(greater_equal), B(logical_and), B(logical_or), B(matmul),
    K(sum), K(mean), K(max), K(min), K(prod), K(logsumexp), K(argmax), K(argmin), K(var),
    K(softmax), K(log_softmax), K(expand_dims), K(squeeze), K(leaky_relu), K(take), K(one_hot), K(concat), K(stack),
    {"clip", f_clip, METH_VARARGS, NULL}, {"cast", f_cast, METH_VARARGS, NULL}, {"where", f_where, METH_VARARGS, NULL},
    {"linear", f_linear, METH_VARARGS, NULL}, {"gather", f_gather, METH_VARARGS, NULL},
    {"softmax_cross_entropy", f_softmax_cross_entropy, METH_VARARGS, NULL}, {"dropout", f_dropout, METH_VARARGS, NULL},
    {"waitall", f_waitall, METH_NOARGS, NULL},
    {"from_dlpack", kp_from_dlpack, METH_O, NULL}, {"share", kp_share_buffer, METH_O, NULL},
    U(record_begin), {"record_end", f_record_end, METH_NOARGS, NULL}, {"pause_begin", f_pause_begin, METH_NOARGS, NULL},
    {"pause_end", f_pause_end, METH_NOARGS, NULL}, {"is_recording", f_is_recording, METH_NOARGS, NULL},
    {"is_training", f_is_training, METH_NOARGS, NULL}, U(use_reference_kernels),
    {NULL, NULL, 0, NULL},
};
#undef U
#undef B
#undef K

static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_kiln", "kiln's CPython extension (see the kiln package).", -1,
                                        NULL, NULL, NULL, NULL, NULL};

/* Status -> the built-in exception a caller would catch for it. */
static PyObject *builtin_for(kiln_status s) {
  switch (s) {
    case KILN_ERR_INVALID_ARGUMENT: case KILN_ERR_SHAPE: case KILN_ERR_CORRUPT: return PyExc_ValueError;
    case KILN_ERR_DTYPE: return PyExc_TypeError;
    case KILN_ERR_OUT_OF_RANGE: return PyExc_IndexError;
    case KILN_ERR_OVERFLOW: return PyExc_OverflowError;
    case KILN_ERR_OUT_OF_MEMORY: return PyExc_MemoryError;
    case KILN_ERR_UNSUPPORTED: return PyExc_NotImplementedError;
    case KILN_ERR_IO: return PyExc_OSError;
    default: return PyExc_RuntimeError;
  }
}

/* KILN_ERR_SHAPE -> ShapeError, KILN_ERR_OUT_OF_RANGE -> OutOfRangeError. */
static void class_name(kiln_status s, char *buf, size_t cap) {
  const char *n = kiln_status_name(s) + strlen("KILN_ERR_");
  size_t k = 0;
  int up = 1;
  for (; *n && k + 6 < cap; n++) {
    if (*n == '_') {
      up = 1;
      continue;
    }
    buf[k++] = up ? *n : (char)(*n - 'A' + 'a');
    up = 0;
  }
  snprintf(buf + k, cap - k, "Error");
}

PyMODINIT_FUNC PyInit__kiln(void);
PyMODINIT_FUNC PyInit__kiln(void) {
  PyObject *m = PyModule_Create(&module_def);
  if (!m) return NULL;
  if (PyModule_AddFunctions(m, kp_nd_methods) < 0 || PyModule_AddFunctions(m, kp_nn_methods) < 0 ||
      PyModule_AddFunctions(m, kp_dist_methods) < 0)
    goto fail;
  kp_base_error = PyErr_NewExceptionWithDoc("kiln.KilnError", "A kiln call failed; .status names kiln's status.",
                                            PyExc_Exception, NULL);
  if (!kp_base_error || PyModule_AddObjectRef(m, "KilnError", kp_base_error) < 0) goto fail;
  for (int s = 1; s < KILN_STATUS_COUNT; s++) {
    char name[64], full[80];
    class_name((kiln_status)s, name, sizeof name);
    snprintf(full, sizeof full, "kiln.%s", name);
    PyObject *bases = PyTuple_Pack(2, kp_base_error, builtin_for((kiln_status)s));
    kp_errors[s] = bases ? PyErr_NewException(full, bases, NULL) : NULL;
    Py_XDECREF(bases);
    if (!kp_errors[s] || PyModule_AddObjectRef(m, name, kp_errors[s]) < 0) goto fail;
  }
  if (kp_ndarray_init(m) < 0) goto fail;
  return m;
fail:
  Py_DECREF(m);
  return NULL;
}
