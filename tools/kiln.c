/* kiln: the command-line program (docs/cli.md).
 *
 *   kiln info MODEL                         what a model takes, gives and costs
 *   kiln run MODEL --input x.npy ...        one run on .npy files
 *   kiln bench MODEL --shape 1,512 ...      latency and throughput on random inputs
 *   kiln train [options]                    the Fashion-MNIST training example
 *
 * It is a plain user of the public API (include/kiln.h): what it can say
 * about a model, any program can. Every failure is one line on stderr,
 * "kiln CMD: ...", and an exit status that tells scripts what kind of
 * failure it was, so they need not parse the line. */
#include <errno.h>
#include <math.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "kiln.h"
#include "onnx_test.h"

extern char **environ;

/* The exit statuses (docs/cli.md): 0 is success. */
enum { EXIT_FAILED = 1, EXIT_USAGE = 2, EXIT_IO = 3 };

static const char main_help[] =
    "usage: kiln COMMAND [options]\n"
    "       kiln --help | --version\n"
    "\n"
    "Inspects, runs, times and trains kiln models.\n"
    "\n"
    "commands:\n"
    "  info MODEL [--json]                 inputs, outputs, ops, parameters, FLOPs, planned memory\n"
    "  run MODEL --input X.npy [--output Y.npy]\n"
    "                                      run the model on .npy inputs; write or print the outputs\n"
    "  bench MODEL --shape 1,512 [--iters N] [--warmup W] [--threads T]\n"
    "                                      latency (median, p90, p99) and throughput on random inputs\n"
    "  train [options]                     train on Fashion-MNIST (the example train_fashion_mnist)\n"
    "  onnx-test DIR [--verbose]           run the ONNX conformance test cases under DIR\n"
    "\n"
    "MODEL is the path prefix of a model kiln_block_export wrote (dir/name for\n"
    "dir/name.kiln.json and dir/name.safetensors), the path of either file,\n"
    "or an ONNX model (a path ending in .onnx).\n"
    "`kiln COMMAND --help` describes a command.\n"
    "\n"
    "exit status:\n"
    "  0  success\n"
    "  1  kiln refused the model or an input, or the computation failed\n"
    "  2  bad usage: an unknown command or option, a missing or malformed argument\n"
    "  3  a file could not be opened, read or written\n"
    "Errors are one line on stderr: \"kiln COMMAND: what went wrong\".\n";

static const char info_help[] =
    "usage: kiln info MODEL [--json]\n"
    "\n"
    "Prints the model's inputs and outputs (name, dtype, shape; ? for a dim the\n"
    "model leaves open), its ops counted by name, its parameters (tensors,\n"
    "elements, bytes), an estimate of the FLOPs per sample (docs/cli.md says\n"
    "what is counted), the memory its plan reuses across runs and the plan's\n"
    "steps (kernel calls per run).\n"
    "\n"
    "  --json   the same as one JSON object (unknown dims as -1)\n";

static const char run_help[] =
    "usage: kiln run MODEL --input X.npy [--input X2.npy ...] [--output Y.npy ...]\n"
    "\n"
    "Runs the model once on the arrays of the .npy files, one --input per model\n"
    "input in the model's order, each with the input's dtype and any size at a\n"
    "dim the model leaves open (`kiln info` shows them as ?).\n"
    "\n"
    "  --output Y.npy   write the outputs as .npy files: one --output per output,\n"
    "                   or one for all (output 0 to Y.npy, output k to Y_k.npy)\n"
    "\n"
    "Without --output, prints each output's name, dtype and shape and its\n"
    "values (numpy-style, large arrays summarised).\n";

static const char bench_help[] =
    "usage: kiln bench MODEL [--shape D0,D1,... ...] [--iters N] [--warmup W] [--threads T]\n"
    "\n"
    "Times the model on random inputs (floats uniform in [-1, 1), integers and\n"
    "bools zero) of the model's dtypes.\n"
    "\n"
    "  --shape D0,D1,...  an input's shape, one --shape per model input in order\n"
    "                     (may be left out when the model fixes every dim);\n"
    "                     D0 of the first input is the batch\n"
    "  --iters N          timed runs (default 100)\n"
    "  --warmup W         untimed runs first (default 10; the first run at a new\n"
    "                     size compiles the model for it)\n"
    "  --threads T        kiln's thread budget (sets KILN_NUM_THREADS)\n"
    "\n"
    "Latency: N runs, each waited for before the next; the median, p90 and p99\n"
    "(nearest rank) in microseconds. Throughput: N runs pushed back to back and\n"
    "one wait at the end, in samples (batch x runs) per second.\n";

