/* The data loader: batches of a dataset held in two tensors, in a seeded
 * shuffled order, gathered on the engine.
 *
 * An epoch is a permutation of the N samples cut into batches. Epoch e's
 * permutation is Fisher-Yates driven by a splitmix64 stream whose state
 * starts from seed and e alone, so the order never depends on threads,
 * timing, the engine mode or what happened in earlier epochs.
 *
 * A batch is two fresh tensors, x float32 [B, sample dims...] and y int64
 * [B], filled by one job pushed to the default engine with the sources'
 * storage variables as reads and the batch's as writes: the handles return
 * at once and the gather runs on a worker. The loader keeps one batch in
 * hand: when it returns batch k it pushes batch k + 1, so the gather of the
 * next batch runs while the caller's compute on this one does. A job holds
 * plain pointers, not tensor references: the engine frees a storage only
 * after the work already pushed on its variable, so the sources and the
 * batch outlive the job even if every handle is released first. */
#include <string.h>

#include "tensor/tensor.h"

struct kiln_loader {
  kiln_tensor *images, *labels; /* references held by the loader */
  int64_t n, batch, sample;     /* samples, batch size, elements per sample */
  bool shuffle;
  uint64_t seed, epoch;
  kiln_last_batch policy;
  int64_t *perm; /* this epoch's order */
  int64_t pos;   /* samples of perm handed to batches so far, pending included */
  int x_ndim;
  int64_t x_shape[KILN_MAX_DIMS]; /* x_shape[0] is set per batch */
  kiln_tensor *pending_x, *pending_y; /* the next batch, already pushed; NULL when none */
};

/* ------------------------------------------------------------ order */

static uint64_t mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

static uint64_t splitmix64(uint64_t *state) { return mix64(*state += 0x9E3779B97F4A7C15ull); }

/* Uniform in [0, n), n > 0, without modulo bias: values below 2^64 mod n
 * are redrawn, so the ones kept are a whole number of copies of [0, n). */
static uint64_t below(uint64_t *state, uint64_t n) {
  uint64_t reject = (0 - n) % n;
  for (;;) {
    uint64_t r = splitmix64(state);
    if (r >= reject) return r % n;
  }
}

static void make_order(kiln_loader *l) {
  for (int64_t i = 0; i < l->n; i++) l->perm[i] = i;
  l->pos = 0;
  if (!l->shuffle) return;
  uint64_t state = mix64(mix64(l->seed) + l->epoch);
  for (int64_t i = l->n - 1; i > 0; i--) {
    int64_t j = (int64_t)below(&state, (uint64_t)i + 1);
    int64_t t = l->perm[i];
    l->perm[i] = l->perm[j];
    l->perm[j] = t;
  }
}

/* ------------------------------------------------------------ the gather job */

typedef struct {
  const unsigned char *img; /* element 0 of images */
  kiln_dtype img_dt;
  int64_t img_stride0;               /* between samples, in elements */
  int sdims;                         /* dims of one sample */
  int64_t sshape[KILN_MAX_DIMS];     /* and their sizes */
  int64_t sstrides[KILN_MAX_DIMS];   /* and strides, in elements */
  bool sample_contiguous;            /* one sample is one run of elements */
  const unsigned char *lab;
  kiln_dtype lab_dt;
  int64_t lab_stride;
  int64_t sample;
  float *x;
  int64_t *y;
  int64_t b;
  int64_t idx[]; /* the b sample indices */
} gather_job;

static float element(const unsigned char *p, kiln_dtype dt) {
  switch (dt) {
  case KILN_U8: return (float)*p / 255.0f;
  case KILN_F32: {
    float v;
    memcpy(&v, p, sizeof v);
    return v;
  }
  default: {
    double v;
    memcpy(&v, p, sizeof v);
    return (float)v;
  }
  }
}

static void gather_sample(const gather_job *j, const unsigned char *src, float *dst) {
  size_t es = kiln_dtype_size(j->img_dt);
  if (j->sample_contiguous) {
    if (j->img_dt == KILN_U8) {
      for (int64_t k = 0; k < j->sample; k++) dst[k] = (float)src[k] / 255.0f;
    } else if (j->img_dt == KILN_F32) {
      memcpy(dst, src, (size_t)j->sample * sizeof(float));
    } else {
      for (int64_t k = 0; k < j->sample; k++) dst[k] = element(src + (size_t)k * es, j->img_dt);
    }
    return;
  }
  /* Any layout: walk the sample's dims like an odometer, last dim fastest. */
  int64_t at[KILN_MAX_DIMS] = {0};
  int64_t off = 0;
  for (int64_t k = 0; k < j->sample; k++) {
    dst[k] = element(src + off * (int64_t)es, j->img_dt);
    for (int d = j->sdims - 1; d >= 0; d--) {
      off += j->sstrides[d];
      if (++at[d] < j->sshape[d]) break;
      off -= j->sstrides[d] * j->sshape[d];
      at[d] = 0;
    }
  }
}

