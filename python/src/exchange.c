/* Zero-copy exchange: kiln arrays over numpy's (or any buffer exporter's)
 * memory, and DLPack both ways (PyTorch, numpy >= 1.22, other kilns).
 *
 * Imported memory becomes a kiln tensor through kiln_tensor_from_external,
 * whose release runs when kiln is done with the memory: after the last op
 * on it, usually on an engine worker, which must never take the GIL (the
 * thread holding it may be waiting for that very worker, in a push held
 * back by the engine's back-pressure). So what a release gives back to
 * Python (a Py_buffer, a producer's DLPack deleter, which for numpy
 * touches reference counts) is queued here and run by the interpreter's
 * main thread through Py_AddPendingCall, or at once when the releasing
 * thread already holds the GIL (naive engine mode, an inline free).
 *
 * Exported DLPack tensors hold a kiln reference, dropped by their deleter,
 * which needs no GIL. The pointer handed out is read after the tensor's
 * pending writes (kiln_tensor_data); a consumer that writes must wait for
 * kiln's pending reads as well (kiln.waitall()), as docs/python.md says. */
#include "kilnpy.h" /* Python.h first, as it asks */

#include <pthread.h>
#include <stdlib.h>

/* ------------------------------------------------------------ DLPack ABI */

/* The unversioned DLManagedTensor of DLPack 0.6-0.8 (dlpack.h), the one
 * PyTorch 1.13 and numpy 1.24 exchange in "dltensor" capsules. */
enum { DL_CPU = 1 };
enum { DL_INT = 0, DL_UINT = 1, DL_FLOAT = 2, DL_BOOL = 6 };
typedef struct {
  int device_type;
  int device_id;
} dl_device;
typedef struct {
  uint8_t code, bits;
  uint16_t lanes;
} dl_dtype;
typedef struct {
  void *data;
  dl_device device;
  int ndim;
  dl_dtype dtype;
  int64_t *shape;
  int64_t *strides; /* elements; NULL = row-major */
  uint64_t byte_offset;
} dl_tensor;
typedef struct dl_managed {
  dl_tensor dl;
  void *manager_ctx;
  void (*deleter)(struct dl_managed *self);
} dl_managed;

static const char capsule_name[] = "dltensor", used_name[] = "used_dltensor";

/* ------------------------------------------------------------ deferred releases */

typedef struct deferred {
  void (*fn)(void *ctx); /* runs with the GIL */
  void *ctx;
  struct deferred *next;
} deferred;

static struct {
  pthread_mutex_t lock;
  deferred *head;
  bool scheduled; /* a pending call is queued to drain the list */
} releases = {PTHREAD_MUTEX_INITIALIZER, NULL, false};

void kp_drain_releases(void) {
  pthread_mutex_lock(&releases.lock);
  deferred *d = releases.head;
  releases.head = NULL;
  releases.scheduled = false;
  pthread_mutex_unlock(&releases.lock);
  while (d) {
    deferred *next = d->next;
    d->fn(d->ctx);
    free(d);
    d = next;
  }
}

static int drain_call(void *unused) {
  (void)unused;
  kp_drain_releases();
  return 0;
}

/* Runs fn(ctx) with the GIL: now if this thread holds it, else soon on the
 * main thread. During interpreter shutdown nothing runs Python any more:
 * the object is leaked rather than touched. */
static void with_gil(void (*fn)(void *), void *ctx) {
  if (!Py_IsInitialized() || _Py_IsFinalizing()) return;
  if (PyGILState_GetThisThreadState() && PyGILState_Check()) {
    fn(ctx);
    return;
  }
  deferred *d = malloc(sizeof *d);
  if (!d) return; /* leaks the Python object: nothing safer to do here */
  d->fn = fn;
  d->ctx = ctx;
  pthread_mutex_lock(&releases.lock);
  d->next = releases.head;
  releases.head = d;
  bool schedule = !releases.scheduled;
  releases.scheduled = true;
  pthread_mutex_unlock(&releases.lock);
  /* A full pending-call queue leaves the entry for the next drain (the
   * next release, kiln.waitall() or an import). */
  if (schedule && Py_AddPendingCall(drain_call, NULL) != 0) {
    pthread_mutex_lock(&releases.lock);
    releases.scheduled = false;
    pthread_mutex_unlock(&releases.lock);
  }
}

