/* Softmax, log-softmax, softmax cross-entropy, batch normalisation and
 * dropout kernels (see nn.h), plus the contiguous-copy helper the optimised
 * nn kernels share.
 *
 * The optimised kernels first make their main input contiguous (a copy only
 * when it is not), so their loops run over unit strides that the compiler
 * vectorises; the per-parameter [C] vectors are read through their strides
 * directly because they are small. Sums accumulate in double in a fixed order,
 * so results are reproducible bit for bit. The reference kernels read and
 * write every element through kk_get_f64 / kk_set_f64 at addresses computed
 * from the strides, in double, with the textbook formula. */
#include <math.h>
#include <string.h>

#include "kernels/nn.h"
#include "kernels/random.h"

/* ------------------------------------------------------------ helpers */

kiln_status kk_nn_contiguous(const kk_view *v, const char *who, const char **data, void **scratch) {
  *scratch = NULL;
  if (kk_is_contiguous(v)) {
    *data = v->data;
    return KILN_OK;
  }
  int64_t n = kk_numel(v);
  size_t es = kiln_dtype_size(v->dtype);
  size_t bytes = (size_t)n * es;
  char *buf = kiln_alloc(bytes);
  if (!buf)
    return kiln_errorf(KILN_ERR_OUT_OF_MEMORY, "%s: out of memory allocating %zu bytes for a contiguous copy", who,
                       bytes);
  /* Row by row over the last axis, the multi-index advanced like an
   * odometer; a non-contiguous view has at least one dim. */
  int nd = v->ndim;
  int64_t inner = v->shape[nd - 1], is = v->strides[nd - 1];
  int64_t idx[KILN_MAX_DIMS] = {0};
  int64_t rows = inner ? n / inner : 0;
  char *dst = buf;
  for (int64_t r = 0; r < rows; r++) {
    int64_t off = 0;
    for (int d = 0; d < nd - 1; d++) off += idx[d] * v->strides[d];
    const char *src = v->data + off * (int64_t)es;
    switch (es) {
    case 8:
      for (int64_t j = 0; j < inner; j++) memcpy(dst + j * 8, src + j * is * 8, 8);
      break;
    case 4:
      for (int64_t j = 0; j < inner; j++) memcpy(dst + j * 4, src + j * is * 4, 4);
      break;
    default:
      for (int64_t j = 0; j < inner; j++) dst[j] = src[j * is];
      break;
    }
    dst += inner * (int64_t)es;
    for (int d = nd - 2; d >= 0; d--) {
      if (++idx[d] < v->shape[d]) break;
      idx[d] = 0;
    }
  }
  *data = buf;
  *scratch = buf;
  return KILN_OK;
}

/* Splits a shape around axis: outer (dims before), len (the axis), inner
 * (dims after). A 0-d tensor is one row of length 1. */
static void split_axis(const kk_view *v, int axis, int64_t *outer, int64_t *len, int64_t *inner) {
  *outer = 1;
  *inner = 1;
  *len = v->ndim ? v->shape[axis] : 1;
  for (int d = 0; d < axis; d++) *outer *= v->shape[d];
  for (int d = axis + 1; d < v->ndim; d++) *inner *= v->shape[d];
}

/* The element offset (in elements) of the row-major multi-index that flat
 * index `flat` names within the dims of v other than `skip` (-1: none). */
static int64_t offset_skipping(const kk_view *v, int skip, int64_t flat) {
  int64_t off = 0;
  for (int d = v->ndim - 1; d >= 0; d--) {
    if (d == skip) continue;
    off += (flat % v->shape[d]) * v->strides[d];
    flat /= v->shape[d];
  }
  return off;
}

static double ref_get(const kk_view *v, int64_t off) {
  return kk_get_f64(v->dtype, v->data + off * (int64_t)kiln_dtype_size(v->dtype));
}

static void ref_set(const kk_view *v, int64_t off, double x) {
  kk_set_f64(v->dtype, v->data + off * (int64_t)kiln_dtype_size(v->dtype), x);
}

/* ------------------------------------------------------------ softmax */

/* One softmax family per float type. Rows along the axis are contiguous when
 * inner == 1; otherwise the axis has stride `inner` and the loops run across
 * the inner positions, which are contiguous, with a running max and sum per
 * position in scratch. */
