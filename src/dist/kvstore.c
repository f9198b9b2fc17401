/* The key-value store: every push and pull is engine work.
 *
 * A push is, per key, one reduce op on the copy queue that reads the
 * pushed values (on whatever devices) and writes their sum into the key's
 * target (the stored value, or the merged buffer an updater reads); for
 * "mpi", then one op per bucket of keys on the store's communication
 * queue that writes those targets and the store's comm variable, and sums
 * them across processes. Writing one comm variable orders every
 * collective in push order on every process, which is what makes MPI
 * match them; the queue's single worker makes the MPI calls serialized.
 * A pull is one copy op per destination, reading the stored value. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "device/device.h"
#include "dist/comm.h"
#include "engine/engine.h"
#include "imperative/dispatch.h"
#include "tensor/tensor.h"

#define MAX_KEY (1 << 20)

typedef struct {
  kiln_tensor *stored, *merged; /* on cpu(0); merged only with an updater */
} entry;

struct kiln_kvstore {
  bool mpi;
  int rank, size;
  comm *comm;
  kiln_engine *engine;
  int copy_queue, comm_queue;
  kiln_engine_var *comm_var;
  double timeout;
  size_t bucket_bytes;
  kiln_kvstore_updater updater;
  void *user;
  entry *entries;
  int n_entries;
};

static double env_double(const char *name, double fallback) {
  const char *v = getenv(name);
  if (!v || !*v) return fallback;
  char *end;
  double x = strtod(v, &end);
  return *end == '\0' && x > 0 ? x : fallback;
}

kiln_kvstore *kiln_kvstore_new(const char *kind) {
  if (!kind || (strcmp(kind, "local") && strcmp(kind, "mpi"))) {
    char buf[KILN_PRINTABLE_MAX];
    kiln_errorf(KILN_ERR_INVALID_ARGUMENT, "kiln_kvstore_new: kind '%s' is not \"local\" or \"mpi\"",
                kind ? kiln_printable(buf, kind, strlen(kind)) : "(null)");
    return NULL;
  }
  kiln_kvstore *kv = kiln_calloc(1, sizeof *kv);
  if (!kv) {
    kiln_errorf(KILN_ERR_OUT_OF_MEMORY, "kiln_kvstore_new: out of memory");
    return NULL;
  }
  kv->mpi = !strcmp(kind, "mpi");
  kv->size = 1;
  kv->timeout = env_double("KILN_KVSTORE_TIMEOUT", 120);
  kv->bucket_bytes = (size_t)env_double("KILN_KVSTORE_BUCKET_BYTES", 4 << 20);
  int queue0;
  kiln_status st = device_start(0, &kv->engine, &queue0);
  if (st == KILN_OK && (kv->copy_queue = device_copy_queue(kv->engine)) < 0) st = kiln_last_status();
  if (st == KILN_OK && kv->mpi) {
    st = comm_open(&kv->comm, &kv->rank, &kv->size);
    if (st == KILN_OK && (kv->comm_queue = engine_add_queue(kv->engine, 1)) < 0) st = kiln_last_status();
    if (st == KILN_OK && !(kv->comm_var = engine_new_var_on(kv->engine, kv->comm_queue)))
      st = kiln_errorf(KILN_ERR_OUT_OF_MEMORY, "kiln_kvstore_new: out of memory");
  }
  if (st != KILN_OK) {
    char why[KILN_ERROR_MAX];
    snprintf(why, sizeof why, "%s", kiln_last_error());
    comm_close(kv->comm);
    kiln_free(kv);
    kiln_errorf(st, "kiln_kvstore_new(\"%s\"): %s", kind, why);
    return NULL;
  }
  return kv;
}

void kiln_kvstore_free(kiln_kvstore *kv) {
  if (!kv) return;
  for (int k = 0; k < kv->n_entries; k++) {
    entry *e = &kv->entries[k];
    if (e->stored) kiln_wait_to_read(e->stored);
    if (e->merged) kiln_wait_to_read(e->merged);
    kiln_tensor_release(e->stored);
    kiln_tensor_release(e->merged);
  }
  if (kv->comm_var) {
    kiln_engine_wait_var(kv->engine, kv->comm_var);
    kiln_engine_delete_var(kv->engine, kv->comm_var, NULL, NULL);
  }
  comm_close(kv->comm);
  kiln_free(kv->entries);
  kiln_free(kv);
}

