/* ONNX export (kiln_block_export_onnx, kiln_model_export_onnx).
 *
 * Round trips kiln -> ONNX -> kiln (kiln_model_load on the .onnx) of an
 * MLP, LeNet and a CNN with batch norm, both pools and softmax agree with
 * the block: bit for bit where the import rebuilds the same ops (Gemm
 * with transB is kiln's linear again, Conv its conv2d, ...), and within
 * float rounding where it cannot: batch norm's epsilon is a float
 * attribute in ONNX (1e-5 is not a float; kiln adds it in double), and
 * GELU, rsqrt and the variance are compositions in opset 17, rounded at
 * each step. A graph of many ops runs at two batch sizes after a dynamic
 * batch export; a loaded model (native, and ONNX) exports again; an op
 * without an ONNX form fails naming it and leaves no file (nor replaces an
 * old one); each allocation of an export fails in turn without a crash, a
 * leak or a temporary left.
 *
 * With KILN_ONNX_EXPORT_DIR set (CTest sets it), the exported files are
 * also written there for tests/onnx_checker.py, the ONNX checker test. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "testutil.h"

static void tmp_path(char *buf, size_t cap, const char *name) {
  const char *dir = getenv("TMPDIR");
  snprintf(buf, cap, "%s/kiln_test_onnx_export_%ld_%s", dir && *dir ? dir : "/tmp", (long)getpid(), name);
}

/* Leaves a copy of path for the checker, when CTest asked for one. */
static void keep_for_checker(kiln_block *net, const kiln_model *m, const char *name, const kiln_export_options *o) {
  const char *dir = getenv("KILN_ONNX_EXPORT_DIR");
  if (!dir || !*dir) return;
  if (mkdir(dir, 0777) != 0 && errno != EEXIST) {
    fprintf(stderr, "cannot create %s: %s\n", dir, strerror(errno));
    fail();
  }
  char path[600];
  snprintf(path, sizeof path, "%s/%s.onnx", dir, name);
  kiln_status st = net ? kiln_block_export_onnx(net, path, o) : kiln_model_export_onnx(m, path);
  if (st != KILN_OK) fprintf(stderr, "%s\n", kiln_last_error());
  assert_int_equal(st, KILN_OK);
}

static bool exists(const char *path) {
  struct stat sb;
  return stat(path, &sb) == 0;
}

/* tol 0: bit equality. */
static bool agree(const char *label, kiln_tensor *got, kiln_tensor *want, double tol) {
  if (!tu_ok(label, got) || !tu_ok(label, want)) return false;
  if (tol > 0) return tu_close(label, got, want, tol, tol);
  int64_t n = kiln_tensor_numel(want);
  if (kiln_tensor_dtype(got) != kiln_tensor_dtype(want) || kiln_tensor_numel(got) != n ||
      kiln_tensor_ndim(got) != kiln_tensor_ndim(want)) {
    fprintf(stderr, "%s: dtype or shape differs\n", label);
    return false;
  }
  size_t es = kiln_dtype_size(kiln_tensor_dtype(want)), bytes = (size_t)n * es;
  unsigned char *a = malloc(bytes + 1), *b = malloc(bytes + 1);
  bool same = kiln_tensor_copy_to(got, a, bytes) == KILN_OK && kiln_tensor_copy_to(want, b, bytes) == KILN_OK;
  for (size_t i = 0; same && i < bytes; i += es)
    if (memcmp(a + i, b + i, es) != 0) {
      float x = 0, y = 0;
      if (es == 4) memcpy(&x, a + i, 4), memcpy(&y, b + i, 4);
      fprintf(stderr, "%s: element %zu differs: %.9g (from ONNX) vs %.9g (block), tolerance 0 (bits)\n", label,
              i / es, (double)x, (double)y);
      same = false;
    }
  free(a);
  free(b);
  return same;
}

static kiln_model *load(const char *path) {
  kiln_model *m = kiln_model_load(path);
  if (!m) fprintf(stderr, "loading %s: %s\n", path, kiln_last_error());
  assert_non_null(m);
  return m;
}