/* ------------------------------------------------------------ dtypes */

static int dtype_from_dl(dl_dtype t, kiln_dtype *out) {
  if (t.lanes != 1) return -1;
  switch (t.code) {
    case DL_FLOAT: *out = t.bits == 32 ? KILN_F32 : KILN_F64; return t.bits == 32 || t.bits == 64 ? 0 : -1;
    case DL_INT: *out = t.bits == 32 ? KILN_I32 : KILN_I64; return t.bits == 32 || t.bits == 64 ? 0 : -1;
    case DL_UINT: *out = KILN_U8; return t.bits == 8 ? 0 : -1;
    case DL_BOOL: *out = KILN_BOOL; return t.bits == 8 ? 0 : -1;
    default: return -1;
  }
}

static dl_dtype dtype_to_dl(kiln_dtype dt) {
  static const dl_dtype map[KILN_DTYPE_COUNT] = {
      [KILN_F32] = {DL_FLOAT, 32, 1}, [KILN_F64] = {DL_FLOAT, 64, 1}, [KILN_I32] = {DL_INT, 32, 1},
      [KILN_I64] = {DL_INT, 64, 1},   [KILN_U8] = {DL_UINT, 8, 1},    [KILN_BOOL] = {DL_BOOL, 8, 1},
  };
  return map[dt];
}

/* ------------------------------------------------------------ export */

typedef struct {
  dl_managed m;
  int64_t shape[KILN_MAX_DIMS], strides[KILN_MAX_DIMS];
} export_block;

/* May run on any thread, with or without the GIL: it touches only kiln. */
static void export_deleter(dl_managed *self) {
  kiln_tensor_release(self->manager_ctx);
  free(self);
}

static void export_capsule_free(PyObject *cap) {
  /* Renamed by a consumer that took ownership; else never consumed. */
  if (!PyCapsule_IsValid(cap, capsule_name)) return;
  dl_managed *m = PyCapsule_GetPointer(cap, capsule_name);
  if (m && m->deleter) m->deleter(m);
}

/* x.__dlpack__(stream=None): a "dltensor" capsule over x's memory, after
 * x's pending writes. The capsule (and whoever consumes it) holds a kiln
 * reference, so x itself may go. */
PyObject *kp_array_dlpack(PyObject *self, PyObject *args, PyObject *kw) {
  static char *names[] = {"stream", NULL};
  PyObject *stream = Py_None;
  if (!PyArg_ParseTupleAndKeywords(args, kw, "|$O", names, &stream)) return NULL;
  if (stream != Py_None && !(PyLong_Check(stream) && PyLong_AsLong(stream) == -1)) {
    if (PyErr_Occurred()) return NULL;
    PyErr_SetString(PyExc_BufferError, "kiln arrays live in host memory: __dlpack__ takes no stream");
    return NULL;
  }
  kiln_tensor *t = ((kp_array *)self)->t;
  /* DLPack consumers differ on negative strides, and PyTorch 1.13 aborts
   * the whole process on them: refuse here, with the way out. */
  for (int i = 0; i < kiln_tensor_ndim(t); i++)
    if (kiln_tensor_strides(t)[i] < 0 && kiln_tensor_dim(t, i) > 1) {
      PyErr_Format(PyExc_BufferError,
                   "this view has a negative stride on axis %d, which DLPack consumers do not all accept: export "
                   "kiln.nd.contiguous(x)",
                   i);
      return NULL;
    }
  void *data;
  kiln_status st;
  Py_BEGIN_ALLOW_THREADS st = kiln_tensor_data(t, &data);
  Py_END_ALLOW_THREADS
  if (st != KILN_OK) return kp_raise_last(st);
  export_block *b = malloc(sizeof *b);
  if (!b) return PyErr_NoMemory();
  int nd = kiln_tensor_ndim(t);
  for (int i = 0; i < nd; i++) {
    b->shape[i] = kiln_tensor_dim(t, i);
    b->strides[i] = kiln_tensor_strides(t)[i];
  }
  b->m.dl = (dl_tensor){.data = data, .device = {DL_CPU, 0}, .ndim = nd, .dtype = dtype_to_dl(kiln_tensor_dtype(t)),
                        .shape = b->shape, .strides = b->strides, .byte_offset = 0};
  b->m.manager_ctx = kiln_tensor_retain(t);
  b->m.deleter = export_deleter;
  PyObject *cap = PyCapsule_New(&b->m, capsule_name, export_capsule_free);
  if (!cap) export_deleter(&b->m);
  return cap;
}