#define DEFINE_SOFTMAX(T, SUF, EXP, LOG)                                                                      \
  static kiln_status softmax_##SUF(const T *x, T *y, int64_t outer, int64_t len, int64_t inner, bool lg) {    \
    if (inner == 1) {                                                                                         \
      for (int64_t o = 0; o < outer; o++) {                                                                   \
        const T *xr = x + o * len;                                                                            \
        T *yr = y + o * len;                                                                                  \
        T m = -INFINITY;                                                                                      \
        for (int64_t j = 0; j < len; j++) m = xr[j] > m ? xr[j] : m;                                          \
        double s = 0;                                                                                         \
        if (lg) {                                                                                             \
          for (int64_t j = 0; j < len; j++) s += EXP(xr[j] - m);                                              \
          T shift = (T)(m + log(s));                                                                          \
          for (int64_t j = 0; j < len; j++) yr[j] = xr[j] - shift;                                            \
        } else {                                                                                              \
          for (int64_t j = 0; j < len; j++) {                                                                 \
            yr[j] = EXP(xr[j] - m);                                                                           \
            s += yr[j];                                                                                       \
          }                                                                                                   \
          T inv = (T)(1.0 / s);                                                                               \
          for (int64_t j = 0; j < len; j++) yr[j] *= inv;                                                     \
        }                                                                                                     \
      }                                                                                                       \
      return KILN_OK;                                                                                         \
    }                                                                                                         \
    /* [inner] maxima as T and [inner] sums as double. */                                                     \
    size_t bytes = (size_t)inner * (sizeof(T) + sizeof(double));                                              \
    double *sum = kiln_alloc(bytes);                                                                          \
    if (!sum) return kiln_errorf(KILN_ERR_OUT_OF_MEMORY, "softmax: out of memory allocating %zu bytes", bytes); \
    T *mx = (T *)(sum + inner);                                                                               \
    for (int64_t o = 0; o < outer; o++) {                                                                     \
      const T *xb = x + o * len * inner;                                                                      \
      T *yb = y + o * len * inner;                                                                            \
      for (int64_t i = 0; i < inner; i++) {                                                                   \
        mx[i] = -INFINITY;                                                                                    \
        sum[i] = 0;                                                                                           \
      }                                                                                                       \
      for (int64_t j = 0; j < len; j++)                                                                       \
        for (int64_t i = 0; i < inner; i++) mx[i] = xb[j * inner + i] > mx[i] ? xb[j * inner + i] : mx[i];    \
      for (int64_t j = 0; j < len; j++)                                                                       \
        for (int64_t i = 0; i < inner; i++) {                                                                 \
          T e = EXP(xb[j * inner + i] - mx[i]);                                                               \
          sum[i] += e;                                                                                        \
          if (!lg) yb[j * inner + i] = e;                                                                     \
        }                                                                                                     \
      if (lg) {                                                                                               \
        for (int64_t i = 0; i < inner; i++) mx[i] = (T)(mx[i] + LOG(sum[i]));                                 \
        for (int64_t j = 0; j < len; j++)                                                                     \
          for (int64_t i = 0; i < inner; i++) yb[j * inner + i] = xb[j * inner + i] - mx[i];                  \
      } else {                                                                                                \
        for (int64_t i = 0; i < inner; i++) mx[i] = (T)(1.0 / sum[i]);                                        \
        for (int64_t j = 0; j < len; j++)                                                                     \
          for (int64_t i = 0; i < inner; i++) yb[j * inner + i] *= mx[i];                                     \
      }                                                                                                       \
    }                                                                                                         \
    kiln_free(sum);                                                                                           \
    return KILN_OK;                                                                                           \
  }

DEFINE_SOFTMAX(float, f32, expf, log)
DEFINE_SOFTMAX(double, f64, exp, log)

