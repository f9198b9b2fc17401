/* kiln._kiln.NDArray: a Python object owning one reference to a kiln_tensor.
 *
 * Operators are the op library: a Python number operand becomes the other
 * operand's dtype (kiln computes in one dtype; MXNet's rule). Indexing with
 * ints, slices, None and Ellipsis gives views. The buffer protocol exports
 * the tensor's own memory, writable, after waiting for its pending writes:
 * numpy.asarray(x) is zero-copy both ways. */
#include "kilnpy.h"

#include "tensor/tensor.h"

static void array_dealloc(kp_array *self) {
  kiln_tensor_release(self->t);
  Py_TYPE(self)->tp_free((PyObject *)self);
}

static int is_number(PyObject *o) { return PyFloat_Check(o) || PyLong_Check(o); }

/* a OP b for the number protocol: NotImplemented for operands it does not
 * know, so Python (or numpy) can try the reflected operation. */
static PyObject *binop(PyObject *a, PyObject *b, kiln_tensor *(*f)(kiln_tensor *, kiln_tensor *),
                       kiln_tensor *(*fs)(kiln_tensor *, double)) {
  int aa = kp_is_array(a), ba = kp_is_array(b);
  if (aa && ba) return kp_wrap(kp_own(f(((kp_array *)a)->t, ((kp_array *)b)->t)));
  if (aa && is_number(b)) {
    double v = PyFloat_AsDouble(b);
    if (v == -1 && PyErr_Occurred()) return NULL;
    kiln_tensor *t = ((kp_array *)a)->t;
    if (fs) return kp_wrap(kp_own(fs(t, v)));
    kiln_tensor *s = kp_own(kiln_full(kiln_tensor_dtype(t), 0, NULL, v));
    kiln_tensor *r = kp_own(f(t, s));
    kiln_tensor_release(s);
    return kp_wrap(r);
  }
  if (ba && is_number(a)) {
    double v = PyFloat_AsDouble(a);
    if (v == -1 && PyErr_Occurred()) return NULL;
    kiln_tensor *t = ((kp_array *)b)->t;
    kiln_tensor *s = kp_own(kiln_full(kiln_tensor_dtype(t), 0, NULL, v));
    kiln_tensor *r = kp_own(f(s, t));
    kiln_tensor_release(s);
    return kp_wrap(r);
  }
  Py_RETURN_NOTIMPLEMENTED;
}

static PyObject *nb_add(PyObject *a, PyObject *b) { return binop(a, b, kiln_add, kp_is_array(a) ? kiln_add_scalar : NULL); }
static PyObject *nb_sub(PyObject *a, PyObject *b) { return binop(a, b, kiln_sub, kp_is_array(a) ? kiln_sub_scalar : NULL); }
static PyObject *nb_mul(PyObject *a, PyObject *b) { return binop(a, b, kiln_mul, kp_is_array(a) ? kiln_mul_scalar : NULL); }
static PyObject *nb_div(PyObject *a, PyObject *b) { return binop(a, b, kiln_div, kp_is_array(a) ? kiln_div_scalar : NULL); }
static PyObject *nb_matmul(PyObject *a, PyObject *b) { return binop(a, b, kiln_matmul, NULL); }
static PyObject *nb_pow(PyObject *a, PyObject *b, PyObject *mod) {
  if (mod != Py_None) Py_RETURN_NOTIMPLEMENTED;
  return binop(a, b, kiln_pow, kp_is_array(a) ? kiln_pow_scalar : NULL);
}
static PyObject *nb_neg(PyObject *a) { return kp_wrap(kp_own(kiln_neg(((kp_array *)a)->t))); }
static PyObject *nb_pos(PyObject *a) { return Py_NewRef(a); }
static PyObject *nb_abs(PyObject *a) { return kp_wrap(kp_own(kiln_abs(((kp_array *)a)->t))); }

