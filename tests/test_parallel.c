/* The intra-op pool (src/base/parallel.c) and the kernels that use it: every
 * index is visited exactly once, nested and concurrent loops run serially
 * instead of deadlocking, and the parallel paths of elementwise ops, GEMM,
 * conv2d, pooling and the pools' gradients agree with the reference kernels on
 * inputs large enough to split. */
#include <pthread.h>
#include <stdatomic.h>
#include <sched.h>
#include <stdlib.h>

#include "base/parallel.h"
#include "imperative/dispatch.h"
#include "ops/nn_grad.h"
#include "testutil.h"

enum { N = 100003 };

static atomic_int visits[N];
static atomic_int max_worker;

static void count_visits(void *ctx, int64_t begin, int64_t end, int worker) {
  (void)ctx;
  for (int64_t i = begin; i < end; i++) atomic_fetch_add(&visits[i], 1);
  int seen = atomic_load(&max_worker);
  while (worker > seen && !atomic_compare_exchange_weak(&max_worker, &seen, worker)) {
  }
}

static void every_index_once(void **state) {
  (void)state;
  for (int i = 0; i < N; i++) atomic_store(&visits[i], 0);
  kiln_parallel_for(N, 1, count_visits, NULL);
  for (int i = 0; i < N; i++) assert_int_equal(atomic_load(&visits[i]), 1);
  assert_true(atomic_load(&max_worker) < kiln_parallel_workers());
  /* Below twice the grain the caller runs everything as worker 0. */
  atomic_store(&max_worker, 0);
  for (int i = 0; i < 10; i++) atomic_store(&visits[i], 0);
  kiln_parallel_for(10, 100, count_visits, NULL);
  for (int i = 0; i < 10; i++) assert_int_equal(atomic_load(&visits[i]), 1);
  assert_int_equal(atomic_load(&max_worker), 0);
}

static atomic_long inner_total;

static void inner(void *ctx, int64_t begin, int64_t end, int worker) {
  (void)ctx;
  (void)worker;
  atomic_fetch_add(&inner_total, end - begin);
}

static void outer(void *ctx, int64_t begin, int64_t end, int worker) {
  (void)ctx;
  (void)worker;
  for (int64_t i = begin; i < end; i++) kiln_parallel_for(1000, 1, inner, NULL);
}

static void nested_loops_run_serially(void **state) {
  (void)state;
  atomic_store(&inner_total, 0);
  kiln_parallel_for(64, 1, outer, NULL);
  assert_int_equal(atomic_load(&inner_total), 64 * 1000);
}

static void *ops_on_a_thread(void *arg) {
  kiln_tensor *x = arg;
  kiln_tensor *sum = NULL;
  for (int i = 0; i < 20; i++) {
    kiln_tensor *y = kiln_mul_scalar(x, 2.0);
    kiln_tensor_release(sum);
    sum = kiln_sum(y, 0, NULL, false);
    kiln_tensor_release(y);
  }
  return sum;
}

/* Two user threads issuing large ops at once: one gets the pool, the other
 * runs serially; both get the right answer. */
static void concurrent_callers(void **state) {
  (void)state;
  kiln_tensor *x = kiln_full(KILN_F32, 1, (int64_t[]){1 << 19}, 0.5);
  pthread_t t[2];
  for (int i = 0; i < 2; i++) pthread_create(&t[i], NULL, ops_on_a_thread, x);
  for (int i = 0; i < 2; i++) {
    void *res;
    pthread_join(t[i], &res);
    double v = 0;
    assert_int_equal(kiln_tensor_item(res, &v), KILN_OK);
    assert_true(v == (double)(1 << 19));
    kiln_tensor_release(res);
  }
  kiln_tensor_release(x);
}

/* Per-worker partial sums whose total depends on the order of addition:
 * the bits must not depend on whether this thread got the pool. */
typedef struct {
  const float *x;
  float partial[64];
} partial_sums;

static void sum_chunk(void *ctx, int64_t begin, int64_t end, int worker) {
  partial_sums *p = ctx;
  float s = 0;
  for (int64_t i = begin; i < end; i++) s += p->x[i];
  p->partial[worker] += s;
}

static float summed_in_worker_order(const float *x, int64_t n) {
  partial_sums p = {.x = x};
  kiln_parallel_for(n, 1024, sum_chunk, &p);
  float total = 0;
  for (int w = 0; w < kiln_parallel_workers(); w++) total += p.partial[w];
  return total;
}

static atomic_int holding, release_pool;

static void hold_chunk(void *ctx, int64_t begin, int64_t end, int worker) {
  (void)ctx, (void)begin, (void)end, (void)worker;
  atomic_store(&holding, 1);
  while (!atomic_load(&release_pool)) sched_yield();
}

static void *hold_the_pool(void *arg) {
  (void)arg;
  kiln_parallel_for(1 << 20, 1, hold_chunk, NULL);
  return NULL;
}

