/* The dependency engine: its own overhead, and what it does for eager code.
 *
 *  1. Empty ops: N pushes of a function that returns at once, from one
 *     thread, then wait_all; per op. Explicit engines: threaded with 1 and 2
 *     workers, and naive. Each op writes one of 1024 variables round-robin
 *     ("rr"), or a variable of its own ("indep").
 *  2. d2l 13.2: 10 000 x (y = x + 1) on 100 floats, waiting after each op vs
 *     once at the end, under KILN_ENGINE=threaded and naive.
 *  3. d2l 13.3: two independent chains of 20 GEMMs 512x512, 2 engine workers
 *     with serial kernels vs 1 worker with serial kernels.
 *  4. The split of a 2-thread budget: 1 worker + a 2-participant pool vs 2
 *     workers + serial kernels, on small ops (4 chains, 20 000 ops on 1 000
 *     floats), one GEMM chain and the two chains of 3; 1 worker with serial
 *     kernels and naive mode with a 2-participant pool for reference.
 *  5. add, mul, relu on 16 M floats (as bench_elementwise: a new output per
 *     call, then wait for it) under the threaded engine vs naive.
 *
 * The default engine is fixed for a process's life, so 2-5 run in child
 * processes of this binary (`bench_engine --chapter|--split|--elementwise`;
 * `--empty` runs part 1 alone, for a profiler)
 * with the environment set; each configuration runs twice (part 5: four
 * times), alternating, and the parent takes the median of all their samples.
 *
 * Each part ends with the share of the CPUs that other processes used while
 * it ran (from /proc/stat less this process and its children): figures taken
 * beside a busy neighbour are not this machine's. */
#include <stdbool.h>
#include <stdint.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "bench_common.h"
#include "kiln.h"

/* ------------------------------------------------------------ helpers */

static void check(kiln_status st, const char *what) {
  if (st != KILN_OK) {
    fprintf(stderr, "bench_engine: %s: %s\n", what, kiln_last_error());
    exit(1);
  }
}

static kiln_tensor *checked(kiln_tensor *t, const char *what) {
  if (!t) {
    fprintf(stderr, "bench_engine: %s: %s\n", what, kiln_last_error());
    exit(1);
  }
  return t;
}

/* A child's sample: the parent collects these lines. */
static void sample(const char *key, double seconds) {
  printf("sample %s %.9g\n", key, seconds);
  fflush(stdout);
}

/* ------------------------------------------------------------ the machine's other load */

/* CPU seconds the whole machine spent busy (steal included), or -1. */
static double machine_busy_seconds(void) {
  FILE *f = fopen("/proc/stat", "r");
  if (!f) return -1;
  unsigned long long v[8] = {0};
  int n = fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2], &v[3], &v[4], &v[5], &v[6],
                 &v[7]);
  fclose(f);
  if (n < 8) return -1;
  /* user nice system idle iowait irq softirq steal */
  return (double)(v[0] + v[1] + v[2] + v[5] + v[6] + v[7]) / (double)sysconf(_SC_CLK_TCK);
}

static double own_cpu_seconds(void) {
  double s = 0;
  int who[2] = {RUSAGE_SELF, RUSAGE_CHILDREN};
  for (int i = 0; i < 2; i++) {
    struct rusage u;
    if (getrusage(who[i], &u) == 0)
      s += (double)u.ru_utime.tv_sec + (double)u.ru_utime.tv_usec * 1e-6 + (double)u.ru_stime.tv_sec +
           (double)u.ru_stime.tv_usec * 1e-6;
  }
  return s;
}

typedef struct {
  double wall, busy, own;
} load_mark;

static load_mark load_start(void) { return (load_mark){bench_now(), machine_busy_seconds(), own_cpu_seconds()}; }

/* The share of all CPUs that other processes used since m (0..1), or -1. */
static double foreign_share(load_mark m) {
  double busy = machine_busy_seconds(), wall = bench_now() - m.wall;
  long cpus = sysconf(_SC_NPROCESSORS_ONLN);
  if (busy < 0 || m.busy < 0 || wall <= 0 || cpus < 1) return -1;
  double share = ((busy - m.busy) - (own_cpu_seconds() - m.own)) / (wall * (double)cpus);
  return share < 0 ? 0 : share;
}