static kiln_status gather_run(void *data) {
  const gather_job *j = data;
  size_t ies = kiln_dtype_size(j->img_dt), les = kiln_dtype_size(j->lab_dt);
  for (int64_t k = 0; k < j->b; k++) {
    int64_t i = j->idx[k];
    gather_sample(j, j->img + i * j->img_stride0 * (int64_t)ies, j->x + k * j->sample);
    const unsigned char *lp = j->lab + i * j->lab_stride * (int64_t)les;
    int64_t v;
    if (j->lab_dt == KILN_U8) {
      v = *lp;
    } else if (j->lab_dt == KILN_I32) {
      int32_t w;
      memcpy(&w, lp, sizeof w);
      v = w;
    } else {
      memcpy(&v, lp, sizeof v);
    }
    j->y[k] = v;
  }
  return KILN_OK;
}

static void gather_done(void *data) { kiln_free(data); }

/* Pushes the gather of perm[pos, pos + b) into new tensors *x, *y (owned by
 * the caller). */
static kiln_status push_batch(kiln_loader *l, int64_t b, kiln_tensor **x, kiln_tensor **y) {
  *x = *y = NULL;
  l->x_shape[0] = b;
  kiln_tensor *bx = tensor_new(KILN_F32, l->x_ndim, l->x_shape);
  kiln_tensor *by = tensor_new(KILN_I64, 1, &b);
  size_t bytes = 0;
  gather_job *j = NULL;
  kiln_status st = KILN_OK;
  if (tensor_failed(bx) || tensor_failed(by)) {
    const kiln_tensor *bad = tensor_failed(bx) ? bx : by;
    st = kiln_errorf(bad->status, "kiln_loader: a batch of %lld: %s", (long long)b, bad->error);
  } else if (!kiln_mul_size((size_t)b, sizeof(int64_t), &bytes) || !(j = kiln_alloc(sizeof *j + bytes))) {
    st = kiln_errorf(KILN_ERR_OUT_OF_MEMORY, "kiln_loader: out of memory for a batch of %lld", (long long)b);
  }
  if (st != KILN_OK) {
    kiln_tensor_release(bx);
    kiln_tensor_release(by);
    return st;
  }
  const kiln_tensor *im = l->images, *lb = l->labels;
  j->img = tensor_data(im);
  j->img_dt = im->dtype;
  j->img_stride0 = im->strides[0];
  j->sdims = im->ndim - 1;
  int64_t want = 1;
  j->sample_contiguous = true;
  for (int d = j->sdims - 1; d >= 0; d--) {
    j->sshape[d] = im->shape[d + 1];
    j->sstrides[d] = im->strides[d + 1];
    if (j->sshape[d] != 1 && j->sstrides[d] != want) j->sample_contiguous = false;
    want *= j->sshape[d];
  }
  j->lab = tensor_data(lb);
  j->lab_dt = lb->dtype;
  j->lab_stride = lb->strides[0];
  j->sample = l->sample;
  j->x = tensor_data(bx);
  j->y = tensor_data(by);
  j->b = b;
  memcpy(j->idx, l->perm + l->pos, bytes);

  kiln_engine_var *reads[2] = {im->storage->var, lb->storage->var};
  kiln_engine_var *writes[2] = {bx->storage->var, by->storage->var};
  int n_reads = reads[0] == reads[1] ? 1 : 2;
  st = tensor_push(bx, gather_run, gather_done, j, reads, n_reads, writes, 2, "loader_batch", 0);
  if (st != KILN_OK) {
    kiln_free(j);
    kiln_tensor_release(bx);
    kiln_tensor_release(by);
    return st;
  }
  l->pos += b;
  *x = bx;
  *y = by;
  return KILN_OK;
}

/* The size of the batch that starts at pos; 0 when the epoch is over. */
static int64_t next_size(const kiln_loader *l) {
  int64_t left = l->n - l->pos;
  if (left >= l->batch) return l->batch;
  return l->policy == KILN_LAST_BATCH_KEEP ? left : 0;
}

/* Pushes the next batch into the pending slot when the epoch has one. */
static kiln_status prefetch(kiln_loader *l) {
  if (l->pending_x) return KILN_OK;
  int64_t b = next_size(l);
  return b > 0 ? push_batch(l, b, &l->pending_x, &l->pending_y) : KILN_OK;
}

static void drop_pending(kiln_loader *l) {
  kiln_tensor_release(l->pending_x);
  kiln_tensor_release(l->pending_y);
  l->pending_x = l->pending_y = NULL;
}

/* ------------------------------------------------------------ API */

