/* Elementwise ops: every unary op against libm in double, binary ops with
 * NumPy broadcasting against naive index arithmetic written here, integer
 * wrap-around and truncating division, NaN rules, comparisons and where.
 * Each case runs the optimised kernel and the reference kernel
 * (kiln_use_reference_kernels) on several layouts: contiguous, transposed
 * storage, a negative-step slice, a step-2 slice, plus 0-d and empty. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"

/* ------------------------------------------------------------------ helpers */

/* Stores v (row-major) in dtype dt; rounds v in place to what the dtype holds. */
static void *pack(kiln_dtype dt, double *v, int64_t n) {
  size_t es = kiln_dtype_size(dt);
  char *buf = calloc((size_t)(n ? n : 1), es);
  for (int64_t i = 0; i < n; i++) {
    char *p = buf + i * (int64_t)es;
    switch (dt) {
    case KILN_F32: { float f = (float)v[i]; memcpy(p, &f, 4); v[i] = f; break; }
    case KILN_F64: memcpy(p, &v[i], 8); break;
    case KILN_I32: { int32_t x = (int32_t)v[i]; memcpy(p, &x, 4); v[i] = x; break; }
    case KILN_I64: { int64_t x = (int64_t)v[i]; memcpy(p, &x, 8); v[i] = (double)x; break; }
    case KILN_U8: *p = (char)(unsigned char)v[i]; v[i] = (unsigned char)*p; break;
    default: *p = v[i] != 0; v[i] = *p; break;
    }
  }
  return buf;
}

static kiln_tensor *make(kiln_dtype dt, int nd, const int64_t *shape, double *v) {
  void *buf = pack(dt, v, tu_numel(nd, shape));
  kiln_tensor *t = kiln_from_data(dt, nd, shape, buf);
  free(buf);
  return t;
}

/* The tensor with logical values v in one of four layouts:
 * 0 contiguous, 1 transposed storage, 2 reversed storage read with step -1
 * along axis 0, 3 every other element of a doubled last axis. */
enum { N_LAYOUTS = 4 };
static kiln_tensor *make_layout(kiln_dtype dt, int nd, const int64_t *shape, double *v, int layout) {
  kiln_tensor *c = make(dt, nd, shape, v);
  if (layout == 0 || nd == 0) return c;
  if (layout == 1) {
    kiln_tensor *r = tu_noncontiguous(c);
    kiln_tensor_release(c);
    return r;
  }
  kiln_tensor_release(c);
  int64_t n = tu_numel(nd, shape);
  int64_t inner = n && shape[0] ? n / shape[0] : 0;
  if (layout == 2) {
    double *rv = malloc((size_t)(n ? n : 1) * sizeof *rv);
    for (int64_t i = 0; i < shape[0]; i++)
      for (int64_t j = 0; j < inner; j++) rv[(shape[0] - 1 - i) * inner + j] = v[i * inner + j];
    kiln_tensor *st = make(dt, nd, shape, rv);
    free(rv);
    kiln_tensor *r = kiln_slice(st, 0, KILN_END, KILN_END, -1);
    kiln_tensor_release(st);
    return r;
  }
  int64_t big[KILN_MAX_DIMS];
  memcpy(big, shape, (size_t)nd * sizeof *big);
  big[nd - 1] *= 2;
  double *bv = calloc((size_t)(2 * n + 1), sizeof *bv);
  for (int64_t i = 0; i < n; i++) bv[2 * i] = v[i], bv[2 * i + 1] = -77;
  kiln_tensor *st = make(dt, nd, big, bv);
  free(bv);
  kiln_tensor *r = kiln_slice(st, nd - 1, 0, KILN_END, 2);
  kiln_tensor_release(st);
  return r;
}

/* Exact int64 values of an integer or bool tensor. */
static int64_t *int_values(const kiln_tensor *t) {
  int64_t n = kiln_tensor_numel(t);
  size_t es = kiln_dtype_size(kiln_tensor_dtype(t));
  char *raw = malloc((size_t)(n ? n : 1) * es);
  int64_t *out = malloc((size_t)(n ? n : 1) * sizeof *out);
  assert_int_equal(kiln_tensor_copy_to(t, raw, (size_t)n * es), KILN_OK);
  for (int64_t i = 0; i < n; i++) {
    const char *p = raw + i * (int64_t)es;
    switch (kiln_tensor_dtype(t)) {
    case KILN_I32: { int32_t x; memcpy(&x, p, 4); out[i] = x; break; }
    case KILN_I64: memcpy(&out[i], p, 8); break;
    case KILN_U8: out[i] = (unsigned char)*p; break;
    default: out[i] = *p; break;
    }
  }
  free(raw);
  return out;
}

static bool ints_equal(const char *label, const kiln_tensor *t, const int64_t *want, int64_t n) {
  if (!tu_ok(label, t)) return false;
  if (kiln_tensor_numel(t) != n) {
    fprintf(stderr, "%s: %lld elements, expected %lld\n", label, (long long)kiln_tensor_numel(t), (long long)n);
    return false;
  }
  int64_t *got = int_values(t);
  bool ok = true;
  for (int64_t i = 0; i < n && ok; i++)
    if (got[i] != want[i]) {
      fprintf(stderr, "%s: element %lld: got %lld, expected %lld (exact)\n", label, (long long)i, (long long)got[i],
              (long long)want[i]);
      ok = false;
    }
  free(got);
  return ok;
}

/* Wraps an int64 to dtype dt as fixed-width two's complement does. */
static int64_t wrap_to(kiln_dtype dt, int64_t x) {
  switch (dt) {
  case KILN_I32: return (int32_t)(uint32_t)(uint64_t)x;
  case KILN_U8: return (uint8_t)(uint64_t)x;
  case KILN_BOOL: return x != 0;
  default: return x;
  }
}

static void assert_shape_is(const kiln_tensor *t, int nd, const int64_t *shape) {
  TU_OK(t);
  assert_int_equal(kiln_tensor_ndim(t), nd);
  for (int i = 0; i < nd; i++) assert_int_equal(kiln_tensor_shape(t)[i], shape[i]);
}

/* ------------------------------------------------------------------ unary */