int kiln_kvstore_rank(const kiln_kvstore *kv) { return kv ? kv->rank : 0; }
int kiln_kvstore_size(const kiln_kvstore *kv) { return kv ? kv->size : 1; }

void kiln_kvstore_abort(kiln_kvstore *kv, int code) {
  if (kv && kv->mpi) comm_abort(kv->comm, code);
}

kiln_status kiln_kvstore_set_updater(kiln_kvstore *kv, kiln_kvstore_updater updater, void *user) {
  if (!kv) return kiln_errorf(KILN_ERR_INVALID_ARGUMENT, "kiln_kvstore_set_updater: kv is NULL");
  kv->updater = updater;
  kv->user = user;
  return KILN_OK;
}

static kiln_status check_key(const kiln_kvstore *kv, const char *fn, int key, bool want_init) {
  bool known = key >= 0 && key < kv->n_entries && kv->entries[key].stored;
  if (key < 0 || key >= MAX_KEY) return kiln_errorf(KILN_ERR_OUT_OF_RANGE, "%s: key %d is not in [0, %d)", fn, key, MAX_KEY);
  if (want_init && !known) return kiln_errorf(KILN_ERR_INVALID_ARGUMENT, "%s: key %d was never initialised (kiln_kvstore_init)", fn, key);
  if (!want_init && known) return kiln_errorf(KILN_ERR_INVALID_ARGUMENT, "%s: key %d is already initialised", fn, key);
  return KILN_OK;
}

/* Valid, concrete, contiguous, with the stored dtype and shape. */
static kiln_status check_value(const char *fn, int key, const char *what, int d, const kiln_tensor *t,
                               const kiln_tensor *like) {
  if (!t) return kiln_errorf(KILN_ERR_INVALID_ARGUMENT, "%s: key %d: %s %d is NULL", fn, key, what, d);
  if (tensor_failed(t)) return kiln_errorf(t->status, "%s: key %d: %s %d: %s", fn, key, what, d, t->error);
  if (t->sym) return kiln_errorf(KILN_ERR_INVALID_ARGUMENT, "%s: key %d: %s %d is symbolic", fn, key, what, d);
  if (!kiln_tensor_is_contiguous(t))
    return kiln_errorf(KILN_ERR_INVALID_ARGUMENT, "%s: key %d: %s %d is not contiguous", fn, key, what, d);
  if (!like) {
    if (t->dtype != KILN_F32 && t->dtype != KILN_F64)
      return kiln_errorf(KILN_ERR_DTYPE, "%s: key %d: %s is %s; the store sums float32 or float64", fn, key, what,
                         kiln_dtype_name(t->dtype));
    return KILN_OK;
  }
  bool same = t->dtype == like->dtype && t->ndim == like->ndim;
  for (int i = 0; same && i < t->ndim; i++) same = t->shape[i] == like->shape[i];
  if (!same) {
    char a[KILN_SHAPE_STR_MAX], b[KILN_SHAPE_STR_MAX];
    return kiln_errorf(KILN_ERR_SHAPE, "%s: key %d: %s %d is %s %s, the key holds %s %s", fn, key, what, d,
                       kiln_dtype_name(t->dtype), kiln_shape_str(a, sizeof a, t->ndim, t->shape),
                       kiln_dtype_name(like->dtype), kiln_shape_str(b, sizeof b, like->ndim, like->shape));
  }
  return KILN_OK;
}

/* Bytes of a (contiguous) value. */
static size_t bytes_of(const kiln_tensor *t) { return (size_t)kiln_tensor_numel(t) * kiln_dtype_size(t->dtype); }

/* The arguments of a push or a pull (n_per tensors for each of n_keys
 * keys), all checked before anything is pushed. */
