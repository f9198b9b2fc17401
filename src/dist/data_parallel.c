/* Data parallelism in one process and across processes (d2l 13.5-13.7):
 * split_and_load, and a trainer that keeps one replica per device equal by
 * summing their gradients through a key-value store and updating each
 * replica with the same sum. */
#include <stdio.h>
#include <string.h>

#include "device/device.h"
#include "imperative/dispatch.h"
#include "tensor/tensor.h"

kiln_status kiln_split_and_load(kiln_tensor *batch, int n, const kiln_device *devices, kiln_tensor **out) {
  if (!out) return kiln_errorf(KILN_ERR_INVALID_ARGUMENT, "kiln_split_and_load: out is NULL");
  for (int d = 0; d < n; d++) out[d] = NULL;
  if (!batch || n < 1 || !devices)
    return kiln_errorf(KILN_ERR_INVALID_ARGUMENT, "kiln_split_and_load: batch or devices NULL, or n %d < 1", n);
  if (tensor_failed(batch)) return kiln_errorf(batch->status, "kiln_split_and_load: %s", batch->error);
  if (batch->ndim < 1 || batch->shape[0] < n)
    return kiln_errorf(KILN_ERR_SHAPE, "kiln_split_and_load: a batch of %lld cannot be split %d ways",
                       (long long)(batch->ndim ? batch->shape[0] : 0), n);
  for (int d = 0; d < n; d++)
    if (device_index(devices[d]) < 0) return kiln_errorf(KILN_ERR_INVALID_ARGUMENT, "kiln_split_and_load: %s", kiln_last_error());
  int64_t total = batch->shape[0], base = total / n, extra = total % n, start = 0;
  kiln_status st = KILN_OK;
  for (int d = 0; d < n; d++) {
    int64_t size = base + (d < extra);
    out[d] = kiln_to_device(kiln_slice(batch, 0, start, start + size, 1), devices[d]);
    if (kiln_tensor_failed(out[d]) && st == KILN_OK) st = out[d]->status;
    start += size;
  }
  return st;
}

struct kiln_parallel_trainer {
  int n, n_params;
  kiln_trainer **trainers;
  kiln_kvstore *kv;
  bool own_kv;
  int *keys;
  kiln_tensor **grads; /* [p * n + d]: replica d's gradient of parameter p (borrowed from the blocks) */
};

void kiln_parallel_trainer_free(kiln_parallel_trainer *t) {
  if (!t) return;
  for (int d = 0; t->trainers && d < t->n; d++) kiln_trainer_free(t->trainers[d]);
  if (t->own_kv) kiln_kvstore_free(t->kv);
  kiln_free(t->trainers);
  kiln_free(t->keys);
  kiln_free(t->grads);
  kiln_free(t);
}

/* The parameters with a gradient, in the blocks' order: what is summed.
 * The others (running statistics) stay each replica's own, as in Gluon. */
static kiln_status trained_params(kiln_block *b, kiln_param_list *l) {
  kiln_status st = kiln_block_collect_params(b, l);
  if (st != KILN_OK) return st;
  int n = 0;
  for (int i = 0; i < l->n; i++) {
    if (kiln_grad(l->tensors[i])) {
      char *name = l->names[i];
      l->names[i] = l->names[n];
      l->names[n] = name;
      l->tensors[n++] = l->tensors[i];
    }
  }
  for (int i = n; i < l->n; i++) kiln_free(l->names[i]);
  l->n = n;
  return KILN_OK;
}

