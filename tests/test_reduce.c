/* Reductions against naive loops written here in double (long double for
 * sums): every subset of axes of 3-D and 4-D tensors, with and without
 * keepdims, negative axes, non-contiguous inputs, both kernels; integer sums
 * to int64; empty reductions; argmax/argmin with ties and NaN; logsumexp
 * with large values; bitwise reproducibility. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"

static kiln_tensor *make(kiln_dtype dt, int nd, const int64_t *shape, double *v) {
  int64_t n = tu_numel(nd, shape);
  size_t es = kiln_dtype_size(dt);
  char *buf = calloc((size_t)(n ? n : 1), es);
  for (int64_t i = 0; i < n; i++) {
    char *p = buf + i * (int64_t)es;
    switch (dt) {
    case KILN_F32: { float f = (float)v[i]; memcpy(p, &f, 4); v[i] = f; break; }
    case KILN_F64: memcpy(p, &v[i], 8); break;
    case KILN_I32: { int32_t x = (int32_t)v[i]; memcpy(p, &x, 4); break; }
    case KILN_I64: { int64_t x = (int64_t)v[i]; memcpy(p, &x, 8); break; }
    case KILN_U8: *p = (char)(unsigned char)v[i]; break;
    default: *p = v[i] != 0; break;
    }
  }
  kiln_tensor *t = kiln_from_data(dt, nd, shape, buf);
  free(buf);
  return t;
}

/* Layout 0 contiguous, 1 transposed storage, 2 a permuted view of a
 * permuted-contiguous copy (a different stride order). */
static kiln_tensor *make_layout(kiln_dtype dt, int nd, const int64_t *shape, double *v, int layout) {
  kiln_tensor *c = make(dt, nd, shape, v);
  if (layout == 0 || nd < 2) return c;
  kiln_tensor *r;
  if (layout == 1) {
    r = tu_noncontiguous(c);
  } else {
    /* Rotate axes left, copy, rotate back: strides run in another order. */
    int fwd[KILN_MAX_DIMS], back[KILN_MAX_DIMS];
    for (int i = 0; i < nd; i++) fwd[i] = (i + 1) % nd, back[(i + 1) % nd] = i;
    kiln_tensor *p = kiln_permute(c, nd, fwd);
    kiln_tensor *pc = kiln_contiguous(p);
    r = kiln_permute(pc, nd, back);
    kiln_tensor_release(p);
    kiln_tensor_release(pc);
  }
  kiln_tensor_release(c);
  return r;
}

typedef enum { R_SUM, R_MEAN, R_MAX, R_MIN, R_PROD, R_VAR0, R_VAR1, R_LSE, R_COUNT } red_id;
static const char *const red_names[R_COUNT] = {"sum", "mean", "max", "min", "prod", "var(ddof 0)", "var(ddof 1)",
                                               "logsumexp"};

static kiln_tensor *apply(red_id op, kiln_tensor *x, int n, const int *axes, bool keep) {
  switch (op) {
  case R_SUM: return kiln_sum(x, n, axes, keep);
  case R_MEAN: return kiln_mean(x, n, axes, keep);
  case R_MAX: return kiln_max(x, n, axes, keep);
  case R_MIN: return kiln_min(x, n, axes, keep);
  case R_PROD: return kiln_prod(x, n, axes, keep);
  case R_VAR0: return kiln_var(x, n, axes, keep, 0);
  case R_VAR1: return kiln_var(x, n, axes, keep, 1);
  default: return kiln_logsumexp(x, n, axes, keep);
  }
}

/* Naive reduction of v (shape nd/shape) over mask; out has one slot per kept
 * coordinate in row-major order. */
