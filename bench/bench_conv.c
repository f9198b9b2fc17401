/* conv2d forward on LeNet's shapes at batch 256 through kiln against
 * PyTorch (Debian's python3-torch) at the same thread count, run from this
 * process so both are measured in the same run. Figures: torch/kiln time
 * ratio per layer (>= 1: kiln as fast or faster) and kiln's milliseconds.
 *
 * Then 2x2 max and average pooling, forward and backward, on LeNet's two
 * pooled activations at batch 256, at 1 and 2 threads: kiln's thread pool
 * takes its size once per process, so kiln's side runs in child processes
 * of this binary (`--pool`) under KILN_NUM_THREADS, beside its PyTorch peer
 * at the same count. The backwards are the gradient ops as autograd calls
 * them. */
#include <stdbool.h>
#include <string.h>
#include <unistd.h>

#include "bench_common.h"
#include "imperative/dispatch.h"
#include "kiln.h"
#include "ops/nn_grad.h"

enum { REPS = 21, CALLS = 10, THREADS = 2 };

typedef struct {
  const char *name;
  int64_t c, hw, o, pad;
} conv_case;

static double torch_seconds(const char *name) {
  static char lines[2][64];
  static int loaded;
  if (!loaded) {
    loaded = 1;
    char cmd[512];
    snprintf(cmd, sizeof cmd, "/usr/bin/python3 %s/conv_torch.py %d %d %d", KILN_BENCH_DIR, THREADS, REPS, CALLS);
    FILE *p = popen(cmd, "r");
    for (int i = 0; p && i < 2 && fgets(lines[i], sizeof lines[i], p); i++) {
    }
    if (p) pclose(p);
  }
  for (int i = 0; i < 2; i++) {
    char n[16];
    double s;
    if (sscanf(lines[i], "%15s %lf", n, &s) == 2 && strcmp(n, name) == 0) return s;
  }
  return 0;
}

/* ------------------------------------------------------------ pooling */

enum { POOL_OPS = 8 };
static const char *const pool_names[POOL_OPS] = {"pool1_max_fwd", "pool1_max_bwd", "pool1_avg_fwd",
                                                 "pool1_avg_bwd", "pool2_max_fwd", "pool2_max_bwd",
                                                 "pool2_avg_fwd", "pool2_avg_bwd"};

/* Reads `name seconds` lines from cmd into sec[] by pool_names' order (0
 * where missing). False when the command fails. */
static bool read_pool_seconds(const char *cmd, double sec[POOL_OPS]) {
  for (int i = 0; i < POOL_OPS; i++) sec[i] = 0;
  fflush(stdout);
  FILE *p = popen(cmd, "r");
  if (!p) return false;
  char line[256];
  while (fgets(line, sizeof line, p)) {
    char n[32];
    double v;
    if (sscanf(line, "%31s %lf", n, &v) != 2) continue;
    for (int i = 0; i < POOL_OPS; i++)
      if (strcmp(n, pool_names[i]) == 0) sec[i] = v;
  }
  return pclose(p) == 0;
}

/* One call of pool op i (pool_names' order), waiting for its result as
 * PyTorch's eager calls do. Negative on failure. */
static double pool_call(int i, kiln_tensor *x, kiln_tensor *gy, const kiln_pool2d_params *p,
                        const kiln_attr_value *max_attrs, const kiln_attr_value *avg_attrs) {
  int which = i % 4;
  kiln_tensor *r = which == 0   ? kiln_max_pool2d(x, p)
                   : which == 1 ? nn_pool2d_backward(KILN_OP_MAX_POOL2D, gy, x, max_attrs)
                   : which == 2 ? kiln_avg_pool2d(x, p)
                                : nn_pool2d_backward(KILN_OP_AVG_POOL2D, gy, x, avg_attrs);
  kiln_status st = kiln_tensor_status(r);
  if (st != KILN_OK) fprintf(stderr, "bench_conv: %s\n", kiln_tensor_error(r));
  kiln_tensor_release(r);
  return st == KILN_OK ? 0 : -1;
}

