/* matmul and linear against a naive double loop written here, on numpy's
 * matmul rules (1-D promotion, batch broadcasting), transposed and sliced
 * views, the gemv routes (1 x K . K x N and M x K . K x 1), K = 0, float32
 * and float64, and both kernels. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/view.h" /* kk_set_options: the portable loops too */
#include "testutil.h"

/* Random values in [-1, 1) rounded to dt, in v (row-major). */
static kiln_tensor *make_random(kiln_dtype dt, int nd, const int64_t *shape, uint64_t seed, double **v) {
  int64_t n = tu_numel(nd, shape);
  *v = malloc((size_t)(n ? n : 1) * sizeof **v);
  void *buf = malloc((size_t)(n ? n : 1) * 8);
  for (int64_t i = 0; i < n; i++) {
    double u = (double)(tu_rng_next(&seed) >> 11) / 9007199254740992.0 * 2 - 1;
    if (dt == KILN_F32) {
      float f = (float)u;
      ((float *)buf)[i] = f;
      (*v)[i] = f;
    } else {
      ((double *)buf)[i] = u;
      (*v)[i] = u;
    }
  }
  kiln_tensor *t = kiln_from_data(dt, nd, shape, buf);
  free(buf);
  return t;
}

/* Per-element check with a tolerance scaled by sum_k |a_ik b_kj|: the
 * summation error bound. float32 BLAS with blocked sums stays well inside
 * 4 * sqrt(K) * 2^-24 of it; float64 1e-14. */
static bool check_products(const char *label, const kiln_tensor *got, const double *want, const double *absum,
                           int64_t n, int64_t k, kiln_dtype dt) {
  if (!tu_ok(label, got)) return false;
  if (kiln_tensor_numel(got) != n) {
    fprintf(stderr, "%s: %lld elements, expected %lld\n", label, (long long)kiln_tensor_numel(got), (long long)n);
    return false;
  }
  double *g = malloc((size_t)(n ? n : 1) * sizeof *g);
  if (dt == KILN_F32) {
    float *f = malloc((size_t)(n ? n : 1) * 4);
    assert_int_equal(kiln_tensor_copy_to(got, f, (size_t)n * 4), KILN_OK);
    for (int64_t i = 0; i < n; i++) g[i] = f[i];
    free(f);
  } else {
    assert_int_equal(kiln_tensor_copy_to(got, g, (size_t)n * 8), KILN_OK);
  }
  double unit = dt == KILN_F32 ? 4 * sqrt((double)k + 1) * 5.96e-8 : 1e-14;
  bool ok = true;
  for (int64_t i = 0; i < n && ok; i++) {
    double tol = unit * absum[i] + 1e-300;
    if (!(fabs(g[i] - want[i]) <= tol)) {
      fprintf(stderr, "%s: element %lld: got %.9g, expected %.9g (|diff| %.3g > tol %.3g)\n", label, (long long)i, g[i],
              want[i], fabs(g[i] - want[i]), tol);
      ok = false;
    }
  }
  free(g);
  return ok;
}

/* numpy.matmul of logical values: a (na dims), b (nb dims). Returns the
 * output ndim and writes its shape, values and |a||b| sums. */
