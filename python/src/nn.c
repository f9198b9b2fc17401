/* Blocks, layers, trainers, loaded models and the dataset loader, as
 * capsules the Python package (kiln/nn.py, kiln/gluon.py) wraps.
 *
 * A Python HybridBlock is a kiln block whose forward (py_forward) calls the
 * object's forward method with the inputs wrapped as arrays: concrete
 * eagerly, symbolic while kiln traces it. kiln calls forwards only on the
 * thread that called kiln_block_call, which holds the GIL (the engine's
 * workers run kernels and plans, never forwards); py_forward still takes the
 * GIL through PyGILState_Ensure, so a block called from C code that
 * released it stays correct. */
#include "kilnpy.h"

#include "tensor/tensor.h"

/* The user data of a Python block: a borrowed pointer to the Python object,
 * cleared when that object goes (the kiln block can outlive it as a child
 * of another block; it then fails when called). */
typedef struct {
  PyObject *obj;
} py_block;

static const char block_capsule[] = "kiln.block";

static void block_capsule_free(PyObject *cap) {
  kiln_block *b = PyCapsule_GetPointer(cap, block_capsule);
  py_block *pb = PyCapsule_GetContext(cap);
  if (pb) pb->obj = NULL;
  kiln_block_release(b);
}

static PyObject *block_capsule_new(kiln_block *b, py_block *pb) {
  if (!b) return kp_raise_last(kiln_last_status());
  PyObject *cap = PyCapsule_New(b, block_capsule, block_capsule_free);
  if (!cap) {
    kiln_block_release(b);
    return NULL;
  }
  if (pb) PyCapsule_SetContext(cap, pb);
  return cap;
}

static kiln_block *block_arg(PyObject *o) { return PyCapsule_GetPointer(o, block_capsule); }

/* A failed tensor standing for a Python exception that is stashed for the
 * kiln call to raise when it returns. */
static kiln_tensor *python_failure(const char *type) {
  kp_stash_exception();
  char msg[200];
  snprintf(msg, sizeof msg, "%s: the Python forward raised an exception", type);
  return tensor_new_failed(KILN_ERR_INVALID_ARGUMENT, msg);
}

/* Runs obj.forward(*inputs) inside a scope of its own, so the module's
 * reference rule (kp_own) holds for the tensors Python makes there; the
 * result is handed back in the caller's open scope, as an op's is. */
static kiln_tensor *py_forward(kiln_block *self, int n, kiln_tensor *const *inputs) {
  PyGILState_STATE gil = PyGILState_Ensure();
  py_block *pb = kiln_block_user(self);
  kiln_tensor *out = NULL;
  kiln_scope_begin();
  kp_callback_depth++;
  if (!pb->obj) {
    out = tensor_new_failed(KILN_ERR_INVALID_ARGUMENT, "the Python object of this block no longer exists");
  } else {
    PyObject *args = PyTuple_New(n);
    for (int i = 0; args && i < n; i++) {
      PyObject *a = kp_wrap(kiln_tensor_retain(inputs[i]));
      if (!a) Py_CLEAR(args);
      else PyTuple_SET_ITEM(args, i, a);
    }
    PyObject *fwd = args ? PyObject_GetAttrString(pb->obj, "forward") : NULL;
    PyObject *r = fwd ? PyObject_Call(fwd, args, NULL) : NULL;
    Py_XDECREF(fwd);
    Py_XDECREF(args);
    if (r && !kp_is_array(r)) {
      PyErr_Format(PyExc_TypeError, "%s.forward must return a kiln array, not %.100s", kiln_block_type(self),
                   Py_TYPE(r)->tp_name);
      Py_CLEAR(r);
    }
    out = r ? kiln_tensor_retain(((kp_array *)r)->t) : python_failure(kiln_block_type(self));
    Py_XDECREF(r);
  }
  kp_callback_depth--;
  kiln_scope_end();
  out = tensor_autorelease(out);
  PyGILState_Release(gil);
  return out;
}

