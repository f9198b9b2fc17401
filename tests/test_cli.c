/* The kiln command (tools/kiln.c), run as a child process on the committed
 * model seeds (tests/fixtures/model_seeds).
 *
 * `kiln info` prints each seed's inputs, outputs, op counts, parameters,
 * FLOPs (counted by hand here, as docs/cli.md says to count them), memory
 * and steps; `kiln run` writes .npy outputs equal, bit for bit, to
 * kiln_model_run's in this process, at two batch sizes of the model whose
 * batch is open and for a model with two outputs, and prints them without
 * --output; `kiln bench` prints its median, p90 and p99 lines; each exit
 * status (2 bad usage, 3 a missing file, 1 a model kiln refuses) comes
 * with one line on stderr carrying kiln's own message; --help on every
 * command succeeds; `kiln train` passes the example's status through.
 * Successful commands must leave stderr empty, so a sanitizer report in
 * the child fails the test. */
#include <fcntl.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "testutil.h"

extern char **environ;

#define SEEDS KILN_FIXTURE_DIR "/model_seeds/"

typedef struct {
  int status; /* the exit status, -1 when a signal ended it */
  char *out, *err;
} result;

static void tmp_path(char *buf, size_t cap, const char *name) {
  const char *dir = getenv("TMPDIR");
  snprintf(buf, cap, "%s/kiln_test_cli_%ld_%s", dir && *dir ? dir : "/tmp", (long)getpid(), name);
}

static char *read_text(const char *path) {
  FILE *f = fopen(path, "rb");
  assert_non_null(f);
  size_t cap = 4096, len = 0, n;
  char *buf = malloc(cap);
  assert_non_null(buf);
  while ((n = fread(buf + len, 1, cap - len - 1, f)) > 0) {
    len += n;
    if (cap - len == 1) {
      buf = realloc(buf, cap *= 2);
      assert_non_null(buf);
    }
  }
  fclose(f);
  buf[len] = '\0';
  return buf;
}

/* Runs `kiln ARGS...` (a NULL-terminated list) with stdout and stderr
 * captured through files, so neither can fill a pipe and stall. */
static result cli(const char *const *args) {
  char out[512], err[512];
  tmp_path(out, sizeof out, "stdout");
  tmp_path(err, sizeof err, "stderr");
  int n = 0;
  while (args[n]) n++;
  char **argv = calloc((size_t)n + 2, sizeof *argv);
  assert_non_null(argv);
  argv[0] = KILN_CLI;
  memcpy(argv + 1, args, (size_t)n * sizeof *args);
  posix_spawn_file_actions_t files;
  posix_spawn_file_actions_init(&files);
  posix_spawn_file_actions_addopen(&files, STDOUT_FILENO, out, O_WRONLY | O_CREAT | O_TRUNC, 0600);
  posix_spawn_file_actions_addopen(&files, STDERR_FILENO, err, O_WRONLY | O_CREAT | O_TRUNC, 0600);
  pid_t pid;
  int spawned = posix_spawn(&pid, KILN_CLI, &files, NULL, argv, environ), status = 0;
  posix_spawn_file_actions_destroy(&files);
  free(argv);
  assert_int_equal(spawned, 0);
  assert_int_equal(waitpid(pid, &status, 0), pid);
  result r = {WIFEXITED(status) ? WEXITSTATUS(status) : -1, read_text(out), read_text(err)};
  remove(out);
  remove(err);
  return r;
}
#define KILN(...) cli((const char *const[]){__VA_ARGS__, NULL})

static void result_free(result *r) {
  free(r->out);
  free(r->err);
}

/* The status, and on success an empty stderr; both streams printed when
 * either is wrong. */
static void expect_status(const result *r, int status) {
  if (r->status != status || (status == 0 && r->err[0])) {
    fprintf(stderr, "exit status %d, want %d\n--- stdout:\n%s--- stderr:\n%s---\n", r->status, status, r->out, r->err);
    fail();
  }
}

static void expect_text(const char *stream, const char *text, const char *want) {
  if (!strstr(text, want)) {
    fprintf(stderr, "%s lacks \"%s\":\n%s---\n", stream, want, text);
    fail();
  }
}