static const char train_help[] =
    "usage: kiln train [options]\n"
    "\n"
    "Trains the MLP or LeNet on Fashion-MNIST (Debian's dataset-fashion-mnist)\n"
    "by running kiln's example train_fashion_mnist with these options; exits\n"
    "with its status. The example: %s.\n"
    "\n"
    "Its options:\n";

/* Messages quote names from model files and arguments from the command
 * line; a control byte there would break the one-line promise (or drive
 * the terminal), so it is shown as '?'. */
static void put_text(FILE *f, const char *s) {
  for (const unsigned char *p = (const unsigned char *)s; *p; p++) fputc(*p < 0x20 || *p == 0x7f ? '?' : *p, f);
}

static int usage_error(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int usage_error(const char *cmd, const char *fmt, ...) {
  char what[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(what, sizeof what, fmt, ap);
  va_end(ap);
  fprintf(stderr, "kiln%s%s: ", cmd ? " " : "", cmd ? cmd : "");
  put_text(stderr, what);
  fprintf(stderr, " (see kiln%s%s --help)\n", cmd ? " " : "", cmd ? cmd : "");
  return EXIT_USAGE;
}

/* A failure kiln reported. kiln's loaders name the file in their
 * messages; other messages get the file the command was working on. */
static int kiln_failure(const char *cmd, const char *file, kiln_status st, const char *msg) {
  fprintf(stderr, "kiln %s: ", cmd);
  if (file && !strstr(msg, file)) {
    put_text(stderr, file);
    fputs(": ", stderr);
  }
  put_text(stderr, msg);
  fputc('\n', stderr);
  return st == KILN_ERR_IO ? EXIT_IO : EXIT_FAILED;
}

static bool is_help(const char *arg) { return !strcmp(arg, "--help") || !strcmp(arg, "-h"); }

/* Matches argv[*i] against "--name VALUE" or "--name=VALUE": 1 with
 * *value set (and *i past VALUE), 0 when it is another argument, -1 when
 * VALUE is missing. */
static int option(int argc, char **argv, int *i, const char *name, const char **value) {
  size_t len = strlen(name);
  if (strncmp(argv[*i], name, len) != 0) return 0;
  if (argv[*i][len] == '=') {
    *value = argv[*i] + len + 1;
    return 1;
  }
  if (argv[*i][len] != '\0') return 0;
  if (*i + 1 >= argc) return -1;
  *value = argv[++*i];
  return 1;
}

static bool parse_int(const char *s, long min, long max, long *out) {
  char *end;
  errno = 0;
  long v = strtol(s, &end, 10);
  if (errno || end == s || *end || v < min || v > max) return false;
  *out = v;
  return true;
}

/* ------------------------------------------------------------ models */

/* kiln_model_load takes the prefix; a path to either file names it too. */
static int load_model(const char *cmd, const char *arg, kiln_model **out) {
  static const char *const suffixes[] = {".kiln.json", ".safetensors"};
  size_t len = strlen(arg);
  for (size_t k = 0; k < sizeof suffixes / sizeof suffixes[0]; k++) {
    size_t n = strlen(suffixes[k]);
    if (len > n && !strcmp(arg + len - n, suffixes[k])) len -= n;
  }
  char *prefix = malloc(len + 1);
  if (!prefix) return kiln_failure(cmd, arg, KILN_ERR_OUT_OF_MEMORY, "out of memory");
  memcpy(prefix, arg, len);
  prefix[len] = '\0';
  *out = kiln_model_load(prefix);
  free(prefix);
  return *out ? 0 : kiln_failure(cmd, arg, kiln_last_status(), kiln_last_error());
}

/* "[?, 1, 28, 28]": ? for a dim the model leaves open. */
static void shape_text(char *buf, size_t cap, int ndim, const int64_t *shape) {
  size_t n = (size_t)snprintf(buf, cap, "[");
  for (int d = 0; d < ndim && n < cap; d++) {
    if (shape[d] < 0)
      n += (size_t)snprintf(buf + n, cap - n, "%s?", d ? ", " : "");
    else
      n += (size_t)snprintf(buf + n, cap - n, "%s%lld", d ? ", " : "", (long long)shape[d]);
  }
  if (n < cap) snprintf(buf + n, cap - n, "]");
}

#define SHAPE_TEXT_MAX (KILN_MAX_DIMS * 24 + 4)

/* kiln_model_input or kiln_model_output. */
typedef kiln_status (*value_getter)(const kiln_model *m, int i, kiln_model_value *out);

/* "data0 float32 [?, 1, 6, 6], labels int64 [?]", for messages. */
static void values_text(char *buf, size_t cap, const kiln_model *m, int n, value_getter get) {
  size_t len = 0;
  buf[0] = '\0';
  for (int i = 0; i < n && len < cap; i++) {
    kiln_model_value v;
    char shape[SHAPE_TEXT_MAX];
    if (get(m, i, &v) != KILN_OK) continue;
    shape_text(shape, sizeof shape, v.ndim, v.shape);
    len += (size_t)snprintf(buf + len, cap - len, "%s%s %s %s", i ? ", " : "", v.name, kiln_dtype_name(v.dtype), shape);
  }
}

/* The batch a FLOP count per run is divided by: the first input's first
 * dim, or 1 when it is open (a model is built with 1 there) or absent. */
static int64_t declared_batch(const kiln_model *m) {
  kiln_model_value v;
  if (kiln_model_input(m, 0, &v) != KILN_OK || v.ndim == 0 || v.shape[0] < 1) return 1;
  return v.shape[0];
}

/* "2334720 bytes (2.23 MiB)": the exact count, and a short form when it is long. */
static void count_text(char *buf, size_t cap, double v, const char *what, const char *const units[4], double base) {
  double short_v = v;
  int u = -1;
  while (short_v >= base && u < 3) short_v /= base, u++;
  if (v >= 10000)
    snprintf(buf, cap, "%.0f%s (%.3g %s)", v, what, short_v, units[u]);
  else
    snprintf(buf, cap, "%.0f%s", v, what);
}

static void flops_text(char *buf, size_t cap, double v) {
  static const char *const units[4] = {"k", "M", "G", "T"};
  count_text(buf, cap, v, "", units, 1000);
}

static void bytes_text(char *buf, size_t cap, double v) {
  static const char *const units[4] = {"KiB", "MiB", "GiB", "TiB"};
  count_text(buf, cap, v, " bytes", units, 1024);
}

static void json_string(FILE *f, const char *s) {
  fputc('"', f);
  for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
    if (*p == '"' || *p == '\\')
      fprintf(f, "\\%c", *p);
    else if (*p < 0x20)
      fprintf(f, "\\u%04x", *p);
    else
      fputc(*p, f);
  }
  fputc('"', f);
}

static void json_values(FILE *f, const kiln_model *m, int n, value_getter get) {
  fputc('[', f);
  for (int i = 0; i < n; i++) {
    kiln_model_value v;
    if (get(m, i, &v) != KILN_OK) continue;
    fprintf(f, "%s{\"name\": ", i ? ", " : "");
    json_string(f, v.name);
    fprintf(f, ", \"dtype\": \"%s\", \"shape\": [", kiln_dtype_name(v.dtype));
    for (int d = 0; d < v.ndim; d++) fprintf(f, "%s%lld", d ? ", " : "", (long long)v.shape[d]);
    fputs("]}", f);
  }
  fputc(']', f);
}

static void info_json(const char *arg, const kiln_model *m, int64_t flops) {
  kiln_model_stats s = kiln_model_get_stats(m);
  int64_t batch = declared_batch(m);
  fputs("{\"model\": ", stdout);
  json_string(stdout, arg);
  fputs(", \"inputs\": ", stdout);
  json_values(stdout, m, kiln_model_num_inputs(m), kiln_model_input);
  fputs(", \"outputs\": ", stdout);
  json_values(stdout, m, kiln_model_num_outputs(m), kiln_model_output);
  fprintf(stdout, ", \"nodes\": %d, \"ops\": {", s.nodes);
  for (int i = 0; i < kiln_model_num_op_kinds(m); i++) {
    const char *name;
    int count;
    if (kiln_model_op_count(m, i, &name, &count) == KILN_OK)
      fprintf(stdout, "%s\"%s\": %d", i ? ", " : "", name, count);
  }
  fprintf(stdout,
          "}, \"parameters\": {\"tensors\": %d, \"elements\": %lld, \"bytes\": %lld}, \"flops_per_run\": %lld, "
          "\"batch\": %lld, \"flops_per_sample\": %.17g, \"arena_bytes\": %lld, \"steps\": %d}\n",
          s.parameters, (long long)s.parameter_elements, (long long)s.parameter_bytes, (long long)flops,
          (long long)batch, (double)flops / (double)batch, (long long)s.arena_bytes, s.steps);
}

/* Label column width of the human-readable reports. */
#define LABEL "%-12s"

static void info_values(const char *label, const kiln_model *m, int n, int width, value_getter get) {
  for (int i = 0; i < n; i++) {
    kiln_model_value v;
    char shape[SHAPE_TEXT_MAX];
    if (get(m, i, &v) != KILN_OK) continue;
    shape_text(shape, sizeof shape, v.ndim, v.shape);
    printf(LABEL, i ? "" : label);
    put_text(stdout, v.name);
    int pad = width - (int)strlen(v.name);
    printf("%*s  %-8s %s\n", pad > 0 ? pad : 0, "", kiln_dtype_name(v.dtype), shape);
  }
}

static void info_text(const char *arg, const kiln_model *m, int64_t flops) {
  kiln_model_stats s = kiln_model_get_stats(m);
  int n_in = kiln_model_num_inputs(m), n_out = kiln_model_num_outputs(m), width = 0;
  /* Names align up to a width where a long one would push the rest too far. */
  for (int i = 0; i < n_in + n_out; i++) {
    kiln_model_value v;
    if ((i < n_in ? kiln_model_input(m, i, &v) : kiln_model_output(m, i - n_in, &v)) == KILN_OK &&
        (int)strlen(v.name) > width)
      width = (int)strlen(v.name);
  }
  width = width < 32 ? width : 32;
  printf(LABEL, "model");
  put_text(stdout, arg);
  putchar('\n');
  info_values("inputs", m, n_in, width, kiln_model_input);
  info_values("outputs", m, n_out, width, kiln_model_output);
  /* Ops as "name count" items, wrapped under the label. */
  int column = printf(LABEL "%d node%s:", "ops", s.nodes, s.nodes == 1 ? "" : "s");
  for (int i = 0; i < kiln_model_num_op_kinds(m); i++) {
    const char *name;
    int count;
    if (kiln_model_op_count(m, i, &name, &count) != KILN_OK) continue;
    bool wrap = column + snprintf(NULL, 0, " %s %d,", name, count) > 88;
    if (wrap) column = printf("\n" LABEL, "") - 1;
    column += printf("%s%s %d%s", wrap ? "" : " ", name, count, i + 1 < kiln_model_num_op_kinds(m) ? "," : "");
  }
  putchar('\n');
  char bytes[96], count[96], per_run[96];
  bytes_text(bytes, sizeof bytes, (double)s.parameter_bytes);
  printf(LABEL "%d tensor%s, %lld elements, %s\n", "parameters", s.parameters, s.parameters == 1 ? "" : "s",
         (long long)s.parameter_elements, bytes);
  int64_t batch = declared_batch(m);
  flops_text(count, sizeof count, (double)flops / (double)batch);
  printf(LABEL "%s per sample", "FLOPs", count);
  if (batch > 1) {
    flops_text(per_run, sizeof per_run, (double)flops);
    printf(" (%s per run at batch %lld)", per_run, (long long)batch);
  }
  putchar('\n');
  bytes_text(bytes, sizeof bytes, (double)s.arena_bytes);
  printf(LABEL "%s planned (one arena, reused by every run)\n", "memory", bytes);
  printf(LABEL "%d step%s (kernel calls per run)\n", "plan", s.steps, s.steps == 1 ? "" : "s");
}

static int cmd_info(int argc, char **argv) {
  const char *model = NULL;
  bool json = false;
  for (int i = 0; i < argc; i++) {
    if (is_help(argv[i])) {
      fputs(info_help, stdout);
      return 0;
    }
    if (!strcmp(argv[i], "--json"))
      json = true;
    else if (argv[i][0] == '-')
      return usage_error("info", "unknown option '%s'", argv[i]);
    else if (model)
      return usage_error("info", "one MODEL only, got '%s' and '%s'", model, argv[i]);
    else
      model = argv[i];
  }
  if (!model) return usage_error("info", "MODEL is missing");
  kiln_model *m;
  int rc = load_model("info", model, &m);
  if (rc) return rc;
  int64_t flops = 0;
  if (kiln_model_flops(m, &flops) != KILN_OK)
    rc = kiln_failure("info", model, kiln_last_status(), kiln_last_error());
  else if (json)
    info_json(model, m, flops);
  else
    info_text(model, m, flops);
  kiln_model_free(m);
  return rc;
}

/* ------------------------------------------------------------ run */

/* Where output k goes when one --output names them all: y.npy, y_1.npy, ... */
static char *output_path(const char *path, int k) {
  size_t len = strlen(path), stem = len > 4 && !strcmp(path + len - 4, ".npy") ? len - 4 : len;
  size_t cap = len + 16;
  char *s = malloc(cap);
  if (!s) return NULL;
  if (k == 0)
    snprintf(s, cap, "%s", path);
  else
    snprintf(s, cap, "%.*s_%d%s", (int)stem, path, k, path + stem);
  return s;
}

/* Writes or prints output k (y is its value, computed). */
static int put_output(const kiln_model *m, int k, kiln_tensor *y, int n_paths, const char *const *paths) {
  kiln_model_value v;
  char shape[SHAPE_TEXT_MAX];
  kiln_status st = kiln_model_output(m, k, &v);
  if (st != KILN_OK) return kiln_failure("run", NULL, st, kiln_last_error());
  shape_text(shape, sizeof shape, kiln_tensor_ndim(y), kiln_tensor_shape(y));
  if (n_paths == 0) {
    put_text(stdout, v.name);
    printf(": %s %s\n", kiln_dtype_name(kiln_tensor_dtype(y)), shape);
    st = kiln_tensor_print(y, stdout);
    return st == KILN_OK ? 0 : kiln_failure("run", NULL, st, kiln_last_error());
  }
  char *path = output_path(paths[n_paths == 1 ? 0 : k], n_paths == 1 ? k : 0);
  if (!path) return kiln_failure("run", NULL, KILN_ERR_OUT_OF_MEMORY, "out of memory");
  int rc = 0;
  st = kiln_save_npy(y, path);
  if (st != KILN_OK) {
    rc = kiln_failure("run", path, st, kiln_last_error());
  } else {
    put_text(stdout, v.name);
    printf(": %s %s -> ", kiln_dtype_name(kiln_tensor_dtype(y)), shape);
    put_text(stdout, path);
    putchar('\n');
  }
  free(path);
  return rc;
}

static int cmd_run(int argc, char **argv) {
  const char *model = NULL;
  /* At most one path per argument. */
  const char **inputs = calloc((size_t)argc + 1, sizeof *inputs), **outputs = calloc((size_t)argc + 1, sizeof *outputs);
  int n_in = 0, n_paths = 0, rc = 0;
  if (!inputs || !outputs) rc = kiln_failure("run", NULL, KILN_ERR_OUT_OF_MEMORY, "out of memory");
  for (int i = 0; i < argc && !rc; i++) {
    const char *value;
    int in = 0, out = 0;
    if (is_help(argv[i])) {
      fputs(run_help, stdout);
      free(inputs);
      free(outputs);
      return 0;
    }
    if ((in = option(argc, argv, &i, "--input", &value)) == 1)
      inputs[n_in++] = value;
    else if (in == 0 && (out = option(argc, argv, &i, "--output", &value)) == 1)
      outputs[n_paths++] = value;
    else if (in < 0 || out < 0)
      rc = usage_error("run", "%s needs a file", argv[i]);
    else if (argv[i][0] == '-')
      rc = usage_error("run", "unknown option '%s'", argv[i]);
    else if (model)
      rc = usage_error("run", "one MODEL only, got '%s' and '%s'", model, argv[i]);
    else
      model = argv[i];
  }
  if (!rc && !model) rc = usage_error("run", "MODEL is missing");
  kiln_model *m = NULL;
  if (!rc) rc = load_model("run", model, &m);
  int want_in = kiln_model_num_inputs(m), n_out = kiln_model_num_outputs(m);
  if (!rc && n_in != want_in) {
    char list[1024];
    values_text(list, sizeof list, m, want_in, kiln_model_input);
    rc = usage_error("run", "the model takes %d input%s (%s), got %d --input", want_in, want_in == 1 ? "" : "s", list,
                     n_in);
  }
  if (!rc && n_paths > 1 && n_paths != n_out)
    rc = usage_error("run", "the model has %d outputs: give one --output for all or one per output, not %d", n_out,
                     n_paths);
  kiln_tensor **x = calloc((size_t)want_in + 1, sizeof *x), **y = calloc((size_t)n_out + 1, sizeof *y);
  if (!rc && (!x || !y)) rc = kiln_failure("run", NULL, KILN_ERR_OUT_OF_MEMORY, "out of memory");
  for (int i = 0; i < n_in && !rc; i++) {
    x[i] = kiln_load_npy(inputs[i]);
    kiln_status st = kiln_tensor_status(x[i]);
    if (st != KILN_OK) rc = kiln_failure("run", inputs[i], st, kiln_tensor_error(x[i]));
  }
  if (!rc) {
    kiln_status st = kiln_model_run(m, n_in, x, y);
    if (st != KILN_OK) rc = kiln_failure("run", model, st, kiln_last_error());
  }
  /* Every output is checked before any is written, so a failed run leaves
   * no partial set of files. */
  for (int k = 0; k < n_out && !rc && y[k]; k++) {
    kiln_status st = kiln_tensor_status(y[k]);
    if (st != KILN_OK) rc = kiln_failure("run", model, st, kiln_tensor_error(y[k]));
  }
  for (int k = 0; k < n_out && !rc && y[k]; k++) rc = put_output(m, k, y[k], n_paths, outputs);
  for (int k = 0; y && k < n_out; k++) kiln_tensor_release(y[k]);
  for (int i = 0; x && i < want_in; i++) kiln_tensor_release(x[i]);
  free(x);
  free(y);
  kiln_model_free(m);
  free(inputs);
  free(outputs);
  return rc;
}

/* ------------------------------------------------------------ bench */

typedef struct {
  int ndim;
  int64_t shape[KILN_MAX_DIMS];
} shape_arg;

/* "1,512" -> [1, 512]; "" is a scalar. Dims are positive: a run on
 * nothing measures nothing. */
static bool parse_shape(const char *s, shape_arg *out) {
  out->ndim = 0;
  while (*s) {
    char *end;
    errno = 0;
    long long d = strtoll(s, &end, 10);
    if (errno || end == s || d < 1 || out->ndim == KILN_MAX_DIMS || (*end && *end != ',') || (*end == ',' && !end[1]))
      return false;
    out->shape[out->ndim++] = d;
    s = *end ? end + 1 : end;
  }
  return true;
}

static bool is_floating(kiln_dtype dt) { return dt == KILN_F32 || dt == KILN_F64; }

static double now_us(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec * 1e-3;
}

static int by_value(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

/* Nearest rank: the smallest value that at least a fraction p of the
 * sorted samples do not exceed. */
static double percentile(const double *sorted, long n, double p) {
  long k = (long)ceil(p * (double)n);
  return sorted[(k < 1 ? 1 : k) - 1];
}

/* One run, its outputs released at once (pushed work holds what it needs),
 * after waiting for them when asked. */
static int bench_run(kiln_model *m, const char *model, int n_in, kiln_tensor *const *x, int n_out, kiln_tensor **y,
                     bool wait) {
  kiln_status st = kiln_model_run(m, n_in, x, y);
  if (st != KILN_OK) return kiln_failure("bench", model, st, kiln_last_error());
  int rc = 0;
  for (int k = 0; k < n_out; k++) {
    if (wait && !rc && (st = kiln_tensor_status(y[k])) != KILN_OK)
      rc = kiln_failure("bench", model, st, kiln_tensor_error(y[k]));
    kiln_tensor_release(y[k]);
  }
  return rc;
}

/* The timed part, once the inputs are made. */
static int bench_time(kiln_model *m, const char *model, int n_in, kiln_tensor *const *x, long iters, long warmup) {
  int n_out = kiln_model_num_outputs(m), rc = 0;
  kiln_tensor **y = calloc((size_t)n_out, sizeof *y);
  double *us = calloc((size_t)iters, sizeof *us);
  if (!y || !us) rc = kiln_failure("bench", NULL, KILN_ERR_OUT_OF_MEMORY, "out of memory");
  for (long i = 0; i < warmup && !rc; i++) rc = bench_run(m, model, n_in, x, n_out, y, true);
  for (long i = 0; i < iters && !rc; i++) {
    double t0 = now_us();
    rc = bench_run(m, model, n_in, x, n_out, y, true);
    us[i] = now_us() - t0;
  }
  double t0 = now_us();
  for (long i = 0; i < iters && !rc; i++) rc = bench_run(m, model, n_in, x, n_out, y, false);
  kiln_status st = kiln_waitall();
  double seconds = (now_us() - t0) * 1e-6;
  if (!rc && st != KILN_OK) rc = kiln_failure("bench", model, st, kiln_last_error());
  if (!rc) {
    qsort(us, (size_t)iters, sizeof *us, by_value);
    double batch = n_in && kiln_tensor_ndim(x[0]) ? (double)kiln_tensor_dim(x[0], 0) : 1;
    printf(LABEL "%ld runs after %ld warm-up, each waited for\n", "latency", iters, warmup);
    printf("  %-10s%10.1f µs\n", "median", percentile(us, iters, 0.5));
    printf("  %-10s%10.1f µs\n", "p90", percentile(us, iters, 0.9));
    printf("  %-10s%10.1f µs\n", "p99", percentile(us, iters, 0.99));
    printf(LABEL "%ld runs back to back: %.0f samples/s (%.0f runs/s at batch %.0f)\n", "throughput", iters,
           batch * (double)iters / seconds, (double)iters / seconds, batch);
  }
  free(us);
  free(y);
  return rc;
}

static int cmd_bench(int argc, char **argv) {
  const char *model = NULL, *threads = NULL;
  long iters = 100, warmup = 10;
  shape_arg *shapes = calloc((size_t)argc + 1, sizeof *shapes);
  int n_shapes = 0, rc = shapes ? 0 : kiln_failure("bench", NULL, KILN_ERR_OUT_OF_MEMORY, "out of memory");
  for (int i = 0; i < argc && !rc; i++) {
    const char *value = NULL, *name = argv[i];
    int got;
    if (is_help(name)) {
      fputs(bench_help, stdout);
      free(shapes);
      return 0;
    }
    if ((got = option(argc, argv, &i, "--shape", &value)) == 1) {
      if (!parse_shape(value, &shapes[n_shapes++]))
        rc = usage_error("bench", "--shape takes up to %d positive dims like 1,512, not '%s'", KILN_MAX_DIMS, value);
    } else if (got == 0 && (got = option(argc, argv, &i, "--iters", &value)) == 1) {
      if (!parse_int(value, 1, 100000000, &iters))
        rc = usage_error("bench", "--iters takes a count from 1, not '%s'", value);
    } else if (got == 0 && (got = option(argc, argv, &i, "--warmup", &value)) == 1) {
      if (!parse_int(value, 0, 100000000, &warmup))
        rc = usage_error("bench", "--warmup takes a count from 0, not '%s'", value);
    } else if (got == 0 && (got = option(argc, argv, &i, "--threads", &value)) == 1) {
      long t;
      /* The range kiln's engine accepts from KILN_NUM_THREADS. */
      if (!parse_int(value, 1, 1024, &t)) rc = usage_error("bench", "--threads takes 1 to 1024, not '%s'", value);
      threads = value;
    } else if (got < 0) {
      rc = usage_error("bench", "%s needs a value", name);
    } else if (name[0] == '-') {
      rc = usage_error("bench", "unknown option '%s'", name);
    } else if (model) {
      rc = usage_error("bench", "one MODEL only, got '%s' and '%s'", model, name);
    } else {
      model = name;
    }
  }
  if (!rc && !model) rc = usage_error("bench", "MODEL is missing");
  /* kiln reads its thread budget when its engine starts, at the first
   * kiln call below. */
  if (!rc && threads && setenv("KILN_NUM_THREADS", threads, 1) != 0)
    rc = kiln_failure("bench", NULL, KILN_ERR_INTERNAL, "cannot set KILN_NUM_THREADS");
  kiln_model *m = NULL;
  if (!rc) rc = load_model("bench", model, &m);
  int n_in = kiln_model_num_inputs(m);
  kiln_tensor **x = calloc((size_t)n_in + 1, sizeof *x);
  if (!rc && !x) rc = kiln_failure("bench", NULL, KILN_ERR_OUT_OF_MEMORY, "out of memory");
  if (!rc && n_shapes != n_in && n_shapes != 0) {
    char list[1024];
    values_text(list, sizeof list, m, n_in, kiln_model_input);
    rc = usage_error("bench", "the model takes %d input%s (%s), got %d --shape", n_in, n_in == 1 ? "" : "s", list,
                     n_shapes);
  }
  for (int i = 0; i < n_in && !rc; i++) {
    kiln_model_value v;
    kiln_status st = kiln_model_input(m, i, &v);
    if (st != KILN_OK) {
      rc = kiln_failure("bench", model, st, kiln_last_error());
      break;
    }
    shape_arg s = {.ndim = v.ndim};
    bool open = false;
    if (n_shapes) {
      s = shapes[i];
    } else {
      for (int d = 0; d < v.ndim; d++) {
        s.shape[d] = v.shape[d];
        open = open || v.shape[d] < 0;
      }
    }
    if (open) {
      char shape[SHAPE_TEXT_MAX];
      shape_text(shape, sizeof shape, v.ndim, v.shape);
      rc = usage_error("bench", "input %d (%s %s) has an open dim: give its shape with --shape", i, v.name, shape);
      break;
    }
    x[i] = is_floating(v.dtype) ? kiln_random_uniform(NULL, -1, 1, v.dtype, s.ndim, s.shape)
                                : kiln_zeros(v.dtype, s.ndim, s.shape);
    if ((st = kiln_tensor_status(x[i])) != KILN_OK) rc = kiln_failure("bench", NULL, st, kiln_tensor_error(x[i]));
  }
  if (!rc) {
    printf(LABEL, "model");
    put_text(stdout, model);
    putchar('\n');
    for (int i = 0; i < n_in; i++) {
      kiln_model_value v;
      char shape[SHAPE_TEXT_MAX];
      kiln_model_input(m, i, &v);
      shape_text(shape, sizeof shape, kiln_tensor_ndim(x[i]), kiln_tensor_shape(x[i]));
      printf(LABEL, i ? "" : "inputs");
      put_text(stdout, v.name);
      printf(" %s %s, %s\n", kiln_dtype_name(v.dtype), shape, is_floating(v.dtype) ? "random" : "zeros");
    }
    const char *env = getenv("KILN_NUM_THREADS");
    if (env && *env)
      printf(LABEL "%s (%s)\n", "threads", env, threads ? "--threads" : "KILN_NUM_THREADS");
    else
      printf(LABEL "one per CPU (%ld)\n", "threads", sysconf(_SC_NPROCESSORS_ONLN));
    fflush(stdout);
    rc = bench_time(m, model, n_in, x, iters, warmup);
  }
  for (int i = 0; x && i < n_in; i++) kiln_tensor_release(x[i]);
  free(x);
  kiln_model_free(m);
  free(shapes);
  return rc;
}

/* ------------------------------------------------------------ train */

/* Runs the example as a shell runs a command: it gets the terminal's
 * interrupts, this process waits through them, and its status becomes
 * ours (128 + the signal when one killed it). */
static int cmd_train(int argc, char **argv) {
  const char *built = KILN_TRAIN_EXAMPLE;
  bool have_built = built[0] && access(built, X_OK) == 0, help = false;
  for (int i = 0; i < argc; i++) help = help || is_help(argv[i]);
  /* argv[0] is what the example's usage line calls it. */
  char *help_argv[] = {"kiln train", "--help", NULL};
  char **child_argv = help ? help_argv : calloc((size_t)argc + 2, sizeof *child_argv);
  if (!child_argv) return kiln_failure("train", NULL, KILN_ERR_OUT_OF_MEMORY, "out of memory");
  if (!help) {
    child_argv[0] = "kiln train";
    memcpy(child_argv + 1, argv, (size_t)argc * sizeof *argv);
  }
  if (help) printf(train_help, have_built ? built : "train_fashion_mnist, found in PATH");
  fflush(stdout);

  posix_spawn_file_actions_t files;
  posix_spawnattr_t attr;
  sigset_t defaults;
  struct sigaction ignore = {.sa_handler = SIG_IGN}, old_int, old_quit;
  sigemptyset(&ignore.sa_mask);
  sigemptyset(&defaults);
  sigaddset(&defaults, SIGINT);
  sigaddset(&defaults, SIGQUIT);
  posix_spawn_file_actions_init(&files);
  posix_spawnattr_init(&attr);
  posix_spawnattr_setsigdefault(&attr, &defaults);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGDEF);
  /* The example prints its usage on stderr; --help output belongs on stdout. */
  if (help) posix_spawn_file_actions_adddup2(&files, STDOUT_FILENO, STDERR_FILENO);
  sigaction(SIGINT, &ignore, &old_int);
  sigaction(SIGQUIT, &ignore, &old_quit);
  pid_t pid;
  int err = have_built ? posix_spawn(&pid, built, &files, &attr, child_argv, environ)
                       : posix_spawnp(&pid, "train_fashion_mnist", &files, &attr, child_argv, environ);
  int status = 0, rc;
  if (err) {
    char what[1024];
    snprintf(what, sizeof what,
             "cannot run train_fashion_mnist (%s): it is not in PATH, nor built with this kiln%s%s%s", strerror(err),
             built[0] ? " (at " : "", built, built[0] ? ")" : "");
    rc = kiln_failure("train", NULL, KILN_ERR_IO, what);
  } else {
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    rc = WIFEXITED(status) ? WEXITSTATUS(status) : WIFSIGNALED(status) ? 128 + WTERMSIG(status) : EXIT_FAILED;
    /* The example shows its usage with the status of bad usage. */
    if (help) rc = 0;
  }
  sigaction(SIGINT, &old_int, NULL);
  sigaction(SIGQUIT, &old_quit, NULL);
  posix_spawnattr_destroy(&attr);
  posix_spawn_file_actions_destroy(&files);
  if (!help) free(child_argv);
  return rc;
}

/* ------------------------------------------------------------ onnx-test */

static int cmd_onnx_test(int argc, char **argv) {
  for (int i = 0; i < argc; i++)
    if (is_help(argv[i])) {
      fputs(onnx_test_help, stdout);
      return 0;
    }
  return onnx_test_main(argc, argv);
}

/* ------------------------------------------------------------ main */

int main(int argc, char **argv) {
  static const struct {
    const char *name;
    int (*run)(int argc, char **argv);
  } commands[] = {{"info", cmd_info},
                  {"run", cmd_run},
                  {"bench", cmd_bench},
                  {"train", cmd_train},
                  {"onnx-test", cmd_onnx_test}};
  if (argc < 2) return usage_error(NULL, "a COMMAND is missing");
  int rc = -1;
  const char *cmd = NULL;
  if (is_help(argv[1])) {
    fputs(main_help, stdout);
    rc = 0;
  } else if (!strcmp(argv[1], "--version")) {
    printf("kiln %s\n", kiln_version());
    rc = 0;
  }
  for (size_t c = 0; rc < 0 && c < sizeof commands / sizeof commands[0]; c++)
    if (!strcmp(argv[1], commands[c].name)) rc = commands[c].run(argc - 2, argv + 2), cmd = commands[c].name;
  if (rc < 0) return usage_error(NULL, "unknown command '%s'", argv[1]);
  /* Output that never arrived (a full disk, a closed pipe) is a failure. */
  if (fflush(stdout) != 0 || ferror(stdout)) {
    fprintf(stderr, "kiln%s%s: writing the output: %s\n", cmd ? " " : "", cmd ? cmd : "", strerror(errno));
    return rc ? rc : EXIT_IO;
  }
  return rc;
}