typedef enum {
  U_NEG, U_ABS, U_EXP, U_LOG, U_SQRT, U_RSQRT, U_SQUARE, U_SIN, U_COS, U_TANH, U_SIGMOID, U_RELU, U_LEAKY,
  U_GELU, U_SOFTPLUS, U_SIGN, U_FLOOR, U_CEIL, U_ROUND, U_CLIP, U_NOT, U_ERF, U_COUNT
} unary_id;
static const char *const unary_names[U_COUNT] = {
    "neg", "abs", "exp", "log", "sqrt", "rsqrt", "square", "sin", "cos", "tanh", "sigmoid",
    "relu", "leaky_relu", "gelu", "softplus", "sign", "floor", "ceil", "round", "clip", "logical_not", "erf"};

#define LEAKY_SLOPE 0.1
#define CLIP_LO (-0.5)
#define CLIP_HI 0.7

static kiln_tensor *apply_unary(unary_id op, kiln_tensor *x) {
  switch (op) {
  case U_NEG: return kiln_neg(x);
  case U_ABS: return kiln_abs(x);
  case U_EXP: return kiln_exp(x);
  case U_LOG: return kiln_log(x);
  case U_SQRT: return kiln_sqrt(x);
  case U_RSQRT: return kiln_rsqrt(x);
  case U_SQUARE: return kiln_square(x);
  case U_SIN: return kiln_sin(x);
  case U_COS: return kiln_cos(x);
  case U_TANH: return kiln_tanh(x);
  case U_SIGMOID: return kiln_sigmoid(x);
  case U_RELU: return kiln_relu(x);
  case U_LEAKY: return kiln_leaky_relu(x, LEAKY_SLOPE);
  case U_GELU: return kiln_gelu(x);
  case U_SOFTPLUS: return kiln_softplus(x);
  case U_SIGN: return kiln_sign(x);
  case U_FLOOR: return kiln_floor(x);
  case U_CEIL: return kiln_ceil(x);
  case U_ROUND: return kiln_round(x);
  case U_CLIP: return kiln_clip(x, CLIP_LO, CLIP_HI);
  case U_ERF: return kiln_erf(x);
  default: return kiln_logical_not(x);
  }
}

/* Round half to even, from the exact fraction v - floor(v). */
static double round_half_even(double v) {
  if (!isfinite(v)) return v;
  double f = floor(v), d = v - f;
  if (d > 0.5) return f + 1;
  if (d < 0.5) return f;
  return fmod(f, 2.0) == 0 ? f : f + 1;
}

static double unary_expect(unary_id op, double v) {
  switch (op) {
  case U_NEG: return -v;
  case U_ABS: return fabs(v);
  case U_EXP: return exp(v);
  case U_LOG: return log(v);
  case U_SQRT: return sqrt(v);
  case U_RSQRT: return 1.0 / sqrt(v);
  case U_SQUARE: return v * v;
  case U_SIN: return sin(v);
  case U_COS: return cos(v);
  case U_TANH: return tanh(v);
  case U_SIGMOID: return 1.0 / (1.0 + exp(-v));
  case U_RELU: return isnan(v) ? v : v > 0 ? v : 0;
  case U_LEAKY: return isnan(v) ? v : v > 0 ? v : LEAKY_SLOPE * v;
  case U_GELU: return 0.5 * v * erfc(-v / sqrt(2.0));
  case U_SOFTPLUS: return isnan(v) ? v : fmax(v, 0) + log1p(exp(-fabs(v)));
  case U_SIGN: return isnan(v) ? v : v > 0 ? 1 : v < 0 ? -1 : 0;
  case U_FLOOR: return floor(v);
  case U_CEIL: return ceil(v);
  case U_ROUND: return round_half_even(v);
  case U_CLIP: return isnan(v) ? v : v < CLIP_LO ? CLIP_LO : v > CLIP_HI ? CLIP_HI : v;
  case U_ERF: return erf(v);
  default: return v == 0;
  }
}

/* Tolerances. float32 results are one rounding (or a few, for composite
 * formulas such as sigmoid) away from the double value of the float input:
 * rtol 1e-6 is ~8 ulp. gelu and tanh get an absolute 1e-6 because the
 * float32 formula 0.5x(1+erf) cancels for negative x (error ~|x| ulp(1)).
 * float64: rtol 1e-13, atol 1e-15 for the same cancellation. clip compares
 * against the double bounds, which float32 rounds: 1e-7 relative. */
static void unary_tol(unary_id op, kiln_dtype dt, double *rtol, double *atol) {
  if (dt == KILN_F64) {
    /* softplus: absolute 1e-15 here (log(1 + e^x) is fine in absolute
     * terms); its relative accuracy in the tail has its own test. */
    *rtol = 1e-13, *atol = op == U_GELU || op == U_SIN || op == U_COS || op == U_SOFTPLUS ? 1e-15 : 0;
    return;
  }
  *rtol = 1e-6;
  *atol = op == U_GELU || op == U_TANH || op == U_SIN || op == U_COS ? 1e-6 : 1e-30;
}

static void domain(unary_id op, double *lo, double *hi) {
  *lo = -5, *hi = 5;
  if (op == U_LOG || op == U_SQRT || op == U_RSQRT) *lo = 0.05, *hi = 10;
  if (op == U_EXP || op == U_SOFTPLUS || op == U_SIGMOID) *lo = -20, *hi = 20;
}

static void run_unary_case(unary_id op, kiln_dtype dt, int nd, const int64_t *shape, int layout, uint64_t seed) {
  int64_t n = tu_numel(nd, shape);
  double *v = malloc((size_t)(n ? n : 1) * sizeof *v), *want = malloc((size_t)(n ? n : 1) * sizeof *want);
  double lo, hi;
  domain(op, &lo, &hi);
  for (int64_t i = 0; i < n; i++) {
    double u = tu_rng_unit(&seed);
    /* Quarter steps for the rounding family and the sign-like ops, so ties,
     * zeros and exact integers occur. */
    bool quarter = op == U_FLOOR || op == U_CEIL || op == U_ROUND || op == U_SIGN || op == U_RELU || op == U_NOT ||
                   op == U_CLIP || op == U_LEAKY || op == U_ABS;
    v[i] = quarter ? floor((lo + (hi - lo) * u) * 4) / 4 : lo + (hi - lo) * u;
  }
  kiln_tensor *x = make_layout(dt, nd, shape, v, layout);
  TU_OK(x);
  for (int64_t i = 0; i < n; i++) want[i] = unary_expect(op, v[i]);
  double rtol, atol;
  unary_tol(op, dt, &rtol, &atol);
  for (int ref = 0; ref < 2; ref++) {
    kiln_use_reference_kernels(ref);
    kiln_tensor *y = apply_unary(op, x);
    kiln_use_reference_kernels(false);
    char label[160];
    snprintf(label, sizeof label, "%s %s %s nd=%d layout=%d", ref ? "reference" : "optimised", unary_names[op],
             kiln_dtype_name(dt), nd, layout);
    assert_shape_is(y, nd, shape);
    assert_int_equal(kiln_tensor_dtype(y), op == U_NOT ? KILN_BOOL : dt);
    assert_true(tu_close_values(label, y, want, n, rtol, atol));
    kiln_tensor_release(y);
  }
  kiln_tensor_release(x);
  free(v);
  free(want);
}