kiln_status kk_softmax(const kk_view *x, const kk_view *y, int axis, bool lg) {
  int64_t outer, len, inner;
  split_axis(x, axis, &outer, &len, &inner);
  if (outer * len * inner == 0) return KILN_OK;
  const char *xd;
  void *scratch;
  kiln_status st = kk_nn_contiguous(x, lg ? "log_softmax" : "softmax", &xd, &scratch);
  if (st != KILN_OK) return st;
  if (x->dtype == KILN_F32)
    st = softmax_f32((const float *)xd, (float *)y->data, outer, len, inner, lg);
  else
    st = softmax_f64((const double *)xd, (double *)y->data, outer, len, inner, lg);
  kiln_free(scratch);
  return st;
}

kiln_status kk_softmax_ref(const kk_view *x, const kk_view *y, int axis, bool lg) {
  int64_t outer, len, inner;
  split_axis(x, axis, &outer, &len, &inner);
  int64_t xs = x->ndim ? x->strides[axis] : 0, ys = y->ndim ? y->strides[axis] : 0;
  int skip = x->ndim ? axis : -1;
  for (int64_t r = 0; r < outer * inner; r++) {
    int64_t xo = offset_skipping(x, skip, r), yo = offset_skipping(y, skip, r);
    double m = -INFINITY;
    for (int64_t j = 0; j < len; j++) m = fmax(m, ref_get(x, xo + j * xs));
    /* fmax ignores NaN; a NaN anywhere in the row must poison it all. */
    for (int64_t j = 0; j < len; j++)
      if (isnan(ref_get(x, xo + j * xs))) m = NAN;
    double s = 0;
    for (int64_t j = 0; j < len; j++) s += exp(ref_get(x, xo + j * xs) - m);
    for (int64_t j = 0; j < len; j++) {
      double v = ref_get(x, xo + j * xs) - m;
      ref_set(y, yo + j * ys, lg ? v - log(s) : exp(v) / s);
    }
  }
  return KILN_OK;
}

/* ------------------------------------------------------------ cross-entropy */

static int64_t label_at(const kk_view *labels, int64_t n) {
  const char *p = labels->data + n * labels->strides[0] * (int64_t)kiln_dtype_size(labels->dtype);
  if (labels->dtype == KILN_I32) {
    int32_t v;
    memcpy(&v, p, 4);
    return v;
  }
  int64_t v;
  memcpy(&v, p, 8);
  return v;
}

#define DEFINE_XENT(T, SUF, EXP)                                                                              \
  static double xent_sum_##SUF(const T *x, const kk_view *labels, int64_t n_rows, int64_t c) {               \
    double total = 0;                                                                                         \
    for (int64_t n = 0; n < n_rows; n++) {                                                                    \
      const T *row = x + n * c;                                                                               \
      T m = -INFINITY;                                                                                        \
      for (int64_t j = 0; j < c; j++) m = row[j] > m ? row[j] : m;                                            \
      double s = 0;                                                                                           \
      for (int64_t j = 0; j < c; j++) s += EXP(row[j] - m);                                                   \
      total += (double)m + log(s) - (double)row[label_at(labels, n)];                                         \
    }                                                                                                         \
    return total;                                                                                             \
  }

DEFINE_XENT(float, f32, expf)
DEFINE_XENT(double, f64, exp)

int64_t kk_softmax_xent(const kk_view *logits, const kk_view *labels, const kk_view *out) {
  int64_t n_rows = logits->shape[0], c = logits->shape[1];
  /* Every label is checked before any work so a failure writes nothing. */
  for (int64_t n = 0; n < n_rows; n++) {
    int64_t l = label_at(labels, n);
    if (l < 0 || l >= c) return n;
  }
  double total = 0;
  if (n_rows > 0) {
    const char *xd;
    void *scratch;
    /* A copy failing for want of memory falls back to the reference, which
     * needs none: this kernel's only reportable failure is a bad label. */
    if (kk_nn_contiguous(logits, "softmax_cross_entropy", &xd, &scratch) != KILN_OK) {
      kiln_error_clear();
      return kk_softmax_xent_ref(logits, labels, out);
    }
    total = logits->dtype == KILN_F32 ? xent_sum_f32((const float *)xd, labels, n_rows, c)
                                      : xent_sum_f64((const double *)xd, labels, n_rows, c);
    kiln_free(scratch);
  }
  kk_set_f64(out->dtype, out->data, n_rows ? total / (double)n_rows : NAN);
  return -1;
}

