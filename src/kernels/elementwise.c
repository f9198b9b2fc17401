/* Elementwise kernels (see elementwise.h for the design). */
#include "kernels/elementwise.h"

#include <stdatomic.h>
#include <string.h>
#include <tgmath.h>

#include "base/parallel.h"

/* Operands of one kk_foreach: a fused chain's inputs and its output. */
#define MAX_OPS (KK_FUSED_MAX_INPUTS + 1)

kk_view kk_broadcast_view(const kk_view *x, const kk_view *out) {
  kk_view v = *x;
  v.ndim = out->ndim;
  int lead = out->ndim - x->ndim;
  for (int i = out->ndim - 1; i >= 0; i--) {
    int j = i - lead;
    v.shape[i] = out->shape[i];
    v.strides[i] = j >= 0 && x->shape[j] != 1 ? x->strides[j] : 0;
  }
  return v;
}

void kk_foreach(int nops, const kk_view *const *views, const int64_t *shape, int ndim, kk_inner_fn fn, void *ctx) {
  int64_t dims[KILN_MAX_DIMS];
  int64_t st[MAX_OPS][KILN_MAX_DIMS];
  char *ptrs[MAX_OPS];
  int nd = 0;
  for (int i = 0; i < ndim; i++) {
    if (shape[i] == 0) return;
    if (shape[i] == 1) continue;
    /* Merge into the previous dim when every operand steps through both as
     * through one. */
    bool merge = nd > 0;
    for (int k = 0; k < nops && merge; k++) merge = st[k][nd - 1] == views[k]->strides[i] * shape[i];
    if (merge) {
      dims[nd - 1] *= shape[i];
      for (int k = 0; k < nops; k++) st[k][nd - 1] = views[k]->strides[i];
      continue;
    }
    dims[nd] = shape[i];
    for (int k = 0; k < nops; k++) st[k][nd] = views[k]->strides[i];
    nd++;
  }
  int64_t inner_bytes[MAX_OPS];
  for (int k = 0; k < nops; k++) {
    int64_t es = (int64_t)kiln_dtype_size(views[k]->dtype);
    ptrs[k] = views[k]->data;
    for (int d = 0; d < nd; d++) st[k][d] *= es;
    inner_bytes[k] = nd ? st[k][nd - 1] : 0;
  }
  if (nd == 0) {
    fn(1, ptrs, inner_bytes, ctx);
    return;
  }
  int64_t inner = dims[nd - 1];
  int64_t idx[KILN_MAX_DIMS] = {0};
  for (;;) {
    fn(inner, ptrs, inner_bytes, ctx);
    int d = nd - 2;
    for (; d >= 0; d--) {
      for (int k = 0; k < nops; k++) ptrs[k] += st[k][d];
      if (++idx[d] < dims[d]) break;
      for (int k = 0; k < nops; k++) ptrs[k] -= st[k][d] * dims[d];
      idx[d] = 0;
    }
    if (d < 0) return;
  }
}

/* Elementwise work below this many elements per share stays on one
 * thread: handing a share to another costs microseconds. */
#define PARALLEL_MIN_ELEMS ((int64_t)1 << 16)

typedef struct {
  int nops;
  const kk_view *const *views;
  const int64_t *shape;
  int ndim, split;
  kk_inner_fn fn;
  void *ctx;
} foreach_job;

static void foreach_part(void *ctx, int64_t begin, int64_t end, int worker) {
  const foreach_job *j = ctx;
  (void)worker;
  kk_view sub[MAX_OPS];
  const kk_view *subp[MAX_OPS];
  int64_t shape[KILN_MAX_DIMS];
  memcpy(shape, j->shape, sizeof(int64_t) * (size_t)j->ndim);
  shape[j->split] = end - begin;
  for (int k = 0; k < j->nops; k++) {
    sub[k] = *j->views[k];
    sub[k].data += begin * sub[k].strides[j->split] * (int64_t)kiln_dtype_size(sub[k].dtype);
    sub[k].shape[j->split] = end - begin;
    subp[k] = &sub[k];
  }
  kk_foreach(j->nops, subp, shape, j->ndim, j->fn, j->ctx);
}