static void unary_float_all_ops(void **state) {
  (void)state;
  static const int64_t s3[3] = {3, 4, 5}, s1[1] = {37}, sodd[3] = {2, 1, 33}, sempty[2] = {0, 3};
  for (int op = 0; op < U_COUNT; op++)
    for (int dt = KILN_F32; dt <= KILN_F64; dt++) {
      uint64_t seed = (uint64_t)(op * 100 + dt);
      for (int layout = 0; layout < N_LAYOUTS; layout++) {
        run_unary_case((unary_id)op, (kiln_dtype)dt, 3, s3, layout, seed);
        run_unary_case((unary_id)op, (kiln_dtype)dt, 1, s1, layout, seed + 1);
        run_unary_case((unary_id)op, (kiln_dtype)dt, 3, sodd, layout, seed + 2);
      }
      run_unary_case((unary_id)op, (kiln_dtype)dt, 0, NULL, 0, seed + 3);
      run_unary_case((unary_id)op, (kiln_dtype)dt, 0, NULL, 1, seed + 4);
      run_unary_case((unary_id)op, (kiln_dtype)dt, 2, sempty, 0, seed + 5);
    }
}

/* A broadcast view (stride 0) as input: the output is full-size. */
static void unary_broadcast_input(void **state) {
  (void)state;
  double v[5] = {-2, -0.5, 0, 0.5, 3};
  kiln_tensor *row = make(KILN_F32, 2, (int64_t[]){1, 5}, v);
  kiln_tensor *b = kiln_broadcast_to(row, 3, (int64_t[]){2, 3, 5});
  double want[30];
  for (int i = 0; i < 30; i++) want[i] = exp(v[i % 5]);
  for (int ref = 0; ref < 2; ref++) {
    kiln_use_reference_kernels(ref);
    kiln_tensor *y = kiln_exp(b);
    kiln_use_reference_kernels(false);
    assert_shape_is(y, 3, (int64_t[]){2, 3, 5});
    assert_true(kiln_tensor_is_contiguous(y));
    assert_true(tu_close_values("exp of broadcast view", y, want, 30, 1e-6, 0));
    kiln_tensor_release(y);
  }
  kiln_tensor_release(row);
  kiln_tensor_release(b);
}

/* NaN, infinities and signed zeros. gelu(-inf) is left out: torch gives
 * nan, the limit is 0. clip has its own test. */
static void unary_special_values(void **state) {
  (void)state;
  double specials[7] = {NAN, INFINITY, -INFINITY, 0.0, -0.0, 1.0, -1.0};
  for (int op = 0; op < U_COUNT; op++) {
    if (op == U_CLIP) continue;
    for (int dt = KILN_F32; dt <= KILN_F64; dt++) {
      double v[7], want[7];
      memcpy(v, specials, sizeof v);
      int n = op == U_GELU ? 1 : 7;
      if (op == U_GELU) v[0] = NAN;
      if (op == U_GELU) n = 1;
      kiln_tensor *x = make((kiln_dtype)dt, 1, (int64_t[]){n}, v);
      for (int i = 0; i < n; i++) want[i] = unary_expect((unary_id)op, v[i]);
      for (int ref = 0; ref < 2; ref++) {
        kiln_use_reference_kernels(ref);
        kiln_tensor *y = apply_unary((unary_id)op, x);
        kiln_use_reference_kernels(false);
        char label[128];
        snprintf(label, sizeof label, "%s %s(specials) %s", ref ? "reference" : "optimised", unary_names[op],
                 kiln_dtype_name((kiln_dtype)dt));
        assert_true(tu_close_values(label, y, want, n, 1e-6, 1e-30));
        kiln_tensor_release(y);
      }
      kiln_tensor_release(x);
    }
  }
}

/* numpy.clip propagates NaN: np.clip(nan, -1, 1) is nan. */
static void unary_clip_nan_propagates(void **state) {
  (void)state;
  for (int dt = KILN_F32; dt <= KILN_F64; dt++) {
    double v[4] = {NAN, -5, 5, 0.5}, want[4] = {NAN, -1, 1, 0.5};
    kiln_tensor *x = make((kiln_dtype)dt, 1, (int64_t[]){4}, v);
    for (int ref = 0; ref < 2; ref++) {
      kiln_use_reference_kernels(ref);
      kiln_tensor *y = kiln_clip(x, -1, 1);
      kiln_use_reference_kernels(false);
      assert_true(tu_close_values(ref ? "reference clip(nan)" : "optimised clip(nan)", y, want, 4, 0, 0));
      kiln_tensor_release(y);
    }
    kiln_tensor_release(x);
  }
}

/* Half-to-even rounding on float64 inputs where x + 0.5 is inexact: the
 * largest double below 0.5 (rounds to 0) and odd integers above 2^52 (already
 * integers). */
static void unary_round_float64_hard_cases(void **state) {
  (void)state;
  double v[10] = {0.49999999999999994, -0.49999999999999994, 4503599627370497.0, -4503599627370497.0,
                  2.5, -2.5, 3.5, 1e300, 0.5000000000000001, 1.4999999999999998};
  double want[10];
  for (int i = 0; i < 10; i++) want[i] = round_half_even(v[i]);
  assert_true(want[0] == 0 && want[2] == 4503599627370497.0 && want[4] == 2 && want[6] == 4);
  kiln_tensor *x = make(KILN_F64, 1, (int64_t[]){10}, v);
  for (int ref = 0; ref < 2; ref++) {
    kiln_use_reference_kernels(ref);
    kiln_tensor *y = kiln_round(x);
    kiln_use_reference_kernels(false);
    assert_true(tu_close_values(ref ? "reference round f64" : "optimised round f64", y, want, 10, 0, 0));
    kiln_tensor_release(y);
  }
  kiln_tensor_release(x);
}