/* The one element as a double; raises for arrays of another size. */
static int item_of(kp_array *self, double *out) {
  if (kiln_tensor_numel(self->t) != 1) {
    PyErr_Format(PyExc_ValueError, "only an array of one element converts to a Python number (this one has %lld)",
                 (long long)kiln_tensor_numel(self->t));
    return -1;
  }
  kiln_status st;
  Py_BEGIN_ALLOW_THREADS st = kiln_tensor_item(self->t, out);
  Py_END_ALLOW_THREADS
  if (st != KILN_OK) {
    kp_raise(st, kiln_tensor_failed(self->t) ? kiln_tensor_error(self->t) : kiln_last_error());
    return -1;
  }
  return 0;
}

static int nb_bool(PyObject *a) {
  double v;
  return item_of((kp_array *)a, &v) < 0 ? -1 : v != 0;
}
static PyObject *nb_float(PyObject *a) {
  double v;
  return item_of((kp_array *)a, &v) < 0 ? NULL : PyFloat_FromDouble(v);
}
static PyObject *nb_int(PyObject *a) {
  double v;
  return item_of((kp_array *)a, &v) < 0 ? NULL : PyLong_FromDouble(v);
}

/* x op= y writes into x's memory, as MXNet's do: views of x and other
 * names for it see the result (Python's default would rebind x to a new
 * array). Refused while autograd records, whose tape would miss the write. */
static PyObject *in_place(PyObject *a, PyObject *b, binaryfunc op, const char *sym) {
  if (!kp_is_array(a)) Py_RETURN_NOTIMPLEMENTED;
  if (kiln_is_recording()) {
    char msg[160];
    snprintf(msg, sizeof msg, "x %s y: in-place ops are not recorded by autograd; inside record(), write x = x %.1s y",
             sym, sym);
    return kp_raise(KILN_ERR_UNSUPPORTED, msg);
  }
  PyObject *r = op(a, b);
  if (!r || r == Py_NotImplemented) return r;
  kiln_status st = kiln_assign(((kp_array *)a)->t, ((kp_array *)r)->t);
  Py_DECREF(r);
  if (st != KILN_OK) return kp_raise_last(st);
  return Py_NewRef(a);
}
static PyObject *nb_iadd(PyObject *a, PyObject *b) { return in_place(a, b, nb_add, "+="); }
static PyObject *nb_isub(PyObject *a, PyObject *b) { return in_place(a, b, nb_sub, "-="); }
static PyObject *nb_imul(PyObject *a, PyObject *b) { return in_place(a, b, nb_mul, "*="); }
static PyObject *nb_idiv(PyObject *a, PyObject *b) { return in_place(a, b, nb_div, "/="); }

static PyNumberMethods number_methods = {
    .nb_inplace_add = nb_iadd,
    .nb_inplace_subtract = nb_isub,
    .nb_inplace_multiply = nb_imul,
    .nb_inplace_true_divide = nb_idiv,
    .nb_add = nb_add,
    .nb_subtract = nb_sub,
    .nb_multiply = nb_mul,
    .nb_true_divide = nb_div,
    .nb_matrix_multiply = nb_matmul,
    .nb_power = nb_pow,
    .nb_negative = nb_neg,
    .nb_positive = nb_pos,
    .nb_absolute = nb_abs,
    .nb_bool = nb_bool,
    .nb_float = nb_float,
    .nb_int = nb_int,
};

static PyObject *richcompare(PyObject *a, PyObject *b, int op) {
  static kiln_tensor *(*const fns[])(kiln_tensor *, kiln_tensor *) = {
      [Py_LT] = kiln_less, [Py_LE] = kiln_less_equal, [Py_EQ] = kiln_equal,
      [Py_NE] = kiln_not_equal, [Py_GT] = kiln_greater, [Py_GE] = kiln_greater_equal,
  };
  return binop(a, b, fns[op], NULL);
}

/* ------------------------------------------------------------ indexing */

/* x[key] for ints, slices, None, Ellipsis (alone or in a tuple): views.
 * An integer kiln array as the whole key gathers rows (take along axis 0). */