/* A failure: the status and exactly one line on stderr holding want. */
static void expect_failure(const result *r, int status, const char *want) {
  expect_status(r, status);
  size_t len = strlen(r->err);
  if (len == 0 || r->err[len - 1] != '\n' || strchr(r->err, '\n') != r->err + len - 1) {
    fprintf(stderr, "stderr is not one line:\n%s---\n", r->err);
    fail();
  }
  expect_text("stderr", r->err, want);
}

/* Bit equality of two tensors, the first difference printed. */
static void expect_same_bits(const char *label, kiln_tensor *got, kiln_tensor *want) {
  TU_OK(got);
  TU_OK(want);
  assert_int_equal(kiln_tensor_dtype(got), kiln_tensor_dtype(want));
  assert_int_equal(kiln_tensor_ndim(got), kiln_tensor_ndim(want));
  for (int d = 0; d < kiln_tensor_ndim(want); d++) assert_int_equal(kiln_tensor_dim(got, d), kiln_tensor_dim(want, d));
  size_t es = kiln_dtype_size(kiln_tensor_dtype(want)), bytes = (size_t)kiln_tensor_numel(want) * es;
  unsigned char *a = malloc(bytes + 1), *b = malloc(bytes + 1);
  assert_true(a && b);
  assert_int_equal(kiln_tensor_copy_to(got, a, bytes), KILN_OK);
  assert_int_equal(kiln_tensor_copy_to(want, b, bytes), KILN_OK);
  for (size_t i = 0; i < bytes; i += es)
    if (memcmp(a + i, b + i, es) != 0) {
      float x = 0, y = 0;
      if (es == 4) memcpy(&x, a + i, 4), memcpy(&y, b + i, 4);
      fprintf(stderr, "%s: element %zu is %.9g from kiln run, %.9g from kiln_model_run; tolerance 0 (bits)\n", label,
              i / es, (double)x, (double)y);
      free(a);
      free(b);
      fail();
    }
  free(a);
  free(b);
}

static void help_and_version(void **state) {
  (void)state;
  result r = KILN("--help");
  expect_status(&r, 0);
  expect_text("stdout", r.out, "usage: kiln COMMAND");
  expect_text("stdout", r.out, "  1  kiln refused the model");
  expect_text("stdout", r.out, "  2  bad usage");
  expect_text("stdout", r.out, "  3  a file could not be opened");
  result_free(&r);
  r = KILN("--version");
  expect_status(&r, 0);
  assert_int_equal(strncmp(r.out, "kiln ", 5), 0);
  assert_true(r.out[5] >= '0' && r.out[5] <= '9');
  assert_int_equal(strspn(r.out + 5, "0123456789."), strlen(r.out) - 6);
  result_free(&r);
  static const char *const commands[] = {"info", "run", "bench", "train"};
  for (size_t c = 0; c < sizeof commands / sizeof commands[0]; c++) {
    char usage[64];
    snprintf(usage, sizeof usage, "usage: kiln %s", commands[c]);
    r = KILN(commands[c], "--help");
    expect_status(&r, 0);
    assert_int_equal(strncmp(r.out, usage, strlen(usage)), 0);
    result_free(&r);
  }
  /* The example's own options, which `kiln train` passes on. */
  r = KILN("train", "-h");
  expect_status(&r, 0);
  expect_text("stdout", r.out, "usage: kiln train [--model mlp|lenet] [--epochs N]");
  result_free(&r);
}

/* What `kiln info` prints of the plan comes from kiln_model_get_stats. */
static void expect_plan_lines(const char *out, const char *model) {
  kiln_model *m = kiln_model_load(model);
  assert_non_null(m);
  kiln_model_stats s = kiln_model_get_stats(m);
  char line[128];
  snprintf(line, sizeof line, "\nmemory      %lld bytes", (long long)s.arena_bytes);
  expect_text("stdout", out, line);
  snprintf(line, sizeof line, "\nplan        %d steps", s.steps);
  expect_text("stdout", out, line);
  kiln_model_free(m);
}