static void expect_same(const char *label, kiln_block *net, kiln_model *m, kiln_tensor *x, double tol) {
  kiln_scope_begin();
  kiln_tensor *want = kiln_block_call(net, x), *got = NULL;
  kiln_status st = kiln_model_run(m, 1, &x, &got);
  if (st != KILN_OK) fprintf(stderr, "%s: %s\n", label, kiln_last_error());
  assert_int_equal(st, KILN_OK);
  assert_true(agree(label, got, want, tol));
  kiln_scope_end();
}

/* ------------------------------------------------------------ models */

static kiln_block *mlp(void) {
  kiln_block *net = kiln_nn_sequential();
  kiln_block_add_child(net, NULL, kiln_nn_dense(16, KILN_ACT_RELU));
  kiln_block_add_child(net, NULL, kiln_nn_dense(8, KILN_ACT_TANH));
  assert_int_equal(kiln_block_add_child(net, NULL, kiln_nn_dense(10, KILN_ACT_NONE)), KILN_OK);
  return net;
}

static kiln_tensor *softmax_forward(kiln_block *self, int n, kiln_tensor *const *in) {
  (void)self, (void)n;
  return kiln_softmax(in[0], -1);
}

/* conv, batch norm (with running statistics that are not 0 and 1), max
 * and average pools (one padded, counting the padding or not), global
 * average pool, dense and softmax. */
static kiln_block *bn_cnn(void) {
  kiln_block *net = kiln_nn_sequential();
  kiln_conv2d_layer_params c1 = kiln_conv2d_layer_params_default(4, 3, 3);
  c1.conv.padding[0] = c1.conv.padding[1] = 1;
  kiln_pool2d_params mp = kiln_pool2d_params_default(2, 2), ap = kiln_pool2d_params_default(3, 3);
  ap.stride[0] = ap.stride[1] = 1;
  ap.padding[0] = ap.padding[1] = 1;
  kiln_block_add_child(net, NULL, kiln_nn_conv2d(&c1));
  kiln_block_add_child(net, NULL, kiln_nn_batch_norm(4, 0.9, 1e-5));
  kiln_block_add_child(net, NULL, kiln_nn_activation(KILN_ACT_RELU));
  kiln_block_add_child(net, NULL, kiln_nn_max_pool2d(&mp));
  kiln_block_add_child(net, NULL, kiln_nn_avg_pool2d(&ap));
  kiln_block_add_child(net, NULL, kiln_nn_global_avg_pool2d());
  kiln_block_add_child(net, NULL, kiln_nn_flatten());
  kiln_block_add_child(net, NULL, kiln_nn_dense(5, KILN_ACT_NONE));
  assert_int_equal(kiln_block_add_child(net, NULL, kiln_block_new("Softmax", softmax_forward, NULL, NULL)), KILN_OK);
  return net;
}

/* Gives every parameter random values (variances positive). */
static void randomize(kiln_block *net, uint64_t seed) {
  kiln_param_list params;
  assert_int_equal(kiln_block_collect_params(net, &params), KILN_OK);
  for (int i = 0; i < params.n; i++) {
    kiln_tensor *t = params.tensors[i];
    bool var = strstr(params.names[i], "var") != NULL;
    kiln_tensor *v = tu_random(kiln_tensor_dtype(t), kiln_tensor_ndim(t), kiln_tensor_shape(t), seed + (uint64_t)i,
                               var ? 0.5 : -0.5, var ? 2 : 0.5);
    assert_int_equal(kiln_assign(t, v), KILN_OK);
    kiln_tensor_release(v);
  }
  kiln_param_list_free(&params);
}

