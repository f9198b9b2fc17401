/* Tests of the neural-network ops: softmax, log_softmax,
 * softmax_cross_entropy, conv2d, max_pool2d, avg_pool2d, batch_norm,
 * batch_norm_train and dropout.
 *
 * Three kinds of check. The optimised kernel against the plain reference
 * kernel (kiln_use_reference_kernels) on many shapes, strides, paddings,
 * dilations and groups, on contiguous and non-contiguous inputs and on empty
 * batches. Both against PyTorch 1.13 on the fixtures that
 * tests/fixtures/make_nn_fixtures.py wrote, so the two kernels cannot agree
 * on a wrong answer. And every bad input: its status and the words of its
 * message.
 *
 * Tolerances: float32 results made with float32 sums (sgemm, the optimised
 * kernels) against double-accumulated references or PyTorch differ by a few
 * float32 roundings per term, so float32 comparisons use rtol 1e-4 plus an
 * atol of 1e-4 (values are O(1), sums of up to ~150 terms can cancel to near
 * 0); float64 comparisons use 1e-10. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "imperative/dispatch.h" /* kiln_attrs_default, for the pool gradient ops */
#include "kernels/nn.h"         /* kk_conv2d_use_simd */
#include "ops/nn_grad.h"

#include "testutil.h"

#define F32_RTOL 1e-4
#define F32_ATOL 1e-4
#define F64_TOL 1e-10

/* ------------------------------------------------------------ bookkeeping */

/* Every tensor a test makes is tracked and released by the teardown, so the
 * LSan build proves the ops leak nothing even when an assertion fails. */

/* Runs expr with the optimised kernels into opt and with the references
 * into ref. */
#define BOTH(opt, ref, expr)               \
  do {                                     \
    kiln_use_reference_kernels(false);     \
    (opt) = tu_track(expr);                       \
    kiln_use_reference_kernels(true);      \
    (ref) = tu_track(expr);                       \
    kiln_use_reference_kernels(false);     \
  } while (0)

static double tol_r(kiln_dtype dt) { return dt == KILN_F64 ? F64_TOL : F32_RTOL; }
static double tol_a(kiln_dtype dt) { return dt == KILN_F64 ? F64_TOL : F32_ATOL; }

static kiln_tensor *rnd(kiln_dtype dt, int ndim, const int64_t *shape, uint64_t seed) {
  return tu_track(tu_random(dt, ndim, shape, seed, -2.0, 2.0));
}

/* The same values as x, laid out with non-unit strides. */
static kiln_tensor *strided(kiln_tensor *x) {
  kiln_tensor *y = tu_track(tu_noncontiguous(x));
  TU_OK(y);
  int nd = kiln_tensor_ndim(x);
  /* Transposing dims 0 and nd-1 moves data only when both are longer than 1. */
  if (nd > 1 && kiln_tensor_numel(x) > 0 && kiln_tensor_dim(x, 0) > 1 && kiln_tensor_dim(x, nd - 1) > 1)
    assert_false(kiln_tensor_is_contiguous(y));
  return y;
}

static void expect_close(const char *label, kiln_tensor *got, kiln_tensor *want, kiln_dtype dt) {
  TU_OK(got);
  TU_OK(want);
  assert_true(tu_close(label, got, want, tol_r(dt), tol_a(dt)));
}

static kiln_tensor *fx(const char *name) { return tu_track(tu_fixture(name)); }

/* ------------------------------------------------------------ softmax */

static void softmax_matches_reference(void **state) {
  (void)state;
  static const struct {
    int ndim;
    int64_t shape[4];
    int axis;
  } cases[] = {
      {2, {4, 7}, -1}, {2, {4, 7}, 0},     {3, {3, 5, 6}, 1},   {3, {3, 5, 6}, -1},   {4, {2, 3, 4, 5}, 2},
      {1, {9}, 0},     {2, {0, 5}, 1},     {3, {2, 0, 3}, 1},   {2, {3, 1}, 1},       {2, {1, 300}, -1},
  };
  for (int lg = 0; lg < 2; lg++)
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
      for (int dti = 0; dti < 2; dti++)
        for (int nc = 0; nc < 2; nc++) {
          kiln_dtype dt = dti ? KILN_F64 : KILN_F32;
          kiln_tensor *x = rnd(dt, cases[i].ndim, cases[i].shape, 100 + i);
          if (nc) x = strided(x);
          kiln_tensor *a, *b;
          if (lg)
            BOTH(a, b, kiln_log_softmax(x, cases[i].axis));
          else
            BOTH(a, b, kiln_softmax(x, cases[i].axis));
          char label[96];
          snprintf(label, sizeof label, "%s case %zu %s%s", lg ? "log_softmax" : "softmax", i, kiln_dtype_name(dt),
                   nc ? " strided" : "");
          expect_close(label, a, b, dt);
        }
}

static void softmax_zero_dim_tensor(void **state) {
  (void)state;
  kiln_tensor *x = tu_track(kiln_full(KILN_F32, 0, NULL, 3.5));
  kiln_tensor *a, *b;
  BOTH(a, b, kiln_softmax(x, -1));
  double one = 1.0, zero = 0.0;
  assert_true(tu_close_values("softmax 0-d", a, &one, 1, 0, 0));
  assert_true(tu_close_values("softmax 0-d ref", b, &one, 1, 0, 0));
  BOTH(a, b, kiln_log_softmax(x, 0));
  assert_true(tu_close_values("log_softmax 0-d", a, &zero, 1, 0, 0));
  assert_true(tu_close_values("log_softmax 0-d ref", b, &zero, 1, 0, 0));
}

static void softmax_matches_pytorch(void **state) {
  (void)state;
  kiln_tensor *x = fx("nn_softmax_x");
  kiln_tensor *a, *b;
  BOTH(a, b, kiln_softmax(x, -1));
  expect_close("softmax last", a, fx("nn_softmax_last_y"), KILN_F32);
  expect_close("softmax last ref", b, fx("nn_softmax_last_y"), KILN_F32);
  BOTH(a, b, kiln_softmax(x, 1));
  expect_close("softmax mid", a, fx("nn_softmax_mid_y"), KILN_F32);
  expect_close("softmax mid ref", b, fx("nn_softmax_mid_y"), KILN_F32);
  BOTH(a, b, kiln_log_softmax(x, 2));
  expect_close("log_softmax last", a, fx("nn_log_softmax_last_y"), KILN_F32);
  expect_close("log_softmax last ref", b, fx("nn_log_softmax_last_y"), KILN_F32);
  BOTH(a, b, kiln_log_softmax(x, -2));
  expect_close("log_softmax mid", a, fx("nn_log_softmax_mid_y"), KILN_F32);
  expect_close("log_softmax mid ref", b, fx("nn_log_softmax_mid_y"), KILN_F32);
}

/* Large logits would overflow exp without the max taken out. */
static void softmax_is_stable(void **state) {
  (void)state;
  const float v[3] = {1000.0f, 1001.0f, 998.0f};
  kiln_tensor *x = tu_track(kiln_from_data(KILN_F32, 1, TU_SHAPE(3), v));
  double z = exp(-1.0) + 1.0 + exp(-3.0);
  double want[3] = {exp(-1.0) / z, 1.0 / z, exp(-3.0) / z};
  double want_log[3] = {-1.0 - log(z), -log(z), -3.0 - log(z)};
  kiln_tensor *a, *b;
  BOTH(a, b, kiln_softmax(x, 0));
  assert_true(tu_close_values("softmax large", a, want, 3, 1e-6, 1e-7));
  assert_true(tu_close_values("softmax large ref", b, want, 3, 1e-6, 1e-7));
  BOTH(a, b, kiln_log_softmax(x, 0));
  /* log_softmax of values near 1000 keeps ~1e-4 absolute precision in
   * float32: 1000 has an ulp of 6e-5. */
  assert_true(tu_close_values("log_softmax large", a, want_log, 3, 1e-5, 2e-4));
  assert_true(tu_close_values("log_softmax large ref", b, want_log, 3, 1e-5, 2e-4));
}

static void softmax_bad_inputs(void **state) {
  (void)state;
  kiln_tensor *xi = tu_track(kiln_zeros(KILN_I32, 2, TU_SHAPE(2, 3)));
  TU_FAILS(tu_track(kiln_softmax(xi, -1)), KILN_ERR_DTYPE, "softmax: input must be float32 or float64, got int32");
  kiln_tensor *x = tu_track(kiln_zeros(KILN_F32, 2, TU_SHAPE(2, 3)));
  TU_FAILS(tu_track(kiln_softmax(x, 2)), KILN_ERR_OUT_OF_RANGE, "softmax: axis 2 is out of range for 2 dims");
  TU_FAILS(tu_track(kiln_log_softmax(x, -3)), KILN_ERR_OUT_OF_RANGE, "log_softmax: axis -3");
  TU_FAILS(tu_track(kiln_softmax(NULL, 0)), KILN_ERR_INVALID_ARGUMENT, "softmax: input 0 is NULL");
}

