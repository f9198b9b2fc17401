/* The raw OpenBLAS peer of bench_gemm, in its own process: kiln runs
 * OpenBLAS single-threaded under its own thread pool, so the peer must not
 * share kiln's process to keep OpenBLAS's default threading. For each size
 * given as m,n,k prints `m n k sgemm_seconds sgemv_seconds` (medians of
 * reps); sgemv (the product as y = B^T x) only when m is 1, else 0. */
#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>

#include "bench_common.h"

int main(int argc, char **argv) {
  int reps = argc > 1 ? atoi(argv[1]) : 7;
  for (int i = 2; i < argc; i++) {
    int m, n, k;
    if (sscanf(argv[i], "%d,%d,%d", &m, &n, &k) != 3) return 2;
    float *a = malloc(sizeof(float) * (size_t)m * (size_t)k), *b = malloc(sizeof(float) * (size_t)k * (size_t)n),
          *c = malloc(sizeof(float) * (size_t)m * (size_t)n);
    for (size_t q = 0; q < (size_t)m * (size_t)k; q++) a[q] = (float)(q % 7) * 0.25f - 0.75f;
    for (size_t q = 0; q < (size_t)k * (size_t)n; q++) b[q] = (float)(q % 5) * 0.25f - 0.5f;
    double med[2] = {0, 0};
    for (int v = 0; v < (m == 1 ? 2 : 1); v++) {
      double per_call[64];
      for (int r = -1; r < reps && r < 64; r++) {
        int iters = 1;
        double dt;
        for (;;) { /* enough calls to fill 50 ms */
          double t0 = bench_now();
          for (int it = 0; it < iters; it++) {
            if (v == 0)
              cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, m, n, k, 1.0f, a, k, b, n, 0.0f, c, n);
            else
              cblas_sgemv(CblasRowMajor, CblasTrans, k, n, 1.0f, b, n, a, 1, 0.0f, c, 1);
          }
          dt = bench_now() - t0;
          if (dt > 0.05) break;
          iters *= 2;
        }
        if (r >= 0) per_call[r] = dt / iters;
      }
      med[v] = bench_median(per_call, reps);
    }
    printf("%d %d %d %.9g %.9g\n", m, n, k, med[0], med[1]);
    fflush(stdout);
    free(a);
    free(b);
    free(c);
  }
  return 0;
}