/* Many ops in one forward, x [B, 6]: the mapping table at work. */
static kiln_tensor *ops_forward(kiln_block *self, int n, kiln_tensor *const *in) {
  (void)n;
  kiln_tensor *x = in[0];
  kiln_tensor *h = kiln_gelu(kiln_linear_act(x, kiln_block_param(self, "w1"), kiln_block_param(self, "b1"), KILN_ACT_SIGMOID));
  kiln_tensor *r = kiln_reshape(h, 3, TU_SHAPE(-1, 2, 4));                  /* [B, 2, 4] */
  kiln_tensor *p = kiln_transpose(r, 1, 2);                                 /* [B, 4, 2] */
  kiln_tensor *c = kiln_concat(2, (kiln_tensor *[]){p, kiln_mul_scalar(p, 0.3)}, 2); /* [B, 4, 4] */
  kiln_tensor *sm = kiln_softmax(c, -1), *ls = kiln_log_softmax(c, 1);
  kiln_tensor *parts[12];
  int k = 0;
  parts[k++] = kiln_sum(sm, 1, (int[]){1}, false);                                       /* [B, 4] */
  parts[k++] = kiln_mean(ls, 1, (int[]){2}, false);                                      /* [B, 4] */
  parts[k++] = kiln_max(c, 1, (int[]){-1}, false);                                       /* [B, 4] */
  parts[k++] = kiln_var(c, 1, (int[]){2}, false, 1);                                     /* [B, 4] */
  parts[k++] = kiln_logsumexp(c, 1, (int[]){1}, false);                                  /* [B, 4] */
  parts[k++] = kiln_slice(x, 1, 5, -7, -2);                                              /* [B, 3] */
  parts[k++] = kiln_slice(x, 1, 1, 4, 1);                                                /* [B, 3] */
  kiln_tensor *pos = kiln_greater(x, kiln_zeros(KILN_F32, 0, NULL));
  parts[k++] = kiln_where(pos, kiln_leaky_relu(x, 0.2), kiln_clip(kiln_sigmoid(x), 0.3, 0.6)); /* [B, 6] */
  parts[k++] = kiln_add_scalar(kiln_rsqrt(kiln_add_scalar(kiln_square(x), 1)), -0.25);
  parts[k++] = kiln_cast(kiln_argmax(c, 2, false), KILN_F32);                            /* [B, 4] */
  parts[k++] = kiln_squeeze(kiln_expand_dims(kiln_round(kiln_mul_scalar(x, 3)), 2), 2);  /* [B, 6] */
  parts[k++] = kiln_pow_scalar(kiln_abs(kiln_tanh(x)), 1.5);                             /* [B, 6] */
  kiln_tensor *all = kiln_concat(k, parts, 1);                                           /* [B, 54] */
  kiln_tensor *halves[2];
  kiln_split(all, 1, 2, (int64_t[]){27, 27}, halves);
  kiln_tensor *y = kiln_maximum(halves[0], kiln_exp(kiln_neg(halves[1])));
  return kiln_linear(y, kiln_block_param(self, "w2"), NULL);
}

static kiln_block *ops_block(void) {
  kiln_block *net = kiln_block_new("Ops", ops_forward, NULL, NULL);
  assert_int_equal(kiln_block_add_param(net, "w1", KILN_F32, 2, TU_SHAPE(8, 6), NULL, KILN_GRAD_WRITE), KILN_OK);
  kiln_init bias = kiln_init_constant(0.1);
  assert_int_equal(kiln_block_add_param(net, "b1", KILN_F32, 1, TU_SHAPE(8), &bias, KILN_GRAD_WRITE), KILN_OK);
  assert_int_equal(kiln_block_add_param(net, "w2", KILN_F32, 2, TU_SHAPE(3, 27), NULL, KILN_GRAD_WRITE), KILN_OK);
  return net;
}

static kiln_block *ready(kiln_block *net, uint64_t seed, int ndim, const int64_t *shape, bool random_params) {
  kiln_seed(seed);
  kiln_status st = kiln_block_initialize(net, NULL, false);
  if (st != KILN_OK) fprintf(stderr, "%s\n", kiln_last_error());
  assert_int_equal(st, KILN_OK);
  assert_int_equal(kiln_block_hybridize(net, NULL), KILN_OK);
  kiln_tensor *x = tu_random(KILN_F32, ndim, shape, seed, -1, 1);
  kiln_scope_begin();
  TU_OK(kiln_block_call(net, x)); /* fixes deferred shapes */
  kiln_scope_end();
  kiln_tensor_release(x);
  if (random_params) randomize(net, seed + 100);
  kiln_scope_begin();
  x = tu_random(KILN_F32, ndim, shape, seed, -1, 1);
  TU_OK(kiln_block_call(net, x)); /* the inference plan the export takes; x is the scope's */
  kiln_scope_end();
  return net;
}

