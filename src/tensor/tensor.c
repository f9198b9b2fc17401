/* Tensors: creation, views, failure carriers, reference counting and the
 * accessors of kiln.h. */
#include <string.h>

#include "tensor/tensor.h"

#include "device/device.h"
#include "engine/engine.h"

static const size_t dtype_sizes[KILN_DTYPE_COUNT] = {4, 8, 4, 8, 1, 1};
static const char *const dtype_names[KILN_DTYPE_COUNT] = {"float32", "float64", "int32", "int64", "uint8", "bool"};

const char *kiln_dtype_name(kiln_dtype dt) { return (unsigned)dt < KILN_DTYPE_COUNT ? dtype_names[dt] : "unknown"; }
size_t kiln_dtype_size(kiln_dtype dt) { return (unsigned)dt < KILN_DTYPE_COUNT ? dtype_sizes[dt] : 0; }

/* Returned when even a failure carrier cannot be allocated: ops never return
 * NULL. It is never freed. */
static kiln_tensor out_of_memory_tensor = {
    .immortal = true,
    .status = KILN_ERR_OUT_OF_MEMORY,
    .error = (char *)"out of memory",
};

kiln_tensor *tensor_out_of_memory(void) { return &out_of_memory_tensor; }

void contiguous_strides(int ndim, const int64_t *shape, int64_t *strides) {
  int64_t s = 1;
  for (int i = ndim - 1; i >= 0; i--) {
    strides[i] = s;
    s *= shape[i] > 0 ? shape[i] : 1;
  }
}

kiln_status tensor_checked_numel(const char *op, kiln_dtype dt, int ndim, const int64_t *shape, int64_t *numel) {
  char buf[KILN_SHAPE_STR_MAX];
  if ((unsigned)dt >= KILN_DTYPE_COUNT) return kiln_errorf(KILN_ERR_DTYPE, "%s: dtype %d is not a kiln dtype", op, (int)dt);
  if (ndim < 0 || ndim > KILN_MAX_DIMS)
    return kiln_errorf(KILN_ERR_INVALID_ARGUMENT, "%s: %d dims (kiln supports 0 to %d)", op, ndim, KILN_MAX_DIMS);
  if (ndim > 0 && !shape) return kiln_errorf(KILN_ERR_INVALID_ARGUMENT, "%s: shape is NULL", op);
  /* The product of the nonzero dims must fit too, even when a zero dim
   * makes the count 0: strides are computed from it (numpy refuses such
   * shapes as well). */
  int64_t nonzero = 1;
  bool empty = false;
  for (int i = 0; i < ndim; i++) {
    if (shape[i] < 0)
      return kiln_errorf(KILN_ERR_INVALID_ARGUMENT, "%s: negative dim in shape %s", op,
                         kiln_shape_str(buf, sizeof buf, ndim, shape));
    if (shape[i] == 0) {
      empty = true;
      continue;
    }
    if (!kiln_mul_i64(nonzero, shape[i], &nonzero))
      return kiln_errorf(KILN_ERR_OVERFLOW, "%s: element count of shape %s overflows", op,
                         kiln_shape_str(buf, sizeof buf, ndim, shape));
  }
  int64_t bytes;
  if (!kiln_mul_i64(nonzero, (int64_t)dtype_sizes[dt], &bytes))
    return kiln_errorf(KILN_ERR_OVERFLOW, "%s: byte size of shape %s overflows", op,
                       kiln_shape_str(buf, sizeof buf, ndim, shape));
  *numel = empty ? 0 : nonzero;
  return KILN_OK;
}

/* The storage header padded to the allocation's alignment, so inline data
 * keeps KILN_ALIGN. */
#define STORAGE_HEADER ((sizeof(kiln_storage) + KILN_ALIGN - 1) / KILN_ALIGN * KILN_ALIGN)

static kiln_tensor *tensor_alloc_header(void) {
  kiln_tensor *t = kiln_alloc_small(sizeof *t);
  if (t) atomic_init(&t->refs, 1);
  return t;
}

kiln_tensor *tensor_new_failed(kiln_status status, const char *message) {
  kiln_tensor *t = tensor_alloc_header();
  if (!t) return &out_of_memory_tensor;
  t->status = status == KILN_OK ? KILN_ERR_INTERNAL : status;
  t->error = kiln_strdup(message && *message ? message : kiln_status_str(status));
  if (!t->error) {
    kiln_free(t);
    return &out_of_memory_tensor;
  }
  return t;
}

kiln_tensor *tensor_new_failed_from(const kiln_tensor *src) { return tensor_new_failed(src->status, src->error); }