/* The child: kiln's median seconds per call of each pool op, as `name
 * seconds` lines, timed as the convolutions are. */
static int pool_child(void) {
  static const int64_t chans[2] = {6, 16}, sides[2] = {28, 10};
  kiln_seed(6);
  kiln_pool2d_params p = kiln_pool2d_params_default(2, 2);
  kiln_attr_value max_attrs[KILN_MAX_ATTRS], avg_attrs[KILN_MAX_ATTRS];
  kiln_attrs_default(KILN_OP_MAX_POOL2D, max_attrs);
  kiln_attrs_default(KILN_OP_AVG_POOL2D, avg_attrs);
  kiln_attr_set_ints(&max_attrs[0], 2, p.kernel);
  kiln_attr_set_ints(&avg_attrs[0], 2, p.kernel);
  for (int s = 0; s < 2; s++) {
    int64_t c = chans[s], hw = sides[s];
    kiln_tensor *x = kiln_random_normal(NULL, 0, 1, KILN_F32, 4, (int64_t[]){256, c, hw, hw});
    kiln_tensor *gy = kiln_random_normal(NULL, 0, 1, KILN_F32, 4, (int64_t[]){256, c, hw / 2, hw / 2});
    for (int i = 4 * s; i < 4 * s + 4; i++) {
      double t[REPS];
      for (double start = bench_now(); bench_now() - start < 0.1;)
        if (pool_call(i, x, gy, &p, max_attrs, avg_attrs) < 0) return 1;
      for (int r = 0; r < REPS; r++) {
        double t0 = bench_now();
        for (int k = 0; k < CALLS; k++)
          if (pool_call(i, x, gy, &p, max_attrs, avg_attrs) < 0) return 1;
        t[r] = (bench_now() - t0) / CALLS;
      }
      printf("%s %.9g\n", pool_names[i], bench_median(t, REPS));
    }
    kiln_tensor_release(x);
    kiln_tensor_release(gy);
  }
  return 0;
}

/* For each thread count: the PyTorch peer, then kiln in a child process on
 * its default engine and in another on the naive engine (each op runs in
 * the calling thread), which shows what the hand-off to the engine's worker
 * and back costs these short ops. */
static int pool_bench(void) {
  char self[4096], cmd[8192];
  ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
  if (n <= 0) {
    fprintf(stderr, "bench_conv: cannot find this binary's path\n");
    return 1;
  }
  self[n] = '\0';
  printf("\n%-14s %7s %10s %10s %10s %12s %10s\n", "pool 2x2", "threads", "torch", "kiln", "torch/kiln",
         "kiln naive", "torch/kn");
  for (int threads = 1; threads <= THREADS; threads++) {
    double torch[POOL_OPS], kiln[POOL_OPS], naive[POOL_OPS];
    snprintf(cmd, sizeof cmd, "/usr/bin/python3 %s/conv_torch.py %d %d %d pool", KILN_BENCH_DIR, threads, REPS,
             CALLS);
    read_pool_seconds(cmd, torch);
    snprintf(cmd, sizeof cmd, "env -u KILN_ENGINE -u KILN_ENGINE_WORKERS KILN_NUM_THREADS=%d '%s' --pool", threads,
             self);
    if (!read_pool_seconds(cmd, kiln)) return 1;
    snprintf(cmd, sizeof cmd, "env -u KILN_ENGINE_WORKERS KILN_ENGINE=naive KILN_NUM_THREADS=%d '%s' --pool",
             threads, self);
    if (!read_pool_seconds(cmd, naive)) return 1;
    for (int i = 0; i < POOL_OPS; i++) {
      double mt = torch[i], mk = kiln[i], mn = naive[i];
      printf("%-14s %7d %7.3f ms %7.3f ms %10.3f %9.3f ms %10.3f\n", pool_names[i], threads, mt * 1e3, mk * 1e3,
             mt > 0 ? mt / mk : 0, mn * 1e3, mt > 0 ? mt / mn : 0);
      char metric[96];
      snprintf(metric, sizeof metric, "%s_b256_t%d_kiln_ms", pool_names[i], threads);
      bench_metric(metric, mk * 1e3, "ms");
      snprintf(metric, sizeof metric, "%s_b256_t%d_kiln_naive_ms", pool_names[i], threads);
      bench_metric(metric, mn * 1e3, "ms");
      if (mt > 0) {
        snprintf(metric, sizeof metric, "%s_b256_t%d_torch_over_kiln", pool_names[i], threads);
        bench_metric(metric, mt / mk, "ratio");
        snprintf(metric, sizeof metric, "%s_b256_t%d_torch_over_kiln_naive", pool_names[i], threads);
        bench_metric(metric, mt / mn, "ratio");
      }
    }
  }
  return 0;
}