/* block_new(obj, type_name, traceable): a kiln block running obj.forward. */
static PyObject *f_block_new(PyObject *m, PyObject *args) {
  PyObject *obj;
  const char *type;
  int traceable;
  if (!PyArg_ParseTuple(args, "Osp", &obj, &type, &traceable)) return NULL;
  py_block *pb = PyMem_RawMalloc(sizeof *pb);
  if (!pb) return PyErr_NoMemory();
  pb->obj = obj;
  kiln_block *b = kiln_block_new(type, py_forward, pb, PyMem_RawFree);
  if (!b) {
    PyMem_RawFree(pb);
    return kp_raise_last(kiln_last_status());
  }
  if (!traceable) kiln_block_set_traceable(b, false);
  return block_capsule_new(b, pb);
}

static PyObject *f_block_add_child(PyObject *m, PyObject *args) {
  PyObject *parent, *child, *name_o;
  if (!PyArg_ParseTuple(args, "OOO", &parent, &name_o, &child)) return NULL;
  kiln_block *p = block_arg(parent), *c = p ? block_arg(child) : NULL;
  const char *name = name_o == Py_None ? NULL : PyUnicode_AsUTF8(name_o);
  if (!c || (name_o != Py_None && !name)) return NULL;
  kiln_status st = kiln_block_add_child(p, name, kiln_block_retain(c));
  if (st != KILN_OK) return kp_raise_last(st);
  Py_RETURN_NONE;
}

static PyObject *f_block_call(PyObject *m, PyObject *const *args, Py_ssize_t n) {
  if (n < 1) return PyErr_Format(PyExc_TypeError, "block_call(block, *inputs)");
  kiln_block *b = block_arg(args[0]);
  if (!b) return NULL;
  kiln_tensor *in[8];
  if (n - 1 > 8) return PyErr_Format(PyExc_TypeError, "a block takes at most 8 inputs, got %zd", n - 1);
  for (Py_ssize_t i = 1; i < n; i++)
    if (!(in[i - 1] = kp_tensor_arg(args[i], "a block's input"))) return NULL;
  kiln_tensor *y = kp_own(kiln_block_call_n(b, (int)n - 1, in));
  if (kp_restore_stashed()) {
    kiln_tensor_release(y);
    return NULL;
  }
  return kp_wrap(y);
}

static int init_from(PyObject *o, kiln_init *init) {
  int kind;
  double a = 0, b = 0;
  if (!PyArg_ParseTuple(o, "i|dd", &kind, &a, &b)) return -1;
  *init = (kiln_init){.kind = (kiln_init_kind)kind, .a = a, .b = b};
  return 0;
}

/* block_initialize(block, init_tuple_or_None, force) */
static PyObject *f_block_initialize(PyObject *m, PyObject *args) {
  PyObject *blk, *init_o;
  int force;
  if (!PyArg_ParseTuple(args, "OOp", &blk, &init_o, &force)) return NULL;
  kiln_block *b = block_arg(blk);
  kiln_init init;
  if (!b || (init_o != Py_None && init_from(init_o, &init) < 0)) return NULL;
  kiln_status st = kiln_block_initialize(b, init_o == Py_None ? NULL : &init, force);
  if (st != KILN_OK) return kp_raise_last(st);
  Py_RETURN_NONE;
}

