/* ONNX models through kiln and through ONNX Runtime, on one thread, in the
 * same run: d2l 13.1's MLP (512-256-128-2) and LeNet, as PyTorch 1.13
 * exported them (tests/fixtures/onnx_torch/, opset 17, dynamic batch), at
 * batch 1 and 256. The same .onnx files go to both:
 *
 *   kiln   kiln_model_load, then kiln_model_run, each run waited for
 *          (kiln_wait_to_read on its output) before the next;
 *   ort    onnxruntime-node's CPU build (bench/onnx_ort.js, a child
 *          process), intraOpNumThreads = interOpNumThreads = 1, sequential,
 *          graph optimisations on, each session.run awaited.
 *
 * Each figure is the median of the time per call over the rounds (of many
 * calls) of PASSES passes, ONNX Runtime's and kiln's taking turns (ONNX
 * Runtime first, while kiln has started no threads), so a slow spell of
 * this shared machine falls on both. Both get the same input,
 * x[i] = sin(0.001 i), and the sums of
 * their outputs must agree, so neither is timed computing something else.
 * Metrics: onnx_<model>_b<batch>_{kiln,ort} in µs and _kiln_over_ort; the
 * peer is skipped, saying so, when node or onnxruntime-node is missing
 * (scripts/bootstrap.sh --bench installs it into build/ort/).
 *
 * KILN_NUM_THREADS is set to 1 before kiln's first call: one engine worker
 * and a pool of one; OpenBLAS runs single-threaded inside kiln. */
#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bench_common.h"
#include "kiln.h"

enum { ROUNDS = 9, PASSES = 2, N_CASES = 4 };

static const struct {
  const char *model;
  int64_t batch;
  int calls; /* a round: tens of milliseconds on this machine */
  int ndim;
  int64_t dims[3]; /* after the batch */
} CASES[N_CASES] = {
    {"mlp", 1, 2000, 1, {512}},
    {"mlp", 256, 100, 1, {512}},
    {"lenet", 1, 500, 3, {1, 28, 28}},
    {"lenet", 256, 10, 3, {1, 28, 28}},
};

static void die(const char *what, const char *detail) {
  fprintf(stderr, "bench_onnx: %s: %s\n", what, detail);
  exit(1);
}

static void model_path(int c, char *buf, size_t cap) {
  snprintf(buf, cap, "%s/onnx_torch/%s_op17.onnx", KILN_FIXTURE_DIR, CASES[c].model);
}

/* Runs bench/onnx_ort.js; fills rounds[c][0..ROUNDS) and sums[c], and
 * returns false, having said why, when the peer cannot run. */
static bool run_ort(double rounds[N_CASES][ROUNDS], double *sums) {
  int n_rounds[N_CASES] = {0};
  for (int c = 0; c < N_CASES; c++) sums[c] = NAN;
  char modules[1100];
  snprintf(modules, sizeof modules, "%s/node_modules", KILN_ORT_DIR);
  char probe[1200];
  snprintf(probe, sizeof probe, "%s/onnxruntime-node/package.json", modules);
  if (access(probe, R_OK) != 0) {
    printf("ONNX Runtime peer skipped: %s not found (scripts/bootstrap.sh --bench installs it)\n", probe);
    return false;
  }
  char cmd[8192];
  int used = snprintf(cmd, sizeof cmd, "NODE_PATH='%s' node '%s/onnx_ort.js' %d", modules, KILN_BENCH_DIR, ROUNDS);
  for (int c = 0; c < N_CASES && used > 0 && (size_t)used < sizeof cmd; c++) {
    char path[1024], dims[64] = "";
    model_path(c, path, sizeof path);
    for (int d = 0; d < CASES[c].ndim; d++)
      snprintf(dims + strlen(dims), sizeof dims - strlen(dims), "%s%lld", d ? "," : "", (long long)CASES[c].dims[d]);
    used += snprintf(cmd + used, sizeof cmd - (size_t)used, " '%s:%s:%lld:%d:%s'", CASES[c].model, path,
                     (long long)CASES[c].batch, CASES[c].calls, dims);
  }
  if (used < 0 || (size_t)used + 8 >= sizeof cmd) die("the command for onnx_ort.js", "too long");
  strcat(cmd, " 2>&1");
  fflush(stdout);
  FILE *p = popen(cmd, "r");
  if (!p) die("popen", strerror(errno));
  char line[1024], last[1024] = "";
  int got = 0;
  while (fgets(line, sizeof line, p)) {
    if (strncmp(line, "onnx_ort_round ", 15) != 0) printf("  ort | %s", line);
    snprintf(last, sizeof last, "%s", line);
    char label[32];
    long long batch;
    double s, sum;
    if (sscanf(line, "onnx_ort_round %31s %lld %lf", label, &batch, &s) == 3) {
      for (int c = 0; c < N_CASES; c++)
        if (batch == CASES[c].batch && !strcmp(label, CASES[c].model) && n_rounds[c] < ROUNDS)
          rounds[c][n_rounds[c]++] = s;
    } else if (sscanf(line, "onnx_ort %31s %lld %lf %lf", label, &batch, &s, &sum) == 4) {
      for (int c = 0; c < N_CASES; c++)
        if (batch == CASES[c].batch && !strcmp(label, CASES[c].model) && isnan(sums[c])) sums[c] = sum, got++;
    }
  }
  int status = pclose(p);
  for (int c = 0; c < N_CASES; c++) got -= n_rounds[c] != ROUNDS;
  if (status != 0 || got != N_CASES) {
    last[strcspn(last, "\n")] = '\0';
    printf("ONNX Runtime peer skipped: onnx_ort.js %s (%s)\n",
           WIFEXITED(status) && WEXITSTATUS(status) == 0 ? "printed too few results" : "failed", last);
    return false;
  }
  return true;
}