int main(int argc, char **argv) {
  if (argc == 2 && strcmp(argv[1], "--pool") == 0) return pool_child();
  if (argc > 1) {
    fprintf(stderr, "usage: bench_conv [--pool]\n");
    return 2;
  }
  static const conv_case cases[] = {{"conv1", 1, 28, 6, 2}, {"conv2", 6, 14, 16, 0}};
  kiln_seed(5);
  torch_seconds("conv1"); /* the peer first, while this process is idle */
  printf("%-6s %12s %12s %10s\n", "layer", "torch", "kiln", "torch/kiln");
  for (int i = 0; i < 2; i++) {
    const conv_case *cc = &cases[i];
    kiln_tensor *x = kiln_random_normal(NULL, 0, 1, KILN_F32, 4, (int64_t[]){256, cc->c, cc->hw, cc->hw});
    kiln_tensor *w = kiln_random_normal(NULL, 0, 1, KILN_F32, 4, (int64_t[]){cc->o, cc->c, 5, 5});
    kiln_tensor *b = kiln_random_normal(NULL, 0, 1, KILN_F32, 1, (int64_t[]){cc->o});
    kiln_conv2d_params p = kiln_conv2d_params_default();
    p.padding[0] = p.padding[1] = cc->pad;
    double t[REPS];
    /* Warm up for 0.3 s: caches, the pool's threads, and the start-up spin
     * of OpenBLAS's idle threads (about 0.1 s after the process starts),
     * which this benchmark is not about. Each call is waited for: the
     * engine queues ops without bound, and 0.3 s of queued outputs took all
     * of the machine's memory. */
    for (double start = bench_now(); bench_now() - start < 0.3;) {
      kiln_tensor *y = kiln_conv2d(x, w, b, &p);
      kiln_tensor_status(y);
      kiln_tensor_release(y);
    }
    /* Each sample is CALLS back-to-back calls, as a training loop makes
     * them; the figure is the median sample over CALLS. */
    for (int r = 0; r < REPS; r++) {
      double t0 = bench_now();
      for (int c = 0; c < CALLS; c++) {
        kiln_tensor *y = kiln_conv2d(x, w, b, &p);
        if (kiln_tensor_status(y) != KILN_OK) {
          fprintf(stderr, "bench_conv: %s\n", kiln_tensor_error(y));
          return 1;
        }
        kiln_tensor_release(y);
      }
      t[r] = (bench_now() - t0) / CALLS;
    }
    double mk = bench_median(t, REPS), mt = torch_seconds(cc->name);
    printf("%-6s %9.3f ms %9.3f ms %10.3f\n", cc->name, mt * 1e3, mk * 1e3, mt > 0 ? mt / mk : 0);
    char name[64];
    snprintf(name, sizeof name, "%s_b256_kiln_ms", cc->name);
    bench_metric(name, mk * 1e3, "ms");
    snprintf(name, sizeof name, "%s_b256_torch_over_kiln", cc->name);
    if (mt > 0) bench_metric(name, mt / mk, "ratio");
    kiln_tensor_release(x);
    kiln_tensor_release(w);
    kiln_tensor_release(b);
  }
  return pool_bench();
}