static void print_load(load_mark m) {
  double share = foreign_share(m);
  if (share >= 0) printf("  (other processes used %.0f%% of the CPUs meanwhile)\n", share * 100);
}

/* ------------------------------------------------------------ 1. empty ops */

enum { EMPTY_N = 200000, EMPTY_VARS = 1024, EMPTY_REPS = 7 };

static kiln_status empty_fn(void *data) {
  (void)data;
  return KILN_OK;
}

/* Median seconds per op of EMPTY_N pushes + wait_all; *lo and *hi get the
 * fastest and slowest run. */
static double empty_op_seconds(kiln_engine_mode mode, int workers, bool independent, double *lo, double *hi) {
  kiln_engine_params p = {mode, workers, workers > 0 ? workers : 1};
  kiln_engine *e = kiln_engine_new(&p);
  if (!e) {
    fprintf(stderr, "bench_engine: kiln_engine_new: %s\n", kiln_last_error());
    exit(1);
  }
  int nv = independent ? EMPTY_N : EMPTY_VARS;
  kiln_engine_var **vars = malloc(sizeof *vars * (size_t)nv);
  for (int i = 0; i < nv; i++)
    if (!(vars[i] = kiln_engine_new_var(e))) check(KILN_ERR_OUT_OF_MEMORY, "kiln_engine_new_var");
  double t[EMPTY_REPS];
  for (int r = -1; r < EMPTY_REPS; r++) { /* r = -1 warms the engine's pools */
    double t0 = bench_now();
    for (int i = 0; i < EMPTY_N; i++)
      check(kiln_engine_push(e, empty_fn, NULL, NULL, NULL, 0, &vars[i % nv], 1, "empty", 0), "kiln_engine_push");
    check(kiln_engine_wait_all(e), "kiln_engine_wait_all");
    if (r >= 0) t[r] = bench_now() - t0;
  }
  for (int i = 0; i < nv; i++) check(kiln_engine_delete_var(e, vars[i], NULL, NULL), "kiln_engine_delete_var");
  free(vars);
  kiln_engine_free(e);
  double med = bench_median(t, EMPTY_REPS); /* sorts t */
  *lo = t[0] / EMPTY_N;
  *hi = t[EMPTY_REPS - 1] / EMPTY_N;
  return med / EMPTY_N;
}

static void run_empty_ops(void) {
  static const struct {
    const char *name;
    kiln_engine_mode mode;
    int workers;
  } cfg[] = {{"w1", KILN_ENGINE_THREADED, 1}, {"w2", KILN_ENGINE_THREADED, 2}, {"naive", KILN_ENGINE_NAIVE, 0}};
  printf("1. empty op: %d pushes from one thread + wait_all, per op (median of %d)\n", EMPTY_N, EMPTY_REPS);
  printf("%-8s %28s %28s\n", "engine", "1024 vars rr (min-max)", "independent (min-max)");
  double us[3][2];
  for (int c = 0; c < 3; c++) {
    printf("%-8s", cfg[c].name);
    for (int k = 0; k < 2; k++) {
      double lo, hi;
      us[c][k] = empty_op_seconds(cfg[c].mode, cfg[c].workers, k == 1, &lo, &hi) * 1e6;
      printf(" %9.3f us (%5.3f-%5.3f)", us[c][k], lo * 1e6, hi * 1e6);
    }
    printf("\n");
  }
  for (int c = 0; c < 3; c++) {
    char name[64];
    snprintf(name, sizeof name, "engine_empty_op_us_%s", cfg[c].name);
    bench_metric(name, us[c][0], "us");
    snprintf(name, sizeof name, "engine_empty_op_indep_us_%s", cfg[c].name);
    bench_metric(name, us[c][1], "us");
  }
}

/* ------------------------------------------------------------ children */

enum { CHAPTER_ITERS = 10000, CHAPTER_REPS = 5 };

