/* Tensors over memory kiln did not allocate, and the address of a tensor's
 * values: the two halves of zero-copy exchange with other frameworks (the
 * Python module's buffer protocol and DLPack, docs/python.md).
 *
 * An external tensor's storage is an ordinary storage (a variable of the
 * current device's engine queue, refcounted, shared by views) whose data is
 * the caller's: when its last reference goes, the engine frees it after the
 * work already pushed on it, as any storage, and that free calls the
 * caller's release instead of returning the memory to kiln's allocator
 * (storage_free in tensor.c). */
#include <string.h>

#include "device/device.h"
#include "tensor/tensor.h"

/* Whether the elements a strided layout reaches stay within int64 bytes of
 * data in either direction: kernels compute offsets as int64. */
static kiln_status check_extent(kiln_dtype dt, int ndim, const int64_t *shape, const int64_t *strides) {
  int64_t span = 0;
  for (int i = 0; i < ndim; i++) {
    if (shape[i] == 0) return KILN_OK; /* no element is ever addressed */
    int64_t s = strides[i] == INT64_MIN ? -1 : strides[i] < 0 ? -strides[i] : strides[i], step;
    if (s < 0 || !kiln_mul_i64(s, shape[i] - 1, &step) || !kiln_add_i64(span, step, &span))
      return kiln_errorf(KILN_ERR_OVERFLOW, "kiln_tensor_from_external: the strides reach past 2^63 elements");
  }
  int64_t count, bytes;
  if (!kiln_add_i64(span, 1, &count) || !kiln_mul_i64(count, (int64_t)kiln_dtype_size(dt), &bytes))
    return kiln_errorf(KILN_ERR_OVERFLOW, "kiln_tensor_from_external: the strides reach past 2^63 bytes");
  return KILN_OK;
}

/* No release given: the caller keeps the memory alive by other means, but
 * storage_free tells external storage apart by a non-NULL hook. */
static void keep(void *ctx) { KILN_UNUSED(ctx); }

static kiln_tensor *fail(kiln_status st) { return tensor_autorelease(tensor_new_failed(st, kiln_last_error())); }

kiln_tensor *kiln_tensor_from_external(kiln_dtype dt, int ndim, const int64_t *shape, const int64_t *strides,
                                       void *data, void (*release)(void *ctx), void *ctx) {
  int64_t numel;
  kiln_status st = tensor_checked_numel("kiln_tensor_from_external", dt, ndim, shape, &numel);
  if (st != KILN_OK) return fail(st);
  size_t item = kiln_dtype_size(dt);
  if (!data && numel > 0) {
    kiln_errorf(KILN_ERR_INVALID_ARGUMENT, "kiln_tensor_from_external: data is NULL");
    return fail(KILN_ERR_INVALID_ARGUMENT);
  }
  /* Kernels load elements with the dtype's own alignment. */
  if ((uintptr_t)data % item != 0) {
    kiln_errorf(KILN_ERR_INVALID_ARGUMENT,
                "kiln_tensor_from_external: data %p is not aligned to its %zu-byte %s elements", data, item,
                kiln_dtype_name(dt));
    return fail(KILN_ERR_INVALID_ARGUMENT);
  }
  int64_t own_strides[KILN_MAX_DIMS];
  if (strides) {
    st = check_extent(dt, ndim, shape, strides);
    if (st != KILN_OK) return fail(st);
    if (ndim) memcpy(own_strides, strides, sizeof *strides * (size_t)ndim);
  } else {
    contiguous_strides(ndim, shape, own_strides);
  }

  kiln_tensor *t = kiln_alloc_small(sizeof *t);
  kiln_storage *s = kiln_alloc(sizeof *s);
  if (s) memset(s, 0, sizeof *s);
  kiln_status bound = t && s ? storage_bind(s, device_current()) : KILN_ERR_OUT_OF_MEMORY;
  if (bound != KILN_OK) {
    kiln_free(t);
    kiln_free(s);
    if (bound != KILN_ERR_OUT_OF_MEMORY)
      return fail(kiln_errorf(bound, "kiln_tensor_from_external: %s", kiln_last_error()));
    kiln_errorf(KILN_ERR_OUT_OF_MEMORY, "kiln_tensor_from_external: out of memory");
    return fail(KILN_ERR_OUT_OF_MEMORY);
  }
  s->data = data;
  s->release = release ? release : keep;
  s->release_ctx = ctx;
  atomic_init(&t->refs, 1);
  t->storage = s;
  t->dtype = dt;
  t->ndim = ndim;
  if (ndim) {
    memcpy(t->shape, shape, sizeof *shape * (size_t)ndim);
    memcpy(t->strides, own_strides, sizeof *own_strides * (size_t)ndim);
  }
  return tensor_autorelease(t);
}

kiln_status kiln_tensor_data(const kiln_tensor *t, void **data) {
  if (!data) return kiln_errorf(KILN_ERR_INVALID_ARGUMENT, "kiln_tensor_data: data is NULL");
  *data = NULL;
  if (!t) return kiln_errorf(KILN_ERR_INVALID_ARGUMENT, "kiln_tensor_data: tensor is NULL");
  if (t->sym)
    return kiln_errorf(KILN_ERR_INVALID_ARGUMENT, "kiln_tensor_data: the output of %s is symbolic: it has no values",
                       tensor_sym_origin(t->sym));
  const char *msg;
  kiln_status st = tensor_wait(t, &msg);
  if (st != KILN_OK) return kiln_errorf(st, "%s", msg);
  *data = tensor_data(t);
  return KILN_OK;
}