static void naive_reduce(red_id op, int nd, const int64_t *shape, const double *v, unsigned mask, double *out,
                         int64_t k) {
  int64_t n = tu_numel(nd, shape);
  int64_t r = 1;
  for (int d = 0; d < nd; d++)
    if (mask >> d & 1) r *= shape[d];
  long double *acc = calloc((size_t)(k ? k : 1), sizeof *acc), *aux = calloc((size_t)(k ? k : 1), sizeof *aux);
  for (int64_t o = 0; o < k; o++) {
    acc[o] = op == R_PROD ? 1 : 0;
    aux[o] = op == R_MIN ? INFINITY : -INFINITY;
  }
  int64_t *slot = malloc((size_t)(n ? n : 1) * sizeof *slot);
  for (int64_t i = 0; i < n; i++) {
    int64_t rem = i, s = 0, scale = 1;
    for (int d = nd - 1; d >= 0; d--) {
      int64_t c = rem % shape[d];
      rem /= shape[d];
      if (!(mask >> d & 1)) s += c * scale, scale *= shape[d];
    }
    slot[i] = s;
  }
  for (int64_t i = 0; i < n; i++) {
    int64_t o = slot[i];
    long double x = v[i];
    if (op == R_PROD) acc[o] *= x;
    else acc[o] += x;
    if (isnan(v[i]) || isnan((double)aux[o])) aux[o] = NAN;
    else if (op == R_MIN ? x < aux[o] : x > aux[o]) aux[o] = x;
  }
  if (op == R_VAR0 || op == R_VAR1 || op == R_LSE) {
    long double *m = malloc((size_t)(k ? k : 1) * sizeof *m);
    for (int64_t o = 0; o < k; o++) m[o] = op == R_LSE ? aux[o] : acc[o] / r, acc[o] = 0;
    for (int64_t i = 0; i < n; i++) {
      long double d = v[i] - m[slot[i]];
      acc[slot[i]] += op == R_LSE ? expl(d) : d * d;
    }
    for (int64_t o = 0; o < k; o++) aux[o] = m[o];
    free(m);
  }
  for (int64_t o = 0; o < k; o++) {
    switch (op) {
    case R_SUM: case R_PROD: out[o] = (double)acc[o]; break;
    case R_MEAN: out[o] = r ? (double)(acc[o] / r) : NAN; break;
    case R_MAX: case R_MIN: out[o] = (double)aux[o]; break;
    case R_VAR0: out[o] = r > 0 ? (double)(acc[o] / r) : NAN; break;
    case R_VAR1: out[o] = r > 1 ? (double)(acc[o] / (r - 1)) : NAN; break;
    default: out[o] = isinf((double)aux[o]) ? (double)aux[o] : (double)(logl(acc[o]) + aux[o]); break;
    }
  }
  free(acc);
  free(aux);
  free(slot);
}

/* Runs op over every subset of axes, both keepdims, both kernels, listing
 * the axes negatively for odd subsets. */
