/* add, mul and relu on 16 M float32 through kiln (a new output per call, as
 * a user's eager code does) against a plain C loop built -O3 -march=native
 * writing into a preallocated buffer, and against numpy (Debian's
 * python3-numpy, run from this process so both are measured in the same
 * run). Figures: plain/kiln and numpy/kiln time ratios (>= 1: kiln faster). */
#include <string.h>

#include "bench_common.h"
#include "kiln.h"

void plain_add(int64_t n, const float *a, const float *b, float *out);
void plain_mul(int64_t n, const float *a, const float *b, float *out);
void plain_relu(int64_t n, const float *a, float *out);

enum { N = 16 * 1024 * 1024, REPS = 15 };

static double numpy_seconds(const char *op) {
  static char lines[3][64];
  static int loaded;
  if (!loaded) {
    loaded = 1;
    char cmd[512];
    snprintf(cmd, sizeof cmd, "/usr/bin/python3 %s/elementwise_numpy.py %d %d", KILN_BENCH_DIR, N, REPS);
    FILE *p = popen(cmd, "r");
    for (int i = 0; p && i < 3 && fgets(lines[i], sizeof lines[i], p); i++) {
    }
    if (p) pclose(p);
  }
  for (int i = 0; i < 3; i++) {
    char name[16];
    double s;
    if (sscanf(lines[i], "%15s %lf", name, &s) == 2 && strcmp(name, op) == 0) return s;
  }
  return 0;
}

int main(void) {
  kiln_seed(3);
  kiln_tensor *a = kiln_random_uniform(NULL, -1, 1, KILN_F32, 1, (int64_t[]){N});
  kiln_tensor *b = kiln_random_uniform(NULL, -1, 1, KILN_F32, 1, (int64_t[]){N});
  float *ra = malloc(sizeof(float) * N), *rb = malloc(sizeof(float) * N), *out = malloc(sizeof(float) * N);
  kiln_tensor_copy_to(a, ra, sizeof(float) * N);
  kiln_tensor_copy_to(b, rb, sizeof(float) * N);
  memset(out, 0, sizeof(float) * N);

  static const char *ops[] = {"add", "mul", "relu"};
  printf("%-6s %12s %12s %12s %10s %10s\n", "op", "plain C", "numpy", "kiln", "plain/kiln", "numpy/kiln");
  for (int o = 0; o < 3; o++) {
    double tp[REPS], tk[REPS];
    for (int r = -1; r < REPS; r++) { /* r = -1 warms up */
      /* Alternate which side runs first, so neither always inherits the
       * other's cache state. */
      double plain_s = 0, kiln_s = 0;
      for (int side = 0; side < 2; side++) {
        if ((side == 0) == (r % 2 == 0)) {
          double t0 = bench_now();
          if (o == 0) plain_add(N, ra, rb, out);
          if (o == 1) plain_mul(N, ra, rb, out);
          if (o == 2) plain_relu(N, ra, out);
          plain_s = bench_now() - t0;
        } else {
          double t0 = bench_now();
          kiln_tensor *y = o == 0 ? kiln_add(a, b) : o == 1 ? kiln_mul(a, b) : kiln_relu(a);
          kiln_s = bench_now() - t0;
          if (kiln_tensor_status(y) != KILN_OK) {
            fprintf(stderr, "bench_elementwise: %s\n", kiln_tensor_error(y));
            return 1;
          }
          kiln_tensor_release(y);
        }
      }
      if (r >= 0) tp[r] = plain_s, tk[r] = kiln_s;
    }
    double mp = bench_median(tp, REPS), mk = bench_median(tk, REPS), mn = numpy_seconds(ops[o]);
    printf("%-6s %9.2f ms %9.2f ms %9.2f ms %10.3f %10.3f\n", ops[o], mp * 1e3, mn * 1e3, mk * 1e3, mp / mk, mn / mk);
    char name[64];
    snprintf(name, sizeof name, "%s_16M_plain_over_kiln", ops[o]);
    bench_metric(name, mp / mk, "ratio");
    snprintf(name, sizeof name, "%s_16M_numpy_over_kiln", ops[o]);
    if (mn > 0) bench_metric(name, mn / mk, "ratio");
  }
  kiln_tensor_release(a);
  kiln_tensor_release(b);
  free(ra);
  free(rb);
  free(out);
  return 0;
}