static int naive_matmul(int na, const int64_t *as, const double *a, int nb, const int64_t *bs, const double *b,
                        int64_t *os, double **out, double **absum) {
  int64_t pa[KILN_MAX_DIMS], pb[KILN_MAX_DIMS];
  int ma = na == 1 ? 2 : na, mb = nb == 1 ? 2 : nb;
  if (na == 1) pa[0] = 1, pa[1] = as[0];
  else memcpy(pa, as, (size_t)na * 8);
  if (nb == 1) pb[0] = bs[0], pb[1] = 1;
  else memcpy(pb, bs, (size_t)nb * 8);
  int64_t m = pa[ma - 2], k = pa[ma - 1], n = pb[mb - 1];
  int bnd = (ma > mb ? ma : mb) - 2;
  int64_t batch[KILN_MAX_DIMS] = {0};
  for (int d = 0; d < bnd; d++) {
    int ja = d - (bnd - (ma - 2)), jb = d - (bnd - (mb - 2));
    int64_t ea = ja >= 0 ? pa[ja] : 1, eb = jb >= 0 ? pb[jb] : 1;
    batch[d] = ea == 1 ? eb : ea;
  }
  int64_t nbatch = tu_numel(bnd, batch);
  *out = calloc((size_t)(nbatch * m * n + 1), sizeof **out);
  *absum = calloc((size_t)(nbatch * m * n + 1), sizeof **absum);
  for (int64_t bi = 0; bi < nbatch; bi++) {
    int64_t rem = bi, offa = 0, offb = 0, sa = 1, sb = 1;
    for (int d = bnd - 1; d >= 0; d--) {
      int64_t c = rem % batch[d];
      rem /= batch[d];
      int ja = d - (bnd - (ma - 2)), jb = d - (bnd - (mb - 2));
      if (ja >= 0) offa += (pa[ja] == 1 ? 0 : c) * sa, sa *= pa[ja];
      if (jb >= 0) offb += (pb[jb] == 1 ? 0 : c) * sb, sb *= pb[jb];
    }
    for (int64_t i = 0; i < m; i++)
      for (int64_t j = 0; j < n; j++) {
        long double s = 0, t = 0;
        for (int64_t q = 0; q < k; q++) {
          double x = a[(offa * m + i) * k + q], y = b[(offb * k + q) * n + j];
          s += (long double)x * y;
          t += fabs(x * y);
        }
        (*out)[(bi * m + i) * n + j] = (double)s;
        (*absum)[(bi * m + i) * n + j] = (double)t;
      }
  }
  int ond = 0;
  for (int d = 0; d < bnd; d++) os[ond++] = batch[d];
  if (na > 1) os[ond++] = m;
  if (nb > 1) os[ond++] = n;
  return ond;
}

typedef struct {
  int na, nb;
  int64_t a[4], b[4];
} mm_case;

static const mm_case mm_cases[] = {
    {1, 1, {4}, {4}},
    {1, 2, {3}, {3, 5}},
    {2, 1, {3, 5}, {5}},
    {2, 2, {2, 3}, {3, 4}},
    {2, 2, {1, 7}, {7, 6}},          /* gemv: 1 x K . K x N */
    {2, 2, {6, 7}, {7, 1}},          /* gemv: M x K . K x 1 */
    {2, 2, {1, 9}, {9, 1}},
    {4, 3, {2, 1, 3, 4}, {5, 4, 2}}, /* batch dims broadcast */
    {1, 3, {4}, {5, 4, 2}},
    {3, 1, {2, 3, 4}, {4}},
    {3, 2, {3, 4, 5}, {5, 6}},       /* shared B: folded into one GEMM */
    {3, 3, {1, 4, 5}, {3, 5, 2}},
    {2, 2, {3, 0}, {0, 4}},          /* K = 0: zeros */
    {2, 2, {0, 3}, {3, 4}},
    {2, 2, {2, 3}, {3, 0}},
    {3, 3, {0, 2, 3}, {1, 3, 2}},
    {2, 2, {64, 512}, {512, 33}},    /* K = 512 */
    {2, 2, {1, 512}, {512, 300}},
};

/* Layouts of an operand with given logical values: 0 contiguous, 1 a
 * transposed view of contiguous transposed storage (BLAS's transpose flag),
 * 2 every other row/column of a larger tensor (a leading dimension > cols),
 * 3 reversed along the last axis (negative stride: must be copied). */
