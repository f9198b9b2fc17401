/* Data parallelism (kiln 8/8, d2l 13.5-13.7): LeNet's Fashion-MNIST epoch
 * with 1 device vs 2 devices in one process, and 1 process vs 2 MPI ranks,
 * every worker set at 1 thread (KILN_NUM_THREADS=1); the share of a step
 * the ranks spend in the allreduce (from the engine profiler); and a model
 * of time per step at N machines, checked against the 2-rank run:
 *
 *   step(N) = compute(1) / N + allreduce(G, N),
 *   allreduce(G, N) = 2 (N - 1) / N * G / bandwidth + 2 (N - 1) * latency
 *
 * (a ring allreduce of the gradient bytes G), with bandwidth and latency
 * measured here by `bench_parallel --allreduce BYTES` under mpirun.
 *
 * The training runs are examples/train_fashion_mnist, as a user runs it,
 * with KILN_BENCH_PARALLEL_EPOCHS epochs (default 3; the figure is the
 * median epoch without the first, which pays for page faults and start-up). */
#include <ctype.h>
#include <math.h>
#include <string.h>
#include <unistd.h>

#include "bench_common.h"
#include "kiln.h"

#define MAX_EPOCHS 20

/* The median epoch (seconds column) of a train_fashion_mnist run, its last
 * test accuracy, and its number of steps per epoch. */
typedef struct {
  double seconds, test_acc;
  bool ok;
} run_result;

static run_result run_train(const char *cmd) {
  run_result r = {0, 0, false};
  FILE *p = popen(cmd, "r");
  if (!p) return r;
  double secs[MAX_EPOCHS];
  int n = 0;
  char line[512];
  while (fgets(line, sizeof line, p)) {
    int epoch;
    double loss, train_acc, test_acc, s, rate;
    if (sscanf(line, "%d %lf %lf %lf %lf %lf", &epoch, &loss, &train_acc, &test_acc, &s, &rate) == 6 && n < MAX_EPOCHS) {
      secs[n++] = s;
      r.test_acc = test_acc;
    }
  }
  r.ok = pclose(p) == 0 && n > 0;
  if (r.ok) r.seconds = n >= 3 ? bench_median(secs + 1, n - 1) : bench_median(secs, n);
  return r;
}

/* From rank 0's engine profile: the allreduce ops' time (µs), and how
 * much of it overlapped computation on the same process (the union of the
 * other ops' intervals, transfers and the store's own ops left out). */
typedef struct {
  double start, end;
} span;

static int span_cmp(const void *a, const void *b) {
  double x = ((const span *)a)->start, y = ((const span *)b)->start;
  return (x > y) - (x < y);
}

static bool allreduce_overlap(const char *path, int *count, double *total_us, double *overlapped_us) {
  FILE *f = fopen(path, "r");
  if (!f) return false;
  size_t n_ar = 0, n_c = 0, cap_ar = 1024, cap_c = 1 << 16;
  span *ar = malloc(sizeof *ar * cap_ar), *comp = malloc(sizeof *comp * cap_c);
  char line[1024];
  while (ar && comp && fgets(line, sizeof line, f)) {
    const char *name = strstr(line, "\"name\": \""), *ts = strstr(line, "\"ts\": "), *dur = strstr(line, "\"dur\": ");
    if (!name || !ts || !dur) continue;
    span sp = {atof(ts + 6), atof(ts + 6) + atof(dur + 7)};
    name += 9;
    if (!strncmp(name, "kvstore allreduce\"", 18)) {
      if (n_ar == cap_ar) ar = realloc(ar, sizeof *ar * (cap_ar *= 2));
      if (ar) ar[n_ar++] = sp;
    } else if (strncmp(name, "kvstore", 7) && strncmp(name, "to_device\"", 10)) {
      if (n_c == cap_c) comp = realloc(comp, sizeof *comp * (cap_c *= 2));
      if (comp) comp[n_c++] = sp;
    }
  }
  fclose(f);
  if (!ar || !comp) return false;
  qsort(comp, n_c, sizeof *comp, span_cmp);
  size_t m = 0; /* merge into a union of disjoint spans */
  for (size_t i = 0; i < n_c; i++) {
    if (m && comp[i].start <= comp[m - 1].end) {
      if (comp[i].end > comp[m - 1].end) comp[m - 1].end = comp[i].end;
    } else {
      comp[m++] = comp[i];
    }
  }
  *count = (int)n_ar;
  *total_us = *overlapped_us = 0;
  for (size_t i = 0; i < n_ar; i++) {
    *total_us += ar[i].end - ar[i].start;
    size_t lo = 0, hi = m; /* the first span ending after this one starts */
    while (lo < hi) {
      size_t mid = (lo + hi) / 2;
      if (comp[mid].end <= ar[i].start) lo = mid + 1;
      else hi = mid;
    }
    for (size_t k = lo; k < m && comp[k].start < ar[i].end; k++) {
      double a = comp[k].start > ar[i].start ? comp[k].start : ar[i].start;
      double b = comp[k].end < ar[i].end ? comp[k].end : ar[i].end;
      if (b > a) *overlapped_us += b - a;
    }
  }
  free(ar);
  free(comp);
  return true;
}