void kk_foreach_split(int nops, const kk_view *const *views, const int64_t *shape, int ndim, int split,
                      kk_inner_fn fn, void *ctx) {
  int64_t numel = 1;
  for (int d = 0; d < ndim; d++) numel *= shape[d];
  if (split < 0 || split >= ndim || shape[split] < 2 || numel < 2 * PARALLEL_MIN_ELEMS) {
    kk_foreach(nops, views, shape, ndim, fn, ctx);
    return;
  }
  int64_t per_index = numel / shape[split];
  foreach_job job = {nops, views, shape, ndim, split, fn, ctx};
  kiln_parallel_for(shape[split], (PARALLEL_MIN_ELEMS + per_index - 1) / per_index, foreach_part, &job);
}

/* Elementwise kernels split along the first dim longer than 1: each element
 * writes only its own output, so any split gives the same result. */
static void foreach_parallel(int nops, const kk_view *const *views, const int64_t *shape, int ndim, kk_inner_fn fn,
                             void *ctx) {
  int split = -1;
  for (int d = 0; d < ndim && split < 0; d++)
    if (shape[d] > 1) split = d;
  kk_foreach_split(nops, views, shape, ndim, split, fn, ctx);
}

/* ------------------------------------------------------------------ copy */

static void copy_inner(int64_t n, char **p, const int64_t *s, void *ctx) {
  size_t es = *(const size_t *)ctx;
  if (s[0] == (int64_t)es && s[1] == (int64_t)es) {
    memcpy(p[1], p[0], (size_t)n * es);
    return;
  }
  for (int64_t i = 0; i < n; i++) memcpy(p[1] + i * s[1], p[0] + i * s[0], es);
}

void kk_copy(const kk_view *x, const kk_view *out) {
  kk_view xb = kk_broadcast_view(x, out);
  const kk_view *v[2] = {&xb, out};
  size_t es = kiln_dtype_size(x->dtype);
  foreach_parallel(2, v, out->shape, out->ndim, copy_inner, &es);
}

void kk_copy_ref(const kk_view *x, const kk_view *out) {
  kk_view xb = kk_broadcast_view(x, out);
  size_t es = kiln_dtype_size(x->dtype);
  int64_t n = kk_numel(out);
  for (int64_t i = 0; i < n; i++) memcpy(kk_element(out, i), kk_element(&xb, i), es);
}

/* ------------------------------------------------------------------ unary */

bool kk_unary_takes_int(kk_unary_op op) {
  switch (op) {
  case KK_NEG: case KK_ABS: case KK_SQUARE: case KK_SIGN: case KK_RELU: case KK_CLIP: case KK_LOGICAL_NOT:
    return true;
  default:
    return false;
  }
}

typedef struct {
  kk_unary_op op;
  double a, b;
} unary_ctx;

/* One typed loop per (op, T); the contiguous case is written separately so
 * the compiler vectorises it. tgmath picks expf for float, exp for double. */
#define UNARY_LOOP(T, EXPR)                                                  \
  do {                                                                       \
    if (sx == (int64_t)sizeof(T) && sy == (int64_t)sizeof(T)) {              \
      const T *xs = (const T *)px;                                           \
      T *ys = (T *)py;                                                       \
      for (int64_t i = 0; i < n; i++) {                                      \
        T v = xs[i];                                                         \
        ys[i] = (EXPR);                                                      \
      }                                                                      \
    } else {                                                                 \
      for (int64_t i = 0; i < n; i++) {                                      \
        T v = *(const T *)(px + i * sx);                                     \
        *(T *)(py + i * sy) = (EXPR);                                        \
      }                                                                      \
    }                                                                        \
  } while (0)