static kiln_tensor *relayout(kiln_tensor *x, int layout) {
  int nd = kiln_tensor_ndim(x);
  if (layout == 0 || nd == 0) return kiln_tensor_retain(x);
  if (layout == 1) {
    if (nd < 2) return tu_noncontiguous(x);
    kiln_tensor *t = kiln_transpose(x, -1, -2);
    kiln_tensor *c = kiln_contiguous(t);
    kiln_tensor *r = kiln_transpose(c, -1, -2);
    kiln_tensor_release(t);
    kiln_tensor_release(c);
    return r;
  }
  if (layout == 2) {
    /* Stack x with itself along the last axis and take every other one. */
    kiln_tensor *st = kiln_stack(2, (kiln_tensor *const[]){x, x}, nd);
    int64_t shape[KILN_MAX_DIMS];
    memcpy(shape, kiln_tensor_shape(x), (size_t)nd * 8);
    shape[nd - 1] *= 2;
    kiln_tensor *flat = kiln_reshape(st, nd, shape);
    kiln_tensor *r = kiln_slice(flat, nd - 1, 0, KILN_END, 2);
    kiln_tensor_release(st);
    kiln_tensor_release(flat);
    return r;
  }
  /* Reverse the last axis twice: once into storage, once as a view. */
  kiln_tensor *rv = kiln_slice(x, nd - 1, KILN_END, KILN_END, -1);
  kiln_tensor *c = kiln_contiguous(rv);
  kiln_tensor *r = kiln_slice(c, nd - 1, KILN_END, KILN_END, -1);
  kiln_tensor_release(rv);
  kiln_tensor_release(c);
  return r;
}

static void matmul_cases(void **state) {
  (void)state;
  for (size_t c = 0; c < sizeof mm_cases / sizeof mm_cases[0]; c++)
    for (int dt = KILN_F32; dt <= KILN_F64; dt++) {
      const mm_case *mc = &mm_cases[c];
      double *av, *bv, *want, *absum;
      kiln_tensor *a = make_random((kiln_dtype)dt, mc->na, mc->a, 100 + c, &av);
      kiln_tensor *b = make_random((kiln_dtype)dt, mc->nb, mc->b, 200 + c, &bv);
      int64_t os[KILN_MAX_DIMS];
      int ond = naive_matmul(mc->na, mc->a, av, mc->nb, mc->b, bv, os, &want, &absum);
      int64_t no = tu_numel(ond, os), k = mc->a[mc->na - 1];
      for (int la = 0; la < 4; la++)
        for (int lb = 0; lb < 4; lb++) {
          if (la && lb && la != lb) continue; /* a's layouts with b's contiguous, and matching pairs */
          kiln_tensor *ra = relayout(a, la), *rb = relayout(b, lb);
          TU_OK(ra);
          TU_OK(rb);
          for (int ref = 0; ref < 2; ref++) {
            kiln_use_reference_kernels(ref);
            kiln_tensor *y = kiln_matmul(ra, rb);
            kiln_use_reference_kernels(false);
            char label[160];
            snprintf(label, sizeof label, "%s matmul case %zu %s layouts %d/%d", ref ? "reference" : "optimised", c,
                     kiln_dtype_name((kiln_dtype)dt), la, lb);
            if (!tu_ok(label, y)) fail();
            assert_int_equal(kiln_tensor_ndim(y), ond);
            for (int d = 0; d < ond; d++) assert_int_equal(kiln_tensor_shape(y)[d], os[d]);
            assert_int_equal(kiln_tensor_dtype(y), dt);
            assert_true(check_products(label, y, want, absum, no, k, (kiln_dtype)dt));
            kiln_tensor_release(y);
          }
          kiln_tensor_release(ra);
          kiln_tensor_release(rb);
        }
      free(av), free(bv), free(want), free(absum);
      kiln_tensor_release(a), kiln_tensor_release(b);
    }
}

/* Broadcast views (stride 0) as operands: a batch-broadcast A and a B whose
 * rows are all the same vector. */
