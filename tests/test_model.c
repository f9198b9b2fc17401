/* Native export and loading (kiln_block_export, kiln_model_load).
 *
 * An MLP and a LeNet-like CNN built from layers, hybridized, exported and
 * loaded give the same bits as the block, on the input they were traced
 * with and on new ones, through the same plan (same steps, same arena); a
 * small CNN written with plain ops exports to exactly the file that
 * tests/fixtures/bad_model/make.py writes from the format's definition
 * (docs/format.md); a file whose batch dim is unknown runs at any batch;
 * captured constants, creation ops and infinite attributes survive the
 * trip; the export takes the latest inference plan and refuses without
 * one; and a corpus of malformed files (tests/fixtures/bad_model/), one
 * defect each, yields each its status and message. Every truncation of a
 * good file fails, and each allocation of a load or an export fails in
 * turn without a crash, a leak or a temporary file left behind. */
#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "graph/graph.h"
#include "io/model.h"
#include "nn/nn.h"
#include "testutil.h"

static void tmp_prefix(char *buf, size_t cap, const char *name) {
  const char *dir = getenv("TMPDIR");
  snprintf(buf, cap, "%s/kiln_test_model_%ld_%s", dir && *dir ? dir : "/tmp", (long)getpid(), name);
}

static void remove_pair(const char *prefix) {
  char path[600];
  snprintf(path, sizeof path, "%s.kiln.json", prefix);
  remove(path);
  snprintf(path, sizeof path, "%s.safetensors", prefix);
  remove(path);
}

static char *read_all(const char *path, size_t *len) {
  FILE *f = fopen(path, "rb");
  if (!f) return NULL;
  fseek(f, 0, SEEK_END);
  long n = ftell(f);
  fseek(f, 0, SEEK_SET);
  char *buf = malloc(n > 0 ? (size_t)n + 1 : 1);
  *len = n > 0 ? fread(buf, 1, (size_t)n, f) : 0;
  buf[*len] = '\0';
  fclose(f);
  return buf;
}

/* Bit equality of two concrete tensors, the first difference printed. */
static bool same_bits(const char *label, kiln_tensor *got, kiln_tensor *want) {
  if (!tu_ok(label, got) || !tu_ok(label, want)) return false;
  if (kiln_tensor_dtype(got) != kiln_tensor_dtype(want) || kiln_tensor_ndim(got) != kiln_tensor_ndim(want) ||
      kiln_tensor_numel(got) != kiln_tensor_numel(want)) {
    fprintf(stderr, "%s: dtype or shape differs\n", label);
    return false;
  }
  for (int d = 0; d < kiln_tensor_ndim(want); d++)
    if (kiln_tensor_dim(got, d) != kiln_tensor_dim(want, d)) {
      fprintf(stderr, "%s: dim %d is %lld, want %lld\n", label, d, (long long)kiln_tensor_dim(got, d),
              (long long)kiln_tensor_dim(want, d));
      return false;
    }
  size_t bytes = (size_t)kiln_tensor_numel(want) * kiln_dtype_size(kiln_tensor_dtype(want));
  unsigned char *a = malloc(bytes + 1), *b = malloc(bytes + 1);
  bool same = kiln_tensor_copy_to(got, a, bytes) == KILN_OK && kiln_tensor_copy_to(want, b, bytes) == KILN_OK;
  size_t es = kiln_dtype_size(kiln_tensor_dtype(want));
  for (size_t i = 0; same && i < bytes; i += es)
    if (memcmp(a + i, b + i, es) != 0) {
      float x = 0, y = 0;
      if (es == 4) memcpy(&x, a + i, 4), memcpy(&y, b + i, 4);
      fprintf(stderr, "%s: element %zu differs: %.9g (loaded) vs %.9g (block), tolerance 0 (bits)\n", label, i / es,
              (double)x, (double)y);
      same = false;
    }
  free(a);
  free(b);
  return same;
}

/* ------------------------------------------------------------ models */

static kiln_block *mlp(void) {
  kiln_block *net = kiln_nn_sequential();
  kiln_block_add_child(net, NULL, kiln_nn_dense(16, KILN_ACT_RELU));
  assert_int_equal(kiln_block_add_child(net, NULL, kiln_nn_dense(10, KILN_ACT_NONE)), KILN_OK);
  return net;
}

static kiln_block *lenet(void) {
  kiln_block *net = kiln_nn_sequential();
  kiln_conv2d_layer_params c1 = kiln_conv2d_layer_params_default(6, 5, 5),
                           c2 = kiln_conv2d_layer_params_default(16, 5, 5);
  c1.conv.padding[0] = c1.conv.padding[1] = 2;
  c1.activation = c2.activation = KILN_ACT_RELU;
  kiln_pool2d_params pool = kiln_pool2d_params_default(2, 2);
  kiln_block_add_child(net, NULL, kiln_nn_conv2d(&c1));
  kiln_block_add_child(net, NULL, kiln_nn_max_pool2d(&pool));
  kiln_block_add_child(net, NULL, kiln_nn_conv2d(&c2));
  kiln_block_add_child(net, NULL, kiln_nn_avg_pool2d(&pool));
  kiln_block_add_child(net, NULL, kiln_nn_flatten());
  kiln_block_add_child(net, NULL, kiln_nn_dense(120, KILN_ACT_RELU));
  kiln_block_add_child(net, NULL, kiln_nn_dense(84, KILN_ACT_RELU));
  assert_int_equal(kiln_block_add_child(net, NULL, kiln_nn_dense(10, KILN_ACT_NONE)), KILN_OK);
  return net;
}

/* The block's output and the loaded model's on x, bit for bit. */
static void expect_same_outputs(const char *label, kiln_block *net, kiln_model *m, kiln_tensor *x) {
  kiln_scope_begin();
  kiln_tensor *want = kiln_block_call(net, x), *got = NULL;
  assert_int_equal(kiln_model_run(m, 1, &x, &got), KILN_OK);
  assert_true(same_bits(label, got, want));
  kiln_scope_end();
}

/* Layers, hybridized and called once, exported and loaded: the model is
 * the block's plan (the same steps and arena) and gives the block's bits. */
