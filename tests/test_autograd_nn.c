/* Autograd of the convolution and pooling ops and their gradient ops
 * (conv2d_backward_data, conv2d_backward_weight, max_pool2d_backward,
 * avg_pool2d_backward), and of dropout.
 *
 * Two kinds of check. Every gradient against central finite differences in
 * float64 (tu_check_gradients in testutil.c): the loss is
 * sum(op(x) * w) for fixed random w, so each output element's gradient is
 * exercised with a different weight. Max pooling is checked on random
 * inputs, where a tie (and so a kink finite differences would straddle) has
 * probability zero. And the gradient ops' optimised kernels against their
 * references on random geometries, contiguous and not, in float32 and
 * float64, plus their inference failures. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "imperative/dispatch.h"
#include "ops/nn_grad.h"
#include "testutil.h"


/* ------------------------------------------------------------ finite differences */

static kiln_conv2d_params conv_p;
static kiln_pool2d_params pool_p;

static kiln_tensor *f_conv(kiln_tensor **in) { return kiln_conv2d(in[0], in[1], NULL, &conv_p); }
static kiln_tensor *f_conv_bias(kiln_tensor **in) { return kiln_conv2d(in[0], in[1], in[2], &conv_p); }
static kiln_tensor *f_max_pool(kiln_tensor **in) { return kiln_max_pool2d(in[0], &pool_p); }
static kiln_tensor *f_avg_pool(kiln_tensor **in) { return kiln_avg_pool2d(in[0], &pool_p); }
/* A pool after a convolution, as in LeNet: both gradients chained. */
static kiln_tensor *f_lenet_block(kiln_tensor **in) {
  kiln_pool2d_params p = kiln_pool2d_params_default(2, 2);
  return kiln_max_pool2d(kiln_relu(kiln_conv2d(in[0], in[1], in[2], &conv_p)), &p);
}

typedef struct {
  const char *name;
  int64_t n, c, h, w, o, kh, kw;
  int64_t stride[2], pad[2], dil[2], groups;
  bool bias;
} conv_case;

static void conv2d_gradients(void **state) {
  (void)state;
  static const conv_case cases[] = {
      {"stride 1", 2, 3, 5, 6, 4, 3, 3, {1, 1}, {0, 0}, {1, 1}, 1, true},
      {"stride 1, no bias", 2, 3, 5, 6, 4, 3, 2, {1, 1}, {0, 0}, {1, 1}, 1, false},
      {"stride 2, padding 1", 2, 2, 7, 6, 3, 3, 3, {2, 2}, {1, 1}, {1, 1}, 1, true},
      {"stride (2, 1), padding (1, 2)", 1, 2, 6, 5, 3, 2, 3, {2, 1}, {1, 2}, {1, 1}, 1, false},
      {"dilation 2, padding 2", 2, 2, 7, 7, 2, 3, 3, {1, 1}, {2, 2}, {2, 2}, 1, true},
      {"groups 2", 2, 4, 5, 5, 6, 3, 3, {1, 1}, {1, 1}, {1, 1}, 2, true},
      {"groups 3, stride 2, dilation (1, 2)", 1, 3, 7, 8, 3, 2, 2, {2, 2}, {1, 0}, {1, 2}, 3, false},
      {"1x1", 2, 3, 4, 4, 2, 1, 1, {1, 1}, {0, 0}, {1, 1}, 1, true},
  };
  for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
    const conv_case *k = &cases[i];
    conv_p = kiln_conv2d_params_default();
    memcpy(conv_p.stride, k->stride, sizeof k->stride);
    memcpy(conv_p.padding, k->pad, sizeof k->pad);
    memcpy(conv_p.dilation, k->dil, sizeof k->dil);
    conv_p.groups = k->groups;
    kiln_tensor *in[3] = {tu_random_f64(4, (int64_t[]){k->n, k->c, k->h, k->w}, 10 + i, -1, 1),
                          tu_random_f64(4, (int64_t[]){k->o, k->c / k->groups, k->kh, k->kw}, 20 + i, -1, 1),
                          tu_random_f64(1, (int64_t[]){k->o}, 30 + i, -1, 1)};
    char label[160];
    snprintf(label, sizeof label, "conv2d %s", k->name);
    tu_check_gradients(label, k->bias ? f_conv_bias : f_conv, k->bias ? 3 : 2, in);
    tu_release_n(3, in);
  }
}

