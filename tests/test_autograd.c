/* Autograd: every op with a gradient against central finite differences in
 * float64, plus the tape's semantics (grad_req write/add/null, retain_graph,
 * the no-grad scope, heads with a gradient, cut paths, ops without a
 * gradient). The loss is sum(op(x) * w) for fixed random w, so every output
 * element's gradient is exercised with a different weight. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "imperative/autograd.h"
#include "imperative/dispatch.h"
#include "ops/nn_grad.h"
#include "testutil.h"


/* ------------------------------------------------------------ the ops */

#define UNARY_CASE(fname, expr)                                \
  static kiln_tensor *fname(kiln_tensor **in) { return expr; }

UNARY_CASE(f_neg, kiln_neg(in[0]))
UNARY_CASE(f_abs, kiln_abs(in[0]))
UNARY_CASE(f_exp, kiln_exp(in[0]))
UNARY_CASE(f_log, kiln_log(in[0]))
UNARY_CASE(f_sqrt, kiln_sqrt(in[0]))
UNARY_CASE(f_rsqrt, kiln_rsqrt(in[0]))
UNARY_CASE(f_square, kiln_square(in[0]))
UNARY_CASE(f_sin, kiln_sin(in[0]))
UNARY_CASE(f_cos, kiln_cos(in[0]))
UNARY_CASE(f_tanh, kiln_tanh(in[0]))
UNARY_CASE(f_sigmoid, kiln_sigmoid(in[0]))
UNARY_CASE(f_relu, kiln_relu(in[0]))
UNARY_CASE(f_leaky, kiln_leaky_relu(in[0], 0.1))
UNARY_CASE(f_softplus, kiln_softplus(in[0]))
UNARY_CASE(f_gelu, kiln_gelu(in[0]))
UNARY_CASE(f_erf, kiln_erf(in[0]))
UNARY_CASE(f_clip, kiln_clip(in[0], -0.5, 0.7))
UNARY_CASE(f_add_s, kiln_add_scalar(in[0], 2))
UNARY_CASE(f_sub_s, kiln_sub_scalar(in[0], 2))
UNARY_CASE(f_mul_s, kiln_mul_scalar(in[0], -3))
UNARY_CASE(f_div_s, kiln_div_scalar(in[0], 4))
UNARY_CASE(f_pow_s, kiln_pow_scalar(in[0], 3))
UNARY_CASE(f_max_s, kiln_maximum_scalar(in[0], 0.1))
UNARY_CASE(f_min_s, kiln_minimum_scalar(in[0], 0.1))
UNARY_CASE(f_add, kiln_add(in[0], in[1]))
UNARY_CASE(f_sub, kiln_sub(in[0], in[1]))
UNARY_CASE(f_mul, kiln_mul(in[0], in[1]))
UNARY_CASE(f_div, kiln_div(in[0], in[1]))
UNARY_CASE(f_pow, kiln_pow(in[0], in[1]))
UNARY_CASE(f_maximum, kiln_maximum(in[0], in[1]))
UNARY_CASE(f_minimum, kiln_minimum(in[0], in[1]))
UNARY_CASE(f_where, kiln_where(kiln_greater(in[0], in[1]), in[0], in[1]))
UNARY_CASE(f_sum01, kiln_sum(in[0], 2, (int[]){0, 2}, false))
UNARY_CASE(f_sum_keep, kiln_sum(in[0], 1, (int[]){1}, true))
UNARY_CASE(f_mean, kiln_mean(in[0], 1, (int[]){-1}, false))
UNARY_CASE(f_max_r, kiln_max(in[0], 1, (int[]){1}, false))
UNARY_CASE(f_min_r, kiln_min(in[0], 0, NULL, false))
UNARY_CASE(f_lse, kiln_logsumexp(in[0], 1, (int[]){1}, true))
UNARY_CASE(f_var, kiln_var(in[0], 1, (int[]){0}, false, 1))
UNARY_CASE(f_matmul, kiln_matmul(in[0], in[1]))
UNARY_CASE(f_linear, kiln_linear(in[0], in[1], in[2]))
UNARY_CASE(f_linear_relu, kiln_linear_act(in[0], in[1], in[2], KILN_ACT_RELU))
UNARY_CASE(f_linear_sigmoid, kiln_linear_act(in[0], in[1], in[2], KILN_ACT_SIGMOID))
UNARY_CASE(f_linear_tanh, kiln_linear_act(in[0], in[1], in[2], KILN_ACT_TANH))
UNARY_CASE(f_reshape, kiln_reshape(in[0], 2, (int64_t[]){4, -1}))
UNARY_CASE(f_transpose, kiln_transpose(in[0], 0, 2))
UNARY_CASE(f_broadcast, kiln_broadcast_to(in[0], 3, (int64_t[]){2, 3, 4}))
UNARY_CASE(f_squeeze, kiln_squeeze(in[0], 1))
UNARY_CASE(f_expand, kiln_expand_dims(in[0], -1))
UNARY_CASE(f_slice, kiln_slice(in[0], 1, 1, 3, 1))
UNARY_CASE(f_slice_step, kiln_slice(in[0], 1, 0, KILN_END, 2))
UNARY_CASE(f_slice_back, kiln_slice(in[0], 1, -1, KILN_END, -3))
UNARY_CASE(f_prod, kiln_prod(in[0], 1, (int[]){1}, false))
UNARY_CASE(f_prod_all, kiln_prod(in[0], 0, NULL, true))
UNARY_CASE(f_stack, kiln_stack(2, (kiln_tensor *const[]){in[0], kiln_square(in[0])}, 1))
UNARY_CASE(f_copy, kiln_copy(kiln_transpose(in[0], 0, 1)))
UNARY_CASE(f_concat, kiln_concat(2, (kiln_tensor *const[]){in[0], in[1]}, 1))
UNARY_CASE(f_pad, kiln_pad(in[0], 4, (int64_t[]){1, 0, 2, 1}, 0.5))
UNARY_CASE(f_softmax, kiln_softmax(in[0], 1))
UNARY_CASE(f_log_softmax, kiln_log_softmax(in[0], -1))
UNARY_CASE(f_xent, kiln_softmax_cross_entropy(in[0], in[1]))

