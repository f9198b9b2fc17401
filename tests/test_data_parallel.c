/* Data parallelism and the local key-value store (d2l 13.5-13.7).
 *
 * The reference for k devices is one device with the same global batch:
 * replicas that start equal, each fed its slice, with gradients summed
 * through the store and every replica updated with the sum, must follow
 * the one-device parameters step for step (float32 sums in another order:
 * a tolerance, not bits). The store itself is checked against sums
 * computed here. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "testutil.h"

/* ------------------------------------------------------------ the store */

static void test_push_sums_and_pull_copies(void **state) {
  (void)state;
  kiln_scope_begin();
  kiln_kvstore *kv = kiln_kvstore_new("local");
  assert_non_null(kv);
  assert_int_equal(kiln_kvstore_rank(kv), 0);
  assert_int_equal(kiln_kvstore_size(kv), 1);
  int64_t shape[2] = {3, 5};
  kiln_tensor *init = tu_random(KILN_F32, 2, shape, 1, -1, 1);
  assert_int_equal(kiln_kvstore_init(kv, 7, init), KILN_OK);
  kiln_tensor *vals[3];
  double want[15] = {0};
  for (int d = 0; d < 3; d++) {
    kiln_tensor *v = tu_random(KILN_F32, 2, shape, 10 + (uint64_t)d, -2, 2);
    float buf[15];
    assert_int_equal(kiln_tensor_copy_to(v, buf, sizeof buf), KILN_OK);
    for (int i = 0; i < 15; i++) want[i] += buf[i];
    vals[d] = kiln_to_device(v, kiln_cpu(d)); /* values from three devices */
  }
  int key = 7;
  assert_int_equal(kiln_kvstore_push(kv, 1, &key, 3, vals, 5), KILN_OK);
  kiln_tensor *outs[2];
  kiln_set_device(kiln_cpu(1));
  outs[0] = kiln_zeros(KILN_F32, 2, shape);
  kiln_set_device(kiln_cpu(0));
  outs[1] = kiln_zeros(KILN_F32, 2, shape);
  assert_int_equal(kiln_kvstore_pull(kv, 1, &key, 2, outs, 0), KILN_OK);
  assert_true(tu_close_values("pulled on cpu(1)", outs[0], want, 15, 1e-6, 1e-6));
  assert_true(tu_close_values("pulled on cpu(0)", outs[1], want, 15, 1e-6, 1e-6));
  assert_true(kiln_device_equal(kiln_tensor_device(outs[0]), kiln_cpu(1)));
  kiln_kvstore_free(kv);
  kiln_scope_end();
}

/* An updater in the store: stored -= 0.5 * merged, MXNet's optimiser on
 * the server. */
static kiln_status sgd_updater(int key, kiln_tensor *merged, kiln_tensor *stored, void *user) {
  (void)key;
  int *calls = user;
  (*calls)++;
  return kiln_assign(stored, kiln_sub(stored, kiln_mul_scalar(merged, 0.5)));
}

static void test_updater_runs_in_the_store(void **state) {
  (void)state;
  kiln_scope_begin();
  kiln_kvstore *kv = kiln_kvstore_new("local");
  int calls = 0;
  assert_int_equal(kiln_kvstore_set_updater(kv, sgd_updater, &calls), KILN_OK);
  int64_t shape[1] = {4};
  double w0[4] = {1, 2, 3, 4}, g[4] = {0.5, -1, 2, 0};
  kiln_tensor *w = kiln_from_data(KILN_F64, 1, shape, w0);
  int keys[2] = {0, 1};
  assert_int_equal(kiln_kvstore_init(kv, 0, w), KILN_OK);
  assert_int_equal(kiln_kvstore_init(kv, 1, w), KILN_OK);
  kiln_tensor *grad = kiln_from_data(KILN_F64, 1, shape, g);
  kiln_tensor *grad1 = kiln_to_device(grad, kiln_cpu(1));
  kiln_tensor *values[4] = {grad, grad1, grad, grad1};
  assert_int_equal(kiln_kvstore_push(kv, 2, keys, 2, values, 0), KILN_OK);
  assert_int_equal(calls, 2);
  kiln_tensor *out = kiln_zeros(KILN_F64, 1, shape);
  assert_int_equal(kiln_kvstore_pull(kv, 1, &keys[1], 1, &out, 0), KILN_OK);
  double want[4];
  for (int i = 0; i < 4; i++) want[i] = w0[i] - 0.5 * (2 * g[i]);
  assert_true(tu_close_values("updated", out, want, 4, 0, 0));
  kiln_kvstore_free(kv);
  kiln_scope_end();
}