int64_t kk_softmax_xent_ref(const kk_view *logits, const kk_view *labels, const kk_view *out) {
  int64_t n_rows = logits->shape[0], c = logits->shape[1];
  double total = 0;
  for (int64_t n = 0; n < n_rows; n++) {
    int64_t l = kk_get_i64(labels->dtype, labels->data + n * labels->strides[0] *
                                                             (int64_t)kiln_dtype_size(labels->dtype));
    if (l < 0 || l >= c) return n;
    /* -log(exp(x_l) / sum_j exp(x_j)), with the max taken out for range. */
    double m = -INFINITY;
    for (int64_t j = 0; j < c; j++) m = fmax(m, ref_get(logits, n * logits->strides[0] + j * logits->strides[1]));
    double s = 0;
    for (int64_t j = 0; j < c; j++) s += exp(ref_get(logits, n * logits->strides[0] + j * logits->strides[1]) - m);
    double xl = ref_get(logits, n * logits->strides[0] + l * logits->strides[1]);
    total += -((xl - m) - log(s));
  }
  ref_set(out, 0, n_rows ? total / (double)n_rows : NAN);
  return -1;
}

/* ------------------------------------------------------------ batch norm */

/* x [N, C, inner] contiguous; scale and shift [C] in double. */
#define DEFINE_AFFINE(T, SUF)                                                                                  \
  static void channel_affine_##SUF(const T *x, T *y, int64_t n, int64_t c, int64_t inner, const double *scale, \
                                   const double *shift) {                                                      \
    for (int64_t b = 0; b < n; b++)                                                                            \
      for (int64_t ch = 0; ch < c; ch++) {                                                                     \
        const T *xp = x + (b * c + ch) * inner;                                                                \
        T *yp = y + (b * c + ch) * inner;                                                                      \
        T a = (T)scale[ch], s = (T)shift[ch];                                                                  \
        for (int64_t i = 0; i < inner; i++) yp[i] = xp[i] * a + s;                                             \
      }                                                                                                        \
  }

DEFINE_AFFINE(float, f32)
DEFINE_AFFINE(double, f64)

static double vec_get(const kk_view *v, int64_t i) {
  const char *p = v->data + i * v->strides[0] * (int64_t)kiln_dtype_size(v->dtype);
  if (v->dtype == KILN_F32) {
    float f;
    memcpy(&f, p, 4);
    return f;
  }
  double d;
  memcpy(&d, p, 8);
  return d;
}

static void vec_set(const kk_view *v, int64_t i, double x) {
  char *p = v->data + i * v->strides[0] * (int64_t)kiln_dtype_size(v->dtype);
  if (v->dtype == KILN_F32) {
    float f = (float)x;
    memcpy(p, &f, 4);
  } else {
    memcpy(p, &x, 8);
  }
}

static void bn_dims(const kk_view *x, int64_t *n, int64_t *c, int64_t *inner) {
  *n = x->shape[0];
  *c = x->shape[1];
  *inner = 1;
  for (int d = 2; d < x->ndim; d++) *inner *= x->shape[d];
}

/* Runs y = x * scale[c] + shift[c] with x made contiguous. */
static kiln_status bn_apply(const kk_view *x, const kk_view *y, const double *scale, const double *shift,
                            const char *who) {
  int64_t n, c, inner;
  bn_dims(x, &n, &c, &inner);
  const char *xd;
  void *scratch;
  kiln_status st = kk_nn_contiguous(x, who, &xd, &scratch);
  if (st != KILN_OK) return st;
  if (x->dtype == KILN_F32)
    channel_affine_f32((const float *)xd, (float *)y->data, n, c, inner, scale, shift);
  else
    channel_affine_f64((const double *)xd, (double *)y->data, n, c, inner, scale, shift);
  kiln_free(scratch);
  return KILN_OK;
}