kiln_status storage_bind(kiln_storage *s, int device) {
  kiln_engine *engine;
  int queue;
  kiln_status st = device_start(device, &engine, &queue);
  if (st != KILN_OK) return st;
  kiln_engine_var *var = engine_new_var_on(engine, queue);
  if (!var) return KILN_ERR_OUT_OF_MEMORY;
  atomic_init(&s->refs, 1);
  s->device = device;
  s->queue = queue;
  s->engine = engine;
  s->var = var;
  return KILN_OK;
}

kiln_tensor *tensor_new(kiln_dtype dt, int ndim, const int64_t *shape) {
  return tensor_new_on(device_current(), dt, ndim, shape);
}

kiln_tensor *tensor_new_on(int device, kiln_dtype dt, int ndim, const int64_t *shape) {
  int64_t numel;
  kiln_status st = tensor_checked_numel("tensor", dt, ndim, shape, &numel);
  if (st != KILN_OK) return tensor_new_failed(st, kiln_last_error());
  kiln_tensor *t = tensor_alloc_header();
  size_t nbytes = (size_t)numel * dtype_sizes[dt];
  /* Small storage lives in one allocation with its header (one malloc fewer
   * per eager op); large storage goes through the block cache. */
  bool inline_data = nbytes < KILN_BLOCK_CACHE_MIN;
  size_t block_bytes = 0;
  const device_backend *backend = device_backend_of(device);
  kiln_storage *s = inline_data ? backend->alloc(STORAGE_HEADER + nbytes, &block_bytes) : kiln_alloc(sizeof *s);
  void *data = !s ? NULL : inline_data ? (char *)s + STORAGE_HEADER : backend->alloc(nbytes, &block_bytes);
  kiln_status bound = t && data ? storage_bind(s, device) : KILN_ERR_OUT_OF_MEMORY;
  if (bound != KILN_OK) {
    char buf[KILN_SHAPE_STR_MAX];
    kiln_status failure =
        bound != KILN_ERR_OUT_OF_MEMORY
            ? kiln_errorf(bound, "tensor: %s", kiln_last_error())
            : kiln_errorf(KILN_ERR_OUT_OF_MEMORY, "out of memory allocating %zu bytes for a %s tensor of shape %s",
                          nbytes, dtype_names[dt], kiln_shape_str(buf, sizeof buf, ndim, shape));
    kiln_free(t);
    if (inline_data) {
      if (s) backend->free(s, block_bytes);
    } else {
      if (data) backend->free(data, block_bytes);
      kiln_free(s);
    }
    return tensor_new_failed(failure, kiln_last_error());
  }
  device_account(device, (int64_t)block_bytes);
  s->data = data;
  s->nbytes = block_bytes;
  s->inline_data = inline_data;
  s->release = NULL;
  t->storage = s;
  t->dtype = dt;
  t->ndim = ndim;
  if (ndim) memcpy(t->shape, shape, (size_t)ndim * sizeof *shape);
  contiguous_strides(ndim, shape, t->strides);
  return t;
}

kiln_tensor *tensor_new_view(const kiln_tensor *base, int ndim, const int64_t *shape, const int64_t *strides,
                             int64_t offset) {
  kiln_tensor *t = tensor_alloc_header();
  if (!t) return &out_of_memory_tensor;
  t->storage = base->storage;
  atomic_fetch_add_explicit(&t->storage->refs, 1, memory_order_relaxed);
  t->dtype = base->dtype;
  t->ndim = ndim;
  if (ndim) {
    memcpy(t->shape, shape, (size_t)ndim * sizeof *shape);
    memcpy(t->strides, strides, (size_t)ndim * sizeof *strides);
  }
  t->offset = base->offset + offset;
  return t;
}

kiln_tensor *kiln_tensor_retain(kiln_tensor *t) {
  if (t && !t->immortal) atomic_fetch_add_explicit(&t->refs, 1, memory_order_relaxed);
  return t;
}

static void storage_free(void *data) {
  kiln_storage *s = data;
  if (s->release) {
    s->release(s->release_ctx);
    kiln_free(s);
    return;
  }
  const device_backend *backend = device_backend_of(s->device);
  device_account(s->device, -(int64_t)s->nbytes);
  if (s->inline_data) {
    backend->free(s, s->nbytes);
  } else {
    backend->free(s->data, s->nbytes);
    kiln_free(s);
  }
}

/* The last reference gone: the engine frees the storage after the work
 * already pushed on it (an op may still be reading it). */
static void storage_release(kiln_storage *s) {
  if (!s || atomic_fetch_sub_explicit(&s->refs, 1, memory_order_acq_rel) != 1) return;
  if (kiln_engine_delete_var(s->engine, s->var, storage_free, s) != KILN_OK) {
    /* Out of memory for the delete: wait for the work, then free here (the
     * variable itself goes with the engine). */
    kiln_engine_wait_var(s->engine, s->var);
    storage_free(s);
  }
}

void (*tensor_ag_free)(void *entry);
void (*tensor_sym_free)(void *sym);
const char *(*tensor_sym_origin)(const void *sym);