static void round_trips_bit_for_bit(void **state) {
  (void)state;
  static const struct {
    const char *name;
    kiln_block *(*make)(void);
    int ndim;
    int64_t shape[4];
  } cases[] = {{"mlp", mlp, 2, {4, 20}}, {"lenet", lenet, 4, {2, 1, 28, 28}}};
  for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
    kiln_seed(11);
    kiln_block *net = cases[c].make();
    assert_int_equal(kiln_block_initialize(net, NULL, false), KILN_OK);
    assert_int_equal(kiln_block_hybridize(net, NULL), KILN_OK);
    kiln_tensor *x = tu_track(tu_random(KILN_F32, cases[c].ndim, cases[c].shape, 3 + c, -1, 1));
    kiln_scope_begin();
    TU_OK(kiln_block_call(net, x));
    kiln_scope_end();
    char prefix[512];
    tmp_prefix(prefix, sizeof prefix, cases[c].name);
    assert_int_equal(kiln_block_export(net, prefix), KILN_OK);
    tu_expect_no_temporaries(prefix);
    kiln_model *m = kiln_model_load(prefix);
    if (!m) fprintf(stderr, "%s\n", kiln_last_error());
    assert_non_null(m);
    expect_same_outputs(cases[c].name, net, m, x);
    for (uint64_t seed = 100; seed < 103; seed++) {
      kiln_tensor *x2 = tu_track(tu_random(KILN_F32, cases[c].ndim, cases[c].shape, seed, -3, 3));
      expect_same_outputs(cases[c].name, net, m, x2);
    }

    /* The same plan: the passes find the same steps and memory. */
    kiln_plan_stats ps = kiln_plan_get_stats(hybrid_inference_plan(net));
    kiln_model_stats ms = kiln_model_get_stats(m);
    assert_int_equal(ms.steps, ps.steps);
    assert_int_equal(ms.arena_bytes, ps.arena_bytes);

    /* Introspection: the block's input and output, its parameters. */
    assert_int_equal(kiln_model_num_inputs(m), 1);
    assert_int_equal(kiln_model_num_outputs(m), 1);
    kiln_model_value v;
    assert_int_equal(kiln_model_input(m, 0, &v), KILN_OK);
    assert_string_equal(v.name, "data0");
    assert_int_equal(v.dtype, KILN_F32);
    assert_int_equal(v.ndim, cases[c].ndim);
    assert_memory_equal(v.shape, cases[c].shape, sizeof(int64_t) * (size_t)v.ndim);
    assert_int_equal(kiln_model_output(m, 0, &v), KILN_OK);
    assert_string_equal(v.name, "output0");
    assert_int_equal(v.ndim, 2);
    assert_int_equal(v.shape[0], cases[c].shape[0]);
    assert_int_equal(v.shape[1], 10);
    kiln_param_list params;
    assert_int_equal(kiln_block_collect_params(net, &params), KILN_OK);
    int64_t elements = 0;
    for (int i = 0; i < params.n; i++) elements += kiln_tensor_numel(params.tensors[i]);
    assert_int_equal(ms.parameters, params.n);
    assert_int_equal(ms.parameter_elements, elements);
    assert_int_equal(ms.parameter_bytes, 4 * elements);

    /* The weights file is plain safetensors under the parameters' paths. */
    char st_path[600];
    snprintf(st_path, sizeof st_path, "%s.safetensors", prefix);
    int n = 0;
    char **names = NULL;
    kiln_tensor **ts = NULL;
    assert_int_equal(kiln_load_safetensors(st_path, &n, &names, &ts), KILN_OK);
    assert_int_equal(n, params.n);
    for (int i = 0; i < params.n; i++) {
      int j = 0;
      while (j < n && strcmp(names[j], params.names[i])) j++;
      assert_true(j < n);
      assert_true(same_bits(params.names[i], ts[j], params.tensors[i]));
    }
    kiln_named_tensors_free(n, names, ts);
    kiln_param_list_free(&params);

    /* Op counts: in name order, summing to the nodes. */
    int total = 0;
    const char *prev = "";
    for (int i = 0; i < kiln_model_num_op_kinds(m); i++) {
      const char *op;
      int count;
      assert_int_equal(kiln_model_op_count(m, i, &op, &count), KILN_OK);
      assert_true(strcmp(prev, op) < 0);
      assert_true(count > 0);
      prev = op;
      total += count;
    }
    assert_int_equal(total, ms.nodes);
    kiln_model_free(m);
    kiln_block_release(net);
    remove_pair(prefix);
  }
}

/* ------------------------------------------------------------ the format by example */

/* A small CNN in plain ops, with its parameters in two child blocks, so
 * that the file does not depend on how the layers are written. */
static kiln_tensor *holder_forward(kiln_block *self, int n, kiln_tensor *const *in) {
  (void)self, (void)n;
  return in[0];
}

static kiln_tensor *tiny_cnn_forward(kiln_block *self, int n, kiln_tensor *const *in) {
  (void)n;
  kiln_block *conv = kiln_block_child_named(self, "conv"), *fc = kiln_block_child_named(self, "fc");
  kiln_conv2d_params cp = kiln_conv2d_params_default();
  kiln_pool2d_params pp = kiln_pool2d_params_default(2, 2);
  kiln_tensor *h = kiln_conv2d(in[0], kiln_block_param(conv, "weight"), kiln_block_param(conv, "bias"), &cp);
  h = kiln_max_pool2d(kiln_relu(h), &pp);
  h = kiln_reshape(h, 2, TU_SHAPE(1, 8));
  return kiln_linear(h, kiln_block_param(fc, "weight"), kiln_block_param(fc, "bias"));
}

static kiln_block *tiny_cnn(void) {
  kiln_block *net = kiln_block_new("TinyCNN", tiny_cnn_forward, NULL, NULL);
  kiln_block *conv = kiln_block_new("Params", holder_forward, NULL, NULL);
  kiln_block *fc = kiln_block_new("Params", holder_forward, NULL, NULL);
  assert_int_equal(kiln_block_add_param(conv, "weight", KILN_F32, 4, TU_SHAPE(2, 1, 3, 3), NULL, KILN_GRAD_WRITE),
                   KILN_OK);
  kiln_init zeros = kiln_init_constant(0);
  assert_int_equal(kiln_block_add_param(conv, "bias", KILN_F32, 1, TU_SHAPE(2), &zeros, KILN_GRAD_WRITE), KILN_OK);
  assert_int_equal(kiln_block_add_param(fc, "weight", KILN_F32, 2, TU_SHAPE(3, 8), NULL, KILN_GRAD_WRITE), KILN_OK);
  assert_int_equal(kiln_block_add_param(fc, "bias", KILN_F32, 1, TU_SHAPE(3), &zeros, KILN_GRAD_WRITE), KILN_OK);
  assert_int_equal(kiln_block_add_child(net, "conv", conv), KILN_OK);
  assert_int_equal(kiln_block_add_child(net, "fc", fc), KILN_OK);
  assert_int_equal(kiln_block_initialize(net, NULL, false), KILN_OK);
  return net;
}

static void seed_prefix(char *buf, size_t cap, const char *name) {
  snprintf(buf, cap, "%s/model_seeds/%s", KILN_FIXTURE_DIR, name);
}

/* kiln writes what make.py writes from the format's definition, byte for
 * byte, and reads it back into a model that agrees with the block. */