/* ------------------------------------------------------------ tests */

static void round_trips(void **state) {
  (void)state;
  static const struct {
    const char *name;
    kiln_block *(*make)(void);
    int ndim;
    int64_t shape[4];
    bool random_params;
    double tol; /* 0: bits */
  } cases[] = {
      {"mlp", mlp, 2, {4, 20}, false, 0},
      {"lenet", tu_lenet, 4, {2, 1, 28, 28}, false, 0},
      /* batch norm's epsilon: a float in ONNX, a double in kiln. */
      {"bn_cnn", bn_cnn, 4, {3, 2, 9, 9}, true, 1e-6},
      /* GELU, rsqrt and var as compositions, rounded at each step. */
      {"ops", ops_block, 2, {5, 6}, false, 1e-5},
  };
  for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
    kiln_block *net = ready(cases[c].make(), 11 + c, cases[c].ndim, cases[c].shape, cases[c].random_params);
    char path[512];
    tmp_path(path, sizeof path, cases[c].name);
    strcat(path, ".onnx");
    kiln_status st = kiln_block_export_onnx(net, path, NULL);
    if (st != KILN_OK) fprintf(stderr, "%s\n", kiln_last_error());
    assert_int_equal(st, KILN_OK);
    tu_expect_no_temporaries(path);
    kiln_model *m = load(path);
    for (uint64_t seed = 0; seed < 3; seed++) {
      kiln_tensor *x = tu_track(tu_random(KILN_F32, cases[c].ndim, cases[c].shape, 50 + seed, -2, 2));
      expect_same(cases[c].name, net, m, x, cases[c].tol);
    }
    /* The model's own export gives the same model again. */
    char again[560];
    snprintf(again, sizeof again, "%s.again.onnx", path);
    st = kiln_model_export_onnx(m, again);
    if (st != KILN_OK) fprintf(stderr, "%s\n", kiln_last_error());
    assert_int_equal(st, KILN_OK);
    kiln_model *m2 = load(again);
    kiln_scope_begin();
    kiln_tensor *x = tu_random(KILN_F32, cases[c].ndim, cases[c].shape, 77, -2, 2), *a = NULL, *b = NULL;
    assert_int_equal(kiln_model_run(m, 1, &x, &a), KILN_OK);
    assert_int_equal(kiln_model_run(m2, 1, &x, &b), KILN_OK);
    assert_true(agree(cases[c].name, b, a, 0));
    kiln_scope_end();
    keep_for_checker(net, NULL, cases[c].name, NULL);
    kiln_model_free(m);
    kiln_model_free(m2);
    remove(path);
    remove(again);
    kiln_block_release(net);
  }
}

/* Exported with an unknown batch: one file runs at several batch sizes,
 * each agreeing with the block there. */
static void dynamic_batch(void **state) {
  (void)state;
  static const struct {
    const char *name;
    kiln_block *(*make)(void);
    int ndim;
    int64_t shape[4];
    double tol;
  } cases[] = {{"mlp", mlp, 2, {4, 20}, 0}, {"lenet", tu_lenet, 4, {2, 1, 28, 28}, 0}, {"ops", ops_block, 2, {5, 6}, 1e-5}};
  kiln_export_options o = {.dynamic_batch = true};
  for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
    kiln_block *net = ready(cases[c].make(), 21 + c, cases[c].ndim, cases[c].shape, false);
    char path[512];
    tmp_path(path, sizeof path, cases[c].name);
    strcat(path, ".dyn.onnx");
    kiln_status st = kiln_block_export_onnx(net, path, &o);
    if (st != KILN_OK) fprintf(stderr, "%s\n", kiln_last_error());
    assert_int_equal(st, KILN_OK);
    kiln_model *m = load(path);
    kiln_model_value v;
    assert_int_equal(kiln_model_input(m, 0, &v), KILN_OK);
    assert_int_equal(v.shape[0], -1);
    assert_int_equal(kiln_model_output(m, 0, &v), KILN_OK);
    assert_int_equal(v.shape[0], -1);
    for (int64_t batch = 1; batch <= 7; batch += 6) {
      int64_t shape[4];
      memcpy(shape, cases[c].shape, sizeof shape);
      shape[0] = batch;
      kiln_tensor *x = tu_track(tu_random(KILN_F32, cases[c].ndim, shape, 90 + (uint64_t)batch, -2, 2));
      expect_same(cases[c].name, net, m, x, cases[c].tol);
    }
    char name[64];
    snprintf(name, sizeof name, "%s_dynamic_batch", cases[c].name);
    keep_for_checker(net, NULL, name, &o);
    /* A loaded model with an unknown batch exports it unknown again. */
    char again[560];
    snprintf(again, sizeof again, "%s.again.onnx", path);
    assert_int_equal(kiln_model_export_onnx(m, again), KILN_OK);
    kiln_model *m2 = load(again);
    assert_int_equal(kiln_model_input(m2, 0, &v), KILN_OK);
    assert_int_equal(v.shape[0], -1);
    kiln_model_free(m2);
    kiln_model_free(m);
    remove(path);
    remove(again);
    kiln_block_release(net);
  }
}