static void matmul_broadcast_views(void **state) {
  (void)state;
  double *av, *bv, *want, *absum;
  kiln_tensor *a = make_random(KILN_F32, 2, (int64_t[]){3, 4}, 5, &av);
  kiln_tensor *row = make_random(KILN_F32, 2, (int64_t[]){1, 2}, 6, &bv);
  kiln_tensor *ab = kiln_broadcast_to(a, 3, (int64_t[]){2, 3, 4});
  kiln_tensor *bb = kiln_broadcast_to(row, 2, (int64_t[]){4, 2});
  double *a2 = malloc(24 * 8), *b2 = malloc(8 * 8);
  for (int i = 0; i < 24; i++) a2[i] = av[i % 12];
  for (int i = 0; i < 8; i++) b2[i] = bv[i % 2];
  int64_t os[3];
  int ond = naive_matmul(3, (int64_t[]){2, 3, 4}, a2, 2, (int64_t[]){4, 2}, b2, os, &want, &absum);
  assert_int_equal(ond, 3);
  for (int ref = 0; ref < 2; ref++) {
    kiln_use_reference_kernels(ref);
    kiln_tensor *y = kiln_matmul(ab, bb);
    kiln_use_reference_kernels(false);
    assert_true(check_products(ref ? "reference broadcast views" : "optimised broadcast views", y, want, absum, 12, 4,
                               KILN_F32));
    kiln_tensor_release(y);
  }
  free(av), free(bv), free(a2), free(b2), free(want), free(absum);
  kiln_tensor_release(a), kiln_tensor_release(row), kiln_tensor_release(ab), kiln_tensor_release(bb);
}

/* The output is written, never accumulated into: whatever the allocator
 * hands back (here, memory just freed full of NaN) must not leak through,
 * including on the gemv routes where beta is 0. */
static void matmul_ignores_stale_output_memory(void **state) {
  (void)state;
  const int64_t cases[3][3] = {{1, 64, 256}, {256, 64, 1}, {32, 64, 48}}; /* M, K, N */
  for (int c = 0; c < 3; c++) {
    int64_t m = cases[c][0], k = cases[c][1], n = cases[c][2];
    double *av, *bv, *want, *absum;
    kiln_tensor *a = make_random(KILN_F32, 2, (int64_t[]){m, k}, 1, &av);
    kiln_tensor *b = make_random(KILN_F32, 2, (int64_t[]){k, n}, 2, &bv);
    int64_t os[2];
    naive_matmul(2, (int64_t[]){m, k}, av, 2, (int64_t[]){k, n}, bv, os, &want, &absum);
    for (int rep = 0; rep < 3; rep++) {
      kiln_tensor *junk = kiln_full(KILN_F32, 2, (int64_t[]){m, n}, NAN);
      kiln_tensor_release(junk);
      kiln_tensor *y = kiln_matmul(a, b);
      assert_true(check_products("matmul after NaN garbage", y, want, absum, m * n, k, KILN_F32));
      kiln_tensor_release(y);
    }
    free(av), free(bv), free(want), free(absum);
    kiln_tensor_release(a), kiln_tensor_release(b);
  }
}

/* linear: x[..., I] . w[O, I]^T + bias[O]. */
static void naive_linear(const double *x, int64_t rows, int64_t in, const double *w, int64_t out, const double *bias,
                         double *y, double *absum) {
  for (int64_t r = 0; r < rows; r++)
    for (int64_t o = 0; o < out; o++) {
      long double s = bias ? bias[o] : 0;
      double t = bias ? fabs(bias[o]) : 0;
      for (int64_t i = 0; i < in; i++) s += (long double)x[r * in + i] * w[o * in + i], t += fabs(x[r * in + i] * w[o * in + i]);
      y[r * out + o] = (double)s;
      absum[r * out + o] = t;
    }
}

