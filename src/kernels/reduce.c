#include "kernels/reduce.h"

#include <math.h>
#include <string.h>

#include "kernels/elementwise.h"

typedef enum { PASS_SUM, PASS_PROD, PASS_MAX, PASS_MIN, PASS_SQDEV, PASS_EXPSUM } pass_kind;

typedef struct {
  pass_kind kind;
  kiln_dtype xt;
} pass_ctx;

/* Operands: 0 = x, 1 = acc (double), 2 = aux (double: the mean or the max).
 * A run whose accumulator stride is 0 is a reduction along the inner dim:
 * eight partial sums in a fixed order give instruction-level parallelism
 * without losing reproducibility. */
#define PASS_LOOP(T)                                                                                 \
  do {                                                                                               \
    const char *px = p[0];                                                                           \
    double *acc = (double *)p[1];                                                                    \
    const double *aux = (const double *)p[2];                                                        \
    int64_t sx = s[0] / (int64_t)sizeof(T), sa = s[1] / 8, su = s[2] / 8;                            \
    const T *x = (const T *)px;                                                                      \
    if (sa == 0 && c->kind == PASS_SUM) {                                                            \
      double part[8] = {0};                                                                          \
      int64_t i = 0;                                                                                 \
      for (; i + 8 <= n; i += 8)                                                                     \
        for (int k = 0; k < 8; k++) part[k] += (double)x[(i + k) * sx];                              \
      double total = ((part[0] + part[1]) + (part[2] + part[3])) + ((part[4] + part[5]) + (part[6] + part[7])); \
      for (; i < n; i++) total += (double)x[i * sx];                                                 \
      acc[0] += total;                                                                               \
      break;                                                                                         \
    }                                                                                                \
    for (int64_t i = 0; i < n; i++) {                                                                \
      double v = (double)x[i * sx];                                                                  \
      double *a = &acc[i * sa];                                                                      \
      switch (c->kind) {                                                                             \
      case PASS_SUM: *a += v; break;                                                                 \
      case PASS_PROD: *a *= v; break;                                                                \
      case PASS_MAX: if (v > *a || isnan(v)) *a = isnan(*a) ? *a : v; break;                         \
      case PASS_MIN: if (v < *a || isnan(v)) *a = isnan(*a) ? *a : v; break;                         \
      case PASS_SQDEV: { double d = v - aux[i * su]; *a += d * d; break; }                           \
      case PASS_EXPSUM: *a += isinf(aux[i * su]) ? 0 : exp(v - aux[i * su]); break;               \
      }                                                                                              \
    }                                                                                                \
  } while (0)

static void pass_inner(int64_t n, char **p, const int64_t *s, void *ctx) {
  const pass_ctx *c = ctx;
  switch (c->xt) {
  case KILN_F32: PASS_LOOP(float); break;
  case KILN_F64: PASS_LOOP(double); break;
  default: break;
  }
}

/* Integer sum, prod, max and min accumulate exactly in int64 (wrapping). */
static void pass_int_inner(int64_t n, char **p, const int64_t *s, void *ctx) {
  const pass_ctx *c = ctx;
  for (int64_t i = 0; i < n; i++) {
    int64_t v = kk_get_i64(c->xt, p[0] + i * s[0]);
    int64_t *a = (int64_t *)(p[1] + i * s[1]);
    switch (c->kind) {
    case PASS_SUM: *a = (int64_t)((uint64_t)*a + (uint64_t)v); break;
    case PASS_PROD: *a = (int64_t)((uint64_t)*a * (uint64_t)v); break;
    case PASS_MAX: if (v > *a) *a = v; break;
    case PASS_MIN: if (v < *a) *a = v; break;
    default: break;
    }
  }
}

/* A view of a contiguous buffer of one slot per output element, laid over
 * x's dims: stride 0 along reduced dims. */
static kk_view acc_view(const kk_view *x, const bool *reduced, void *buf, kiln_dtype dt) {
  kk_view v = {.data = buf, .dtype = dt, .ndim = x->ndim};
  int64_t stride = 1;
  for (int d = x->ndim - 1; d >= 0; d--) {
    v.shape[d] = x->shape[d];
    v.strides[d] = reduced[d] ? 0 : stride;
    if (!reduced[d]) stride *= x->shape[d];
  }
  return v;
}

/* Split across the pool along the first kept dim: each share then owns its
 * own accumulator slots and visits their elements in the serial order, so
 * the bits are those of a serial run whatever the thread count. Reductions
 * to a single value stay serial. */