/* softplus(x) for very negative x is e^x to full relative precision
 * (torch and numpy's logaddexp(0, x) give it); log(1 + e^x) evaluated
 * naively rounds 1 + e^x and returns 0 below x ~ -37. */
static void unary_softplus_tail_relative_accuracy(void **state) {
  (void)state;
  double v[3] = {-40, -30, -745}, want[3];
  for (int i = 0; i < 3; i++) want[i] = log1p(exp(v[i]));
  assert_true(want[0] > 4e-18);
  kiln_tensor *x = make(KILN_F64, 1, (int64_t[]){3}, v);
  for (int ref = 0; ref < 2; ref++) {
    kiln_use_reference_kernels(ref);
    kiln_tensor *y = kiln_softplus(x);
    kiln_use_reference_kernels(false);
    assert_true(tu_close_values(ref ? "reference softplus tail" : "optimised softplus tail", y, want, 3, 1e-12, 0));
    kiln_tensor_release(y);
  }
  kiln_tensor_release(x);
}

/* Integer unary ops wrap like numpy's fixed-width integers. */
static void unary_integer_ops(void **state) {
  (void)state;
  static const double i32v[10] = {-2147483648.0, -70000, -3, -1, 0, 1, 2, 46341, 100, 2147483647.0};
  static const double i64v[6] = {-9223372036854775808.0, -5, 0, 7, 3037000500.0, 1e18};
  static const double u8v[6] = {0, 1, 3, 128, 200, 255};
  const struct { kiln_dtype dt; const double *v; int n; } cases[3] = {
      {KILN_I32, i32v, 10}, {KILN_I64, i64v, 6}, {KILN_U8, u8v, 6}};
  const unary_id ops[6] = {U_NEG, U_ABS, U_SQUARE, U_SIGN, U_RELU, U_CLIP};
  for (int c = 0; c < 3; c++)
    for (int k = 0; k < 6; k++)
      for (int layout = 0; layout < N_LAYOUTS; layout++) {
        double v[10];
        int n = cases[c].n;
        memcpy(v, cases[c].v, (size_t)n * sizeof *v);
        kiln_tensor *x = make_layout(cases[c].dt, 1, (int64_t[]){n}, v, layout);
        int64_t want[10];
        for (int i = 0; i < n; i++) {
          int64_t a = cases[c].dt == KILN_I64 ? (int64_t)cases[c].v[i] : (int64_t)v[i];
          if (cases[c].dt == KILN_I64 && i == 0) a = INT64_MIN;
          uint64_t ua = (uint64_t)a;
          int64_t r;
          switch (ops[k]) {
          case U_NEG: r = (int64_t)(0 - ua); break;
          case U_ABS: r = a < 0 ? (int64_t)(0 - ua) : a; break;
          case U_SQUARE: r = (int64_t)(ua * ua); break;
          case U_SIGN: r = (a > 0) - (a < 0); break;
          case U_RELU: r = a > 0 ? a : 0; break;
          default: r = a < -2 ? -2 : a > 100 ? 100 : a; break;
          }
          want[i] = wrap_to(cases[c].dt, r);
        }
        for (int ref = 0; ref < 2; ref++) {
          kiln_use_reference_kernels(ref);
          kiln_tensor *y = ops[k] == U_CLIP ? kiln_clip(x, -2, 100) : apply_unary(ops[k], x);
          kiln_use_reference_kernels(false);
          char label[128];
          snprintf(label, sizeof label, "%s %s %s layout %d", ref ? "reference" : "optimised", unary_names[ops[k]],
                   kiln_dtype_name(cases[c].dt), layout);
          assert_int_equal(kiln_tensor_dtype(y), cases[c].dt);
          assert_true(ints_equal(label, y, want, n));
          kiln_tensor_release(y);
        }
        kiln_tensor_release(x);
      }
}

/* clip with an infinite bound on integers: the bound is no bound. */
static void unary_clip_int_infinite_bound(void **state) {
  (void)state;
  double v[4] = {-5, 3, 10, 2000000000};
  kiln_tensor *x = make(KILN_I32, 1, (int64_t[]){4}, v);
  const int64_t want_hi[4] = {0, 3, 10, 2000000000}, want_lo[4] = {-5, 3, 4, 4};
  for (int ref = 0; ref < 2; ref++) {
    kiln_use_reference_kernels(ref);
    kiln_tensor *a = kiln_clip(x, 0, INFINITY);
    kiln_tensor *b = kiln_clip(x, -INFINITY, 4);
    kiln_use_reference_kernels(false);
    assert_true(ints_equal(ref ? "reference clip(0, inf)" : "optimised clip(0, inf)", a, want_hi, 4));
    assert_true(ints_equal(ref ? "reference clip(-inf, 4)" : "optimised clip(-inf, 4)", b, want_lo, 4));
    kiln_tensor_release(a);
    kiln_tensor_release(b);
  }
  kiln_tensor_release(x);
}

static void unary_logical_not_every_dtype(void **state) {
  (void)state;
  for (int dt = 0; dt < KILN_DTYPE_COUNT; dt++) {
    double v[6] = {0, 1, 2, 0, 5, 1};
    if (dt == KILN_F32 || dt == KILN_F64) v[2] = NAN, v[3] = -0.0, v[4] = -3.5;
    kiln_tensor *x = make_layout((kiln_dtype)dt, 2, (int64_t[]){2, 3}, v, 1);
    int64_t want[6];
    for (int i = 0; i < 6; i++) want[i] = !(v[i] != 0);
    for (int ref = 0; ref < 2; ref++) {
      kiln_use_reference_kernels(ref);
      kiln_tensor *y = kiln_logical_not(x);
      kiln_use_reference_kernels(false);
      assert_int_equal(kiln_tensor_dtype(y), KILN_BOOL);
      assert_true(ints_equal(kiln_dtype_name((kiln_dtype)dt), y, want, 6));
      kiln_tensor_release(y);
    }
    kiln_tensor_release(x);
  }
}

/* ------------------------------------------------------------------ binary */

typedef enum {
  B_ADD, B_SUB, B_MUL, B_DIV, B_POW, B_MAX, B_MIN, B_EQ, B_NE, B_LT, B_LE, B_GT, B_GE, B_AND, B_OR, B_COUNT
} binary_id;
static const char *const binary_names[B_COUNT] = {"add",  "sub",   "mul",        "div",     "pow",
                                                  "maximum", "minimum", "equal", "not_equal", "less",
                                                  "less_equal", "greater", "greater_equal", "logical_and",
                                                  "logical_or"};

