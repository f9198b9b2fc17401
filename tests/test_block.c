/* Blocks and layers: outputs against naive loops over the parameters' own
 * values, deferred shape inference, hierarchical names, initialiser
 * statistics, every layer's gradients (input and parameters) against
 * central finite differences in float64, BatchNorm's statistics, saving and
 * loading parameters, the trainer, schedules and metrics, and the errors. */
#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "tensor/tensor.h" /* a tensor's engine variable, to hold its writer back */
#include "testutil.h"

static double *values(const kiln_tensor *t) {
  int64_t n = kiln_tensor_numel(t);
  double *v = malloc(sizeof(double) * (size_t)(n ? n : 1));
  kiln_scope_begin();
  kiln_tensor *d = kiln_cast((kiln_tensor *)t, KILN_F64);
  assert_int_equal(kiln_tensor_copy_to(d, v, sizeof(double) * (size_t)n), KILN_OK);
  kiln_scope_end();
  return v;
}

static kiln_tensor *param(kiln_block *b, const char *name) {
  kiln_tensor *p = kiln_block_param(b, name);
  assert_true(tu_ok(name, p));
  return p;
}

/* ------------------------------------------------------------ asynchrony */

/* An op that writes x and holds until the test lets it go (or 10 s pass,
 * so a regression fails instead of hanging). */
static atomic_int held_open;
static kiln_status hold_until_open(void *data) {
  (void)data;
  for (int i = 0; i < 10000 && !atomic_load(&held_open); i++) nanosleep(&(struct timespec){0, 1000000}, NULL);
  return KILN_OK;
}

static double seconds_now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* d2l 13.2: a forward pushes its ops and returns; layers never wait for
 * the values between them. Sequential and Dense used to ask each output
 * for its status, which waits, so a model ran one layer at a time with
 * the caller blocked. Eager and hybridized calls return while their input
 * is still being written. */
static void forward_does_not_wait(void **state) {
  (void)state;
  if (kiln_engine_params_default().mode == KILN_ENGINE_NAIVE) skip(); /* naive mode runs each push at once */
  kiln_block *net = kiln_nn_sequential();
  assert_int_equal(kiln_block_add_child(net, NULL, kiln_nn_dense(8, KILN_ACT_RELU)), KILN_OK);
  assert_int_equal(kiln_block_add_child(net, NULL, kiln_nn_dense(3, KILN_ACT_NONE)), KILN_OK);
  assert_int_equal(kiln_block_initialize(net, NULL, false), KILN_OK);
  for (int hybrid = 0; hybrid < 2; hybrid++) {
    kiln_scope_begin();
    kiln_tensor *x = tu_random(KILN_F32, 2, TU_SHAPE(4, 5), 7, -1, 1);
    if (hybrid) {
      assert_int_equal(kiln_block_hybridize(net, NULL), KILN_OK);
      TU_OK(kiln_block_call(net, x)); /* the trace, before the hold */
    }
    kiln_tensor *want = kiln_block_call(net, x);
    assert_int_equal(kiln_waitall(), KILN_OK);
    atomic_store(&held_open, 0);
    kiln_engine_var *var = x->storage->var;
    assert_int_equal(kiln_engine_push(kiln_default_engine(), hold_until_open, NULL, NULL, NULL, 0, &var, 1, "hold", 0),
                     KILN_OK);
    double t0 = seconds_now();
    kiln_tensor *y = kiln_block_call(net, x);
    double returned = seconds_now() - t0;
    atomic_store(&held_open, 1);
    printf("%s forward returned after %.3f s with its input held\n", hybrid ? "hybridized" : "eager", returned);
    assert_true(returned < 2.0);
    assert_true(tu_close("after the hold", y, want, 0, 0));
    kiln_scope_end();
  }
  kiln_block_release(net);
}

/* ------------------------------------------------------------ forward values */

static void sequential_dense_matches_loops(void **state) {
  (void)state;
  kiln_seed(1);
  kiln_block *net = kiln_nn_sequential();
  assert_int_equal(kiln_block_add_child(net, NULL, kiln_nn_dense(4, KILN_ACT_RELU)), KILN_OK);
  assert_int_equal(kiln_block_add_child(net, NULL, kiln_nn_dense(3, KILN_ACT_NONE)), KILN_OK);
  assert_int_equal(kiln_block_initialize(net, NULL, false), KILN_OK);
  kiln_scope_begin();
  /* [5, 1, 7] is flattened to [5, 7]: in_units is inferred as 7. */
  kiln_tensor *x = tu_random(KILN_F32, 3, TU_SHAPE(5, 1, 7), 3, -1, 1);
  kiln_tensor *y = kiln_block_call(net, x);
  TU_OK(y);
  assert_int_equal(kiln_tensor_ndim(y), 2);
  assert_int_equal(kiln_tensor_dim(y, 0), 5);
  assert_int_equal(kiln_tensor_dim(y, 1), 3);
  kiln_block *d0 = kiln_block_child(net, 0), *d1 = kiln_block_child(net, 1);
  assert_int_equal(kiln_tensor_dim(param(d0, "weight"), 1), 7);
  double *xv = values(x), *w0 = values(param(d0, "weight")), *b0 = values(param(d0, "bias"));
  double *w1 = values(param(d1, "weight")), *b1 = values(param(d1, "bias")), want[15];
  for (int i = 0; i < 5; i++) {
    double h[4];
    for (int j = 0; j < 4; j++) {
      double s = b0[j];
      for (int k = 0; k < 7; k++) s += xv[i * 7 + k] * w0[j * 7 + k];
      h[j] = s > 0 ? s : 0;
    }
    for (int j = 0; j < 3; j++) {
      double s = b1[j];
      for (int k = 0; k < 4; k++) s += h[k] * w1[j * 4 + k];
      want[i * 3 + j] = s;
    }
  }
  assert_true(tu_close_values("sequential dense", y, want, kiln_tensor_numel(y), 1e-5, 1e-6));
  free(xv), free(w0), free(b0), free(w1), free(b1);
  kiln_scope_end();

  kiln_param_list l;
  assert_int_equal(kiln_block_collect_params(net, &l), KILN_OK);
  assert_int_equal(l.n, 4);
  const char *names[] = {"0.weight", "0.bias", "1.weight", "1.bias"};
  for (int i = 0; i < 4; i++) assert_string_equal(l.names[i], names[i]);
  assert_int_equal(kiln_tensor_dim(l.tensors[2], 0), 3);
  kiln_param_list_free(&l);
  kiln_block_release(net);
}