/* Under mpirun: the median time of an allreduce of `bytes` through the
 * "mpi" store (push and pull of one float32 key, waited for), rank 0
 * printing it. */
static int allreduce_probe(long bytes) {
  kiln_kvstore *kv = kiln_kvstore_new("mpi");
  if (!kv) {
    fprintf(stderr, "bench_parallel: %s\n", kiln_last_error());
    return 1;
  }
  int64_t n = bytes / 4 > 0 ? bytes / 4 : 1;
  kiln_tensor *g = kiln_ones(KILN_F32, 1, &n);
  int key = 0;
  kiln_kvstore_init(kv, key, g);
  enum { REPS = 41 };
  double t[REPS];
  for (int i = 0; i < REPS; i++) {
    double t0 = bench_now();
    kiln_kvstore_push(kv, 1, &key, 1, &g, 0);
    kiln_kvstore_pull(kv, 1, &key, 1, &g, 0);
    if (kiln_wait_to_read(g) != KILN_OK) {
      fprintf(stderr, "bench_parallel: %s\n", kiln_last_error());
      return 1;
    }
    t[i] = bench_now() - t0;
  }
  if (kiln_kvstore_rank(kv) == 0) printf("allreduce %ld %.9f\n", bytes, bench_median(t, REPS));
  kiln_tensor_release(g);
  kiln_kvstore_free(kv);
  return 0;
}

static double probe(const char *self, long bytes) {
  char cmd[1024];
  snprintf(cmd, sizeof cmd, "mpirun -np 2 %s --allreduce %ld", self, bytes);
  FILE *p = popen(cmd, "r");
  double secs = -1;
  char line[256];
  long b;
  while (p && fgets(line, sizeof line, p)) sscanf(line, "allreduce %ld %lf", &b, &secs);
  if (p) pclose(p);
  return secs;
}

