/* `kiln onnx-test DIR`: the ONNX backend conformance runner. Every folder
 * under DIR holding model.onnx and test_data_set_N/ (input_K.pb and
 * output_K.pb, serialized TensorProtos) is a test case: the model is
 * loaded, run on each data set, and its outputs compared at the ONNX
 * backend tests' tolerances. A case the import refuses with
 * KILN_ERR_UNSUPPORTED is unsupported, not failed.
 *
 * kiln compiles static graphs, so a graph input that a node needs as a
 * value (a Reshape's shape) is taken from the data set as a constant: the
 * import names that input (kiln_onnx_options.needed_input) and the case is
 * loaded again with it fixed. Only the public API is used. */
#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "kiln.h"

#include "onnx_test.h"

#define RTOL 1e-3
#define ATOL 1e-7
#define MAX_IO 64

const char onnx_test_help[] = "usage: kiln onnx-test DIR [--verbose]\n"
                              "\n"
                              "Runs every ONNX test case under DIR (a folder with model.onnx and\n"
                              "test_data_set_*/input_*.pb, output_*.pb), compares the outputs with\n"
                              "rtol 1e-3, atol 1e-7, and prints passed, failed and unsupported counts\n"
                              "per op (the op types of the case's model). --verbose also says why each\n"
                              "unsupported case is. Exit status 1 when any supported case fails.\n";

typedef struct {
  char key[64];
  int passed, failed, unsupported;
} op_row;

typedef struct {
  char **paths;
  size_t n, cap;
} path_list;

static int add_path(path_list *l, const char *p) {
  if (l->n == l->cap) {
    size_t cap = l->cap ? 2 * l->cap : 256;
    char **grown = realloc(l->paths, cap * sizeof(char *));
    if (!grown) return -1;
    l->paths = grown, l->cap = cap;
  }
  return (l->paths[l->n++] = strdup(p)) ? 0 : -1;
}

static bool is_dir(const char *p) {
  struct stat sb;
  return stat(p, &sb) == 0 && S_ISDIR(sb.st_mode);
}

static bool is_file(const char *p) {
  struct stat sb;
  return stat(p, &sb) == 0 && S_ISREG(sb.st_mode);
}

/* Folders holding model.onnx, depth-first. */
static void find_cases(const char *dir, path_list *out, int depth) {
  char p[4096];
  snprintf(p, sizeof p, "%s/model.onnx", dir);
  if (is_file(p)) {
    add_path(out, dir);
    return;
  }
  DIR *d = depth < 16 ? opendir(dir) : NULL;
  if (!d) return;
  struct dirent *e;
  while ((e = readdir(d)))
    if (e->d_name[0] != '.') {
      snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
      if (is_dir(p)) find_cases(p, out, depth + 1);
    }
  closedir(d);
}