static void dense_without_flatten_uses_last_axis(void **state) {
  (void)state;
  kiln_dense_params p = kiln_dense_params_default(2);
  p.flatten = false;
  p.use_bias = false;
  kiln_block *d = kiln_nn_dense_ex(&p);
  kiln_init ones = kiln_init_constant(1);
  assert_int_equal(kiln_block_initialize(d, &ones, false), KILN_OK);
  kiln_scope_begin();
  kiln_tensor *x = kiln_arange(0, 12, 1, KILN_F32);
  kiln_tensor *y = kiln_block_call(d, kiln_reshape(x, 3, TU_SHAPE(2, 2, 3)));
  /* Each output is the sum of the last axis' three values. */
  double want[8] = {3, 3, 12, 12, 21, 21, 30, 30};
  assert_int_equal(kiln_tensor_ndim(y), 3);
  assert_true(tu_close_values("dense last axis", y, want, kiln_tensor_numel(y), 0, 0));
  kiln_param_list l;
  assert_int_equal(kiln_block_collect_params(d, &l), KILN_OK);
  assert_int_equal(l.n, 1); /* no bias */
  kiln_param_list_free(&l);
  kiln_scope_end();
  kiln_block_release(d);
}

static void conv_layer_matches_the_op(void **state) {
  (void)state;
  kiln_conv2d_layer_params p = kiln_conv2d_layer_params_default(4, 3, 3);
  p.conv.padding[0] = p.conv.padding[1] = 1;
  p.conv.stride[0] = 2;
  p.conv.groups = 2;
  p.activation = KILN_ACT_TANH;
  kiln_block *c = kiln_nn_conv2d(&p);
  kiln_init normal = kiln_init_normal(0, 0.3);
  assert_int_equal(kiln_block_initialize(c, &normal, false), KILN_OK);
  /* The bias has its own initialiser (zeros); give it values to check. */
  kiln_scope_begin();
  kiln_tensor *x = tu_random(KILN_F32, 4, TU_SHAPE(2, 6, 7, 5), 9, -1, 1);
  kiln_tensor *y = kiln_block_call(c, x);
  TU_OK(y);
  kiln_tensor *w = param(c, "weight");
  assert_int_equal(kiln_tensor_dim(w, 1), 3); /* 6 channels / 2 groups */
  assert_int_equal(kiln_assign(param(c, "bias"), tu_random(KILN_F32, 1, TU_SHAPE(4), 10, -1, 1)), KILN_OK);
  y = kiln_block_call(c, x);
  kiln_tensor *want = kiln_tanh(kiln_conv2d(x, w, param(c, "bias"), &p.conv));
  assert_true(tu_close("conv layer", y, want, 0, 0));
  kiln_scope_end();
  kiln_block_release(c);
}

static void pool_flatten_and_activation_layers(void **state) {
  (void)state;
  kiln_pool2d_params pp = kiln_pool2d_params_default(2, 2);
  kiln_block *blocks[] = {kiln_nn_max_pool2d(&pp), kiln_nn_avg_pool2d(&pp), kiln_nn_global_avg_pool2d(),
                          kiln_nn_flatten(), kiln_nn_activation(KILN_ACT_SIGMOID)};
  kiln_scope_begin();
  kiln_tensor *x = tu_random(KILN_F32, 4, TU_SHAPE(2, 3, 4, 6), 11, -2, 2);
  kiln_tensor *want[] = {kiln_max_pool2d(x, &pp), kiln_avg_pool2d(x, &pp), kiln_mean(x, 2, (int[]){2, 3}, true),
                         kiln_reshape(x, 2, TU_SHAPE(2, 72)), kiln_sigmoid(x)};
  for (int i = 0; i < 5; i++) {
    assert_int_equal(kiln_block_initialize(blocks[i], NULL, false), KILN_OK);
    assert_true(tu_close(kiln_block_type(blocks[i]), kiln_block_call(blocks[i], x), want[i], 0, 0));
    kiln_block_release(blocks[i]);
  }
  kiln_scope_end();
}

static void dropout_layer_trains_and_predicts(void **state) {
  (void)state;
  kiln_block *d = kiln_nn_dropout(0.5);
  kiln_scope_begin();
  kiln_tensor *x = kiln_ones(KILN_F32, 1, TU_SHAPE(4000));
  assert_true(tu_close("predict is identity", kiln_block_call(d, x), x, 0, 0));
  kiln_record_begin(true);
  kiln_tensor *y = kiln_block_call(d, x);
  kiln_record_end();
  double *v = values(y);
  int zeros = 0;
  for (int i = 0; i < 4000; i++) {
    assert_true(v[i] == 0 || v[i] == 2);
    zeros += v[i] == 0;
  }
  free(v);
  assert_in_range(zeros, 1800, 2200);
  kiln_scope_end();
  kiln_block_release(d);
}