/* A native model, loaded, exports to ONNX and runs the same. */
static void native_model_exports(void **state) {
  (void)state;
  kiln_block *net = ready(tu_lenet(), 31, 4, TU_SHAPE(2, 1, 28, 28), false);
  char prefix[512], path[560];
  tmp_path(prefix, sizeof prefix, "native");
  assert_int_equal(kiln_block_export(net, prefix), KILN_OK);
  kiln_model *native = load(prefix);
  snprintf(path, sizeof path, "%s.onnx", prefix);
  assert_int_equal(kiln_model_export_onnx(native, path), KILN_OK);
  kiln_model *m = load(path);
  kiln_tensor *x = tu_track(tu_random(KILN_F32, 4, TU_SHAPE(2, 1, 28, 28), 5, -1, 1));
  expect_same("native", net, m, x, 0);
  keep_for_checker(NULL, native, "lenet_from_native", NULL);
  kiln_model_free(native);
  kiln_model_free(m);
  remove(path);
  char f[600];
  snprintf(f, sizeof f, "%s.kiln.json", prefix);
  remove(f);
  snprintf(f, sizeof f, "%s.safetensors", prefix);
  remove(f);
  kiln_block_release(net);
}

static kiln_tensor *noisy_forward(kiln_block *self, int n, kiln_tensor *const *in) {
  (void)self, (void)n;
  return kiln_add(in[0], kiln_random_normal(NULL, 0, 1, KILN_F32, kiln_tensor_ndim(in[0]), kiln_tensor_shape(in[0])));
}

/* An op without an exact ONNX form fails, naming it and its node; no file
 * is written, and an old one stays as it was. Misuse is a status. */
static void refuses(void **state) {
  (void)state;
  kiln_block *net = kiln_block_new("Noisy", noisy_forward, NULL, NULL);
  assert_int_equal(kiln_block_hybridize(net, NULL), KILN_OK);
  kiln_tensor *x = tu_track(tu_random(KILN_F32, 2, TU_SHAPE(2, 3), 1, -1, 1));
  kiln_scope_begin();
  TU_OK(kiln_block_call(net, x));
  kiln_scope_end();
  char path[512];
  tmp_path(path, sizeof path, "noisy.onnx");
  remove(path);
  assert_int_equal(kiln_block_export_onnx(net, path, NULL), KILN_ERR_UNSUPPORTED);
  assert_non_null(strstr(kiln_last_error(), "random_normal"));
  assert_non_null(strstr(kiln_last_error(), "node"));
  assert_false(exists(path));
  tu_expect_no_temporaries(path);
  FILE *f = fopen(path, "wb");
  assert_non_null(f);
  fputs("old", f);
  fclose(f);
  assert_int_equal(kiln_block_export_onnx(net, path, NULL), KILN_ERR_UNSUPPORTED);
  struct stat sb;
  assert_int_equal(stat(path, &sb), 0);
  assert_int_equal(sb.st_size, 3);
  remove(path);
  kiln_block_release(net);

  kiln_block *fresh = mlp();
  assert_int_equal(kiln_block_export_onnx(fresh, path, NULL), KILN_ERR_INVALID_ARGUMENT);
  assert_int_equal(kiln_block_export_onnx(NULL, path, NULL), KILN_ERR_INVALID_ARGUMENT);
  assert_int_equal(kiln_block_export_onnx(fresh, NULL, NULL), KILN_ERR_INVALID_ARGUMENT);
  assert_int_equal(kiln_model_export_onnx(NULL, path), KILN_ERR_INVALID_ARGUMENT);
  assert_false(exists(path));
  kiln_block_release(fresh);
  /* A directory that does not exist: KILN_ERR_IO, nothing left. */
  kiln_block *net2 = ready(mlp(), 3, 2, TU_SHAPE(2, 20), false);
  assert_int_equal(kiln_block_export_onnx(net2, "/nonexistent-kiln-dir/m.onnx", NULL), KILN_ERR_IO);
  kiln_block_release(net2);
}