kiln_loader *kiln_loader_new(kiln_tensor *images, kiln_tensor *labels, int64_t batch_size, bool shuffle,
                             uint64_t seed, kiln_last_batch policy) {
  const char *op = "kiln_loader_new";
  char ibuf[KILN_SHAPE_STR_MAX], lbuf[KILN_SHAPE_STR_MAX];
  if (!images || !labels) {
    kiln_errorf(KILN_ERR_INVALID_ARGUMENT, "%s: %s is NULL", op, images ? "labels" : "images");
    return NULL;
  }
  if (batch_size <= 0) {
    kiln_errorf(KILN_ERR_INVALID_ARGUMENT, "%s: batch_size %lld is not positive", op, (long long)batch_size);
    return NULL;
  }
  if (policy != KILN_LAST_BATCH_KEEP && policy != KILN_LAST_BATCH_DISCARD) {
    kiln_errorf(KILN_ERR_INVALID_ARGUMENT, "%s: last-batch policy %d is not a kiln_last_batch", op, (int)policy);
    return NULL;
  }
  const char *why;
  kiln_status st = tensor_wait(images, &why);
  if (st != KILN_OK) {
    kiln_errorf(st, "%s: images carry a failure: %s", op, why);
    return NULL;
  }
  st = tensor_wait(labels, &why);
  if (st != KILN_OK) {
    kiln_errorf(st, "%s: labels carry a failure: %s", op, why);
    return NULL;
  }
  kiln_shape_str(ibuf, sizeof ibuf, images->ndim, images->shape);
  kiln_shape_str(lbuf, sizeof lbuf, labels->ndim, labels->shape);
  if (images->dtype != KILN_U8 && images->dtype != KILN_F32 && images->dtype != KILN_F64) {
    kiln_errorf(KILN_ERR_DTYPE, "%s: images are %s; the loader takes uint8, float32 or float64", op,
                kiln_dtype_name(images->dtype));
    return NULL;
  }
  if (labels->dtype != KILN_U8 && labels->dtype != KILN_I32 && labels->dtype != KILN_I64) {
    kiln_errorf(KILN_ERR_DTYPE, "%s: labels are %s; the loader takes uint8, int32 or int64", op,
                kiln_dtype_name(labels->dtype));
    return NULL;
  }
  if (images->ndim < 1 || labels->ndim != 1 || labels->shape[0] != images->shape[0]) {
    kiln_errorf(KILN_ERR_INVALID_ARGUMENT, "%s: images %s and labels %s: want images [N, ...] and labels [N]", op, ibuf,
                lbuf);
    return NULL;
  }
  kiln_loader *l = kiln_calloc(1, sizeof *l);
  size_t perm_bytes;
  if (!l || !kiln_mul_size((size_t)images->shape[0], sizeof(int64_t), &perm_bytes) ||
      !(l->perm = kiln_alloc(perm_bytes))) {
    kiln_free(l);
    kiln_errorf(KILN_ERR_OUT_OF_MEMORY, "%s: out of memory for the order of %lld samples", op,
                (long long)images->shape[0]);
    return NULL;
  }
  l->images = kiln_tensor_retain(images);
  l->labels = kiln_tensor_retain(labels);
  l->n = images->shape[0];
  l->batch = batch_size;
  l->shuffle = shuffle;
  l->seed = seed;
  l->policy = policy;
  l->sample = 1;
  /* [N, H, W] gets a channel: [B, 1, H, W], what conv2d takes. */
  int s = 1;
  l->x_shape[0] = 0;
  if (images->ndim == 3) l->x_shape[s++] = 1;
  for (int d = 1; d < images->ndim; d++) {
    l->x_shape[s++] = images->shape[d];
    l->sample *= images->shape[d]; /* fits: it divides the images' element count */
  }
  l->x_ndim = s;
  make_order(l);
  if (prefetch(l) != KILN_OK) {
    kiln_loader_free(l);
    return NULL;
  }
  return l;
}

kiln_status kiln_loader_next(kiln_loader *l, kiln_tensor **x, kiln_tensor **y) {
  if (x) *x = NULL;
  if (y) *y = NULL;
  if (!l || !x || !y)
    return kiln_errorf(KILN_ERR_INVALID_ARGUMENT, "kiln_loader_next: %s is NULL", !l ? "loader" : !x ? "x" : "y");
  kiln_status st = prefetch(l);
  if (st != KILN_OK) return st;
  if (!l->pending_x) return kiln_errorf(KILN_ERR_OUT_OF_RANGE, "kiln_loader_next: end of epoch");
  kiln_tensor *bx = l->pending_x, *by = l->pending_y;
  l->pending_x = l->pending_y = NULL;
  /* The following batch gathers while the caller computes on this one. A
   * failure here is not this batch's: the next call retries and reports. */
  prefetch(l);
  *x = tensor_autorelease(bx);
  *y = tensor_autorelease(by);
  return KILN_OK;
}

kiln_status kiln_loader_reset(kiln_loader *l) {
  if (!l) return kiln_errorf(KILN_ERR_INVALID_ARGUMENT, "kiln_loader_reset: loader is NULL");
  drop_pending(l);
  l->epoch++;
  make_order(l);
  /* A failure to push leaves the slot empty; kiln_loader_next retries. */
  prefetch(l);
  return KILN_OK;
}

int64_t kiln_loader_num_batches(const kiln_loader *l) {
  if (!l) return -1;
  return l->policy == KILN_LAST_BATCH_KEEP ? (l->n + l->batch - 1) / l->batch : l->n / l->batch;
}

void kiln_loader_free(kiln_loader *l) {
  if (!l) return;
  drop_pending(l);
  kiln_tensor_release(l->images);
  kiln_tensor_release(l->labels);
  kiln_free(l->perm);
  kiln_free(l);
}
