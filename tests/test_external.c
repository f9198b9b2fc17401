/* kiln_tensor_from_external and kiln_tensor_data: tensors over memory kiln
 * does not own (the Python module's numpy and DLPack sharing). Checked:
 * that kiln reads and writes the caller's memory in place, through any
 * strides; that release runs exactly once, only after the ops already
 * pushed on the tensor (a poisoning release would show in their results
 * otherwise), and never when creation fails; and every refused input. */
#include <math.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"

typedef struct {
  atomic_int calls;
  float *poison; /* filled with NaN by the release, when set */
  size_t n;
} release_log;

static void on_release(void *ctx) {
  release_log *log = ctx;
  if (log->poison)
    for (size_t i = 0; i < log->n; i++) log->poison[i] = NAN;
  atomic_fetch_add(&log->calls, 1);
}

static void shares_memory_both_ways(void **state) {
  (void)state;
  float buf[6] = {1, 2, 3, 4, 5, 6};
  release_log log = {0};
  kiln_tensor *x = kiln_tensor_from_external(KILN_F32, 2, TU_SHAPE(2, 3), NULL, buf, on_release, &log);
  TU_OK(x);
  assert_true(kiln_tensor_is_contiguous(x));
  kiln_tensor *y = tu_track(kiln_add_scalar(x, 10));
  assert_true(tu_close_values("x + 10", y, (double[]){11, 12, 13, 14, 15, 16}, 6, 0, 0));
  /* A write by kiln lands in the caller's memory... */
  kiln_tensor *row = tu_track(kiln_slice(x, 0, 1, 2, 1));
  assert_int_equal(kiln_assign(row, tu_track(kiln_full(KILN_F32, 0, NULL, -1))), KILN_OK);
  assert_int_equal(kiln_wait_to_read(x), KILN_OK);
  assert_true(buf[3] == -1 && buf[4] == -1 && buf[5] == -1 && buf[2] == 3);
  /* ...and the caller's write is what the next op reads. */
  buf[0] = 100;
  kiln_tensor *z = tu_track(kiln_mul_scalar(x, 2));
  assert_true(tu_close_values("x * 2", z, (double[]){200, 4, 6, -2, -2, -2}, 6, 0, 0));
  void *p;
  assert_int_equal(kiln_tensor_data(x, &p), KILN_OK);
  assert_ptr_equal(p, buf);
  assert_int_equal(kiln_tensor_data(row, &p), KILN_OK);
  assert_ptr_equal(p, buf + 3);
  kiln_tensor_release(x);
  kiln_waitall();
  assert_int_equal(atomic_load(&log.calls), 0); /* the slice still holds the storage */
  tu_release_tracked(NULL);
  kiln_waitall();
  assert_int_equal(atomic_load(&log.calls), 1);
}

/* Strides in elements: a transposed view and a reversed one of plain
 * arrays, as numpy hands them over. */
static void strided_memory(void **state) {
  (void)state;
  double buf[6] = {0, 1, 2, 3, 4, 5}; /* [2, 3] row-major */
  kiln_tensor *t = tu_track(kiln_tensor_from_external(KILN_F64, 2, TU_SHAPE(3, 2), TU_SHAPE(1, 3), buf, NULL, NULL));
  TU_OK(t);
  assert_false(kiln_tensor_is_contiguous(t));
  assert_true(tu_close_values("transposed", tu_track(kiln_contiguous(t)), (double[]){0, 3, 1, 4, 2, 5}, 6, 0, 0));
  kiln_tensor *r = tu_track(kiln_tensor_from_external(KILN_F64, 1, TU_SHAPE(6), TU_SHAPE(-1), buf + 5, NULL, NULL));
  assert_true(tu_close_values("reversed", tu_track(kiln_add_scalar(r, 0)), (double[]){5, 4, 3, 2, 1, 0}, 6, 0, 0));
  kiln_tensor *b = tu_track(kiln_tensor_from_external(KILN_F64, 2, TU_SHAPE(2, 3), TU_SHAPE(0, 1), buf, NULL, NULL));
  assert_true(tu_close_values("broadcast row", tu_track(kiln_contiguous(b)), (double[]){0, 1, 2, 0, 1, 2}, 6, 0, 0));
  int32_t ints[4] = {7, 8, 9, 10};
  kiln_tensor *i = tu_track(kiln_tensor_from_external(KILN_I32, 0, NULL, NULL, ints + 2, NULL, NULL));
  double v;
  assert_int_equal(kiln_tensor_item(i, &v), KILN_OK);
  assert_true(v == 9);
  tu_release_tracked(NULL);
}

/* The release must wait for the ops pushed before the last reference went:
 * it poisons the memory, so an op that read after it would give NaN. */