static void test_store_refuses_bad_use(void **state) {
  (void)state;
  kiln_scope_begin();
  assert_null(kiln_kvstore_new("dist_sync"));
  assert_int_equal(kiln_last_status(), KILN_ERR_INVALID_ARGUMENT);
  assert_non_null(strstr(kiln_last_error(), "dist_sync"));
  assert_null(kiln_kvstore_new(NULL));
  kiln_kvstore *kv = kiln_kvstore_new("local");
  int64_t shape[1] = {3}, other[1] = {4};
  kiln_tensor *a = kiln_ones(KILN_F32, 1, shape), *b = kiln_ones(KILN_F32, 1, other);
  int key = 3, missing = 4, negative = -1;
  assert_int_equal(kiln_kvstore_init(kv, key, a), KILN_OK);
  assert_int_equal(kiln_kvstore_init(kv, key, a), KILN_ERR_INVALID_ARGUMENT);
  assert_int_equal(kiln_kvstore_init(kv, negative, a), KILN_ERR_OUT_OF_RANGE);
  assert_int_equal(kiln_kvstore_init(kv, 9, kiln_ones(KILN_I32, 1, shape)), KILN_ERR_DTYPE);
  assert_int_equal(kiln_kvstore_push(kv, 1, &missing, 1, &a, 0), KILN_ERR_INVALID_ARGUMENT);
  assert_non_null(strstr(kiln_last_error(), "key 4"));
  assert_int_equal(kiln_kvstore_push(kv, 1, &key, 1, &b, 0), KILN_ERR_SHAPE);
  assert_non_null(strstr(kiln_last_error(), "[4]"));
  assert_int_equal(kiln_kvstore_pull(kv, 1, &key, 1, &b, 0), KILN_ERR_SHAPE);
  kiln_tensor *strided = kiln_slice(kiln_ones(KILN_F32, 1, (int64_t[]){6}), 0, 0, 6, 2);
  assert_int_equal(kiln_kvstore_pull(kv, 1, &key, 1, &strided, 0), KILN_ERR_INVALID_ARGUMENT);
  kiln_tensor *nothing = NULL;
  assert_int_equal(kiln_kvstore_push(kv, 1, &key, 1, &nothing, 0), KILN_ERR_INVALID_ARGUMENT);
  assert_int_equal(kiln_kvstore_push(NULL, 1, &key, 1, &a, 0), KILN_ERR_INVALID_ARGUMENT);
  kiln_kvstore_abort(kv, 1); /* a local store has no job to end */
  kiln_kvstore_free(kv);
  kiln_kvstore_free(NULL);
  kiln_scope_end();
}

/* A failed value travels: the key's stored value carries it, and so does
 * every pull, found at the wait. */
static void test_a_failed_push_surfaces_at_the_wait(void **state) {
  (void)state;
  kiln_scope_begin();
  kiln_kvstore *kv = kiln_kvstore_new("local");
  int64_t shape[1] = {3};
  kiln_tensor *x = kiln_ones(KILN_F32, 1, shape);
  int key = 0;
  assert_int_equal(kiln_kvstore_init(kv, key, x), KILN_OK);
  int64_t idx_shape[1] = {3};
  int64_t idx[3] = {0, 5, 1};
  kiln_tensor *bad = kiln_take(x, kiln_from_data(KILN_I64, 1, idx_shape, idx), 0); /* fails on the engine */
  assert_int_equal(kiln_kvstore_push(kv, 1, &key, 1, &bad, 0), KILN_OK);
  kiln_tensor *out = kiln_zeros(KILN_F32, 1, shape);
  assert_int_equal(kiln_kvstore_pull(kv, 1, &key, 1, &out, 0), KILN_OK);
  assert_int_equal(kiln_wait_to_read(out), KILN_ERR_OUT_OF_RANGE);
  kiln_waitall();
  kiln_kvstore_free(kv);
  kiln_scope_end();
}