#define UNARY_FLOAT_BODY(T)                                                                            \
  const T pa = (T)c->a, pb = (T)c->b;                                                                  \
  (void)pa;                                                                                            \
  (void)pb;                                                                                            \
  switch (c->op) {                                                                                     \
  case KK_NEG: UNARY_LOOP(T, -v); break;                                                               \
  case KK_ABS: UNARY_LOOP(T, fabs(v)); break;                                                          \
  case KK_EXP: UNARY_LOOP(T, exp(v)); break;                                                           \
  case KK_LOG: UNARY_LOOP(T, log(v)); break;                                                           \
  case KK_SQRT: UNARY_LOOP(T, sqrt(v)); break;                                                         \
  case KK_RSQRT: UNARY_LOOP(T, (T)1 / sqrt(v)); break;                                                 \
  case KK_SQUARE: UNARY_LOOP(T, v * v); break;                                                         \
  case KK_SIN: UNARY_LOOP(T, sin(v)); break;                                                           \
  case KK_COS: UNARY_LOOP(T, cos(v)); break;                                                           \
  case KK_TANH: UNARY_LOOP(T, tanh(v)); break;                                                         \
  case KK_SIGMOID: UNARY_LOOP(T, (T)1 / ((T)1 + exp(-v))); break;                                      \
  case KK_RELU: UNARY_LOOP(T, v < 0 ? (T)0 : v); break;                                                \
  case KK_LEAKY_RELU: UNARY_LOOP(T, v < 0 ? v * pa : v); break;                                        \
  case KK_GELU: UNARY_LOOP(T, (T)0.5 * v * ((T)1 + erf(v * (T)0.70710678118654752440))); break;        \
  case KK_SOFTPLUS: UNARY_LOOP(T, (v > 0 ? v : (T)0) + log1p(exp(-fabs(v)))); break;                   \
  case KK_SIGN: UNARY_LOOP(T, v > 0 ? (T)1 : v < 0 ? (T)-1 : v); break;                                \
  case KK_FLOOR: UNARY_LOOP(T, floor(v)); break;                                                       \
  case KK_CEIL: UNARY_LOOP(T, ceil(v)); break;                                                         \
  case KK_ROUND: UNARY_LOOP(T, nearbyint(v)); break;                                                   \
  case KK_ERF: UNARY_LOOP(T, erf(v)); break;                                                           \
  case KK_CLIP: UNARY_LOOP(T, v < pa ? pa : v > pb ? pb : v); break;                                   \
  default: break;                                                                                      \
  }

static void unary_f32_inner(int64_t n, char **p, const int64_t *s, void *ctx) {
  const unary_ctx *c = ctx;
  char *px = p[0], *py = p[1];
  int64_t sx = s[0], sy = s[1];
  UNARY_FLOAT_BODY(float)
}

static void unary_f64_inner(int64_t n, char **p, const int64_t *s, void *ctx) {
  const unary_ctx *c = ctx;
  char *px = p[0], *py = p[1];
  int64_t sx = s[0], sy = s[1];
  UNARY_FLOAT_BODY(double)
}

/* Integer ops wrap like C's unsigned arithmetic instead of overflowing into
 * undefined behaviour (abs(INT64_MIN) stays INT64_MIN, as in numpy). */
static int64_t unary_int(kk_unary_op op, int64_t v, int64_t a, int64_t b) {
  switch (op) {
  case KK_NEG: return (int64_t)(0u - (uint64_t)v);
  case KK_ABS: return v < 0 ? (int64_t)(0u - (uint64_t)v) : v;
  case KK_SQUARE: return (int64_t)((uint64_t)v * (uint64_t)v);
  case KK_SIGN: return (v > 0) - (v < 0);
  case KK_RELU: return v < 0 ? 0 : v;
  case KK_CLIP: return v < a ? a : v > b ? b : v;
  default: return 0;
  }
}

typedef struct {
  kk_unary_op op;
  kiln_dtype xt, yt;
  int64_t a, b;
} unary_int_ctx;

static void unary_int_inner(int64_t n, char **p, const int64_t *s, void *ctx) {
  const unary_int_ctx *c = ctx;
  for (int64_t i = 0; i < n; i++) {
    const char *x = p[0] + i * s[0];
    char *y = p[1] + i * s[1];
    if (c->op == KK_LOGICAL_NOT)
      *y = kk_is_float(c->xt) ? kk_get_f64(c->xt, x) == 0 : kk_get_i64(c->xt, x) == 0;
    else
      kk_set_i64(c->yt, y, unary_int(c->op, kk_get_i64(c->xt, x), c->a, c->b));
  }
}