/* ------------------------------------------------------------ cross-entropy */

static void xent_matches_reference(void **state) {
  (void)state;
  static const int64_t sizes[][2] = {{1, 1}, {5, 3}, {17, 10}, {64, 7}, {3, 200}};
  for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++)
    for (int dti = 0; dti < 2; dti++)
      for (int nc = 0; nc < 2; nc++) {
        kiln_dtype dt = dti ? KILN_F64 : KILN_F32;
        int64_t n = sizes[i][0], c = sizes[i][1];
        kiln_tensor *x = tu_track(tu_random(dt, 2, sizes[i], 200 + i, -4, 4));
        kiln_tensor *l = tu_track(tu_random(nc ? KILN_I32 : KILN_I64, 1, &n, 300 + i, 0, (double)(c - 1)));
        if (nc) {
          x = strided(x);
          l = strided(l);
        }
        kiln_tensor *a, *b;
        BOTH(a, b, kiln_softmax_cross_entropy(x, l));
        assert_int_equal(kiln_tensor_ndim(a), 0);
        assert_int_equal(kiln_tensor_dtype(a), dt);
        expect_close("xent", a, b, dt);
      }
}

static void xent_matches_pytorch(void **state) {
  (void)state;
  kiln_tensor *x = fx("nn_xent_logits"), *l = fx("nn_xent_labels"), *want = fx("nn_xent_loss");
  kiln_tensor *a, *b;
  BOTH(a, b, kiln_softmax_cross_entropy(x, l));
  expect_close("xent int64", a, want, KILN_F32);
  expect_close("xent int64 ref", b, want, KILN_F32);
  kiln_tensor *l32 = tu_track(kiln_cast(l, KILN_I32));
  BOTH(a, b, kiln_softmax_cross_entropy(x, l32));
  expect_close("xent int32", a, want, KILN_F32);
  expect_close("xent int32 ref", b, want, KILN_F32);
}

static void xent_empty_batch_is_nan(void **state) {
  (void)state;
  kiln_tensor *x = tu_track(kiln_zeros(KILN_F32, 2, TU_SHAPE(0, 4)));
  kiln_tensor *l = tu_track(kiln_zeros(KILN_I64, 1, TU_SHAPE(0)));
  kiln_tensor *a, *b;
  BOTH(a, b, kiln_softmax_cross_entropy(x, l));
  double v;
  assert_int_equal(kiln_tensor_item(a, &v), KILN_OK);
  assert_true(isnan(v));
  assert_int_equal(kiln_tensor_item(b, &v), KILN_OK);
  assert_true(isnan(v));
}

static void xent_bad_inputs(void **state) {
  (void)state;
  kiln_tensor *x = tu_track(kiln_zeros(KILN_F32, 2, TU_SHAPE(3, 5)));
  const int64_t bad_hi[3] = {0, 4, 7}, bad_neg[3] = {1, -1, 9};
  kiln_tensor *l_hi = tu_track(kiln_from_data(KILN_I64, 1, TU_SHAPE(3), bad_hi));
  kiln_tensor *l_neg = tu_track(kiln_from_data(KILN_I64, 1, TU_SHAPE(3), bad_neg));
  for (int ref = 0; ref < 2; ref++) {
    kiln_use_reference_kernels(ref);
    TU_FAILS(tu_track(kiln_softmax_cross_entropy(x, l_hi)), KILN_ERR_OUT_OF_RANGE,
             "softmax_cross_entropy: label 7 at index 2 is outside [0, 5)");
    TU_FAILS(tu_track(kiln_softmax_cross_entropy(x, l_neg)), KILN_ERR_OUT_OF_RANGE,
             "softmax_cross_entropy: label -1 at index 1 is outside [0, 5)");
  }
  kiln_use_reference_kernels(false);
  kiln_tensor *lf = tu_track(kiln_zeros(KILN_F32, 1, TU_SHAPE(3)));
  TU_FAILS(tu_track(kiln_softmax_cross_entropy(x, lf)), KILN_ERR_DTYPE,
           "softmax_cross_entropy: labels must be int32 or int64, got float32");
  kiln_tensor *l4 = tu_track(kiln_zeros(KILN_I64, 1, TU_SHAPE(4)));
  TU_FAILS(tu_track(kiln_softmax_cross_entropy(x, l4)), KILN_ERR_SHAPE,
           "softmax_cross_entropy: logits [3, 5] and labels [4] disagree on the batch size");
  kiln_tensor *x3 = tu_track(kiln_zeros(KILN_F32, 3, TU_SHAPE(3, 5, 1)));
  kiln_tensor *l3 = tu_track(kiln_zeros(KILN_I64, 1, TU_SHAPE(3)));
  TU_FAILS(tu_track(kiln_softmax_cross_entropy(x3, l3)), KILN_ERR_SHAPE,
           "softmax_cross_entropy: logits must be 2-D [N, C], got [3, 5, 1]");
  kiln_tensor *l2 = tu_track(kiln_zeros(KILN_I64, 2, TU_SHAPE(3, 1)));
  TU_FAILS(tu_track(kiln_softmax_cross_entropy(x, l2)), KILN_ERR_SHAPE, "labels must be 1-D [N], got [3, 1]");
  kiln_tensor *xi = tu_track(kiln_zeros(KILN_I64, 2, TU_SHAPE(3, 5)));
  TU_FAILS(tu_track(kiln_softmax_cross_entropy(xi, l3)), KILN_ERR_DTYPE, "logits must be float32 or float64, got int64");
}

/* ------------------------------------------------------------ conv2d */

typedef struct {
  int64_t n, c, h, w, o, kh, kw;
  int64_t stride[2], pad[2], dil[2], groups;
  bool bias;
} conv_case;

static void check_conv_case(const conv_case *k, kiln_dtype dt, bool noncontig, uint64_t seed) {
  kiln_tensor *x = rnd(dt, 4, TU_SHAPE(k->n, k->c, k->h, k->w), seed);
  kiln_tensor *w = rnd(dt, 4, TU_SHAPE(k->o, k->c / k->groups, k->kh, k->kw), seed + 1);
  kiln_tensor *b = k->bias ? rnd(dt, 1, TU_SHAPE(k->o), seed + 2) : NULL;
  if (noncontig) {
    x = strided(x);
    w = strided(w);
    if (b) b = strided(b);
  }
  kiln_conv2d_params p = kiln_conv2d_params_default();
  memcpy(p.stride, k->stride, sizeof p.stride);
  memcpy(p.padding, k->pad, sizeof p.padding);
  memcpy(p.dilation, k->dil, sizeof p.dilation);
  p.groups = k->groups;
  kiln_tensor *a, *r;
  BOTH(a, r, kiln_conv2d(x, w, b, &p));
  TU_OK(a);
  /* The portable im2col + BLAS road, where the SIMD one would be taken. */
  kk_conv2d_use_simd(false);
  kiln_tensor *portable = tu_track(kiln_conv2d(x, w, b, &p));
  kk_conv2d_use_simd(true);
  int64_t oh = (k->h + 2 * k->pad[0] - k->dil[0] * (k->kh - 1) - 1) / k->stride[0] + 1;
  int64_t ow = (k->w + 2 * k->pad[1] - k->dil[1] * (k->kw - 1) - 1) / k->stride[1] + 1;
  assert_int_equal(kiln_tensor_ndim(a), 4);
  assert_int_equal(kiln_tensor_dim(a, 0), k->n);
  assert_int_equal(kiln_tensor_dim(a, 1), k->o);
  assert_int_equal(kiln_tensor_dim(a, 2), oh);
  assert_int_equal(kiln_tensor_dim(a, 3), ow);
  char label[160];
  snprintf(label, sizeof label,
           "conv2d x[%lld,%lld,%lld,%lld] w[%lld,.,%lld,%lld] s(%lld,%lld) p(%lld,%lld) d(%lld,%lld) g%lld %s%s",
           (long long)k->n, (long long)k->c, (long long)k->h, (long long)k->w, (long long)k->o, (long long)k->kh,
           (long long)k->kw, (long long)k->stride[0], (long long)k->stride[1], (long long)k->pad[0],
           (long long)k->pad[1], (long long)k->dil[0], (long long)k->dil[1], (long long)k->groups,
           kiln_dtype_name(dt), noncontig ? " strided" : "");
  expect_close(label, a, r, dt);
  expect_close(label, portable, r, dt);
}