/* d2l 13.2: y = x + 1, waiting after each op or once at the end. */
static int child_chapter(void) {
  kiln_seed(1);
  kiln_tensor *x = checked(kiln_random_uniform(NULL, -1, 1, KILN_F32, 1, (int64_t[]){100}), "random");
  check(kiln_waitall(), "kiln_waitall");
  for (int r = -1; r < CHAPTER_REPS; r++) {
    for (int side = 0; side < 2; side++) {
      bool sync = (side == 0) == (r % 2 == 0); /* alternate which goes first */
      double t0 = bench_now();
      for (int i = 0; i < CHAPTER_ITERS; i++) {
        kiln_tensor *y = checked(kiln_add_scalar(x, 1), "kiln_add_scalar");
        if (sync) check(kiln_wait_to_read(y), "kiln_wait_to_read");
        kiln_tensor_release(y);
      }
      check(kiln_waitall(), "kiln_waitall");
      double s = bench_now() - t0;
      if (r >= 0) sample(sync ? "chapter_sync" : "chapter_async", s);
    }
  }
  kiln_tensor_release(x);
  return 0;
}

enum { SMALL_CHAINS = 4, SMALL_OPS = 20000, SMALL_N = 1000, GEMM_N = 512, GEMM_STEPS = 20, SPLIT_REPS = 5 };

/* 4 independent chains of elementwise ops on 1 000 floats, 20 000 ops in
 * all, pushed round-robin over the chains, then waitall. */
static double small_ops_seconds(kiln_tensor *const *x0) {
  kiln_tensor *x[SMALL_CHAINS];
  for (int c = 0; c < SMALL_CHAINS; c++) x[c] = kiln_tensor_retain(x0[c]);
  double t0 = bench_now();
  for (int i = 0; i < SMALL_OPS / SMALL_CHAINS; i++) {
    for (int c = 0; c < SMALL_CHAINS; c++) {
      kiln_tensor *y = checked(i % 2 ? kiln_mul_scalar(x[c], 0.5) : kiln_add_scalar(x[c], 1), "small op");
      kiln_tensor_release(x[c]);
      x[c] = y;
    }
  }
  check(kiln_waitall(), "kiln_waitall");
  double s = bench_now() - t0;
  for (int c = 0; c < SMALL_CHAINS; c++) kiln_tensor_release(x[c]);
  return s;
}

/* n independent chains c <- c . w of GEMM_STEPS steps, pushed step by step
 * across the chains, then waitall. */
static double gemm_chains_seconds(int n, kiln_tensor *const *x0, kiln_tensor *const *w) {
  kiln_tensor *c[2];
  for (int k = 0; k < n; k++) c[k] = kiln_tensor_retain(x0[k]);
  double t0 = bench_now();
  for (int i = 0; i < GEMM_STEPS; i++) {
    for (int k = 0; k < n; k++) {
      kiln_tensor *y = checked(kiln_matmul(c[k], w[k]), "kiln_matmul");
      kiln_tensor_release(c[k]);
      c[k] = y;
    }
  }
  check(kiln_waitall(), "kiln_waitall");
  double s = bench_now() - t0;
  for (int k = 0; k < n; k++) {
    check(kiln_tensor_status(c[k]), "gemm chain");
    kiln_tensor_release(c[k]);
  }
  return s;
}