static kiln_tensor *apply_binary(binary_id op, kiln_tensor *a, kiln_tensor *b) {
  kiln_tensor *(*const fns[B_COUNT])(kiln_tensor *, kiln_tensor *) = {
      kiln_add,  kiln_sub,        kiln_mul,     kiln_div,          kiln_pow,         kiln_maximum, kiln_minimum,
      kiln_equal, kiln_not_equal, kiln_less,    kiln_less_equal,   kiln_greater,     kiln_greater_equal,
      kiln_logical_and, kiln_logical_or};
  return fns[op](a, b);
}

static bool is_compare(binary_id op) { return op >= B_EQ; }

static double binary_expect_f(binary_id op, double x, double y) {
  switch (op) {
  case B_ADD: return x + y;
  case B_SUB: return x - y;
  case B_MUL: return x * y;
  case B_DIV: return x / y;
  case B_POW: return pow(x, y);
  case B_MAX: return isnan(x) || isnan(y) ? NAN : x > y ? x : y;
  case B_MIN: return isnan(x) || isnan(y) ? NAN : x < y ? x : y;
  case B_EQ: return x == y;
  case B_NE: return x != y;
  case B_LT: return x < y;
  case B_LE: return x <= y;
  case B_GT: return x > y;
  case B_GE: return x >= y;
  case B_AND: return x != 0 && y != 0;
  default: return x != 0 || y != 0;
  }
}

static int64_t binary_expect_i(binary_id op, int64_t x, int64_t y) {
  uint64_t ux = (uint64_t)x, uy = (uint64_t)y;
  switch (op) {
  case B_ADD: return (int64_t)(ux + uy);
  case B_SUB: return (int64_t)(ux - uy);
  case B_MUL: return (int64_t)(ux * uy);
  case B_DIV: return x / y; /* C truncates toward zero */
  case B_POW: {
    int64_t r = 1;
    for (int64_t e = 0; e < y; e++) r = (int64_t)((uint64_t)r * ux);
    return r;
  }
  default: return (int64_t)binary_expect_f(op, (double)x, (double)y);
  }
}

/* Out-of-shape index arithmetic: the flat index of operand element feeding
 * out element `flat` under NumPy broadcasting. */
static int64_t bcast_index(int64_t flat, int ond, const int64_t *oshape, int nd, const int64_t *shape) {
  int64_t idx = 0, scale = 1;
  for (int d = ond - 1; d >= 0; d--) {
    int64_t c = flat % oshape[d];
    flat /= oshape[d];
    int j = d - (ond - nd);
    if (j < 0) continue;
    idx += (shape[j] == 1 ? 0 : c) * scale;
    scale *= shape[j];
  }
  return idx;
}

static int broadcast_shape(int na, const int64_t *a, int nb, const int64_t *b, int64_t *out) {
  int nd = na > nb ? na : nb;
  for (int d = 0; d < nd; d++) {
    int ja = d - (nd - na), jb = d - (nd - nb);
    int64_t ea = ja >= 0 ? a[ja] : 1, eb = jb >= 0 ? b[jb] : 1;
    out[d] = ea == 1 ? eb : ea;
  }
  return nd;
}

typedef struct {
  int na, nb;
  int64_t a[4], b[4];
} shape_pair;

static const shape_pair pairs[] = {
    {3, 2, {2, 1, 3}, {4, 1}}, /* -> [2, 4, 3] */
    {1, 2, {3}, {2, 3}},
    {0, 2, {0}, {2, 3}},      /* 0-d with 2-D */
    {2, 0, {2, 3}, {0}},
    {0, 0, {0}, {0}},         /* 0-d with 0-d */
    {2, 2, {0, 3}, {1, 3}},   /* empty */
    {2, 2, {4, 5}, {4, 5}},
    {3, 3, {2, 1, 17}, {1, 3, 17}},
    {2, 1, {3, 1}, {1}},
};

static void value_range(binary_id op, kiln_dtype dt, bool second, double *lo, double *hi) {
  bool isf = dt == KILN_F32 || dt == KILN_F64;
  *lo = dt == KILN_U8 ? 0 : -6, *hi = 6;
  if (op == B_POW) {
    if (isf) *lo = second ? -3 : 0.1, *hi = 3;
    else *lo = second ? 0 : (dt == KILN_U8 ? 0 : -4), *hi = second ? 5 : 4;
  }
}

static void run_binary_case(binary_id op, kiln_dtype dt, const shape_pair *sp, int la, int lb, uint64_t seed) {
  int64_t oshape[4];
  int ond = broadcast_shape(sp->na, sp->a, sp->nb, sp->b, oshape);
  int64_t na = tu_numel(sp->na, sp->a), nb = tu_numel(sp->nb, sp->b), no = tu_numel(ond, oshape);
  double *av = malloc((size_t)(na + 1) * 8), *bv = malloc((size_t)(nb + 1) * 8);
  bool isf = dt == KILN_F32 || dt == KILN_F64;
  double lo, hi;
  value_range(op, dt, false, &lo, &hi);
  /* Integers (also for floats of the comparison and min/max ops, so ties occur). */
  bool whole = !isf || is_compare(op) || op == B_MAX || op == B_MIN;
  for (int64_t i = 0; i < na; i++) {
    double u = lo + (hi - lo) * tu_rng_unit(&seed);
    av[i] = whole ? floor(u) : u;
  }
  value_range(op, dt, true, &lo, &hi);
  for (int64_t i = 0; i < nb; i++) {
    double u = lo + (hi - lo) * tu_rng_unit(&seed);
    bv[i] = whole ? floor(u) : u;
    if (op == B_DIV && bv[i] == 0) bv[i] = dt == KILN_U8 ? 3 : -3;
    if (op == B_POW && !isf && bv[i] > 5) bv[i] = 5;
  }
  kiln_tensor *a = make_layout(dt, sp->na, sp->a, av, la);
  kiln_tensor *b = make_layout(dt, sp->nb, sp->b, bv, lb);
  double *want = malloc((size_t)(no + 1) * 8);
  int64_t *iwant = malloc((size_t)(no + 1) * 8);
  for (int64_t i = 0; i < no; i++) {
    double x = av[bcast_index(i, ond, oshape, sp->na, sp->a)], y = bv[bcast_index(i, ond, oshape, sp->nb, sp->b)];
    want[i] = binary_expect_f(op, x, y);
    if (!isf) iwant[i] = is_compare(op) ? (int64_t)want[i] : wrap_to(dt, binary_expect_i(op, (int64_t)x, (int64_t)y));
    else if (is_compare(op)) iwant[i] = (int64_t)want[i];
  }
  /* float32: one rounding of the float operation (pow: powf, ~1 ulp). */
  double rtol = dt == KILN_F32 ? 1e-6 : 1e-14;
  for (int ref = 0; ref < 2; ref++) {
    kiln_use_reference_kernels(ref);
    kiln_tensor *y = apply_binary(op, a, b);
    kiln_use_reference_kernels(false);
    char label[200];
    snprintf(label, sizeof label, "%s %s %s shapes %d-d/%d-d layouts %d/%d", ref ? "reference" : "optimised",
             binary_names[op], kiln_dtype_name(dt), sp->na, sp->nb, la, lb);
    if (!tu_ok(label, y)) fail();
    assert_shape_is(y, ond, oshape);
    assert_int_equal(kiln_tensor_dtype(y), is_compare(op) ? KILN_BOOL : dt);
    if (is_compare(op) || !isf)
      assert_true(ints_equal(label, y, iwant, no));
    else
      assert_true(tu_close_values(label, y, want, no, rtol, 0));
    kiln_tensor_release(y);
  }
  kiln_tensor_release(a);
  kiln_tensor_release(b);
  free(av);
  free(bv);
  free(want);
  free(iwant);
}