static void conv2d_matches_reference(void **state) {
  (void)state;
  static const conv_case cases[] = {
      /* n  c  h   w   o  kh kw  stride   pad     dil    groups bias */
      {2, 3, 7, 6, 4, 3, 3, {1, 1}, {0, 0}, {1, 1}, 1, true},
      {3, 2, 9, 8, 5, 3, 2, {2, 1}, {1, 2}, {2, 1}, 1, true},
      {2, 4, 6, 6, 6, 3, 2, {1, 1}, {1, 1}, {1, 1}, 2, false},
      {2, 6, 5, 7, 6, 3, 3, {2, 3}, {2, 1}, {1, 2}, 6, true},  /* depthwise */
      {3, 4, 5, 5, 2, 1, 1, {1, 1}, {0, 0}, {1, 1}, 1, true},  /* 1x1: no im2col, several images */
      {1, 8, 90, 90, 4, 1, 1, {1, 1}, {0, 0}, {1, 1}, 2, true}, /* 1x1, one image per block */
      {1, 8, 80, 80, 4, 3, 3, {1, 1}, {1, 1}, {1, 1}, 1, true}, /* one image per block */
      {4, 1, 28, 28, 6, 5, 5, {1, 1}, {2, 2}, {1, 1}, 1, true}, /* LeNet conv1 */
      {4, 6, 14, 14, 16, 5, 5, {1, 1}, {0, 0}, {1, 1}, 1, true}, /* LeNet conv2 */
      {2, 3, 4, 4, 2, 4, 4, {1, 1}, {0, 0}, {1, 1}, 1, false},  /* kernel = input: 1x1 output */
      {2, 2, 3, 3, 3, 5, 5, {1, 1}, {1, 1}, {1, 1}, 1, true},   /* kernel needs the padding */
      {2, 2, 2, 2, 3, 2, 2, {3, 3}, {3, 3}, {1, 1}, 1, true},   /* windows wholly in padding */
      {0, 3, 7, 6, 4, 3, 3, {1, 1}, {0, 0}, {1, 1}, 1, true},   /* empty batch */
      {2, 4, 7, 6, 0, 3, 3, {1, 1}, {0, 0}, {1, 1}, 1, false},  /* no output channels */
      {1, 2, 11, 13, 3, 3, 3, {3, 2}, {0, 4}, {3, 2}, 1, false},
      {1, 64, 60, 60, 2, 3, 3, {1, 1}, {1, 1}, {1, 1}, 1, true}, /* lowered in bands of rows */
  };
  uint64_t seed = 1000;
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
    for (int dti = 0; dti < 2; dti++)
      for (int nc = 0; nc < 2; nc++) check_conv_case(&cases[i], dti ? KILN_F64 : KILN_F32, nc, seed += 10);
}

/* A sweep over random geometries, to reach combinations nobody listed. */
static void conv2d_random_sweep(void **state) {
  (void)state;
  uint64_t s = 77;
  for (int it = 0; it < 40; it++) {
    uint64_t r[16];
    for (int j = 0; j < 16; j++) {
      s = s * 6364136223846793005ull + 1442695040888963407ull;
      r[j] = s >> 33;
    }
    conv_case k;
    k.groups = 1 + (int64_t)(r[0] % 3);
    k.c = k.groups * (1 + (int64_t)(r[1] % 3));
    k.o = k.groups * (1 + (int64_t)(r[2] % 3));
    k.n = (int64_t)(r[3] % 4);
    k.kh = 1 + (int64_t)(r[4] % 4);
    k.kw = 1 + (int64_t)(r[5] % 4);
    k.stride[0] = 1 + (int64_t)(r[6] % 3);
    k.stride[1] = 1 + (int64_t)(r[7] % 3);
    k.pad[0] = (int64_t)(r[8] % 3);
    k.pad[1] = (int64_t)(r[9] % 3);
    k.dil[0] = 1 + (int64_t)(r[10] % 2);
    k.dil[1] = 1 + (int64_t)(r[11] % 2);
    /* Big enough that the dilated kernel fits the padded input. */
    k.h = k.dil[0] * (k.kh - 1) + 1 + (int64_t)(r[12] % 9);
    k.w = k.dil[1] * (k.kw - 1) + 1 + (int64_t)(r[13] % 9);
    k.bias = r[14] % 2;
    check_conv_case(&k, KILN_F32, r[15] % 2, 5000 + (uint64_t)it * 7);
  }
}

static void conv2d_fixture(const char *name, bool bias, int64_t sh, int64_t sw, int64_t ph, int64_t pw, int64_t dh,
                           int64_t dw, int64_t groups) {
  char buf[128];
  snprintf(buf, sizeof buf, "nn_%s_x", name);
  kiln_tensor *x = fx(buf);
  snprintf(buf, sizeof buf, "nn_%s_w", name);
  kiln_tensor *w = fx(buf);
  kiln_tensor *b = NULL;
  if (bias) {
    snprintf(buf, sizeof buf, "nn_%s_b", name);
    b = fx(buf);
  }
  snprintf(buf, sizeof buf, "nn_%s_y", name);
  kiln_tensor *want = fx(buf);
  kiln_conv2d_params p = {.stride = {sh, sw}, .padding = {ph, pw}, .dilation = {dh, dw}, .groups = groups};
  kiln_tensor *a, *r;
  BOTH(a, r, kiln_conv2d(x, w, b, &p));
  expect_close(name, a, want, KILN_F32);
  expect_close(name, r, want, KILN_F32);
  kk_conv2d_use_simd(false);
  kiln_tensor *portable = tu_track(kiln_conv2d(x, w, b, &p));
  kk_conv2d_use_simd(true);
  expect_close(name, portable, want, KILN_F32);
}

static void conv2d_matches_pytorch(void **state) {
  (void)state;
  conv2d_fixture("conv_basic", true, 1, 1, 0, 0, 1, 1, 1);
  conv2d_fixture("conv_spd", true, 2, 1, 1, 2, 2, 1, 1);
  conv2d_fixture("conv_groups", false, 1, 1, 1, 1, 1, 1, 2);
  conv2d_fixture("conv_depthwise", true, 2, 2, 1, 1, 1, 1, 3);
  conv2d_fixture("conv_1x1", true, 1, 1, 0, 0, 1, 1, 1);
  conv2d_fixture("conv_lenet1", true, 1, 1, 2, 2, 1, 1, 1);
}

static void conv2d_defaults(void **state) {
  (void)state;
  kiln_conv2d_params d = kiln_conv2d_params_default();
  assert_int_equal(d.stride[0], 1);
  assert_int_equal(d.stride[1], 1);
  assert_int_equal(d.padding[0], 0);
  assert_int_equal(d.padding[1], 0);
  assert_int_equal(d.dilation[0], 1);
  assert_int_equal(d.dilation[1], 1);
  assert_int_equal(d.groups, 1);
  /* NULL params means those defaults. */
  kiln_tensor *x = rnd(KILN_F32, 4, TU_SHAPE(2, 3, 6, 5), 1);
  kiln_tensor *w = rnd(KILN_F32, 4, TU_SHAPE(4, 3, 3, 3), 2);
  kiln_tensor *a = tu_track(kiln_conv2d(x, w, NULL, NULL));
  kiln_tensor *b = tu_track(kiln_conv2d(x, w, NULL, &d));
  expect_close("conv2d NULL params", a, b, KILN_F32);
}