static void run_pass(pass_kind kind, const kk_view *x, const kk_view *acc, const kk_view *aux) {
  pass_ctx c = {kind, x->dtype};
  const kk_view *v[3] = {x, acc, aux};
  int split = -1;
  for (int d = 0; d < x->ndim && split < 0; d++)
    if (acc->strides[d] != 0 && x->shape[d] > 1) split = d;
  kk_foreach_split(3, v, x->shape, x->ndim, split, kk_is_float(x->dtype) ? pass_inner : pass_int_inner, &c);
}

static void fill_double(double *a, int64_t n, double v) {
  for (int64_t i = 0; i < n; i++) a[i] = v;
}

kiln_status kk_reduce(kk_reduce_op op, const kk_view *x, const bool *reduced, const kk_view *out, int64_t ddof) {
  int64_t k = kk_numel(out), r = 1;
  for (int d = 0; d < x->ndim; d++)
    if (reduced[d]) r *= x->shape[d];
  if (k == 0) return KILN_OK;
  bool two_pass = op == KK_VAR || op == KK_LOGSUMEXP;
  double *acc = kiln_alloc((size_t)k * 8 * (two_pass ? 2 : 1));
  if (!acc) return kiln_errorf(KILN_ERR_OUT_OF_MEMORY, "reduce: out of memory for %lld accumulators", (long long)k);
  double *aux = two_pass ? acc + k : acc;
  kk_view av = acc_view(x, reduced, acc, KILN_F64), uv = acc_view(x, reduced, aux, KILN_F64);
  int64_t es = (int64_t)kiln_dtype_size(out->dtype);

  if (!kk_is_float(x->dtype)) {
    int64_t *iacc = (int64_t *)acc;
    int64_t init = op == KK_PROD ? 1 : op == KK_MAX ? INT64_MIN : op == KK_MIN ? INT64_MAX : 0;
    for (int64_t i = 0; i < k; i++) iacc[i] = init;
    av.dtype = KILN_I64;
    run_pass(op == KK_SUM ? PASS_SUM : op == KK_PROD ? PASS_PROD : op == KK_MAX ? PASS_MAX : PASS_MIN, x, &av, &av);
    for (int64_t i = 0; i < k; i++) kk_set_i64(out->dtype, out->data + i * es, iacc[i]);
    kiln_free(acc);
    return KILN_OK;
  }

  switch (op) {
  case KK_SUM: case KK_MEAN:
    fill_double(acc, k, 0);
    run_pass(PASS_SUM, x, &av, &av);
    break;
  case KK_PROD:
    fill_double(acc, k, 1);
    run_pass(PASS_PROD, x, &av, &av);
    break;
  case KK_MAX:
    fill_double(acc, k, -INFINITY);
    run_pass(PASS_MAX, x, &av, &av);
    break;
  case KK_MIN:
    fill_double(acc, k, INFINITY);
    run_pass(PASS_MIN, x, &av, &av);
    break;
  case KK_VAR:
    /* Two passes (mean, then squared deviations) rather than E[x^2]-E[x]^2,
     * which cancels catastrophically. */
    fill_double(aux, k, 0);
    run_pass(PASS_SUM, x, &uv, &uv);
    for (int64_t i = 0; i < k; i++) aux[i] /= (double)r;
    fill_double(acc, k, 0);
    run_pass(PASS_SQDEV, x, &av, &uv);
    break;
  case KK_LOGSUMEXP:
    fill_double(aux, k, -INFINITY);
    run_pass(PASS_MAX, x, &uv, &uv);
    fill_double(acc, k, 0);
    run_pass(PASS_EXPSUM, x, &av, &uv);
    break;
  }
  for (int64_t i = 0; i < k; i++) {
    double v = acc[i];
    if (op == KK_MEAN) v = r ? v / (double)r : NAN;
    if (op == KK_VAR) v = r - ddof > 0 ? v / (double)(r - ddof) : NAN;
    if (op == KK_LOGSUMEXP) v = isinf(aux[i]) ? aux[i] : log(v) + aux[i];
    kk_set_f64(out->dtype, out->data + i * es, v);
  }
  kiln_free(acc);
  return KILN_OK;
}

/* ------------------------------------------------------------------ reference */

/* The output slot of input element `flat`: its coordinates with the reduced
 * ones dropped, in row-major order. */
static int64_t out_slot(const kk_view *x, const bool *reduced, int64_t flat) {
  int64_t slot = 0, scale = 1;
  for (int d = x->ndim - 1; d >= 0; d--) {
    int64_t c = flat % x->shape[d];
    flat /= x->shape[d];
    if (!reduced[d]) {
      slot += c * scale;
      scale *= x->shape[d];
    }
  }
  return slot;
}