static void lenet_block_gradients(void **state) {
  (void)state;
  conv_p = kiln_conv2d_params_default();
  conv_p.padding[0] = conv_p.padding[1] = 1;
  kiln_tensor *in[3] = {tu_random_f64(4, (int64_t[]){2, 1, 6, 6}, 41, -1, 1), tu_random_f64(4, (int64_t[]){3, 1, 3, 3}, 42, -1, 1),
                        tu_random_f64(1, (int64_t[]){3}, 43, -0.1, 0.1)};
  tu_check_gradients("conv2d + relu + max_pool2d", f_lenet_block, 3, in);
  tu_release_n(3, in);
}

typedef struct {
  const char *name;
  int64_t kernel[2], stride[2], pad[2];
  bool include_pad;
} pool_case;

static const pool_case pool_cases[] = {
    {"2x2", {2, 2}, {0, 0}, {0, 0}, false},
    {"3x3 stride 2 padding 1", {3, 3}, {2, 2}, {1, 1}, false},
    {"3x3 stride 2 padding 1, count_include_pad", {3, 3}, {2, 2}, {1, 1}, true},
    {"3x2 stride (1, 2) padding (1, 0)", {3, 2}, {1, 2}, {1, 0}, true},
    {"overlapping 3x3 stride 1", {3, 3}, {1, 1}, {0, 0}, false},
    {"2x3 stride (2, 1) padding (1, 1)", {2, 3}, {2, 1}, {1, 1}, false},
};

static void set_pool(const pool_case *k) {
  pool_p = kiln_pool2d_params_default(k->kernel[0], k->kernel[1]);
  memcpy(pool_p.stride, k->stride, sizeof k->stride);
  memcpy(pool_p.padding, k->pad, sizeof k->pad);
  pool_p.count_include_pad = k->include_pad;
}

static void pool_gradients(void **state) {
  (void)state;
  for (size_t i = 0; i < sizeof pool_cases / sizeof *pool_cases; i++) {
    set_pool(&pool_cases[i]);
    kiln_tensor *in[1] = {tu_random_f64(4, (int64_t[]){2, 3, 7, 6}, 50 + i, -1, 1)};
    char label[160];
    snprintf(label, sizeof label, "max_pool2d %s", pool_cases[i].name);
    tu_check_gradients(label, f_max_pool, 1, in);
    snprintf(label, sizeof label, "avg_pool2d %s", pool_cases[i].name);
    tu_check_gradients(label, f_avg_pool, 1, in);
    tu_release_n(1, in);
  }
}

/* Ties: the whole window's gradient goes to its first maximum, as PyTorch. */
static void max_pool_ties_go_to_the_first(void **state) {
  (void)state;
  kiln_tensor *x = kiln_from_data(KILN_F64, 4, (int64_t[]){1, 1, 2, 4}, (double[]){1, 3, 2, 2, 3, 3, 2, 2});
  kiln_attach_grad(x, KILN_GRAD_WRITE);
  kiln_pool2d_params p = kiln_pool2d_params_default(2, 2);
  kiln_scope_begin();
  kiln_record_begin(true);
  kiln_tensor *y = kiln_max_pool2d(x, &p);
  kiln_record_end();
  kiln_tensor *head = kiln_from_data(KILN_F64, 4, (int64_t[]){1, 1, 1, 2}, (double[]){10, 100});
  assert_int_equal(kiln_backward(y, head, false), KILN_OK);
  kiln_scope_end();
  double got[8];
  assert_int_equal(kiln_tensor_copy_to(kiln_grad(x), got, sizeof got), KILN_OK);
  static const double want[8] = {0, 10, 100, 0, 0, 0, 0, 0};
  for (int i = 0; i < 8; i++) {
    if (got[i] != want[i]) fprintf(stderr, "ties: gradient[%d] is %g, want %g\n", i, got[i], want[i]);
    assert_true(got[i] == want[i]);
  }
  kiln_tensor_release(x);
}

/* Dropout's gradient is its mask over 1 - p times the upstream gradient:
 * y / x where x is nonzero. (Finite differences cannot check it: each call
 * draws a fresh mask.) */