static void conv2d_bad_inputs(void **state) {
  (void)state;
  kiln_tensor *x = tu_track(kiln_zeros(KILN_F32, 4, TU_SHAPE(2, 4, 8, 8)));
  kiln_tensor *w = tu_track(kiln_zeros(KILN_F32, 4, TU_SHAPE(6, 4, 3, 3)));
  kiln_conv2d_params p = kiln_conv2d_params_default();

  kiln_tensor *x3 = tu_track(kiln_zeros(KILN_F32, 3, TU_SHAPE(4, 8, 8)));
  TU_FAILS(tu_track(kiln_conv2d(x3, w, NULL, NULL)), KILN_ERR_SHAPE, "conv2d: input must be 4-D [N, C, H, W], got [4, 8, 8]");
  kiln_tensor *w3 = tu_track(kiln_zeros(KILN_F32, 3, TU_SHAPE(6, 4, 3)));
  TU_FAILS(tu_track(kiln_conv2d(x, w3, NULL, NULL)), KILN_ERR_SHAPE,
           "conv2d: weight must be 4-D [O, C/groups, KH, KW], got [6, 4, 3]");
  kiln_tensor *w5 = tu_track(kiln_zeros(KILN_F32, 4, TU_SHAPE(6, 5, 3, 3)));
  TU_FAILS(tu_track(kiln_conv2d(x, w5, NULL, NULL)), KILN_ERR_SHAPE,
           "conv2d: channel mismatch: input [2, 4, 8, 8] has 4 channels, so weight [6, 5, 3, 3] should have 4");

  p.groups = 3;
  TU_FAILS(tu_track(kiln_conv2d(x, w, NULL, &p)), KILN_ERR_SHAPE,
           "conv2d: groups 3 does not divide the 4 input channels of input [2, 4, 8, 8]");
  p.groups = 4;
  kiln_tensor *w_g4 = tu_track(kiln_zeros(KILN_F32, 4, TU_SHAPE(6, 1, 3, 3)));
  TU_FAILS(tu_track(kiln_conv2d(x, w_g4, NULL, &p)), KILN_ERR_SHAPE,
           "conv2d: groups 4 does not divide the 6 output channels of weight [6, 1, 3, 3]");
  p.groups = 2;
  TU_FAILS(tu_track(kiln_conv2d(x, w, NULL, &p)), KILN_ERR_SHAPE, "should have 2 per group (groups 2), not 4");
  p.groups = 0;
  TU_FAILS(tu_track(kiln_conv2d(x, w, NULL, &p)), KILN_ERR_INVALID_ARGUMENT, "conv2d: groups must be positive, got 0");
  p = kiln_conv2d_params_default();

  p.stride[1] = 0;
  TU_FAILS(tu_track(kiln_conv2d(x, w, NULL, &p)), KILN_ERR_INVALID_ARGUMENT, "conv2d: stride must be positive, got [1, 0]");
  p.stride[1] = -2;
  TU_FAILS(tu_track(kiln_conv2d(x, w, NULL, &p)), KILN_ERR_INVALID_ARGUMENT, "conv2d: stride must be positive, got [1, -2]");
  p = kiln_conv2d_params_default();
  p.padding[0] = -1;
  TU_FAILS(tu_track(kiln_conv2d(x, w, NULL, &p)), KILN_ERR_INVALID_ARGUMENT,
           "conv2d: padding must be non-negative, got [-1, 0]");
  p = kiln_conv2d_params_default();
  p.dilation[0] = 0;
  TU_FAILS(tu_track(kiln_conv2d(x, w, NULL, &p)), KILN_ERR_INVALID_ARGUMENT, "conv2d: dilation must be positive, got [0, 1]");
  p = kiln_conv2d_params_default();

  kiln_tensor *w_big = tu_track(kiln_zeros(KILN_F32, 4, TU_SHAPE(6, 4, 9, 3)));
  TU_FAILS(tu_track(kiln_conv2d(x, w_big, NULL, &p)), KILN_ERR_SHAPE,
           "conv2d: kernel 9x3 (extent 9x3) is larger than the padded input 8x8 (input [2, 4, 8, 8], padding [0, 0])");
  p.padding[0] = 1;
  kiln_tensor *ok = tu_track(kiln_conv2d(x, w_big, NULL, &p)); /* 10 rows padded: fits */
  TU_OK(ok);
  p = kiln_conv2d_params_default();
  p.dilation[1] = 4; /* extent 4 * 2 + 1 = 9 > 8 */
  TU_FAILS(tu_track(kiln_conv2d(x, w, NULL, &p)), KILN_ERR_SHAPE, "conv2d: kernel 3x3 (extent 3x9) is larger than the padded");
  p = kiln_conv2d_params_default();

  kiln_tensor *b5 = tu_track(kiln_zeros(KILN_F32, 1, TU_SHAPE(5)));
  TU_FAILS(tu_track(kiln_conv2d(x, w, b5, NULL)), KILN_ERR_SHAPE, "conv2d: bias must be [6] for weight [6, 4, 3, 3], got [5]");
  kiln_tensor *b64 = tu_track(kiln_zeros(KILN_F64, 1, TU_SHAPE(6)));
  TU_FAILS(tu_track(kiln_conv2d(x, w, b64, NULL)), KILN_ERR_DTYPE, "conv2d: bias is float64 but the input is float32");
  kiln_tensor *w64 = tu_track(kiln_zeros(KILN_F64, 4, TU_SHAPE(6, 4, 3, 3)));
  TU_FAILS(tu_track(kiln_conv2d(x, w64, NULL, NULL)), KILN_ERR_DTYPE, "conv2d: weight is float64 but the input is float32");
  kiln_tensor *xi = tu_track(kiln_zeros(KILN_I32, 4, TU_SHAPE(2, 4, 8, 8)));
  TU_FAILS(tu_track(kiln_conv2d(xi, w, NULL, NULL)), KILN_ERR_DTYPE, "conv2d: input must be float32 or float64, got int32");
  kiln_tensor *w0 = tu_track(kiln_zeros(KILN_F32, 4, TU_SHAPE(6, 4, 0, 3)));
  TU_FAILS(tu_track(kiln_conv2d(x, w0, NULL, NULL)), KILN_ERR_SHAPE, "conv2d: kernel size must be positive");
  /* A failed input passes its failure on without running. */
  kiln_tensor *failed = tu_track(kiln_conv2d(x3, w, NULL, NULL));
  TU_FAILS(tu_track(kiln_conv2d(failed, w, NULL, NULL)), KILN_ERR_SHAPE, "conv2d: input must be 4-D");
}

/* ------------------------------------------------------------ pooling */

typedef struct {
  int64_t n, c, h, w;
  int64_t k[2], s[2], p[2];
  bool incl;
} pool_case;

static void pool_matches_reference(void **state) {
  (void)state;
  static const pool_case cases[] = {
      {2, 3, 8, 8, {2, 2}, {0, 0}, {0, 0}, false},  {2, 3, 7, 8, {3, 3}, {2, 2}, {1, 1}, false},
      {2, 3, 7, 8, {3, 3}, {2, 2}, {1, 1}, true},   {1, 2, 6, 7, {2, 3}, {1, 2}, {0, 0}, false},
      {1, 2, 9, 5, {4, 2}, {3, 1}, {2, 1}, true},   {1, 2, 9, 5, {4, 2}, {3, 1}, {2, 1}, false},
      {3, 1, 5, 5, {5, 5}, {1, 1}, {2, 2}, true},   {2, 2, 3, 3, {3, 3}, {1, 1}, {0, 0}, false},
      {0, 3, 8, 8, {2, 2}, {0, 0}, {0, 0}, false},  {2, 16, 14, 14, {2, 2}, {2, 2}, {0, 0}, false},
      {1, 1, 1, 1, {1, 1}, {1, 1}, {0, 0}, false},
  };
  uint64_t seed = 9000;
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
    for (int dti = 0; dti < 2; dti++)
      for (int nc = 0; nc < 2; nc++) {
        const pool_case *k = &cases[i];
        kiln_dtype dt = dti ? KILN_F64 : KILN_F32;
        kiln_tensor *x = rnd(dt, 4, TU_SHAPE(k->n, k->c, k->h, k->w), seed++);
        if (nc) x = strided(x);
        kiln_pool2d_params p = kiln_pool2d_params_default(k->k[0], k->k[1]);
        memcpy(p.stride, k->s, sizeof p.stride);
        memcpy(p.padding, k->p, sizeof p.padding);
        p.count_include_pad = k->incl;
        kiln_tensor *a, *r;
        char label[96];
        snprintf(label, sizeof label, "max_pool2d case %zu %s%s", i, kiln_dtype_name(dt), nc ? " strided" : "");
        BOTH(a, r, kiln_max_pool2d(x, &p));
        expect_close(label, a, r, dt);
        snprintf(label, sizeof label, "avg_pool2d case %zu %s%s", i, kiln_dtype_name(dt), nc ? " strided" : "");
        BOTH(a, r, kiln_avg_pool2d(x, &p));
        expect_close(label, a, r, dt);
        int64_t sh = k->s[0] ? k->s[0] : k->k[0], sw = k->s[1] ? k->s[1] : k->k[1];
        assert_int_equal(kiln_tensor_dim(a, 2), (k->h + 2 * k->p[0] - k->k[0]) / sh + 1);
        assert_int_equal(kiln_tensor_dim(a, 3), (k->w + 2 * k->p[1] - k->k[1]) / sw + 1);
      }
}