static void binary_broadcasting_all_ops(void **state) {
  (void)state;
  const kiln_dtype dts[5] = {KILN_F32, KILN_F64, KILN_I32, KILN_I64, KILN_U8};
  for (int op = 0; op < B_COUNT; op++)
    for (int d = 0; d < 5; d++)
      for (size_t p = 0; p < sizeof pairs / sizeof pairs[0]; p++) {
        uint64_t seed = (uint64_t)(op * 1000 + d * 100 + (int)p);
        for (int la = 0; la < N_LAYOUTS; la++) {
          if (pairs[p].na == 0 && la > 1) continue;
          run_binary_case((binary_id)op, dts[d], &pairs[p], la, 0, seed);
        }
        if (pairs[p].nb > 0) run_binary_case((binary_id)op, dts[d], &pairs[p], 2, 1, seed + 7);
      }
}

/* Broadcast views as operands (stride 0 on the "wrong" side) and both
 * operands the same handle. */
static void binary_broadcast_views(void **state) {
  (void)state;
  double av[4] = {1, 2, 3, 4}, bv[3] = {10, 20, 30};
  kiln_tensor *a = make(KILN_F32, 2, (int64_t[]){4, 1}, av);
  kiln_tensor *b = make(KILN_F32, 1, (int64_t[]){3}, bv);
  kiln_tensor *ab = kiln_broadcast_to(a, 2, (int64_t[]){4, 3});
  kiln_tensor *bb = kiln_broadcast_to(b, 2, (int64_t[]){4, 3});
  double want[12];
  for (int i = 0; i < 4; i++)
    for (int j = 0; j < 3; j++) want[i * 3 + j] = av[i] - bv[j];
  for (int ref = 0; ref < 2; ref++) {
    kiln_use_reference_kernels(ref);
    kiln_tensor *y = kiln_sub(ab, bb);
    kiln_tensor *z = kiln_mul(ab, ab);
    kiln_use_reference_kernels(false);
    assert_true(tu_close_values("sub of broadcast views", y, want, 12, 0, 0));
    double sq[12];
    for (int i = 0; i < 12; i++) sq[i] = av[i / 3] * av[i / 3];
    assert_true(tu_close_values("mul same handle", z, sq, 12, 0, 0));
    kiln_tensor_release(y);
    kiln_tensor_release(z);
  }
  kiln_tensor *rel[] = {a, b, ab, bb};
  for (int i = 0; i < 4; i++) kiln_tensor_release(rel[i]);
}

static void binary_nan_in_maximum_minimum(void **state) {
  (void)state;
  for (int dt = KILN_F32; dt <= KILN_F64; dt++) {
    double av[5] = {NAN, 1, NAN, -INFINITY, 2}, bv[5] = {2, NAN, NAN, 3, -0.5};
    kiln_tensor *a = make((kiln_dtype)dt, 1, (int64_t[]){5}, av);
    kiln_tensor *b = make((kiln_dtype)dt, 1, (int64_t[]){5}, bv);
    double s = NAN;
    kiln_tensor *sn = make((kiln_dtype)dt, 0, NULL, &s);
    double wmax[5] = {NAN, NAN, NAN, 3, 2}, wmin[5] = {NAN, NAN, NAN, -INFINITY, -0.5}, allnan[5] = {NAN, NAN, NAN, NAN, NAN};
    double wmaxs[5] = {NAN, 1, NAN, 0, 2};
    for (int ref = 0; ref < 2; ref++) {
      kiln_use_reference_kernels(ref);
      kiln_tensor *mx = kiln_maximum(a, b), *mn = kiln_minimum(a, b), *mxr = kiln_maximum(b, a);
      kiln_tensor *bs1 = kiln_maximum(b, sn), *bs2 = kiln_minimum(sn, b); /* scalar-operand loops */
      kiln_tensor *ms = kiln_maximum_scalar(a, 0), *mns = kiln_minimum_scalar(b, NAN);
      kiln_use_reference_kernels(false);
      assert_true(tu_close_values("maximum nan", mx, wmax, 5, 0, 0));
      assert_true(tu_close_values("maximum nan swapped", mxr, wmax, 5, 0, 0));
      assert_true(tu_close_values("minimum nan", mn, wmin, 5, 0, 0));
      assert_true(tu_close_values("maximum with nan 0-d", bs1, allnan, 5, 0, 0));
      assert_true(tu_close_values("minimum with nan 0-d first", bs2, allnan, 5, 0, 0));
      assert_true(tu_close_values("maximum_scalar", ms, wmaxs, 5, 0, 0));
      assert_true(tu_close_values("minimum_scalar nan", mns, allnan, 5, 0, 0));
      kiln_tensor *rel[] = {mx, mn, mxr, bs1, bs2, ms, mns};
      for (int i = 0; i < 7; i++) kiln_tensor_release(rel[i]);
    }
    kiln_tensor_release(a);
    kiln_tensor_release(b);
    kiln_tensor_release(sn);
  }
}