static void batch_norm_layer_statistics(void **state) {
  (void)state;
  kiln_block *bn = kiln_nn_batch_norm(0, 0.9, 1e-5);
  assert_int_equal(kiln_block_initialize(bn, NULL, false), KILN_OK);
  kiln_scope_begin();
  kiln_tensor *x = tu_random(KILN_F32, 4, TU_SHAPE(3, 2, 2, 2), 12, -1, 3);
  kiln_record_begin(true);
  kiln_tensor *y = kiln_block_call(bn, x);
  kiln_record_end();
  TU_OK(y);
  double *xv = values(x), want[24], mean[2], var[2];
  for (int c = 0; c < 2; c++) {
    double s = 0, ss = 0;
    for (int n = 0; n < 3; n++)
      for (int k = 0; k < 4; k++) s += xv[n * 8 + c * 4 + k];
    mean[c] = s / 12;
    for (int n = 0; n < 3; n++)
      for (int k = 0; k < 4; k++) ss += pow(xv[n * 8 + c * 4 + k] - mean[c], 2);
    var[c] = ss / 12;
    for (int n = 0; n < 3; n++)
      for (int k = 0; k < 4; k++) want[n * 8 + c * 4 + k] = (xv[n * 8 + c * 4 + k] - mean[c]) / sqrt(var[c] + 1e-5);
    var[c] = ss / 11; /* the running variance is unbiased */
  }
  assert_true(tu_close_values("batch norm training output", y, want, kiln_tensor_numel(y), 1e-5, 1e-5));
  double rm[2] = {0.1 * mean[0], 0.1 * mean[1]}, rv[2] = {0.9 + 0.1 * var[0], 0.9 + 0.1 * var[1]};
  assert_true(tu_close_values("running mean", param(bn, "running_mean"), rm, 2, 1e-5, 1e-6));
  assert_true(tu_close_values("running var", param(bn, "running_var"), rv, 2, 1e-5, 1e-6));
  /* Predicting normalises with the running statistics. */
  kiln_tensor *p = kiln_block_call(bn, x);
  for (int n = 0; n < 3; n++)
    for (int c = 0; c < 2; c++)
      for (int k = 0; k < 4; k++) want[n * 8 + c * 4 + k] = (xv[n * 8 + c * 4 + k] - rm[c]) / sqrt(rv[c] + 1e-5);
  assert_true(tu_close_values("batch norm predicting", p, want, kiln_tensor_numel(p), 1e-5, 1e-5));
  free(xv);
  kiln_scope_end();
  kiln_param_list l;
  assert_int_equal(kiln_block_collect_params(bn, &l), KILN_OK);
  assert_int_equal(l.n, 4);
  assert_null(kiln_grad(l.tensors[2])); /* running statistics are state */
  kiln_param_list_free(&l);
  kiln_block_release(bn);
}

/* ------------------------------------------------------------ a user block */

typedef struct {
  int calls;
} residual_state;

/* y = x + body(x) * scale, scale a parameter of the block itself. */
static kiln_tensor *residual_forward(kiln_block *self, int n, kiln_tensor *const *in) {
  (void)n;
  ((residual_state *)kiln_block_user(self))->calls++;
  kiln_tensor *body = kiln_block_call(kiln_block_child_named(self, "body"), in[0]);
  return kiln_add(in[0], kiln_mul(body, kiln_block_param(self, "scale")));
}

static kiln_block *residual(int64_t width) {
  residual_state *s = calloc(1, sizeof *s);
  kiln_block *b = kiln_block_new("Residual", residual_forward, s, free);
  kiln_block *body = kiln_nn_sequential();
  assert_int_equal(kiln_block_add_child(body, NULL, kiln_nn_dense(width, KILN_ACT_TANH)), KILN_OK);
  assert_int_equal(kiln_block_add_child(body, NULL, kiln_nn_dense(width, KILN_ACT_NONE)), KILN_OK);
  kiln_init half = kiln_init_constant(0.5);
  assert_int_equal(kiln_block_add_param(b, "scale", KILN_F32, 1, TU_SHAPE(1), &half, KILN_GRAD_WRITE), KILN_OK);
  assert_int_equal(kiln_block_add_child(b, "body", body), KILN_OK);
  return b;
}

static void user_block_with_children(void **state) {
  (void)state;
  kiln_block *net = kiln_nn_sequential();
  kiln_block *r = residual(5);
  assert_int_equal(kiln_block_add_child(net, "res", kiln_block_retain(r)), KILN_OK);
  assert_int_equal(kiln_block_add_child(net, "out", kiln_nn_dense(2, KILN_ACT_NONE)), KILN_OK);
  assert_int_equal(kiln_block_initialize(net, NULL, false), KILN_OK);
  kiln_scope_begin();
  kiln_tensor *x = tu_random(KILN_F32, 2, TU_SHAPE(3, 5), 13, -1, 1);
  kiln_tensor *y = kiln_block_call(net, x);
  TU_OK(y);
  kiln_block *body = kiln_block_child_named(r, "body");
  kiln_tensor *h = kiln_block_call(body, x);
  kiln_tensor *want = kiln_block_call(kiln_block_child_named(net, "out"), kiln_add(x, kiln_mul_scalar(h, 0.5)));
  assert_true(tu_close("residual", y, want, 1e-6, 1e-6));
  assert_int_equal(((residual_state *)kiln_block_user(r))->calls, 1);
  kiln_scope_end();
  kiln_param_list l;
  assert_int_equal(kiln_block_collect_params(net, &l), KILN_OK);
  const char *names[] = {"res.scale", "res.body.0.weight", "res.body.0.bias", "res.body.1.weight", "res.body.1.bias",
                         "out.weight", "out.bias"};
  assert_int_equal(l.n, 7);
  for (int i = 0; i < 7; i++) assert_string_equal(l.names[i], names[i]);
  kiln_param_list_free(&l);

  char *buf = NULL;
  size_t len = 0;
  FILE *f = open_memstream(&buf, &len);
  assert_int_equal(kiln_block_print(net, f), KILN_OK);
  fclose(f);
  assert_non_null(strstr(buf, "Sequential\n  res: Residual  scale [1]\n    body: Sequential\n      0: Dense  weight [5, 5]"));
  free(buf);
  kiln_block_release(r);
  kiln_block_release(net);
}

/* ------------------------------------------------------------ gradients */

/* Checks d loss / d (input and every parameter with a gradient) of a block
 * in float64 against central differences, loss = sum(block(x) * w). A
 * parameter is perturbed in place (kiln_assign), so the block keeps its
 * tensors. Each forward is preceded by the same seed, so dropout draws the
 * same mask every time. */
static double block_loss(kiln_block *b, kiln_tensor *x, kiln_tensor *w, bool training) {
  kiln_scope_begin();
  kiln_seed(99);
  /* Recording, in the mode under test, so layers behave as in backward. */
  kiln_record_begin(training);
  kiln_tensor *l = kiln_sum(kiln_mul(kiln_block_call(b, x), w), 0, NULL, false);
  kiln_record_end();
  double v = NAN;
  assert_int_equal(kiln_tensor_item(l, &v), KILN_OK);
  kiln_scope_end();
  return v;
}