static void check_all_subsets(red_id op, kiln_dtype dt, int nd, const int64_t *shape, int layout, uint64_t seed) {
  int64_t n = tu_numel(nd, shape);
  double *v = malloc((size_t)n * sizeof *v);
  for (int64_t i = 0; i < n; i++) {
    double u = tu_rng_unit(&seed);
    /* prod: values near 1 so products stay O(1); max/min: few distinct values. */
    v[i] = op == R_PROD ? 0.6 + 0.8 * u : op == R_MAX || op == R_MIN ? floor(u * 7) - 3 : -2 + 4 * u;
  }
  kiln_tensor *x = make_layout(dt, nd, shape, v, layout);
  double *want = malloc((size_t)n * sizeof *want + 8);
  for (unsigned mask = 0; mask < (1u << nd); mask++) {
    int axes[KILN_MAX_DIMS], na = 0;
    for (int d = 0; d < nd; d++)
      if (mask >> d & 1) axes[na++] = (mask & 1) ? d - nd : d;
    unsigned eff = na == 0 ? (1u << nd) - 1 : mask; /* no axes = every axis */
    int64_t oshape_keep[KILN_MAX_DIMS], oshape[KILN_MAX_DIMS];
    int ond = 0;
    int64_t k = 1;
    for (int d = 0; d < nd; d++) {
      oshape_keep[d] = eff >> d & 1 ? 1 : shape[d];
      if (!(eff >> d & 1)) oshape[ond++] = shape[d], k *= shape[d];
    }
    naive_reduce(op, nd, shape, v, eff, want, k);
    /* float32 output of a double accumulation: 1e-6 relative; sums that
     * cancel need an absolute term: 1e-6 * the largest |partial| (~n * 2).
     * float64: 1e-12 relative, 1e-13 absolute (summation order differs from
     * the long double reference). */
    double rtol = dt == KILN_F32 ? 2e-6 : 1e-12;
    double atol = dt == KILN_F32 ? 1e-6 * (double)n : 1e-13 * (double)n;
    for (int keep = 0; keep < 2; keep++)
      for (int ref = 0; ref < 2; ref++) {
        kiln_use_reference_kernels(ref);
        kiln_tensor *y = apply(op, x, na, axes, keep);
        kiln_use_reference_kernels(false);
        char label[200];
        snprintf(label, sizeof label, "%s %s %s %d-d mask 0x%x keepdims %d layout %d", ref ? "reference" : "optimised",
                 red_names[op], kiln_dtype_name(dt), nd, mask, keep, layout);
        if (!tu_ok(label, y)) fail();
        int want_nd = keep ? nd : ond;
        const int64_t *ws = keep ? oshape_keep : oshape;
        if (kiln_tensor_ndim(y) != want_nd) {
          fprintf(stderr, "%s: ndim %d, expected %d\n", label, kiln_tensor_ndim(y), want_nd);
          fail();
        }
        for (int d = 0; d < want_nd; d++) assert_int_equal(kiln_tensor_shape(y)[d], ws[d]);
        assert_int_equal(kiln_tensor_dtype(y), dt);
        assert_true(tu_close_values(label, y, want, k, rtol, op == R_PROD || op == R_MAX || op == R_MIN ? 0 : atol));
        kiln_tensor_release(y);
      }
  }
  free(want);
  free(v);
  kiln_tensor_release(x);
}

static void reduce_every_subset(void **state) {
  (void)state;
  static const int64_t s3[3] = {3, 4, 5}, s4[4] = {2, 3, 2, 4}, s3b[3] = {1, 9, 17};
  for (int op = 0; op < R_COUNT; op++)
    for (int dt = KILN_F32; dt <= KILN_F64; dt++)
      for (int layout = 0; layout < 3; layout++) {
        uint64_t seed = (uint64_t)(op * 10 + dt + layout * 100);
        check_all_subsets((red_id)op, (kiln_dtype)dt, 3, s3, layout, seed);
        check_all_subsets((red_id)op, (kiln_dtype)dt, 4, s4, layout, seed + 1);
        check_all_subsets((red_id)op, (kiln_dtype)dt, 3, s3b, layout, seed + 2);
      }
}

/* A reversed slice and a broadcast view as inputs. */
static void reduce_strided_views(void **state) {
  (void)state;
  double v[20];
  for (int i = 0; i < 20; i++) v[i] = i * 0.5 - 3;
  kiln_tensor *x = make(KILN_F64, 2, (int64_t[]){4, 5}, v);
  kiln_tensor *r = kiln_slice(x, 1, KILN_END, KILN_END, -2); /* columns 4, 2, 0 */
  kiln_tensor *b = kiln_broadcast_to(r, 3, (int64_t[]){6, 4, 3});
  double want_r[4], want_b[3];
  for (int i = 0; i < 4; i++) want_r[i] = v[i * 5 + 4] + v[i * 5 + 2] + v[i * 5];
  for (int j = 0; j < 3; j++) {
    want_b[j] = 0;
    for (int i = 0; i < 4; i++) want_b[j] += 6 * v[i * 5 + 4 - 2 * j];
  }
  for (int ref = 0; ref < 2; ref++) {
    kiln_use_reference_kernels(ref);
    kiln_tensor *sr = kiln_sum(r, 1, (int[]){1}, false);
    kiln_tensor *sb = kiln_sum(b, 2, (int[]){0, 1}, false);
    kiln_tensor *mb = kiln_max(b, 1, (int[]){-1}, true);
    kiln_use_reference_kernels(false);
    assert_true(tu_close_values("sum of reversed slice", sr, want_r, 4, 1e-14, 0));
    assert_true(tu_close_values("sum of broadcast view", sb, want_b, 3, 1e-14, 0));
    double want_m[24];
    for (int a = 0; a < 6; a++)
      for (int i = 0; i < 4; i++) want_m[a * 4 + i] = v[i * 5 + 4];
    assert_true(tu_close_values("max of broadcast view", mb, want_m, 24, 0, 0));
    kiln_tensor_release(sr), kiln_tensor_release(sb), kiln_tensor_release(mb);
  }
  kiln_tensor_release(x), kiln_tensor_release(r), kiln_tensor_release(b);
}