static void info_prints_the_model(void **state) {
  (void)state;
  result r = KILN("info", SEEDS "tiny_cnn");
  expect_status(&r, 0);
  expect_text("stdout", r.out, "\ninputs      data0    float32  [1, 1, 6, 6]\n");
  expect_text("stdout", r.out, "\noutputs     output0  float32  [1, 3]\n");
  expect_text("stdout", r.out, "\nops         5 nodes: conv2d 1, linear 1, max_pool2d 1, relu 1, reshape 1\n");
  /* conv 2x1x3x3 and bias 2, fc 3x8 and bias 3. */
  expect_text("stdout", r.out, "\nparameters  4 tensors, 47 elements, 188 bytes\n");
  /* conv2d: 2*4*4 outputs x (2*1*3*3 + 1 for the bias) = 608; relu: 32;
   * max_pool2d 2x2: 8 outputs x 4 = 32; linear: 3 outputs x (2*8 + 1) = 51. */
  expect_text("stdout", r.out, "\nFLOPs       723 per sample\n");
  expect_plan_lines(r.out, SEEDS "tiny_cnn");
  result_free(&r);

  /* Open dims show as ?; the graph is counted at batch 1, per sample. */
  r = KILN("info", SEEDS "any_batch.kiln.json");
  expect_status(&r, 0);
  expect_text("stdout", r.out, "\ninputs      data0    float32  [?, 1, 6, 6]\n");
  expect_text("stdout", r.out, "\noutputs     output0  float32  [?, 3]\n");
  expect_text("stdout", r.out, "\nFLOPs       723 per sample\n");
  expect_plan_lines(r.out, SEEDS "any_batch");
  result_free(&r);

  r = KILN("info", SEEDS "many_ops.safetensors");
  expect_status(&r, 0);
  expect_text("stdout", r.out, "\ninputs      data0    float32  [2, 8]\n            labels   int64    [2]\n");
  expect_text("stdout", r.out, "\n            clipped  float32  [2, 3]\n");
  expect_text("stdout", r.out, "ops         96 nodes: abs 1, add 3, ");
  expect_text("stdout", r.out, " logical_and 3,");
  kiln_model *m = kiln_model_load(SEEDS "many_ops");
  int64_t flops = 0;
  assert_int_equal(kiln_model_flops(m, &flops), KILN_OK);
  kiln_model_free(m);
  char line[128];
  snprintf(line, sizeof line, "\nFLOPs       %.0f per sample (%lld per run at batch 2)\n", (double)flops / 2,
           (long long)flops);
  expect_text("stdout", r.out, line);
  result_free(&r);

  /* conv2d pad 1: 72 outputs x 19 = 1368; sigmoid 72; avg_pool2d 3x3: 8 x 9
   * = 72; linear with bias and sigmoid: 3 x 18 = 54; add, mul, clip, sum: 3
   * each; softmax: 5 x 3 = 15; full and reshape: 0. */
  r = KILN("info", "--json", SEEDS "ops_mix");
  expect_status(&r, 0);
  expect_text("stdout", r.out, "\"inputs\": [{\"name\": \"data0\", \"dtype\": \"float32\", \"shape\": [1, 1, 6, 6]}, "
                               "{\"name\": \"data1\", \"dtype\": \"float32\", \"shape\": [1, 3]}]");
  expect_text("stdout", r.out,
              "\"outputs\": [{\"name\": \"probabilities\", \"dtype\": \"float32\", \"shape\": [1, 3]}, "
              "{\"name\": \"total\", \"dtype\": \"float32\", \"shape\": [1]}]");
  expect_text("stdout", r.out, "\"nodes\": 11, \"ops\": {\"add\": 1, \"avg_pool2d\": 1, \"clip\": 1, \"conv2d\": 1, ");
  expect_text("stdout", r.out, "\"parameters\": {\"tensors\": 4, \"elements\": 47, \"bytes\": 188}");
  expect_text("stdout", r.out, "\"flops_per_run\": 1593, \"batch\": 1, \"flops_per_sample\": 1593,");
  result_free(&r);

  r = KILN("info", "--json", SEEDS "any_batch");
  expect_status(&r, 0);
  expect_text("stdout", r.out, "\"shape\": [-1, 1, 6, 6]");
  result_free(&r);
}

/* The counting rules the seeds do not reach: groups, no bias, a one-value
 * pool kernel, matmul, a linear without bias but with an activation,
 * reductions, and ops that count nothing. A model without parameters,
 * written here. */
