/* Seconds per training epoch on Fashion-MNIST at batch 256, kiln eager and
 * hybridized against PyTorch 1.13 eager in the same run: the MLP
 * 784-256-10 (SGD lr 0.1) and LeNet (ReLU, max-pooling, SGD lr 0.3), each
 * at 1 and 2 threads.
 *
 * kiln's side is examples/train_fashion_mnist as a user runs it, with
 * KILN_NUM_THREADS set; PyTorch's is bench/train_torch.py under Debian's
 * /usr/bin/python3, the same model, initialisation, batching and loss (its
 * OpenBLAS held to one thread, as kiln holds it; the script says why). Both
 * print the example's per-epoch table, whose seconds column times the
 * training loop alone; the figure is the median epoch, leaving out the
 * first when there are three or more (it pays for first-touch page faults,
 * caches and thread start-up). Test accuracy after the last epoch is
 * reported beside it: a time is only worth comparing if both sides learnt.
 *
 * KILN_BENCH_TRAIN_EPOCHS=E runs E epochs of both models, =M,L M of the MLP
 * and L of LeNet. Every configuration reports the share of the CPUs that
 * other processes used while it ran: figures taken beside a busy neighbour
 * are not this machine's. */
#include <dirent.h>
#include <errno.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bench_common.h"

/* 6 MLP and 4 LeNet epochs keep both passes of run.sh to 6-8 minutes here
 * (LeNet is the long pole on both sides). */
enum { DEFAULT_MLP_EPOCHS = 6, DEFAULT_LENET_EPOCHS = 4, MAX_EPOCHS = 100 };

static const char *const PYTHON = "/usr/bin/python3"; /* Debian's, which has torch; the one on PATH may not */

typedef struct {
  double seconds[MAX_EPOCHS];
  int epochs;
  double test_acc, foreign_share;
} run_result;

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

/* CPU seconds of the children waited for so far: the parent itself only
 * waits. */
static double children_cpu_seconds(void) {
  struct rusage u;
  if (getrusage(RUSAGE_CHILDREN, &u) != 0) return 0;
  return (double)u.ru_utime.tv_sec + (double)u.ru_utime.tv_usec * 1e-6 + (double)u.ru_stime.tv_sec +
         (double)u.ru_stime.tv_usec * 1e-6;
}

/* ------------------------------------------------------------ children */

static void die(const char *what, const char *detail) {
  fprintf(stderr, "bench_train: %s: %s\n", what, detail);
  exit(1);
}

/* A per-epoch line of the table, exactly six fields: the epoch number, then
 * loss, train accuracy, test accuracy, seconds, samples/s. */
static int parse_epoch(const char *line, int *epoch, double *test_acc, double *seconds) {
  double loss, train_acc, rate;
  int end = 0;
  if (sscanf(line, "%d %lf %lf %lf %lf %lf %n", epoch, &loss, &train_acc, test_acc, seconds, &rate, &end) != 6)
    return 0;
  return line[end] == '\0';
}

/* Runs argv, with name=value added to the environment unless name is NULL,
 * echoing its output under label, and collects its table. Any failure of
 * the child, or a table with other than `epochs` rows, ends the benchmark. */
