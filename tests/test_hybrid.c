/* Hybridization: the same blocks give the same bits eagerly and
 * hybridized; forward runs (and prints) only while tracing, once per input
 * signature; the trace log says why each trace happened; the cache is
 * bounded; reading a value in a trace fails naming the op; a block that
 * cannot be traced stays imperative inside a hybridized parent; constants
 * built in forward are folded. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "imperative/dispatch.h"
#include "testutil.h"

static kiln_block *lenet(void) {
  kiln_block *net = kiln_nn_sequential();
  kiln_conv2d_layer_params c1 = kiln_conv2d_layer_params_default(6, 5, 5), c2 = kiln_conv2d_layer_params_default(16, 5, 5);
  c1.conv.padding[0] = c1.conv.padding[1] = 2;
  c1.activation = c2.activation = KILN_ACT_RELU;
  kiln_pool2d_params pool = kiln_pool2d_params_default(2, 2);
  kiln_block_add_child(net, NULL, kiln_nn_conv2d(&c1));
  kiln_block_add_child(net, NULL, kiln_nn_max_pool2d(&pool));
  kiln_block_add_child(net, NULL, kiln_nn_conv2d(&c2));
  kiln_block_add_child(net, NULL, kiln_nn_max_pool2d(&pool));
  kiln_block_add_child(net, NULL, kiln_nn_batch_norm(0, 0.9, 1e-5));
  kiln_block_add_child(net, NULL, kiln_nn_dense(120, KILN_ACT_RELU));
  kiln_block_add_child(net, NULL, kiln_nn_dropout(0.5));
  kiln_block_add_child(net, NULL, kiln_nn_dense(84, KILN_ACT_SIGMOID));
  assert_int_equal(kiln_block_add_child(net, NULL, kiln_nn_dense(10, KILN_ACT_NONE)), KILN_OK);
  return net;
}

static kiln_block *mlp(void) {
  kiln_block *net = kiln_nn_sequential();
  kiln_block_add_child(net, NULL, kiln_nn_flatten());
  kiln_block_add_child(net, NULL, kiln_nn_dense(256, KILN_ACT_RELU));
  assert_int_equal(kiln_block_add_child(net, NULL, kiln_nn_dense(10, KILN_ACT_NONE)), KILN_OK);
  return net;
}

static void hybridized_equals_eager(void **state) {
  (void)state;
  kiln_block *(*make[2])(void) = {mlp, lenet};
  for (int m = 0; m < 2; m++) {
    kiln_seed(7);
    kiln_block *net = make[m]();
    assert_int_equal(kiln_block_initialize(net, NULL, false), KILN_OK);
    kiln_scope_begin();
    kiln_tensor *x = tu_random(KILN_F32, 4, TU_SHAPE(8, 1, 28, 28), 8, 0, 1);
    kiln_tensor *eager = kiln_block_call(net, x); /* also fixes the deferred shapes */
    assert_int_equal(kiln_block_hybridize(net, NULL), KILN_OK);
    for (int rep = 0; rep < 3; rep++) {
      kiln_tensor *h = kiln_block_call(net, x);
      assert_true(tu_close(m ? "lenet" : "mlp", h, eager, 0, 0));
    }
    /* A new batch size traces again; the values still agree. */
    kiln_tensor *x2 = tu_random(KILN_F32, 4, TU_SHAPE(3, 1, 28, 28), 9, 0, 1);
    kiln_tensor *h2 = kiln_block_call(net, x2);
    kiln_block_hybridize(net, &(kiln_hybridize_options){.active = false});
    assert_true(tu_close("new batch", h2, kiln_block_call(net, x2), 0, 0));
    kiln_scope_end();
    kiln_block_release(net);
  }
}

/* The chapter's demonstration: a print in forward shows when it runs. */
typedef struct {
  FILE *out;
  int runs;
} printer;