static void release_once_after_pending_ops(void **state) {
  (void)state;
  enum { N = 1 << 22, ROUNDS = 4 };
  float *buf = malloc(sizeof(float) * N);
  assert_non_null(buf);
  for (int round = 0; round < ROUNDS; round++) {
    for (size_t i = 0; i < N; i++) buf[i] = (float)(i % 7);
    release_log log = {.poison = buf, .n = N};
    kiln_tensor *x = kiln_tensor_from_external(KILN_F32, 1, TU_SHAPE(N), NULL, buf, on_release, &log);
    TU_OK(x);
    kiln_tensor *y = x;
    for (int k = 0; k < 4; k++) y = tu_track(kiln_mul_scalar(y, 2)); /* a chain still running... */
    kiln_tensor *s = tu_track(kiln_sum(tu_track(kiln_add(x, y)), 0, NULL, false)); /* ...and one more read of x */
    kiln_tensor_release(x); /* ...when the last reference goes */
    double got;
    assert_int_equal(kiln_tensor_item(s, &got), KILN_OK);
    double want = 0;
    for (size_t i = 0; i < N; i++) want += 17.0 * (double)(i % 7);
    assert_true(fabs(got - want) <= 1e-4 * want);
    kiln_waitall();
    assert_int_equal(atomic_load(&log.calls), 1);
    tu_release_tracked(NULL);
    kiln_waitall();
    assert_int_equal(atomic_load(&log.calls), 1);
  }
  free(buf);
}

static void refused_inputs(void **state) {
  (void)state;
  float buf[8] = {0};
  release_log log = {0};
  TU_FAILS(tu_track(kiln_tensor_from_external(KILN_F32, 1, TU_SHAPE(4), NULL, NULL, on_release, &log)),
           KILN_ERR_INVALID_ARGUMENT, "data is NULL");
  TU_FAILS(tu_track(kiln_tensor_from_external((kiln_dtype)99, 1, TU_SHAPE(4), NULL, buf, on_release, &log)),
           KILN_ERR_DTYPE, "not a kiln dtype");
  TU_FAILS(tu_track(kiln_tensor_from_external(KILN_F32, 1, TU_SHAPE(-1), NULL, buf, on_release, &log)),
           KILN_ERR_INVALID_ARGUMENT, "negative dim");
  TU_FAILS(tu_track(kiln_tensor_from_external(KILN_F32, 9, TU_SHAPE(1, 1, 1, 1, 1, 1, 1, 1, 1), NULL, buf,
                                              on_release, &log)),
           KILN_ERR_INVALID_ARGUMENT, "9 dims");
  TU_FAILS(tu_track(kiln_tensor_from_external(KILN_F32, 1, TU_SHAPE(2), NULL, (char *)buf + 1, on_release, &log)),
           KILN_ERR_INVALID_ARGUMENT, "not aligned");
  TU_FAILS(tu_track(kiln_tensor_from_external(KILN_F32, 2, TU_SHAPE(3, 2), TU_SHAPE(INT64_MAX / 2, 1), buf,
                                              on_release, &log)),
           KILN_ERR_OVERFLOW, "strides reach");
  TU_FAILS(tu_track(kiln_tensor_from_external(KILN_F32, 1, TU_SHAPE(2), TU_SHAPE(INT64_MIN), buf, on_release, &log)),
           KILN_ERR_OVERFLOW, "strides reach");
  /* An empty tensor needs no memory at all. */
  kiln_tensor *e = tu_track(kiln_tensor_from_external(KILN_F32, 2, TU_SHAPE(0, 3), NULL, NULL, on_release, &log));
  TU_OK(e);
  assert_int_equal(kiln_tensor_numel(e), 0);
  void *p = buf;
  assert_int_equal(kiln_tensor_data(NULL, &p), KILN_ERR_INVALID_ARGUMENT);
  assert_int_equal(kiln_tensor_data(e, NULL), KILN_ERR_INVALID_ARGUMENT);
  kiln_tensor *bad = tu_track(kiln_add(e, tu_track(kiln_ones(KILN_F32, 1, TU_SHAPE(4)))));
  assert_int_equal(kiln_tensor_data(bad, &p), KILN_ERR_SHAPE);
  assert_null(p);
  tu_release_tracked(NULL);
  kiln_waitall();
  assert_int_equal(atomic_load(&log.calls), 1); /* the empty one only */
}

/* Each allocation of a creation fails in turn: a failed creation never
 * calls release and leaks nothing; a successful one calls it once. */
static void allocation_failures(void **state) {
  (void)state;
  float buf[4] = {1, 2, 3, 4};
  for (long fail_at = 0;; fail_at++) {
    release_log log = {0};
    kiln_waitall();
    tu_fail_allocation(fail_at);
    kiln_tensor *t = kiln_tensor_from_external(KILN_F32, 1, TU_SHAPE(4), NULL, buf, on_release, &log);
    bool made = !kiln_tensor_failed(t);
    if (!made) assert_int_equal(kiln_tensor_status(t), KILN_ERR_OUT_OF_MEMORY);
    kiln_tensor_release(t);
    kiln_waitall();
    tu_restore_allocator();
    assert_int_equal(atomic_load(&log.calls), made ? 1 : 0);
    if (made && tu_allocations() <= fail_at) break;
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(shares_memory_both_ways),
      cmocka_unit_test(strided_memory),
      cmocka_unit_test(release_once_after_pending_ops),
      cmocka_unit_test(refused_inputs),
      cmocka_unit_test(allocation_failures),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
