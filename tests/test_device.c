/* Devices (src/device, include/kiln.h "devices"): placement, the rule that
 * an op runs where its inputs are, transfers, per-device accounting, plans
 * on a device, and that devices really are separate worker sets (an op on
 * one runs while the other's only worker is blocked). Values are checked
 * against the same computation on cpu(0). */
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "engine/engine.h"
#include "tensor/tensor.h"
#include "testutil.h"

static void test_placement_follows_inputs(void **state) {
  (void)state;
  kiln_scope_begin();
  int64_t shape[2] = {3, 4};
  kiln_tensor *a0 = tu_random(KILN_F32, 2, shape, 1, -1, 1);
  assert_true(kiln_device_equal(kiln_tensor_device(a0), kiln_cpu(0)));
  kiln_tensor *a1 = kiln_to_device(a0, kiln_cpu(1));
  assert_true(kiln_device_equal(kiln_tensor_device(a1), kiln_cpu(1)));
  assert_true(tu_close("copy", a1, a0, 0, 0));

  /* An op runs where its inputs are, whatever the current device. */
  kiln_tensor *y1 = kiln_tanh(kiln_mul(a1, a1));
  assert_true(kiln_device_equal(kiln_tensor_device(y1), kiln_cpu(1)));
  kiln_tensor *y0 = kiln_tanh(kiln_mul(a0, a0));
  assert_true(tu_close("cpu(1) op", y1, y0, 0, 0));

  /* Ops without tensor inputs create on the current device. */
  assert_int_equal(kiln_set_device(kiln_cpu(2)), KILN_OK);
  kiln_tensor *z = kiln_zeros(KILN_F32, 2, shape);
  assert_true(kiln_device_equal(kiln_tensor_device(z), kiln_cpu(2)));
  assert_true(kiln_device_equal(kiln_current_device(), kiln_cpu(2)));
  assert_int_equal(kiln_set_device(kiln_cpu(KILN_MAX_DEVICES)), KILN_ERR_INVALID_ARGUMENT);
  assert_non_null(strstr(kiln_last_error(), "cpu(16)"));
  assert_true(kiln_device_equal(kiln_current_device(), kiln_cpu(2)));
  assert_int_equal(kiln_set_device(kiln_cpu(0)), KILN_OK);

  char name[16];
  assert_string_equal(kiln_device_name(kiln_cpu(3), name, sizeof name), "cpu(3)");
  kiln_scope_end();
}

static void test_mixed_devices_fail_naming_both(void **state) {
  (void)state;
  kiln_scope_begin();
  int64_t shape[1] = {5};
  kiln_tensor *a = kiln_ones(KILN_F32, 1, shape);
  kiln_tensor *b = kiln_to_device(a, kiln_cpu(1));
  kiln_tensor *c = kiln_add(a, b);
  assert_int_equal(kiln_tensor_status(c), KILN_ERR_INVALID_ARGUMENT);
  const char *msg = kiln_tensor_error(c);
  assert_non_null(strstr(msg, "cpu(0)"));
  assert_non_null(strstr(msg, "cpu(1)"));
  assert_non_null(strstr(msg, "add"));
  /* kiln_assign is the exception: it brings the source over. */
  kiln_tensor *twos = kiln_full(KILN_F32, 1, shape, 2.0);
  kiln_tensor *twos1 = kiln_to_device(twos, kiln_cpu(1));
  assert_int_equal(kiln_assign(a, kiln_mul_scalar(twos1, 3.0)), KILN_OK);
  assert_true(kiln_device_equal(kiln_tensor_device(a), kiln_cpu(0)));
  double want[5] = {6, 6, 6, 6, 6};
  assert_true(tu_close_values("assign across devices", a, want, 5, 0, 0));
  kiln_tensor *bad = kiln_to_device(a, kiln_cpu(-1));
  assert_int_equal(kiln_tensor_status(bad), KILN_ERR_INVALID_ARGUMENT);
  assert_int_equal(kiln_tensor_status(kiln_to_device(NULL, kiln_cpu(1))), KILN_ERR_INVALID_ARGUMENT);
  kiln_scope_end();
}