static int child_split(void) {
  kiln_seed(2);
  kiln_tensor *xs[SMALL_CHAINS], *xg[2], *w[2];
  for (int c = 0; c < SMALL_CHAINS; c++)
    xs[c] = checked(kiln_random_uniform(NULL, -1, 1, KILN_F32, 1, (int64_t[]){SMALL_N}), "random");
  /* Uniform in +-sqrt(3/512) keeps the chain's variance: no overflow or
   * denormals after 20 steps. */
  double b = 0.0765;
  for (int k = 0; k < 2; k++) {
    xg[k] = checked(kiln_random_uniform(NULL, -1, 1, KILN_F32, 2, (int64_t[]){GEMM_N, GEMM_N}), "random");
    w[k] = checked(kiln_random_uniform(NULL, -b, b, KILN_F32, 2, (int64_t[]){GEMM_N, GEMM_N}), "random");
  }
  check(kiln_waitall(), "kiln_waitall");
  for (int r = -1; r < SPLIT_REPS; r++) {
    double s1 = small_ops_seconds(xs);
    double s2 = gemm_chains_seconds(1, xg, w);
    double s3 = gemm_chains_seconds(2, xg, w);
    if (r >= 0) {
      sample("small_ops", s1);
      sample("gemm_chain", s2);
      sample("gemm_two_chains", s3);
    }
  }
  for (int c = 0; c < SMALL_CHAINS; c++) kiln_tensor_release(xs[c]);
  for (int k = 0; k < 2; k++) kiln_tensor_release(xg[k]), kiln_tensor_release(w[k]);
  return 0;
}

enum { EW_N = 16 * 1024 * 1024, EW_REPS = 8, EW_ROUNDS = 4 };

/* As bench_elementwise: a new output per call, released after; timed up to
 * the moment its value can be read. */
static int child_elementwise(void) {
  kiln_seed(3);
  kiln_tensor *a = checked(kiln_random_uniform(NULL, -1, 1, KILN_F32, 1, (int64_t[]){EW_N}), "random");
  kiln_tensor *b = checked(kiln_random_uniform(NULL, -1, 1, KILN_F32, 1, (int64_t[]){EW_N}), "random");
  check(kiln_waitall(), "kiln_waitall");
  static const char *ops[] = {"add", "mul", "relu"};
  for (int o = 0; o < 3; o++) {
    for (int r = -1; r < EW_REPS; r++) {
      double t0 = bench_now();
      kiln_tensor *y = checked(o == 0 ? kiln_add(a, b) : o == 1 ? kiln_mul(a, b) : kiln_relu(a), ops[o]);
      check(kiln_wait_to_read(y), ops[o]);
      double s = bench_now() - t0;
      kiln_tensor_release(y);
      if (r >= 0) sample(ops[o], s);
    }
  }
  kiln_tensor_release(a);
  kiln_tensor_release(b);
  return 0;
}

/* ------------------------------------------------------------ the parent's side of the children */

enum { MAX_KEYS = 16, MAX_SAMPLES = 64 };

typedef struct {
  int n_keys;
  struct {
    char key[32];
    double v[MAX_SAMPLES];
    int n;
  } k[MAX_KEYS];
} samples;

static char self_path[4096];

/* Runs this binary with `arg` under the given environment (NAME=VALUE
 * words; the engine variables not given are unset) and adds its samples. */
static void run_child(const char *env, const char *arg, samples *out) {
  char cmd[8192];
  snprintf(cmd, sizeof cmd, "env -u KILN_ENGINE -u KILN_ENGINE_WORKERS -u KILN_NUM_THREADS %s '%s' %s", env, self_path,
           arg);
  FILE *p = popen(cmd, "r");
  if (!p) {
    fprintf(stderr, "bench_engine: cannot run %s\n", cmd);
    exit(1);
  }
  char line[256];
  while (fgets(line, sizeof line, p)) {
    char key[32];
    double v;
    if (sscanf(line, "sample %31s %lf", key, &v) != 2) {
      fputs(line, stdout);
      continue;
    }
    int i = 0;
    while (i < out->n_keys && strcmp(out->k[i].key, key) != 0) i++;
    if (i == out->n_keys) {
      if (i == MAX_KEYS) continue;
      out->n_keys++;
      snprintf(out->k[i].key, sizeof out->k[i].key, "%s", key);
      out->k[i].n = 0;
    }
    if (out->k[i].n < MAX_SAMPLES) out->k[i].v[out->k[i].n++] = v;
  }
  int rc = pclose(p);
  if (rc != 0) {
    fprintf(stderr, "bench_engine: `%s` failed (status %d)\n", cmd, rc);
    exit(1);
  }
}

static double median_of(samples *s, const char *key) {
  for (int i = 0; i < s->n_keys; i++)
    if (strcmp(s->k[i].key, key) == 0) return bench_median(s->k[i].v, s->k[i].n);
  fprintf(stderr, "bench_engine: no samples of %s\n", key);
  exit(1);
}