static PyObject *f_block_add_param(PyObject *m, PyObject *args) {
  PyObject *blk, *shape_o, *dt_o, *init_o;
  const char *name, *req;
  if (!PyArg_ParseTuple(args, "OsOOOs", &blk, &name, &shape_o, &dt_o, &init_o, &req)) return NULL;
  kiln_block *b = block_arg(blk);
  int64_t shape[KILN_MAX_DIMS];
  kiln_dtype dt;
  kiln_init init;
  int nd = b ? kp_shape_from(shape_o, shape) : -1;
  if (nd < 0 || kp_dtype_from(dt_o, &dt) < 0 || (init_o != Py_None && init_from(init_o, &init) < 0)) return NULL;
  kiln_grad_req r = !strcmp(req, "null") ? KILN_GRAD_NULL : !strcmp(req, "add") ? KILN_GRAD_ADD : KILN_GRAD_WRITE;
  kiln_status st = kiln_block_add_param(b, name, dt, nd, shape, init_o == Py_None ? NULL : &init, r);
  if (st != KILN_OK) return kp_raise_last(st);
  Py_RETURN_NONE;
}

/* block_param(block, name, shape_or_None): the parameter's data inside a
 * forward; the shape, when given, fixes its unknown dims. */
static PyObject *f_block_param(PyObject *m, PyObject *args) {
  PyObject *blk, *shape_o = Py_None;
  const char *name;
  if (!PyArg_ParseTuple(args, "Os|O", &blk, &name, &shape_o)) return NULL;
  kiln_block *b = block_arg(blk);
  int64_t shape[KILN_MAX_DIMS];
  int nd = 0;
  if (!b || (shape_o != Py_None && (nd = kp_shape_from(shape_o, shape)) < 0)) return NULL;
  kiln_tensor *p = nd ? kiln_block_param_for(b, name, nd, shape) : kiln_block_param(b, name);
  /* A borrowed parameter, or a failure in the open scope. */
  if (kiln_tensor_failed(p)) return kp_wrap(kp_own(p));
  return kp_wrap(kiln_tensor_retain(p));
}

/* [(name, array)] of every parameter, in kiln's order. */
static PyObject *f_block_collect_params(PyObject *m, PyObject *blk) {
  kiln_block *b = block_arg(blk);
  if (!b) return NULL;
  kiln_param_list l;
  kiln_status st = kiln_block_collect_params(b, &l);
  if (st != KILN_OK) return kp_raise_last(st);
  PyObject *res = PyList_New(l.n);
  for (int i = 0; res && i < l.n; i++) {
    PyObject *t = kp_wrap(kiln_tensor_retain(l.tensors[i]));
    PyObject *pair = t ? Py_BuildValue("(sN)", l.names[i], t) : NULL;
    if (!pair) Py_CLEAR(res);
    else PyList_SET_ITEM(res, i, pair);
  }
  kiln_param_list_free(&l);
  return res;
}

static PyObject *block_path_op(PyObject *args, kiln_status (*f)(kiln_block *, const char *)) {
  PyObject *blk;
  const char *path;
  if (!PyArg_ParseTuple(args, "Os", &blk, &path)) return NULL;
  kiln_block *b = block_arg(blk);
  if (!b) return NULL;
  kiln_status st;
  Py_BEGIN_ALLOW_THREADS st = f(b, path);
  Py_END_ALLOW_THREADS
  if (st != KILN_OK) return kp_raise_last(st);
  Py_RETURN_NONE;
}
static PyObject *f_block_save_parameters(PyObject *m, PyObject *a) { return block_path_op(a, kiln_block_save_parameters); }
static PyObject *f_block_load_parameters(PyObject *m, PyObject *a) { return block_path_op(a, kiln_block_load_parameters); }

static PyObject *f_block_export(PyObject *m, PyObject *args) {
  PyObject *blk;
  const char *path;
  int dynamic = 0;
  if (!PyArg_ParseTuple(args, "Os|p", &blk, &path, &dynamic)) return NULL;
  kiln_block *b = block_arg(blk);
  if (!b) return NULL;
  kiln_export_options o = {.dynamic_batch = dynamic};
  kiln_status st = kiln_block_export_ex(b, path, &o);
  if (st != KILN_OK) return kp_raise_last(st);
  Py_RETURN_NONE;
}