static kiln_tensor *f_split(kiln_tensor **in) {
  kiln_tensor *parts[2];
  kiln_split(in[0], 1, 2, (int64_t[]){1, 3}, parts);
  return kiln_mul(parts[1], kiln_sum(parts[0], 0, NULL, false));
}


typedef struct {
  const char *name;
  tu_op_fn f;
  double lo, hi; /* the input range (log, sqrt need positives) */
} unary_case;

static void unary_ops(void **state) {
  (void)state;
  static const unary_case cases[] = {
      {"neg", f_neg, -2, 2},          {"abs", f_abs, -2, 2},         {"exp", f_exp, -2, 2},
      {"log", f_log, 0.5, 3},         {"sqrt", f_sqrt, 0.5, 3},      {"rsqrt", f_rsqrt, 0.5, 3},
      {"square", f_square, -2, 2},    {"sin", f_sin, -2, 2},         {"cos", f_cos, -2, 2},
      {"tanh", f_tanh, -2, 2},        {"sigmoid", f_sigmoid, -3, 3}, {"relu", f_relu, -2, 2},
      {"leaky_relu", f_leaky, -2, 2}, {"softplus", f_softplus, -3, 3}, {"gelu", f_gelu, -3, 3}, {"erf", f_erf, -2, 2}, {"clip", f_clip, -2, 2},
      {"add_scalar", f_add_s, -2, 2}, {"sub_scalar", f_sub_s, -2, 2}, {"mul_scalar", f_mul_s, -2, 2},
      {"div_scalar", f_div_s, -2, 2}, {"pow_scalar", f_pow_s, -2, 2}, {"maximum_scalar", f_max_s, -2, 2},
      {"minimum_scalar", f_min_s, -2, 2}, {"sum axes 0,2", f_sum01, -2, 2}, {"sum keepdims", f_sum_keep, -2, 2},
      {"mean", f_mean, -2, 2},        {"max", f_max_r, -2, 2},       {"min (all)", f_min_r, -2, 2},
      {"logsumexp", f_lse, -2, 2},    {"var ddof 1", f_var, -2, 2},  {"reshape", f_reshape, -2, 2},
      {"transpose", f_transpose, -2, 2}, {"slice", f_slice, -2, 2},   {"copy", f_copy, -2, 2},
      {"pad", f_pad, -2, 2},          {"softmax", f_softmax, -2, 2}, {"log_softmax", f_log_softmax, -2, 2},
      {"split", f_split, -2, 2},      {"slice step 2", f_slice_step, -2, 2}, {"slice step -3", f_slice_back, -2, 2},
      {"prod", f_prod, -2, 2},        {"prod (all)", f_prod_all, 0.5, 1.5}, {"stack", f_stack, -2, 2},
  };
  for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
    /* Values away from kinks (relu, abs, clip at their corners) so the
     * central difference does not straddle one. */
    kiln_tensor *in[1] = {tu_random_f64(3, (int64_t[]){2, 4, 3}, 100 + i, cases[i].lo, cases[i].hi)};
    tu_check_gradients(cases[i].name, cases[i].f, 1, in);
    tu_release_n(1, in);
  }
}