/* Each allocation of an export fails in turn: KILN_ERR_OUT_OF_MEMORY or
 * success, never a crash, a leak or a file or temporary left behind. */
static void allocation_failures(void **state) {
  (void)state;
  kiln_block *net = ready(bn_cnn(), 41, 4, TU_SHAPE(1, 2, 6, 6), false);
  char path[512];
  tmp_path(path, sizeof path, "oom.onnx");
  remove(path);
  long fail_at;
  for (fail_at = 0;; fail_at++) {
    kiln_waitall();
    tu_fail_allocation(fail_at);
    kiln_status st = kiln_block_export_onnx(net, path, NULL);
    kiln_waitall();
    long asked = tu_allocations();
    tu_restore_allocator();
    assert_true(st == KILN_OK || st == KILN_ERR_OUT_OF_MEMORY);
    if (st != KILN_OK) assert_false(exists(path));
    tu_expect_no_temporaries(path);
    if (st == KILN_OK && asked <= fail_at) break;
    remove(path);
  }
  remove(path);
  kiln_block_release(net);
  assert_true(fail_at > 50);
}

/* Models PyTorch exported (tests/fixtures/onnx_torch), re-exported by
 * kiln: their `x.view(x.size(0), -1)` imports as kiln's reshape with -2
 * (the input's dim here), which must leave as an ONNX 0, not a -2 (invalid
 * ONNX, as the export first wrote). The re-export runs at two batch sizes
 * and matches PyTorch's outputs. */
static void pytorch_models_reexport(void **state) {
  (void)state;
  const char *names[3] = {"mlp", "lenet", "resnet"};
  for (int k = 0; k < 3; k++) {
    char src[600], path[560], label[64];
    snprintf(src, sizeof src, "%s/onnx_torch/%s_op17.onnx", KILN_FIXTURE_DIR, names[k]);
    kiln_model *imported = load(src);
    tmp_path(path, sizeof path, "torch.onnx");
    assert_int_equal(kiln_model_export_onnx(imported, path), KILN_OK);
    char kept[64];
    snprintf(kept, sizeof kept, "torch_%s", names[k]);
    keep_for_checker(NULL, imported, kept, NULL);
    kiln_model *m = load(path);
    for (int b = 0; b < 2; b++) {
      char x_name[64], y_name[64];
      snprintf(x_name, sizeof x_name, "onnx_torch/%s_x%d", names[k], b ? 5 : 1);
      snprintf(y_name, sizeof y_name, "onnx_torch/%s_y%d", names[k], b ? 5 : 1);
      kiln_tensor *x = tu_track(tu_fixture(x_name)), *want = tu_track(tu_fixture(y_name)), *y = NULL;
      assert_int_equal(kiln_model_run(m, 1, &x, &y), KILN_OK);
      tu_track(y);
      snprintf(label, sizeof label, "%s re-exported, batch %d", names[k], b ? 5 : 1);
      assert_true(tu_close(label, y, want, 1e-5, 1e-6));
    }
    kiln_model_free(m);
    kiln_model_free(imported);
    remove(path);
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
#define TEST(f) cmocka_unit_test_teardown(f, tu_release_tracked)
      TEST(round_trips), TEST(dynamic_batch), TEST(native_model_exports), TEST(refuses), TEST(allocation_failures),
      TEST(pytorch_models_reexport),
#undef TEST
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