static void flops_by_hand(void **state) {
  (void)state;
  char prefix[512], path[600];
  tmp_path(prefix, sizeof prefix, "flops");
  snprintf(path, sizeof path, "%s.kiln.json", prefix);
  FILE *f = fopen(path, "w");
  assert_non_null(f);
  fputs("{\"format\": \"kiln.model\", \"version\": 1,\n"
        " \"inputs\": [{\"name\": \"x\", \"dtype\": \"float32\", \"shape\": [1, 4, 5, 5]},\n"
        "            {\"name\": \"w\", \"dtype\": \"float32\", \"shape\": [2, 2, 3, 3]},\n"
        "            {\"name\": \"a\", \"dtype\": \"float32\", \"shape\": [3, 4]},\n"
        "            {\"name\": \"b\", \"dtype\": \"float32\", \"shape\": [4, 5]},\n"
        "            {\"name\": \"v\", \"dtype\": \"float32\", \"shape\": [5, 4]}],\n"
        " \"parameters\": [],\n"
        " \"nodes\": [{\"input\": \"x\"}, {\"input\": \"w\"}, {\"input\": \"a\"}, {\"input\": \"b\"},\n"
        "  {\"input\": \"v\"},\n"
        "  {\"name\": \"conv\", \"op\": \"conv2d\", \"inputs\": [[0, 0], [1, 0]],\n"
        "   \"attrs\": {\"stride\": [1, 1], \"padding\": [0, 0], \"dilation\": [1, 1], \"groups\": 2}},\n"
        "  {\"name\": \"mm\", \"op\": \"matmul\", \"inputs\": [[2, 0], [3, 0]]},\n"
        "  {\"name\": \"sm\", \"op\": \"softmax\", \"inputs\": [[2, 0]]},\n"
        "  {\"name\": \"s\", \"op\": \"sum\", \"inputs\": [[2, 0]], \"attrs\": {\"axes\": [1]}},\n"
        "  {\"name\": \"fc\", \"op\": \"linear\", \"inputs\": [[2, 0], [4, 0]], \"attrs\": {\"activation\": 1}},\n"
        "  {\"name\": \"pool\", \"op\": \"avg_pool2d\", \"inputs\": [[0, 0]], \"attrs\": {\"kernel\": [2]}},\n"
        "  {\"name\": \"r\", \"op\": \"reshape\", \"inputs\": [[7, 0]], \"attrs\": {\"shape\": [12]}},\n"
        "  {\"name\": \"c\", \"op\": \"cast\", \"inputs\": [[11, 0]], \"attrs\": {\"dtype\": 1}}],\n"
        " \"outputs\": [{\"name\": \"o0\", \"value\": [5, 0]}, {\"name\": \"o1\", \"value\": [6, 0]},\n"
        "             {\"name\": \"o2\", \"value\": [8, 0]}, {\"name\": \"o3\", \"value\": [9, 0]},\n"
        "             {\"name\": \"o4\", \"value\": [10, 0]}, {\"name\": \"o5\", \"value\": [12, 0]}]}\n",
        f);
  fclose(f);
  /* A safetensors file with no tensors: the header "{}" and its length. */
  snprintf(path, sizeof path, "%s.safetensors", prefix);
  f = fopen(path, "wb");
  assert_non_null(f);
  fwrite("\x02\0\0\0\0\0\0\0{}", 1, 10, f);
  fclose(f);
  kiln_model *m = kiln_model_load(prefix);
  if (!m) fprintf(stderr, "%s\n", kiln_last_error());
  assert_non_null(m);
  int64_t flops = -1;
  assert_int_equal(kiln_model_flops(m, &flops), KILN_OK);
  /* conv2d, groups 2, no bias: 1*2*3*3 outputs x 2*(4/2)*3*3 = 648; matmul:
   * 15 x 2*4 = 120; softmax: 12 x 5 = 60; sum: 12; linear with relu: 15 x
   * (2*4 + 1) = 135; avg_pool2d kernel [2] (2x2): 16 x 4 = 64; reshape and
   * cast: 0. */
  assert_int_equal(flops, 648 + 120 + 60 + 12 + 135 + 64);
  assert_int_equal(kiln_model_flops(m, NULL), KILN_ERR_INVALID_ARGUMENT);
  assert_int_equal(kiln_model_flops(NULL, &flops), KILN_ERR_INVALID_ARGUMENT);
  kiln_model_free(m);
  remove(path);
  snprintf(path, sizeof path, "%s.kiln.json", prefix);
  remove(path);
}