/* Every kiln device is host memory. */
PyObject *kp_array_dlpack_device(PyObject *self, PyObject *unused) {
  (void)self;
  (void)unused;
  return Py_BuildValue("(ii)", DL_CPU, 0);
}

/* ------------------------------------------------------------ import */

static void call_dl_deleter(void *ctx) {
  dl_managed *m = ctx;
  if (m->deleter) m->deleter(m);
}
static void dl_release(void *ctx) { with_gil(call_dl_deleter, ctx); }

/* The (type, id) of a __dlpack_device__ result; -1 with an exception. */
static int device_of(PyObject *obj, int *type, int *id) {
  PyObject *dev = PyObject_CallMethod(obj, "__dlpack_device__", NULL);
  if (!dev) return -1;
  int ok = PyArg_ParseTuple(dev, "ii", type, id);
  Py_DECREF(dev);
  if (!ok) {
    PyErr_Format(PyExc_TypeError, "__dlpack_device__ of %.100s did not return a (device type, id) pair",
                 Py_TYPE(obj)->tp_name);
    return -1;
  }
  return 0;
}

static PyObject *not_host(int type, int id) {
  char msg[160];
  snprintf(msg, sizeof msg,
           "from_dlpack: kiln uses host memory; this tensor is on DLPack device (%d, %d) (copy it to the CPU first)",
           type, id);
  return kp_raise(KILN_ERR_UNSUPPORTED, msg);
}

/* from_dlpack(obj): a kiln array sharing the memory of obj (anything with
 * __dlpack__: a torch tensor, a numpy array, a kiln array) or of a
 * "dltensor" capsule (torch.utils.dlpack.to_dlpack). */
PyObject *kp_from_dlpack(PyObject *m, PyObject *obj) {
  (void)m;
  kp_drain_releases();
  PyObject *cap;
  if (PyCapsule_CheckExact(obj)) {
    cap = Py_NewRef(obj);
  } else {
    if (!PyObject_HasAttrString(obj, "__dlpack__"))
      return PyErr_Format(PyExc_TypeError,
                          "from_dlpack takes an object with __dlpack__ (a torch tensor, a numpy array) or a DLPack "
                          "capsule, not %.100s",
                          Py_TYPE(obj)->tp_name);
    int type, id;
    if (device_of(obj, &type, &id) < 0) return NULL;
    if (type != DL_CPU) return not_host(type, id);
    cap = PyObject_CallMethod(obj, "__dlpack__", NULL);
    if (!cap) return NULL;
  }
  if (!PyCapsule_IsValid(cap, capsule_name)) {
    Py_DECREF(cap);
    PyErr_SetString(PyExc_ValueError, "from_dlpack: not an unused \"dltensor\" capsule (a capsule is consumed once)");
    return NULL;
  }
  dl_managed *mt = PyCapsule_GetPointer(cap, capsule_name);
  const dl_tensor *d = &mt->dl;
  kiln_dtype dt;
  PyObject *res = NULL;
  if (d->device.device_type != DL_CPU) {
    not_host(d->device.device_type, d->device.device_id);
  } else if (dtype_from_dl(d->dtype, &dt) < 0) {
    char msg[160];
    snprintf(msg, sizeof msg, "from_dlpack: kiln has no dtype for DLPack type code %u, %u bits, %u lanes (%s)",
             d->dtype.code, d->dtype.bits, d->dtype.lanes, "float32, float64, int32, int64, uint8, bool");
    kp_raise(KILN_ERR_DTYPE, msg);
  } else if (d->ndim < 0 || d->ndim > KILN_MAX_DIMS) {
    PyErr_Format(PyExc_ValueError, "from_dlpack: %d dims (kiln arrays have at most %d)", d->ndim, KILN_MAX_DIMS);
  } else {
    kiln_tensor *t = kp_own(kiln_tensor_from_external(dt, d->ndim, d->shape, d->strides,
                                                      (char *)d->data + d->byte_offset, dl_release, mt));
    /* Ownership passes to kiln only when the tensor was made: a failed
     * one leaves the capsule to its producer's destructor. */
    if (!kiln_tensor_failed(t) && PyCapsule_SetName(cap, used_name) < 0) {
      kiln_tensor_release(t);
      Py_DECREF(cap);
      return NULL;
    }
    res = kp_wrap(t);
  }
  Py_DECREF(cap);
  return res;
}

