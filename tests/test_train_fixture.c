/* End to end against PyTorch 1.13 (tests/fixtures/make_train_fixtures.py):
 * a fixed MLP and a fixed small CNN (conv 3x3 pad 1, relu, max-pool 2,
 * linear) on given inputs and labels. The loss, every gradient, and every
 * parameter after 5 SGD (lr 0.1, momentum 0.9) and 5 Adam (lr 0.01) steps
 * must match PyTorch's. Tolerance: float32 on both sides with different
 * summation orders, compounded over 5 steps: rtol 1e-4, atol 1e-5. */
#include <stdio.h>
#include <string.h>

#include "testutil.h"

enum { N_PARAMS = 4 };

typedef struct {
  const char *prefix;
  const char *names[N_PARAMS];
  bool cnn;
} net;

static kiln_tensor *forward(const net *n, kiln_tensor *const *p, kiln_tensor *x) {
  if (!n->cnn) return kiln_linear(kiln_relu(kiln_linear(x, p[0], p[1])), p[2], p[3]);
  kiln_conv2d_params c = kiln_conv2d_params_default();
  c.padding[0] = c.padding[1] = 1;
  kiln_pool2d_params pool = kiln_pool2d_params_default(2, 2);
  kiln_tensor *h = kiln_max_pool2d(kiln_relu(kiln_conv2d(x, p[0], p[1], &c)), &pool);
  return kiln_linear(kiln_reshape(h, 2, (int64_t[]){kiln_tensor_dim(x, 0), -1}), p[2], p[3]);
}

/* A fixture owned by the tracker whatever scope is open: its own scope
 * drops the load's reference, the retained one goes to the tracker. */
static kiln_tensor *fixture(const net *n, const char *what) {
  char name[128];
  snprintf(name, sizeof name, "train_%s_%s", n->prefix, what);
  kiln_scope_begin();
  kiln_tensor *t = kiln_tensor_retain(tu_fixture(name));
  kiln_scope_end();
  return tu_track(t);
}

/* Fresh copies of the initial parameters, with gradients attached. */
static void load_params(const net *n, kiln_tensor **p) {
  for (int i = 0; i < N_PARAMS; i++) {
    p[i] = kiln_copy(fixture(n, n->names[i]));
    assert_int_equal(kiln_attach_grad(p[i], KILN_GRAD_WRITE), KILN_OK);
  }
}

static kiln_tensor *loss_of(const net *n, kiln_tensor *const *p) {
  return kiln_softmax_cross_entropy(forward(n, p, fixture(n, "x")), fixture(n, "y"));
}

static void check_net(const net *n) {
  kiln_tensor *p[N_PARAMS];
  load_params(n, p);
  kiln_scope_begin();
  kiln_record_begin(true);
  kiln_tensor *loss = loss_of(n, p);
  kiln_record_end();
  assert_int_equal(kiln_backward(loss, NULL, false), KILN_OK);
  char label[128];
  snprintf(label, sizeof label, "%s loss", n->prefix);
  assert_true(tu_close(label, kiln_reshape(loss, 0, NULL), kiln_reshape(fixture(n, "loss"), 0, NULL), 1e-5, 1e-6));
  for (int i = 0; i < N_PARAMS; i++) {
    char what[64];
    snprintf(what, sizeof what, "grad_%s", n->names[i]);
    snprintf(label, sizeof label, "%s %s", n->prefix, what);
    assert_true(tu_close(label, kiln_grad(p[i]), fixture(n, what), 1e-4, 1e-6));
  }
  kiln_scope_end();
  for (int i = 0; i < N_PARAMS; i++) kiln_tensor_release(p[i]);

  for (int o = 0; o < 2; o++) {
    load_params(n, p);
    kiln_optimizer_params op = kiln_optimizer_params_default(o ? KILN_OPT_ADAM : KILN_OPT_SGD);
    op.lr = o ? 0.01 : 0.1;
    op.momentum = o ? 0 : 0.9;
    kiln_optimizer *opt = kiln_optimizer_new(&op, N_PARAMS, p);
    assert_non_null(opt);
    for (int step = 0; step < 5; step++) {
      kiln_scope_begin();
      kiln_record_begin(true);
      kiln_tensor *l = loss_of(n, p);
      kiln_record_end();
      assert_int_equal(kiln_backward(l, NULL, false), KILN_OK);
      assert_int_equal(kiln_optimizer_step(opt, 1), KILN_OK);
      kiln_scope_end();
    }
    for (int i = 0; i < N_PARAMS; i++) {
      char what[64];
      snprintf(what, sizeof what, "%s_%s", o ? "adam" : "sgd", n->names[i]);
      snprintf(label, sizeof label, "%s after 5 steps: %s", n->prefix, what);
      assert_true(tu_close(label, p[i], fixture(n, what), 1e-4, 1e-5));
    }
    kiln_optimizer_free(opt);
    for (int i = 0; i < N_PARAMS; i++) kiln_tensor_release(p[i]);
  }
}

static void mlp_matches_pytorch(void **state) {
  (void)state;
  const net n = {"mlp", {"w1", "b1", "w2", "b2"}, false};
  check_net(&n);
}

static void cnn_matches_pytorch(void **state) {
  (void)state;
  const net n = {"cnn", {"cw", "cb", "fw", "fb"}, true};
  check_net(&n);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_teardown(mlp_matches_pytorch, tu_release_tracked),
      cmocka_unit_test_teardown(cnn_matches_pytorch, tu_release_tracked),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