static void test_split_and_load(void **state) {
  (void)state;
  kiln_scope_begin();
  kiln_tensor *x = kiln_reshape(kiln_arange(0, 22, 1, KILN_F32), 2, (int64_t[]){11, 2});
  kiln_device devs[3] = {kiln_cpu(0), kiln_cpu(1), kiln_cpu(2)};
  kiln_tensor *parts[3];
  assert_int_equal(kiln_split_and_load(x, 3, devs, parts), KILN_OK);
  int64_t sizes[3] = {4, 4, 3}, start = 0;
  for (int d = 0; d < 3; d++) {
    assert_int_equal(kiln_tensor_dim(parts[d], 0), sizes[d]);
    assert_true(kiln_device_equal(kiln_tensor_device(parts[d]), devs[d]));
    double want[8];
    for (int i = 0; i < sizes[d] * 2; i++) want[i] = (double)(start * 2 + i);
    assert_true(tu_close_values("slice", parts[d], want, sizes[d] * 2, 0, 0));
    start += sizes[d];
  }
  kiln_tensor *small = kiln_ones(KILN_F32, 1, (int64_t[]){2});
  assert_int_equal(kiln_split_and_load(small, 3, devs, parts), KILN_ERR_SHAPE);
  kiln_scope_end();
}

/* ------------------------------------------------------------ training */

typedef kiln_block *(*model_fn)(void);

static kiln_block *mlp(void) {
  kiln_block *net = kiln_nn_sequential();
  kiln_block_add_child(net, NULL, kiln_nn_dense(32, KILN_ACT_RELU));
  kiln_block_add_child(net, NULL, kiln_nn_dense(10, KILN_ACT_NONE));
  return net;
}

/* The loss summed over the slice (the mean times its size), so slices of
 * different sizes add up to the global batch's sum. */
static kiln_tensor *summed_loss(kiln_block *net, kiln_tensor *x, kiln_tensor *y) {
  return kiln_mul_scalar(kiln_softmax_cross_entropy(kiln_block_call(net, x), y), (double)kiln_tensor_dim(x, 0));
}

static void copy_params(kiln_block *to, kiln_block *from) {
  kiln_param_list a, b;
  assert_int_equal(kiln_block_collect_params(from, &a), KILN_OK);
  assert_int_equal(kiln_block_collect_params(to, &b), KILN_OK);
  assert_int_equal(a.n, b.n);
  for (int i = 0; i < a.n; i++) assert_int_equal(kiln_assign(b.tensors[i], a.tensors[i]), KILN_OK);
  kiln_param_list_free(&a);
  kiln_param_list_free(&b);
}

