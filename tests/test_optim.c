/* Optimisers against the update rules written out here in double from
 * PyTorch's documentation (torch.optim.SGD, Adam, AdamW), and the losses
 * against their closed forms and central differences. */
#include <math.h>
#include <string.h>

#include "testutil.h"

enum { N = 5, STEPS = 4 };

/* Loss sum(p * c[t]) at step t: its gradient is c[t], known exactly. */
static const double coef[STEPS][N] = {{0.5, -1, 2, 0.25, -3}, {1, 1, -1, 0.5, 2}, {-2, 0.1, 0.3, 1, 1},
                                      {0.2, -0.4, 0.6, -0.8, 1}};
static const double p0[N] = {1, -2, 0.5, 3, -0.25};

static void reference(kiln_optimizer_params o, double batch, double *p) {
  double m[N] = {0}, v[N] = {0};
  memcpy(p, p0, sizeof p0);
  for (int t = 1; t <= STEPS; t++)
    for (int i = 0; i < N; i++) {
      double g = coef[t - 1][i] / batch;
      if (o.kind == KILN_OPT_SGD) {
        g += o.weight_decay * p[i];
        if (o.momentum != 0) {
          m[i] = t == 1 ? g : o.momentum * m[i] + g;
          g = o.nesterov ? g + o.momentum * m[i] : m[i];
        }
        p[i] -= o.lr * g;
      } else {
        if (o.kind == KILN_OPT_ADAM) g += o.weight_decay * p[i];
        else p[i] *= 1 - o.lr * o.weight_decay;
        m[i] = o.beta1 * m[i] + (1 - o.beta1) * g;
        v[i] = o.beta2 * v[i] + (1 - o.beta2) * g * g;
        double mh = m[i] / (1 - pow(o.beta1, t)), vh = v[i] / (1 - pow(o.beta2, t));
        p[i] -= o.lr * mh / (sqrt(vh) + o.eps);
      }
    }
}

static void run(const char *label, kiln_optimizer_params o, double batch) {
  kiln_tensor *p = kiln_from_data(KILN_F64, 1, (int64_t[]){N}, p0);
  assert_int_equal(kiln_attach_grad(p, KILN_GRAD_WRITE), KILN_OK);
  kiln_optimizer *opt = kiln_optimizer_new(&o, 1, &p);
  assert_non_null(opt);
  for (int t = 0; t < STEPS; t++) {
    kiln_scope_begin();
    kiln_tensor *c = kiln_from_data(KILN_F64, 1, (int64_t[]){N}, coef[t]);
    kiln_record_begin(true);
    kiln_tensor *l = kiln_sum(kiln_mul(p, c), 0, NULL, false);
    kiln_record_end();
    assert_int_equal(kiln_backward(l, NULL, false), KILN_OK);
    assert_int_equal(kiln_optimizer_step(opt, batch), KILN_OK);
    kiln_scope_end();
  }
  double want[N];
  reference(o, batch, want);
  /* Same operations in the same order in double: agreement to rounding. */
  assert_true(tu_close_values(label, p, want, N, 1e-12, 1e-14));
  kiln_optimizer_free(opt);
  kiln_tensor_release(p);
}

static void sgd_variants(void **state) {
  (void)state;
  kiln_optimizer_params o = kiln_optimizer_params_default(KILN_OPT_SGD);
  o.lr = 0.1;
  run("sgd", o, 1);
  o.momentum = 0.9;
  run("sgd momentum", o, 2);
  o.nesterov = true;
  o.weight_decay = 0.01;
  run("sgd nesterov weight decay", o, 4);
}

static void adam_variants(void **state) {
  (void)state;
  kiln_optimizer_params o = kiln_optimizer_params_default(KILN_OPT_ADAM);
  o.lr = 0.05;
  run("adam", o, 1);
  o.weight_decay = 0.1;
  run("adam l2", o, 3);
  kiln_optimizer_params w = kiln_optimizer_params_default(KILN_OPT_ADAMW);
  w.lr = 0.05;
  run("adamw", w, 2);
}

/* A float32 run of the same rule against the double reference: float32
 * rounding only. */
static void float32_parameters(void **state) {
  (void)state;
  kiln_tensor *p = kiln_from_data(KILN_F32, 1, (int64_t[]){N}, (float[]){1, -2, 0.5f, 3, -0.25f});
  kiln_attach_grad(p, KILN_GRAD_WRITE);
  kiln_optimizer_params o = kiln_optimizer_params_default(KILN_OPT_ADAM);
  o.lr = 0.05;
  kiln_optimizer *opt = kiln_optimizer_new(&o, 1, &p);
  for (int t = 0; t < STEPS; t++) {
    kiln_scope_begin();
    float c32[N];
    for (int i = 0; i < N; i++) c32[i] = (float)coef[t][i];
    kiln_tensor *c = kiln_from_data(KILN_F32, 1, (int64_t[]){N}, c32);
    kiln_record_begin(true);
    kiln_backward(kiln_sum(kiln_mul(p, c), 0, NULL, false), NULL, false);
    kiln_record_end();
    kiln_optimizer_step(opt, 1);
    kiln_scope_end();
  }
  double want[N];
  reference(o, 1, want);
  assert_true(tu_close_values("adam float32", p, want, N, 1e-5, 1e-6));
  kiln_optimizer_free(opt);
  kiln_tensor_release(p);
}