static void perturb(kiln_tensor *t, int64_t i, double value) {
  double *v = values(t);
  v[i] = value;
  assert_int_equal(kiln_assign(t, kiln_from_data(KILN_F64, kiln_tensor_ndim(t), kiln_tensor_shape(t), v)), KILN_OK);
  free(v);
}

static void check_block_gradients(const char *name, kiln_block *b, kiln_tensor *x, bool training) {
  kiln_scope_begin();
  assert_int_equal(kiln_block_cast(b, KILN_F64), KILN_OK);
  kiln_seed(99);
  kiln_tensor *y0 = kiln_block_call(b, x); /* fixes deferred shapes */
  assert_true(tu_ok(name, y0));
  kiln_tensor *w = tu_random(KILN_F64, kiln_tensor_ndim(y0), kiln_tensor_shape(y0), 77, -1, 1);
  kiln_param_list l;
  assert_int_equal(kiln_block_collect_params(b, &l), KILN_OK);
  assert_int_equal(kiln_attach_grad(x, KILN_GRAD_WRITE), KILN_OK);
  kiln_seed(99);
  kiln_record_begin(training);
  kiln_tensor *loss = kiln_sum(kiln_mul(kiln_block_call(b, x), w), 0, NULL, false);
  kiln_record_end();
  kiln_status st = kiln_backward(loss, NULL, false);
  if (st != KILN_OK) fprintf(stderr, "%s: backward: %s\n", name, kiln_last_error());
  assert_int_equal(st, KILN_OK);
  int n_checked = 0;
  for (int k = -1; k < l.n; k++) {
    kiln_tensor *t = k < 0 ? x : l.tensors[k];
    if (!kiln_grad(t)) continue;
    const char *what = k < 0 ? "input" : l.names[k];
    int64_t n = kiln_tensor_numel(t);
    double *analytic = values(kiln_grad(t)), *numeric = malloc(sizeof(double) * (size_t)(n ? n : 1));
    for (int64_t i = 0; i < n; i++) {
      double *v = values(t), x0 = v[i];
      free(v);
      const double h = 1e-6;
      perturb(t, i, x0 + h);
      double up = block_loss(b, x, w, training);
      perturb(t, i, x0 - h);
      double down = block_loss(b, x, w, training);
      perturb(t, i, x0);
      numeric[i] = (up - down) / (2 * h);
    }
    char label[160];
    snprintf(label, sizeof label, "%s d/d %s", name, what);
    kiln_tensor *got = kiln_from_data(KILN_F64, 1, TU_SHAPE(n), analytic);
    assert_true(tu_close_values(label, got, numeric, kiln_tensor_numel(got), 1e-5, 1e-7));
    free(analytic);
    free(numeric);
    n_checked++;
  }
  assert_true(n_checked >= 1);
  kiln_param_list_free(&l);
  kiln_scope_end();
}

static void layer_gradients(void **state) {
  (void)state;
  kiln_seed(5);
  kiln_init normal = kiln_init_normal(0, 0.5);
  struct {
    const char *name;
    kiln_block *b;
    int ndim;
    int64_t shape[4];
    bool training;
  } cases[] = {
      {"Dense relu", kiln_nn_dense(3, KILN_ACT_RELU), 2, {4, 5}, false},
      {"Dense sigmoid", kiln_nn_dense(3, KILN_ACT_SIGMOID), 3, {2, 2, 3}, false},
      {"Dense tanh", kiln_nn_dense(2, KILN_ACT_TANH), 2, {3, 4}, false},
      {"Conv2D", NULL, 4, {2, 2, 5, 4}, false},
      {"MaxPool2D", NULL, 4, {2, 2, 4, 4}, false},
      {"AvgPool2D", NULL, 4, {1, 2, 5, 5}, false},
      {"GlobalAvgPool2D", kiln_nn_global_avg_pool2d(), 4, {2, 3, 2, 3}, false},
      {"Flatten", kiln_nn_flatten(), 3, {2, 3, 2}, false},
      {"Dropout", kiln_nn_dropout(0.3), 2, {4, 6}, true},
      {"BatchNorm training", kiln_nn_batch_norm(0, 0.9, 1e-5), 4, {3, 2, 2, 3}, true},
      {"BatchNorm predicting", kiln_nn_batch_norm(0, 0.9, 1e-5), 2, {4, 3}, false},
      {"Activation softplus", kiln_nn_activation(KILN_ACT_SOFTPLUS), 2, {3, 3}, false},
      {"Activation gelu", kiln_nn_activation(KILN_ACT_GELU), 2, {3, 3}, false},
  };
  kiln_conv2d_layer_params cp = kiln_conv2d_layer_params_default(4, 3, 2);
  cp.conv.padding[0] = 1;
  cp.conv.stride[1] = 2;
  cp.conv.groups = 2;
  cp.activation = KILN_ACT_SOFTPLUS;
  cases[3].b = kiln_nn_conv2d(&cp);
  kiln_pool2d_params pp = kiln_pool2d_params_default(2, 2);
  cases[4].b = kiln_nn_max_pool2d(&pp);
  kiln_pool2d_params ap = kiln_pool2d_params_default(3, 3);
  ap.stride[0] = ap.stride[1] = 2;
  ap.padding[0] = ap.padding[1] = 1;
  cases[5].b = kiln_nn_avg_pool2d(&ap);
  for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
    assert_non_null(cases[i].b);
    assert_int_equal(kiln_block_initialize(cases[i].b, &normal, false), KILN_OK);
    kiln_tensor *x = tu_random_f64(cases[i].ndim, cases[i].shape, 50 + i, -1, 1);
    check_block_gradients(cases[i].name, cases[i].b, x, cases[i].training);
    kiln_tensor_release(x);
    kiln_block_release(cases[i].b);
  }
}

/* The ops under BatchNorm, with every output's gradient: y, and the batch
 * mean and variance that a caller may use (the layer does not
 * differentiate through them, but the op's gradient must be right). */