static int64_t *int_values(const kiln_tensor *t) {
  int64_t n = kiln_tensor_numel(t);
  assert_int_equal(kiln_tensor_dtype(t), KILN_I64);
  int64_t *out = malloc((size_t)(n ? n : 1) * sizeof *out);
  assert_int_equal(kiln_tensor_copy_to(t, out, (size_t)n * 8), KILN_OK);
  return out;
}

static void reduce_integer_sums(void **state) {
  (void)state;
  /* int32 values whose sum overflows int32 but not int64. */
  double v[6] = {2147483647.0, 2147483647.0, 5, -2147483648.0, -2147483648.0, -7};
  kiln_tensor *x = make(KILN_I32, 2, (int64_t[]){2, 3}, v);
  kiln_tensor *u = make(KILN_U8, 2, (int64_t[]){2, 3}, (double[]){255, 255, 255, 1, 2, 3});
  kiln_tensor *b = make(KILN_BOOL, 2, (int64_t[]){2, 3}, (double[]){1, 0, 1, 1, 1, 1});
  kiln_tensor *l = make(KILN_I64, 1, (int64_t[]){3}, (double[]){4e18, 4e18, -1});
  for (int ref = 0; ref < 2; ref++) {
    kiln_use_reference_kernels(ref);
    kiln_tensor *sa = kiln_sum(x, 0, NULL, false), *s0 = kiln_sum(x, 1, (int[]){0}, false),
                *s1 = kiln_sum(x, 1, (int[]){-1}, true);
    kiln_tensor *su = kiln_sum(u, 0, NULL, false), *sb = kiln_sum(b, 1, (int[]){1}, false);
    kiln_tensor *sl = kiln_sum(l, 0, NULL, false), *pl = kiln_prod(u, 1, (int[]){1}, false);
    kiln_tensor *mx = kiln_max(x, 1, (int[]){1}, false), *mn = kiln_min(u, 0, NULL, false);
    kiln_use_reference_kernels(false);
    int64_t *g = int_values(sa);
    assert_true(g[0] == 2147483647LL * 2 + 5 - 2147483648LL * 2 - 7);
    free(g);
    g = int_values(s0);
    assert_true(g[0] == -1 && g[1] == -1 && g[2] == -2);
    free(g);
    assert_int_equal(kiln_tensor_ndim(s1), 2);
    g = int_values(s1);
    assert_true(g[0] == 2147483647LL * 2 + 5 && g[1] == -2147483648LL * 2 - 7);
    free(g);
    g = int_values(su);
    assert_true(g[0] == 771);
    free(g);
    g = int_values(sb);
    assert_true(g[0] == 2 && g[1] == 3);
    free(g);
    g = int_values(sl); /* 8e18 - 1 fits int64 */
    assert_true(g[0] == 8000000000000000000LL - 1);
    free(g);
    g = int_values(pl);
    assert_true(g[0] == 255LL * 255 * 255 && g[1] == 6);
    free(g);
    assert_int_equal(kiln_tensor_dtype(mx), KILN_I32);
    double want_mx[2] = {2147483647.0, -7};
    assert_true(tu_close_values("int32 max", mx, want_mx, 2, 0, 0));
    double want_mn = 1;
    assert_true(tu_close_values("uint8 min", mn, &want_mn, 1, 0, 0));
    kiln_tensor *rel[] = {sa, s0, s1, su, sb, sl, pl, mx, mn};
    for (int i = 0; i < 9; i++) kiln_tensor_release(rel[i]);
  }
  kiln_tensor_release(x), kiln_tensor_release(u), kiln_tensor_release(b), kiln_tensor_release(l);
}