static void binary_integer_wrap_and_division(void **state) {
  (void)state;
  for (int ref = 0; ref < 2; ref++) {
    kiln_use_reference_kernels(ref);
    double a32[4] = {2147483647.0, -2147483648.0, 65536, -7};
    double b32[4] = {1, -1, 65536, 2};
    kiln_tensor *a = make(KILN_I32, 1, (int64_t[]){4}, a32), *b = make(KILN_I32, 1, (int64_t[]){4}, b32);
    kiln_tensor *s = kiln_add(a, b), *d = kiln_sub(a, b), *m = kiln_mul(a, b), *q = kiln_div(a, b);
    const int64_t ws[4] = {INT32_MIN, INT32_MAX, 131072, -5}, wd[4] = {INT32_MAX - 1, INT32_MIN + 1, 0, -9};
    const int64_t wm[4] = {INT32_MAX, INT32_MIN, 0, -14}, wq[4] = {INT32_MAX, INT32_MIN, 1, -3};
    assert_true(ints_equal("i32 add wraps", s, ws, 4));
    assert_true(ints_equal("i32 sub wraps", d, wd, 4));
    assert_true(ints_equal("i32 mul wraps", m, wm, 4));
    assert_true(ints_equal("i32 div (INT32_MIN / -1 wraps as numpy)", q, wq, 4));
    kiln_tensor *rel[] = {a, b, s, d, m, q};
    for (int i = 0; i < 6; i++) kiln_tensor_release(rel[i]);

    double n8[4] = {7, -7, 7, -7}, d8[4] = {2, 2, -2, -2};
    kiln_tensor *x = make(KILN_I64, 1, (int64_t[]){4}, n8), *y = make(KILN_I64, 1, (int64_t[]){4}, d8);
    kiln_tensor *t = kiln_div(x, y), *ts = kiln_div_scalar(x, -2);
    const int64_t wt[4] = {3, -3, -3, 3}, wts[4] = {-3, 3, -3, 3};
    assert_true(ints_equal("i64 div truncates", t, wt, 4));
    assert_true(ints_equal("i64 div_scalar truncates", ts, wts, 4));
    kiln_tensor_release(x), kiln_tensor_release(y), kiln_tensor_release(t), kiln_tensor_release(ts);

    double u1[3] = {200, 3, 0}, u2[3] = {100, 5, 1};
    kiln_tensor *p = make(KILN_U8, 1, (int64_t[]){3}, u1), *r = make(KILN_U8, 1, (int64_t[]){3}, u2);
    kiln_tensor *us = kiln_add(p, r), *ud = kiln_sub(p, r), *um = kiln_mul(p, r);
    const int64_t wus[3] = {44, 8, 1}, wud[3] = {100, 254, 255}, wum[3] = {32, 15, 0};
    assert_true(ints_equal("u8 add wraps", us, wus, 3));
    assert_true(ints_equal("u8 sub wraps", ud, wud, 3));
    assert_true(ints_equal("u8 mul wraps", um, wum, 3));
    kiln_tensor *rel2[] = {p, r, us, ud, um};
    for (int i = 0; i < 5; i++) kiln_tensor_release(rel2[i]);

    /* Division by zero fails (it does not trap or return garbage). */
    double z[2] = {1, 0};
    kiln_tensor *num = make(KILN_I32, 1, (int64_t[]){2}, z);
    kiln_tensor *dz = kiln_div(num, num);
    TU_FAILS(dz, KILN_ERR_OUT_OF_RANGE, "div");
    kiln_tensor *dzs = kiln_div_scalar(num, 0);
    TU_FAILS(dzs, KILN_ERR_OUT_OF_RANGE, "zero");
    kiln_tensor_release(num), kiln_tensor_release(dz), kiln_tensor_release(dzs);
    kiln_use_reference_kernels(false);
  }
}

typedef kiln_tensor *(*scalar_fn)(kiln_tensor *, double);

static void binary_scalar_forms(void **state) {
  (void)state;
  const scalar_fn fns[7] = {kiln_add_scalar, kiln_sub_scalar, kiln_mul_scalar, kiln_div_scalar,
                            kiln_pow_scalar, kiln_maximum_scalar, kiln_minimum_scalar};
  const binary_id ids[7] = {B_ADD, B_SUB, B_MUL, B_DIV, B_POW, B_MAX, B_MIN};
  const kiln_dtype dts[4] = {KILN_F32, KILN_F64, KILN_I32, KILN_I64};
  const double scalars[3] = {2, -3, 0.5};
  for (int f = 0; f < 7; f++)
    for (int d = 0; d < 4; d++)
      for (int k = 0; k < 3; k++) {
        bool isf = dts[d] <= KILN_F64;
        double s = scalars[k];
        if (!isf && (k == 2 || (ids[f] == B_POW && s < 0))) continue;
        if (ids[f] == B_POW && isf && k == 2) s = 0.5;
        uint64_t seed = (uint64_t)(f * 31 + d * 7 + k);
        double v[24], want[24];
        int64_t iwant[24];
        for (int i = 0; i < 24; i++) {
          double u = tu_rng_unit(&seed);
          v[i] = ids[f] == B_POW ? (isf ? 0.1 + 3 * u : floor(-4 + 9 * u)) : (isf ? -5 + 10 * u : floor(-50 + 100 * u));
        }
        for (int layout = 0; layout < N_LAYOUTS; layout++) {
          double vv[24];
          memcpy(vv, v, sizeof v);
          kiln_tensor *x = make_layout(dts[d], 3, (int64_t[]){2, 3, 4}, vv, layout);
          for (int i = 0; i < 24; i++) {
            want[i] = binary_expect_f(ids[f], vv[i], s);
            if (!isf) iwant[i] = wrap_to(dts[d], binary_expect_i(ids[f], (int64_t)vv[i], (int64_t)s));
          }
          for (int ref = 0; ref < 2; ref++) {
            kiln_use_reference_kernels(ref);
            kiln_tensor *y = fns[f](x, s);
            kiln_use_reference_kernels(false);
            char label[128];
            snprintf(label, sizeof label, "%s %s_scalar(%g) %s layout %d", ref ? "reference" : "optimised",
                     binary_names[ids[f]], s, kiln_dtype_name(dts[d]), layout);
            assert_int_equal(kiln_tensor_dtype(y), dts[d]);
            if (isf)
              /* The scalar is converted to float32 for float32 x: 0.5 and
               * the integers are exact, so one rounding remains. */
              assert_true(tu_close_values(label, y, want, 24, dts[d] == KILN_F32 ? 1e-6 : 1e-14, 0));
            else
              assert_true(ints_equal(label, y, iwant, 24));
            kiln_tensor_release(y);
          }
          kiln_tensor_release(x);
        }
      }
  /* A 0-d input gives a 0-d output. */
  double one = 3;
  kiln_tensor *z = make(KILN_F32, 0, NULL, &one);
  kiln_tensor *zz = kiln_mul_scalar(z, 2);
  assert_shape_is(zz, 0, NULL);
  double six = 6;
  assert_true(tu_close_values("0-d mul_scalar", zz, &six, 1, 0, 0));
  kiln_tensor_release(z);
  kiln_tensor_release(zz);
}