static kiln_tensor *f_bn_train_all(kiln_tensor **in) {
  kiln_tensor *mean, *var;
  kiln_tensor *y = kiln_batch_norm_train(in[0], in[1], in[2], 1e-3, &mean, &var);
  int64_t c = kiln_tensor_dim(in[0], 1);
  kiln_tensor *stats = kiln_add(kiln_reshape(mean, 4, TU_SHAPE(1, c, 1, 1)),
                                kiln_mul_scalar(kiln_reshape(var, 4, TU_SHAPE(1, c, 1, 1)), 0.5));
  return kiln_add(y, stats);
}
static kiln_tensor *f_bn_infer(kiln_tensor **in) { return kiln_batch_norm(in[0], in[1], in[2], in[3], in[4], 1e-3); }

static void batch_norm_op_gradients(void **state) {
  (void)state;
  kiln_tensor *in[5] = {tu_random_f64(4, TU_SHAPE(3, 2, 2, 3), 61, -1, 2), tu_random_f64(1, TU_SHAPE(2), 62, 0.5, 1.5),
                        tu_random_f64(1, TU_SHAPE(2), 63, -1, 1), tu_random_f64(1, TU_SHAPE(2), 64, -0.5, 0.5),
                        tu_random_f64(1, TU_SHAPE(2), 65, 0.5, 2)};
  tu_check_gradients("batch_norm_train with its statistics", f_bn_train_all, 3, in);
  tu_check_gradients("batch_norm with given statistics", f_bn_infer, 5, in);
  tu_release_n(5, in);
}

/* ------------------------------------------------------------ initialisers */

static void initialisers_have_their_distributions(void **state) {
  (void)state;
  kiln_seed(7);
  const double fan_in = 32 * 9, fan_out = 64 * 9, n = 64 * 32 * 9;
  struct {
    kiln_init init;
    double mean, var, bound; /* bound 0: unbounded */
  } cases[] = {
      {kiln_init_uniform(-0.2, 0.6), 0.2, 0.64 / 12, 0.6},
      {kiln_init_normal(1, 0.5), 1, 0.25, 0},
      {kiln_init_xavier(true, 2), 0, 4 * 6 / (fan_in + fan_out) / 3, 2 * sqrt(6 / (fan_in + fan_out))},
      {kiln_init_xavier(false, 1), 0, 2 / (fan_in + fan_out), 0},
      {kiln_init_kaiming(true, 0), 0, 2 / fan_in, sqrt(6 / fan_in)},
      {kiln_init_kaiming(false, 0.2), 0, 2 / (1.04 * fan_in), 0},
      {kiln_init_constant(0.25), 0.25, 0, 0.25},
  };
  for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
    kiln_block *b = kiln_nn_conv2d(&(kiln_conv2d_layer_params){64, 32, {3, 3}, kiln_conv2d_params_default(), KILN_ACT_NONE, false});
    assert_int_equal(kiln_block_initialize(b, &cases[i].init, false), KILN_OK);
    double *v = values(param(b, "weight")), s = 0, ss = 0, top = 0;
    for (int64_t k = 0; k < (int64_t)n; k++) s += v[k];
    double mean = s / n;
    for (int64_t k = 0; k < (int64_t)n; k++) {
      ss += (v[k] - mean) * (v[k] - mean);
      top = fabs(v[k]) > top ? fabs(v[k]) : top;
    }
    double var = ss / n, sd = sqrt(cases[i].var);
    /* 18 432 samples: the mean is within 5 standard errors, the variance
     * within 5%. */
    assert_true(fabs(mean - cases[i].mean) <= 5 * sd / sqrt(n) + 1e-7);
    assert_true(fabs(var - cases[i].var) <= 0.05 * cases[i].var + 1e-12);
    if (cases[i].bound > 0) {
      assert_true(top <= cases[i].bound * (1 + 1e-6));
      assert_true(top >= 0.98 * cases[i].bound);
    }
    free(v);
    kiln_block_release(b);
  }
  /* Fans need two dims. */
  kiln_block *b = kiln_block_new("Probe", residual_forward, NULL, NULL);
  assert_int_equal(kiln_block_add_param(b, "v", KILN_F32, 1, TU_SHAPE(3), NULL, KILN_GRAD_WRITE), KILN_OK);
  assert_int_equal(kiln_block_initialize(b, NULL, false), KILN_ERR_INVALID_ARGUMENT);
  assert_non_null(strstr(kiln_last_error(), "'v'"));
  assert_non_null(strstr(kiln_last_error(), "at least 2 dims"));
  kiln_block_release(b);
}

static void initialize_keeps_values_unless_forced(void **state) {
  (void)state;
  kiln_block *d = kiln_nn_dense_ex(&(kiln_dense_params){2, 3, KILN_ACT_NONE, true, true});
  kiln_init one = kiln_init_constant(1), two = kiln_init_constant(2);
  assert_int_equal(kiln_block_initialize(d, &one, false), KILN_OK);
  kiln_tensor *w = param(d, "weight");
  assert_int_equal(kiln_block_initialize(d, &two, false), KILN_OK);
  double got;
  kiln_scope_begin();
  assert_int_equal(kiln_tensor_item(kiln_sum(w, 0, NULL, false), &got), KILN_OK);
  assert_true(got == 6);
  assert_int_equal(kiln_block_initialize(d, &two, true), KILN_OK);
  assert_ptr_equal(param(d, "weight"), w); /* re-initialised in place */
  assert_int_equal(kiln_tensor_item(kiln_sum(w, 0, NULL, false), &got), KILN_OK);
  assert_true(got == 12);
  kiln_scope_end();
  kiln_block_release(d);
}

/* ------------------------------------------------------------ save and load */

static kiln_block *small_cnn(void) {
  kiln_block *net = kiln_nn_sequential();
  kiln_conv2d_layer_params cp = kiln_conv2d_layer_params_default(3, 3, 3);
  kiln_pool2d_params pp = kiln_pool2d_params_default(2, 2);
  kiln_block_add_child(net, NULL, kiln_nn_conv2d(&cp));
  kiln_block_add_child(net, NULL, kiln_nn_batch_norm(0, 0.9, 1e-5));
  kiln_block_add_child(net, NULL, kiln_nn_max_pool2d(&pp));
  assert_int_equal(kiln_block_add_child(net, NULL, kiln_nn_dense(4, KILN_ACT_NONE)), KILN_OK);
  return net;
}

