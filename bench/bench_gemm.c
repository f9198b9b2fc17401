/* GEMM through kiln (kiln_matmul: dispatch, output allocation, routing)
 * against the same cblas_sgemm called directly on preallocated buffers, in
 * the same process and interleaved, so both see the same machine state.
 * Figures: time ratio raw/kiln (>= 1 means kiln is as fast) per size, and
 * the batch-1 product (1x512 . 512x256) in microseconds for kiln, raw sgemm
 * and raw sgemv. */
#include <cblas.h>
#include <string.h>

#include "bench_common.h"
#include "kiln.h"

enum { REPS = 7 };

/* Runs f enough times to fill ~min_seconds and returns seconds per call. */
typedef void (*bench_fn)(void *ctx);
static double time_per_call(bench_fn f, void *ctx, double min_seconds) {
  int iters = 1;
  for (;;) {
    double t0 = bench_now();
    for (int i = 0; i < iters; i++) f(ctx);
    double dt = bench_now() - t0;
    if (dt >= min_seconds) return dt / iters;
    iters = dt > 0 ? (int)(iters * (min_seconds / dt) * 1.2) + 1 : iters * 10;
  }
}

typedef struct {
  int m, n, k;
  float *a, *b, *c;
  kiln_tensor *ta, *tb;
} gemm_case;

static void raw_sgemm(void *p) {
  gemm_case *g = p;
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, g->m, g->n, g->k, 1.0f, g->a, g->k, g->b, g->n, 0.0f, g->c,
              g->n);
}

static void raw_sgemv(void *p) {
  gemm_case *g = p;
  cblas_sgemv(CblasRowMajor, CblasTrans, g->k, g->n, 1.0f, g->b, g->n, g->a, 1, 0.0f, g->c, 1);
}

static void kiln_mm(void *p) {
  gemm_case *g = p;
  kiln_tensor *c = kiln_matmul(g->ta, g->tb);
  if (kiln_tensor_status(c) != KILN_OK) {
    fprintf(stderr, "bench_gemm: %s\n", kiln_tensor_error(c));
    exit(1);
  }
  kiln_tensor_release(c);
}

static void setup(gemm_case *g, int m, int n, int k) {
  g->m = m, g->n = n, g->k = k;
  g->ta = kiln_random_uniform(NULL, -1, 1, KILN_F32, 2, (int64_t[]){m, k});
  g->tb = kiln_random_uniform(NULL, -1, 1, KILN_F32, 2, (int64_t[]){k, n});
  g->a = malloc(sizeof(float) * (size_t)m * (size_t)k);
  g->b = malloc(sizeof(float) * (size_t)k * (size_t)n);
  g->c = malloc(sizeof(float) * (size_t)m * (size_t)n);
  kiln_tensor_copy_to(g->ta, g->a, sizeof(float) * (size_t)m * (size_t)k);
  kiln_tensor_copy_to(g->tb, g->b, sizeof(float) * (size_t)k * (size_t)n);
}

static void teardown(gemm_case *g) {
  kiln_tensor_release(g->ta);
  kiln_tensor_release(g->tb);
  free(g->a);
  free(g->b);
  free(g->c);
}

int main(void) {
  kiln_seed(1);
  static const int sizes[] = {64, 128, 256, 512, 1024, 2048};
  printf("%-18s %12s %12s %8s\n", "shape", "raw sgemm", "kiln", "raw/kiln");
  for (size_t s = 0; s < sizeof sizes / sizeof *sizes; s++) {
    int n = sizes[s];
    gemm_case g;
    setup(&g, n, n, n);
    double raw[REPS], kl[REPS];
    double budget = n >= 1024 ? 0.3 : 0.1;
    raw_sgemm(&g), kiln_mm(&g); /* warm up BLAS threads and the caches */
    for (int r = 0; r < REPS; r++) {
      raw[r] = time_per_call(raw_sgemm, &g, budget);
      kl[r] = time_per_call(kiln_mm, &g, budget);
    }
    double mr = bench_median(raw, REPS), mk = bench_median(kl, REPS);
    char shape[32], name[64];
    snprintf(shape, sizeof shape, "%dx%dx%d", n, n, n);
    printf("%-18s %10.1f us %10.1f us %8.3f   (%.1f GFLOP/s kiln)\n", shape, mr * 1e6, mk * 1e6, mr / mk,
           2.0 * n * n * n / mk * 1e-9);
    snprintf(name, sizeof name, "gemm_%d_raw_over_kiln", n);
    bench_metric(name, mr / mk, "ratio");
    teardown(&g);
  }

  /* Batch 1: (1x512) . (512x256). */
  gemm_case g;
  setup(&g, 1, 256, 512);
  double raw[REPS], gv[REPS], kl[REPS];
  for (int r = 0; r < REPS; r++) {
    raw[r] = time_per_call(raw_sgemm, &g, 0.05);
    gv[r] = time_per_call(raw_sgemv, &g, 0.05);
    kl[r] = time_per_call(kiln_mm, &g, 0.05);
  }
  double mr = bench_median(raw, REPS), mg = bench_median(gv, REPS), mk = bench_median(kl, REPS);
  printf("%-18s raw sgemm %.2f us, raw sgemv %.2f us, kiln %.2f us (sgemm/kiln %.2f)\n", "1x512 . 512x256", mr * 1e6,
         mg * 1e6, mk * 1e6, mr / mk);
  bench_metric("gemm_batch1_raw_sgemm_us", mr * 1e6, "us");
  bench_metric("gemm_batch1_raw_sgemv_us", mg * 1e6, "us");
  bench_metric("gemm_batch1_kiln_us", mk * 1e6, "us");
  bench_metric("gemm_batch1_raw_sgemm_over_kiln", mr / mk, "ratio");
  teardown(&g);
  return 0;
}