/* Each configuration runs `rounds` times, configurations alternating. */
static void run_configs(int n, const char *const *envs, const char *arg, samples *out, int rounds) {
  for (int r = 0; r < rounds; r++)
    for (int c = 0; c < n; c++) run_child(envs[c], arg, &out[c]);
}

/* The metric named prefix + mid + suffix. */
static void metric3(const char *prefix, const char *mid, const char *suffix, double value, const char *unit) {
  char name[96];
  snprintf(name, sizeof name, "%s%s%s", prefix, mid, suffix);
  bench_metric(name, value, unit);
}

static void run_chapter(void) {
  static const char *const envs[] = {"KILN_ENGINE=threaded", "KILN_ENGINE=naive"};
  static const char *const names[] = {"threaded", "naive"};
  samples s[2] = {0};
  run_configs(2, envs, "--chapter", s, 2);
  printf("\n2. d2l 13.2: %d x (y = x + 1) on 100 floats, y released each time (median of %d)\n", CHAPTER_ITERS,
         2 * CHAPTER_REPS);
  printf("%-10s %14s %14s %12s\n", "engine", "wait each", "waitall once", "each/once");
  double sync[2], async[2];
  for (int c = 0; c < 2; c++) {
    sync[c] = median_of(&s[c], "chapter_sync");
    async[c] = median_of(&s[c], "chapter_async");
    printf("%-10s %11.2f ms %11.2f ms %12.3f\n", names[c], sync[c] * 1e3, async[c] * 1e3, sync[c] / async[c]);
  }
  for (int c = 0; c < 2; c++) {
    metric3("chapter_wait_each_ms_", names[c], "", sync[c] * 1e3, "ms");
    metric3("chapter_waitall_once_ms_", names[c], "", async[c] * 1e3, "ms");
    metric3("chapter_each_over_once_", names[c], "", sync[c] / async[c], "ratio");
  }
  bench_metric("chapter_waitall_once_threaded_over_naive", async[0] / async[1], "ratio");
}

static void run_split(void) {
  /* w1t1: 1 worker, serial kernels; w2t2: 2 workers, serial kernels (pool of
   * 1); w1t2: 1 worker, 2-participant pool; naive: the pushing thread runs
   * each op at once, 2-participant pool. */
  static const char *const envs[] = {"KILN_ENGINE_WORKERS=1 KILN_NUM_THREADS=1",
                                     "KILN_ENGINE_WORKERS=2 KILN_NUM_THREADS=2",
                                     "KILN_ENGINE_WORKERS=1 KILN_NUM_THREADS=2", "KILN_ENGINE=naive KILN_NUM_THREADS=2"};
  static const char *const names[] = {"w1t1", "w2t2", "w1t2", "naive"};
  samples s[4] = {0};
  run_configs(4, envs, "--split", s, 2);
  double t[4][3];
  static const char *const work[] = {"small_ops", "gemm_chain", "gemm_two_chains"};
  for (int c = 0; c < 4; c++)
    for (int j = 0; j < 3; j++) t[c][j] = median_of(&s[c], work[j]);

  printf("\n3. d2l 13.3: two independent chains of %d GEMMs %dx%d (median of %d)\n", GEMM_STEPS, GEMM_N, GEMM_N,
         2 * SPLIT_REPS);
  printf("  1 worker, serial kernels   %9.2f ms\n", t[0][2] * 1e3);
  printf("  2 workers, serial kernels  %9.2f ms   ratio %.3f (goal <= 0.6)\n", t[1][2] * 1e3, t[1][2] / t[0][2]);
  bench_metric("autopar_two_chains_ms_w1t1", t[0][2] * 1e3, "ms");
  bench_metric("autopar_two_chains_ms_w2t2", t[1][2] * 1e3, "ms");
  bench_metric("autopar_two_chains_w2t2_over_w1t1", t[1][2] / t[0][2], "ratio");

  printf("\n4. a budget of 2 threads: (a) 1 worker + 2-participant pool vs (b) 2 workers + serial kernels\n");
  printf("%-28s %11s %11s %11s %11s %7s %7s\n", "workload", "(a) w1t2", "(b) w2t2", "w1t1", "naive t2", "b/a",
         "faster");
  static const char *const label[] = {"20000 small ops, 4 chains", "1 chain, 20 GEMMs 512",
                                      "2 chains, 20 GEMMs 512 each"};
  for (int j = 0; j < 3; j++) {
    double a = t[2][j], b = t[1][j];
    printf("%-28s %8.2f ms %8.2f ms %8.2f ms %8.2f ms %7.3f %7s\n", label[j], a * 1e3, b * 1e3, t[0][j] * 1e3,
           t[3][j] * 1e3, b / a, b < a ? "(b)" : "(a)");
  }
  for (int j = 0; j < 3; j++) {
    for (int c = 0; c < 4; c++) {
      char name[96];
      snprintf(name, sizeof name, "split_%s_ms_%s", work[j], names[c]);
      bench_metric(name, t[c][j] * 1e3, "ms");
    }
    metric3("split_", work[j], "_w2t2_over_w1t2", t[1][j] / t[2][j], "ratio");
    metric3("split_", work[j], "_faster_workers", t[1][j] < t[2][j] ? 2 : 1, "workers");
  }
}