static void run_parallel_equals_single(model_fn make, int64_t in_shape_ndim, const int64_t *in_shape, int k,
                                       const kiln_optimizer_params *op, bool hybridize, int steps, double tol) {
  kiln_scope_begin();
  kiln_seed(11);
  int64_t batch = in_shape[0];
  kiln_tensor *warm = kiln_random_uniform(NULL, 0, 1, KILN_F32, (int)in_shape_ndim, in_shape);
  /* The one-device reference. */
  kiln_block *single = make();
  assert_int_equal(kiln_block_initialize(single, NULL, false), KILN_OK);
  assert_true(tu_ok("warm-up", kiln_block_call(single, warm)));
  /* k replicas, each made on its device; replica 0 takes the reference's
   * values and the trainer hands them to the others. */
  kiln_block *replicas[4];
  kiln_device devs[4];
  for (int d = 0; d < k; d++) {
    devs[d] = kiln_cpu(d);
    kiln_set_device(devs[d]);
    replicas[d] = make();
    assert_int_equal(kiln_block_initialize(replicas[d], NULL, false), KILN_OK);
    assert_true(tu_ok("replica warm-up", kiln_block_call(replicas[d], kiln_to_device(warm, devs[d]))));
  }
  kiln_set_device(kiln_cpu(0));
  copy_params(replicas[0], single);
  kiln_parallel_trainer *pt = kiln_parallel_trainer_new(k, replicas, op, NULL);
  assert_non_null(pt);
  kiln_trainer *st = kiln_trainer_new(single, op);
  if (hybridize) {
    assert_int_equal(kiln_block_hybridize(single, NULL), KILN_OK);
    for (int d = 0; d < k; d++) assert_int_equal(kiln_block_hybridize(replicas[d], NULL), KILN_OK);
  }
  for (int s = 0; s < steps; s++) {
    kiln_scope_begin();
    kiln_tensor *x = kiln_random_uniform(NULL, 0, 1, KILN_F32, (int)in_shape_ndim, in_shape);
    kiln_tensor *y = kiln_random_uniform(NULL, 0, 10, KILN_F32, 1, &batch);
    y = kiln_cast(kiln_floor(y), KILN_I64);
    kiln_record_begin(true);
    kiln_tensor *loss = summed_loss(single, x, y);
    kiln_record_end();
    assert_int_equal(kiln_backward(loss, NULL, false), KILN_OK);
    assert_int_equal(kiln_trainer_step(st, (double)batch), KILN_OK);

    kiln_tensor *xs[4], *ys[4], *losses[4];
    assert_int_equal(kiln_split_and_load(x, k, devs, xs), KILN_OK);
    assert_int_equal(kiln_split_and_load(y, k, devs, ys), KILN_OK);
    kiln_record_begin(true);
    for (int d = 0; d < k; d++) losses[d] = summed_loss(replicas[d], xs[d], ys[d]);
    kiln_record_end();
    for (int d = 0; d < k; d++) {
      kiln_status bs = kiln_backward(losses[d], NULL, false);
      if (bs != KILN_OK) fprintf(stderr, "backward %d: %s\n", d, kiln_last_error());
      assert_int_equal(bs, KILN_OK);
    }
    assert_int_equal(kiln_parallel_trainer_step(pt, (double)batch), KILN_OK);
    kiln_scope_end();
  }
  assert_int_equal(kiln_waitall(), KILN_OK);
  kiln_param_list want;
  assert_int_equal(kiln_block_collect_params(single, &want), KILN_OK);
  for (int d = 0; d < k; d++) {
    kiln_param_list got;
    assert_int_equal(kiln_block_collect_params(replicas[d], &got), KILN_OK);
    for (int i = 0; i < want.n; i++) {
      char label[96];
      snprintf(label, sizeof label, "replica %d %s after %d steps", d, want.names[i], steps);
      assert_true(kiln_device_equal(kiln_tensor_device(got.tensors[i]), devs[d]));
      assert_true(tu_close(label, kiln_to_device(got.tensors[i], kiln_cpu(0)), want.tensors[i], tol, tol));
    }
    kiln_param_list_free(&got);
  }
  kiln_param_list_free(&want);
  kiln_trainer_free(st);
  kiln_parallel_trainer_free(pt);
  kiln_block_release(single);
  for (int d = 0; d < k; d++) kiln_block_release(replicas[d]);
  kiln_scope_end();
}

static void test_two_devices_train_as_one_mlp_sgd(void **state) {
  (void)state;
  int64_t shape[2] = {17, 20}; /* odd: the slices differ in size */
  kiln_optimizer_params op = kiln_optimizer_params_default(KILN_OPT_SGD);
  op.lr = 0.5;
  op.momentum = 0.9;
  run_parallel_equals_single(mlp, 2, shape, 2, &op, false, 6, 2e-5);
}

static void test_three_devices_train_as_one_mlp_adam_hybridized(void **state) {
  (void)state;
  int64_t shape[2] = {24, 20};
  kiln_optimizer_params op = kiln_optimizer_params_default(KILN_OPT_ADAM);
  op.lr = 0.01;
  run_parallel_equals_single(mlp, 2, shape, 3, &op, true, 5, 5e-5);
}

static void test_two_devices_train_as_one_lenet(void **state) {
  (void)state;
  int64_t shape[4] = {8, 1, 28, 28};
  kiln_optimizer_params op = kiln_optimizer_params_default(KILN_OPT_SGD);
  op.lr = 0.1;
  run_parallel_equals_single(tu_lenet, 4, shape, 2, &op, true, 3, 5e-5);
}

/* Replicas that are not one model, and misuse, fail naming what is wrong;
 * nothing is left half made. */