static void parameters_round_trip(void **state) {
  (void)state;
  char dir[] = "/tmp/kiln_block_XXXXXX", path[256], other[256];
  assert_non_null(mkdtemp(dir));
  snprintf(path, sizeof path, "%s/net.safetensors", dir);
  snprintf(other, sizeof other, "%s/other.safetensors", dir);
  kiln_seed(21);
  kiln_block *a = small_cnn(), *b = small_cnn();
  assert_int_equal(kiln_block_initialize(a, NULL, false), KILN_OK);
  kiln_scope_begin();
  kiln_tensor *x = tu_random(KILN_F32, 4, TU_SHAPE(2, 1, 6, 6), 22, -1, 1);
  kiln_record_begin(true); /* move BatchNorm's running statistics off their start */
  kiln_block_call(a, x);
  kiln_record_end();
  /* Saving before the first forward fails: shapes are still unknown. */
  assert_int_equal(kiln_block_save_parameters(b, path), KILN_ERR_INVALID_ARGUMENT);
  assert_non_null(strstr(kiln_last_error(), "'0.weight'"));
  assert_int_equal(kiln_block_save_parameters(a, path), KILN_OK);
  /* b was never initialised nor run: loading gives it shapes and values. */
  assert_int_equal(kiln_block_load_parameters(b, path), KILN_OK);
  assert_true(tu_close("loaded net predicts the same", kiln_block_call(b, x), kiln_block_call(a, x), 0, 0));
  kiln_param_list la, lb;
  assert_int_equal(kiln_block_collect_params(a, &la), KILN_OK);
  assert_int_equal(kiln_block_collect_params(b, &lb), KILN_OK);
  assert_int_equal(la.n, 8);
  for (int i = 0; i < la.n; i++) assert_true(tu_close(la.names[i], lb.tensors[i], la.tensors[i], 0, 0));
  assert_non_null(kiln_grad(lb.tensors[0]));

  /* A file with a parameter of the wrong shape, a missing one, an extra
   * one: each names it, and b is left as it was. */
  kiln_tensor *before = kiln_copy(lb.tensors[0]);
  const char *names[8];
  kiln_tensor *ts[9];
  for (int i = 0; i < 8; i++) names[i] = la.names[i], ts[i] = la.tensors[i];
  ts[6] = kiln_zeros(KILN_F32, 2, TU_SHAPE(4, 3)); /* 3.weight is [4, 12] */
  assert_int_equal(kiln_save_safetensors(other, 8, names, ts), KILN_OK);
  assert_int_equal(kiln_block_load_parameters(b, other), KILN_ERR_SHAPE);
  assert_non_null(strstr(kiln_last_error(), "'3.weight' is float32 [4, 12], the file has float32 [4, 3]"));
  assert_int_equal(kiln_save_safetensors(other, 7, names, la.tensors), KILN_OK);
  assert_int_equal(kiln_block_load_parameters(b, other), KILN_ERR_CORRUPT);
  assert_non_null(strstr(kiln_last_error(), "no parameter '3.bias' in the file"));
  const char *more[9];
  for (int i = 0; i < 8; i++) more[i] = la.names[i], ts[i] = la.tensors[i];
  more[8] = "4.weight";
  ts[8] = la.tensors[0];
  assert_int_equal(kiln_save_safetensors(other, 9, more, ts), KILN_OK);
  assert_int_equal(kiln_block_load_parameters(b, other), KILN_ERR_CORRUPT);
  assert_non_null(strstr(kiln_last_error(), "the file has '4.weight'"));
  assert_true(tu_close("a failed load changes nothing", lb.tensors[0], before, 0, 0));
  assert_int_equal(kiln_block_load_parameters(b, "/nonexistent/dir/net.safetensors"), KILN_ERR_IO);
  kiln_param_list_free(&la);
  kiln_param_list_free(&lb);
  kiln_scope_end();
  kiln_block_release(a);
  kiln_block_release(b);
  unlink(path);
  unlink(other);
  rmdir(dir);
}

/* ------------------------------------------------------------ errors */