static kiln_tensor *printing_forward(kiln_block *self, int n, kiln_tensor *const *in) {
  (void)n;
  printer *p = kiln_block_user(self);
  fprintf(p->out, "forward runs\n");
  p->runs++;
  kiln_tensor *h = kiln_block_call(kiln_block_child(self, 0), in[0]);
  return kiln_add(kiln_mul_scalar(h, 1), kiln_mul(kiln_full(KILN_F32, 0, NULL, 2), kiln_full(KILN_F32, 0, NULL, 3)));
}

static void forward_runs_only_while_tracing(void **state) {
  (void)state;
  char *text = NULL;
  size_t len = 0;
  printer p = {open_memstream(&text, &len), 0};
  kiln_block *b = kiln_block_new("Printer", printing_forward, &p, NULL);
  assert_int_equal(kiln_block_add_child(b, NULL, kiln_nn_dense(4, KILN_ACT_TANH)), KILN_OK);
  assert_int_equal(kiln_block_initialize(b, NULL, false), KILN_OK);
  kiln_hybridize_options o = kiln_hybridize_options_default();
  o.cache_capacity = 2;
  assert_int_equal(kiln_block_hybridize(b, &o), KILN_OK);
  kiln_scope_begin();
  kiln_tensor *a = tu_random(KILN_F32, 2, TU_SHAPE(5, 3), 1, -1, 1), *c = tu_random(KILN_F32, 2, TU_SHAPE(2, 3), 2, -1, 1);
  kiln_tensor *d = tu_random(KILN_F32, 2, TU_SHAPE(7, 3), 3, -1, 1);
  for (int i = 0; i < 3; i++) TU_OK(kiln_block_call(b, a));
  assert_int_equal(p.runs, 1);
  TU_OK(kiln_block_call(b, c));
  TU_OK(kiln_block_call(b, a));
  assert_int_equal(p.runs, 2); /* both signatures cached */
  TU_OK(kiln_block_call(b, d)); /* evicts the least recently used: c's */
  TU_OK(kiln_block_call(b, c));
  assert_int_equal(p.runs, 4);
  fflush(p.out);
  assert_non_null(strstr(text, "forward runs\nforward runs\nforward runs\nforward runs\n"));
  const char *log = kiln_block_trace_log(b);
  assert_non_null(strstr(log, "trace 1 (first call): "));
  assert_non_null(strstr(log, "trace 2 (input 0 is float32 [2, 3], was float32 [5, 3])"));
  assert_non_null(strstr(log, "trace 4 (input 0 is float32 [2, 3], was float32 [7, 3])"));
  /* x * 1 is simplified away and 2 * 3 folded: linear with tanh fused, add. */
  assert_non_null(strstr(log, "-> 2 steps"));
  /* The values: tanh(x w^T + b) + 6. */
  kiln_tensor *want = kiln_add_scalar(kiln_tanh(kiln_linear(a, kiln_block_param(kiln_block_child(b, 0), "weight"),
                                                            kiln_block_param(kiln_block_child(b, 0), "bias"))),
                                      6);
  assert_true(tu_close("printer", kiln_block_call(b, a), want, 1e-6, 1e-6));
  kiln_scope_end();
  fclose(p.out);
  free(text);
  kiln_block_release(b);
}

static kiln_tensor *reading_forward(kiln_block *self, int n, kiln_tensor *const *in) {
  (void)self, (void)n;
  kiln_tensor *h = kiln_relu(in[0]);
  double v;
  kiln_status st = kiln_tensor_item(kiln_sum(h, 0, NULL, false), &v);
  if (st != KILN_OK) return kiln_failed(st, "%s", kiln_last_error());
  return kiln_mul_scalar(h, v);
}