static void run_elementwise(void) {
  static const char *const envs[] = {"KILN_ENGINE=threaded", "KILN_ENGINE=naive"};
  samples s[2] = {0};
  /* The ratio compares processes run at different times: alternate them
   * more often than the others, as the machine's speed drifts. */
  run_configs(2, envs, "--elementwise", s, EW_ROUNDS);
  printf("\n5. eager ops on 16 M floats, op + wait_to_read, default thread split (median of %d)\n",
         EW_ROUNDS * EW_REPS);
  printf("%-6s %12s %12s %14s\n", "op", "threaded", "naive", "threaded/naive");
  static const char *const ops[] = {"add", "mul", "relu"};
  double th[3], nv[3];
  for (int o = 0; o < 3; o++) {
    th[o] = median_of(&s[0], ops[o]);
    nv[o] = median_of(&s[1], ops[o]);
    printf("%-6s %9.2f ms %9.2f ms %14.3f\n", ops[o], th[o] * 1e3, nv[o] * 1e3, th[o] / nv[o]);
  }
  for (int o = 0; o < 3; o++) {
    metric3("eager_", ops[o], "_16M_ms_threaded", th[o] * 1e3, "ms");
    metric3("eager_", ops[o], "_16M_ms_naive", nv[o] * 1e3, "ms");
    metric3("eager_", ops[o], "_16M_threaded_over_naive", th[o] / nv[o], "ratio");
  }
}

int main(int argc, char **argv) {
  if (argc > 1) {
    if (strcmp(argv[1], "--chapter") == 0) return child_chapter();
    if (strcmp(argv[1], "--split") == 0) return child_split();
    if (strcmp(argv[1], "--elementwise") == 0) return child_elementwise();
    if (strcmp(argv[1], "--empty") == 0) { /* part 1 alone, to profile */
      run_empty_ops();
      return 0;
    }
    fprintf(stderr, "usage: bench_engine [--empty | --chapter | --split | --elementwise]\n");
    return 2;
  }
  ssize_t n = readlink("/proc/self/exe", self_path, sizeof self_path - 1);
  if (n <= 0) {
    fprintf(stderr, "bench_engine: cannot find this binary's path\n");
    return 1;
  }
  self_path[n] = '\0';
  load_mark all = load_start(), m = all;
  run_empty_ops();
  print_load(m);
  m = load_start();
  run_chapter();
  print_load(m);
  m = load_start();
  run_split();
  print_load(m);
  m = load_start();
  run_elementwise();
  print_load(m);
  printf("\n(total %.1f s)\n", bench_now() - all.wall);
  double share = foreign_share(all);
  if (share >= 0) bench_metric("engine_bench_foreign_cpu_share", share, "ratio");
  return 0;
}