static void linear_cases_once(void) {
  const struct { int nd; int64_t x[3]; int64_t out; } cases[] = {
      {2, {5, 7}, 3}, {3, {2, 4, 7}, 3}, {1, {7}, 4}, {2, {1, 16}, 9}, {2, {6, 16}, 1}, {2, {0, 7}, 3}, {2, {4, 0}, 3},
      {2, {33, 128}, 20},
      /* batch 1 (the dot-rows kernel): rows in fours and a remainder, depths
       * in sixteens, an eight and a tail */
      {2, {1, 37}, 7}, {2, {1, 512}, 13}, {1, {24}, 5}, {2, {1, 5}, 6},
  };
  for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++)
    for (int dt = KILN_F32; dt <= KILN_F64; dt++) {
      int nd = cases[c].nd;
      int64_t in = cases[c].x[nd - 1], out = cases[c].out, rows = tu_numel(nd - 1, cases[c].x);
      double *xv, *wv, *bv;
      kiln_tensor *x = make_random((kiln_dtype)dt, nd, cases[c].x, 10 + c, &xv);
      kiln_tensor *w = make_random((kiln_dtype)dt, 2, (int64_t[]){out, in}, 20 + c, &wv);
      kiln_tensor *bias = make_random((kiln_dtype)dt, 1, &out, 30 + c, &bv);
      double *want = calloc((size_t)(rows * out + 1), 8), *absum = calloc((size_t)(rows * out + 1), 8);
      double *want_nb = calloc((size_t)(rows * out + 1), 8), *absum_nb = calloc((size_t)(rows * out + 1), 8);
      naive_linear(xv, rows, in, wv, out, bv, want, absum);
      naive_linear(xv, rows, in, wv, out, NULL, want_nb, absum_nb);
      for (int lx = 0; lx < 4; lx++)
        for (int lw = 0; lw < 4; lw++) {
          if (lx && lw) continue;
          kiln_tensor *rx = relayout(x, lx), *rw = relayout(w, lw);
          kiln_tensor *rb = relayout(bias, lw == 3 ? 3 : 0);
          for (int ref = 0; ref < 2; ref++) {
            kiln_use_reference_kernels(ref);
            kiln_tensor *y = kiln_linear(rx, rw, rb), *ynb = kiln_linear(rx, rw, NULL);
            kiln_use_reference_kernels(false);
            char label[160];
            snprintf(label, sizeof label, "%s linear case %zu %s layouts x %d w %d", ref ? "reference" : "optimised", c,
                     kiln_dtype_name((kiln_dtype)dt), lx, lw);
            if (!tu_ok(label, y)) fail();
            assert_int_equal(kiln_tensor_ndim(y), nd);
            for (int d = 0; d < nd - 1; d++) assert_int_equal(kiln_tensor_shape(y)[d], cases[c].x[d]);
            assert_int_equal(kiln_tensor_shape(y)[nd - 1], out);
            assert_true(check_products(label, y, want, absum, rows * out, in + 1, (kiln_dtype)dt));
            assert_true(check_products(label, ynb, want_nb, absum_nb, rows * out, in, (kiln_dtype)dt));
            kiln_tensor_release(y);
            kiln_tensor_release(ynb);
          }
          kiln_tensor_release(rx), kiln_tensor_release(rw), kiln_tensor_release(rb);
        }
      free(xv), free(wv), free(bv), free(want), free(absum), free(want_nb), free(absum_nb);
      kiln_tensor_release(x), kiln_tensor_release(w), kiln_tensor_release(bias);
    }
}

static void linear_cases(void **state) {
  (void)state;
  linear_cases_once();
  unsigned old = kk_set_options(kk_options() | KK_OPT_NO_SIMD);
  linear_cases_once();
  kk_set_options(old);
}

/* The fused activation of kiln_linear_act: the naive product through the
 * activation computed here, and the same bits as the two ops unfused. */