kiln_status kk_reduce_ref(kk_reduce_op op, const kk_view *x, const bool *reduced, const kk_view *out, int64_t ddof) {
  int64_t k = kk_numel(out), n = kk_numel(x), r = k ? n / k : 0;
  if (k == 0) return KILN_OK;
  long double *acc = kiln_calloc((size_t)k * 3, sizeof(long double));
  if (!acc) return kiln_errorf(KILN_ERR_OUT_OF_MEMORY, "reduce: out of memory");
  long double *mean = acc + k, *mx = acc + 2 * k;
  int64_t es = (int64_t)kiln_dtype_size(out->dtype);
  bool is_int = !kk_is_float(x->dtype);
  for (int64_t i = 0; i < k; i++) {
    acc[i] = op == KK_PROD ? 1 : 0;
    mx[i] = op == KK_MIN ? INFINITY : -INFINITY;
  }
  int64_t *iacc = kiln_calloc((size_t)k, sizeof(int64_t));
  if (!iacc) {
    kiln_free(acc);
    return kiln_errorf(KILN_ERR_OUT_OF_MEMORY, "reduce: out of memory");
  }
  for (int64_t i = 0; i < k; i++) iacc[i] = op == KK_PROD ? 1 : op == KK_MAX ? INT64_MIN : op == KK_MIN ? INT64_MAX : 0;
  for (int64_t i = 0; i < n; i++) {
    int64_t o = out_slot(x, reduced, i);
    const char *p = kk_element(x, i);
    if (is_int) {
      int64_t v = kk_get_i64(x->dtype, p);
      if (op == KK_SUM) iacc[o] = (int64_t)((uint64_t)iacc[o] + (uint64_t)v);
      if (op == KK_PROD) iacc[o] = (int64_t)((uint64_t)iacc[o] * (uint64_t)v);
      if (op == KK_MAX && v > iacc[o]) iacc[o] = v;
      if (op == KK_MIN && v < iacc[o]) iacc[o] = v;
      continue;
    }
    long double v = kk_get_f64(x->dtype, p);
    acc[o] = op == KK_PROD ? acc[o] * v : acc[o] + v;
    if (isnan(v) || isnan(mx[o])) mx[o] = NAN;
    else if (op == KK_MIN ? v < mx[o] : v > mx[o]) mx[o] = v;
  }
  if (op == KK_VAR || op == KK_LOGSUMEXP) {
    for (int64_t i = 0; i < k; i++) {
      mean[i] = acc[i] / r;
      acc[i] = 0;
    }
    for (int64_t i = 0; i < n; i++) {
      int64_t o = out_slot(x, reduced, i);
      long double v = kk_get_f64(x->dtype, kk_element(x, i));
      acc[o] += op == KK_VAR ? (v - mean[o]) * (v - mean[o]) : expl(v - mx[o]);
    }
  }
  for (int64_t i = 0; i < k; i++) {
    char *po = out->data + i * es;
    if (is_int) {
      kk_set_i64(out->dtype, po, iacc[i]);
      continue;
    }
    long double v = acc[i];
    switch (op) {
    case KK_MEAN: v = r ? v / r : NAN; break;
    case KK_MAX: case KK_MIN: v = mx[i]; break;
    case KK_VAR: v = r - ddof > 0 ? v / (r - ddof) : NAN; break;
    case KK_LOGSUMEXP: v = isinf(mx[i]) ? mx[i] : logl(v) + mx[i]; break;
    default: break;
    }
    kk_set_f64(out->dtype, po, (double)v);
  }
  kiln_free(iacc);
  kiln_free(acc);
  return KILN_OK;
}

/* ------------------------------------------------------------------ argmax, argmin */

typedef struct {
  bool is_max;
  kiln_dtype dt;
  int64_t len, stride; /* along the axis, bytes */
} arg_ctx;

static bool better(bool is_max, double v, double best) {
  if (isnan(best)) return false;
  if (isnan(v)) return true;
  return is_max ? v > best : v < best;
}

/* Integers compare as int64: doubles would merge values past 2^53. */
static int64_t int_argext(bool is_max, kiln_dtype dt, const char *x, int64_t len, int64_t stride) {
  int64_t best_at = 0, best = kk_get_i64(dt, x);
  for (int64_t j = 1; j < len; j++) {
    int64_t v = kk_get_i64(dt, x + j * stride);
    if (is_max ? v > best : v < best) best = v, best_at = j;
  }
  return best_at;
}