static kiln_tensor *index_view(kp_array *self, PyObject *key) {
  kiln_tensor *x = self->t;
  if (kp_is_array(key)) return kp_own(kiln_take(x, ((kp_array *)key)->t, 0));
  PyObject *items = PyTuple_Check(key) ? Py_NewRef(key) : PyTuple_Pack(1, key);
  if (!items) return NULL;
  Py_ssize_t n = PyTuple_GET_SIZE(items);
  int consumed = 0, ellipses = 0;
  for (Py_ssize_t i = 0; i < n; i++) {
    PyObject *k = PyTuple_GET_ITEM(items, i);
    if (k == Py_Ellipsis) ellipses++;
    else if (k != Py_None) consumed++;
  }
  int ndim = kiln_tensor_ndim(x);
  if (ellipses > 1 || consumed > ndim) {
    Py_DECREF(items);
    PyErr_Format(PyExc_IndexError, ellipses > 1 ? "an index can only have a single ellipsis" : "too many indices: the array has %d dims", ndim);
    return NULL;
  }
  kiln_tensor *cur = kiln_tensor_retain(x);
  int axis = 0;
  int squeeze[KILN_MAX_DIMS], n_squeeze = 0;
  for (Py_ssize_t i = 0; i < n && cur; i++) {
    PyObject *k = PyTuple_GET_ITEM(items, i);
    kiln_tensor *next = NULL;
    if (k == Py_Ellipsis) {
      axis += ndim - consumed;
      continue;
    } else if (k == Py_None) {
      next = kp_own(kiln_expand_dims(cur, axis));
      axis++;
      ndim++;
    } else if (PySlice_Check(k)) {
      Py_ssize_t start, stop, step;
      if (PySlice_Unpack(k, &start, &stop, &step) < 0) goto fail;
      int64_t len = kiln_tensor_dim(cur, axis);
      Py_ssize_t count = PySlice_AdjustIndices((Py_ssize_t)len, &start, &stop, step);
      /* Adjusted bounds are non-negative except a stop before element 0 of
       * a backward slice, which kiln spells KILN_END. */
      if (count == 0) next = kp_own(kiln_slice(cur, axis, 0, 0, 1));
      else next = kp_own(kiln_slice(cur, axis, start, stop < 0 ? KILN_END : stop, step));
      axis++;
    } else if (PyIndex_Check(k)) {
      Py_ssize_t v = PyNumber_AsSsize_t(k, PyExc_IndexError);
      if (v == -1 && PyErr_Occurred()) goto fail;
      int64_t len = kiln_tensor_dim(cur, axis);
      if (v < -len || v >= len) {
        PyErr_Format(PyExc_IndexError, "index %zd is out of bounds for axis %d with size %lld", v, axis, (long long)len);
        goto fail;
      }
      if (v < 0) v += len;
      next = kp_own(kiln_slice(cur, axis, v, v + 1, 1));
      squeeze[n_squeeze++] = axis++;
    } else {
      PyErr_Format(PyExc_IndexError, "kiln arrays are indexed by ints, slices, None, Ellipsis or an integer array, not %.100s",
                   Py_TYPE(k)->tp_name);
      goto fail;
    }
    kiln_tensor_release(cur);
    cur = next;
  }
  for (int i = n_squeeze - 1; i >= 0 && cur; i--) {
    kiln_tensor *next = kp_own(kiln_squeeze(cur, squeeze[i]));
    kiln_tensor_release(cur);
    cur = next;
  }
  Py_DECREF(items);
  return cur;
fail:
  Py_DECREF(items);
  kiln_tensor_release(cur);
  return NULL;
}

static PyObject *getitem(PyObject *self, PyObject *key) {
  kiln_tensor *t = index_view((kp_array *)self, key);
  return t ? kp_wrap(t) : NULL;
}

/* x[key] = value writes value (an array or a number, broadcast) into the
 * view, in place, as an engine op after the work pushed on both. */