/* `kiln run` on x (saved to a file here) against kiln_model_run on x; arg
 * names the model on the command line. */
static void expect_run_matches(const char *model, const char *arg, kiln_tensor *x) {
  char in[512], out[512];
  tmp_path(in, sizeof in, "x.npy");
  tmp_path(out, sizeof out, "y.npy");
  assert_int_equal(kiln_save_npy(x, in), KILN_OK);
  result r = KILN("run", arg, "--input", in, "--output", out);
  expect_status(&r, 0);
  expect_text("stdout", r.out, "output0: float32 [");
  result_free(&r);
  kiln_model *m = kiln_model_load(model);
  assert_non_null(m);
  kiln_scope_begin();
  kiln_tensor *want = NULL, *got = kiln_load_npy(out);
  assert_int_equal(kiln_model_run(m, 1, &x, &want), KILN_OK);
  expect_same_bits(model, got, want);
  assert_int_equal(kiln_tensor_dim(got, 0), kiln_tensor_dim(x, 0));
  kiln_scope_end();
  kiln_model_free(m);
  remove(in);
  remove(out);
}

static void run_writes_what_the_model_computes(void **state) {
  (void)state;
  expect_run_matches(SEEDS "tiny_cnn", SEEDS "tiny_cnn",
                     tu_track(tu_random(KILN_F32, 4, TU_SHAPE(1, 1, 6, 6), 1, -1, 1)));
  /* The open batch: the model compiles again for each size. */
  expect_run_matches(SEEDS "any_batch", SEEDS "any_batch",
                     tu_track(tu_random(KILN_F32, 4, TU_SHAPE(3, 1, 6, 6), 2, -1, 1)));
  expect_run_matches(SEEDS "any_batch", SEEDS "any_batch.kiln.json",
                     tu_track(tu_random(KILN_F32, 4, TU_SHAPE(5, 1, 6, 6), 3, -1, 1)));
}

static void run_with_two_outputs(void **state) {
  (void)state;
  char x0[512], x1[512], one[512], one_1[512], a[512], b[512];
  tmp_path(x0, sizeof x0, "x0.npy");
  tmp_path(x1, sizeof x1, "x1.npy");
  tmp_path(one, sizeof one, "o.npy");
  tmp_path(one_1, sizeof one_1, "o_1.npy");
  tmp_path(a, sizeof a, "a.npy");
  tmp_path(b, sizeof b, "b.npy");
  kiln_tensor *x[2] = {tu_track(tu_random(KILN_F32, 4, TU_SHAPE(1, 1, 6, 6), 4, -1, 1)),
                       tu_track(tu_random(KILN_F32, 2, TU_SHAPE(1, 3), 5, -1, 1))};
  assert_int_equal(kiln_save_npy(x[0], x0), KILN_OK);
  assert_int_equal(kiln_save_npy(x[1], x1), KILN_OK);
  kiln_model *m = kiln_model_load(SEEDS "ops_mix");
  assert_non_null(m);
  kiln_scope_begin();
  kiln_tensor *want[2];
  assert_int_equal(kiln_model_run(m, 2, x, want), KILN_OK);

  /* One --output for both: o.npy and o_1.npy. */
  result r = KILN("run", SEEDS "ops_mix", "--input", x0, "--input", x1, "--output", one);
  expect_status(&r, 0);
  expect_text("stdout", r.out, "probabilities: float32 [1, 3] -> ");
  expect_text("stdout", r.out, "total: float32 [1] -> ");
  result_free(&r);
  expect_same_bits("o.npy", kiln_load_npy(one), want[0]);
  expect_same_bits("o_1.npy", kiln_load_npy(one_1), want[1]);

  /* One each, the --name=value form. */
  char oa[600], ob[600];
  snprintf(oa, sizeof oa, "--output=%s", a);
  snprintf(ob, sizeof ob, "--output=%s", b);
  r = KILN("run", SEEDS "ops_mix", "--input", x0, "--input", x1, oa, ob);
  expect_status(&r, 0);
  result_free(&r);
  expect_same_bits("a.npy", kiln_load_npy(a), want[0]);
  expect_same_bits("b.npy", kiln_load_npy(b), want[1]);

  /* No --output: each output printed. */
  r = KILN("run", SEEDS "ops_mix", "--input", x0, "--input", x1);
  expect_status(&r, 0);
  expect_text("stdout", r.out, "probabilities: float32 [1, 3]\narray([[");
  expect_text("stdout", r.out, "total: float32 [1]\narray([");
  result_free(&r);
  kiln_scope_end();
  kiln_model_free(m);
  const char *files[] = {x0, x1, one, one_1, a, b};
  for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) remove(files[i]);
}