/* Logical ops take any dtype, mixed, and return bool; comparisons of bools. */
static void binary_logical_mixed_dtypes(void **state) {
  (void)state;
  double a[4] = {0, 2, NAN, -0.0}, b[4] = {1, 0, 3, 1};
  kiln_tensor *x = make(KILN_F32, 1, (int64_t[]){4}, a);
  kiln_tensor *y = make(KILN_I32, 1, (int64_t[]){4}, b);
  double bb[4] = {1, 0, 1, 1};
  kiln_tensor *z = make(KILN_BOOL, 1, (int64_t[]){4}, bb);
  const int64_t wand[4] = {0, 0, 1, 0}, wor[4] = {1, 1, 1, 1}, weq[4] = {1, 1, 1, 1};
  for (int ref = 0; ref < 2; ref++) {
    kiln_use_reference_kernels(ref);
    kiln_tensor *p = kiln_logical_and(x, y), *q = kiln_logical_or(x, y), *e = kiln_equal(z, z);
    kiln_tensor *r = kiln_logical_and(z, y);
    kiln_use_reference_kernels(false);
    assert_true(ints_equal("logical_and f32/i32", p, wand, 4));
    assert_true(ints_equal("logical_or f32/i32", q, wor, 4));
    assert_true(ints_equal("equal bool", e, weq, 4));
    const int64_t wr[4] = {1, 0, 1, 1};
    assert_true(ints_equal("logical_and bool/i32", r, wr, 4));
    assert_int_equal(kiln_tensor_dtype(p), KILN_BOOL);
    kiln_tensor_release(p), kiln_tensor_release(q), kiln_tensor_release(e), kiln_tensor_release(r);
  }
  kiln_tensor_release(x), kiln_tensor_release(y), kiln_tensor_release(z);
}

/* ------------------------------------------------------------------ where */

static void where_three_way_broadcast(void **state) {
  (void)state;
  const int64_t cs[3] = {2, 1, 3}, as[2] = {4, 1};
  const int64_t os[3] = {2, 4, 3};
  const kiln_dtype cdts[3] = {KILN_BOOL, KILN_F32, KILN_I32};
  const kiln_dtype vdts[4] = {KILN_F32, KILN_F64, KILN_I32, KILN_U8};
  for (int c = 0; c < 3; c++)
    for (int v = 0; v < 4; v++)
      for (int layout = 0; layout < N_LAYOUTS; layout++) {
        double cv[6] = {1, 0, 0, 5, 0, 1}, av[4] = {1, 2, 3, 4}, bv = 9;
        if (cdts[c] == KILN_F32) cv[1] = NAN, cv[2] = -0.0; /* NaN is true, -0 false */
        kiln_tensor *cond = make_layout(cdts[c], 3, cs, cv, layout);
        kiln_tensor *a = make_layout(vdts[v], 2, as, av, layout == 1 ? 1 : 0);
        kiln_tensor *b = make(vdts[v], 0, NULL, &bv);
        double want[24];
        for (int64_t i = 0; i < 24; i++) {
          double cc = cv[bcast_index(i, 3, os, 3, cs)];
          want[i] = cc != 0 ? av[bcast_index(i, 3, os, 2, as)] : bv;
        }
        for (int ref = 0; ref < 2; ref++) {
          kiln_use_reference_kernels(ref);
          kiln_tensor *y = kiln_where(cond, a, b);
          kiln_tensor *y2 = kiln_where(cond, b, a); /* swapped branches */
          kiln_use_reference_kernels(false);
          char label[128];
          snprintf(label, sizeof label, "%s where cond %s values %s layout %d", ref ? "reference" : "optimised",
                   kiln_dtype_name(cdts[c]), kiln_dtype_name(vdts[v]), layout);
          assert_shape_is(y, 3, os);
          assert_int_equal(kiln_tensor_dtype(y), vdts[v]);
          assert_true(tu_close_values(label, y, want, 24, 0, 0));
          double want2[24];
          for (int64_t i = 0; i < 24; i++) {
            double cc = cv[bcast_index(i, 3, os, 3, cs)];
            want2[i] = cc != 0 ? bv : av[bcast_index(i, 3, os, 2, as)];
          }
          assert_true(tu_close_values(label, y2, want2, 24, 0, 0));
          kiln_tensor_release(y);
          kiln_tensor_release(y2);
        }
        kiln_tensor_release(cond), kiln_tensor_release(a), kiln_tensor_release(b);
      }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(unary_float_all_ops),
      cmocka_unit_test(unary_broadcast_input),
      cmocka_unit_test(unary_special_values),
      cmocka_unit_test(unary_clip_nan_propagates),
      cmocka_unit_test(unary_round_float64_hard_cases),
      cmocka_unit_test(unary_softplus_tail_relative_accuracy),
      cmocka_unit_test(unary_integer_ops),
      cmocka_unit_test(unary_clip_int_infinite_bound),
      cmocka_unit_test(unary_logical_not_every_dtype),
      cmocka_unit_test(binary_broadcasting_all_ops),
      cmocka_unit_test(binary_broadcast_views),
      cmocka_unit_test(binary_nan_in_maximum_minimum),
      cmocka_unit_test(binary_integer_wrap_and_division),
      cmocka_unit_test(binary_scalar_forms),
      cmocka_unit_test(binary_logical_mixed_dtypes),
      cmocka_unit_test(where_three_way_broadcast),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