static void dropout_gradient(void **state) {
  (void)state;
  const double p = 0.3;
  enum { N = 257 };
  kiln_tensor *x = tu_random_f64(2, (int64_t[]){N / 257, 257}, 60, 0.5, 1.5); /* never 0 */
  kiln_tensor *w = tu_random_f64(2, (int64_t[]){N / 257, 257}, 61, -1, 1);
  kiln_attach_grad(x, KILN_GRAD_WRITE);
  kiln_generator *gen = kiln_generator_new(1234);
  kiln_scope_begin();
  kiln_record_begin(true);
  kiln_tensor *y = kiln_dropout(gen, x, p);
  kiln_tensor *l = kiln_sum(kiln_mul(y, w), 0, NULL, false);
  kiln_record_end();
  assert_int_equal(kiln_backward(l, NULL, false), KILN_OK);
  double xv[N], yv[N], wv[N], gv[N];
  assert_int_equal(kiln_tensor_copy_to(x, xv, sizeof xv), KILN_OK);
  assert_int_equal(kiln_tensor_copy_to(y, yv, sizeof yv), KILN_OK);
  kiln_scope_end();
  assert_int_equal(kiln_tensor_copy_to(w, wv, sizeof wv), KILN_OK);
  assert_int_equal(kiln_tensor_copy_to(kiln_grad(x), gv, sizeof gv), KILN_OK);
  int dropped = 0;
  for (int i = 0; i < N; i++) {
    double want = yv[i] / xv[i] * wv[i];
    dropped += yv[i] == 0;
    if (fabs(gv[i] - want) > 1e-12) fprintf(stderr, "dropout: gradient[%d] is %.17g, want %.17g\n", i, gv[i], want);
    assert_true(fabs(gv[i] - want) <= 1e-12);
  }
  assert_true(dropped > 0 && dropped < N); /* both branches exercised */
  kiln_generator_free(gen);
  kiln_tensor_release(x);
  kiln_tensor_release(w);
}

/* ------------------------------------------------------------ optimised against reference */

#define F32_RTOL 1e-4
#define F32_ATOL 1e-4
#define F64_TOL 1e-10

static kiln_tensor *rand_t(kiln_dtype dt, int64_t a, int64_t b, int64_t c, int64_t d, uint64_t seed, bool strided) {
  kiln_tensor *t = tu_track(tu_random(dt, 4, (int64_t[]){a, b, c, d}, seed, -2, 2));
  return strided ? tu_track(tu_noncontiguous(t)) : t;
}

static int64_t pick(uint64_t *s, int64_t lo, int64_t hi) { return lo + (int64_t)(tu_rng_next(s) % (uint64_t)(hi - lo + 1)); }

/* Runs both kernels of a gradient op, the same inputs, and compares. */
#define COMPARE(label, dt, expr)                                                                   \
  do {                                                                                             \
    kiln_use_reference_kernels(false);                                                             \
    kiln_tensor *opt_ = tu_track(expr);                                        \
    kiln_use_reference_kernels(true);                                                              \
    kiln_tensor *ref_ = tu_track(expr);                                        \
    kiln_use_reference_kernels(false);                                                             \
    assert_true(tu_ok(label, opt_) && tu_ok(label, ref_));                                         \
    bool f32_ = (dt) == KILN_F32;                                                                  \
    assert_true(tu_close(label, opt_, ref_, f32_ ? F32_RTOL : F64_TOL, f32_ ? F32_ATOL : F64_TOL)); \
  } while (0)

static void conv_attrs(kiln_attr_value *a, const int64_t stride[2], const int64_t pad[2], const int64_t dil[2],
                       int64_t groups) {
  kiln_attrs_default(KILN_OP_CONV2D, a);
  kiln_attr_set_ints(&a[0], 2, stride);
  kiln_attr_set_ints(&a[1], 2, pad);
  kiln_attr_set_ints(&a[2], 2, dil);
  a[3].i = groups;
}