static void reduce_empty(void **state) {
  (void)state;
  kiln_tensor *e = kiln_zeros(KILN_F32, 2, (int64_t[]){0, 3});
  for (int ref = 0; ref < 2; ref++) {
    kiln_use_reference_kernels(ref);
    kiln_tensor *s_all = kiln_sum(e, 0, NULL, false);
    kiln_tensor *s0 = kiln_sum(e, 1, (int[]){0}, false);
    kiln_tensor *s1 = kiln_sum(e, 1, (int[]){1}, false);
    kiln_tensor *p0 = kiln_prod(e, 1, (int[]){0}, true);
    kiln_tensor *m0 = kiln_mean(e, 1, (int[]){0}, false);
    kiln_tensor *mx0 = kiln_max(e, 1, (int[]){0}, false);
    kiln_tensor *mx1 = kiln_max(e, 1, (int[]){1}, false); /* nothing to reduce: shape [0] */
    kiln_tensor *mn_all = kiln_min(e, 0, NULL, false);
    kiln_tensor *am = kiln_argmax(e, KILN_ALL_AXES, false);
    kiln_tensor *lse = kiln_logsumexp(e, 1, (int[]){0}, false);
    kiln_use_reference_kernels(false);
    double zero = 0, zeros3[3] = {0, 0, 0}, ones3[3] = {1, 1, 1}, nans3[3] = {NAN, NAN, NAN};
    double ninf3[3] = {-INFINITY, -INFINITY, -INFINITY};
    assert_int_equal(kiln_tensor_ndim(s_all), 0);
    assert_true(tu_close_values("sum of empty", s_all, &zero, 1, 0, 0));
    assert_true(tu_close_values("sum of empty axis 0", s0, zeros3, 3, 0, 0));
    assert_int_equal(kiln_tensor_numel(s1), 0);
    TU_OK(s1);
    assert_true(tu_close_values("prod of empty", p0, ones3, 3, 0, 0));
    assert_true(tu_close_values("mean of empty", m0, nans3, 3, 0, 0));
    assert_true(tu_close_values("logsumexp of empty", lse, ninf3, 3, 0, 0));
    TU_FAILS(mx0, KILN_ERR_SHAPE, "max");
    TU_OK(mx1);
    assert_int_equal(kiln_tensor_numel(mx1), 0);
    TU_FAILS(mn_all, KILN_ERR_SHAPE, "min");
    TU_FAILS(am, KILN_ERR_SHAPE, "argmax");
    kiln_tensor *rel[] = {s_all, s0, s1, p0, m0, mx0, mx1, mn_all, am, lse};
    for (int i = 0; i < 10; i++) kiln_tensor_release(rel[i]);
  }
  kiln_tensor_release(e);
}

/* 0-d inputs: every axis list that names axis 0 / -1, or none. */
static void reduce_zero_d(void **state) {
  (void)state;
  double v = 2.5;
  kiln_tensor *s = make(KILN_F64, 0, NULL, &v);
  kiln_tensor *a = kiln_sum(s, 0, NULL, false), *b = kiln_max(s, 1, (int[]){0}, true),
              *c = kiln_var(s, 1, (int[]){0}, false, 0), *d = kiln_argmax(s, KILN_ALL_AXES, false);
  assert_true(tu_close_values("sum 0-d", a, &v, 1, 0, 0));
  assert_true(tu_close_values("max 0-d", b, &v, 1, 0, 0));
  double z = 0;
  assert_true(tu_close_values("var 0-d", c, &z, 1, 0, 0));
  assert_true(tu_close_values("argmax 0-d", d, &z, 1, 0, 0));
  assert_int_equal(kiln_tensor_ndim(a), 0);
  kiln_tensor *rel[] = {s, a, b, c, d};
  for (int i = 0; i < 5; i++) kiln_tensor_release(rel[i]);
}