/* Products with zeros in the reduced set: one zero (the others' product
 * goes to it alone) and two (every gradient is zero). The product is
 * multilinear, so central differences are exact at zeros too. */
static kiln_tensor *f_prod_rows(kiln_tensor **in) { return kiln_prod(in[0], 1, (int[]){1}, false); }

/* take with repeated and negative indices (their gradients add up), and
 * gather with an index smaller than x on the other dim. */
static kiln_tensor *f_take(kiln_tensor **in) {
  kiln_tensor *idx = kiln_from_data(KILN_I64, 2, (int64_t[]){2, 2}, (int64_t[]){2, -1, 0, 2});
  return kiln_take(in[0], idx, 1);
}
static kiln_tensor *f_gather(kiln_tensor **in) {
  kiln_tensor *idx = kiln_from_data(KILN_I32, 2, (int64_t[]){2, 3}, (int32_t[]){3, 0, 3, -1, 1, 1});
  return kiln_gather(in[0], 1, idx);
}

static void indexing_gradients(void **state) {
  (void)state;
  kiln_tensor *z[1] = {kiln_from_data(KILN_F64, 2, (int64_t[]){3, 3}, (double[]){1.5, 0, -2, 0, 3, 0, 0.5, 2, -1})};
  tu_check_gradients("prod with zeros", f_prod_rows, 1, z);
  tu_release_n(1, z);
  kiln_tensor *t[1] = {tu_random_f64(3, (int64_t[]){2, 4, 3}, 410, -2, 2)};
  tu_check_gradients("take", f_take, 1, t);
  tu_release_n(1, t);
  kiln_tensor *g[1] = {tu_random_f64(2, (int64_t[]){3, 5}, 411, -2, 2)};
  tu_check_gradients("gather", f_gather, 1, g);
  tu_release_n(1, g);
}

/* Every op of the registry has a gradient except those that are not
 * differentiable (integer or boolean results, creation from nothing) and
 * the gradient ops themselves; a new op must join one list or the other. */
static void every_differentiable_op_has_a_gradient(void **state) {
  (void)state;
  static const kiln_op_id without[] = {
      KILN_OP_FULL,          KILN_OP_ARANGE,        KILN_OP_LINSPACE,           KILN_OP_EYE,
      KILN_OP_RANDOM_UNIFORM, KILN_OP_RANDOM_NORMAL, KILN_OP_RANDOM_BERNOULLI,  KILN_OP_LOGICAL_NOT,
      KILN_OP_EQUAL,         KILN_OP_NOT_EQUAL,     KILN_OP_LESS,               KILN_OP_LESS_EQUAL,
      KILN_OP_GREATER,       KILN_OP_GREATER_EQUAL, KILN_OP_LOGICAL_AND,        KILN_OP_LOGICAL_OR,
      KILN_OP_ARGMAX,        KILN_OP_ARGMIN,        KILN_OP_ONE_HOT,            KILN_OP_CONV2D_BACKWARD_DATA,
      KILN_OP_CONV2D_BACKWARD_WEIGHT, KILN_OP_MAX_POOL2D_BACKWARD, KILN_OP_AVG_POOL2D_BACKWARD};
  for (int id = 0; id < KILN_OP_COUNT; id++) {
    bool exempt = false;
    for (size_t k = 0; k < sizeof without / sizeof *without; k++) exempt = exempt || without[k] == (kiln_op_id)id;
    if (exempt != (kiln_op_grad((kiln_op_id)id) == NULL))
      fprintf(stderr, "%s: %s\n", kiln_op_get((kiln_op_id)id)->name, exempt ? "has a gradient but is listed as without" : "has no gradient");
    assert_true(exempt == (kiln_op_grad((kiln_op_id)id) == NULL));
  }
}