static void conv_kernels_agree(void **state) {
  (void)state;
  uint64_t s = 99;
  for (int it = 0; it < 60; it++) {
    kiln_dtype dt = it % 2 ? KILN_F64 : KILN_F32;
    bool strided = it % 3 == 0;
    int64_t groups = pick(&s, 1, 3), cg = pick(&s, 1, 3), og = pick(&s, 1, 3), n = pick(&s, 0, 4);
    int64_t kh = pick(&s, 1, 4), kw = pick(&s, 1, 4);
    int64_t stride[2] = {pick(&s, 1, 3), pick(&s, 1, 3)}, dil[2] = {pick(&s, 1, 2), pick(&s, 1, 2)};
    int64_t pad[2] = {pick(&s, 0, 2), pick(&s, 0, 2)};
    int64_t h = (kh - 1) * dil[0] + 1 - 2 * pad[0] + pick(&s, 0, 9), w = (kw - 1) * dil[1] + 1 - 2 * pad[1] + pick(&s, 0, 9);
    if (h < 1) h = 1;
    if (w < 1) w = 1;
    if ((kh - 1) * dil[0] + 1 > h + 2 * pad[0]) pad[0] = ((kh - 1) * dil[0] + 1 - h + 1) / 2;
    if ((kw - 1) * dil[1] + 1 > w + 2 * pad[1]) pad[1] = ((kw - 1) * dil[1] + 1 - w + 1) / 2;
    kiln_attr_value a[KILN_MAX_ATTRS];
    conv_attrs(a, stride, pad, dil, groups);
    kiln_conv2d_params p = {.stride = {stride[0], stride[1]}, .padding = {pad[0], pad[1]},
                            .dilation = {dil[0], dil[1]}, .groups = groups};
    kiln_tensor *x = rand_t(dt, n, groups * cg, h, w, 1000 + it, strided);
    kiln_tensor *wt = rand_t(dt, groups * og, cg, kh, kw, 2000 + it, strided);
    kiln_tensor *y = tu_track(kiln_conv2d(x, wt, NULL, &p));
    assert_true(tu_ok("forward", y));
    const int64_t *ys = kiln_tensor_shape(y);
    kiln_tensor *gy = rand_t(dt, ys[0], ys[1], ys[2], ys[3], 3000 + it, strided);
    char label[200];
    snprintf(label, sizeof label,
             "case %d (%s%s): x [%lld, %lld, %lld, %lld] k %lldx%lld groups %lld stride %lldx%lld pad %lldx%lld "
             "dil %lldx%lld",
             it, dt == KILN_F32 ? "f32" : "f64", strided ? ", strided" : "", (long long)n, (long long)(groups * cg),
             (long long)h, (long long)w, (long long)kh, (long long)kw, (long long)groups, (long long)stride[0],
             (long long)stride[1], (long long)pad[0], (long long)pad[1], (long long)dil[0], (long long)dil[1]);
    COMPARE(label, dt, nn_conv2d_backward_data(gy, wt, a, h, w));
    COMPARE(label, dt, nn_conv2d_backward_weight(gy, x, a, kh, kw));
  }
}

/* An image wide and deep enough that the optimised kernels lower it a band
 * of output rows at a time. */
static void conv_kernels_agree_banded(void **state) {
  (void)state;
  int64_t one[2] = {1, 1}, pad[2] = {1, 1};
  kiln_attr_value a[KILN_MAX_ATTRS];
  conv_attrs(a, one, pad, one, 1);
  kiln_tensor *x = rand_t(KILN_F64, 2, 64, 5, 480, 7, false);
  kiln_tensor *w = rand_t(KILN_F64, 2, 64, 3, 3, 8, false);
  kiln_tensor *gy = rand_t(KILN_F64, 2, 2, 5, 480, 9, false);
  COMPARE("banded data", KILN_F64, nn_conv2d_backward_data(gy, w, a, 5, 480));
  COMPARE("banded weight", KILN_F64, nn_conv2d_backward_weight(gy, x, a, 3, 3));
}

static void pool_kernels_agree(void **state) {
  (void)state;
  uint64_t s = 7;
  for (int it = 0; it < 60; it++) {
    kiln_dtype dt = it % 2 ? KILN_F64 : KILN_F32;
    bool strided = it % 3 == 0;
    int64_t kern[2] = {pick(&s, 1, 4), pick(&s, 1, 4)}, stride[2] = {pick(&s, 0, 3), pick(&s, 0, 3)};
    int64_t pad[2] = {pick(&s, 0, kern[0] / 2), pick(&s, 0, kern[1] / 2)};
    int64_t h = kern[0] + pick(&s, 0, 8), w = kern[1] + pick(&s, 0, 8), n = pick(&s, 0, 3), c = pick(&s, 1, 3);
    kiln_pool2d_params p = kiln_pool2d_params_default(kern[0], kern[1]);
    memcpy(p.stride, stride, sizeof stride);
    memcpy(p.padding, pad, sizeof pad);
    p.count_include_pad = it % 4 < 2;
    kiln_tensor *x = rand_t(dt, n, c, h, w, 4000 + it, strided);
    char label[160];
    snprintf(label, sizeof label, "case %d (%s%s): x [%lld, %lld, %lld, %lld] k %lldx%lld stride %lldx%lld pad %lldx%lld",
             it, dt == KILN_F32 ? "f32" : "f64", strided ? ", strided" : "", (long long)n, (long long)c, (long long)h,
             (long long)w, (long long)kern[0], (long long)kern[1], (long long)stride[0], (long long)stride[1],
             (long long)pad[0], (long long)pad[1]);
    for (int avg = 0; avg < 2; avg++) {
      kiln_op_id fwd = avg ? KILN_OP_AVG_POOL2D : KILN_OP_MAX_POOL2D;
      kiln_tensor *y = tu_track(avg ? kiln_avg_pool2d(x, &p) : kiln_max_pool2d(x, &p));
      assert_true(tu_ok(label, y));
      const int64_t *ys = kiln_tensor_shape(y);
      kiln_tensor *gy = rand_t(dt, ys[0], ys[1], ys[2], ys[3], 5000 + it, strided);
      kiln_attr_value a[KILN_MAX_ATTRS];
      kiln_attrs_default(fwd, a);
      kiln_attr_set_ints(&a[0], 2, p.kernel);
      kiln_attr_set_ints(&a[1], 2, p.stride);
      kiln_attr_set_ints(&a[2], 2, p.padding);
      if (avg) a[3].i = p.count_include_pad;
      COMPARE(label, dt, nn_pool2d_backward(fwd, gy, x, a));
    }
  }
}