static void check(kiln_status st, const char *what) {
  if (st != KILN_OK) die(what, kiln_last_error());
}

/* One call, waited for; returns the sum of the output when asked. */
static double kiln_call(kiln_model *m, kiln_tensor *x, bool sum) {
  kiln_tensor *y;
  check(kiln_model_run(m, 1, &x, &y), "kiln_model_run");
  check(kiln_wait_to_read(y), "kiln_wait_to_read");
  double s = 0;
  if (sum) {
    int64_t n = kiln_tensor_numel(y);
    float *v = malloc(sizeof(float) * (size_t)n);
    if (!v) die("malloc", "out of memory");
    check(kiln_tensor_copy_to(y, v, sizeof(float) * (size_t)n), "kiln_tensor_copy_to");
    for (int64_t i = 0; i < n; i++) s += v[i];
    free(v);
  }
  kiln_tensor_release(y);
  return s;
}

/* ROUNDS rounds of case c on kiln into t; returns the sum of the output. */
static double time_kiln(int c, kiln_model *m, double *t) {
  int64_t shape[4] = {CASES[c].batch}, n = CASES[c].batch;
  for (int d = 0; d < CASES[c].ndim; d++) shape[d + 1] = CASES[c].dims[d], n *= CASES[c].dims[d];
  float *data = malloc(sizeof(float) * (size_t)n);
  if (!data) die("malloc", "out of memory");
  for (int64_t i = 0; i < n; i++) data[i] = (float)sin(0.001 * (double)i);
  kiln_tensor *x = kiln_from_data(KILN_F32, CASES[c].ndim + 1, shape, data);
  free(data);
  check(kiln_tensor_status(x), "input");
  double sum = kiln_call(m, x, true);
  for (int i = 0; i < CASES[c].calls / 10 + 10; i++) kiln_call(m, x, false);
  for (int r = 0; r < ROUNDS; r++) {
    double t0 = bench_now();
    for (int i = 0; i < CASES[c].calls; i++) kiln_call(m, x, false);
    t[r] = (bench_now() - t0) / CASES[c].calls;
  }
  kiln_tensor_release(x);
  return sum;
}

static void metric(int c, const char *what, double value, const char *unit) {
  char name[96];
  snprintf(name, sizeof name, "onnx_%s_b%lld_%s", CASES[c].model, (long long)CASES[c].batch, what);
  bench_metric(name, value, unit);
}

int main(int argc, char **argv) {
  (void)argv;
  if (argc != 1) {
    fprintf(stderr, "usage: bench_onnx\n");
    return 2;
  }
  if (setenv("KILN_NUM_THREADS", "1", 1) != 0) die("setenv", strerror(errno));
  printf("d2l's MLP and LeNet from PyTorch-exported ONNX (opset 17), kiln against ONNX Runtime, 1 thread, median of "
         "%d rounds in %d passes\n",
         PASSES * ROUNDS, PASSES);
  static double ort_t[N_CASES][PASSES * ROUNDS], kiln_t[N_CASES][PASSES * ROUNDS];
  double ort[N_CASES], ort_sum[N_CASES], mine[N_CASES], mine_sum[N_CASES];
  kiln_model *models[N_CASES] = {0};
  bool have_ort = true;
  for (int pass = 0; pass < PASSES; pass++) {
    double peer[N_CASES][ROUNDS];
    have_ort = have_ort && run_ort(peer, ort_sum);
    for (int c = 0; have_ort && c < N_CASES; c++) memcpy(&ort_t[c][pass * ROUNDS], peer[c], sizeof peer[c]);
    for (int c = 0; c < N_CASES; c++) {
      char path[1024];
      model_path(c, path, sizeof path);
      if (!models[c] && !(models[c] = kiln_model_load(path))) die("kiln_model_load", kiln_last_error());
      mine_sum[c] = time_kiln(c, models[c], &kiln_t[c][pass * ROUNDS]);
    }
  }
  for (int c = 0; c < N_CASES; c++) {
    mine[c] = bench_median(kiln_t[c], PASSES * ROUNDS);
    ort[c] = have_ort ? bench_median(ort_t[c], PASSES * ROUNDS) : NAN;
    kiln_model_free(models[c]);
  }
  for (int c = 0; c < N_CASES; c++) {
    /* Sums of up to 2560 outputs below 1: float32 rounding in either
     * order stays far inside this. */
    if (have_ort && fabs(ort_sum[c] - mine_sum[c]) > 1e-3 * (1 + fabs(ort_sum[c])))
      die("outputs differ", "kiln and ONNX Runtime disagree on the same input");
    printf("%-5s batch %3lld: kiln %9.1f µs", CASES[c].model, (long long)CASES[c].batch, mine[c] * 1e6);
    if (have_ort) printf(", ONNX Runtime %9.1f µs, kiln/ORT %.2fx", ort[c] * 1e6, mine[c] / ort[c]);
    printf("\n");
  }
  for (int c = 0; c < N_CASES; c++) {
    metric(c, "kiln", mine[c] * 1e6, "us");
    if (!have_ort) continue;
    metric(c, "ort", ort[c] * 1e6, "us");
    metric(c, "kiln_over_ort", mine[c] / ort[c], "x");
  }
  check(kiln_waitall(), "wait");
  return 0;
}