static void test_transfer_of_views_and_failures(void **state) {
  (void)state;
  kiln_scope_begin();
  int64_t shape[2] = {7, 5};
  kiln_tensor *a = tu_random(KILN_F64, 2, shape, 2, -3, 3);
  kiln_tensor *t = kiln_transpose(a, 0, 1); /* a strided view */
  kiln_tensor *moved = kiln_to_device(t, kiln_cpu(1));
  assert_true(kiln_tensor_is_contiguous(moved));
  assert_true(tu_close("strided transfer", moved, kiln_contiguous(t), 0, 0));
  kiln_tensor *back = kiln_to_device(moved, kiln_cpu(0));
  assert_true(tu_close("round trip", back, t, 0, 0));

  /* A failure of the source's pending op travels through the copy. */
  int64_t ishape[1] = {3};
  int64_t idx[3] = {0, 9, 1};
  kiln_tensor *where = kiln_from_data(KILN_I64, 1, ishape, idx);
  kiln_tensor *row = kiln_take(a, where, 0); /* index 9 is out of range: fails on the engine */
  kiln_tensor *copied = kiln_to_device(row, kiln_cpu(1));
  assert_int_not_equal(kiln_tensor_status(copied), KILN_OK);
  kiln_waitall();
  kiln_scope_end();
}

static void test_accounting_per_device(void **state) {
  (void)state;
  kiln_waitall();
  int64_t before, after, peak;
  assert_int_equal(kiln_device_memory(kiln_cpu(3), &before, NULL), KILN_OK);
  assert_int_equal(kiln_device_reset_peak(kiln_cpu(3)), KILN_OK);
  kiln_scope_begin();
  kiln_set_device(kiln_cpu(3));
  int64_t shape[1] = {1 << 20};
  kiln_tensor *big = kiln_zeros(KILN_F32, 1, shape);
  kiln_set_device(kiln_cpu(0));
  assert_true(tu_ok("zeros", big));
  assert_int_equal(kiln_device_memory(kiln_cpu(3), &after, &peak), KILN_OK);
  assert_true(after - before >= (int64_t)4 << 20);
  assert_true(peak >= after);
  kiln_scope_end();
  kiln_waitall();
  assert_int_equal(kiln_device_memory(kiln_cpu(3), &after, &peak), KILN_OK);
  assert_int_equal(after, before);
  assert_true(peak >= (int64_t)4 << 20);
  assert_int_equal(kiln_device_memory(kiln_cpu(99), &after, &peak), KILN_ERR_INVALID_ARGUMENT);
  assert_int_equal(kiln_device_reset_peak(kiln_cpu(-1)), KILN_ERR_INVALID_ARGUMENT);
  assert_non_null(strstr(kiln_last_error(), "cpu(-1)"));
}

/* A plan compiled over parameters on cpu(1) runs there, and refuses an
 * input from elsewhere. */
static void test_hybridized_block_on_a_device(void **state) {
  (void)state;
  kiln_scope_begin();
  kiln_set_device(kiln_cpu(1));
  kiln_block *net = kiln_nn_sequential();
  kiln_block_add_child(net, NULL, kiln_nn_dense(16, KILN_ACT_RELU));
  kiln_block_add_child(net, NULL, kiln_nn_dense(4, KILN_ACT_NONE));
  assert_int_equal(kiln_block_initialize(net, NULL, false), KILN_OK);
  int64_t shape[2] = {5, 8};
  kiln_tensor *x1 = kiln_random_uniform(NULL, -1, 1, KILN_F32, 2, shape);
  kiln_tensor *eager = kiln_block_call(net, x1); /* fixes the deferred shapes: parameters made on cpu(1) */
  kiln_set_device(kiln_cpu(0));
  assert_true(tu_ok("eager", eager));
  assert_true(kiln_device_equal(kiln_tensor_device(eager), kiln_cpu(1)));
  kiln_param_list l;
  assert_int_equal(kiln_block_collect_params(net, &l), KILN_OK);
  assert_int_equal(l.n, 4);
  for (int i = 0; i < l.n; i++) assert_true(kiln_device_equal(kiln_tensor_device(l.tensors[i]), kiln_cpu(1)));
  kiln_param_list_free(&l);
  assert_int_equal(kiln_block_hybridize(net, NULL), KILN_OK);
  kiln_tensor *y = kiln_block_call(net, x1); /* traced and compiled from cpu(0): runs on cpu(1) */
  assert_true(kiln_device_equal(kiln_tensor_device(y), kiln_cpu(1)));
  assert_true(tu_close("hybridized on cpu(1)", y, eager, 1e-6, 1e-6));
  kiln_tensor *x0 = kiln_to_device(x1, kiln_cpu(0));
  kiln_tensor *wrong = kiln_block_call(net, x0);
  assert_int_equal(kiln_tensor_status(wrong), KILN_ERR_INVALID_ARGUMENT);
  assert_non_null(strstr(kiln_tensor_error(wrong), "cpu(0)"));
  kiln_block_release(net);
  kiln_scope_end();
}