int main(int argc, char **argv) {
  if (argc == 3 && !strcmp(argv[1], "--allreduce")) return allreduce_probe(atol(argv[2]));
  /* mpirun as root, and two ranks on two cores beside the engine threads. */
  setenv("OMPI_ALLOW_RUN_AS_ROOT", "1", 0);
  setenv("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1", 0);
  setenv("OMPI_MCA_rmaps_base_oversubscribe", "1", 0);
  setenv("OMPI_MCA_btl_vader_single_copy_mechanism", "none", 0);
  setenv("KILN_NUM_THREADS", "1", 1);
  const char *epochs_env = getenv("KILN_BENCH_PARALLEL_EPOCHS");
  int epochs = epochs_env ? atoi(epochs_env) : 3;
  if (epochs < 1 || epochs > MAX_EPOCHS) epochs = 3;
  char train[1024], self[1024];
  snprintf(train, sizeof train, "%s/../examples/train_fashion_mnist", KILN_BENCH_BUILD_DIR);
  ssize_t len = readlink("/proc/self/exe", self, sizeof self - 1);
  if (len <= 0) return 1;
  self[len] = '\0';
  char common[256], cmd[2048];
  const int64_t batch = 256, samples = 60000;
  int steps = (int)((samples + batch - 1) / batch);
  snprintf(common, sizeof common, "--model lenet --epochs %d --batch %lld --out /tmp/kiln_bench_parallel", epochs,
           (long long)batch);

  printf("LeNet on Fashion-MNIST, batch %lld, %d epochs per configuration, KILN_NUM_THREADS=1 per process\n",
         (long long)batch, epochs);
  snprintf(cmd, sizeof cmd, "%s %s", train, common);
  run_result one = run_train(cmd);
  snprintf(cmd, sizeof cmd, "%s %s --devices 2", train, common);
  run_result two_dev = run_train(cmd);
  /* Rank 0 records its engine: the allreduce ops' share of the epoch, and
   * how much of it overlaps computation. Twice: the default buckets (all
   * of LeNet's gradient in one, after backward) and 64 KB buckets (the
   * last layers' sums start while backward computes the first ones'). */
  const char *prof = "/tmp/kiln_bench_parallel_rank0.json";
  run_result two_ranks = {0}, small_buckets = {0};
  int n_allreduce[2] = {0, 0};
  double allreduce_us[2] = {0, 0}, overlap_us[2] = {0, 0};
  for (int pass = 0; pass < 2; pass++) {
    snprintf(cmd, sizeof cmd,
             "mpirun -np 2 %s sh -c 'if [ \"$OMPI_COMM_WORLD_RANK\" = 0 ]; then export KILN_PROFILE=%s; fi; exec \"$0\" "
             "\"$@\"' %s %s --kvstore mpi",
             pass ? "-x KILN_KVSTORE_BUCKET_BYTES=65536" : "", prof, train, common);
    run_result r = run_train(cmd);
    if (pass) small_buckets = r;
    else two_ranks = r;
    if (r.ok && !allreduce_overlap(prof, &n_allreduce[pass], &allreduce_us[pass], &overlap_us[pass])) r.ok = false;
    if (!r.ok) two_ranks.ok = false;
  }
  if (!one.ok || !two_dev.ok || !two_ranks.ok) {
    fprintf(stderr, "bench_parallel: a training run failed (%d %d %d)\n", one.ok, two_dev.ok, two_ranks.ok);
    return 1;
  }
  double comm_share = allreduce_us[0] * 1e-6 / (epochs * two_ranks.seconds);
  printf("%-34s %10s %10s %9s\n", "configuration", "epoch s", "speed-up", "test acc");
  printf("%-34s %10.2f %10s %9.4f\n", "1 device, 1 process", one.seconds, "1.00", one.test_acc);
  printf("%-34s %10.2f %10.2f %9.4f\n", "2 devices, 1 process", two_dev.seconds, one.seconds / two_dev.seconds,
         two_dev.test_acc);
  printf("%-34s %10.2f %10.2f %9.4f\n", "1 device each, 2 MPI ranks", two_ranks.seconds, one.seconds / two_ranks.seconds,
         two_ranks.test_acc);
  printf("%-34s %10.2f %10.2f %9.4f\n", "the same, 64 KB buckets", small_buckets.seconds,
         one.seconds / small_buckets.seconds, small_buckets.test_acc);
  for (int pass = 0; pass < 2; pass++)
    printf("rank 0, %s: %d allreduce ops, %.1f%% of its training time (waiting for the peer included), %.0f%% of "
           "it overlapping computation\n",
           pass ? "64 KB buckets" : "default buckets", n_allreduce[pass],
           100 * allreduce_us[pass] * 1e-6 / (epochs * (pass ? small_buckets.seconds : two_ranks.seconds)),
           100 * overlap_us[pass] / (allreduce_us[pass] > 0 ? allreduce_us[pass] : 1));

  /* The model: compute(1) from the one-process epoch; the allreduce of the
   * gradient (LeNet's 61 706 float32 parameters) from the probe at two
   * sizes, which gives latency and bandwidth. */
  const double grad_bytes = 61706 * 4.0;
  double small = probe(self, 4096), big = probe(self, 4 << 20);
  double bw = (2 * 0.5) * ((4 << 20) - 4096) / (big - small); /* 2 (N-1)/N = 1 at N = 2 */
  double lat = small / 2;                                       /* 2 (N-1) = 2 at N = 2 */
  if (!(bw > 0) || !(lat > 0)) {
    fprintf(stderr, "bench_parallel: the allreduce probe failed\n");
    return 1;
  }
  double compute = one.seconds / steps;
  double ar2 = 1.0 * grad_bytes / bw + 2 * lat;
  double predicted = steps * (compute / 2 + ar2);
  printf("allreduce probe (2 ranks): latency %.1f us, bandwidth %.2f GB/s\n", lat * 1e6, bw * 1e-9);
  printf("model, 2 ranks: %.2f s per epoch predicted (compute %.2f + allreduce %.2f), %.2f measured (%+.0f%%)\n",
         predicted, steps * compute / 2, steps * ar2, two_ranks.seconds, 100 * (two_ranks.seconds / predicted - 1));
  printf("projection, epoch seconds at N machines (compute(1)/N + ring allreduce of %.0f KB):\n", grad_bytes / 1024);
  printf("%6s %16s %18s %18s\n", "N", "this machine's", "10 Gb/s, 20 us", "100 Gb/s, 5 us");
  for (int n = 1; n <= 64; n *= 2) {
    double ring = n > 1 ? 2.0 * (n - 1) / n * grad_bytes : 0, hops = n > 1 ? 2.0 * (n - 1) : 0;
    printf("%6d %16.2f %18.2f %18.2f\n", n, steps * (compute / n + ring / bw + hops * lat),
           steps * (compute / n + ring / 1.25e9 + hops * 20e-6), steps * (compute / n + ring / 12.5e9 + hops * 5e-6));
  }
  bench_metric("lenet_epoch_1_device", one.seconds, "s");
  bench_metric("lenet_epoch_2_devices", two_dev.seconds, "s");
  bench_metric("lenet_epoch_2_ranks", two_ranks.seconds, "s");
  bench_metric("speedup_2_devices", one.seconds / two_dev.seconds, "x");
  bench_metric("speedup_2_ranks", one.seconds / two_ranks.seconds, "x");
  bench_metric("allreduce_share_2_ranks", 100 * comm_share, "%");
  bench_metric("lenet_epoch_2_ranks_64k_buckets", small_buckets.seconds, "s");
  bench_metric("allreduce_overlap_64k_buckets", 100 * overlap_us[1] / (allreduce_us[1] > 0 ? allreduce_us[1] : 1), "%");
  bench_metric("model_error_2_ranks", 100 * (two_ranks.seconds / predicted - 1), "%");
  return 0;
}
