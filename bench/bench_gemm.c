/* GEMM through kiln (kiln_matmul: dispatch, output allocation, routing,
 * kiln's thread pool) against the same cblas_sgemm called directly on
 * preallocated buffers with OpenBLAS's default threading. The peer runs in
 * its own process (gemm_peer), launched from here in the same run: inside
 * kiln's process OpenBLAS is single-threaded (see src/kernels/gemm.c).
 * Figures: time ratio raw/kiln (>= 1 means kiln is as fast) per size, and
 * the batch-1 product (1x512 . 512x256) in microseconds for kiln and raw
 * sgemm and sgemv. */
#include <stdbool.h>
#include <string.h>

#include "bench_common.h"
#include "kiln.h"

/* Peer and kiln take turns for ROUNDS rounds, so a slow spell of the
 * machine falls on both; each figure is the median over rounds. */
enum { REPS = 5, ROUNDS = 3, N_SIZES = 7 };
static const int sizes[N_SIZES][3] = {{64, 64, 64},       {128, 128, 128},    {256, 256, 256}, {512, 512, 512},
                                      {1024, 1024, 1024}, {2048, 2048, 2048}, {1, 256, 512}};

/* Seconds per kiln_matmul call, median of REPS runs of >= 50 ms each. */
static double kiln_seconds(int m, int n, int k) {
  kiln_tensor *a = kiln_random_uniform(NULL, -1, 1, KILN_F32, 2, (int64_t[]){m, k});
  kiln_tensor *b = kiln_random_uniform(NULL, -1, 1, KILN_F32, 2, (int64_t[]){k, n});
  double per_call[REPS];
  for (int r = -1; r < REPS; r++) {
    int iters = 1;
    double dt;
    for (;;) {
      double t0 = bench_now();
      for (int it = 0; it < iters; it++) {
        kiln_tensor *c = kiln_matmul(a, b);
        if (kiln_tensor_status(c) != KILN_OK) {
          fprintf(stderr, "bench_gemm: %s\n", kiln_tensor_error(c));
          exit(1);
        }
        kiln_tensor_release(c);
      }
      dt = bench_now() - t0;
      if (dt > 0.05) break;
      iters *= 2;
    }
    if (r >= 0) per_call[r] = dt / iters;
  }
  kiln_tensor_release(a);
  kiln_tensor_release(b);
  return bench_median(per_call, REPS);
}

/* Runs the peer over every size; false if it failed. */
static bool run_peer(double *raw, double *raw_gemv) {
  char cmd[1024];
  int used = snprintf(cmd, sizeof cmd, "%s/gemm_peer %d", KILN_BENCH_BIN_DIR, REPS);
  for (int i = 0; i < N_SIZES; i++)
    used += snprintf(cmd + used, sizeof cmd - (size_t)used, " %d,%d,%d", sizes[i][0], sizes[i][1], sizes[i][2]);
  FILE *p = popen(cmd, "r");
  int got = 0;
  for (; p && got < N_SIZES; got++) {
    int m, n, k;
    double s, v;
    if (fscanf(p, "%d %d %d %lf %lf", &m, &n, &k, &s, &v) != 5) break;
    raw[got] = s;
    if (m == 1) *raw_gemv = v;
  }
  bool ok = p && pclose(p) == 0 && got == N_SIZES;
  if (!ok) fprintf(stderr, "bench_gemm: the peer (%s) failed\n", cmd);
  return ok;
}

int main(void) {
  kiln_seed(1);
  double raw[ROUNDS][N_SIZES], kl[ROUNDS][N_SIZES], gemv[ROUNDS];
  for (int r = 0; r < ROUNDS; r++) {
    if (!run_peer(raw[r], &gemv[r])) return 1;
    for (int i = 0; i < N_SIZES; i++) kl[r][i] = kiln_seconds(sizes[i][0], sizes[i][1], sizes[i][2]);
  }
  printf("%-22s %12s %12s %8s\n", "shape", "raw sgemm", "kiln", "raw/kiln");
  for (int i = 0; i < N_SIZES; i++) {
    int m = sizes[i][0], n = sizes[i][1], k = sizes[i][2];
    double rs[ROUNDS], ks[ROUNDS];
    for (int r = 0; r < ROUNDS; r++) rs[r] = raw[r][i], ks[r] = kl[r][i];
    double mr = bench_median(rs, ROUNDS), mk = bench_median(ks, ROUNDS);
    char shape[48], name[64];
    snprintf(shape, sizeof shape, "%dx%d . %dx%d", m, k, k, n);
    printf("%-22s %9.1f us %9.1f us %8.3f   (%.1f GFLOP/s kiln)\n", shape, mr * 1e6, mk * 1e6, mr / mk,
           2.0 * m * n * k / mk * 1e-9);
    if (m == 1) {
      double mg = bench_median(gemv, ROUNDS);
      printf("%-22s %9.1f us (raw sgemv)\n", "", mg * 1e6);
      bench_metric("gemm_batch1_raw_sgemm_us", mr * 1e6, "us");
      bench_metric("gemm_batch1_raw_sgemv_us", mg * 1e6, "us");
      bench_metric("gemm_batch1_kiln_us", mk * 1e6, "us");
      bench_metric("gemm_batch1_raw_sgemm_over_kiln", mr / mk, "ratio");
    } else {
      snprintf(name, sizeof name, "gemm_%d_raw_over_kiln", n);
      bench_metric(name, mr / mk, "ratio");
    }
  }
  return 0;
}