static void exports_what_the_format_defines(void **state) {
  (void)state;
  char seed[512], st_path[600], json_path[600], prefix[512];
  seed_prefix(seed, sizeof seed, "tiny_cnn");
  snprintf(st_path, sizeof st_path, "%s.safetensors", seed);
  kiln_block *net = tiny_cnn();
  assert_int_equal(kiln_block_load_parameters(net, st_path), KILN_OK);
  assert_int_equal(kiln_block_hybridize(net, NULL), KILN_OK);
  kiln_tensor *x = tu_track(tu_random(KILN_F32, 4, TU_SHAPE(1, 1, 6, 6), 5, -1, 1));
  kiln_scope_begin();
  TU_OK(kiln_block_call(net, x));
  kiln_scope_end();
  tmp_prefix(prefix, sizeof prefix, "tiny_cnn");
  assert_int_equal(kiln_block_export(net, prefix), KILN_OK);
  size_t got_len = 0, want_len = 0;
  snprintf(json_path, sizeof json_path, "%s.kiln.json", prefix);
  char *got = read_all(json_path, &got_len);
  snprintf(json_path, sizeof json_path, "%s.kiln.json", seed);
  char *want = read_all(json_path, &want_len);
  assert_non_null(got);
  assert_non_null(want);
  if (got_len != want_len || memcmp(got, want, want_len)) {
    fprintf(stderr, "kiln wrote:\n%s\nmake.py wrote:\n%s\n", got, want);
    fail();
  }
  free(got);
  free(want);

  kiln_model *m = kiln_model_load(seed);
  if (!m) fprintf(stderr, "%s\n", kiln_last_error());
  assert_non_null(m);
  expect_same_outputs("tiny_cnn", net, m, x);
  static const struct {
    const char *op;
    int count;
  } ops[] = {{"conv2d", 1}, {"linear", 1}, {"max_pool2d", 1}, {"relu", 1}, {"reshape", 1}};
  assert_int_equal(kiln_model_num_op_kinds(m), 5);
  for (int i = 0; i < 5; i++) {
    const char *op;
    int count;
    assert_int_equal(kiln_model_op_count(m, i, &op, &count), KILN_OK);
    assert_string_equal(op, ops[i].op);
    assert_int_equal(count, ops[i].count);
  }
  kiln_model_stats ms = kiln_model_get_stats(m);
  assert_int_equal(ms.nodes, 5);
  assert_int_equal(ms.parameters, 4);
  assert_int_equal(ms.parameter_elements, 18 + 2 + 24 + 3);
  assert_int_equal(ms.parameter_bytes, 4 * (18 + 2 + 24 + 3));
  assert_int_equal(ms.arena_bytes, kiln_plan_get_stats(hybrid_inference_plan(net)).arena_bytes);
  assert_true(ms.arena_bytes > 0);
  kiln_model_free(m);
  kiln_block_release(net);
  remove_pair(prefix);
}

/* Every committed seed (they also seed fuzz_model) is a valid model. */
static void every_seed_loads_and_runs(void **state) {
  (void)state;
  char dir[512];
  snprintf(dir, sizeof dir, "%s/model_seeds", KILN_FIXTURE_DIR);
  DIR *d = opendir(dir);
  assert_non_null(d);
  int seeds = 0;
  for (struct dirent *e; (e = readdir(d));) {
    const char *dot = strstr(e->d_name, ".kiln.json");
    if (!dot || dot[10] != '\0') continue;
    char prefix[600];
    snprintf(prefix, sizeof prefix, "%s/%.*s", dir, (int)(dot - e->d_name), e->d_name);
    kiln_model *m = kiln_model_load(prefix);
    if (!m) fprintf(stderr, "%s: %s\n", e->d_name, kiln_last_error());
    assert_non_null(m);
    kiln_tensor *in[64];
    kiln_scope_begin();
    assert_true(kiln_model_num_inputs(m) <= 64);
    for (int i = 0; i < kiln_model_num_inputs(m); i++) {
      kiln_model_value v;
      assert_int_equal(kiln_model_input(m, i, &v), KILN_OK);
      int64_t shape[KILN_MAX_DIMS];
      for (int j = 0; j < v.ndim; j++) shape[j] = v.shape[j] < 0 ? 2 : v.shape[j]; /* an unknown dim takes any size */
      in[i] = kiln_full(v.dtype, v.ndim, shape, 0.5);
    }
    kiln_tensor *out[64];
    assert_true(kiln_model_num_outputs(m) <= 64);
    assert_int_equal(kiln_model_run(m, kiln_model_num_inputs(m), in, out), KILN_OK);
    for (int k = 0; k < kiln_model_num_outputs(m); k++) TU_OK(out[k]);
    kiln_scope_end();
    kiln_model_free(m);
    seeds++;
  }
  closedir(d);
  assert_true(seeds >= 4);
}

/* An unknown batch dim: the model runs at any batch, each sample as the
 * fixed-batch model computes it. A batch of one and a larger one may take
 * different GEMM paths (kiln's own loop, OpenBLAS), hence the tolerance. */
static void runs_at_any_batch(void **state) {
  (void)state;
  char any[512], one[512];
  seed_prefix(any, sizeof any, "any_batch");
  seed_prefix(one, sizeof one, "tiny_cnn");
  kiln_model *m = kiln_model_load(any), *m1 = kiln_model_load(one);
  assert_non_null(m);
  assert_non_null(m1);
  kiln_model_value v;
  assert_int_equal(kiln_model_input(m, 0, &v), KILN_OK);
  assert_memory_equal(v.shape, TU_SHAPE(-1, 1, 6, 6), 4 * sizeof(int64_t));
  assert_int_equal(kiln_model_output(m, 0, &v), KILN_OK);
  assert_int_equal(v.ndim, 2);
  assert_memory_equal(v.shape, TU_SHAPE(-1, 3), 2 * sizeof(int64_t));
  assert_int_equal(kiln_model_output(m1, 0, &v), KILN_OK);
  assert_memory_equal(v.shape, TU_SHAPE(1, 3), 2 * sizeof(int64_t));
  static const int64_t batches[] = {3, 1, 2, 3};
  for (size_t b = 0; b < sizeof batches / sizeof batches[0]; b++) {
    int64_t n = batches[b];
    kiln_tensor *x = tu_track(tu_random(KILN_F32, 4, TU_SHAPE(n, 1, 6, 6), 40 + b, -1, 1)), *y = NULL;
    kiln_scope_begin();
    assert_int_equal(kiln_model_run(m, 1, &x, &y), KILN_OK);
    assert_int_equal(kiln_tensor_dim(y, 0), n);
    for (int64_t i = 0; i < n; i++) {
      kiln_tensor *xi = kiln_contiguous(kiln_slice(x, 0, i, i + 1, 1)), *yi = NULL;
      assert_int_equal(kiln_model_run(m1, 1, &xi, &yi), KILN_OK);
      TU_CLOSE(kiln_slice(y, 0, i, i + 1, 1), yi, 1e-5, 1e-6);
    }
    kiln_scope_end();
  }
  kiln_scope_begin();
  kiln_tensor *bad = kiln_zeros(KILN_F32, 4, TU_SHAPE(2, 2, 6, 6)), *y = NULL;
  assert_int_equal(kiln_model_run(m, 1, &bad, &y), KILN_ERR_SHAPE);
  assert_string_equal(kiln_last_error(),
                      "kiln_model_run: input 0 ('data0') must be float32 [-1, 1, 6, 6], got float32 [2, 2, 6, 6]");
  kiln_scope_end();
  kiln_model_free(m);
  kiln_model_free(m1);
}