static void gradient_op_errors(void **state) {
  (void)state;
  int64_t one[2] = {1, 1}, zero[2] = {0, 0};
  kiln_attr_value a[KILN_MAX_ATTRS];
  conv_attrs(a, one, zero, one, 1);
  kiln_tensor *x = rand_t(KILN_F32, 2, 3, 6, 6, 1, false);
  kiln_tensor *w = rand_t(KILN_F32, 4, 3, 3, 3, 2, false);
  kiln_tensor *gy = rand_t(KILN_F32, 2, 4, 4, 4, 3, false);
  kiln_tensor *bad = rand_t(KILN_F32, 2, 4, 5, 4, 4, false);
  kiln_tensor *gy64 = rand_t(KILN_F64, 2, 4, 4, 4, 5, false);
  kiln_tensor *g3 = rand_t(KILN_F32, 2, 3, 3, 3, 6, false);
  kiln_tensor *g4 = rand_t(KILN_F32, 2, 3, 2, 3, 6, false);
  /* Made before the scope: tracked tensors belong to the teardown. */
  kiln_scope_begin();
  TU_OK(nn_conv2d_backward_data(gy, w, a, 6, 6));
  TU_OK(nn_conv2d_backward_weight(gy, x, a, 3, 3));
  TU_FAILS(nn_conv2d_backward_data(bad, w, a, 6, 6), KILN_ERR_SHAPE, "does not match conv2d's output");
  TU_FAILS(nn_conv2d_backward_data(gy, w, a, 7, 6), KILN_ERR_SHAPE, "does not match");
  TU_FAILS(nn_conv2d_backward_weight(bad, x, a, 3, 3), KILN_ERR_SHAPE, "conv2d_backward_weight");
  TU_FAILS(nn_conv2d_backward_weight(gy, x, a, 0, 3), KILN_ERR_INVALID_ARGUMENT, "kernel_size");
  TU_FAILS(nn_conv2d_backward_data(gy64, w, a, 6, 6), KILN_ERR_DTYPE, "weight");
  kiln_attr_value p[KILN_MAX_ATTRS];
  kiln_attrs_default(KILN_OP_MAX_POOL2D, p);
  kiln_attr_set_ints(&p[0], 2, (int64_t[]){2, 2});
  TU_OK(nn_pool2d_backward(KILN_OP_MAX_POOL2D, g3, x, p));
  TU_FAILS(nn_pool2d_backward(KILN_OP_MAX_POOL2D, g4, x, p), KILN_ERR_SHAPE, "max_pool2d_backward");
  kiln_attrs_default(KILN_OP_AVG_POOL2D, p);
  TU_FAILS(nn_pool2d_backward(KILN_OP_AVG_POOL2D, g3, x, p), KILN_ERR_INVALID_ARGUMENT, "kernel size is required");
  kiln_scope_end();
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(conv2d_gradients),
      cmocka_unit_test(lenet_block_gradients),
      cmocka_unit_test(pool_gradients),
      cmocka_unit_test(max_pool_ties_go_to_the_first),
      cmocka_unit_test(dropout_gradient),
      cmocka_unit_test_teardown(conv_kernels_agree, tu_release_tracked),
      cmocka_unit_test_teardown(conv_kernels_agree_banded, tu_release_tracked),
      cmocka_unit_test_teardown(pool_kernels_agree, tu_release_tracked),
      cmocka_unit_test_teardown(gradient_op_errors, tu_release_tracked),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