/* An op parameter for integer inputs: saturated, so an infinite clip bound
 * means no bound. */
static int64_t int_param(double v) {
  return isnan(v) ? 0 : v >= 9223372036854775807.0 ? INT64_MAX : v <= -9223372036854775808.0 ? INT64_MIN : (int64_t)v;
}

kiln_status kk_unary(kk_unary_op op, const kk_view *x, const kk_view *y, double a, double b) {
  const kk_view *v[2] = {x, y};
  if (op != KK_LOGICAL_NOT && x->dtype == KILN_F32) {
    unary_ctx c = {op, a, b};
    foreach_parallel(2, v, y->shape, y->ndim, unary_f32_inner, &c);
  } else if (op != KK_LOGICAL_NOT && x->dtype == KILN_F64) {
    unary_ctx c = {op, a, b};
    foreach_parallel(2, v, y->shape, y->ndim, unary_f64_inner, &c);
  } else {
    unary_int_ctx c = {op, x->dtype, y->dtype, int_param(a), int_param(b)};
    foreach_parallel(2, v, y->shape, y->ndim, unary_int_inner, &c);
  }
  return KILN_OK;
}

static double unary_ref_f64(kk_unary_op op, double v, double a, double b) {
  switch (op) {
  case KK_NEG: return -v;
  case KK_ABS: return v < 0 ? -v : v;
  case KK_EXP: return exp(v);
  case KK_LOG: return log(v);
  case KK_SQRT: return sqrt(v);
  case KK_RSQRT: return 1.0 / sqrt(v);
  case KK_SQUARE: return v * v;
  case KK_SIN: return sin(v);
  case KK_COS: return cos(v);
  case KK_TANH: return tanh(v);
  case KK_SIGMOID: return v >= 0 ? 1.0 / (1.0 + exp(-v)) : exp(v) / (1.0 + exp(v));
  case KK_RELU: return isnan(v) ? v : v > 0 ? v : 0.0;
  case KK_LEAKY_RELU: return isnan(v) ? v : v >= 0 ? v : a * v;
  case KK_GELU: return v * 0.5 * erfc(-v / sqrt(2.0));
  case KK_SOFTPLUS: return v > 30 ? v : log1p(exp(v));
  case KK_ERF: return erf(v);
  case KK_SIGN: return isnan(v) ? v : v > 0 ? 1.0 : v < 0 ? -1.0 : 0.0;
  case KK_FLOOR: return floor(v);
  case KK_CEIL: return ceil(v);
  case KK_ROUND: {
    /* v - floor(v) is exact, unlike v + 0.5, which rounds for large v. */
    double r = floor(v), frac = v - r;
    if (frac > 0.5 || (frac == 0.5 && fmod(r, 2.0) != 0)) r += 1.0; /* ties go to the even neighbour */
    return r;
  }
  case KK_CLIP: return isnan(v) ? v : v < a ? a : v > b ? b : v;
  default: return 0;
  }
}

kiln_status kk_unary_ref(kk_unary_op op, const kk_view *x, const kk_view *y, double a, double b) {
  int64_t n = kk_numel(y);
  for (int64_t i = 0; i < n; i++) {
    const char *px = kk_element(x, i);
    char *py = kk_element(y, i);
    if (op == KK_LOGICAL_NOT)
      kk_set_i64(KILN_BOOL, py, kk_get_f64(x->dtype, px) == 0);
    else if (kk_is_float(x->dtype))
      kk_set_f64(y->dtype, py, unary_ref_f64(op, kk_get_f64(x->dtype, px), a, b));
    else
      kk_set_i64(y->dtype, py, unary_int(op, kk_get_i64(x->dtype, px), int_param(a), int_param(b)));
  }
  return KILN_OK;
}

/* ------------------------------------------------------------------ binary */