/* Each device has workers of its own, and copies a queue of their own:
 * with cpu(0)'s workers held by ops that wait for a flag, an op on cpu(5)
 * and a copy of its result still run, and work reading the copy sets it.
 * With one shared worker set this would wait forever (bounded here). */
typedef struct {
  atomic_int flag;
} latch;

static kiln_status hold_until_set(void *data) {
  latch *l = data;
  struct timespec start, now;
  clock_gettime(CLOCK_MONOTONIC, &start);
  while (!atomic_load(&l->flag)) {
    clock_gettime(CLOCK_MONOTONIC, &now);
    if (now.tv_sec - start.tv_sec > 10) return kiln_errorf(KILN_ERR_INTERNAL, "the other device never ran");
    struct timespec nap = {0, 100000};
    nanosleep(&nap, NULL);
  }
  return KILN_OK;
}

static kiln_status set_flag(void *data) {
  atomic_store(&((latch *)data)->flag, 1);
  return KILN_OK;
}

static void test_devices_have_their_own_workers(void **state) {
  (void)state;
  if (getenv("KILN_ENGINE") && strcmp(getenv("KILN_ENGINE"), "naive") == 0) skip();
  kiln_scope_begin();
  int64_t shape[1] = {1};
  kiln_tensor *on0 = kiln_zeros(KILN_F32, 1, shape);
  kiln_tensor *on5 = kiln_to_device(on0, kiln_cpu(5));
  kiln_wait_to_read(on5);
  latch l;
  atomic_init(&l.flag, 0);
  kiln_engine *e = kiln_default_engine();
  kiln_engine_var *v0 = engine_new_var_on(e, 0);
  /* cpu(0) has one or two workers: hold them all. */
  assert_int_equal(engine_push_on(e, 0, hold_until_set, NULL, &l, NULL, 0, &v0, 1, "hold", 0), KILN_OK);
  kiln_engine_var *v1 = engine_new_var_on(e, 0);
  assert_int_equal(engine_push_on(e, 0, hold_until_set, NULL, &l, NULL, 0, &v1, 1, "hold", 0), KILN_OK);
  kiln_tensor *y = kiln_add_scalar(on5, 1.0); /* runs on cpu(5)'s worker */
  kiln_tensor *moved = kiln_to_device(y, kiln_cpu(6)); /* on the copy queue */
  kiln_engine_var *v5 = engine_new_var_on(e, 0);
  /* The flag is set by work on cpu(5) that reads the copy: it runs once
   * cpu(5) and the copy queue have both run theirs, while cpu(0) is held. */
  kiln_engine_var *reads[1] = {moved->storage->var};
  int q5 = y->storage->queue;
  assert_true(q5 > 0);
  assert_int_equal(engine_push_on(e, q5, set_flag, NULL, &l, reads, 1, &v5, 1, "set", 0), KILN_OK);
  assert_int_equal(kiln_engine_wait_var(e, v0), KILN_OK);
  assert_int_equal(kiln_engine_wait_var(e, v1), KILN_OK);
  double got;
  assert_int_equal(kiln_tensor_item(moved, &got), KILN_OK);
  assert_true(got == 1.0);
  kiln_engine_delete_var(e, v0, NULL, NULL);
  kiln_engine_delete_var(e, v1, NULL, NULL);
  kiln_engine_delete_var(e, v5, NULL, NULL);
  kiln_scope_end();
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_placement_follows_inputs),
      cmocka_unit_test(test_mixed_devices_fail_naming_both),
      cmocka_unit_test(test_transfer_of_views_and_failures),
      cmocka_unit_test(test_accounting_per_device),
      cmocka_unit_test(test_hybridized_block_on_a_device),
      cmocka_unit_test(test_devices_have_their_own_workers),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