static void linear_activations(void **state) {
  (void)state;
  const kiln_activation acts[] = {KILN_ACT_RELU, KILN_ACT_SIGMOID, KILN_ACT_TANH};
  const int64_t shapes[][3] = {{1, 70, 9}, {12, 33, 40}}; /* rows, in, out: the skinny road and BLAS's */
  for (size_t sh = 0; sh < 2; sh++)
    for (int dt = KILN_F32; dt <= KILN_F64; dt++) {
      int64_t rows = shapes[sh][0], in = shapes[sh][1], out = shapes[sh][2];
      double *xv, *wv, *bv;
      kiln_tensor *x = make_random((kiln_dtype)dt, 2, (int64_t[]){rows, in}, 40 + sh, &xv);
      kiln_tensor *w = make_random((kiln_dtype)dt, 2, (int64_t[]){out, in}, 50 + sh, &wv);
      kiln_tensor *b = make_random((kiln_dtype)dt, 1, &out, 60 + sh, &bv);
      double *z = calloc((size_t)(rows * out), 8), *absum = calloc((size_t)(rows * out), 8);
      naive_linear(xv, rows, in, wv, out, bv, z, absum);
      for (size_t a = 0; a < 3; a++) {
        double *want = malloc(sizeof(double) * (size_t)(rows * out));
        for (int64_t i = 0; i < rows * out; i++)
          want[i] = acts[a] == KILN_ACT_RELU ? (z[i] > 0 ? z[i] : 0) : acts[a] == KILN_ACT_SIGMOID ? 1 / (1 + exp(-z[i])) : tanh(z[i]);
        for (int ref = 0; ref < 2; ref++) {
          kiln_use_reference_kernels(ref);
          kiln_tensor *y = kiln_linear_act(x, w, b, acts[a]);
          kiln_use_reference_kernels(false);
          char label[96];
          snprintf(label, sizeof label, "linear act %d %s shape %zu %s", (int)acts[a], ref ? "reference" : "optimised", sh,
                   kiln_dtype_name((kiln_dtype)dt));
          /* Every activation here has a slope of at most 1: the product's
           * error bound carries over. */
          assert_true(check_products(label, y, want, absum, rows * out, in + 1, (kiln_dtype)dt));
          if (!ref) {
            kiln_tensor *z2 = kiln_linear(x, w, b);
            kiln_tensor *two = acts[a] == KILN_ACT_RELU ? kiln_relu(z2) : acts[a] == KILN_ACT_SIGMOID ? kiln_sigmoid(z2) : kiln_tanh(z2);
            assert_true(tu_close(label, y, two, 0, 0));
            kiln_tensor_release(z2), kiln_tensor_release(two);
          }
          kiln_tensor_release(y);
        }
        free(want);
      }
      kiln_tensor *bad = kiln_linear_act(x, w, b, KILN_ACT_GELU);
      assert_int_equal(kiln_tensor_status(bad), KILN_ERR_INVALID_ARGUMENT);
      assert_non_null(strstr(kiln_tensor_error(bad), "activation 5 is not none, relu, sigmoid or tanh"));
      kiln_tensor_release(bad);
      free(xv), free(wv), free(bv), free(z), free(absum);
      kiln_tensor_release(x), kiln_tensor_release(w), kiln_tensor_release(b);
    }
}

/* Hand-computed products, independent of the naive loop above. */
static void matmul_known_values(void **state) {
  (void)state;
  kiln_tensor *a = kiln_from_data(KILN_F64, 2, (int64_t[]){2, 3}, (double[]){1, 2, 3, 4, 5, 6});
  kiln_tensor *b = kiln_from_data(KILN_F64, 2, (int64_t[]){3, 2}, (double[]){7, 8, 9, 10, 11, 12});
  kiln_tensor *v = kiln_from_data(KILN_F64, 1, (int64_t[]){3}, (double[]){1, 0, -1});
  kiln_tensor *ab = kiln_matmul(a, b), *av = kiln_matmul(a, v), *vv = kiln_matmul(v, v);
  double wab[4] = {58, 64, 139, 154}, wav[2] = {-2, -2}, wvv = 2;
  assert_true(tu_close_values("2x3 . 3x2", ab, wab, 4, 0, 0));
  assert_true(tu_close_values("2x3 . 3", av, wav, 2, 0, 0));
  assert_int_equal(kiln_tensor_ndim(vv), 0);
  assert_true(tu_close_values("3 . 3", vv, &wvv, 1, 0, 0));
  kiln_tensor *w = kiln_transpose(b, 0, 1); /* [2, 3] */
  kiln_tensor *bias = kiln_from_data(KILN_F64, 1, (int64_t[]){2}, (double[]){0.5, -0.5});
  kiln_tensor *l = kiln_linear(a, w, bias);
  double wl[4] = {58.5, 63.5, 139.5, 153.5};
  assert_true(tu_close_values("linear with transposed weight", l, wl, 4, 0, 0));
  kiln_tensor *rel[] = {a, b, v, ab, av, vv, w, bias, l};
  for (int i = 0; i < 9; i++) kiln_tensor_release(rel[i]);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(matmul_known_values),
      cmocka_unit_test(matmul_cases),
      cmocka_unit_test(matmul_broadcast_views),
      cmocka_unit_test(matmul_ignores_stale_output_memory),
      cmocka_unit_test(linear_cases),
      cmocka_unit_test(linear_activations),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