/* ------------------------------------------------------------ constants */

/* A forward that uses a tensor made outside it (captured: stored as a
 * constant), a creation op inside it (a node, folded by the compiler) and
 * a clip with an infinite bound (a float JSON cannot hold as a number). */
static kiln_tensor *with_constants_forward(kiln_block *self, int n, kiln_tensor *const *in) {
  (void)n;
  kiln_tensor *scale = kiln_block_user(self);
  kiln_tensor *w = kiln_block_param(self, "w");
  kiln_tensor *h = kiln_mul(in[0], scale);
  h = kiln_add(h, kiln_full(KILN_F32, 1, TU_SHAPE(3), 0.25));
  return kiln_clip(kiln_linear(h, w, NULL), 0, INFINITY);
}

static void release_tensor(void *t) { kiln_tensor_release(t); }

static void exports_constants_and_creation_ops(void **state) {
  (void)state;
  kiln_tensor *scale = kiln_keep(tu_random(KILN_F32, 1, TU_SHAPE(3), 21, 0.5, 2));
  kiln_block *net = kiln_block_new("WithConstants", with_constants_forward, scale, release_tensor);
  assert_non_null(net);
  assert_int_equal(kiln_block_add_param(net, "w", KILN_F32, 2, TU_SHAPE(4, 3), NULL, KILN_GRAD_WRITE), KILN_OK);
  kiln_seed(4);
  assert_int_equal(kiln_block_initialize(net, NULL, false), KILN_OK);
  assert_int_equal(kiln_block_hybridize(net, NULL), KILN_OK);
  kiln_tensor *x = tu_track(tu_random(KILN_F32, 2, TU_SHAPE(5, 3), 22, -2, 2));
  kiln_scope_begin();
  TU_OK(kiln_block_call(net, x));
  kiln_scope_end();
  char prefix[512], path[600];
  tmp_prefix(prefix, sizeof prefix, "constants");
  assert_int_equal(kiln_block_export(net, prefix), KILN_OK);
  snprintf(path, sizeof path, "%s.kiln.json", prefix);
  size_t len;
  char *json = read_all(path, &len);
  assert_non_null(json);
  assert_non_null(strstr(json, "{\"parameter\": \"const.1\"}"));
  assert_non_null(strstr(json, "\"op\": \"full\", \"inputs\": []"));
  assert_non_null(strstr(json, "\"max\": \"inf\""));
  free(json);
  int n = 0;
  char **names = NULL;
  kiln_tensor **ts = NULL;
  snprintf(path, sizeof path, "%s.safetensors", prefix);
  assert_int_equal(kiln_load_safetensors(path, &n, &names, &ts), KILN_OK);
  assert_int_equal(n, 2);
  assert_string_equal(names[0], "const.1");
  assert_true(same_bits("const.1", ts[0], scale));
  assert_string_equal(names[1], "w");
  kiln_named_tensors_free(n, names, ts);
  kiln_model *m = kiln_model_load(prefix);
  if (!m) fprintf(stderr, "%s\n", kiln_last_error());
  assert_non_null(m);
  expect_same_outputs("constants", net, m, x);
  kiln_model_free(m);
  kiln_block_release(net);
  remove_pair(prefix);
}

/* ------------------------------------------------------------ which plan */

static void expect_exported_batch(kiln_block *net, const char *prefix, int64_t batch) {
  assert_int_equal(kiln_block_export(net, prefix), KILN_OK);
  kiln_model *m = kiln_model_load(prefix);
  assert_non_null(m);
  kiln_model_value v;
  assert_int_equal(kiln_model_input(m, 0, &v), KILN_OK);
  assert_int_equal(v.shape[0], batch);
  kiln_model_free(m);
}

/* The most recently used inference plan; recorded and training calls do
 * not count; overwriting goes through temporaries that do not stay. */
static void exports_the_latest_inference_plan(void **state) {
  (void)state;
  kiln_seed(1);
  kiln_block *net = mlp();
  assert_int_equal(kiln_block_initialize(net, NULL, false), KILN_OK);
  assert_int_equal(kiln_block_hybridize(net, NULL), KILN_OK);
  kiln_tensor *x4 = tu_track(tu_random(KILN_F32, 2, TU_SHAPE(4, 20), 1, -1, 1));
  kiln_tensor *x2 = tu_track(tu_random(KILN_F32, 2, TU_SHAPE(2, 20), 2, -1, 1));
  kiln_tensor *x3 = tu_track(tu_random(KILN_F32, 2, TU_SHAPE(3, 20), 3, -1, 1));
  char prefix[512];
  tmp_prefix(prefix, sizeof prefix, "latest");
  kiln_scope_begin();
  TU_OK(kiln_block_call(net, x4));
  TU_OK(kiln_block_call(net, x2));
  expect_exported_batch(net, prefix, 2);
  TU_OK(kiln_block_call(net, x4)); /* from the cache: used, not traced */
  expect_exported_batch(net, prefix, 4);
  kiln_record_begin(true);
  TU_OK(kiln_block_call(net, x3));
  kiln_record_end();
  kiln_record_begin(false);
  TU_OK(kiln_block_call(net, x3));
  kiln_record_end();
  expect_exported_batch(net, prefix, 4);
  kiln_scope_end();
  tu_expect_no_temporaries(prefix);
  kiln_block_release(net);
  remove_pair(prefix);
}

static void export_failures(void **state) {
  (void)state;
  char prefix[512];
  tmp_prefix(prefix, sizeof prefix, "failures");
  assert_int_equal(kiln_block_export(NULL, prefix), KILN_ERR_INVALID_ARGUMENT);
  assert_string_equal(kiln_last_error(), "kiln_block_export: block is NULL");
  kiln_block *net = mlp();
  assert_int_equal(kiln_block_initialize(net, NULL, false), KILN_OK);
  assert_int_equal(kiln_block_export(net, NULL), KILN_ERR_INVALID_ARGUMENT);
  assert_string_equal(kiln_last_error(), "kiln_block_export: path prefix is NULL or empty");
  assert_int_equal(kiln_block_export(net, ""), KILN_ERR_INVALID_ARGUMENT);

  assert_int_equal(kiln_block_export(net, prefix), KILN_ERR_INVALID_ARGUMENT);
  assert_non_null(strstr(kiln_last_error(),
                         "kiln_block_export: Sequential is not hybridized: call kiln_block_hybridize, "
                         "then call the block once"));
  assert_int_equal(kiln_block_hybridize(net, NULL), KILN_OK);
  assert_int_equal(kiln_block_export(net, prefix), KILN_ERR_INVALID_ARGUMENT);
  assert_non_null(strstr(kiln_last_error(), "Sequential has no compiled inference call yet"));
  kiln_tensor *x = tu_track(tu_random(KILN_F32, 2, TU_SHAPE(4, 20), 1, -1, 1));
  kiln_scope_begin();
  kiln_record_begin(true);
  TU_OK(kiln_block_call(net, x));
  kiln_record_end();
  assert_int_equal(kiln_block_export(net, prefix), KILN_ERR_INVALID_ARGUMENT);
  assert_non_null(strstr(kiln_last_error(), "has no compiled inference call yet"));
  TU_OK(kiln_block_call(net, x));
  kiln_scope_end();
  assert_int_equal(access(prefix, F_OK), -1);

  assert_int_equal(kiln_block_export(net, "/nonexistent-dir-kiln/m"), KILN_ERR_IO);
  assert_non_null(strstr(kiln_last_error(),
                         "kiln_block_export: kiln_save_safetensors: /nonexistent-dir-kiln/m.safetensors: "
                         "cannot create"));
  kiln_block_release(net);
}