static kiln_status check_lists(const kiln_kvstore *kv, const char *fn, const char *what, int n_keys, const int *keys,
                               int n_per, kiln_tensor *const *tensors) {
  if (!kv || n_keys < 0 || n_per < 1 || (n_keys && (!keys || !tensors)))
    return kiln_errorf(KILN_ERR_INVALID_ARGUMENT, "%s: kv, keys or %ss NULL, or %d keys, %d %ss per key", fn, what,
                       n_keys, n_per, what);
  for (int k = 0; k < n_keys; k++) {
    kiln_status st = check_key(kv, fn, keys[k], true);
    for (int d = 0; st == KILN_OK && d < n_per; d++)
      st = check_value(fn, keys[k], what, d, tensors[k * n_per + d], kv->entries[keys[k]].stored);
    if (st != KILN_OK) return st;
  }
  return KILN_OK;
}

/* ------------------------------------------------------------ the ops */

typedef struct {
  int n;
  int64_t count;
  kiln_dtype dtype;
  void *dst;
  const void *src[]; /* n */
} reduce_job;

/* Summed in push order, so every process and every run adds the same way. */
static kiln_status run_reduce(void *data) {
  reduce_job *j = data;
  size_t bytes = (size_t)j->count * kiln_dtype_size(j->dtype);
  if (j->dst != j->src[0]) memcpy(j->dst, j->src[0], bytes);
  for (int i = 1; i < j->n; i++) {
    if (j->dtype == KILN_F32) {
      float *d = j->dst;
      const float *s = j->src[i];
      for (int64_t k = 0; k < j->count; k++) d[k] += s[k];
    } else {
      double *d = j->dst;
      const double *s = j->src[i];
      for (int64_t k = 0; k < j->count; k++) d[k] += s[k];
    }
  }
  return KILN_OK;
}

typedef struct {
  comm *comm;
  double timeout;
  kiln_dtype dtype;
  int n, first_key, last_key;
  void **ptrs;
  int64_t *counts, total;
  bool broadcast;
} comm_job;

static void free_comm_job(void *data) {
  comm_job *j = data;
  kiln_free(j->ptrs);
  kiln_free(j->counts);
  kiln_free(j);
}

static kiln_status run_comm(void *data) {
  comm_job *j = data;
  char what[96];
  size_t esize = kiln_dtype_size(j->dtype);
  if (j->broadcast) {
    snprintf(what, sizeof what, "broadcast of key %d", j->first_key);
    return comm_broadcast(j->comm, j->ptrs[0], (size_t)j->counts[0] * esize, 0, j->timeout, what);
  }
  snprintf(what, sizeof what, "allreduce of keys %d..%d (%lld values)", j->first_key, j->last_key, (long long)j->total);
  if (j->n == 1) return comm_allreduce(j->comm, j->ptrs[0], j->counts[0], j->dtype, j->timeout, what);
  /* One collective per bucket: pack, sum, unpack. */
  char *buf = kiln_alloc((size_t)j->total * esize);
  if (!buf) return kiln_errorf(KILN_ERR_OUT_OF_MEMORY, "%s: out of memory", what);
  char *at = buf;
  for (int i = 0; i < j->n; at += (size_t)j->counts[i++] * esize) memcpy(at, j->ptrs[i], (size_t)j->counts[i] * esize);
  kiln_status st = comm_allreduce(j->comm, buf, j->total, j->dtype, j->timeout, what);
  at = buf;
  for (int i = 0; st == KILN_OK && i < j->n; at += (size_t)j->counts[i++] * esize)
    memcpy(j->ptrs[i], at, (size_t)j->counts[i] * esize);
  kiln_free(buf);
  return st;
}

typedef struct {
  void *dst;
  const void *src;
  size_t bytes;
  const device_backend *backend;
} copy_job;

static kiln_status run_copy(void *data) {
  copy_job *j = data;
  j->backend->copy(j->dst, j->src, j->bytes);
  return KILN_OK;
}

