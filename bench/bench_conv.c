/* conv2d forward on LeNet's shapes at batch 256 through kiln against
 * PyTorch (Debian's python3-torch) at the same thread count, run from this
 * process so both are measured in the same run. Figures: torch/kiln time
 * ratio per layer (>= 1: kiln as fast or faster) and kiln's milliseconds. */
#include <string.h>
#include <unistd.h>

#include "bench_common.h"
#include "kiln.h"

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

int main(void) {
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
     * which this benchmark is not about. */
    for (double start = bench_now(); bench_now() - start < 0.3;) kiln_tensor_release(kiln_conv2d(x, w, b, &p));
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
  return 0;
}