static PyObject *f_block_hybridize(PyObject *m, PyObject *args) {
  PyObject *blk;
  int active = 1, capacity = 0, check = 0;
  if (!PyArg_ParseTuple(args, "O|pip", &blk, &active, &capacity, &check)) return NULL;
  kiln_block *b = block_arg(blk);
  if (!b) return NULL;
  kiln_hybridize_options o = kiln_hybridize_options_default();
  o.active = active;
  if (capacity > 0) o.cache_capacity = capacity;
  if (check) o.check = true;
  kiln_status st = kiln_block_hybridize(b, &o);
  if (st != KILN_OK) return kp_raise_last(st);
  Py_RETURN_NONE;
}

static PyObject *f_block_trace_log(PyObject *m, PyObject *blk) {
  kiln_block *b = block_arg(blk);
  return b ? PyUnicode_FromString(kiln_block_trace_log(b)) : NULL;
}

static PyObject *f_block_cast(PyObject *m, PyObject *args) {
  PyObject *blk, *dt_o;
  kiln_dtype dt;
  if (!PyArg_ParseTuple(args, "OO", &blk, &dt_o)) return NULL;
  kiln_block *b = block_arg(blk);
  if (!b || kp_dtype_from(dt_o, &dt) < 0) return NULL;
  kiln_status st = kiln_block_cast(b, dt);
  if (st != KILN_OK) return kp_raise_last(st);
  Py_RETURN_NONE;
}

/* ------------------------------------------------------------ layers */

static kiln_activation activation_from(const char *s, int *ok) {
  *ok = 1;
  if (!s || !strcmp(s, "") || !strcmp(s, "none")) return KILN_ACT_NONE;
  if (!strcmp(s, "relu")) return KILN_ACT_RELU;
  if (!strcmp(s, "sigmoid")) return KILN_ACT_SIGMOID;
  if (!strcmp(s, "tanh")) return KILN_ACT_TANH;
  if (!strcmp(s, "softrelu") || !strcmp(s, "softplus")) return KILN_ACT_SOFTPLUS;
  if (!strcmp(s, "gelu")) return KILN_ACT_GELU;
  *ok = 0;
  PyErr_Format(PyExc_ValueError, "unknown activation '%s' (relu, sigmoid, tanh, softrelu, gelu)", s);
  return KILN_ACT_NONE;
}

static PyObject *f_nn_dense(PyObject *m, PyObject *args) {
  long long units, in_units;
  const char *act;
  int use_bias, flatten, ok;
  if (!PyArg_ParseTuple(args, "Lzppl", &units, &act, &use_bias, &flatten, &in_units)) return NULL;
  kiln_dense_params p = kiln_dense_params_default(units);
  p.activation = activation_from(act, &ok);
  if (!ok) return NULL;
  p.use_bias = use_bias;
  p.flatten = flatten;
  p.in_units = in_units;
  return block_capsule_new(kiln_nn_dense_ex(&p), NULL);
}

static int pair_from(PyObject *o, int64_t out[2]) {
  if (PyLong_Check(o)) {
    out[0] = out[1] = PyLong_AsLongLong(o);
    return PyErr_Occurred() ? -1 : 0;
  }
  return PyArg_ParseTuple(o, "LL", (long long *)&out[0], (long long *)&out[1]) ? 0 : -1;
}

static PyObject *f_nn_conv2d(PyObject *m, PyObject *args) {
  long long channels, in_channels, groups;
  PyObject *kernel, *strides, *padding, *dilation;
  const char *act;
  int use_bias, ok;
  if (!PyArg_ParseTuple(args, "LOOOOLzpL", &channels, &kernel, &strides, &padding, &dilation, &groups, &act, &use_bias,
                        &in_channels))
    return NULL;
  int64_t k[2];
  if (pair_from(kernel, k) < 0) return NULL;
  kiln_conv2d_layer_params p = kiln_conv2d_layer_params_default(channels, k[0], k[1]);
  if (pair_from(strides, p.conv.stride) < 0 || pair_from(padding, p.conv.padding) < 0 ||
      pair_from(dilation, p.conv.dilation) < 0)
    return NULL;
  p.conv.groups = groups;
  p.activation = activation_from(act, &ok);
  if (!ok) return NULL;
  p.use_bias = use_bias;
  p.in_channels = in_channels;
  return block_capsule_new(kiln_nn_conv2d(&p), NULL);
}