static void arg_inner(int64_t n, char **p, const int64_t *s, void *ctx) {
  const arg_ctx *c = ctx;
  for (int64_t i = 0; i < n; i++) {
    const char *x = p[0] + i * s[0];
    int64_t best_at = 0;
    double best = kk_get_f64(c->dt, x);
    if (!kk_is_float(c->dt)) {
      best_at = int_argext(c->is_max, c->dt, x, c->len, c->stride);
    } else if (c->dt == KILN_F32) {
      for (int64_t j = 1; j < c->len; j++) {
        double v = *(const float *)(x + j * c->stride);
        if (better(c->is_max, v, best)) best = v, best_at = j;
      }
    } else {
      for (int64_t j = 1; j < c->len; j++) {
        double v = kk_get_f64(c->dt, x + j * c->stride);
        if (better(c->is_max, v, best)) best = v, best_at = j;
      }
    }
    *(int64_t *)(p[1] + i * s[1]) = best_at;
  }
}

kiln_status kk_argext(bool is_max, const kk_view *x, int axis, const kk_view *out) {
  kk_view xv = *x;
  void *scratch = NULL;
  if (axis < 0) {
    /* The flattened index is a row-major position: make x contiguous 1-D. */
    int64_t n = kk_numel(x);
    if (!kk_is_contiguous(x)) {
      scratch = kiln_alloc((size_t)n * kiln_dtype_size(x->dtype));
      if (!scratch) return kiln_errorf(KILN_ERR_OUT_OF_MEMORY, "argmax: out of memory");
      kk_view dst = *x;
      dst.data = scratch;
      int64_t st = 1;
      for (int d = dst.ndim - 1; d >= 0; d--) dst.strides[d] = st, st *= dst.shape[d];
      kk_copy(x, &dst);
      xv.data = scratch;
    }
    xv.ndim = 1;
    xv.shape[0] = n;
    xv.strides[0] = 1;
    axis = 0;
  }
  arg_ctx c = {is_max, xv.dtype, xv.shape[axis], xv.strides[axis] * (int64_t)kiln_dtype_size(xv.dtype)};
  /* Iterate over the other dims; each visit scans the axis. */
  kk_view rest = xv, ov = {.data = out->data, .dtype = KILN_I64, .ndim = xv.ndim - 1};
  rest.ndim = 0;
  for (int d = 0; d < xv.ndim; d++) {
    if (d == axis) continue;
    rest.shape[rest.ndim] = xv.shape[d];
    rest.strides[rest.ndim++] = xv.strides[d];
  }
  int64_t st = 1;
  for (int d = rest.ndim - 1; d >= 0; d--) {
    ov.shape[d] = rest.shape[d];
    ov.strides[d] = st;
    st *= rest.shape[d];
  }
  const kk_view *v[2] = {&rest, &ov};
  if (c.len > 0) kk_foreach(2, v, rest.shape, rest.ndim, arg_inner, &c);
  kiln_free(scratch);
  return KILN_OK;
}

/* Whether element i beats element j of x. */
static bool ref_better(bool is_max, const kk_view *x, int64_t i, int64_t j) {
  const char *pi = kk_element(x, i), *pj = kk_element(x, j);
  if (kk_is_float(x->dtype)) return better(is_max, kk_get_f64(x->dtype, pi), kk_get_f64(x->dtype, pj));
  int64_t a = kk_get_i64(x->dtype, pi), b = kk_get_i64(x->dtype, pj);
  return is_max ? a > b : a < b;
}

kiln_status kk_argext_ref(bool is_max, const kk_view *x, int axis, const kk_view *out) {
  int64_t n = kk_numel(x);
  if (axis < 0) {
    int64_t best_at = 0;
    for (int64_t i = 1; i < n; i++)
      if (ref_better(is_max, x, i, best_at)) best_at = i;
    *(int64_t *)out->data = best_at;
    return KILN_OK;
  }
  int64_t len = x->shape[axis], inner = 1;
  for (int d = axis + 1; d < x->ndim; d++) inner *= x->shape[d];
  int64_t outer = len ? n / (len * inner) : 0;
  for (int64_t o = 0; o < outer; o++)
    for (int64_t in = 0; in < inner; in++) {
      int64_t best_at = 0;
      for (int64_t j = 1; j < len; j++)
        if (ref_better(is_max, x, (o * len + j) * inner + in, (o * len + best_at) * inner + in)) best_at = j;
      ((int64_t *)out->data)[o * inner + in] = best_at;
    }
  return KILN_OK;
}