static void pool_fixture(const char *name, bool is_max, int64_t kh, int64_t kw, int64_t sh, int64_t sw, int64_t ph,
                         int64_t pw, bool incl) {
  char buf[128];
  snprintf(buf, sizeof buf, "nn_%s_x", name);
  kiln_tensor *x = fx(buf);
  snprintf(buf, sizeof buf, "nn_%s_y", name);
  kiln_tensor *want = fx(buf);
  kiln_pool2d_params p = {.kernel = {kh, kw}, .stride = {sh, sw}, .padding = {ph, pw}, .count_include_pad = incl};
  kiln_tensor *a, *r;
  if (is_max)
    BOTH(a, r, kiln_max_pool2d(x, &p));
  else
    BOTH(a, r, kiln_avg_pool2d(x, &p));
  expect_close(name, a, want, KILN_F32);
  expect_close(name, r, want, KILN_F32);
}

static void pool_matches_pytorch(void **state) {
  (void)state;
  pool_fixture("maxpool_k3s2p1", true, 3, 3, 2, 2, 1, 1, false);
  pool_fixture("maxpool_k2", true, 2, 2, 0, 0, 0, 0, false);
  pool_fixture("avgpool_k3s2p1_incl", false, 3, 3, 2, 2, 1, 1, true);
  pool_fixture("avgpool_k3s2p1_excl", false, 3, 3, 2, 2, 1, 1, false);
  pool_fixture("avgpool_k23s12", false, 2, 3, 1, 2, 0, 0, false);
}

static void max_pool_propagates_nan(void **state) {
  (void)state;
  const float v[8] = {1, NAN, 3, 4, 5, 6, 7, 8};
  kiln_tensor *x = tu_track(kiln_from_data(KILN_F32, 4, TU_SHAPE(1, 1, 2, 4), v));
  kiln_pool2d_params p = kiln_pool2d_params_default(2, 2);
  kiln_tensor *a, *r;
  BOTH(a, r, kiln_max_pool2d(x, &p));
  const double want[2] = {NAN, 8};
  assert_true(tu_close_values("max_pool2d NaN", a, want, 2, 0, 0));
  assert_true(tu_close_values("max_pool2d NaN ref", r, want, 2, 0, 0));
}

static void pool_bad_inputs(void **state) {
  (void)state;
  kiln_tensor *x = tu_track(kiln_zeros(KILN_F32, 4, TU_SHAPE(1, 2, 5, 6)));
  kiln_pool2d_params p = kiln_pool2d_params_default(0, 2);
  TU_FAILS(tu_track(kiln_max_pool2d(x, &p)), KILN_ERR_INVALID_ARGUMENT, "max_pool2d: kernel must be positive, got [0, 2]");
  p = kiln_pool2d_params_default(2, 2);
  p.stride[0] = -1;
  TU_FAILS(tu_track(kiln_avg_pool2d(x, &p)), KILN_ERR_INVALID_ARGUMENT,
           "avg_pool2d: stride must be non-negative, got [-1, 0]");
  p = kiln_pool2d_params_default(3, 3);
  p.padding[1] = 2;
  TU_FAILS(tu_track(kiln_max_pool2d(x, &p)), KILN_ERR_INVALID_ARGUMENT,
           "max_pool2d: padding [0, 2] must be at most half the kernel [3, 3]");
  p.padding[1] = -1;
  TU_FAILS(tu_track(kiln_max_pool2d(x, &p)), KILN_ERR_INVALID_ARGUMENT, "max_pool2d: padding must be non-negative");
  p = kiln_pool2d_params_default(6, 2);
  TU_FAILS(tu_track(kiln_avg_pool2d(x, &p)), KILN_ERR_SHAPE,
           "avg_pool2d: kernel 6x2 (extent 6x2) is larger than the padded input 5x6 (input [1, 2, 5, 6]");
  kiln_tensor *x3 = tu_track(kiln_zeros(KILN_F32, 3, TU_SHAPE(2, 5, 6)));
  p = kiln_pool2d_params_default(2, 2);
  TU_FAILS(tu_track(kiln_max_pool2d(x3, &p)), KILN_ERR_SHAPE, "max_pool2d: input must be 4-D [N, C, H, W], got [2, 5, 6]");
  kiln_tensor *xi = tu_track(kiln_zeros(KILN_I64, 4, TU_SHAPE(1, 2, 5, 6)));
  TU_FAILS(tu_track(kiln_avg_pool2d(xi, &p)), KILN_ERR_DTYPE, "avg_pool2d: input must be float32 or float64, got int64");
  TU_FAILS(tu_track(kiln_max_pool2d(x, NULL)), KILN_ERR_INVALID_ARGUMENT, "max_pool2d: params is NULL");
}

/* The pool kernels' roads on random shapes, against the reference, forward
 * and backward (the gradient ops as autograd calls them): the 2x2 stride-2
 * loops (rows of 1 to 20 outputs cover their 8-, 4- and 1-wide blocks, the
 * two-row blocks and the overlapped last block; odd sizes leave a row and a
 * column no window covers) and the general ones (border and interior
 * windows, padding, stride other than the kernel), float32 with the SIMD
 * kernels on and off, float64, on inputs read in place through plane and row
 * strides (subsamples of images, channels and rows; reversed rows) or copied
 * (transposed, a column subsample), and on data full of ties, zeros,
 * infinities and NaN, where the max's gradient must go to the same position
 * as the reference's. */

static int64_t pool_pick(uint64_t *s, int64_t lo, int64_t hi) {
  return lo + (int64_t)(tu_rng_next(s) % (uint64_t)(hi - lo + 1));
}

enum { POOL_LAYOUTS = 6 };
static const char *const pool_layout_names[POOL_LAYOUTS] = {
    "contiguous", "transposed", "every other image, channel and row", "reversed rows", "every other column",
    "every other row"};

static kiln_tensor *pool_input(kiln_dtype dt, const int64_t shape[4], int layout, bool ties, uint64_t *s) {
  int64_t base[4] = {shape[0], shape[1], shape[2], shape[3]};
  if (layout == 2) base[0] *= 2, base[1] *= 2, base[2] *= 2;
  if (layout == 4) base[3] *= 2;
  if (layout == 5) base[2] *= 2;
  int64_t n = base[0] * base[1] * base[2] * base[3];
  double *v = malloc((size_t)(n ? n : 1) * sizeof(double));
  assert_non_null(v);
  static const double levels[] = {0, 0, 0, 0, 1, 1, 1, -1, -1, -1, 2, NAN, -INFINITY, INFINITY};
  for (int64_t i = 0; i < n; i++) {
    uint64_t r = tu_rng_next(s) % 16;
    v[i] = ties && r < 14 ? levels[r] : -2 + 4 * tu_rng_unit(s);
  }
  kiln_tensor *t = tu_track(kiln_from_data(KILN_F64, 4, base, v));
  free(v);
  if (dt != KILN_F64) t = tu_track(kiln_cast(t, dt));
  switch (layout) {
    case 1: t = tu_track(tu_noncontiguous(t)); break;
    case 2:
      for (int a = 0; a < 3; a++) t = tu_track(kiln_slice(t, a, a == 2, KILN_END, 2));
      break;
    case 3: t = tu_track(kiln_slice(t, 2, KILN_END, KILN_END, -1)); break;
    case 4: t = tu_track(kiln_slice(t, 3, 0, KILN_END, 2)); break;
    case 5: t = tu_track(kiln_slice(t, 2, 1, KILN_END, 2)); break;
  }
  TU_OK(t);
  assert_memory_equal(kiln_tensor_shape(t), shape, 4 * sizeof(int64_t));
  return t;
}

/* Runs expr with the optimised kernels, again with their SIMD roads off, and
 * with the references, and compares both optimised results with the last. */
#define POOL_THREE(label, dt, expr)                                         \
  do {                                                                      \
    kiln_tensor *opt_, *portable_, *ref_;                                   \
    unsigned old_ = kk_set_options(kk_options() | KK_OPT_NO_SIMD);          \
    portable_ = tu_track(expr);                                             \
    kk_set_options(old_);                                                   \
    BOTH(opt_, ref_, expr);                                                 \
    expect_close(label, opt_, ref_, dt);                                    \
    expect_close(label, portable_, ref_, dt);                               \
  } while (0)