static PyObject *f_nn_pool2d(PyObject *m, PyObject *args) {
  int avg, count_include_pad;
  PyObject *kernel, *strides, *padding;
  if (!PyArg_ParseTuple(args, "pOOOp", &avg, &kernel, &strides, &padding, &count_include_pad)) return NULL;
  int64_t k[2];
  if (pair_from(kernel, k) < 0) return NULL;
  kiln_pool2d_params p = kiln_pool2d_params_default(k[0], k[1]);
  if ((strides != Py_None && pair_from(strides, p.stride) < 0) || pair_from(padding, p.padding) < 0) return NULL;
  p.count_include_pad = count_include_pad;
  return block_capsule_new(avg ? kiln_nn_avg_pool2d(&p) : kiln_nn_max_pool2d(&p), NULL);
}

static PyObject *f_nn_sequential(PyObject *m, PyObject *u) { return block_capsule_new(kiln_nn_sequential(), NULL); }
static PyObject *f_nn_flatten(PyObject *m, PyObject *u) { return block_capsule_new(kiln_nn_flatten(), NULL); }
static PyObject *f_nn_global_avg_pool2d(PyObject *m, PyObject *u) {
  return block_capsule_new(kiln_nn_global_avg_pool2d(), NULL);
}
static PyObject *f_nn_dropout(PyObject *m, PyObject *p) {
  double rate = PyFloat_AsDouble(p);
  return PyErr_Occurred() ? NULL : block_capsule_new(kiln_nn_dropout(rate), NULL);
}
static PyObject *f_nn_batch_norm(PyObject *m, PyObject *args) {
  long long in_channels;
  double momentum, eps;
  if (!PyArg_ParseTuple(args, "Ldd", &in_channels, &momentum, &eps)) return NULL;
  return block_capsule_new(kiln_nn_batch_norm(in_channels, momentum, eps), NULL);
}
static PyObject *f_nn_activation(PyObject *m, PyObject *a) {
  int ok;
  kiln_activation act = activation_from(PyUnicode_AsUTF8(a), &ok);
  return ok ? block_capsule_new(kiln_nn_activation(act), NULL) : NULL;
}

/* ------------------------------------------------------------ trainer */

static const char trainer_capsule[] = "kiln.trainer";
static void trainer_capsule_free(PyObject *cap) { kiln_trainer_free(PyCapsule_GetPointer(cap, trainer_capsule)); }

/* trainer_new(block, kind, lr, momentum, wd, beta1, beta2, eps) */
static PyObject *f_trainer_new(PyObject *m, PyObject *args) {
  PyObject *blk;
  const char *kind;
  double lr, momentum, wd, b1, b2, eps;
  if (!PyArg_ParseTuple(args, "Osdddddd", &blk, &kind, &lr, &momentum, &wd, &b1, &b2, &eps)) return NULL;
  kiln_block *b = block_arg(blk);
  if (!b) return NULL;
  kiln_optimizer_kind k;
  if (!strcmp(kind, "sgd")) k = KILN_OPT_SGD;
  else if (!strcmp(kind, "adam")) k = KILN_OPT_ADAM;
  else if (!strcmp(kind, "adamw")) k = KILN_OPT_ADAMW;
  else return PyErr_Format(PyExc_ValueError, "unknown optimizer '%s' (sgd, adam, adamw)", kind);
  kiln_optimizer_params p = kiln_optimizer_params_default(k);
  p.lr = lr;
  p.momentum = momentum;
  if (wd >= 0) p.weight_decay = wd;
  p.beta1 = b1;
  p.beta2 = b2;
  p.eps = eps;
  kiln_trainer *t = kiln_trainer_new(b, &p);
  if (!t) return kp_raise_last(kiln_last_status());
  PyObject *cap = PyCapsule_New(t, trainer_capsule, trainer_capsule_free);
  if (!cap) kiln_trainer_free(t);
  return cap;
}