/* A forward that fixes its batch as traced: reshape to [B, -1]. */
static kiln_tensor *pinned_forward(kiln_block *self, int n, kiln_tensor *const *in) {
  (void)n;
  kiln_tensor *x = in[0];
  return kiln_block_call(kiln_block_child(self, 0), kiln_reshape(x, 2, (int64_t[]){kiln_tensor_dim(x, 0), -1}));
}

/* With a dynamic batch the file declares dim 0 unknown and the loaded
 * model runs at other batch sizes with the bits of the block at those
 * sizes; a forward that fixes the batch is refused, saying where. */
static void exports_a_dynamic_batch(void **state) {
  (void)state;
  char prefix[512];
  tmp_prefix(prefix, sizeof prefix, "dynamic");
  kiln_block *net = lenet();
  assert_int_equal(kiln_block_initialize(net, NULL, false), KILN_OK);
  assert_int_equal(kiln_block_hybridize(net, NULL), KILN_OK);
  kiln_scope_begin();
  TU_OK(kiln_block_call(net, tu_random(KILN_F32, 4, TU_SHAPE(4, 1, 28, 28), 1, 0, 1)));
  kiln_scope_end();
  kiln_export_options o = {.dynamic_batch = true};
  assert_int_equal(kiln_block_export_ex(net, prefix, &o), KILN_OK);
  kiln_model *m = kiln_model_load(prefix);
  assert_non_null(m);
  kiln_model_value in;
  assert_int_equal(kiln_model_input(m, 0, &in), KILN_OK);
  assert_int_equal(in.shape[0], -1);
  const int64_t batches[] = {1, 7, 4, 13};
  for (size_t i = 0; i < sizeof batches / sizeof *batches; i++) {
    kiln_tensor *x = tu_track(tu_random(KILN_F32, 4, TU_SHAPE(batches[i], 1, 28, 28), 10 + i, 0, 1));
    expect_same_outputs("dynamic batch", net, m, x);
  }
  kiln_model_free(m);
  remove_pair(prefix);
  kiln_block_release(net);

  kiln_block *pinned = kiln_block_new("Pinned", pinned_forward, NULL, NULL);
  assert_int_equal(kiln_block_add_child(pinned, NULL, kiln_nn_dense(3, KILN_ACT_NONE)), KILN_OK);
  assert_int_equal(kiln_block_initialize(pinned, NULL, false), KILN_OK);
  assert_int_equal(kiln_block_hybridize(pinned, NULL), KILN_OK);
  kiln_scope_begin();
  TU_OK(kiln_block_call(pinned, tu_random(KILN_F32, 3, TU_SHAPE(2, 3, 4), 2, 0, 1)));
  kiln_scope_end();
  assert_int_equal(kiln_block_export_ex(pinned, prefix, &o), KILN_ERR_SHAPE);
  /* [2, -1] at batch 3 is [2, 18]: the Dense after it is where it breaks. */
  assert_non_null(strstr(kiln_last_error(), "with a dynamic batch, the graph does not hold for batch 3: node #4 linear"));
  assert_int_equal(access(prefix, F_OK), -1);
  kiln_block_release(pinned);
}

/* ------------------------------------------------------------ loading and running */

static void load_and_run_failures(void **state) {
  (void)state;
  assert_null(kiln_model_load(NULL));
  assert_string_equal(kiln_last_error(), "kiln_model_load: path prefix is NULL or empty");
  assert_null(kiln_model_load("/nonexistent-dir-kiln/m"));
  assert_string_equal(kiln_last_error(),
                      "kiln_model_load: /nonexistent-dir-kiln/m.kiln.json: cannot open: No such file or directory");
  char seed[512];
  seed_prefix(seed, sizeof seed, "tiny_cnn");
  kiln_model *m = kiln_model_load(seed);
  assert_non_null(m);
  kiln_scope_begin();
  kiln_tensor *out = NULL, *good = kiln_zeros(KILN_F32, 4, TU_SHAPE(1, 1, 6, 6));
  kiln_tensor *in[2] = {good, good};
  assert_int_equal(kiln_model_run(m, 2, in, &out), KILN_ERR_INVALID_ARGUMENT);
  assert_string_equal(kiln_last_error(), "kiln_model_run: the model takes 1 input, got 2");
  in[0] = kiln_zeros(KILN_F32, 4, TU_SHAPE(2, 1, 6, 6));
  assert_int_equal(kiln_model_run(m, 1, in, &out), KILN_ERR_SHAPE);
  assert_string_equal(kiln_last_error(),
                      "kiln_model_run: input 0 ('data0') must be float32 [1, 1, 6, 6], got float32 [2, 1, 6, 6]");
  in[0] = kiln_zeros(KILN_F64, 4, TU_SHAPE(1, 1, 6, 6));
  assert_int_equal(kiln_model_run(m, 1, in, &out), KILN_ERR_SHAPE);
  in[0] = NULL;
  assert_int_equal(kiln_model_run(m, 1, in, &out), KILN_ERR_INVALID_ARGUMENT);
  assert_string_equal(kiln_last_error(), "kiln_model_run: input 0 ('data0') is NULL");
  in[0] = kiln_reshape(good, 1, TU_SHAPE(5));
  assert_int_equal(kiln_model_run(m, 1, in, &out), KILN_ERR_SHAPE);
  assert_non_null(strstr(kiln_last_error(), "kiln_model_run: input 0 ('data0') carries a failure: reshape"));
  assert_null(out);
  assert_int_equal(kiln_model_run(NULL, 1, in, &out), KILN_ERR_INVALID_ARGUMENT);
  assert_int_equal(kiln_model_run(m, 1, in, NULL), KILN_ERR_INVALID_ARGUMENT);

  kiln_scope_end();

  /* Loading inside a trace would record the model into it. */
  kiln_graph *g = kiln_graph_new();
  assert_int_equal(graph_trace_begin(g), KILN_OK);
  kiln_model *traced = NULL;
  kiln_status st = model_load_files(seed, &traced);
  graph_trace_end();
  kiln_graph_release(g);
  assert_int_equal(st, KILN_ERR_INVALID_ARGUMENT);
  assert_null(traced);
  assert_non_null(strstr(kiln_last_error(), "cannot load a model while a trace is active on this thread"));

  kiln_model_value v;
  assert_int_equal(kiln_model_input(m, 1, &v), KILN_ERR_OUT_OF_RANGE);
  assert_string_equal(kiln_last_error(), "kiln_model_input: 1 is not in [0, 1)");
  assert_int_equal(kiln_model_output(m, -1, &v), KILN_ERR_OUT_OF_RANGE);
  assert_int_equal(kiln_model_output(m, 0, NULL), KILN_ERR_INVALID_ARGUMENT);
  const char *op;
  int count;
  assert_int_equal(kiln_model_op_count(m, 5, &op, &count), KILN_ERR_OUT_OF_RANGE);
  assert_int_equal(kiln_model_num_inputs(NULL), 0);
  assert_int_equal(kiln_model_num_op_kinds(NULL), 0);
  assert_int_equal(kiln_model_get_stats(NULL).nodes, 0);
  kiln_model_free(m);
  kiln_model_free(NULL);
}