static void broadcasting_binary_ops(void **state) {
  (void)state;
  static const unary_case cases[] = {{"add", f_add, -2, 2},         {"sub", f_sub, -2, 2},
                                     {"mul", f_mul, -2, 2},         {"div", f_div, 0.5, 2},
                                     {"pow", f_pow, 0.5, 2},        {"maximum", f_maximum, -2, 2},
                                     {"minimum", f_minimum, -2, 2}, {"where", f_where, -2, 2}};
  for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
    kiln_tensor *in[2] = {tu_random_f64(3, (int64_t[]){2, 1, 3}, 200 + i, cases[i].lo, cases[i].hi),
                          tu_random_f64(2, (int64_t[]){4, 1}, 300 + i, cases[i].lo, cases[i].hi)};
    tu_check_gradients(cases[i].name, cases[i].f, 2, in);
    tu_release_n(2, in);
  }
}

static void shape_ops(void **state) {
  (void)state;
  kiln_tensor *b[1] = {tu_random_f64(2, (int64_t[]){3, 1}, 401, -2, 2)};
  tu_check_gradients("broadcast_to", f_broadcast, 1, b);
  tu_release_n(1, b);
  kiln_tensor *s[1] = {tu_random_f64(3, (int64_t[]){3, 1, 2}, 402, -2, 2)};
  tu_check_gradients("squeeze", f_squeeze, 1, s);
  tu_check_gradients("expand_dims", f_expand, 1, s);
  tu_release_n(1, s);
  kiln_tensor *c[2] = {tu_random_f64(2, (int64_t[]){3, 2}, 403, -2, 2), tu_random_f64(2, (int64_t[]){3, 4}, 404, -2, 2)};
  tu_check_gradients("concat", f_concat, 2, c);
  tu_release_n(2, c);
}

static void linear_algebra(void **state) {
  (void)state;
  kiln_tensor *mm[2] = {tu_random_f64(3, (int64_t[]){2, 3, 4}, 501, -1, 1), tu_random_f64(2, (int64_t[]){4, 5}, 502, -1, 1)};
  tu_check_gradients("matmul batched x 2-D", f_matmul, 2, mm);
  tu_release_n(2, mm);
  kiln_tensor *mv[2] = {tu_random_f64(2, (int64_t[]){3, 4}, 503, -1, 1), tu_random_f64(1, (int64_t[]){4}, 504, -1, 1)};
  tu_check_gradients("matmul 2-D x 1-D", f_matmul, 2, mv);
  tu_release_n(2, mv);
  kiln_tensor *vm[2] = {tu_random_f64(1, (int64_t[]){3}, 505, -1, 1), tu_random_f64(3, (int64_t[]){2, 3, 4}, 506, -1, 1)};
  tu_check_gradients("matmul 1-D x batched", f_matmul, 2, vm);
  tu_release_n(2, vm);
  kiln_tensor *lin[3] = {tu_random_f64(3, (int64_t[]){2, 3, 4}, 507, -1, 1), tu_random_f64(2, (int64_t[]){5, 4}, 508, -1, 1),
                         tu_random_f64(1, (int64_t[]){5}, 509, -1, 1)};
  tu_check_gradients("linear", f_linear, 3, lin);
  tu_check_gradients("linear with relu", f_linear_relu, 3, lin);
  tu_check_gradients("linear with sigmoid", f_linear_sigmoid, 3, lin);
  tu_check_gradients("linear with tanh", f_linear_tanh, 3, lin);
  tu_release_n(3, lin);
}

static void cross_entropy(void **state) {
  (void)state;
  kiln_tensor *in[2] = {tu_random_f64(2, (int64_t[]){5, 4}, 601, -2, 2),
                        kiln_from_data(KILN_I64, 1, (int64_t[]){5}, (int64_t[]){0, 3, 1, 1, 2})};
  tu_check_gradients("softmax_cross_entropy", f_xent, 2, in);
  tu_release_n(2, in);
}