static void reading_a_value_while_tracing_fails(void **state) {
  (void)state;
  kiln_block *b = kiln_block_new("Reader", reading_forward, NULL, NULL);
  assert_int_equal(kiln_block_hybridize(b, NULL), KILN_OK);
  kiln_scope_begin();
  kiln_tensor *x = kiln_ones(KILN_F32, 1, TU_SHAPE(3));
  TU_FAILS(kiln_block_call(b, x), KILN_ERR_INVALID_ARGUMENT,
           "kiln_tensor_item: the output of sum is symbolic (a graph is being traced or built)");
  /* Marked untraceable, it runs imperatively inside a hybridized parent. */
  kiln_block *parent = kiln_nn_sequential();
  kiln_block_add_child(parent, NULL, kiln_nn_activation(KILN_ACT_SIGMOID));
  kiln_block_add_child(parent, NULL, kiln_block_retain(b));
  kiln_block_add_child(parent, NULL, kiln_nn_activation(KILN_ACT_TANH));
  assert_int_equal(kiln_block_set_traceable(b, false), KILN_OK);
  assert_int_equal(kiln_block_hybridize(parent, NULL), KILN_OK);
  kiln_tensor *s = kiln_sigmoid(x);
  kiln_tensor *want = kiln_tanh(kiln_mul_scalar(kiln_relu(s), 3 * 0.7310585786300049));
  for (int i = 0; i < 2; i++) assert_true(tu_close("untraceable child", kiln_block_call(parent, x), want, 1e-6, 1e-6));
  assert_non_null(strstr(kiln_block_trace_log(parent), "a child cannot be traced; Sequential runs imperatively"));
  kiln_scope_end();
  kiln_block_release(parent);
  kiln_block_release(b);
}

/* d2l's LeNet (tu_lenet: no batch norm or dropout, whose training forms
 * do not compile yet) and the MLP, trained 5 SGD steps eagerly and hybridized
 * from the same parameters: the same losses and parameters within float32
 * tolerance, the hybridized one through a forward and backward plan. */

static void training_through_plans_equals_eager(void **state) {
  (void)state;
  kiln_block *(*make[2])(void) = {mlp, tu_lenet};
  for (int m = 0; m < 2; m++) {
    kiln_block *nets[2] = {make[m](), make[m]()};
    kiln_scope_begin();
    kiln_tensor *x = tu_random(KILN_F32, 4, TU_SHAPE(16, 1, 28, 28), 4, 0, 1);
    int64_t labels[16];
    for (int i = 0; i < 16; i++) labels[i] = (i * 7) % 10;
    kiln_tensor *y = kiln_from_data(KILN_I64, 1, TU_SHAPE(16), labels);
    kiln_trainer *tr[2];
    for (int k = 0; k < 2; k++) { /* the same parameters: drawn when the first call fixes the shapes */
      kiln_seed(3);
      assert_int_equal(kiln_block_initialize(nets[k], NULL, false), KILN_OK);
      kiln_block_call(nets[k], x);
      kiln_optimizer_params op = kiln_optimizer_params_default(KILN_OPT_SGD);
      op.lr = 0.1;
      tr[k] = kiln_trainer_new(nets[k], &op);
    }
    assert_int_equal(kiln_block_hybridize(nets[1], NULL), KILN_OK);
    for (int step = 0; step < 5; step++) {
      double loss[2];
      for (int k = 0; k < 2; k++) {
        kiln_record_begin(true);
        kiln_tensor *l = kiln_softmax_cross_entropy(kiln_block_call(nets[k], x), y);
        kiln_record_end();
        assert_int_equal(kiln_backward(l, NULL, false), KILN_OK);
        assert_int_equal(kiln_trainer_step(tr[k], 1), KILN_OK);
        assert_int_equal(kiln_tensor_item(l, &loss[k]), KILN_OK);
      }
      assert_true(fabs(loss[1] - loss[0]) <= 1e-5 * fabs(loss[0]));
    }
    kiln_param_list a, b;
    assert_int_equal(kiln_block_collect_params(nets[0], &a), KILN_OK);
    assert_int_equal(kiln_block_collect_params(nets[1], &b), KILN_OK);
    for (int i = 0; i < a.n; i++) assert_true(tu_close(a.names[i], b.tensors[i], a.tensors[i], 1e-4, 1e-6));
    assert_non_null(strstr(kiln_block_trace_log(nets[1]), "with a forward and backward plan"));
    kiln_param_list_free(&a);
    kiln_param_list_free(&b);
    kiln_scope_end();
    for (int k = 0; k < 2; k++) {
      kiln_trainer_free(tr[k]);
      kiln_block_release(nets[k]);
    }
  }
}