typedef struct {
  kk_binary_op op;
  kiln_dtype in_t, out_t;
  atomic_bool failed; /* integer division by zero, negative integer power; set by any share */
} binary_ctx;

#define BIN_LOOP(T, OT, EXPR)                                                            \
  do {                                                                                   \
    if (sa == (int64_t)sizeof(T) && sb == (int64_t)sizeof(T) && so == (int64_t)sizeof(OT)) { \
      const T *as = (const T *)pa, *bs = (const T *)pb;                                  \
      OT *os = (OT *)po;                                                                 \
      for (int64_t i = 0; i < n; i++) {                                                  \
        T x = as[i], y = bs[i];                                                          \
        os[i] = (OT)(EXPR);                                                              \
      }                                                                                  \
    } else if (sa == (int64_t)sizeof(T) && sb == 0 && so == (int64_t)sizeof(OT)) {       \
      const T *as = (const T *)pa;                                                       \
      const T y = *(const T *)pb;                                                        \
      OT *os = (OT *)po;                                                                 \
      for (int64_t i = 0; i < n; i++) {                                                  \
        T x = as[i];                                                                     \
        os[i] = (OT)(EXPR);                                                              \
      }                                                                                  \
    } else if (sa == 0 && sb == (int64_t)sizeof(T) && so == (int64_t)sizeof(OT)) {       \
      const T x = *(const T *)pa;                                                        \
      const T *bs = (const T *)pb;                                                       \
      OT *os = (OT *)po;                                                                 \
      for (int64_t i = 0; i < n; i++) {                                                  \
        T y = bs[i];                                                                     \
        os[i] = (OT)(EXPR);                                                              \
      }                                                                                  \
    } else {                                                                             \
      for (int64_t i = 0; i < n; i++) {                                                  \
        T x = *(const T *)(pa + i * sa), y = *(const T *)(pb + i * sb);                  \
        *(OT *)(po + i * so) = (OT)(EXPR);                                               \
      }                                                                                  \
    }                                                                                    \
  } while (0)

/* NaN propagates through maximum and minimum, as in numpy and torch. */
#define BINARY_FLOAT_BODY(T)                                                     \
  switch (c->op) {                                                               \
  case KK_ADD: BIN_LOOP(T, T, x + y); break;                                     \
  case KK_SUB: BIN_LOOP(T, T, x - y); break;                                     \
  case KK_MUL: BIN_LOOP(T, T, x * y); break;                                     \
  case KK_DIV: BIN_LOOP(T, T, x / y); break;                                     \
  case KK_POW: BIN_LOOP(T, T, pow(x, y)); break;                                 \
  case KK_MAXIMUM: BIN_LOOP(T, T, x > y || x != x ? x : y); break;               \
  case KK_MINIMUM: BIN_LOOP(T, T, x < y || x != x ? x : y); break;               \
  case KK_EQUAL: BIN_LOOP(T, char, x == y); break;                               \
  case KK_NOT_EQUAL: BIN_LOOP(T, char, x != y); break;                           \
  case KK_LESS: BIN_LOOP(T, char, x < y); break;                                 \
  case KK_LESS_EQUAL: BIN_LOOP(T, char, x <= y); break;                          \
  case KK_GREATER: BIN_LOOP(T, char, x > y); break;                              \
  case KK_GREATER_EQUAL: BIN_LOOP(T, char, x >= y); break;                       \
  case KK_LOGICAL_AND: BIN_LOOP(T, char, x != 0 && y != 0); break;               \
  case KK_LOGICAL_OR: BIN_LOOP(T, char, x != 0 || y != 0); break;                \
  default: break;                                                                \
  }

static void binary_f32_inner(int64_t n, char **p, const int64_t *s, void *ctx) {
  const binary_ctx *c = ctx;
  char *pa = p[0], *pb = p[1], *po = p[2];
  int64_t sa = s[0], sb = s[1], so = s[2];
  BINARY_FLOAT_BODY(float)
}