kiln_status kk_batch_norm(const kk_view *x, const kk_view *gamma, const kk_view *beta, const kk_view *mean,
                          const kk_view *var, double eps, const kk_view *y) {
  int64_t c = x->shape[1];
  if (kk_numel(x) == 0) return KILN_OK;
  size_t bytes = (size_t)c * 2 * sizeof(double);
  double *scale = kiln_alloc(bytes);
  if (!scale) return kiln_errorf(KILN_ERR_OUT_OF_MEMORY, "batch_norm: out of memory allocating %zu bytes", bytes);
  double *shift = scale + c;
  for (int64_t ch = 0; ch < c; ch++) {
    scale[ch] = vec_get(gamma, ch) / sqrt(vec_get(var, ch) + eps);
    shift[ch] = vec_get(beta, ch) - vec_get(mean, ch) * scale[ch];
  }
  kiln_status st = bn_apply(x, y, scale, shift, "batch_norm");
  kiln_free(scale);
  return st;
}

kiln_status kk_batch_norm_ref(const kk_view *x, const kk_view *gamma, const kk_view *beta, const kk_view *mean,
                              const kk_view *var, double eps, const kk_view *y) {
  int64_t total = kk_numel(x);
  for (int64_t i = 0; i < total; i++) {
    /* The channel is the second index of the row-major multi-index. */
    int64_t inner = total / (x->shape[0] * x->shape[1]);
    int64_t ch = (i / inner) % x->shape[1];
    double v = ref_get(x, offset_skipping(x, -1, i));
    double r = (v - ref_get(mean, ch * mean->strides[0])) / sqrt(ref_get(var, ch * var->strides[0]) + eps) *
                   ref_get(gamma, ch * gamma->strides[0]) +
               ref_get(beta, ch * beta->strides[0]);
    ref_set(y, offset_skipping(y, -1, i), r);
  }
  return KILN_OK;
}

#define DEFINE_BN_STATS(T, SUF)                                                                                \
  static void bn_stats_##SUF(const T *x, int64_t n, int64_t c, int64_t inner, double *mean, double *var) {     \
    for (int64_t ch = 0; ch < c; ch++) {                                                                       \
      double s = 0;                                                                                            \
      for (int64_t b = 0; b < n; b++) {                                                                        \
        const T *xp = x + (b * c + ch) * inner;                                                                \
        for (int64_t i = 0; i < inner; i++) s += xp[i];                                                        \
      }                                                                                                        \
      double m = s / (double)(n * inner), q = 0;                                                               \
      for (int64_t b = 0; b < n; b++) {                                                                        \
        const T *xp = x + (b * c + ch) * inner;                                                                \
        for (int64_t i = 0; i < inner; i++) {                                                                  \
          double d = xp[i] - m;                                                                                \
          q += d * d;                                                                                          \
        }                                                                                                      \
      }                                                                                                        \
      mean[ch] = m;                                                                                            \
      var[ch] = q / (double)(n * inner);                                                                       \
    }                                                                                                          \
  }

DEFINE_BN_STATS(float, f32)
DEFINE_BN_STATS(double, f64)

kiln_status kk_batch_norm_train(const kk_view *x, const kk_view *gamma, const kk_view *beta, double eps,
                                const kk_view *y, const kk_view *mean_out, const kk_view *var_out) {
  int64_t n, c, inner;
  bn_dims(x, &n, &c, &inner);
  if (c == 0) return KILN_OK;
  int64_t count = n * inner;
  size_t bytes = (size_t)c * 4 * sizeof(double);
  double *mean = kiln_alloc(bytes);
  if (!mean)
    return kiln_errorf(KILN_ERR_OUT_OF_MEMORY, "batch_norm_train: out of memory allocating %zu bytes", bytes);
  double *var = mean + c, *scale = var + c, *shift = scale + c;
  const char *xd;
  void *scratch;
  kiln_status st = kk_nn_contiguous(x, "batch_norm_train", &xd, &scratch);
  if (st != KILN_OK) {
    kiln_free(mean);
    return st;
  }
  if (x->dtype == KILN_F32)
    bn_stats_f32((const float *)xd, n, c, inner, mean, var);
  else
    bn_stats_f64((const double *)xd, n, c, inner, mean, var);
  for (int64_t ch = 0; ch < c; ch++) {
    scale[ch] = vec_get(gamma, ch) / sqrt(var[ch] + eps);
    shift[ch] = vec_get(beta, ch) - mean[ch] * scale[ch];
    vec_set(mean_out, ch, mean[ch]);
    vec_set(var_out, ch, var[ch] * (double)count / (double)(count - 1));
  }
  if (x->dtype == KILN_F32)
    channel_affine_f32((const float *)xd, (float *)y->data, n, c, inner, scale, shift);
  else
    channel_affine_f64((const double *)xd, (double *)y->data, n, c, inner, scale, shift);
  kiln_free(scratch);
  kiln_free(mean);
  return KILN_OK;
}