static int setitem(PyObject *self, PyObject *key, PyObject *value) {
  if (!value) {
    PyErr_SetString(PyExc_TypeError, "kiln arrays do not support item deletion");
    return -1;
  }
  if (kp_is_array(key)) {
    PyErr_SetString(PyExc_IndexError, "assignment through an integer-array index is not supported");
    return -1;
  }
  kiln_tensor *view = index_view((kp_array *)self, key);
  if (!view) return -1;
  kiln_tensor *src = NULL;
  if (kp_is_array(value)) {
    src = kiln_tensor_retain(((kp_array *)value)->t);
  } else {
    double v = PyFloat_AsDouble(value);
    if (v == -1 && PyErr_Occurred()) {
      kiln_tensor_release(view);
      return -1;
    }
    src = kp_own(kiln_full(kiln_tensor_dtype(view), 0, NULL, v));
  }
  kiln_status st = kiln_tensor_failed(view) ? kiln_tensor_status(view) : kiln_assign(view, src);
  kiln_tensor_release(src);
  if (st != KILN_OK) kp_raise(st, kiln_tensor_failed(view) ? kiln_tensor_error(view) : kiln_last_error());
  kiln_tensor_release(view);
  return st == KILN_OK ? 0 : -1;
}

static Py_ssize_t length(PyObject *self) {
  kiln_tensor *t = ((kp_array *)self)->t;
  if (kiln_tensor_ndim(t) == 0) {
    PyErr_SetString(PyExc_TypeError, "len() of a 0-d array");
    return -1;
  }
  return (Py_ssize_t)kiln_tensor_dim(t, 0);
}

static PyMappingMethods mapping_methods = {.mp_length = length, .mp_subscript = getitem, .mp_ass_subscript = setitem};

/* ------------------------------------------------------------ buffer protocol */

static const char *format_of(kiln_dtype dt) {
  static const char *const f[KILN_DTYPE_COUNT] = {"f", "d", "i", "q", "B", "?"};
  return f[dt];
}

/* The values must exist before anyone reads the memory: wait for the
 * tensor's pending writes (GIL released), and refuse symbolic values. The
 * buffer is writable (numpy.asarray(x) writes into x), but the wait covers
 * only writes: ops already pushed that read x may still be running, so a
 * writer waits for them first (kiln.waitall(), docs/python.md). */
static int getbuffer(PyObject *obj, Py_buffer *view, int flags) {
  kp_array *self = (kp_array *)obj;
  kiln_tensor *t = self->t;
  if (t->sym) {
    PyErr_SetString(PyExc_BufferError, "a symbolic array (inside a trace) has no values to export");
    return -1;
  }
  kiln_status st;
  void *data;
  Py_BEGIN_ALLOW_THREADS st = kiln_tensor_data(t, &data);
  Py_END_ALLOW_THREADS
  if (st != KILN_OK) {
    kp_raise(st, kiln_tensor_error(t));
    return -1;
  }
  int nd = kiln_tensor_ndim(t);
  bool contiguous = kiln_tensor_is_contiguous(t);
  if (!contiguous && ((flags & PyBUF_C_CONTIGUOUS) == PyBUF_C_CONTIGUOUS || (flags & PyBUF_STRIDES) != PyBUF_STRIDES)) {
    PyErr_SetString(PyExc_BufferError, "this kiln view is not contiguous; ask for strides or call contiguous()");
    return -1;
  }
  Py_ssize_t *dims = PyMem_Malloc(sizeof(Py_ssize_t) * 2 * (size_t)(nd ? nd : 1));
  if (!dims) {
    PyErr_NoMemory();
    return -1;
  }
  size_t item = kiln_dtype_size(kiln_tensor_dtype(t));
  for (int i = 0; i < nd; i++) {
    dims[i] = (Py_ssize_t)kiln_tensor_dim(t, i);
    dims[nd + i] = (Py_ssize_t)(kiln_tensor_strides(t)[i] * (int64_t)item);
  }
  view->buf = kiln_tensor_numel(t) ? data : NULL;
  view->obj = Py_NewRef(obj);
  view->len = (Py_ssize_t)(kiln_tensor_numel(t) * (int64_t)item);
  view->readonly = 0;
  view->itemsize = (Py_ssize_t)item;
  view->format = (flags & PyBUF_FORMAT) ? (char *)format_of(kiln_tensor_dtype(t)) : NULL;
  view->ndim = nd;
  view->shape = (flags & PyBUF_ND) == PyBUF_ND ? dims : NULL;
  view->strides = (flags & PyBUF_STRIDES) == PyBUF_STRIDES ? dims + nd : NULL;
  view->suboffsets = NULL;
  view->internal = dims;
  return 0;
}

static void releasebuffer(PyObject *obj, Py_buffer *view) { PyMem_Free(view->internal); }