/* Every prefix of a good file is malformed JSON. */
static void every_truncation_fails(void **state) {
  (void)state;
  char seed[512], path[600];
  seed_prefix(seed, sizeof seed, "tiny_cnn");
  size_t json_len = 0, st_len = 0;
  snprintf(path, sizeof path, "%s.kiln.json", seed);
  char *json = read_all(path, &json_len);
  snprintf(path, sizeof path, "%s.safetensors", seed);
  char *weights = read_all(path, &st_len);
  assert_non_null(json);
  assert_non_null(weights);
  kiln_model *m = NULL;
  assert_int_equal(model_load_memory(json, json_len, weights, st_len, "mem", 0, &m), KILN_OK);
  kiln_model_free(m);
  for (size_t k = 0; k < json_len - 1; k++) {
    m = (kiln_model *)1;
    kiln_status st = model_load_memory(json, k, weights, st_len, "prefix", 0, &m);
    if (st != KILN_ERR_CORRUPT || m) {
      fprintf(stderr, "a %zu-byte prefix: %s: %s\n", k, kiln_status_name(st), kiln_last_error());
      fail();
    }
    assert_true(strncmp(kiln_last_error(), "kiln_model_load: prefix: json: offset ", 38) == 0);
  }
  /* The size limit the fuzzer uses. */
  assert_int_equal(model_load_memory(json, json_len, weights, st_len, "small", 100, &m), KILN_ERR_UNSUPPORTED);
  assert_null(m);
  assert_non_null(strstr(kiln_last_error(), "the model's values take more than the limit of 100 bytes"));
  free(json);
  free(weights);
}

/* ------------------------------------------------------------ malformed files */

/* One defect per model in tests/fixtures/bad_model/ (written by make.py
 * there): the status, and the message after "kiln_model_load: FILE: ",
 * FILE being the .kiln.json file or, when in_weights, the .safetensors
 * file (whose message comes from kiln_load_safetensors). "$/" stands for
 * the corpus directory. */