static void a_busy_pool_gives_the_same_bits(void **state) {
  (void)state;
  if (kiln_parallel_workers() < 2) skip();
  enum { LEN = 1 << 16 };
  float *x = malloc(sizeof(float) * LEN);
  uint64_t seed = 3;
  for (int i = 0; i < LEN; i++) x[i] = (float)(tu_rng_unit(&seed) * 1e4 - 5e3) * (i % 7 == 0 ? 1e-4f : 1.0f);
  float with_pool = summed_in_worker_order(x, LEN);
  float one_call = 0;
  for (int i = 0; i < LEN; i++) one_call += x[i];
  atomic_store(&holding, 0);
  atomic_store(&release_pool, 0);
  pthread_t t;
  pthread_create(&t, NULL, hold_the_pool, NULL);
  while (!atomic_load(&holding)) sched_yield();
  float without_pool = summed_in_worker_order(x, LEN);
  atomic_store(&release_pool, 1);
  pthread_join(t, NULL);
  /* The test can fail: summed in one call the bits differ. */
  assert_true(one_call != with_pool);
  assert_true(without_pool == with_pool);
  free(x);
}

/* Large enough to split: the optimised kernel against the reference. */
static void parallel_kernels_match_reference(void **state) {
  (void)state;
  kiln_scope_begin();
  kiln_tensor *a = tu_random(KILN_F32, 2, (int64_t[]){600, 700}, 1, -2, 2);
  kiln_tensor *b = tu_random(KILN_F32, 1, (int64_t[]){700}, 2, -2, 2);
  kiln_tensor *w = tu_random(KILN_F32, 2, (int64_t[]){300, 700}, 3, -1, 1);
  kiln_tensor *img = tu_random(KILN_F32, 4, (int64_t[]){32, 3, 20, 20}, 4, -1, 1);
  kiln_tensor *k = tu_random(KILN_F32, 4, (int64_t[]){8, 3, 5, 5}, 5, -1, 1);
  kiln_tensor *row = tu_random(KILN_F32, 2, (int64_t[]){1, 700}, 6, -1, 1);
  kiln_tensor *got[5] = {kiln_add(a, b), kiln_tanh(a), kiln_linear(a, w, NULL), kiln_conv2d(img, k, NULL, NULL),
                         kiln_linear(row, w, NULL)};
  bool old = kiln_use_reference_kernels(true);
  kiln_tensor *want[5] = {kiln_add(a, b), kiln_tanh(a), kiln_linear(a, w, NULL), kiln_conv2d(img, k, NULL, NULL),
                          kiln_linear(row, w, NULL)};
  kiln_use_reference_kernels(old);
  /* Elementwise: exact for add; tanh float vs double within 2 ulp. GEMM and
   * conv: float32 sums of 700 and 75 products against double, rtol 1e-4. */
  TU_CLOSE(got[0], want[0], 0, 0);
  TU_CLOSE(got[1], want[1], 2.5e-7, 1e-7);
  TU_CLOSE(got[2], want[2], 1e-4, 1e-4);
  TU_CLOSE(got[3], want[3], 1e-4, 1e-4);
  TU_CLOSE(got[4], want[4], 1e-4, 1e-4);
  kiln_scope_end();
}

/* Convolutions with groups of 16 output channels take the channel-lane
 * tiles of the direct path (src/kernels/conv.c), including a last tile of
 * fewer than 6 pixels and grouped weights; compared with the reference. */
static void conv_channel_lane_tiles(void **state) {
  (void)state;
  kiln_scope_begin();
  kiln_tensor *x1 = tu_random(KILN_F32, 4, (int64_t[]){32, 6, 14, 14}, 11, -1, 1);
  kiln_tensor *w1 = tu_random(KILN_F32, 4, (int64_t[]){16, 6, 5, 5}, 12, -1, 1);
  kiln_tensor *b1 = tu_random(KILN_F32, 1, (int64_t[]){16}, 13, -1, 1);
  kiln_tensor *x2 = tu_random(KILN_F32, 4, (int64_t[]){8, 4, 9, 9}, 14, -1, 1);
  kiln_tensor *w2 = tu_random(KILN_F32, 4, (int64_t[]){32, 2, 3, 3}, 15, -1, 1);
  kiln_tensor *b2 = tu_random(KILN_F32, 1, (int64_t[]){32}, 16, -1, 1);
  kiln_conv2d_params grouped = kiln_conv2d_params_default();
  grouped.groups = 2;
  grouped.padding[0] = grouped.padding[1] = 1;
  kiln_tensor *got1 = kiln_conv2d(x1, w1, b1, NULL), *got2 = kiln_conv2d(x2, w2, b2, &grouped);
  bool old = kiln_use_reference_kernels(true);
  kiln_tensor *want1 = kiln_conv2d(x1, w1, b1, NULL), *want2 = kiln_conv2d(x2, w2, b2, &grouped);
  kiln_use_reference_kernels(old);
  /* float32 sums of 150 and 18 products against double. */
  TU_CLOSE(got1, want1, 1e-4, 1e-4);
  TU_CLOSE(got2, want2, 1e-4, 1e-4);
  kiln_scope_end();
}