static PyBufferProcs buffer_procs = {.bf_getbuffer = getbuffer, .bf_releasebuffer = releasebuffer};

/* ------------------------------------------------------------ methods */

static PyObject *get_shape(kp_array *self, void *unused) {
  int nd = kiln_tensor_ndim(self->t);
  PyObject *tup = PyTuple_New(nd);
  for (int i = 0; tup && i < nd; i++) PyTuple_SET_ITEM(tup, i, PyLong_FromLongLong(kiln_tensor_dim(self->t, i)));
  return tup;
}
static PyObject *get_dtype(kp_array *self, void *unused) {
  return PyUnicode_FromString(kiln_dtype_name(kiln_tensor_dtype(self->t)));
}
static PyObject *get_ndim(kp_array *self, void *unused) { return PyLong_FromLong(kiln_tensor_ndim(self->t)); }
static PyObject *get_size(kp_array *self, void *unused) { return PyLong_FromLongLong(kiln_tensor_numel(self->t)); }
static PyObject *get_T(kp_array *self, void *unused) {
  int nd = kiln_tensor_ndim(self->t), axes[KILN_MAX_DIMS];
  for (int i = 0; i < nd; i++) axes[i] = nd - 1 - i;
  return kp_wrap(kp_own(kiln_permute(self->t, nd, axes)));
}
/* The gradient buffer attach_grad gave (the same storage at every call), or
 * None. */
static PyObject *get_grad(kp_array *self, void *unused) {
  kiln_tensor *g = kiln_grad(self->t);
  if (!g) Py_RETURN_NONE;
  return kp_wrap(kiln_tensor_retain(g));
}
static PyObject *get_handle(kp_array *self, void *unused) { return PyLong_FromVoidPtr(self->t); }