/* One comm op over keys[0..n) of targets (same dtype). */
static kiln_status push_comm(kiln_kvstore *kv, int n, const int *keys, kiln_tensor *const *targets, bool broadcast,
                             int priority) {
  comm_job *j = kiln_calloc(1, sizeof *j);
  kiln_engine_var **writes = kiln_alloc(sizeof(kiln_engine_var *) * (size_t)(n + 1));
  if (j) j->ptrs = kiln_alloc(sizeof(void *) * (size_t)n), j->counts = kiln_alloc(sizeof(int64_t) * (size_t)n);
  if (!j || !writes || !j->ptrs || !j->counts) {
    if (j) free_comm_job(j);
    kiln_free(writes);
    return kiln_errorf(KILN_ERR_OUT_OF_MEMORY, "kvstore: out of memory");
  }
  *j = (comm_job){kv->comm, kv->timeout, targets[0]->dtype, n, keys[0], keys[n - 1], j->ptrs, j->counts, 0, broadcast};
  for (int i = 0; i < n; i++) {
    j->ptrs[i] = tensor_data(targets[i]);
    j->counts[i] = kiln_tensor_numel(targets[i]);
    j->total += j->counts[i];
    writes[i] = targets[i]->storage->var;
  }
  writes[n] = kv->comm_var;
  kiln_status st = engine_push_on(kv->engine, kv->comm_queue, run_comm, free_comm_job, j, NULL, 0, writes, n + 1,
                                  broadcast ? "kvstore broadcast" : "kvstore allreduce", priority);
  if (st != KILN_OK) free_comm_job(j);
  kiln_free(writes);
  return st;
}

/* ------------------------------------------------------------ API */

kiln_status kiln_kvstore_init(kiln_kvstore *kv, int key, kiln_tensor *value) {
  if (!kv) return kiln_errorf(KILN_ERR_INVALID_ARGUMENT, "kiln_kvstore_init: kv is NULL");
  kiln_status st = check_key(kv, "kiln_kvstore_init", key, false);
  if (st == KILN_OK) st = check_value("kiln_kvstore_init", key, "value", 0, value, NULL);
  if (st != KILN_OK) return st;
  if (key >= kv->n_entries) {
    int n = key + 1 > 2 * kv->n_entries ? key + 1 : 2 * kv->n_entries;
    entry *grown = kiln_calloc((size_t)n, sizeof *grown);
    if (!grown) return kiln_errorf(KILN_ERR_OUT_OF_MEMORY, "kiln_kvstore_init: out of memory");
    if (kv->n_entries) memcpy(grown, kv->entries, sizeof *grown * (size_t)kv->n_entries);
    kiln_free(kv->entries);
    kv->entries = grown;
    kv->n_entries = n;
  }
  kiln_tensor *stored = transfer_owned(value, 0);
  if (tensor_failed(stored)) {
    st = kiln_errorf(stored->status, "kiln_kvstore_init: key %d: %s", key, stored->error);
    kiln_tensor_release(stored);
    return st;
  }
  if (kv->mpi && kv->size > 1 && (st = push_comm(kv, 1, &key, &stored, true, 0)) != KILN_OK) {
    kiln_tensor_release(stored);
    return st;
  }
  kv->entries[key].stored = stored;
  return KILN_OK;
}

static kiln_status push_reduce(kiln_kvstore *kv, int n, kiln_tensor *const *values, kiln_tensor *target,
                               int priority) {
  reduce_job *j = kiln_alloc(sizeof *j + sizeof(void *) * (size_t)n);
  kiln_engine_var **reads = kiln_alloc(sizeof(kiln_engine_var *) * (size_t)n);
  if (!j || !reads) {
    kiln_free(j);
    kiln_free(reads);
    return kiln_errorf(KILN_ERR_OUT_OF_MEMORY, "kiln_kvstore_push: out of memory");
  }
  j->n = n;
  j->count = kiln_tensor_numel(target);
  j->dtype = target->dtype;
  j->dst = tensor_data(target);
  for (int d = 0; d < n; d++) {
    j->src[d] = tensor_data(values[d]);
    reads[d] = values[d]->storage->var;
  }
  kiln_status st = engine_push_on(kv->engine, kv->copy_queue, run_reduce, kiln_free, j, reads, n,
                                  &target->storage->var, 1, "kvstore reduce", priority);
  if (st != KILN_OK) kiln_free(j);
  kiln_free(reads);
  return st;
}