static const struct {
  const char *file;
  kiln_status st;
  bool in_weights;
  const char *text;
} bad_files[] = {
    {"arity_too_few", KILN_ERR_CORRUPT, false, "nodes[4] ('relu.4'): relu takes 1 input, the node gives 0"},
    {"arity_too_many", KILN_ERR_CORRUPT, false, "nodes[3] ('conv2d.3'): conv2d takes 2 to 3 inputs, the node gives 4"},
    {"arity_variadic_too_many", KILN_ERR_UNSUPPORTED, false,
     "nodes[4] ('concat.4'): 65 inputs (kiln runs ops of at most 64)"},
    {"attr_duplicate", KILN_ERR_CORRUPT, false, "nodes[6] ('reshape.6'): attribute 'shape' is given twice"},
    {"attr_float_string", KILN_ERR_CORRUPT, false,
     "nodes[4] ('leaky_relu.4'): attribute 'slope' must be a number (or \"inf\", \"-inf\", \"nan\"), not another "
     "string"},
    {"attr_int_fraction", KILN_ERR_CORRUPT, false,
     "nodes[3] ('conv2d.3'): attribute 'groups' must be an integer, not a number with a fraction or exponent"},
    {"attr_int_huge", KILN_ERR_OVERFLOW, false, "nodes[3] ('conv2d.3'): attribute 'groups' does not fit in int64"},
    {"attr_int_string", KILN_ERR_CORRUPT, false,
     "nodes[3] ('conv2d.3'): attribute 'groups' must be an integer, not a string"},
    {"attr_ints_fraction", KILN_ERR_CORRUPT, false,
     "nodes[6] ('reshape.6'): attribute 'shape'[1] is not written as an integer"},
    {"attr_ints_not_array", KILN_ERR_CORRUPT, false,
     "nodes[6] ('reshape.6'): attribute 'shape' is a number, not an array"},
    {"attr_ints_too_long", KILN_ERR_UNSUPPORTED, false,
     "nodes[6] ('reshape.6'): attribute 'shape' has 17 entries (kiln supports at most 16)"},
    {"attr_unknown", KILN_ERR_CORRUPT, false,
     "nodes[3] ('conv2d.3'): conv2d has no attribute 'strides' (it has stride, padding, dilation, groups)"},
    {"attrs_not_object", KILN_ERR_CORRUPT, false, "nodes[6] ('reshape.6'): attrs is an array, not an object"},
    {"duplicate_key", KILN_ERR_CORRUPT, false, "the document has the key 'version' twice"},
    {"file_has_extra", KILN_ERR_CORRUPT, false,
     "$/file_has_extra.safetensors holds a tensor 'fc.scale' that the model does not declare"},
    {"format_missing", KILN_ERR_CORRUPT, false, "the document has no 'format'"},
    {"format_other", KILN_ERR_CORRUPT, false, "format is 'onnx', not \"kiln.model\": not a kiln model"},
    {"input_dim_fraction", KILN_ERR_CORRUPT, false, "inputs[0] ('data0'): shape[1] is not written as an integer"},
    {"input_dim_huge", KILN_ERR_OVERFLOW, false, "inputs[0] ('data0'): shape[3] does not fit in int64"},
    {"input_dim_negative", KILN_ERR_CORRUPT, false,
     "inputs[0] ('data0'): shape[1] is -2, neither a size nor -1 (unknown)"},
    {"input_dtype_number", KILN_ERR_CORRUPT, false, "inputs[0] ('data0'): dtype is a number, not a string"},
    {"input_dtype_unknown", KILN_ERR_UNSUPPORTED, false,
     "inputs[0] ('data0'): dtype 'float16' is not a kiln dtype (float32, float64, int32, int64, uint8, bool)"},
    {"input_duplicate", KILN_ERR_CORRUPT, false, "inputs[1] has the name 'data0' of inputs[0]"},
    {"input_missing_shape", KILN_ERR_CORRUPT, false, "inputs[0] has no 'shape'"},
    {"input_name_empty", KILN_ERR_CORRUPT, false, "inputs[0]: name is empty"},
    {"input_name_nul", KILN_ERR_CORRUPT, false, "inputs[0]: name contains a NUL character"},
    {"input_not_object", KILN_ERR_CORRUPT, false, "inputs[0] is a string, not an object"},
    {"input_size_overflow", KILN_ERR_OVERFLOW, false,
     "inputs[0] ('data0'): the byte size of float32 [1, 1, 2147483648, 2147483648] overflows int64"},
    {"input_too_many_dims", KILN_ERR_UNSUPPORTED, false,
     "inputs[0] ('data0'): shape has 9 entries (kiln supports at most 8)"},
    {"inputs_not_array", KILN_ERR_CORRUPT, false, "inputs is a string, not an array"},
    {"json_nan", KILN_ERR_CORRUPT, false, "json: offset 41: expected a value, found 'N'"},
    {"json_trailing_comma", KILN_ERR_CORRUPT, false, "json: offset 950: expected a value, found ']'"},
    {"node_input_twice", KILN_ERR_CORRUPT, false, "nodes[1]: input 'data0' has a node already"},
    {"node_input_undeclared", KILN_ERR_CORRUPT, false, "nodes[0]: input 'image' is not declared in \"inputs\""},
    {"node_inputs_not_array", KILN_ERR_CORRUPT, false, "nodes[4] ('relu.4'): inputs is a number, not an array"},
    {"node_name_duplicate", KILN_ERR_CORRUPT, false, "nodes[4] has the name 'conv2d.3' of nodes[3]"},
    {"node_name_missing", KILN_ERR_CORRUPT, false, "nodes[4] has no 'name'"},
    {"node_not_object", KILN_ERR_CORRUPT, false, "nodes[4] is an array, not an object"},
    {"node_op_missing", KILN_ERR_CORRUPT, false, "nodes[4] has no 'op'"},
    {"node_parameter_twice", KILN_ERR_CORRUPT, false, "nodes[2]: parameter 'conv.weight' has a node already"},
    {"node_two_kinds", KILN_ERR_CORRUPT, false, "nodes[0] has an unknown key 'parameter'"},
    {"node_unknown_key", KILN_ERR_CORRUPT, false, "nodes[4] has an unknown key 'device'"},
    {"node_unknown_op", KILN_ERR_UNSUPPORTED, false, "nodes[4] ('frobnicate.4'): op 'frobnicate' is not one kiln has"},
    {"nodes_not_array", KILN_ERR_CORRUPT, false, "nodes is an object, not an array"},
    {"not_json", KILN_ERR_CORRUPT, false, "json: offset 194: string not closed before the end of the input"},
    {"op_cast_dtype", KILN_ERR_DTYPE, false, "nodes[4] ('cast.4'): cast: unknown dtype 99"},
    {"op_conv_groups", KILN_ERR_INVALID_ARGUMENT, false,
     "nodes[3] ('conv2d.3'): conv2d: groups must be positive, got 0"},
    {"op_linear_shapes", KILN_ERR_SHAPE, false,
     "nodes[9] ('linear.9'): linear: input [2, 4] does not end in weight [3, 8]'s in-dim 8"},
    {"op_reshape_count", KILN_ERR_SHAPE, false,
     "nodes[6] ('reshape.6'): reshape: cannot reshape [1, 2, 2, 2] (8 elements) into [1, 9] (9)"},
    {"op_split_nothing", KILN_ERR_CORRUPT, false,
     "nodes[4] ('split.4'): split would give 0 outputs (1 to 64 supported)"},
    {"output_name_duplicate", KILN_ERR_CORRUPT, false, "outputs[1] has the name 'output0' of outputs[0]"},
    {"output_no_value", KILN_ERR_CORRUPT, false, "outputs[0] has no 'value'"},
    {"output_parameter", KILN_ERR_CORRUPT, false,
     "outputs[0]: value [1, 0] is a parameter: an output must be an input or an op's result"},
    {"output_past_end", KILN_ERR_CORRUPT, false, "outputs[0]: value refers to node 10, past the last node"},
    {"outputs_empty", KILN_ERR_CORRUPT, false, "outputs is empty: a model computes something"},
    {"parameter_dim_unknown", KILN_ERR_CORRUPT, false, "parameters[1] ('conv.bias'): shape[0] is -1, negative"},
    {"parameter_duplicate", KILN_ERR_CORRUPT, false, "parameters[4] has the name 'conv.weight' of parameters[0]"},
    {"parameter_not_in_file", KILN_ERR_CORRUPT, false,
     "parameter 'fc.scale' is not in $/parameter_not_in_file.safetensors"},
    {"parameter_unused", KILN_ERR_CORRUPT, false, "parameter 'fc.scale' is declared but no node uses it"},
    {"parameter_wrong_dtype", KILN_ERR_DTYPE, false,
     "parameter 'fc.bias' is declared float64 [3], but $/parameter_wrong_dtype.safetensors holds float32 [3]"},
    {"parameter_wrong_shape", KILN_ERR_SHAPE, false,
     "parameter 'fc.weight' is declared float32 [8, 3], but $/parameter_wrong_shape.safetensors holds float32 [3, 8]"},
    {"ref_forward", KILN_ERR_CORRUPT, false, "nodes[4] ('relu.4'): input 0 refers to node 5, not an earlier node"},
    {"ref_fraction", KILN_ERR_CORRUPT, false, "nodes[4] ('relu.4'): input 0 is not a [node, output] pair of integers"},
    {"ref_negative", KILN_ERR_CORRUPT, false, "nodes[4] ('relu.4'): input 0 refers to node -1, a negative index"},
    {"ref_not_pair", KILN_ERR_CORRUPT, false, "nodes[4] ('relu.4'): input 0 is not a [node, output] pair of integers"},
    {"ref_output_index", KILN_ERR_CORRUPT, false,
     "nodes[4] ('relu.4'): input 0 refers to output 1 of node 3, which has 1 output"},
    {"ref_self", KILN_ERR_CORRUPT, false, "nodes[4] ('relu.4'): input 0 refers to node 4, not an earlier node"},
    {"root_array", KILN_ERR_CORRUPT, false, "the document is an array, not an object"},
    {"unknown_key", KILN_ERR_CORRUPT, false, "the document has an unknown key 'comment'"},
    {"version_newer", KILN_ERR_UNSUPPORTED, false, "version 2 is not one this kiln reads (it reads version 1)"},
    {"version_string", KILN_ERR_CORRUPT, false, "version is not an integer"},
    {"version_zero", KILN_ERR_CORRUPT, false, "version 0 is not one this kiln reads (it reads version 1)"},
    {"weights_truncated", KILN_ERR_CORRUPT, true,
     "tensor 'fc.bias': data_offsets [176, 188] run past the end of the 184-byte data buffer"},
};