static PyGetSetDef getset[] = {
    {"shape", (getter)get_shape, NULL, "the shape, a tuple", NULL},
    {"dtype", (getter)get_dtype, NULL, "the dtype's name ('float32', ...)", NULL},
    {"ndim", (getter)get_ndim, NULL, NULL, NULL},
    {"size", (getter)get_size, NULL, "the number of elements", NULL},
    {"T", (getter)get_T, NULL, "the transpose (a view)", NULL},
    {"grad", (getter)get_grad, NULL, "the gradient buffer (attach_grad), or None", NULL},
    {"_handle", (getter)get_handle, NULL, "the kiln_tensor address (identity checks in tests)", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyObject *m_wait_to_read(kp_array *self, PyObject *unused) {
  kiln_status st;
  Py_BEGIN_ALLOW_THREADS st = kiln_wait_to_read(self->t);
  Py_END_ALLOW_THREADS
  if (st != KILN_OK) return kp_raise(st, kiln_tensor_error(self->t));
  Py_RETURN_NONE;
}

static PyObject *m_item(kp_array *self, PyObject *unused) {
  double v;
  if (item_of(self, &v) < 0) return NULL;
  kiln_dtype dt = kiln_tensor_dtype(self->t);
  if (dt == KILN_BOOL) return PyBool_FromLong(v != 0);
  if (dt == KILN_F32 || dt == KILN_F64) return PyFloat_FromDouble(v);
  return PyLong_FromDouble(v);
}

/* Nested lists of Python numbers, without numpy. */
static PyObject *to_list(const double *v, int nd, const int64_t *shape, int64_t *pos, kiln_dtype dt) {
  if (nd == 0) {
    double x = v[(*pos)++];
    if (dt == KILN_BOOL) return PyBool_FromLong(x != 0);
    return dt == KILN_F32 || dt == KILN_F64 ? PyFloat_FromDouble(x) : PyLong_FromDouble(x);
  }
  PyObject *l = PyList_New((Py_ssize_t)shape[0]);
  for (int64_t i = 0; l && i < shape[0]; i++) {
    PyObject *e = to_list(v, nd - 1, shape + 1, pos, dt);
    if (!e) {
      Py_CLEAR(l);
      break;
    }
    PyList_SET_ITEM(l, (Py_ssize_t)i, e);
  }
  return l;
}

static PyObject *m_tolist(kp_array *self, PyObject *unused) {
  kiln_tensor *d = kp_own(kiln_cast(self->t, KILN_F64));
  int64_t n = kiln_tensor_numel(d);
  double *buf = PyMem_Malloc(sizeof(double) * (size_t)(n ? n : 1));
  PyObject *res = NULL;
  if (!buf) {
    PyErr_NoMemory();
  } else {
    kiln_status st;
    Py_BEGIN_ALLOW_THREADS st = kiln_tensor_copy_to(d, buf, sizeof(double) * (size_t)n);
    Py_END_ALLOW_THREADS
    if (st != KILN_OK) {
      kp_raise(st, kiln_tensor_failed(d) ? kiln_tensor_error(d) : kiln_last_error());
    } else {
      int64_t pos = 0;
      res = to_list(buf, kiln_tensor_ndim(d), kiln_tensor_shape(d), &pos, kiln_tensor_dtype(self->t));
    }
  }
  PyMem_Free(buf);
  kiln_tensor_release(d);
  return res;
}

static PyObject *m_attach_grad(kp_array *self, PyObject *args, PyObject *kw) {
  static char *names[] = {"grad_req", NULL};
  const char *req = "write";
  if (!PyArg_ParseTupleAndKeywords(args, kw, "|s", names, &req)) return NULL;
  kiln_grad_req r;
  if (!strcmp(req, "write")) r = KILN_GRAD_WRITE;
  else if (!strcmp(req, "add")) r = KILN_GRAD_ADD;
  else if (!strcmp(req, "null")) r = KILN_GRAD_NULL;
  else return PyErr_Format(PyExc_ValueError, "grad_req is 'write', 'add' or 'null', not '%s'", req);
  kiln_status st = kiln_attach_grad(self->t, r);
  if (st != KILN_OK) return kp_raise_last(st);
  Py_RETURN_NONE;
}

/* Gluon's rule: a head with several elements gets a gradient of ones
 * (the gradient of its sum) when none is given. */
static PyObject *m_backward(kp_array *self, PyObject *args, PyObject *kw) {
  static char *names[] = {"out_grad", "retain_graph", NULL};
  PyObject *og = Py_None;
  int retain = 0;
  if (!PyArg_ParseTupleAndKeywords(args, kw, "|Op", names, &og, &retain)) return NULL;
  kiln_tensor *hg = NULL;
  if (og != Py_None) {
    if (!(hg = kp_tensor_arg(og, "out_grad"))) return NULL;
    kiln_tensor_retain(hg);
  } else if (kiln_tensor_numel(self->t) != 1) {
    hg = kp_own(kiln_ones(kiln_tensor_dtype(self->t), kiln_tensor_ndim(self->t), kiln_tensor_shape(self->t)));
  }
  kiln_status st = kiln_backward(self->t, hg, retain);
  kiln_tensor_release(hg);
  if (st != KILN_OK) return kp_raise_last(st);
  Py_RETURN_NONE;
}

static PyObject *m_reshape(kp_array *self, PyObject *args) {
  int64_t shape[KILN_MAX_DIMS];
  int nd = kp_shape_from(PyTuple_GET_SIZE(args) == 1 ? PyTuple_GET_ITEM(args, 0) : args, shape);
  if (nd < 0) return NULL;
  return kp_wrap(kp_own(kiln_reshape(self->t, nd, shape)));
}

static PyObject *m_transpose(kp_array *self, PyObject *args) {
  int nd = kiln_tensor_ndim(self->t), axes[KILN_MAX_DIMS], n = 0;
  if (PyTuple_GET_SIZE(args) == 0) return get_T(self, NULL);
  if (kp_axes_from(PyTuple_GET_SIZE(args) == 1 ? PyTuple_GET_ITEM(args, 0) : args, axes, &n) < 0) return NULL;
  if (n != nd) return PyErr_Format(PyExc_ValueError, "transpose needs %d axes, got %d", nd, n);
  return kp_wrap(kp_own(kiln_permute(self->t, n, axes)));
}

static PyObject *m_astype(kp_array *self, PyObject *dt_o) {
  kiln_dtype dt;
  if (kp_dtype_from(dt_o, &dt) < 0) return NULL;
  return kp_wrap(kp_own(kiln_cast(self->t, dt)));
}

static PyObject *m_copy(kp_array *self, PyObject *unused) { return kp_wrap(kp_own(kiln_copy(self->t))); }

static PyObject *m_is_contiguous(kp_array *self, PyObject *unused) { return PyBool_FromLong(kiln_tensor_is_contiguous(self->t)); }

static PyMethodDef methods[] = {
    {"wait_to_read", (PyCFunction)m_wait_to_read, METH_NOARGS, "Waits for the pending writes of this array."},
    {"item", (PyCFunction)m_item, METH_NOARGS, NULL},
    {"asscalar", (PyCFunction)m_item, METH_NOARGS, NULL},
    {"tolist", (PyCFunction)m_tolist, METH_NOARGS, NULL},
    {"attach_grad", KP_FN(m_attach_grad), METH_VARARGS | METH_KEYWORDS, NULL},
    {"backward", KP_FN(m_backward), METH_VARARGS | METH_KEYWORDS, NULL},
    {"reshape", (PyCFunction)m_reshape, METH_VARARGS, NULL},
    {"transpose", (PyCFunction)m_transpose, METH_VARARGS, NULL},
    {"astype", (PyCFunction)m_astype, METH_O, NULL},
    {"copy", (PyCFunction)m_copy, METH_NOARGS, NULL},
    {"is_contiguous", (PyCFunction)m_is_contiguous, METH_NOARGS, NULL},
    {"__dlpack__", KP_FN(kp_array_dlpack), METH_VARARGS | METH_KEYWORDS,
     "A DLPack capsule sharing this array's memory (after its pending writes)."},
    {"__dlpack_device__", kp_array_dlpack_device, METH_NOARGS, "(1, 0): kiln arrays are in host memory."},
    {NULL, NULL, 0, NULL},
};

static PyObject *repr(kp_array *self) {
  char small[512];
  size_t needed = 0;
  kiln_status st;
  Py_BEGIN_ALLOW_THREADS st = kiln_tensor_format(self->t, small, sizeof small, &needed);
  Py_END_ALLOW_THREADS
  if (st != KILN_OK) return kp_raise_last(st);
  if (needed < sizeof small) return PyUnicode_FromString(small);
  char *big = PyMem_Malloc(needed + 1);
  if (!big) return PyErr_NoMemory();
  kiln_tensor_format(self->t, big, needed + 1, NULL);
  PyObject *r = PyUnicode_FromString(big);
  PyMem_Free(big);
  return r;
}

PyTypeObject kp_array_type = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "kiln.nd.NDArray",
    .tp_basicsize = sizeof(kp_array),
    .tp_dealloc = (destructor)array_dealloc,
    .tp_repr = (reprfunc)repr,
    .tp_as_number = &number_methods,
    .tp_as_mapping = &mapping_methods,
    .tp_as_buffer = &buffer_procs,
    .tp_hash = PyObject_HashNotImplemented,
    .tp_richcompare = richcompare,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "An n-dimensional kiln array (one reference to a kiln tensor).",
    .tp_methods = methods,
    .tp_getset = getset,
};

/* _add_method(name, fn): the package's Python-level methods (x.sum(),
 * x.asnumpy()) on the static type, which Python code cannot set itself. */
static PyObject *f_add_method(PyObject *m, PyObject *args) {
  PyObject *name, *fn;
  if (!PyArg_ParseTuple(args, "UO", &name, &fn)) return NULL;
  if (PyDict_SetItem(kp_array_type.tp_dict, name, fn) < 0) return NULL;
  PyType_Modified(&kp_array_type);
  Py_RETURN_NONE;
}

static PyMethodDef module_methods[] = {
    {"_add_method", f_add_method, METH_VARARGS, NULL},
    {NULL, NULL, 0, NULL},
};

int kp_ndarray_init(PyObject *m) {
  if (PyModule_AddFunctions(m, module_methods) < 0) return -1;
  if (PyType_Ready(&kp_array_type) < 0) return -1;
  return PyModule_AddObjectRef(m, "NDArray", (PyObject *)&kp_array_type);
}