/* Reductions large enough to split over their kept dims, against the
 * reference (double accumulation both; float32 results agree to rounding). */
static void parallel_reductions_match_reference(void **state) {
  (void)state;
  kiln_scope_begin();
  kiln_tensor *x = tu_random(KILN_F32, 3, TU_SHAPE(40, 90, 60), 21, -3, 3);
  kiln_tensor *xi = tu_random(KILN_I32, 2, TU_SHAPE(700, 300), 22, -1000, 1000);
  int last[1] = {2}, first[1] = {0}, mid[2] = {0, 2};
  for (int ref = 0; ref < 2; ref++) {
    static kiln_tensor *r[2][7];
    bool old = kiln_use_reference_kernels(ref);
    r[ref][0] = kiln_sum(x, 1, last, false);
    r[ref][1] = kiln_mean(x, 1, first, true);
    r[ref][2] = kiln_var(x, 2, mid, false, 1);
    r[ref][3] = kiln_logsumexp(x, 1, last, true);
    r[ref][4] = kiln_max(x, 1, first, false);
    r[ref][5] = kiln_sum(xi, 1, (int[]){1}, false);
    r[ref][6] = kiln_prod(kiln_cast(xi, KILN_I64), 1, (int[]){0}, false);
    kiln_use_reference_kernels(old);
    if (ref == 1)
      for (int i = 0; i < 7; i++) TU_CLOSE(r[0][i], r[1][i], i < 5 ? 1e-6 : 0, i < 5 ? 1e-6 : 0);
  }
  kiln_scope_end();
}

/* Pooling forward and backward split over the N*C planes, against the
 * reference: LeNet's two 2x2 pools (after a ReLU, so windows of zeros tie and
 * the max's gradient must go to the first), odd-sized ones with rows of 10
 * outputs and of 4 (rows under 8 outputs, like the second pool's 5, take
 * blocks that write past the row's end, up to a share's last planes), and a
 * padded 3x3 stride-2 window through the general kernels. */
static void parallel_pools_match_reference(void **state) {
  (void)state;
  static const struct {
    int64_t shape[4], k, s, pad;
  } cases[] = {
      {{64, 6, 28, 28}, 2, 2, 0}, {{64, 16, 10, 10}, 2, 2, 0}, {{40, 8, 15, 21}, 2, 2, 0},
      {{300, 3, 7, 9}, 2, 2, 0},  {{16, 8, 31, 33}, 3, 2, 1}};
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    kiln_scope_begin();
    kiln_tensor *x = kiln_relu(tu_random(KILN_F32, 4, cases[i].shape, 30 + i, -1, 1));
    kiln_pool2d_params p = kiln_pool2d_params_default(cases[i].k, cases[i].k);
    p.stride[0] = p.stride[1] = cases[i].s;
    p.padding[0] = p.padding[1] = cases[i].pad;
    p.count_include_pad = true;
    for (int avg = 0; avg < 2; avg++) {
      kiln_op_id fwd = avg ? KILN_OP_AVG_POOL2D : KILN_OP_MAX_POOL2D;
      kiln_tensor *y = avg ? kiln_avg_pool2d(x, &p) : kiln_max_pool2d(x, &p);
      kiln_tensor *gy = tu_random(KILN_F32, 4, kiln_tensor_shape(y), 40 + i, -1, 1);
      kiln_attr_value a[KILN_MAX_ATTRS];
      kiln_attrs_default(fwd, a);
      kiln_attr_set_ints(&a[0], 2, p.kernel);
      kiln_attr_set_ints(&a[1], 2, p.stride);
      kiln_attr_set_ints(&a[2], 2, p.padding);
      if (avg) a[3].i = p.count_include_pad;
      kiln_tensor *gx = nn_pool2d_backward(fwd, gy, x, a);
      bool old = kiln_use_reference_kernels(true);
      kiln_tensor *want_y = avg ? kiln_avg_pool2d(x, &p) : kiln_max_pool2d(x, &p);
      kiln_tensor *want_gx = nn_pool2d_backward(fwd, gy, x, a);
      kiln_use_reference_kernels(old);
      /* float32 sums of at most 9 values against double. */
      TU_CLOSE(y, want_y, 1e-6, 1e-6);
      TU_CLOSE(gx, want_gx, 1e-6, 1e-6);
    }
    kiln_scope_end();
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(every_index_once),
      cmocka_unit_test(nested_loops_run_serially),
      cmocka_unit_test(concurrent_callers),
      cmocka_unit_test(a_busy_pool_gives_the_same_bits),
      cmocka_unit_test(parallel_kernels_match_reference),
      cmocka_unit_test(conv_channel_lane_tiles),
      cmocka_unit_test(parallel_reductions_match_reference),
      cmocka_unit_test(parallel_pools_match_reference),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