/* ------------------------------------------------------------ buffers */

static void buffer_free(void *ctx) {
  PyBuffer_Release(ctx);
  PyMem_RawFree(ctx);
}
static void buffer_release(void *ctx) { with_gil(buffer_free, ctx); }

/* share_buffer(obj): a kiln array over the memory of a writable buffer
 * exporter (a numpy array, array.array, bytearray), which it keeps alive.
 * Read-only buffers are refused: kiln has no read-only arrays, and
 * assignment would write into them. */
PyObject *kp_share_buffer(PyObject *m, PyObject *obj) {
  (void)m;
  kp_drain_releases();
  Py_buffer *view = PyMem_RawMalloc(sizeof *view);
  if (!view) return PyErr_NoMemory();
  if (PyObject_GetBuffer(obj, view, PyBUF_RECORDS_RO) < 0) {
    PyMem_RawFree(view);
    return NULL;
  }
  kiln_dtype dt;
  int64_t shape[KILN_MAX_DIMS], strides[KILN_MAX_DIMS];
  kiln_status why = KILN_OK;
  char msg[200];
  const char *fmt = view->format ? view->format : "B";
  if (view->readonly) {
    why = KILN_ERR_INVALID_ARGUMENT;
    snprintf(msg, sizeof msg, "share: the buffer is read-only, and kiln arrays are writable (copy it instead)");
  } else if (kp_dtype_of_format(fmt, view->itemsize, &dt) < 0) {
    why = KILN_ERR_DTYPE;
    snprintf(msg, sizeof msg, "share: kiln has no dtype for buffer format '%.20s' (it has %s)", fmt,
             "float32, float64, int32, int64, uint8, bool");
  } else if (view->ndim > KILN_MAX_DIMS) {
    why = KILN_ERR_INVALID_ARGUMENT;
    snprintf(msg, sizeof msg, "share: %d dims (kiln arrays have at most %d)", view->ndim, KILN_MAX_DIMS);
  }
  for (int i = 0; why == KILN_OK && i < view->ndim; i++) {
    shape[i] = view->shape[i];
    strides[i] = view->strides[i] / view->itemsize;
    if (view->strides[i] % view->itemsize != 0) {
      why = KILN_ERR_INVALID_ARGUMENT;
      snprintf(msg, sizeof msg, "share: stride %zd of axis %d is not a whole number of %zd-byte elements",
               view->strides[i], i, view->itemsize);
    }
  }
  if (why != KILN_OK) {
    PyBuffer_Release(view);
    PyMem_RawFree(view);
    return kp_raise(why, msg);
  }
  kiln_tensor *t = kp_own(kiln_tensor_from_external(dt, view->ndim, shape, strides, view->buf, buffer_release, view));
  if (kiln_tensor_failed(t)) {
    PyBuffer_Release(view);
    PyMem_RawFree(view);
  }
  return kp_wrap(t);
}