static void block_errors_say_what_and_where(void **state) {
  (void)state;
  /* A failed constructor is reported where the model is assembled. */
  kiln_block *net = kiln_nn_sequential();
  assert_int_equal(kiln_block_add_child(net, NULL, kiln_nn_dense(0, KILN_ACT_NONE)), KILN_ERR_INVALID_ARGUMENT);
  assert_non_null(strstr(kiln_last_error(), "child is NULL: kiln_nn_dense: units 0"));
  assert_null(kiln_nn_dropout(1.0));
  assert_null(kiln_nn_batch_norm(-1, 0.9, 1e-5));
  assert_null(kiln_block_new("X", NULL, NULL, NULL));
  assert_int_equal(kiln_block_add_child(net, "a", kiln_nn_flatten()), KILN_OK);
  assert_int_equal(kiln_block_add_child(net, "a", kiln_nn_flatten()), KILN_ERR_INVALID_ARGUMENT);
  assert_non_null(strstr(kiln_last_error(), "'a' is already"));
  assert_int_equal(kiln_block_add_child(net, "a.b", kiln_nn_flatten()), KILN_ERR_INVALID_ARGUMENT);
  assert_int_equal(kiln_block_add_child(net, "self", kiln_block_retain(net)), KILN_ERR_INVALID_ARGUMENT);
  assert_non_null(strstr(kiln_last_error(), "cycle"));
  assert_int_equal(kiln_block_add_param(net, "w", KILN_I32, 1, TU_SHAPE(2), NULL, KILN_GRAD_WRITE), KILN_ERR_DTYPE);
  assert_int_equal(kiln_block_add_param(net, "w", KILN_F32, 1, TU_SHAPE(-2), NULL, KILN_GRAD_WRITE),
                   KILN_ERR_INVALID_ARGUMENT);
  kiln_block_release(net);

  net = kiln_nn_sequential();
  kiln_block_add_child(net, NULL, kiln_nn_flatten());
  kiln_block_add_child(net, NULL, kiln_nn_dense(4, KILN_ACT_NONE));
  kiln_scope_begin();
  kiln_tensor *x = kiln_zeros(KILN_F32, 2, TU_SHAPE(2, 6));
  TU_FAILS(kiln_block_call(net, x), KILN_ERR_INVALID_ARGUMENT,
           "1 (Dense): Dense parameter 'weight' is not initialised: call kiln_block_initialize");
  assert_int_equal(kiln_block_initialize(net, NULL, false), KILN_OK);
  TU_OK(kiln_block_call(net, x));
  /* The inferred in_units is now fixed. */
  TU_FAILS(kiln_block_call(net, kiln_zeros(KILN_F32, 2, TU_SHAPE(2, 5))), KILN_ERR_SHAPE,
           "1 (Dense): Dense parameter 'weight' is [4, 6] but the input needs [4, 5]");
  /* A failed input passes through unchanged, without a prefix. */
  kiln_tensor *bad = kiln_reshape(x, 1, TU_SHAPE(5));
  kiln_tensor *y = kiln_block_call(net, bad);
  assert_string_equal(kiln_tensor_error(y), kiln_tensor_error(bad));
  TU_FAILS(kiln_block_call_n(kiln_block_child(net, 1), 2, (kiln_tensor *[]){x, x}), KILN_ERR_INVALID_ARGUMENT,
           "Dense: takes 1 input, got 2");
  TU_FAILS(kiln_block_param(net, "nope"), KILN_ERR_INVALID_ARGUMENT, "Sequential has no parameter 'nope'");
  kiln_hybridize_options small = kiln_hybridize_options_default();
  small.cache_capacity = 0;
  assert_int_equal(kiln_block_hybridize(net, &small), KILN_ERR_INVALID_ARGUMENT);
  assert_non_null(strstr(kiln_last_error(), "cache capacity 0 must be >= 1"));
  assert_int_equal(kiln_block_hybridize(NULL, NULL), KILN_ERR_INVALID_ARGUMENT);
  assert_int_equal(kiln_block_set_traceable(NULL, false), KILN_ERR_INVALID_ARGUMENT);
  assert_string_equal(kiln_block_trace_log(NULL), "");
  /* kiln_assign: dtypes must agree, the source broadcasts. */
  kiln_tensor *dst = kiln_zeros(KILN_F32, 2, TU_SHAPE(2, 3));
  assert_int_equal(kiln_assign(dst, kiln_zeros(KILN_F64, 0, NULL)), KILN_ERR_DTYPE);
  assert_non_null(strstr(kiln_last_error(), "kiln_assign: src is float64, dst float32"));
  assert_int_equal(kiln_assign(dst, kiln_zeros(KILN_F32, 1, TU_SHAPE(4))), KILN_ERR_SHAPE);
  assert_int_equal(kiln_assign(NULL, dst), KILN_ERR_INVALID_ARGUMENT);
  assert_int_equal(kiln_assign(dst, kiln_arange(0, 3, 1, KILN_F32)), KILN_OK);
  assert_true(tu_close_values("assign broadcasts", dst, (double[]){0, 1, 2, 0, 1, 2}, 6, 0, 0));
  /* Overlapping source and destination: a copy is taken first. */
  assert_int_equal(kiln_assign(dst, kiln_slice(dst, 1, 2, 3, 1)), KILN_OK);
  assert_true(tu_close_values("assign from itself", dst, (double[]){2, 2, 2, 2, 2, 2}, 6, 0, 0));
  kiln_scope_end();
  kiln_block_release(net);
}

/* ------------------------------------------------------------ trainer, schedules, metrics */

static void schedules_follow_their_formulas(void **state) {
  (void)state;
  kiln_lr_schedule step = {.kind = KILN_LR_STEP, .step_size = 3, .factor = 0.5};
  double want_step[] = {1, 1, 1, 0.5, 0.5, 0.5, 0.25};
  for (int t = 0; t < 7; t++) assert_true(fabs(kiln_lr_schedule_at(&step, 1, t) - want_step[t]) < 1e-15);
  /* Half a cosine from 1 to 0.1 over 4 updates: 1, 0.1 + 0.9 (1 + cos(pi/4)) / 2, 0.55, ... */
  kiln_lr_schedule cosine = {.kind = KILN_LR_COSINE, .total_steps = 4, .final_lr = 0.1};
  double want_cos[] = {1, 0.868198051533946, 0.55, 0.231801948466054, 0.1, 0.1};
  for (int t = 0; t < 6; t++) assert_true(fabs(kiln_lr_schedule_at(&cosine, 1, t) - want_cos[t]) < 1e-12);
  /* Two warm-up updates from 0, then the cosine over the remaining 4. */
  kiln_lr_schedule warm = cosine;
  warm.total_steps = 6;
  warm.warmup_steps = 2;
  double want_warm[] = {0, 0.5, 1, 0.868198051533946, 0.55};
  for (int t = 0; t < 5; t++) assert_true(fabs(kiln_lr_schedule_at(&warm, 1, t) - want_warm[t]) < 1e-12);
  kiln_lr_schedule broken = {.kind = KILN_LR_STEP};
  assert_true(isnan(kiln_lr_schedule_at(&broken, 1, 0)));
}