/* kiln_op_axis means to accept axis -1 as well as 0 on a 0-d tensor (its
 * condition lists both), but a = -1 + 0 < 0 rejects -1 first. */
static void reduce_zero_d_axis_minus_one(void **state) {
  (void)state;
  double v = 2.5;
  kiln_tensor *s = make(KILN_F64, 0, NULL, &v);
  kiln_tensor *a = kiln_sum(s, 1, (int[]){-1}, false);
  assert_true(tu_close_values("sum 0-d axis -1", a, &v, 1, 0, 0));
  kiln_tensor_release(s);
  kiln_tensor_release(a);
}

/* Naive first-extreme index along axis (NaN counts as the extreme). */
static int64_t naive_arg(bool is_max, const double *v, int64_t len, int64_t stride, int64_t base) {
  int64_t best = 0;
  for (int64_t j = 0; j < len; j++) {
    double x = v[base + j * stride], b = v[base + best * stride];
    if (isnan(b)) break;
    if (isnan(x) || (is_max ? x > b : x < b)) best = j;
  }
  return best;
}

static void argmax_argmin(void **state) {
  (void)state;
  const int64_t shape[3] = {4, 5, 6};
  const kiln_dtype dts[4] = {KILN_F32, KILN_F64, KILN_I32, KILN_U8};
  for (int d = 0; d < 4; d++)
    for (int with_nan = 0; with_nan < 2; with_nan++)
      for (int layout = 0; layout < 3; layout++) {
        if (with_nan && d >= 2) continue;
        uint64_t seed = (uint64_t)(d * 13 + with_nan * 7 + layout);
        double v[120];
        for (int i = 0; i < 120; i++) v[i] = floor(tu_rng_unit(&seed) * 4); /* many ties */
        if (with_nan) v[7] = NAN, v[64] = NAN, v[65] = NAN, v[119] = NAN;
        kiln_tensor *x = make_layout(dts[d], 3, shape, v, layout);
        for (int is_max = 0; is_max < 2; is_max++)
          for (int axis = -1; axis < 3; axis++)
            for (int keep = 0; keep < 2; keep++) {
              int64_t want[120];
              int64_t k = 0;
              if (axis < 0) {
                want[k++] = naive_arg(is_max, v, 120, 1, 0);
              } else {
                int64_t inner = 1;
                for (int q = axis + 1; q < 3; q++) inner *= shape[q];
                int64_t outer = 120 / (inner * shape[axis]);
                for (int64_t o = 0; o < outer; o++)
                  for (int64_t in = 0; in < inner; in++)
                    want[k++] = naive_arg(is_max, v, shape[axis], inner, o * shape[axis] * inner + in);
              }
              for (int ref = 0; ref < 2; ref++) {
                kiln_use_reference_kernels(ref);
                int ax = axis < 0 ? KILN_ALL_AXES : (keep ? axis - 3 : axis);
                kiln_tensor *y = is_max ? kiln_argmax(x, ax, keep) : kiln_argmin(x, ax, keep);
                kiln_use_reference_kernels(false);
                char label[160];
                snprintf(label, sizeof label, "%s %s %s axis %d keep %d nan %d layout %d", ref ? "reference" : "optimised",
                         is_max ? "argmax" : "argmin", kiln_dtype_name(dts[d]), axis, keep, with_nan, layout);
                if (!tu_ok(label, y)) fail();
                assert_int_equal(kiln_tensor_dtype(y), KILN_I64);
                int want_nd = axis < 0 ? (keep ? 3 : 0) : (keep ? 3 : 2);
                assert_int_equal(kiln_tensor_ndim(y), want_nd);
                if (keep && axis >= 0) assert_int_equal(kiln_tensor_shape(y)[axis], 1);
                assert_int_equal(kiln_tensor_numel(y), k);
                int64_t *g = int_values(y);
                for (int64_t i = 0; i < k; i++)
                  if (g[i] != want[i]) {
                    fprintf(stderr, "%s: element %lld: got %lld, expected %lld\n", label, (long long)i, (long long)g[i],
                            (long long)want[i]);
                    fail();
                  }
                free(g);
                kiln_tensor_release(y);
              }
            }
        kiln_tensor_release(x);
      }
}