static PyObject *f_trainer_step(PyObject *m, PyObject *args) {
  PyObject *cap;
  double batch;
  if (!PyArg_ParseTuple(args, "Od", &cap, &batch)) return NULL;
  kiln_trainer *t = PyCapsule_GetPointer(cap, trainer_capsule);
  if (!t) return NULL;
  kiln_status st = kiln_trainer_step(t, batch);
  if (st != KILN_OK) return kp_raise_last(st);
  Py_RETURN_NONE;
}

static PyObject *f_trainer_lr(PyObject *m, PyObject *cap) {
  kiln_trainer *t = PyCapsule_GetPointer(cap, trainer_capsule);
  return t ? PyFloat_FromDouble(kiln_trainer_lr(t)) : NULL;
}

/* ------------------------------------------------------------ loaded models */

static const char model_capsule[] = "kiln.model";
static void model_capsule_free(PyObject *cap) { kiln_model_free(PyCapsule_GetPointer(cap, model_capsule)); }

static PyObject *f_model_load(PyObject *m, PyObject *path_o) {
  const char *path = PyUnicode_AsUTF8(path_o);
  if (!path) return NULL;
  kiln_model *model;
  Py_BEGIN_ALLOW_THREADS model = kiln_model_load(path);
  Py_END_ALLOW_THREADS
  if (!model) return kp_raise_last(kiln_last_status());
  PyObject *cap = PyCapsule_New(model, model_capsule, model_capsule_free);
  if (!cap) kiln_model_free(model);
  return cap;
}

/* model_run(model, *inputs) -> tuple of outputs */
static PyObject *f_model_run(PyObject *m, PyObject *const *args, Py_ssize_t n) {
  if (n < 1) return PyErr_Format(PyExc_TypeError, "model_run(model, *inputs)");
  kiln_model *model = PyCapsule_GetPointer(args[0], model_capsule);
  if (!model) return NULL;
  int n_in = kiln_model_num_inputs(model), n_out = kiln_model_num_outputs(model);
  if (n - 1 != n_in) return PyErr_Format(PyExc_TypeError, "the model takes %d inputs, got %zd", n_in, n - 1);
  kiln_tensor *in[16], *out[16];
  if (n_in > 16 || n_out > 16) return PyErr_Format(PyExc_ValueError, "at most 16 inputs and outputs");
  for (int i = 0; i < n_in; i++)
    if (!(in[i] = kp_tensor_arg(args[i + 1], "a model input"))) return NULL;
  PyObject *res = PyTuple_New(n_out);
  if (!res) return NULL;
  kiln_status st = kiln_model_run(model, n_in, in, out);
  if (st != KILN_OK) {
    Py_DECREF(res);
    return kp_raise_last(st);
  }
  int failed = 0;
  for (int i = 0; i < n_out; i++) {
    PyObject *o = failed ? NULL : kp_wrap(kp_own(out[i]));
    if (failed) kiln_tensor_release(kp_own(out[i]));
    else if (!o) failed = 1;
    else PyTuple_SET_ITEM(res, i, o);
  }
  if (failed) Py_CLEAR(res);
  return res;
}

/* ------------------------------------------------------------ data */

static PyObject *f_fashion_mnist(PyObject *m, PyObject *args) {
  const char *dir = NULL;
  int train;
  if (!PyArg_ParseTuple(args, "zp", &dir, &train)) return NULL;
  kiln_tensor *x, *y;
  kiln_status st;
  Py_BEGIN_ALLOW_THREADS st = kiln_fashion_mnist_load(dir, train, &x, &y);
  Py_END_ALLOW_THREADS
  if (st != KILN_OK) return kp_raise_last(st);
  return Py_BuildValue("(NN)", kp_wrap(kp_own(x)), kp_wrap(kp_own(y)));
}