static void bad_arguments(void **state) {
  (void)state;
  kiln_tensor *p = kiln_zeros(KILN_F32, 1, (int64_t[]){3});
  assert_null(kiln_optimizer_new(NULL, 1, &p)); /* no gradient attached */
  assert_non_null(strstr(kiln_last_error(), "kiln_attach_grad"));
  kiln_optimizer_params o = kiln_optimizer_params_default(KILN_OPT_ADAM);
  o.beta1 = 1;
  kiln_attach_grad(p, KILN_GRAD_WRITE);
  assert_null(kiln_optimizer_new(&o, 1, &p));
  assert_non_null(strstr(kiln_last_error(), "betas"));
  kiln_optimizer *opt = kiln_optimizer_new(NULL, 1, &p);
  assert_non_null(opt);
  assert_int_equal(kiln_optimizer_step(opt, 0), KILN_ERR_INVALID_ARGUMENT);
  assert_int_equal(kiln_optimizer_step(NULL, 1), KILN_ERR_INVALID_ARGUMENT);
  assert_int_equal(kiln_optimizer_set_lr(opt, -1), KILN_ERR_INVALID_ARGUMENT);
  kiln_optimizer_free(opt);
  kiln_optimizer_free(NULL);
  kiln_tensor_release(p);
}

/* ------------------------------------------------------------ losses */

static void loss_values(void **state) {
  (void)state;
  kiln_scope_begin();
  kiln_tensor *pred = kiln_from_data(KILN_F64, 2, (int64_t[]){2, 2}, (double[]){1, -2, 0.5, 3});
  kiln_tensor *label = kiln_from_data(KILN_F64, 2, (int64_t[]){2, 2}, (double[]){0, 1, 1, 1});
  double v, l2 = (1 + 9 + 0.25 + 4) * 0.5 / 4, l1 = (1 + 3 + 0.5 + 2) / 4.0;
  double bce = 0;
  const double x[4] = {1, -2, 0.5, 3}, z[4] = {0, 1, 1, 1};
  for (int i = 0; i < 4; i++) bce += -(z[i] * log(1 / (1 + exp(-x[i]))) + (1 - z[i]) * log(1 - 1 / (1 + exp(-x[i]))));
  bce /= 4;
  assert_int_equal(kiln_tensor_item(kiln_l2_loss(pred, label), &v), KILN_OK);
  assert_true(fabs(v - l2) < 1e-12);
  assert_int_equal(kiln_tensor_item(kiln_l1_loss(pred, label), &v), KILN_OK);
  assert_true(fabs(v - l1) < 1e-12);
  assert_int_equal(kiln_tensor_item(kiln_bce_with_logits_loss(pred, label), &v), KILN_OK);
  assert_true(fabs(v - bce) < 1e-12);
  /* Large logits stay finite (the softplus form). */
  kiln_tensor *big = kiln_from_data(KILN_F64, 1, (int64_t[]){2}, (double[]){800, -800});
  kiln_tensor *zb = kiln_from_data(KILN_F64, 1, (int64_t[]){2}, (double[]){0, 1});
  assert_int_equal(kiln_tensor_item(kiln_bce_with_logits_loss(big, zb), &v), KILN_OK);
  assert_true(fabs(v - 800) < 1e-9);
  assert_int_equal(kiln_tensor_status(kiln_l2_loss(NULL, label)), KILN_ERR_INVALID_ARGUMENT);
  kiln_scope_end();
}

/* d loss / d pred, through autograd, against closed forms. */
static void loss_gradients(void **state) {
  (void)state;
  const double x[4] = {1, -2, 0.5, 3}, z[4] = {0, 1, 1, 0.5};
  kiln_tensor *pred = kiln_from_data(KILN_F64, 2, (int64_t[]){2, 2}, x);
  kiln_attach_grad(pred, KILN_GRAD_WRITE);
  for (int which = 0; which < 3; which++) {
    kiln_scope_begin();
    kiln_tensor *label = kiln_from_data(KILN_F64, 2, (int64_t[]){2, 2}, z);
    kiln_record_begin(true);
    kiln_tensor *l = which == 0 ? kiln_l2_loss(pred, label) : which == 1 ? kiln_l1_loss(pred, label)
                                                                         : kiln_bce_with_logits_loss(pred, label);
    kiln_record_end();
    assert_int_equal(kiln_backward(l, NULL, false), KILN_OK);
    double want[4];
    for (int i = 0; i < 4; i++) {
      double d = x[i] - z[i];
      want[i] = (which == 0 ? d : which == 1 ? (d > 0) - (d < 0) : 1 / (1 + exp(-x[i])) - z[i]) / 4;
    }
    assert_true(tu_close_values(which == 0 ? "l2 grad" : which == 1 ? "l1 grad" : "bce grad", kiln_grad(pred), want, 4,
                                1e-12, 1e-14));
    kiln_scope_end();
  }
  kiln_tensor_release(pred);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(sgd_variants),   cmocka_unit_test(adam_variants), cmocka_unit_test(float32_parameters),
      cmocka_unit_test(bad_arguments),  cmocka_unit_test(loss_values),   cmocka_unit_test(loss_gradients),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