static void bench_prints_latency_and_throughput(void **state) {
  (void)state;
  result r = KILN("bench", SEEDS "any_batch", "--shape", "4,1,6,6", "--iters", "20", "--warmup", "2", "--threads", "1");
  expect_status(&r, 0);
  expect_text("stdout", r.out, "\ninputs      data0 float32 [4, 1, 6, 6], random\n");
  expect_text("stdout", r.out, "\nthreads     1 (--threads)\n");
  expect_text("stdout", r.out, "\nlatency     20 runs after 2 warm-up, each waited for\n");
  static const char *const lines[] = {"\n  median ", "\n  p90 ", "\n  p99 "};
  for (size_t i = 0; i < sizeof lines / sizeof lines[0]; i++) {
    expect_text("stdout", r.out, lines[i]);
    const char *line = strstr(r.out, lines[i]);
    char *end;
    double us = strtod(line + strlen(lines[i]), &end);
    assert_true(us > 0);
    assert_int_equal(strncmp(end, " µs\n", strlen(" µs\n")), 0);
  }
  expect_text("stdout", r.out, "\nthroughput  20 runs back to back: ");
  expect_text("stdout", r.out, " samples/s (");
  expect_text("stdout", r.out, " runs/s at batch 4)\n");
  result_free(&r);
  /* Shapes the model fixes need no --shape; integer inputs are zeros. */
  r = KILN("bench", SEEDS "many_ops", "--iters=3", "--warmup=1");
  expect_status(&r, 0);
  expect_text("stdout", r.out, "\n            labels int64 [2], zeros\n");
  result_free(&r);
}