static void pool_random_shapes_match_reference(void **state) {
  (void)state;
  uint64_t s = 4242;
  for (int it = 0; it < 400; it++) {
    kiln_dtype dt = it % 2 ? KILN_F64 : KILN_F32;
    bool two = it % 3 != 2;
    int64_t k[2] = {2, 2}, st[2] = {2 * pool_pick(&s, 0, 1), 2 * pool_pick(&s, 0, 1)}, pad[2] = {0, 0};
    if (!two)
      for (int a = 0; a < 2; a++) {
        k[a] = pool_pick(&s, 1, 4);
        st[a] = pool_pick(&s, 0, 3);
        pad[a] = pool_pick(&s, 0, k[a] / 2);
      }
    int64_t h0 = k[0] - 2 * pad[0] > 1 ? k[0] - 2 * pad[0] : 1, w0 = k[1] - 2 * pad[1] > 1 ? k[1] - 2 * pad[1] : 1;
    int64_t shape[4] = {pool_pick(&s, 0, 3), pool_pick(&s, 1, 4), h0 + pool_pick(&s, 0, two ? 19 : 9),
                        w0 + pool_pick(&s, 0, two ? 38 : 12)};
    int layout = (int)pool_pick(&s, 0, POOL_LAYOUTS - 1), glayout = (int)pool_pick(&s, 0, POOL_LAYOUTS - 1);
    bool ties = pool_pick(&s, 0, 1), incl = pool_pick(&s, 0, 1);
    kiln_tensor *x = pool_input(dt, shape, layout, ties, &s);
    kiln_pool2d_params p = {.kernel = {k[0], k[1]}, .stride = {st[0], st[1]}, .padding = {pad[0], pad[1]},
                            .count_include_pad = incl};
    for (int avg = 0; avg < 2; avg++) {
      char label[256];
      snprintf(label, sizeof label,
               "case %d %s %s: x [%lld, %lld, %lld, %lld] %s%s, k %lldx%lld stride %lldx%lld pad %lldx%lld%s", it,
               avg ? "avg" : "max", kiln_dtype_name(dt), (long long)shape[0], (long long)shape[1],
               (long long)shape[2], (long long)shape[3], pool_layout_names[layout], ties ? " with ties" : "",
               (long long)k[0], (long long)k[1], (long long)st[0], (long long)st[1], (long long)pad[0],
               (long long)pad[1], avg && incl ? " count_include_pad" : "");
      POOL_THREE(label, dt, avg ? kiln_avg_pool2d(x, &p) : kiln_max_pool2d(x, &p));
      kiln_tensor *y = tu_track(avg ? kiln_avg_pool2d(x, &p) : kiln_max_pool2d(x, &p));
      TU_OK(y);
      kiln_tensor *gy = pool_input(dt, kiln_tensor_shape(y), glayout, false, &s);
      kiln_op_id fwd = avg ? KILN_OP_AVG_POOL2D : KILN_OP_MAX_POOL2D;
      kiln_attr_value a[KILN_MAX_ATTRS];
      kiln_attrs_default(fwd, a);
      kiln_attr_set_ints(&a[0], 2, p.kernel);
      kiln_attr_set_ints(&a[1], 2, p.stride);
      kiln_attr_set_ints(&a[2], 2, p.padding);
      if (avg) a[3].i = p.count_include_pad;
      char glabel[300];
      snprintf(glabel, sizeof glabel, "%s, backward (gy %s)", label, pool_layout_names[glayout]);
      POOL_THREE(glabel, dt, nn_pool2d_backward(fwd, gy, x, a));
    }
  }
}

/* ------------------------------------------------------------ batch norm */

static void batch_norm_matches_reference(void **state) {
  (void)state;
  static const struct {
    int ndim;
    int64_t shape[5];
  } cases[] = {{2, {8, 3}}, {3, {4, 5, 6}}, {4, {3, 4, 5, 5}}, {5, {2, 3, 2, 3, 2}}, {4, {0, 3, 4, 4}},
               {4, {1, 2, 1, 1}}};
  uint64_t seed = 4000;
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
    for (int dti = 0; dti < 2; dti++)
      for (int nc = 0; nc < 2; nc++) {
        kiln_dtype dt = dti ? KILN_F64 : KILN_F32;
        int64_t c = cases[i].shape[1];
        kiln_tensor *x = rnd(dt, cases[i].ndim, cases[i].shape, seed++);
        kiln_tensor *g = rnd(dt, 1, &c, seed++), *b = rnd(dt, 1, &c, seed++), *m = rnd(dt, 1, &c, seed++);
        kiln_tensor *v = tu_track(tu_random(dt, 1, &c, seed++, 0.5, 2.0));
        if (nc) {
          x = strided(x);
          g = strided(g);
          v = strided(v);
        }
        char label[96];
        snprintf(label, sizeof label, "batch_norm case %zu %s%s", i, kiln_dtype_name(dt), nc ? " strided" : "");
        kiln_tensor *a, *r;
        BOTH(a, r, kiln_batch_norm(x, g, b, m, v, 1e-5));
        expect_close(label, a, r, dt);
        if (kiln_tensor_numel(x) / c < 2) continue; /* training needs two values per channel */
        kiln_tensor *am, *av, *rm, *rv;
        kiln_use_reference_kernels(false);
        a = tu_track(kiln_batch_norm_train(x, g, b, 1e-3, &am, &av));
        tu_track(am);
        tu_track(av);
        kiln_use_reference_kernels(true);
        r = tu_track(kiln_batch_norm_train(x, g, b, 1e-3, &rm, &rv));
        tu_track(rm);
        tu_track(rv);
        kiln_use_reference_kernels(false);
        snprintf(label, sizeof label, "batch_norm_train case %zu %s%s", i, kiln_dtype_name(dt), nc ? " strided" : "");
        expect_close(label, a, r, dt);
        expect_close("batch mean", am, rm, dt);
        expect_close("batch var", av, rv, dt);
      }
}

static void batch_norm_matches_pytorch(void **state) {
  (void)state;
  static const char *const names[] = {"bn4d", "bn2d"};
  for (int i = 0; i < 2; i++) {
    char buf[128];
#define LOAD(var, what)                                      \
  snprintf(buf, sizeof buf, "nn_%s_%s", names[i], (what));   \
  kiln_tensor *var = fx(buf)
    LOAD(x, "x");
    LOAD(g, "gamma");
    LOAD(b, "beta");
    LOAD(rm, "rmean");
    LOAD(rv, "rvar");
    LOAD(want_infer, "infer_y");
    LOAD(want_y, "train_y");
    LOAD(want_mean, "train_mean");
    LOAD(want_var, "train_var");
#undef LOAD
    for (int ref = 0; ref < 2; ref++) {
      kiln_use_reference_kernels(ref);
      expect_close(names[i], tu_track(kiln_batch_norm(x, g, b, rm, rv, 1e-5)), want_infer, KILN_F32);
      kiln_tensor *mean, *var;
      kiln_tensor *y = tu_track(kiln_batch_norm_train(x, g, b, 1e-5, &mean, &var));
      tu_track(mean);
      tu_track(var);
      expect_close("train y", y, want_y, KILN_F32);
      expect_close("train mean", mean, want_mean, KILN_F32);
      expect_close("train unbiased var", var, want_var, KILN_F32);
    }
    kiln_use_reference_kernels(false);
  }
}

/* Outputs the caller does not ask for are dropped, with or without a scope
 * open (the LSan build checks that nothing leaks or is freed twice). */
static void batch_norm_train_optional_outputs(void **state) {
  (void)state;
  kiln_tensor *x = rnd(KILN_F32, 2, TU_SHAPE(6, 3), 1);
  kiln_tensor *g = tu_track(kiln_ones(KILN_F32, 1, TU_SHAPE(3))), *b = tu_track(kiln_zeros(KILN_F32, 1, TU_SHAPE(3)));
  kiln_tensor *mean;
  kiln_tensor *y1 = tu_track(kiln_batch_norm_train(x, g, b, 1e-5, NULL, NULL));
  kiln_tensor *y2 = tu_track(kiln_batch_norm_train(x, g, b, 1e-5, &mean, NULL));
  tu_track(mean);
  TU_OK(y1);
  TU_OK(mean);
  expect_close("y without stats", y1, y2, KILN_F32);
  assert_int_equal(kiln_scope_begin(), KILN_OK);
  kiln_tensor *var;
  kiln_tensor *y3 = kiln_batch_norm_train(x, g, b, 1e-5, NULL, &var);
  TU_OK(y3);
  TU_OK(var);
  expect_close("y in a scope", y3, y1, KILN_F32);
  kiln_tensor *kept = kiln_keep(y3);
  assert_int_equal(kiln_scope_end(), KILN_OK);
  expect_close("kept y", tu_track(kept), y1, KILN_F32);
}