/* int64 values that differ only beyond 2^53 (they collide as doubles). */
static void argmax_int64_beyond_double_precision(void **state) {
  (void)state;
  const int64_t v[3] = {9007199254740992LL, 9007199254740993LL, 9007199254740992LL};
  kiln_tensor *x = kiln_from_data(KILN_I64, 1, (int64_t[]){3}, v);
  for (int ref = 0; ref < 2; ref++) {
    kiln_use_reference_kernels(ref);
    kiln_tensor *a = kiln_argmax(x, 0, false), *m = kiln_max(x, 0, NULL, false);
    kiln_use_reference_kernels(false);
    int64_t got = -1, mx = 0;
    assert_int_equal(kiln_tensor_copy_to(a, &got, 8), KILN_OK);
    assert_int_equal(kiln_tensor_copy_to(m, &mx, 8), KILN_OK);
    assert_true(mx == 9007199254740993LL);
    if (got != 1) {
      fprintf(stderr, "%s argmax of int64 {2^53, 2^53+1, 2^53}: got %lld, expected 1\n", ref ? "reference" : "optimised",
              (long long)got);
      fail();
    }
    kiln_tensor_release(a);
    kiln_tensor_release(m);
  }
  kiln_tensor_release(x);
}

static void logsumexp_large_values(void **state) {
  (void)state;
  for (int dt = KILN_F32; dt <= KILN_F64; dt++) {
    double v[12] = {1000, 1000, 1000, -1000, -1000, -1000, -INFINITY, -INFINITY, -INFINITY, INFINITY, 1, -INFINITY};
    kiln_tensor *x = make((kiln_dtype)dt, 2, (int64_t[]){4, 3}, v);
    double want[4] = {1000 + log(3.0), -1000 + log(3.0), -INFINITY, INFINITY};
    double wcol[3] = {INFINITY, 1000 + log1p(exp(-999.0)), 1000};
    for (int ref = 0; ref < 2; ref++) {
      kiln_use_reference_kernels(ref);
      kiln_tensor *y = kiln_logsumexp(x, 1, (int[]){1}, false);
      kiln_tensor *c = kiln_logsumexp(x, 1, (int[]){0}, false);
      kiln_use_reference_kernels(false);
      assert_true(tu_close_values("logsumexp rows", y, want, 4, 1e-7, 0));
      assert_true(tu_close_values("logsumexp cols", c, wcol, 3, 1e-7, 0));
      kiln_tensor_release(y);
      kiln_tensor_release(c);
    }
    kiln_tensor_release(x);
  }
}

/* NaN propagates through max, min, sum and logsumexp. */
static void reduce_nan(void **state) {
  (void)state;
  double v[6] = {1, NAN, 3, 4, 5, 6};
  kiln_tensor *x = make(KILN_F32, 2, (int64_t[]){2, 3}, v);
  for (int ref = 0; ref < 2; ref++) {
    kiln_use_reference_kernels(ref);
    kiln_tensor *a = kiln_max(x, 1, (int[]){1}, false), *b = kiln_min(x, 1, (int[]){1}, false),
                *c = kiln_sum(x, 1, (int[]){1}, false), *d = kiln_logsumexp(x, 1, (int[]){1}, false);
    kiln_use_reference_kernels(false);
    double wmax[2] = {NAN, 6}, wmin[2] = {NAN, 4}, wsum[2] = {NAN, 15}, wl[2] = {NAN, 6 + log(1 + exp(-1.0) + exp(-2.0))};
    assert_true(tu_close_values("max nan", a, wmax, 2, 0, 0));
    assert_true(tu_close_values("min nan", b, wmin, 2, 0, 0));
    assert_true(tu_close_values("sum nan", c, wsum, 2, 0, 0));
    assert_true(tu_close_values("logsumexp nan", d, wl, 2, 1e-6, 0));
    kiln_tensor_release(a), kiln_tensor_release(b), kiln_tensor_release(c), kiln_tensor_release(d);
  }
  kiln_tensor_release(x);
}