kiln_status kk_batch_norm_train_ref(const kk_view *x, const kk_view *gamma, const kk_view *beta, double eps,
                                    const kk_view *y, const kk_view *mean_out, const kk_view *var_out) {
  int64_t n = x->shape[0], c = x->shape[1], total = kk_numel(x);
  int64_t inner = n > 0 && c > 0 ? total / (n * c) : 0;
  int64_t count = n * inner;
  for (int64_t ch = 0; ch < c; ch++) {
    /* Visits the channel's elements by flat index: (b, ch, i) is flat
     * (b * c + ch) * inner + i. */
    double s = 0;
    for (int64_t b = 0; b < n; b++)
      for (int64_t i = 0; i < inner; i++) s += ref_get(x, offset_skipping(x, -1, (b * c + ch) * inner + i));
    double m = s / (double)count;
    double q = 0;
    for (int64_t b = 0; b < n; b++)
      for (int64_t i = 0; i < inner; i++) {
        double d = ref_get(x, offset_skipping(x, -1, (b * c + ch) * inner + i)) - m;
        q += d * d;
      }
    double biased = q / (double)count;
    double g = ref_get(gamma, ch * gamma->strides[0]), be = ref_get(beta, ch * beta->strides[0]);
    for (int64_t b = 0; b < n; b++)
      for (int64_t i = 0; i < inner; i++) {
        int64_t flat = (b * c + ch) * inner + i;
        double v = ref_get(x, offset_skipping(x, -1, flat));
        ref_set(y, offset_skipping(y, -1, flat), (v - m) / sqrt(biased + eps) * g + be);
      }
    ref_set(mean_out, ch * mean_out->strides[0], m);
    ref_set(var_out, ch * var_out->strides[0], q / (double)(count - 1));
  }
  return KILN_OK;
}

/* ------------------------------------------------------------ dropout */

kiln_status kk_dropout(const kk_view *x, const kk_view *y, double p, uint64_t seed, uint64_t offset) {
  int64_t total = kk_numel(x);
  if (total == 0) return KILN_OK;
  const char *xd;
  void *scratch;
  kiln_status st = kk_nn_contiguous(x, "dropout", &xd, &scratch);
  if (st != KILN_OK) return st;
  uint32_t r[4];
  if (x->dtype == KILN_F32) {
    const float *xs = (const float *)xd;
    float *ys = (float *)y->data;
    float scale = (float)(1.0 / (1.0 - p));
    for (int64_t i = 0; i < total; i++) {
      kk_philox4x32(seed, offset + (uint64_t)i, r);
      ys[i] = kk_u01(r[0]) >= p ? xs[i] * scale : 0.0f;
    }
  } else {
    const double *xs = (const double *)xd;
    double *ys = (double *)y->data;
    double scale = 1.0 / (1.0 - p);
    for (int64_t i = 0; i < total; i++) {
      kk_philox4x32(seed, offset + (uint64_t)i, r);
      ys[i] = kk_u01(r[0]) >= p ? xs[i] * scale : 0.0;
    }
  }
  kiln_free(scratch);
  return KILN_OK;
}

kiln_status kk_dropout_ref(const kk_view *x, const kk_view *y, double p, uint64_t seed, uint64_t offset) {
  int64_t total = kk_numel(x);
  for (int64_t i = 0; i < total; i++) {
    uint32_t r[4];
    kk_philox4x32(seed, offset + (uint64_t)i, r);
    /* The uniform from the top 24 bits of the first word, as kk_u01 makes it. */
    double u = (double)(r[0] >> 8) / 16777216.0;
    double v = ref_get(x, offset_skipping(x, -1, i));
    ref_set(y, offset_skipping(y, -1, i), u < p ? 0.0 : v / (1.0 - p));
  }
  return KILN_OK;
}