kiln_tensor *tensor_new_symbolic(kiln_dtype dt, int ndim, const int64_t *shape, const int64_t *strides, void *sym) {
  kiln_tensor *t = tensor_alloc_header();
  if (!t) return &out_of_memory_tensor;
  t->dtype = dt;
  t->ndim = ndim;
  if (ndim) {
    memcpy(t->shape, shape, (size_t)ndim * sizeof *shape);
    memcpy(t->strides, strides, (size_t)ndim * sizeof *strides);
  }
  t->sym = sym;
  return t;
}

void kiln_tensor_release(kiln_tensor *t) {
  if (!t || t->immortal) return;
  if (atomic_fetch_sub_explicit(&t->refs, 1, memory_order_acq_rel) != 1) return;
  if (t->ag) tensor_ag_free(t->ag);
  if (t->sym) tensor_sym_free(t->sym);
  storage_release(t->storage);
  kiln_free(t->error);
  kiln_free(t);
}

kk_view tensor_view_of(const kiln_tensor *t) {
  kk_view v;
  v.data = t->storage ? tensor_data(t) : NULL;
  v.dtype = t->dtype;
  v.ndim = t->ndim;
  memcpy(v.shape, t->shape, sizeof v.shape);
  memcpy(v.strides, t->strides, sizeof v.strides);
  return v;
}

/* ------------------------------------------------------------ accessors */

kiln_status tensor_wait(const kiln_tensor *t, const char **message) {
  if (t->status != KILN_OK || !t->storage) {
    if (message) *message = t->error;
    return t->status;
  }
  kiln_status st;
  const char *msg = engine_var_error(t->storage->engine, t->storage->var, &st);
  if (message) *message = msg ? msg : "";
  return st;
}

kiln_status kiln_wait_to_read(const kiln_tensor *t) {
  if (!t) return kiln_errorf(KILN_ERR_INVALID_ARGUMENT, "kiln_wait_to_read: tensor is NULL");
  if (t->sym)
    return kiln_errorf(KILN_ERR_INVALID_ARGUMENT, "kiln_wait_to_read: the output of %s is symbolic: it has no value to wait for",
                       tensor_sym_origin(t->sym));
  const char *msg;
  kiln_status st = tensor_wait(t, &msg);
  return st == KILN_OK ? st : kiln_errorf(st, "%s", msg);
}

kiln_status kiln_waitall(void) {
  kiln_engine *e = kiln_default_engine();
  return e ? kiln_engine_wait_all(e) : KILN_OK;
}

/* Both wait: a failure found while the op ran on the engine is part of the
 * value. Neither touches kiln_last_error: they are queries. */
kiln_status kiln_tensor_status(const kiln_tensor *t) {
  if (!t) return KILN_ERR_INVALID_ARGUMENT;
  return tensor_wait(t, NULL);
}

bool kiln_tensor_failed(const kiln_tensor *t) { return !t || tensor_failed(t); }

const char *kiln_tensor_error(const kiln_tensor *t) {
  if (!t) return "tensor is NULL";
  const char *msg;
  tensor_wait(t, &msg);
  return msg ? msg : "";
}
kiln_dtype kiln_tensor_dtype(const kiln_tensor *t) { return t ? t->dtype : KILN_F32; }
int kiln_tensor_ndim(const kiln_tensor *t) { return t ? t->ndim : 0; }
const int64_t *kiln_tensor_shape(const kiln_tensor *t) { return t ? t->shape : NULL; }
const int64_t *kiln_tensor_strides(const kiln_tensor *t) { return t ? t->strides : NULL; }

int64_t kiln_tensor_dim(const kiln_tensor *t, int axis) {
  if (!t) return 0;
  if (axis < 0) axis += t->ndim;
  return axis >= 0 && axis < t->ndim ? t->shape[axis] : 0;
}

int64_t kiln_tensor_numel(const kiln_tensor *t) {
  if (!t) return 0;
  int64_t n = 1;
  for (int i = 0; i < t->ndim; i++) n *= t->shape[i];
  return n;
}

bool kiln_tensor_is_contiguous(const kiln_tensor *t) {
  if (!t) return false;
  kk_view v = tensor_view_of(t);
  return kk_is_contiguous(&v);
}

kiln_status tensor_push(const kiln_tensor *on, kiln_engine_fn fn, void (*done)(void *data), void *data,
                        kiln_engine_var *const *reads, int n_reads, kiln_engine_var *const *writes, int n_writes,
                        const char *name, int priority) {
  return engine_push_on(on->storage->engine, on->storage->queue, fn, done, data, reads, n_reads, writes, n_writes, name,
                        priority);
}

kiln_device kiln_tensor_device(const kiln_tensor *t) {
  return device_of_index(t && t->storage ? t->storage->device : 0);
}