/* var with ddof >= count gives NaN, as numpy (with a warning). */
static void var_ddof(void **state) {
  (void)state;
  double v[4] = {1, 2, 3, 4};
  kiln_tensor *x = make(KILN_F64, 2, (int64_t[]){2, 2}, v);
  kiln_tensor *a = kiln_var(x, 0, NULL, false, 1), *b = kiln_var(x, 1, (int[]){1}, false, 2),
              *c = kiln_var(x, 0, NULL, false, 3);
  double wa = 5.0 / 3.0, wb[2] = {NAN, NAN}, wc = 5.0;
  assert_true(tu_close_values("var ddof 1", a, &wa, 1, 1e-15, 0));
  assert_true(tu_close_values("var ddof = n", b, wb, 2, 0, 0));
  assert_true(tu_close_values("var ddof 3", c, &wc, 1, 1e-15, 0));
  kiln_tensor *rel[] = {x, a, b, c};
  for (int i = 0; i < 4; i++) kiln_tensor_release(rel[i]);
}

static void reductions_reproducible(void **state) {
  (void)state;
  const int64_t shape[2] = {300, 1001};
  kiln_tensor *x = tu_random(KILN_F32, 2, shape, 77, -1, 1);
  kiln_tensor *xt = tu_noncontiguous(x);
  const red_id ops[4] = {R_SUM, R_MEAN, R_VAR0, R_LSE};
  for (int k = 0; k < 4; k++)
    for (int ax = -1; ax < 2; ax++) {
      int axes[1] = {ax};
      int n = ax < 0 ? 0 : 1;
      kiln_tensor *a = apply(ops[k], x, n, axes, false), *b = apply(ops[k], x, n, axes, false);
      kiln_tensor *c = apply(ops[k], xt, n, axes, false);
      int64_t m = kiln_tensor_numel(a);
      float *pa = malloc((size_t)m * 4), *pb = malloc((size_t)m * 4), *pc = malloc((size_t)m * 4);
      assert_int_equal(kiln_tensor_copy_to(a, pa, (size_t)m * 4), KILN_OK);
      assert_int_equal(kiln_tensor_copy_to(b, pb, (size_t)m * 4), KILN_OK);
      assert_int_equal(kiln_tensor_copy_to(c, pc, (size_t)m * 4), KILN_OK);
      assert_memory_equal(pa, pb, (size_t)m * 4);
      /* A different layout may sum in another order; float32 output of a
       * double sum still agrees to one float32 rounding. */
      for (int64_t i = 0; i < m; i++) assert_true(fabsf(pa[i] - pc[i]) <= 1e-6f * (1 + fabsf(pa[i])));
      free(pa), free(pb), free(pc);
      kiln_tensor_release(a), kiln_tensor_release(b), kiln_tensor_release(c);
    }
  kiln_tensor_release(x);
  kiln_tensor_release(xt);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(reduce_every_subset),
      cmocka_unit_test(reduce_strided_views),
      cmocka_unit_test(reduce_integer_sums),
      cmocka_unit_test(reduce_empty),
      cmocka_unit_test(reduce_zero_d),
      cmocka_unit_test(reduce_zero_d_axis_minus_one),
      cmocka_unit_test(argmax_argmin),
      cmocka_unit_test(argmax_int64_beyond_double_precision),
      cmocka_unit_test(logsumexp_large_values),
      cmocka_unit_test(reduce_nan),
      cmocka_unit_test(var_ddof),
      cmocka_unit_test(reductions_reproducible),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