/* ------------------------------------------------------------ the tape */

static double grad_at(const kiln_tensor *t, int64_t i) {
  double v[16];
  kiln_tensor_copy_to(kiln_grad(t), v, sizeof(double) * (size_t)kiln_tensor_numel(t));
  return v[i];
}

/* y = sum(x * x) twice: write keeps the last (2x), add sums both (4x). */
static void grad_req_write_add_null(void **state) {
  (void)state;
  kiln_tensor *x = kiln_from_data(KILN_F64, 1, (int64_t[]){2}, (double[]){1.5, -2});
  for (int req = KILN_GRAD_WRITE; req <= KILN_GRAD_ADD; req++) {
    assert_int_equal(kiln_attach_grad(x, (kiln_grad_req)req), KILN_OK);
    kiln_tensor *grad_before = kiln_grad(x);
    for (int round = 0; round < 2; round++) {
      kiln_scope_begin();
      kiln_record_begin(true);
      kiln_tensor *l = kiln_sum(kiln_square(x), 0, NULL, false);
      kiln_record_end();
      assert_int_equal(kiln_backward(l, NULL, false), KILN_OK);
      kiln_scope_end();
    }
    double k = req == KILN_GRAD_WRITE ? 2 : 4;
    assert_true(kiln_grad(x) == grad_before); /* the same buffer, updated in place */
    assert_true(grad_at(x, 0) == k * 1.5 && grad_at(x, 1) == k * -2);
  }
  assert_int_equal(kiln_attach_grad(x, KILN_GRAD_NULL), KILN_OK);
  assert_null(kiln_grad(x));
  kiln_scope_begin();
  kiln_record_begin(true);
  kiln_tensor *l = kiln_sum(kiln_square(x), 0, NULL, false);
  kiln_record_end();
  assert_int_equal(kiln_backward(l, NULL, false), KILN_ERR_INVALID_ARGUMENT); /* nothing to differentiate */
  kiln_scope_end();
  kiln_tensor_release(x);
}

static void retain_graph_and_freed_tape(void **state) {
  (void)state;
  kiln_tensor *x = kiln_from_data(KILN_F64, 1, (int64_t[]){1}, (double[]){3});
  kiln_attach_grad(x, KILN_GRAD_ADD);
  kiln_scope_begin();
  kiln_record_begin(true);
  kiln_tensor *l = kiln_sum(kiln_mul_scalar(kiln_exp(x), 2), 0, NULL, false);
  kiln_record_end();
  assert_int_equal(kiln_backward(l, NULL, true), KILN_OK);
  assert_int_equal(kiln_backward(l, NULL, false), KILN_OK); /* retained: runs again */
  assert_int_equal(kiln_backward(l, NULL, false), KILN_ERR_INVALID_ARGUMENT);
  assert_non_null(strstr(kiln_last_error(), "retain_graph"));
  kiln_scope_end();
  assert_true(fabs(grad_at(x, 0) - 2 * 2 * exp(3.0)) < 1e-9);
  kiln_tensor_release(x);
}

static void pause_and_head_gradient(void **state) {
  (void)state;
  kiln_tensor *x = kiln_from_data(KILN_F64, 1, (int64_t[]){3}, (double[]){1, 2, 3});
  kiln_attach_grad(x, KILN_GRAD_WRITE);
  kiln_scope_begin();
  kiln_record_begin(true);
  assert_true(kiln_is_recording() && kiln_is_training());
  kiln_tensor *y = kiln_mul_scalar(x, 5);
  kiln_pause_begin();
  assert_false(kiln_is_recording());
  kiln_tensor *detached = kiln_mul(y, y); /* not recorded: a constant below */
  kiln_pause_end();
  kiln_tensor *z = kiln_add(y, detached);
  kiln_record_end();
  kiln_tensor *head_grad = kiln_from_data(KILN_F64, 1, (int64_t[]){3}, (double[]){1, 10, 100});
  assert_int_equal(kiln_backward(z, head_grad, false), KILN_OK);
  kiln_scope_end();
  assert_true(grad_at(x, 0) == 5 && grad_at(x, 1) == 50 && grad_at(x, 2) == 500);
  kiln_tensor_release(x);
}