static void batch_norm_bad_inputs(void **state) {
  (void)state;
  kiln_tensor *x = tu_track(kiln_zeros(KILN_F32, 4, TU_SHAPE(2, 3, 4, 4)));
  kiln_tensor *c3 = tu_track(kiln_ones(KILN_F32, 1, TU_SHAPE(3)));
  kiln_tensor *c4 = tu_track(kiln_ones(KILN_F32, 1, TU_SHAPE(4)));
  kiln_tensor *c3d = tu_track(kiln_ones(KILN_F64, 1, TU_SHAPE(3)));
  kiln_tensor *c31 = tu_track(kiln_ones(KILN_F32, 2, TU_SHAPE(3, 1)));
  kiln_tensor *x1 = tu_track(kiln_zeros(KILN_F32, 1, TU_SHAPE(3)));
  TU_FAILS(tu_track(kiln_batch_norm(x1, c3, c3, c3, c3, 1e-5)), KILN_ERR_SHAPE,
           "batch_norm: input must be [N, C, ...] with at least 2 dims, got [3]");
  TU_FAILS(tu_track(kiln_batch_norm(x, c4, c3, c3, c3, 1e-5)), KILN_ERR_SHAPE,
           "batch_norm: gamma [4] does not match the 3 channels of input [2, 3, 4, 4]");
  TU_FAILS(tu_track(kiln_batch_norm(x, c3, c3, c3, c31, 1e-5)), KILN_ERR_SHAPE,
           "batch_norm: running_var [3, 1] does not match the 3 channels");
  TU_FAILS(tu_track(kiln_batch_norm(x, c3, c3, c3d, c3, 1e-5)), KILN_ERR_DTYPE,
           "batch_norm: running_mean is float64 but the input is float32");
  TU_FAILS(tu_track(kiln_batch_norm(x, c3, c3, c3, c3, -1.0)), KILN_ERR_INVALID_ARGUMENT,
           "batch_norm: eps must be finite and non-negative, got -1");
  kiln_tensor *xi = tu_track(kiln_zeros(KILN_I32, 2, TU_SHAPE(2, 3)));
  TU_FAILS(tu_track(kiln_batch_norm(xi, c3, c3, c3, c3, 1e-5)), KILN_ERR_DTYPE, "batch_norm: input must be float32");
  kiln_tensor *mean = NULL, *var = NULL;
  TU_FAILS(tu_track(kiln_batch_norm_train(x, c3, c4, 1e-5, &mean, &var)), KILN_ERR_SHAPE,
           "batch_norm_train: beta [4] does not match the 3 channels");
  /* The statistics carry the failure too. */
  TU_FAILS(tu_track(mean), KILN_ERR_SHAPE, "batch_norm_train: beta [4]");
  TU_FAILS(tu_track(var), KILN_ERR_SHAPE, "batch_norm_train: beta [4]");
  kiln_tensor *one = tu_track(kiln_zeros(KILN_F32, 4, TU_SHAPE(1, 3, 1, 1)));
  TU_FAILS(tu_track(kiln_batch_norm_train(one, c3, c3, 1e-5, NULL, NULL)), KILN_ERR_SHAPE,
           "batch_norm_train: expected more than 1 value per channel when training, got input [1, 3, 1, 1]");
  kiln_tensor *empty = tu_track(kiln_zeros(KILN_F32, 2, TU_SHAPE(0, 3)));
  TU_FAILS(tu_track(kiln_batch_norm_train(empty, c3, c3, 1e-5, NULL, NULL)), KILN_ERR_SHAPE,
           "expected more than 1 value per channel");
}

/* ------------------------------------------------------------ dropout */

static void dropout_is_reproducible(void **state) {
  (void)state;
  kiln_tensor *x = rnd(KILN_F32, 2, TU_SHAPE(37, 41), 5);
  kiln_generator *g1 = kiln_generator_new(42), *g2 = kiln_generator_new(42), *g3 = kiln_generator_new(43);
  kiln_tensor *a = tu_track(kiln_dropout(g1, x, 0.4));
  kiln_tensor *b = tu_track(kiln_dropout(g2, x, 0.4));
  kiln_tensor *c = tu_track(kiln_dropout(g3, x, 0.4));
  kiln_tensor *a2 = tu_track(kiln_dropout(g1, x, 0.4)); /* the next counters: a new mask */
  TU_OK(a);
  assert_true(tu_close("same seed", a, b, 0, 0));
  int64_t n = kiln_tensor_numel(x);
  float *va = malloc(sizeof(float) * (size_t)n), *vc = malloc(sizeof(float) * (size_t)n),
        *va2 = malloc(sizeof(float) * (size_t)n);
  assert_int_equal(kiln_tensor_copy_to(a, va, sizeof(float) * (size_t)n), KILN_OK);
  assert_int_equal(kiln_tensor_copy_to(c, vc, sizeof(float) * (size_t)n), KILN_OK);
  assert_int_equal(kiln_tensor_copy_to(a2, va2, sizeof(float) * (size_t)n), KILN_OK);
  int differ_seed = 0, differ_next = 0;
  for (int64_t i = 0; i < n; i++) {
    differ_seed += (va[i] == 0) != (vc[i] == 0);
    differ_next += (va[i] == 0) != (va2[i] == 0);
  }
  /* Two independent masks with p = 0.4 disagree on ~48% of elements. */
  assert_true(differ_seed > n / 4);
  assert_true(differ_next > n / 4);
  free(va);
  free(vc);
  free(va2);
  /* The default generator, reseeded, repeats itself. */
  kiln_seed(7);
  kiln_tensor *d1 = tu_track(kiln_dropout(NULL, x, 0.5));
  kiln_seed(7);
  kiln_tensor *d2 = tu_track(kiln_dropout(NULL, x, 0.5));
  assert_true(tu_close("kiln_seed repeats", d1, d2, 0, 0));
  kiln_generator_free(g1);
  kiln_generator_free(g2);
  kiln_generator_free(g3);
}

static void dropout_statistics(void **state) {
  (void)state;
  const int64_t n = 200000;
  const double p = 0.3;
  kiln_tensor *x = tu_track(kiln_ones(KILN_F32, 1, &n));
  kiln_generator *g = kiln_generator_new(2024);
  kiln_tensor *y = tu_track(kiln_dropout(g, x, p));
  kiln_generator_free(g);
  float *v = malloc(sizeof(float) * (size_t)n);
  assert_int_equal(kiln_tensor_copy_to(y, v, sizeof(float) * (size_t)n), KILN_OK);
  int64_t kept = 0;
  double sum = 0;
  float scale = (float)(1.0 / (1.0 - p));
  for (int64_t i = 0; i < n; i++) {
    if (v[i] != 0) {
      kept++;
      /* A kept element is exactly x / (1 - p) rounded to float32. */
      assert_true(fabsf(v[i] - scale) <= 1e-6f * scale);
    }
    sum += v[i];
  }
  free(v);
  /* The kept fraction is binomial: sd = sqrt(p (1 - p) / n) ~ 0.001, so
   * 0.01 is ten standard deviations. The mean of y estimates E[x] = 1. */
  double frac = (double)kept / (double)n;
  assert_true(fabs(frac - (1 - p)) < 0.01);
  assert_true(fabs(sum / (double)n - 1.0) < 0.015);
}

static void dropout_matches_reference(void **state) {
  (void)state;
  for (int dti = 0; dti < 2; dti++)
    for (int nc = 0; nc < 2; nc++) {
      kiln_dtype dt = dti ? KILN_F64 : KILN_F32;
      kiln_tensor *x = rnd(dt, 3, TU_SHAPE(4, 9, 11), 60 + (uint64_t)(dti * 2 + nc));
      if (nc) x = strided(x);
      kiln_tensor *a, *r;
      /* The same generator state for both runs: reseed between. */
      kiln_seed(99);
      kiln_use_reference_kernels(false);
      a = tu_track(kiln_dropout(NULL, x, 0.25));
      kiln_seed(99);
      kiln_use_reference_kernels(true);
      r = tu_track(kiln_dropout(NULL, x, 0.25));
      kiln_use_reference_kernels(false);
      /* The optimised kernel multiplies by a rounded 1/(1-p), the reference
       * divides in double: one float32 rounding apart. */
      assert_true(tu_close("dropout vs reference", a, r, dt == KILN_F64 ? 1e-15 : 1e-6, 0));
    }
  /* The mask follows the logical element index, not the layout: the same
   * values strided or not give the same output. */
  kiln_tensor *x = rnd(KILN_F32, 2, TU_SHAPE(13, 17), 3);
  kiln_seed(5);
  kiln_tensor *a = tu_track(kiln_dropout(NULL, x, 0.5));
  kiln_seed(5);
  kiln_tensor *b = tu_track(kiln_dropout(NULL, strided(x), 0.5));
  assert_true(tu_close("dropout layout-independent", a, b, 0, 0));
}