static run_result run_child(const char *label, char *const *argv, const char *name, const char *value, int epochs) {
  int fd[2];
  if (pipe(fd) != 0) die("pipe", strerror(errno));
  fflush(stdout);
  double busy0 = machine_busy_seconds(), own0 = children_cpu_seconds(), t0 = bench_now();
  pid_t pid = fork();
  if (pid < 0) die("fork", strerror(errno));
  if (pid == 0) {
    close(fd[0]);
    if (dup2(fd[1], STDOUT_FILENO) < 0 || (name && setenv(name, value, 1) != 0)) _exit(127);
    close(fd[1]);
    execv(argv[0], argv);
    fprintf(stderr, "bench_train: cannot run %s: %s\n", argv[0], strerror(errno));
    _exit(127);
  }
  close(fd[1]);
  FILE *out = fdopen(fd[0], "r");
  if (!out) die("fdopen", strerror(errno));
  run_result r = {.epochs = 0};
  char line[512];
  while (fgets(line, sizeof line, out)) {
    printf("  %-16s| %s", label, line);
    int epoch;
    double acc, s;
    if (!parse_epoch(line, &epoch, &acc, &s)) continue;
    if (epoch != r.epochs + 1 || r.epochs == MAX_EPOCHS) die(label, "epoch lines out of order");
    r.seconds[r.epochs++] = s;
    r.test_acc = acc;
  }
  fclose(out);
  int status;
  while (waitpid(pid, &status, 0) < 0)
    if (errno != EINTR) die("waitpid", strerror(errno));
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    fprintf(stderr, "bench_train: %s (%s) failed: %s %d\n", label, argv[0],
            WIFEXITED(status) ? "exit status" : "signal", WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status));
    exit(1);
  }
  if (r.epochs != epochs) {
    fprintf(stderr, "bench_train: %s printed %d epoch lines, not %d\n", label, r.epochs, epochs);
    exit(1);
  }
  double wall = bench_now() - t0, busy1 = machine_busy_seconds();
  long cpus = sysconf(_SC_NPROCESSORS_ONLN);
  r.foreign_share = -1;
  if (busy0 >= 0 && busy1 >= 0 && wall > 0 && cpus > 0) {
    double share = ((busy1 - busy0) - (children_cpu_seconds() - own0)) / (wall * (double)cpus);
    r.foreign_share = share < 0 ? 0 : share;
    printf("  %-16s| (other processes used %.0f%% of the CPUs meanwhile)\n", label, r.foreign_share * 100);
  }
  return r;
}

/* The median epoch; the first is warm-up once there are three or more. */
static double median_epoch(const run_result *r) {
  double v[MAX_EPOCHS];
  int skip = r->epochs >= 3;
  memcpy(v, r->seconds + skip, sizeof *v * (size_t)(r->epochs - skip));
  return bench_median(v, r->epochs - skip);
}

/* The example writes its curve next to --out: into a directory of our own,
 * removed at exit with whatever it holds, on failure too. */
static char scratch[4096];

static void remove_scratch(void) {
  DIR *d = opendir(scratch);
  if (!d) return;
  struct dirent *e;
  char path[sizeof scratch + 260];
  while ((e = readdir(d)))
    if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) {
      snprintf(path, sizeof path, "%s/%s", scratch, e->d_name);
      unlink(path);
    }
  closedir(d);
  rmdir(scratch);
}

static void parse_epochs(int *mlp, int *lenet) {
  const char *s = getenv("KILN_BENCH_TRAIN_EPOCHS");
  if (!s || !*s) return;
  int a, b, end = 0;
  int n = sscanf(s, "%d%n,%d%n", &a, &end, &b, &end);
  if (n < 1 || s[end] != '\0' || a < 1 || a > MAX_EPOCHS || (n == 2 && (b < 1 || b > MAX_EPOCHS)))
    die("KILN_BENCH_TRAIN_EPOCHS must be E or M,L (MLP and LeNet epochs, 1 to 100), not", s);
  *mlp = a;
  *lenet = n == 2 ? b : a;
}