static void binary_f64_inner(int64_t n, char **p, const int64_t *s, void *ctx) {
  const binary_ctx *c = ctx;
  char *pa = p[0], *pb = p[1], *po = p[2];
  int64_t sa = s[0], sb = s[1], so = s[2];
  BINARY_FLOAT_BODY(double)
}

/* Integer arithmetic in int64 with wrap-around (through uint64_t), then
 * narrowed to the dtype, which wraps the same way numpy's fixed-width
 * integers do. Returns false for division by zero or a negative power. */
static bool binary_int(kk_binary_op op, int64_t x, int64_t y, int64_t *r) {
  switch (op) {
  case KK_ADD: *r = (int64_t)((uint64_t)x + (uint64_t)y); return true;
  case KK_SUB: *r = (int64_t)((uint64_t)x - (uint64_t)y); return true;
  case KK_MUL: *r = (int64_t)((uint64_t)x * (uint64_t)y); return true;
  case KK_DIV:
    if (y == 0) return false;
    *r = (x == INT64_MIN && y == -1) ? INT64_MIN : x / y;
    return true;
  case KK_POW: {
    if (y < 0) return false;
    uint64_t base = (uint64_t)x, acc = 1;
    for (uint64_t e = (uint64_t)y; e; e >>= 1) {
      if (e & 1) acc *= base;
      base *= base;
    }
    *r = (int64_t)acc;
    return true;
  }
  case KK_MAXIMUM: *r = x > y ? x : y; return true;
  case KK_MINIMUM: *r = x < y ? x : y; return true;
  case KK_EQUAL: *r = x == y; return true;
  case KK_NOT_EQUAL: *r = x != y; return true;
  case KK_LESS: *r = x < y; return true;
  case KK_LESS_EQUAL: *r = x <= y; return true;
  case KK_GREATER: *r = x > y; return true;
  case KK_GREATER_EQUAL: *r = x >= y; return true;
  case KK_LOGICAL_AND: *r = x != 0 && y != 0; return true;
  case KK_LOGICAL_OR: *r = x != 0 || y != 0; return true;
  default: return false;
  }
}

static void binary_int_inner(int64_t n, char **p, const int64_t *s, void *ctx) {
  binary_ctx *c = ctx;
  for (int64_t i = 0; i < n; i++) {
    int64_t r;
    if (!binary_int(c->op, kk_get_i64(c->in_t, p[0] + i * s[0]), kk_get_i64(c->in_t, p[1] + i * s[1]), &r)) {
      atomic_store_explicit(&c->failed, true, memory_order_relaxed);
      r = 0;
    }
    kk_set_i64(c->out_t, p[2] + i * s[2], r);
  }
}

/* Logical ops may mix dtypes: each side is tested for nonzero in its own. */
static bool truthy(kiln_dtype dt, const char *p) { return kk_is_float(dt) ? kk_get_f64(dt, p) != 0 : kk_get_i64(dt, p) != 0; }

typedef struct {
  kk_binary_op op;
  kiln_dtype at, bt;
} logical_ctx;

static void logical_inner(int64_t n, char **p, const int64_t *s, void *ctx) {
  const logical_ctx *c = ctx;
  for (int64_t i = 0; i < n; i++) {
    bool x = truthy(c->at, p[0] + i * s[0]), y = truthy(c->bt, p[1] + i * s[1]);
    p[2][i * s[2]] = c->op == KK_LOGICAL_AND ? (x && y) : (x || y);
  }
}

static kiln_status int_failure(kk_binary_op op) {
  return op == KK_DIV ? kiln_errorf(KILN_ERR_OUT_OF_RANGE, "div: integer division by zero")
                      : kiln_errorf(KILN_ERR_OUT_OF_RANGE, "pow: integers to negative integer powers");
}