static void dropout_p0_and_empty(void **state) {
  (void)state;
  kiln_tensor *x = rnd(KILN_F32, 2, TU_SHAPE(8, 9), 11);
  kiln_tensor *a, *r;
  BOTH(a, r, kiln_dropout(NULL, x, 0.0));
  assert_true(tu_close("p = 0 is the identity", a, x, 0, 0));
  assert_true(tu_close("p = 0 is the identity (ref)", r, x, 0, 0));
  kiln_tensor *e = tu_track(kiln_zeros(KILN_F32, 2, TU_SHAPE(0, 4)));
  kiln_tensor *y = tu_track(kiln_dropout(NULL, e, 0.5));
  TU_OK(y);
  assert_int_equal(kiln_tensor_numel(y), 0);
  assert_int_equal(kiln_tensor_dim(y, 1), 4);
}

static void dropout_bad_inputs(void **state) {
  (void)state;
  kiln_tensor *x = tu_track(kiln_ones(KILN_F32, 1, TU_SHAPE(4)));
  TU_FAILS(tu_track(kiln_dropout(NULL, x, 1.0)), KILN_ERR_OUT_OF_RANGE, "dropout: p must be in [0, 1), got 1");
  TU_FAILS(tu_track(kiln_dropout(NULL, x, -0.1)), KILN_ERR_OUT_OF_RANGE, "dropout: p must be in [0, 1), got -0.1");
  TU_FAILS(tu_track(kiln_dropout(NULL, x, NAN)), KILN_ERR_OUT_OF_RANGE, "dropout: p must be in [0, 1), got nan");
  kiln_tensor *xi = tu_track(kiln_ones(KILN_I64, 1, TU_SHAPE(4)));
  TU_FAILS(tu_track(kiln_dropout(NULL, xi, 0.5)), KILN_ERR_DTYPE, "dropout: input must be float32 or float64, got int64");
}

/* ------------------------------------------------------------ empty batches */

static void zero_size_batches(void **state) {
  (void)state;
  kiln_tensor *x = tu_track(kiln_zeros(KILN_F32, 4, TU_SHAPE(0, 3, 8, 8)));
  kiln_tensor *w = rnd(KILN_F32, 4, TU_SHAPE(5, 3, 3, 3), 1);
  kiln_tensor *b = rnd(KILN_F32, 1, TU_SHAPE(5), 2);
  kiln_conv2d_params cp = kiln_conv2d_params_default();
  cp.padding[0] = cp.padding[1] = 1;
  kiln_tensor *y = tu_track(kiln_conv2d(x, w, b, &cp));
  TU_OK(y);
  assert_int_equal(kiln_tensor_dim(y, 0), 0);
  assert_int_equal(kiln_tensor_dim(y, 1), 5);
  assert_int_equal(kiln_tensor_dim(y, 2), 8);
  kiln_pool2d_params pp = kiln_pool2d_params_default(2, 2);
  y = tu_track(kiln_max_pool2d(x, &pp));
  TU_OK(y);
  assert_int_equal(kiln_tensor_dim(y, 3), 4);
  y = tu_track(kiln_avg_pool2d(x, &pp));
  TU_OK(y);
  assert_int_equal(kiln_tensor_dim(y, 2), 4);
  kiln_tensor *c3 = tu_track(kiln_ones(KILN_F32, 1, TU_SHAPE(3)));
  y = tu_track(kiln_batch_norm(x, c3, c3, c3, c3, 1e-5));
  TU_OK(y);
  assert_int_equal(kiln_tensor_numel(y), 0);
  y = tu_track(kiln_softmax(x, 1));
  TU_OK(y);
  assert_int_equal(kiln_tensor_ndim(y), 4);
}

/* ------------------------------------------------------------ allocation failures */

/* Fails each allocation of one call in turn: every outcome is success or
 * KILN_ERR_OUT_OF_MEMORY with a message, never a crash or a leak. */
#define EACH_ALLOCATION_FAILS(label, expr)                                                          \
  do {                                                                                              \
    for (long fail_at = 0;; fail_at++) {                                                            \
      kiln_waitall(); /* nothing in flight while the allocator changes */                          \
      tu_fail_allocation(fail_at);                                                                  \
      kiln_tensor *r_ = (expr);                                                                     \
      kiln_waitall(); /* the op's kernel allocates on an engine worker */                           \
      tu_restore_allocator();                                                                       \
      kiln_status st_ = kiln_tensor_status(r_);                                                     \
      if (st_ != KILN_OK && st_ != KILN_ERR_OUT_OF_MEMORY)                                          \
        fprintf(stderr, "%s: allocation %ld failing gave %s: %s\n", (label), fail_at,              \
                kiln_status_name(st_), kiln_tensor_error(r_));                                      \
      assert_true(st_ == KILN_OK || st_ == KILN_ERR_OUT_OF_MEMORY);                                 \
      if (st_ != KILN_OK) assert_true(strlen(kiln_tensor_error(r_)) > 0);                           \
      kiln_tensor_release(r_);                                                                      \
      if (st_ == KILN_OK && tu_allocations() <= fail_at) break;                                     \
    }                                                                                               \
  } while (0)

static void allocation_failures(void **state) {
  (void)state;
  kiln_tensor *x = strided(rnd(KILN_F32, 4, TU_SHAPE(3, 4, 9, 9), 1));
  kiln_tensor *w = strided(rnd(KILN_F32, 4, TU_SHAPE(6, 4, 3, 3), 2));
  kiln_tensor *b = rnd(KILN_F32, 1, TU_SHAPE(6), 3);
  kiln_conv2d_params cp = kiln_conv2d_params_default();
  EACH_ALLOCATION_FAILS("conv2d", kiln_conv2d(x, w, b, &cp));
  kk_conv2d_use_simd(false);
  EACH_ALLOCATION_FAILS("conv2d portable", kiln_conv2d(x, w, b, &cp));
  kk_conv2d_use_simd(true);
  cp.stride[0] = 2;
  EACH_ALLOCATION_FAILS("conv2d strided", kiln_conv2d(x, w, b, &cp));
  kiln_pool2d_params pp = kiln_pool2d_params_default(3, 3);
  EACH_ALLOCATION_FAILS("max_pool2d", kiln_max_pool2d(x, &pp));
  EACH_ALLOCATION_FAILS("avg_pool2d", kiln_avg_pool2d(x, &pp));
  EACH_ALLOCATION_FAILS("softmax", kiln_softmax(x, 1));
  EACH_ALLOCATION_FAILS("log_softmax", kiln_log_softmax(x, -1));
  kiln_tensor *c4 = tu_track(kiln_ones(KILN_F32, 1, TU_SHAPE(4)));
  EACH_ALLOCATION_FAILS("batch_norm", kiln_batch_norm(x, c4, c4, c4, c4, 1e-5));
  EACH_ALLOCATION_FAILS("batch_norm_train", kiln_batch_norm_train(x, c4, c4, 1e-5, NULL, NULL));
  EACH_ALLOCATION_FAILS("dropout", kiln_dropout(NULL, x, 0.5));
  kiln_tensor *logits = strided(rnd(KILN_F32, 2, TU_SHAPE(5, 7), 4));
  kiln_tensor *labels = tu_track(kiln_zeros(KILN_I32, 1, TU_SHAPE(5)));
  EACH_ALLOCATION_FAILS("softmax_cross_entropy", kiln_softmax_cross_entropy(logits, labels));
}

int main(void) {
  const struct CMUnitTest tests[] = {
#define TEST(f) cmocka_unit_test_teardown(f, tu_release_tracked)
      TEST(softmax_matches_reference),
      TEST(softmax_zero_dim_tensor),
      TEST(softmax_matches_pytorch),
      TEST(softmax_is_stable),
      TEST(softmax_bad_inputs),
      TEST(xent_matches_reference),
      TEST(xent_matches_pytorch),
      TEST(xent_empty_batch_is_nan),
      TEST(xent_bad_inputs),
      TEST(conv2d_matches_reference),
      TEST(conv2d_random_sweep),
      TEST(conv2d_matches_pytorch),
      TEST(conv2d_defaults),
      TEST(conv2d_bad_inputs),
      TEST(pool_matches_reference),
      TEST(pool_matches_pytorch),
      TEST(max_pool_propagates_nan),
      TEST(pool_bad_inputs),
      TEST(pool_random_shapes_match_reference),
      TEST(batch_norm_matches_reference),
      TEST(batch_norm_matches_pytorch),
      TEST(batch_norm_train_optional_outputs),
      TEST(batch_norm_bad_inputs),
      TEST(dropout_is_reproducible),
      TEST(dropout_statistics),
      TEST(dropout_matches_reference),
      TEST(dropout_p0_and_empty),
      TEST(dropout_bad_inputs),
      TEST(zero_size_batches),
      TEST(allocation_failures),
#undef TEST
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