kiln_status kiln_kvstore_push(kiln_kvstore *kv, int n_keys, const int *keys, int n_values, kiln_tensor *const *values,
                              int priority) {
  const char *fn = "kiln_kvstore_push";
  kiln_status st = check_lists(kv, fn, "value", n_keys, keys, n_values, values);
  if (st != KILN_OK) return st;
  kiln_tensor **targets = kiln_alloc(sizeof(kiln_tensor *) * (size_t)(n_keys ? n_keys : 1));
  if (!targets) return kiln_errorf(KILN_ERR_OUT_OF_MEMORY, "%s: out of memory", fn);
  for (int k = 0; st == KILN_OK && k < n_keys; k++) {
    entry *e = &kv->entries[keys[k]];
    if (kv->updater && !e->merged) {
      e->merged = tensor_new_on(0, e->stored->dtype, e->stored->ndim, e->stored->shape);
      if (tensor_failed(e->merged)) {
        st = kiln_errorf(e->merged->status, "%s: key %d: %s", fn, keys[k], e->merged->error);
        kiln_tensor_release(e->merged);
        e->merged = NULL;
        break;
      }
    }
    targets[k] = kv->updater ? e->merged : e->stored;
    st = push_reduce(kv, n_values, values + (size_t)k * n_values, targets[k], priority);
  }
  /* Buckets: runs of keys of one dtype up to bucket_bytes, in push order. */
  for (int k = 0; st == KILN_OK && kv->mpi && kv->size > 1 && k < n_keys;) {
    int end = k + 1;
    size_t bytes = bytes_of(targets[k]);
    while (end < n_keys && targets[end]->dtype == targets[k]->dtype && bytes + bytes_of(targets[end]) <= kv->bucket_bytes)
      bytes += bytes_of(targets[end++]);
    st = push_comm(kv, end - k, keys + k, targets + k, false, priority);
    k = end;
  }
  for (int k = 0; st == KILN_OK && kv->updater && k < n_keys; k++) {
    entry *e = &kv->entries[keys[k]];
    st = kv->updater(keys[k], e->merged, e->stored, kv->user);
    if (st != KILN_OK) {
      char why[KILN_ERROR_MAX];
      snprintf(why, sizeof why, "%s", kiln_last_error());
      st = kiln_errorf(st, "%s: the updater of key %d: %s", fn, keys[k], why);
    }
  }
  kiln_free(targets);
  return st;
}

kiln_status kiln_kvstore_pull(kiln_kvstore *kv, int n_keys, const int *keys, int n_outs, kiln_tensor *const *outs,
                              int priority) {
  const char *fn = "kiln_kvstore_pull";
  kiln_status st = check_lists(kv, fn, "output", n_keys, keys, n_outs, outs);
  if (st != KILN_OK) return st;
  for (int k = 0; k < n_keys; k++) {
    kiln_tensor *stored = kv->entries[keys[k]].stored;
    for (int d = 0; d < n_outs; d++) {
      kiln_tensor *out = outs[k * n_outs + d];
      if (out->storage == stored->storage) continue; /* pulling into the store itself */
      copy_job *j = kiln_alloc(sizeof *j);
      if (!j) return kiln_errorf(KILN_ERR_OUT_OF_MEMORY, "%s: out of memory", fn);
      *j = (copy_job){tensor_data(out), tensor_data(stored), bytes_of(out), device_backend_of(out->storage->device)};
      st = engine_push_on(kv->engine, kv->copy_queue, run_copy, kiln_free, j, &stored->storage->var, 1,
                          &out->storage->var, 1, "kvstore pull", priority);
      if (st != KILN_OK) {
        kiln_free(j);
        return st;
      }
    }
  }
  return KILN_OK;
}