/* Through float32 and back, the gradient is the upstream one rounded to
 * float32 (central differences cannot see through float32 rounding). */
static void cast_passes_the_gradient(void **state) {
  (void)state;
  kiln_tensor *x = kiln_from_data(KILN_F64, 1, (int64_t[]){2}, (double[]){0.1, 0.2});
  kiln_attach_grad(x, KILN_GRAD_WRITE);
  kiln_scope_begin();
  kiln_record_begin(true);
  kiln_tensor *y = kiln_cast(kiln_mul_scalar(kiln_cast(x, KILN_F32), 3), KILN_F64);
  kiln_tensor *l = kiln_sum(y, 0, NULL, false);
  kiln_record_end();
  assert_int_equal(kiln_backward(l, NULL, false), KILN_OK);
  kiln_scope_end();
  assert_true(grad_at(x, 0) == 3 && grad_at(x, 1) == 3);
  kiln_tensor_release(x);
}

static void errors(void **state) {
  (void)state;
  kiln_tensor *x = kiln_from_data(KILN_F64, 1, (int64_t[]){2}, (double[]){1, 2});
  kiln_tensor *i = kiln_from_data(KILN_I64, 1, (int64_t[]){2}, (int64_t[]){1, 2});
  assert_int_equal(kiln_attach_grad(i, KILN_GRAD_WRITE), KILN_ERR_DTYPE);
  assert_int_equal(kiln_attach_grad(NULL, KILN_GRAD_WRITE), KILN_ERR_INVALID_ARGUMENT);
  assert_int_equal(kiln_backward(NULL, NULL, false), KILN_ERR_INVALID_ARGUMENT);
  assert_int_equal(kiln_record_end(), KILN_ERR_INVALID_ARGUMENT);
  assert_int_equal(kiln_pause_end(), KILN_ERR_INVALID_ARGUMENT);
  kiln_attach_grad(x, KILN_GRAD_WRITE);
  kiln_scope_begin();
  kiln_record_begin(true);
  kiln_tensor *y = kiln_exp(x);
  /* Every public differentiable op has a gradient; the gradient ops
   * themselves have none (no second derivatives of pooling yet). */
  kiln_attr_value pool[KILN_MAX_ATTRS];
  kiln_attrs_default(KILN_OP_MAX_POOL2D, pool);
  kiln_attr_set_ints(&pool[0], 2, (int64_t[]){1, 1});
  kiln_tensor *x4 = kiln_reshape(x, 4, (int64_t[]){1, 1, 1, 2});
  kiln_tensor *g = kiln_sum(nn_pool2d_backward(KILN_OP_MAX_POOL2D, x4, x4, pool), 0, NULL, false);
  kiln_record_end();
  assert_int_equal(kiln_backward(y, NULL, false), KILN_ERR_SHAPE); /* 2 elements, no head gradient */
  assert_non_null(strstr(kiln_last_error(), "head gradient"));
  kiln_tensor *lg = kiln_sum(g, 0, NULL, false);
  assert_int_equal(kiln_backward(lg, NULL, false), KILN_ERR_INVALID_ARGUMENT); /* sum recorded? no: outside record */
  kiln_record_begin(true);
  kiln_tensor *lg2 = kiln_sum(g, 0, NULL, false);
  kiln_record_end();
  assert_int_equal(kiln_backward(lg2, NULL, false), KILN_ERR_UNSUPPORTED);
  assert_non_null(strstr(kiln_last_error(), "max_pool2d_backward has no gradient"));
  kiln_scope_end();
  kiln_tensor_release(x);
  kiln_tensor_release(i);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(unary_ops),          cmocka_unit_test(indexing_gradients),
      cmocka_unit_test(every_differentiable_op_has_a_gradient),          cmocka_unit_test(broadcasting_binary_ops),
      cmocka_unit_test(shape_ops),          cmocka_unit_test(linear_algebra),
      cmocka_unit_test(cross_entropy),      cmocka_unit_test(grad_req_write_add_null),
      cmocka_unit_test(retain_graph_and_freed_tape), cmocka_unit_test(pause_and_head_gradient),
      cmocka_unit_test(cast_passes_the_gradient), cmocka_unit_test(errors),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