kiln_status kk_binary(kk_binary_op op, const kk_view *a, const kk_view *b, const kk_view *out) {
  kk_view ab = kk_broadcast_view(a, out), bb = kk_broadcast_view(b, out);
  const kk_view *v[3] = {&ab, &bb, out};
  if ((op == KK_LOGICAL_AND || op == KK_LOGICAL_OR) && (a->dtype != b->dtype || !kk_is_float(a->dtype))) {
    logical_ctx c = {op, a->dtype, b->dtype};
    foreach_parallel(3, v, out->shape, out->ndim, logical_inner, &c);
    return KILN_OK;
  }
  binary_ctx c = {.op = op, .in_t = a->dtype, .out_t = out->dtype};
  atomic_init(&c.failed, false);
  if (a->dtype == KILN_F32)
    foreach_parallel(3, v, out->shape, out->ndim, binary_f32_inner, &c);
  else if (a->dtype == KILN_F64)
    foreach_parallel(3, v, out->shape, out->ndim, binary_f64_inner, &c);
  else
    foreach_parallel(3, v, out->shape, out->ndim, binary_int_inner, &c);
  return atomic_load(&c.failed) ? int_failure(op) : KILN_OK;
}

static double binary_ref_f64(kk_binary_op op, double x, double y) {
  switch (op) {
  case KK_ADD: return x + y;
  case KK_SUB: return x - y;
  case KK_MUL: return x * y;
  case KK_DIV: return x / y;
  case KK_POW: return pow(x, y);
  case KK_MAXIMUM: return isnan(x) || isnan(y) ? NAN : fmax(x, y);
  case KK_MINIMUM: return isnan(x) || isnan(y) ? NAN : fmin(x, y);
  case KK_EQUAL: return x == y;
  case KK_NOT_EQUAL: return x != y;
  case KK_LESS: return x < y;
  case KK_LESS_EQUAL: return x <= y;
  case KK_GREATER: return x > y;
  case KK_GREATER_EQUAL: return x >= y;
  case KK_LOGICAL_AND: return x != 0 && y != 0;
  case KK_LOGICAL_OR: return x != 0 || y != 0;
  default: return 0;
  }
}

kiln_status kk_binary_ref(kk_binary_op op, const kk_view *a, const kk_view *b, const kk_view *out) {
  kk_view ab = kk_broadcast_view(a, out), bb = kk_broadcast_view(b, out);
  int64_t n = kk_numel(out);
  bool logical = op == KK_LOGICAL_AND || op == KK_LOGICAL_OR;
  for (int64_t i = 0; i < n; i++) {
    const char *pa = kk_element(&ab, i), *pb = kk_element(&bb, i);
    char *po = kk_element(out, i);
    if (logical || kk_is_float(a->dtype)) {
      double x = kk_get_f64(a->dtype, pa), y = kk_get_f64(b->dtype, pb);
      kk_set_f64(out->dtype, po, binary_ref_f64(op, x, y));
    } else {
      int64_t r;
      if (!binary_int(op, kk_get_i64(a->dtype, pa), kk_get_i64(b->dtype, pb), &r)) return int_failure(op);
      kk_set_i64(out->dtype, po, r);
    }
  }
  return KILN_OK;
}

/* ------------------------------------------------------------------ where */

typedef struct {
  kiln_dtype cond_t;
  size_t es;
} where_ctx;

static void where_inner(int64_t n, char **p, const int64_t *s, void *ctx) {
  const where_ctx *w = ctx;
  for (int64_t i = 0; i < n; i++) {
    bool take_a = truthy(w->cond_t, p[0] + i * s[0]);
    memcpy(p[3] + i * s[3], take_a ? p[1] + i * s[1] : p[2] + i * s[2], w->es);
  }
}

static void where_f32_inner(int64_t n, char **p, const int64_t *s, void *ctx) {
  (void)ctx;
  for (int64_t i = 0; i < n; i++) {
    float x = *(const float *)(p[1] + i * s[1]), y = *(const float *)(p[2] + i * s[2]);
    *(float *)(p[3] + i * s[3]) = p[0][i * s[0]] ? x : y;
  }
}