static const char loader_capsule[] = "kiln.loader";
static void loader_capsule_free(PyObject *cap) { kiln_loader_free(PyCapsule_GetPointer(cap, loader_capsule)); }

static PyObject *f_loader_new(PyObject *m, PyObject *args) {
  PyObject *xo, *yo;
  long long batch;
  int shuffle, discard;
  unsigned long long seed;
  if (!PyArg_ParseTuple(args, "OOLpKp", &xo, &yo, &batch, &shuffle, &seed, &discard)) return NULL;
  kiln_tensor *x = kp_tensor_arg(xo, "images"), *y = x ? kp_tensor_arg(yo, "labels") : NULL;
  if (!y) return NULL;
  kiln_loader *l;
  Py_BEGIN_ALLOW_THREADS l = kiln_loader_new(x, y, batch, shuffle, seed, discard ? KILN_LAST_BATCH_DISCARD : KILN_LAST_BATCH_KEEP);
  Py_END_ALLOW_THREADS
  if (!l) return kp_raise_last(kiln_last_status());
  PyObject *cap = PyCapsule_New(l, loader_capsule, loader_capsule_free);
  if (!cap) kiln_loader_free(l);
  return cap;
}

/* The next (x, y), or None at the end of the epoch. */
static PyObject *f_loader_next(PyObject *m, PyObject *cap) {
  kiln_loader *l = PyCapsule_GetPointer(cap, loader_capsule);
  if (!l) return NULL;
  kiln_tensor *x, *y;
  kiln_status st = kiln_loader_next(l, &x, &y);
  if (st == KILN_ERR_OUT_OF_RANGE) Py_RETURN_NONE;
  if (st != KILN_OK) return kp_raise_last(st);
  return Py_BuildValue("(NN)", kp_wrap(kp_own(x)), kp_wrap(kp_own(y)));
}

static PyObject *f_loader_reset(PyObject *m, PyObject *cap) {
  kiln_loader *l = PyCapsule_GetPointer(cap, loader_capsule);
  if (!l) return NULL;
  kiln_status st = kiln_loader_reset(l);
  if (st != KILN_OK) return kp_raise_last(st);
  Py_RETURN_NONE;
}

static PyObject *f_loader_len(PyObject *m, PyObject *cap) {
  kiln_loader *l = PyCapsule_GetPointer(cap, loader_capsule);
  return l ? PyLong_FromLongLong(kiln_loader_num_batches(l)) : NULL;
}

#define V(name) {#name, f_##name, METH_VARARGS, NULL}
#define O(name) {#name, f_##name, METH_O, NULL}
#define N(name) {#name, f_##name, METH_NOARGS, NULL}
PyMethodDef kp_nn_methods[] = {
    V(block_new), V(block_add_child), {"block_call", KP_FN(f_block_call), METH_FASTCALL, NULL}, V(block_initialize),
    V(block_add_param), V(block_param), O(block_collect_params), V(block_save_parameters), V(block_load_parameters),
    V(block_export), V(block_hybridize), O(block_trace_log), V(block_cast),
    V(nn_dense), V(nn_conv2d), V(nn_pool2d), N(nn_sequential), N(nn_flatten), N(nn_global_avg_pool2d), O(nn_dropout),
    V(nn_batch_norm), O(nn_activation),
    V(trainer_new), V(trainer_step), O(trainer_lr),
    O(model_load), {"model_run", KP_FN(f_model_run), METH_FASTCALL, NULL},
    V(fashion_mnist), V(loader_new), O(loader_next), O(loader_reset), O(loader_len),
    {NULL, NULL, 0, NULL},
};
#undef V
#undef O
#undef N