static void test_parallel_trainer_refuses_bad_replicas(void **state) {
  (void)state;
  kiln_scope_begin();
  int64_t shape[2] = {4, 20};
  kiln_tensor *x = kiln_ones(KILN_F32, 2, shape);
  kiln_block *a = mlp(), *b = kiln_nn_sequential();
  kiln_block_add_child(b, NULL, kiln_nn_dense(32, KILN_ACT_RELU));
  kiln_block_add_child(b, NULL, kiln_nn_dense(7, KILN_ACT_NONE)); /* 7 outputs, not 10 */
  kiln_block *uninitialised = mlp();
  kiln_block_initialize(a, NULL, false), kiln_block_initialize(b, NULL, false);
  assert_true(tu_ok("a", kiln_block_call(a, x)));
  assert_true(tu_ok("b", kiln_block_call(b, x)));
  kiln_optimizer_params op = kiln_optimizer_params_default(KILN_OPT_SGD);
  kiln_block *pair[2] = {a, b};
  assert_null(kiln_parallel_trainer_new(2, pair, &op, NULL));
  assert_int_equal(kiln_last_status(), KILN_ERR_SHAPE);
  assert_non_null(strstr(kiln_last_error(), "replica 1"));
  kiln_block *with_missing[2] = {a, NULL};
  assert_null(kiln_parallel_trainer_new(2, with_missing, &op, NULL));
  assert_non_null(strstr(kiln_last_error(), "replica 1 is NULL"));
  kiln_block *not_ready[2] = {a, uninitialised};
  assert_null(kiln_parallel_trainer_new(2, not_ready, &op, NULL));
  assert_non_null(strstr(kiln_last_error(), "replica 1"));
  assert_null(kiln_parallel_trainer_new(0, pair, &op, NULL));
  assert_int_equal(kiln_last_status(), KILN_ERR_INVALID_ARGUMENT);
  assert_int_equal(kiln_parallel_trainer_step(NULL, 1), KILN_ERR_INVALID_ARGUMENT);
  kiln_parallel_trainer_free(NULL);
  kiln_block_release(a), kiln_block_release(b), kiln_block_release(uninitialised);
  kiln_scope_end();
}

/* The comparison can fail: replicas that skip the sum (each its own
 * gradient) drift from the one-device run. */
static void test_without_the_sum_replicas_drift(void **state) {
  (void)state;
  kiln_scope_begin();
  kiln_seed(5);
  int64_t shape[2] = {16, 20}, batch = 16;
  kiln_block *a = mlp(), *b = mlp();
  kiln_tensor *warm = kiln_random_uniform(NULL, 0, 1, KILN_F32, 2, shape);
  kiln_block_initialize(a, NULL, false), kiln_block_initialize(b, NULL, false);
  kiln_block_call(a, warm), kiln_block_call(b, warm);
  copy_params(b, a);
  kiln_optimizer_params op = kiln_optimizer_params_default(KILN_OPT_SGD);
  op.lr = 0.5;
  kiln_trainer *ta = kiln_trainer_new(a, &op), *tb = kiln_trainer_new(b, &op);
  kiln_tensor *x = kiln_random_uniform(NULL, 0, 1, KILN_F32, 2, shape);
  kiln_tensor *y = kiln_cast(kiln_floor(kiln_random_uniform(NULL, 0, 10, KILN_F32, 1, &batch)), KILN_I64);
  kiln_record_begin(true);
  kiln_tensor *la = summed_loss(a, x, y);
  kiln_tensor *lb = summed_loss(b, kiln_slice(x, 0, 0, 8, 1), kiln_slice(y, 0, 0, 8, 1));
  kiln_record_end();
  kiln_backward(la, NULL, false), kiln_backward(lb, NULL, false);
  kiln_trainer_step(ta, 16), kiln_trainer_step(tb, 16);
  kiln_param_list pa, pb;
  kiln_block_collect_params(a, &pa), kiln_block_collect_params(b, &pb);
  assert_false(tu_close("expected to differ", pb.tensors[0], pa.tensors[0], 2e-5, 2e-5));
  kiln_param_list_free(&pa), kiln_param_list_free(&pb);
  kiln_trainer_free(ta), kiln_trainer_free(tb);
  kiln_block_release(a), kiln_block_release(b);
  kiln_scope_end();
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_push_sums_and_pull_copies),
      cmocka_unit_test(test_updater_runs_in_the_store),
      cmocka_unit_test(test_store_refuses_bad_use),
      cmocka_unit_test(test_a_failed_push_surfaces_at_the_wait),
      cmocka_unit_test(test_split_and_load),
      cmocka_unit_test(test_two_devices_train_as_one_mlp_sgd),
      cmocka_unit_test(test_three_devices_train_as_one_mlp_adam_hybridized),
      cmocka_unit_test(test_two_devices_train_as_one_lenet),
      cmocka_unit_test(test_parallel_trainer_refuses_bad_replicas),
      cmocka_unit_test(test_without_the_sum_replicas_drift),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