static void trainer_steps_every_trained_parameter(void **state) {
  (void)state;
  kiln_seed(31);
  kiln_block *net = kiln_nn_sequential();
  kiln_block_add_child(net, NULL, kiln_nn_dense(3, KILN_ACT_NONE));
  kiln_block_add_child(net, NULL, kiln_nn_batch_norm(0, 0.9, 1e-5));
  assert_int_equal(kiln_block_initialize(net, NULL, false), KILN_OK);
  kiln_optimizer_params op = kiln_optimizer_params_default(KILN_OPT_SGD);
  op.lr = 0.5;
  kiln_trainer *tr = kiln_trainer_new(net, &op);
  assert_non_null(tr);
  kiln_lr_schedule step = {.kind = KILN_LR_STEP, .step_size = 1, .factor = 0.1};
  assert_int_equal(kiln_trainer_set_schedule(tr, &step), KILN_OK);
  kiln_lr_schedule broken = {.kind = KILN_LR_COSINE};
  assert_int_equal(kiln_trainer_set_schedule(tr, &broken), KILN_ERR_INVALID_ARGUMENT);
  kiln_scope_begin();
  kiln_tensor *x = tu_random(KILN_F32, 2, TU_SHAPE(6, 4), 32, -1, 1), *target = tu_random(KILN_F32, 2, TU_SHAPE(6, 3), 33, -1, 1);
  for (int it = 0; it < 2; it++) {
    kiln_record_begin(true);
    kiln_tensor *loss = kiln_l2_loss(kiln_block_call(net, x), target);
    kiln_record_end();
    assert_int_equal(kiln_backward(loss, NULL, false), KILN_OK);
    kiln_param_list l;
    assert_int_equal(kiln_block_collect_params(net, &l), KILN_OK);
    double *before[6], *grads[6];
    for (int i = 0; i < l.n; i++) {
      before[i] = values(l.tensors[i]);
      grads[i] = kiln_grad(l.tensors[i]) ? values(kiln_grad(l.tensors[i])) : NULL;
    }
    double lr = it == 0 ? 0.5 : 0.05;
    assert_true(fabs(kiln_trainer_lr(tr) - lr) < 1e-15);
    assert_int_equal(kiln_trainer_step(tr, 2), KILN_OK); /* gradients halved */
    for (int i = 0; i < l.n; i++) {
      int64_t n = kiln_tensor_numel(l.tensors[i]);
      double *want = malloc(sizeof(double) * (size_t)n);
      for (int64_t k = 0; k < n; k++) want[k] = grads[i] ? before[i][k] - lr * grads[i][k] / 2 : before[i][k];
      assert_true(tu_close_values(l.names[i], l.tensors[i], want, kiln_tensor_numel(l.tensors[i]), 1e-6, 1e-7));
      free(want);
      free(before[i]);
      free(grads[i]);
    }
    kiln_param_list_free(&l);
  }
  kiln_scope_end();
  kiln_trainer_free(tr);
  /* A block whose shapes are still unknown cannot be stepped. */
  kiln_block *d = kiln_nn_dense(2, KILN_ACT_NONE);
  kiln_block_initialize(d, NULL, false);
  tr = kiln_trainer_new(d, NULL);
  assert_int_equal(kiln_trainer_step(tr, 1), KILN_ERR_INVALID_ARGUMENT);
  assert_non_null(strstr(kiln_last_error(), "'weight' has no data yet"));
  kiln_trainer_free(tr);
  kiln_block_release(d);
  kiln_block_release(net);
}

static void metrics_accumulate(void **state) {
  (void)state;
  kiln_metric *acc = kiln_metric_new(KILN_METRIC_ACCURACY), *loss = kiln_metric_new(KILN_METRIC_MEAN_LOSS);
  double v;
  int64_t n;
  assert_int_equal(kiln_metric_get(acc, &v, &n), KILN_OK);
  assert_true(isnan(v) && n == 0);
  kiln_scope_begin();
  float scores[] = {0.1f, 0.9f, 0.8f, 0.2f, 0.3f, 0.7f};
  int64_t labels[] = {1, 1, 1};
  kiln_tensor *s = kiln_from_data(KILN_F32, 2, TU_SHAPE(3, 2), scores), *y = kiln_from_data(KILN_I64, 1, TU_SHAPE(3), labels);
  assert_int_equal(kiln_metric_update(acc, s, y), KILN_OK);
  uint8_t ids[] = {0, 1};
  uint8_t truth[] = {0, 0};
  assert_int_equal(kiln_metric_update(acc, kiln_from_data(KILN_U8, 1, TU_SHAPE(2), ids),
                                       kiln_from_data(KILN_U8, 1, TU_SHAPE(2), truth)),
                   KILN_OK);
  assert_int_equal(kiln_metric_get(acc, &v, &n), KILN_OK);
  assert_true(n == 5 && fabs(v - 3.0 / 5) < 1e-12);
  assert_int_equal(kiln_metric_update(acc, s, kiln_from_data(KILN_I64, 1, TU_SHAPE(2), labels)), KILN_ERR_SHAPE);
  /* A batch mean of 2 over 3 samples and one of 4 over 1: (6 + 4) / 4. */
  assert_int_equal(kiln_metric_update(loss, kiln_full(KILN_F32, 0, NULL, 2), y), KILN_OK);
  assert_int_equal(kiln_metric_update(loss, kiln_full(KILN_F32, 0, NULL, 4), NULL), KILN_OK);
  assert_int_equal(kiln_metric_get(loss, &v, &n), KILN_OK);
  assert_true(n == 4 && fabs(v - 2.5) < 1e-12);
  /* Per-sample losses count one each. */
  kiln_metric_reset(loss);
  assert_int_equal(kiln_metric_update(loss, kiln_arange(1, 5, 1, KILN_F32), NULL), KILN_OK);
  assert_int_equal(kiln_metric_get(loss, &v, &n), KILN_OK);
  assert_true(n == 4 && fabs(v - 2.5) < 1e-12);
  kiln_scope_end();
  kiln_metric_free(acc);
  kiln_metric_free(loss);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(sequential_dense_matches_loops),
      cmocka_unit_test(dense_without_flatten_uses_last_axis),
      cmocka_unit_test(conv_layer_matches_the_op),
      cmocka_unit_test(pool_flatten_and_activation_layers),
      cmocka_unit_test(dropout_layer_trains_and_predicts),
      cmocka_unit_test(batch_norm_layer_statistics),
      cmocka_unit_test(user_block_with_children),
      cmocka_unit_test(layer_gradients),
      cmocka_unit_test(batch_norm_op_gradients),
      cmocka_unit_test(initialisers_have_their_distributions),
      cmocka_unit_test(initialize_keeps_values_unless_forced),
      cmocka_unit_test(parameters_round_trip),
      cmocka_unit_test(block_errors_say_what_and_where),
      cmocka_unit_test(schedules_follow_their_formulas),
      cmocka_unit_test(trainer_steps_every_trained_parameter),
      cmocka_unit_test(metrics_accumulate),
      cmocka_unit_test(forward_does_not_wait),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