/* Batch norm's training form updates state in place, which plans cannot
 * yet: recorded calls of such a block run imperatively, and say so. */
static void recorded_batch_norm_runs_imperatively(void **state) {
  (void)state;
  kiln_block *net = lenet();
  assert_int_equal(kiln_block_initialize(net, NULL, false), KILN_OK);
  kiln_scope_begin();
  kiln_tensor *x = tu_random(KILN_F32, 4, TU_SHAPE(4, 1, 28, 28), 4, 0, 1);
  kiln_block_call(net, x);
  assert_int_equal(kiln_block_hybridize(net, NULL), KILN_OK);
  for (int step = 0; step < 3; step++) {
    kiln_record_begin(true);
    kiln_tensor *l = kiln_sum(kiln_block_call(net, x), 0, NULL, false);
    kiln_record_end();
    assert_int_equal(kiln_backward(l, NULL, false), KILN_OK);
  }
  /* Traced once: the signature is remembered as imperative (it traced
   * again at every call, one log line each, all "first call"). */
  const char *log = kiln_block_trace_log(net), *first = strstr(log, "recorded calls run imperatively");
  assert_non_null(first);
  assert_null(strstr(first + 1, "recorded calls run imperatively"));
  kiln_scope_end();
  kiln_block_release(net);
}

/* Check mode: compiled and eager agree step by step; a plan on the
 * reference kernels differs from the eager optimised ones in the last bits,
 * and the check names the first step that does. */
static void check_mode_names_the_first_difference(void **state) {
  (void)state;
  kiln_seed(5);
  kiln_block *net = mlp();
  assert_int_equal(kiln_block_initialize(net, NULL, false), KILN_OK);
  kiln_scope_begin();
  kiln_tensor *x = tu_random(KILN_F32, 2, TU_SHAPE(16, 784), 6, 0, 1);
  kiln_block_call(net, x);
  kiln_hybridize_options o = kiln_hybridize_options_default();
  o.check = true;
  assert_int_equal(kiln_block_hybridize(net, &o), KILN_OK);
  TU_OK(kiln_block_call(net, x));
  kiln_graph *g = kiln_graph_new();
  kiln_tensor *in = kiln_graph_input(g, "x", KILN_F32, 2, TU_SHAPE(16, 784));
  kiln_block_hybridize(net, &(kiln_hybridize_options){.active = false});
  kiln_tensor *y = kiln_block_call(net, in);
  kiln_compile_options ref = kiln_compile_options_default();
  ref.reference_kernels = true;
  kiln_plan *plan = kiln_graph_compile(g, 1, &y, &ref), *same = kiln_graph_compile(g, 1, &y, NULL);
  assert_int_equal(kiln_plan_check(same, 1, &x, 0, 0), KILN_OK);
  assert_int_equal(kiln_plan_check(plan, 1, &x, 1e-5, 1e-6), KILN_OK);
  assert_int_equal(kiln_plan_check(plan, 1, &x, 0, 0), KILN_ERR_CORRUPT);
  assert_non_null(strstr(kiln_last_error(), "kiln_plan_check: step 0 (linear, node #4 linear) output 0 differs"));
  assert_non_null(strstr(kiln_last_error(), "compiled "));
  kiln_plan_free(plan);
  kiln_plan_free(same);
  kiln_graph_release(g);
  kiln_scope_end();
  kiln_block_release(net);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(hybridized_equals_eager),
      cmocka_unit_test(forward_runs_only_while_tracing),
      cmocka_unit_test(reading_a_value_while_tracing_fails),
      cmocka_unit_test(training_through_plans_equals_eager),
      cmocka_unit_test(recorded_batch_norm_runs_imperatively),
      cmocka_unit_test(check_mode_names_the_first_difference),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