static void exit_statuses(void **state) {
  (void)state;
  char x[512], x64[512], bad[512], missing[512];
  tmp_path(x, sizeof x, "x.npy");
  tmp_path(x64, sizeof x64, "x64.npy");
  tmp_path(missing, sizeof missing, "missing");
  assert_int_equal(kiln_save_npy(tu_track(tu_random(KILN_F32, 4, TU_SHAPE(2, 1, 6, 6), 6, -1, 1)), x), KILN_OK);
  assert_int_equal(kiln_save_npy(tu_track(tu_random(KILN_F64, 4, TU_SHAPE(2, 1, 6, 6), 7, -1, 1)), x64), KILN_OK);

  /* 2: the command line is wrong. */
  result r = cli((const char *const[]){NULL});
  expect_failure(&r, 2, "kiln: a COMMAND is missing");
  result_free(&r);
  r = KILN("frobnicate");
  expect_failure(&r, 2, "kiln: unknown command 'frobnicate'");
  result_free(&r);
  r = KILN("info");
  expect_failure(&r, 2, "kiln info: MODEL is missing");
  result_free(&r);
  r = KILN("info", SEEDS "tiny_cnn", "--yaml");
  expect_failure(&r, 2, "kiln info: unknown option '--yaml'");
  result_free(&r);
  r = KILN("run", SEEDS "ops_mix", "--input", x);
  expect_failure(&r, 2, "kiln run: the model takes 2 inputs (data0 float32 [1, 1, 6, 6], data1 float32 [1, 3]), got 1");
  result_free(&r);
  r = KILN("run", SEEDS "any_batch", "--input");
  expect_failure(&r, 2, "kiln run: --input needs a file");
  result_free(&r);
  r = KILN("bench", SEEDS "any_batch", "--iters", "many");
  expect_failure(&r, 2, "kiln bench: --iters takes a count from 1, not 'many'");
  result_free(&r);
  r = KILN("bench", SEEDS "any_batch", "--shape", "2,,6");
  expect_failure(&r, 2, "kiln bench: --shape takes up to 8 positive dims");
  result_free(&r);
  r = KILN("bench", SEEDS "any_batch");
  expect_failure(&r, 2, "kiln bench: input 0 (data0 [?, 1, 6, 6]) has an open dim");
  result_free(&r);
  r = KILN("bench", SEEDS "any_batch", "--threads", "0");
  expect_failure(&r, 2, "kiln bench: --threads takes 1 to 1024");
  result_free(&r);

  /* 3: a file is missing or cannot be written; kiln's message names it. */
  r = KILN("info", missing);
  expect_failure(&r, 3, "kiln info: kiln_model_load: ");
  expect_text("stderr", r.err, "_missing.kiln.json: cannot open: ");
  result_free(&r);
  r = KILN("run", SEEDS "any_batch", "--input", missing);
  expect_failure(&r, 3, "kiln run: kiln_load_npy: ");
  expect_text("stderr", r.err, "_missing: cannot open: ");
  result_free(&r);
  r = KILN("run", SEEDS "any_batch", "--input", x, "--output", "/nonexistent-dir/y.npy");
  expect_failure(&r, 3, "kiln run: kiln_save_npy: /nonexistent-dir/y.npy");
  result_free(&r);

  /* 1: kiln refuses the model or the input, with its own message. */
  snprintf(bad, sizeof bad, "%s/bad_model/op_linear_shapes", KILN_FIXTURE_DIR);
  assert_null(kiln_model_load(bad));
  char want[1024];
  snprintf(want, sizeof want, "kiln info: %s\n", kiln_last_error());
  r = KILN("info", bad);
  expect_failure(&r, 1, want);
  expect_text("stderr", r.err, "linear: input [2, 4] does not end in weight [3, 8]'s in-dim 8");
  result_free(&r);
  snprintf(bad, sizeof bad, "%s/bad_model/node_unknown_op.kiln.json", KILN_FIXTURE_DIR);
  r = KILN("run", bad, "--input", x);
  expect_failure(&r, 1, "nodes[4] ('frobnicate.4'): op 'frobnicate' is not one kiln has\n");
  result_free(&r);
  r = KILN("run", SEEDS "any_batch", "--input", x64);
  expect_failure(&r, 1, "kiln run: " SEEDS "any_batch: kiln_model_run: input 0 ('data0') must be float32");
  result_free(&r);
  /* A kernel that fails on the engine (an index out of range) is a failed
   * run too, and writes none of the outputs. */
  char d[512], labels[512], y[512];
  tmp_path(d, sizeof d, "d.npy");
  tmp_path(labels, sizeof labels, "labels.npy");
  tmp_path(y, sizeof y, "y.npy");
  assert_int_equal(kiln_save_npy(tu_track(tu_random(KILN_F32, 2, TU_SHAPE(2, 8), 8, -1, 1)), d), KILN_OK);
  kiln_tensor *out_of_range = tu_track(kiln_from_data(KILN_I64, 1, TU_SHAPE(2), (int64_t[]){5, 7}));
  assert_int_equal(kiln_save_npy(out_of_range, labels), KILN_OK);
  r = KILN("run", SEEDS "many_ops", "--input", d, "--input", labels, "--output", y);
  expect_failure(&r, 1, "take: index 5 at position [0] of indices [2] is out of range");
  result_free(&r);
  assert_int_equal(access(y, F_OK), -1);
  r = KILN("bench", SEEDS "any_batch", "--shape", "1,512");
  expect_status(&r, 1);
  expect_text("stderr", r.err, "got float32 [1, 512]");
  result_free(&r);

  /* `kiln train` exits with the example's status: here its bad usage. */
  r = KILN("train", "--epochs", "0");
  expect_failure(&r, 2, "train_fashion_mnist: --epochs must be 1 to 1000");
  result_free(&r);
  const char *files[] = {x, x64, d, labels};
  for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) remove(files[i]);
}

int main(void) {
  const struct CMUnitTest tests[] = {
#define TEST(f) cmocka_unit_test_teardown(f, tu_release_tracked)
      TEST(help_and_version),
      TEST(info_prints_the_model),
      TEST(flops_by_hand),
      TEST(run_writes_what_the_model_computes),
      TEST(run_with_two_outputs),
      TEST(bench_prints_latency_and_throughput),
      TEST(exit_statuses),
#undef TEST
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