static int by_name(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* Element-wise comparison; false with a reason in why. */
static bool matches(kiln_tensor *got, kiln_tensor *want, char *why, size_t cap) {
  if (kiln_tensor_status(got) != KILN_OK) {
    snprintf(why, cap, "%s", kiln_tensor_error(got));
    return false;
  }
  if (kiln_tensor_dtype(got) != kiln_tensor_dtype(want) || kiln_tensor_ndim(got) != kiln_tensor_ndim(want)) {
    snprintf(why, cap, "got %s of rank %d, want %s of rank %d", kiln_dtype_name(kiln_tensor_dtype(got)),
             kiln_tensor_ndim(got), kiln_dtype_name(kiln_tensor_dtype(want)), kiln_tensor_ndim(want));
    return false;
  }
  for (int d = 0; d < kiln_tensor_ndim(got); d++)
    if (kiln_tensor_dim(got, d) != kiln_tensor_dim(want, d)) {
      snprintf(why, cap, "dim %d is %lld, want %lld", d, (long long)kiln_tensor_dim(got, d),
               (long long)kiln_tensor_dim(want, d));
      return false;
    }
  int64_t n = kiln_tensor_numel(got);
  double *g = malloc((size_t)n * sizeof(double) + 8), *w = malloc((size_t)n * sizeof(double) + 8);
  bool ok = g && w && kiln_tensor_copy_to(kiln_cast(got, KILN_F64), g, (size_t)n * 8) == KILN_OK &&
            kiln_tensor_copy_to(kiln_cast(want, KILN_F64), w, (size_t)n * 8) == KILN_OK;
  if (!ok) snprintf(why, cap, "cannot read the values: %s", kiln_last_error());
  for (int64_t i = 0; ok && i < n; i++) {
    bool same = (isnan(g[i]) && isnan(w[i])) || g[i] == w[i] || fabs(g[i] - w[i]) <= ATOL + RTOL * fabs(w[i]);
    if (!same) {
      snprintf(why, cap, "element %lld is %.9g, want %.9g (rtol %g, atol %g)", (long long)i, g[i], w[i], RTOL, ATOL);
      ok = false;
    }
  }
  free(g), free(w);
  return ok;
}

typedef enum { PASSED, FAILED, UNSUPPORTED } outcome;

/* Tensors of dir/PREFIX_K.pb for K = 0, 1, ... */
static int load_pbs(const char *dir, const char *prefix, kiln_tensor **out) {
  int n = 0;
  char p[4200]; /* dir is at most 4096 bytes */
  for (; n < MAX_IO; n++) {
    snprintf(p, sizeof p, "%s/%s_%d.pb", dir, prefix, n);
    if (!is_file(p)) break;
    out[n] = kiln_onnx_load_tensor(p);
  }
  return n;
}

/* One data set: load (fixing the inputs the import asks for), run, compare. */
static outcome run_set(const char *model_path, const char *set, char *why, size_t cap) {
  kiln_tensor *in[MAX_IO], *want[MAX_IO], *got[MAX_IO], *values[MAX_IO];
  int fixed[MAX_IO], n_fixed = 0, needed = -1;
  int n_in = load_pbs(set, "input", in), n_want = load_pbs(set, "output", want);
  /* Data kiln cannot hold (float16, strings, sequences) makes the case
   * unsupported, as the model then is. */
  for (int k = 0; k < n_in + n_want; k++) {
    kiln_tensor *t = k < n_in ? in[k] : want[k - n_in];
    if (kiln_tensor_status(t) != KILN_OK) {
      snprintf(why, cap, "%s %d: %s", k < n_in ? "input" : "output", k < n_in ? k : k - n_in, kiln_tensor_error(t));
      return kiln_tensor_status(t) == KILN_ERR_UNSUPPORTED ? UNSUPPORTED : FAILED;
    }
  }
  kiln_model *m = NULL;
  kiln_status st;
  for (;;) {
    kiln_onnx_options o = {n_fixed, fixed, values, &needed};
    st = kiln_onnx_load(model_path, &o, &m);
    if (st != KILN_ERR_UNSUPPORTED || needed < 0 || needed >= n_in || n_fixed == MAX_IO) break;
    fixed[n_fixed] = needed, values[n_fixed++] = in[needed];
  }
  if (st != KILN_OK) {
    snprintf(why, cap, "%s", kiln_last_error());
    return st == KILN_ERR_UNSUPPORTED ? UNSUPPORTED : FAILED;
  }
  kiln_tensor *run_in[MAX_IO];
  int n_run = 0;
  for (int k = 0; k < n_in; k++) {
    bool is_fixed = false;
    for (int f = 0; f < n_fixed; f++) is_fixed = is_fixed || fixed[f] == k;
    if (!is_fixed) run_in[n_run++] = in[k];
  }
  outcome r = PASSED;
  if (kiln_model_num_outputs(m) != n_want) {
    snprintf(why, cap, "the model has %d outputs, the data set %d", kiln_model_num_outputs(m), n_want);
    r = FAILED;
  } else if ((st = kiln_model_run(m, n_run, run_in, got)) != KILN_OK) {
    snprintf(why, cap, "%s", kiln_last_error());
    r = FAILED;
  }
  for (int k = 0; r == PASSED && k < n_want; k++) {
    char detail[512];
    if (!matches(got[k], want[k], detail, sizeof detail)) {
      snprintf(why, cap, "output %d: %s", k, detail);
      r = FAILED;
    }
  }
  kiln_model_free(m);
  return r;
}

static outcome run_case(const char *dir, char *why, size_t cap) {
  char model[4096], set[4096];
  snprintf(model, sizeof model, "%s/model.onnx", dir);
  outcome r = PASSED;
  int sets = 0;
  for (int s = 0; s < 1000 && r == PASSED; s++) {
    snprintf(set, sizeof set, "%s/test_data_set_%d", dir, s);
    if (!is_dir(set)) break;
    sets++;
    kiln_scope_begin();
    r = run_set(model, set, why, cap);
    kiln_scope_end();
  }
  if (sets == 0) {
    snprintf(why, cap, "no test_data_set_0");
    return FAILED;
  }
  return r;
}

static op_row *row_for(op_row **rows, int *n, const char *key) {
  for (int i = 0; i < *n; i++)
    if (!strcmp((*rows)[i].key, key)) return &(*rows)[i];
  op_row *grown = realloc(*rows, (size_t)(*n + 1) * sizeof(op_row));
  if (!grown) return NULL;
  *rows = grown;
  op_row *r = &grown[(*n)++];
  memset(r, 0, sizeof *r);
  snprintf(r->key, sizeof r->key, "%s", key);
  return r;
}

static int by_key(const void *a, const void *b) { return strcmp(((const op_row *)a)->key, ((const op_row *)b)->key); }

int onnx_test_main(int argc, char **argv) {
  const char *dir = NULL;
  bool verbose = false;
  for (int i = 0; i < argc; i++) {
    if (!strcmp(argv[i], "--verbose") || !strcmp(argv[i], "-v")) {
      verbose = true;
    } else if (argv[i][0] == '-' || dir) {
      fprintf(stderr, "kiln onnx-test: unexpected argument '%s' (see kiln onnx-test --help)\n", argv[i]);
      return 2;
    } else {
      dir = argv[i];
    }
  }
  if (!dir) {
    fprintf(stderr, "kiln onnx-test: DIR is missing (see kiln onnx-test --help)\n");
    return 2;
  }
  if (!is_dir(dir)) {
    fprintf(stderr, "kiln onnx-test: %s: not a directory\n", dir);
    return 3;
  }
  path_list cases = {0};
  find_cases(dir, &cases, 0);
  qsort(cases.paths, cases.n, sizeof(char *), by_name);
  op_row *rows = NULL;
  int n_rows = 0, totals[3] = {0, 0, 0};
  for (size_t c = 0; c < cases.n; c++) {
    char why[1024] = "", model[4096], types[256] = "";
    snprintf(model, sizeof model, "%s/model.onnx", cases.paths[c]);
    kiln_onnx_op_types(model, types, sizeof types);
    for (char *p = types; *p; p++)
      if (*p == ' ') *p = '+';
    outcome r = run_case(cases.paths[c], why, sizeof why);
    const char *name = strrchr(cases.paths[c], '/') ? strrchr(cases.paths[c], '/') + 1 : cases.paths[c];
    if (r == FAILED) printf("FAIL %s: %s\n", name, why);
    if (r == UNSUPPORTED && verbose) printf("unsupported %s: %s\n", name, why);
    op_row *row = row_for(&rows, &n_rows, *types ? types : "(no nodes)");
    if (row && r == PASSED) row->passed++;
    if (row && r == FAILED) row->failed++;
    if (row && r == UNSUPPORTED) row->unsupported++;
    totals[r]++;
  }
  qsort(rows, (size_t)n_rows, sizeof(op_row), by_key);
  printf("\n%-40s %7s %7s %12s\n", "op", "passed", "failed", "unsupported");
  for (int i = 0; i < n_rows; i++)
    printf("%-40s %7d %7d %12d\n", rows[i].key, rows[i].passed, rows[i].failed, rows[i].unsupported);
  printf("%-40s %7d %7d %12d\n", "total", totals[PASSED], totals[FAILED], totals[UNSUPPORTED]);
  int supported = totals[PASSED] + totals[FAILED];
  printf("%zu cases: %d passed, %d failed, %d unsupported; %.1f%% of the supported cases pass\n", cases.n,
         totals[PASSED], totals[FAILED], totals[UNSUPPORTED], supported ? 100.0 * totals[PASSED] / supported : 100.0);
  for (size_t c = 0; c < cases.n; c++) free(cases.paths[c]);
  free(cases.paths);
  free(rows);
  return totals[FAILED] ? 1 : 0;
}