kiln_parallel_trainer *kiln_parallel_trainer_new(int n, kiln_block *const *replicas, const kiln_optimizer_params *p,
                                                 kiln_kvstore *kv) {
  const char *fn = "kiln_parallel_trainer_new";
  if (n < 1 || !replicas) {
    kiln_errorf(KILN_ERR_INVALID_ARGUMENT, "%s: %d replicas%s", fn, n, replicas ? "" : ", array NULL");
    return NULL;
  }
  kiln_parallel_trainer *t = kiln_calloc(1, sizeof *t);
  kiln_param_list *lists = kiln_calloc((size_t)n, sizeof *lists);
  kiln_status st = t && lists ? KILN_OK : kiln_errorf(KILN_ERR_OUT_OF_MEMORY, "%s: out of memory", fn);
  if (st == KILN_OK) {
    t->n = n;
    t->kv = kv ? kv : kiln_kvstore_new("local");
    t->own_kv = !kv;
    t->trainers = kiln_calloc((size_t)n, sizeof *t->trainers);
    if (!t->kv) st = kiln_last_status();
    else if (!t->trainers) st = kiln_errorf(KILN_ERR_OUT_OF_MEMORY, "%s: out of memory", fn);
  }
  for (int d = 0; st == KILN_OK && d < n; d++) {
    if (!replicas[d]) st = kiln_errorf(KILN_ERR_INVALID_ARGUMENT, "%s: replica %d is NULL", fn, d);
    else if ((st = trained_params(replicas[d], &lists[d])) != KILN_OK) {
      char why[KILN_ERROR_MAX];
      snprintf(why, sizeof why, "%s", kiln_last_error());
      st = kiln_errorf(st, "%s: replica %d: %s", fn, d, why);
    }
  }
  /* The replicas must be the same model. */
  for (int d = 1; st == KILN_OK && d < n; d++) {
    if (lists[d].n != lists[0].n) {
      st = kiln_errorf(KILN_ERR_INVALID_ARGUMENT, "%s: replica %d has %d trained parameters, replica 0 %d", fn, d,
                       lists[d].n, lists[0].n);
      break;
    }
    for (int i = 0; st == KILN_OK && i < lists[0].n; i++) {
      const kiln_tensor *a = lists[0].tensors[i], *b = lists[d].tensors[i];
      bool same = !strcmp(lists[0].names[i], lists[d].names[i]) && a->dtype == b->dtype && a->ndim == b->ndim;
      for (int k = 0; same && k < a->ndim; k++) same = a->shape[k] == b->shape[k];
      if (!same)
        st = kiln_errorf(KILN_ERR_SHAPE, "%s: parameter %s of replica %d differs from replica 0's %s", fn,
                         lists[d].names[i], d, lists[0].names[i]);
    }
  }
  if (st == KILN_OK) {
    t->n_params = lists[0].n;
    t->keys = kiln_alloc(sizeof(int) * (size_t)(t->n_params + 1));
    t->grads = kiln_alloc(sizeof(kiln_tensor *) * (size_t)(t->n_params * n + 1));
    kiln_tensor **params = kiln_alloc(sizeof(kiln_tensor *) * (size_t)(t->n_params * n + 1));
    if (!t->keys || !t->grads || !params) st = kiln_errorf(KILN_ERR_OUT_OF_MEMORY, "%s: out of memory", fn);
    /* Keys go last layer first: backward writes those gradients first, so
     * their sums (and, for "mpi", their buckets) start while backward is
     * still computing earlier layers'. */
    for (int i = 0; st == KILN_OK && i < t->n_params; i++) {
      int param = t->n_params - 1 - i;
      t->keys[i] = param;
      for (int d = 0; d < n; d++) {
        params[i * n + d] = lists[d].tensors[param];
        t->grads[i * n + d] = kiln_grad(lists[d].tensors[param]);
      }
      st = kiln_kvstore_init(t->kv, param, lists[0].tensors[param]);
    }
    /* Every replica (and process) starts from replica 0's values. */
    if (st == KILN_OK && t->n_params) st = kiln_kvstore_pull(t->kv, t->n_params, t->keys, n, params, 0);
    kiln_free(params);
  }
  for (int d = 0; st == KILN_OK && d < n; d++)
    if (!(t->trainers[d] = kiln_trainer_new(replicas[d], p))) st = kiln_last_status();
  for (int d = 0; lists && d < n; d++) kiln_param_list_free(&lists[d]);
  kiln_free(lists);
  if (st != KILN_OK) {
    kiln_parallel_trainer_free(t);
    return NULL;
  }
  return t;
}

kiln_status kiln_parallel_trainer_step(kiln_parallel_trainer *t, double batch_size) {
  if (!t) return kiln_errorf(KILN_ERR_INVALID_ARGUMENT, "kiln_parallel_trainer_step: trainer is NULL");
  /* One push of every key, so an "mpi" store packs them into buckets (the
   * last layers' first); then every replica's gradients become the sum. */
  kiln_status st = t->n_params ? kiln_kvstore_push(t->kv, t->n_params, t->keys, t->n, t->grads, 0) : KILN_OK;
  if (st == KILN_OK && t->n_params) st = kiln_kvstore_pull(t->kv, t->n_params, t->keys, t->n, t->grads, 0);
  for (int d = 0; st == KILN_OK && d < t->n; d++) st = kiln_trainer_step(t->trainers[d], batch_size);
  return st;
}
