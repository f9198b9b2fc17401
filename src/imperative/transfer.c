/* kiln_to_device: the one op that crosses devices. It runs on the copy
 * queue rather than on either device's, so a transfer overlaps the work
 * both devices are doing (d2l 13.3: copy gradients while backward goes on). */
#include <stdio.h>
#include <string.h>

#include "device/device.h"
#include "engine/engine.h"
#include "imperative/autograd.h"
#include "imperative/dispatch.h"
#include "kernels/elementwise.h"
#include "tensor/tensor.h"

typedef struct {
  kk_view from, to;
  const device_backend *backend;
} transfer;

static kiln_status run_transfer(void *data) {
  transfer *x = data;
  if (kk_is_contiguous(&x->from))
    x->backend->copy(x->to.data, x->from.data, (size_t)kk_numel(&x->to) * kiln_dtype_size(x->to.dtype));
  else
    kk_copy(&x->from, &x->to); /* a host backend reads strided views directly */
  return KILN_OK;
}

kiln_tensor *transfer_owned(kiln_tensor *t, int device) {
  kiln_tensor *out = tensor_new_on(device, t->dtype, t->ndim, t->shape);
  if (tensor_failed(out)) {
    kiln_errorf(out->status, "kiln_to_device: %s", out->error);
    return out;
  }
  transfer *x = kiln_alloc(sizeof *x);
  int queue = device_copy_queue(out->storage->engine);
  kiln_status st = KILN_OK;
  if (!x) st = kiln_errorf(KILN_ERR_OUT_OF_MEMORY, "kiln_to_device: out of memory");
  else if (queue < 0) st = kiln_errorf(KILN_ERR_INTERNAL, "kiln_to_device: no copy queue: %s", kiln_last_error());
  if (st == KILN_OK) {
    *x = (transfer){tensor_view_of(t), tensor_view_of(out), device_backend_of(device)};
    st = engine_push_on(out->storage->engine, queue, run_transfer, kiln_free, x, &t->storage->var, 1, &out->storage->var,
                        1, "to_device", 0);
    if (st == KILN_OK) return out;
  }
  kiln_free(x);
  kiln_tensor_release(out);
  return tensor_new_failed(st, kiln_last_error());
}

kiln_tensor *kiln_to_device(kiln_tensor *t, kiln_device d) {
  if (!t) return kiln_failed(KILN_ERR_INVALID_ARGUMENT, "kiln_to_device: t is NULL");
  char why[KILN_ERROR_MAX];
  int index = device_index(d);
  if (index < 0) {
    snprintf(why, sizeof why, "%s", kiln_last_error());
    return kiln_failed(KILN_ERR_INVALID_ARGUMENT, "kiln_to_device: %s", why);
  }
  if (tensor_failed(t)) {
    kiln_errorf(t->status, "%s", t->error);
    return tensor_autorelease(tensor_new_failed_from(t));
  }
  if (t->sym) return kiln_failed(KILN_ERR_UNSUPPORTED, "kiln_to_device: t is symbolic: a graph runs on one device");
  if (autograd_wants(1, &t))
    return kiln_failed(KILN_ERR_UNSUPPORTED,
                       "kiln_to_device: t needs a gradient and copies are not differentiated; copy outside "
                       "kiln_autograd_record, or detach");
  return tensor_autorelease(transfer_owned(t, index));
}