kiln_status kk_where(const kk_view *cond, const kk_view *a, const kk_view *b, const kk_view *out) {
  kk_view cb = kk_broadcast_view(cond, out), ab = kk_broadcast_view(a, out), bb = kk_broadcast_view(b, out);
  const kk_view *v[4] = {&cb, &ab, &bb, out};
  if (cond->dtype == KILN_BOOL && out->dtype == KILN_F32) {
    foreach_parallel(4, v, out->shape, out->ndim, where_f32_inner, NULL);
  } else {
    where_ctx w = {cond->dtype, kiln_dtype_size(out->dtype)};
    foreach_parallel(4, v, out->shape, out->ndim, where_inner, &w);
  }
  return KILN_OK;
}

kiln_status kk_where_ref(const kk_view *cond, const kk_view *a, const kk_view *b, const kk_view *out) {
  kk_view cb = kk_broadcast_view(cond, out), ab = kk_broadcast_view(a, out), bb = kk_broadcast_view(b, out);
  int64_t n = kk_numel(out);
  size_t es = kiln_dtype_size(out->dtype);
  for (int64_t i = 0; i < n; i++) {
    double cv = kk_get_f64(cond->dtype, kk_element(&cb, i));
    memcpy(kk_element(out, i), cv != 0 ? kk_element(&ab, i) : kk_element(&bb, i), es);
  }
  return KILN_OK;
}

/* ------------------------------------------------------------------ fused */

typedef struct {
  const kk_fused_program *prog;
  kiln_dtype dt;
} fused_ctx;

enum { FUSED_CHUNK = 128 };

static void fused_inner(int64_t n, char **ptrs, const int64_t *strides, void *ctx) {
  const fused_ctx *c = ctx;
  const kk_fused_program *p = c->prog;
  const int64_t es = (int64_t)kiln_dtype_size(c->dt);
  _Alignas(64) char regs[KK_FUSED_MAX_INSTR][FUSED_CHUNK * sizeof(double)];
  for (int64_t i0 = 0; i0 < n; i0 += FUSED_CHUNK) {
    int64_t m = n - i0 < FUSED_CHUNK ? n - i0 : FUSED_CHUNK;
    for (int k = 0; k < p->n_instr; k++) {
      const kk_fused_instr *ins = &p->instr[k];
      _Alignas(8) char scalar[8];
      kk_set_f64(c->dt, scalar, ins->scalar);
      char *op_ptr[3];
      int64_t op_stride[3];
      for (int j = 0; j < (ins->binary ? 2 : 1); j++) {
        int src = ins->src[j];
        if (src >= 0) {
          op_ptr[j] = ptrs[src] + i0 * strides[src];
          op_stride[j] = strides[src];
        } else if (src == KK_FUSED_SCALAR) {
          op_ptr[j] = scalar;
          op_stride[j] = 0;
        } else {
          op_ptr[j] = regs[-1 - src];
          op_stride[j] = es;
        }
      }
      int o = ins->binary ? 2 : 1;
      bool last = k == p->n_instr - 1;
      op_ptr[o] = last ? ptrs[p->n_inputs] + i0 * strides[p->n_inputs] : regs[k];
      op_stride[o] = last ? strides[p->n_inputs] : es;
      if (ins->binary) {
        binary_ctx bc = {.op = (kk_binary_op)ins->op, .in_t = c->dt, .out_t = c->dt};
        atomic_init(&bc.failed, false);
        (c->dt == KILN_F32 ? binary_f32_inner : binary_f64_inner)(m, op_ptr, op_stride, &bc);
      } else {
        unary_ctx uc = {(kk_unary_op)ins->op, ins->a, ins->b};
        (c->dt == KILN_F32 ? unary_f32_inner : unary_f64_inner)(m, op_ptr, op_stride, &uc);
      }
    }
  }
}

void kk_fused(const kk_fused_program *prog, const kk_view *in, const kk_view *out) {
  kk_view b[KK_FUSED_MAX_INPUTS];
  const kk_view *v[KK_FUSED_MAX_INPUTS + 1];
  for (int i = 0; i < prog->n_inputs; i++) {
    b[i] = kk_broadcast_view(&in[i], out);
    v[i] = &b[i];
  }
  v[prog->n_inputs] = out;
  fused_ctx c = {prog, out->dtype};
  foreach_parallel(prog->n_inputs + 1, v, out->shape, out->ndim, fused_inner, &c);
}