/* text with "$/" replaced by the corpus directory. */
static void expand(char *buf, size_t cap, const char *text, const char *dir) {
  size_t used = 0;
  for (const char *p = text; *p && used + 1 < cap; p++) {
    if (p[0] == '$' && p[1] == '/') {
      used += (size_t)snprintf(buf + used, cap - used, "%s/", dir);
      p++;
    } else {
      buf[used++] = *p;
    }
  }
  buf[used < cap ? used : cap - 1] = '\0';
}

static void rejects_malformed_files(void **state) {
  (void)state;
  char dir[512];
  snprintf(dir, sizeof dir, "%s/bad_model", KILN_FIXTURE_DIR);
  enum { NB = sizeof bad_files / sizeof bad_files[0] };
  int wrong = 0;
  for (size_t i = 0; i < NB; i++) {
    char prefix[600], text[1024], want[2048];
    snprintf(prefix, sizeof prefix, "%s/%s", dir, bad_files[i].file);
    expand(text, sizeof text, bad_files[i].text, dir);
    snprintf(want, sizeof want, "kiln_model_load: %s%s%s: %s", bad_files[i].in_weights ? "kiln_load_safetensors: " : "",
             prefix, bad_files[i].in_weights ? ".safetensors" : ".kiln.json", text);
    kiln_model *m = (kiln_model *)1;
    kiln_status st = model_load_files(prefix, &m);
    if (st != bad_files[i].st || strcmp(kiln_last_error(), want) != 0 || m) {
      fprintf(stderr, "%s:\n  got  %s: %s\n  want %s: %s\n", bad_files[i].file, kiln_status_name(st), kiln_last_error(),
              kiln_status_name(bad_files[i].st), want);
      wrong++; /* the whole table is reported before failing */
      continue;
    }
    /* The public function fails the same way. */
    assert_null(kiln_model_load(prefix));
    assert_string_equal(kiln_last_error(), want);

    /* From memory: the same status and message, "mem" for the file. */
    char path[700];
    size_t json_len = 0, st_len = 0;
    snprintf(path, sizeof path, "%s.kiln.json", prefix);
    char *json = read_all(path, &json_len);
    snprintf(path, sizeof path, "%s.safetensors", prefix);
    char *weights = read_all(path, &st_len);
    assert_non_null(json);
    assert_non_null(weights);
    assert_int_equal(model_load_memory(json, json_len, weights, st_len, "mem", 0, &m), bad_files[i].st);
    assert_null(m);
    if (!strstr(bad_files[i].text, "$/")) {
      snprintf(want, sizeof want, "kiln_model_load: %s: %s",
               bad_files[i].in_weights ? "kiln_load_safetensors: weights" : "mem", text);
      assert_string_equal(kiln_last_error(), want);
    }
    free(json);
    free(weights);
  }
  assert_int_equal(wrong, 0);

  /* The corpus and this table list the same models, each a pair. */
  DIR *d = opendir(dir);
  assert_non_null(d);
  size_t files = 0;
  for (struct dirent *e; (e = readdir(d));) {
    if (e->d_name[0] == '.' || strcmp(e->d_name, "make.py") == 0) continue;
    files++;
    bool listed = false;
    for (size_t i = 0; i < NB && !listed; i++) {
      char a[256], b[256];
      snprintf(a, sizeof a, "%s.kiln.json", bad_files[i].file);
      snprintf(b, sizeof b, "%s.safetensors", bad_files[i].file);
      listed = strcmp(a, e->d_name) == 0 || strcmp(b, e->d_name) == 0;
    }
    if (!listed) {
      fprintf(stderr, "bad_model/%s is not in the table\n", e->d_name);
      closedir(d);
      fail();
    }
  }
  closedir(d);
  assert_int_equal(files, 2 * NB);
}

/* ------------------------------------------------------------ allocation failures */

/* Each allocation of a load (from files and from memory) and of an export
 * fails in turn: the outcome is success or KILN_ERR_OUT_OF_MEMORY, never a
 * crash, a leak or a temporary file left behind. */
static void allocation_failures(void **state) {
  (void)state;
  char seed[512], path[600];
  seed_prefix(seed, sizeof seed, "tiny_cnn");
  size_t json_len = 0, st_len = 0;
  snprintf(path, sizeof path, "%s.kiln.json", seed);
  char *json = read_all(path, &json_len);
  snprintf(path, sizeof path, "%s.safetensors", seed);
  char *weights = read_all(path, &st_len);
  assert_non_null(json);
  assert_non_null(weights);
  kiln_block *net = tiny_cnn();
  assert_int_equal(kiln_block_hybridize(net, NULL), KILN_OK);
  kiln_tensor *x = tu_track(tu_random(KILN_F32, 4, TU_SHAPE(1, 1, 6, 6), 5, -1, 1));
  kiln_scope_begin();
  TU_OK(kiln_block_call(net, x));
  kiln_scope_end();
  char prefix[512];
  tmp_prefix(prefix, sizeof prefix, "oom");
  long fail_at;
  for (fail_at = 0;; fail_at++) {
    kiln_waitall();
    tu_fail_allocation(fail_at);
    kiln_model *m1 = NULL, *m2 = NULL;
    kiln_status s1 = model_load_files(seed, &m1);
    kiln_status s2 = model_load_memory(json, json_len, weights, st_len, "mem", 0, &m2);
    kiln_status s3 = kiln_block_export(net, prefix);
    kiln_model_free(m1);
    kiln_model_free(m2);
    kiln_waitall();
    long asked = tu_allocations();
    tu_restore_allocator();
    assert_true(s1 == KILN_OK || s1 == KILN_ERR_OUT_OF_MEMORY);
    assert_true(s2 == KILN_OK || s2 == KILN_ERR_OUT_OF_MEMORY);
    assert_true(s3 == KILN_OK || s3 == KILN_ERR_OUT_OF_MEMORY);
    if (s1 != KILN_OK) assert_null(m1);
    if (s2 != KILN_OK) assert_null(m2);
    tu_expect_no_temporaries(prefix);
    if (s1 == KILN_OK && s2 == KILN_OK && s3 == KILN_OK && asked <= fail_at) break;
  }
  kiln_block_release(net);
  remove_pair(prefix);
  assert_true(fail_at > 50);
  free(json);
  free(weights);
}

int main(void) {
  const struct CMUnitTest tests[] = {
#define TEST(f) cmocka_unit_test_teardown(f, tu_release_tracked)
      TEST(round_trips_bit_for_bit),
      TEST(exports_what_the_format_defines),
      TEST(every_seed_loads_and_runs),
      TEST(runs_at_any_batch),
      TEST(exports_constants_and_creation_ops),
      TEST(exports_the_latest_inference_plan),
      TEST(export_failures),
    TEST(exports_a_dynamic_batch),
      TEST(load_and_run_failures),
      TEST(rejects_malformed_files),
      TEST(every_truncation_fails),
      TEST(allocation_failures),
#undef TEST
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