int main(void) {
  const char *example = KILN_TRAIN_EXAMPLE;
  if (!*example) die("examples/train_fashion_mnist", "not built (configure with -DKILN_BUILD_EXAMPLES=ON)");
  if (access(example, X_OK) != 0) die(example, "not built (build the example train_fashion_mnist)");
  int epochs[2] = {DEFAULT_MLP_EPOCHS, DEFAULT_LENET_EPOCHS};
  parse_epochs(&epochs[0], &epochs[1]);

  const char *tmp = getenv("TMPDIR");
  char out[sizeof scratch + 8], script[4096];
  snprintf(scratch, sizeof scratch, "%s/kiln_bench_train.XXXXXX", tmp && *tmp ? tmp : "/tmp");
  if (!mkdtemp(scratch)) die(scratch, strerror(errno));
  atexit(remove_scratch);
  snprintf(out, sizeof out, "%s/x", scratch);
  snprintf(script, sizeof script, "%s/train_torch.py", KILN_BENCH_DIR);

  static const char *const models[2] = {"mlp", "lenet"};
  enum { KILN, HYBRID, TORCH, SIDES };
  static const char *const sides[SIDES] = {"kiln", "kiln_hybridized", "torch"};
  double figure[2][2][SIDES], acc[2][2][SIDES], worst_share = -1; /* [model][threads - 1][side] */
  double t_start = bench_now();
  for (int m = 0; m < 2; m++) {
    char e[16];
    snprintf(e, sizeof e, "%d", epochs[m]);
    printf("%s, %d epochs at batch 256; figure: median epoch%s\n", m ? "LeNet" : "MLP 784-256-10", epochs[m],
           epochs[m] >= 3 ? " after the first" : "");
    for (int t = 1; t <= 2; t++) {
      char threads[4], label[SIDES][48];
      snprintf(threads, sizeof threads, "%d", t);
      for (int side = 0; side < SIDES; side++) snprintf(label[side], sizeof label[side], "%s %s t%d", sides[side], models[m], t);
      char *kiln_argv[] = {(char *)example, "--model", (char *)models[m], "--epochs", e, "--out", out, NULL};
      char *hybrid_argv[] = {(char *)example, "--model", (char *)models[m], "--epochs", e, "--out", out, "--hybridize", NULL};
      char *torch_argv[] = {(char *)PYTHON, script,   "--model", (char *)models[m], "--epochs",
                            e,              "--threads", threads, NULL};
      run_result r[SIDES] = {run_child(label[KILN], kiln_argv, "KILN_NUM_THREADS", threads, epochs[m]),
                             run_child(label[HYBRID], hybrid_argv, "KILN_NUM_THREADS", threads, epochs[m]),
                             run_child(label[TORCH], torch_argv, NULL, NULL, epochs[m])};
      for (int side = 0; side < SIDES; side++) {
        figure[m][t - 1][side] = median_epoch(&r[side]);
        acc[m][t - 1][side] = r[side].test_acc;
        if (r[side].foreign_share > worst_share) worst_share = r[side].foreign_share;
      }
    }
  }

  printf("\n%-6s %7s %10s %12s %10s %11s %13s %10s %10s\n", "model", "threads", "kiln", "hybridized", "torch",
         "torch/kiln", "torch/hybrid", "kiln acc", "torch acc");
  for (int m = 0; m < 2; m++)
    for (int t = 0; t < 2; t++)
      printf("%-6s %7d %8.2f s %10.2f s %8.2f s %11.3f %13.3f %10.4f %10.4f\n", models[m], t + 1, figure[m][t][KILN],
             figure[m][t][HYBRID], figure[m][t][TORCH], figure[m][t][TORCH] / figure[m][t][KILN],
             figure[m][t][TORCH] / figure[m][t][HYBRID], acc[m][t][KILN], acc[m][t][TORCH]);
  printf("(total %.0f s)\n", bench_now() - t_start);
  for (int m = 0; m < 2; m++)
    for (int t = 0; t < 2; t++) {
      char name[96];
      for (int side = 0; side < SIDES; side++) {
        snprintf(name, sizeof name, "train_%s_epoch_%s_t%d", models[m], sides[side], t + 1);
        bench_metric(name, figure[m][t][side], "s");
        snprintf(name, sizeof name, "train_%s_test_acc_%s_t%d", models[m], sides[side], t + 1);
        bench_metric(name, acc[m][t][side], "fraction");
      }
      snprintf(name, sizeof name, "train_%s_torch_over_kiln_t%d", models[m], t + 1);
      bench_metric(name, figure[m][t][TORCH] / figure[m][t][KILN], "ratio");
      snprintf(name, sizeof name, "train_%s_torch_over_kiln_hybridized_t%d", models[m], t + 1);
      bench_metric(name, figure[m][t][TORCH] / figure[m][t][HYBRID], "ratio");
    }
  if (worst_share >= 0) bench_metric("train_bench_foreign_cpu_share_max", worst_share, "ratio");
  return 0;
}
