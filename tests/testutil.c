#include "testutil.h"

#include <dirent.h>
#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

uint64_t tu_rng_next(uint64_t *s) {
  uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

double tu_rng_unit(uint64_t *s) { return (double)(tu_rng_next(s) >> 11) * (1.0 / 9007199254740992.0); }

int64_t tu_numel(int ndim, const int64_t *shape) {
  int64_t n = 1;
  for (int i = 0; i < ndim; i++) n *= shape[i];
  return n;
}

static kiln_tensor **tracked;
static size_t n_tracked, cap_tracked;

kiln_tensor *tu_track(kiln_tensor *t) {
  assert_non_null(t);
  if (n_tracked == cap_tracked) {
    cap_tracked = cap_tracked ? 2 * cap_tracked : 256;
    tracked = realloc(tracked, cap_tracked * sizeof *tracked);
    assert_non_null(tracked);
  }
  tracked[n_tracked++] = t;
  return t;
}

int tu_release_tracked(void **state) {
  (void)state;
  for (size_t i = 0; i < n_tracked; i++) kiln_tensor_release(tracked[i]);
  free(tracked);
  tracked = NULL;
  n_tracked = cap_tracked = 0;
  kiln_use_reference_kernels(false);
  return 0;
}

kiln_tensor *tu_random(kiln_dtype dt, int ndim, const int64_t *shape, uint64_t seed, double lo, double hi) {
  int64_t n = 1;
  for (int i = 0; i < ndim; i++) n *= shape[i];
  size_t es = kiln_dtype_size(dt);
  char *buf = malloc((size_t)(n ? n : 1) * es);
  uint64_t s = seed;
  for (int64_t i = 0; i < n; i++) {
    double u = tu_rng_unit(&s);
    double v = lo + (hi - lo) * u;
    int64_t iv = (int64_t)floor(lo + (hi - lo + 1) * u);
    char *p = buf + i * (int64_t)es;
    switch (dt) {
    case KILN_F32: { float f = (float)v; memcpy(p, &f, 4); break; }
    case KILN_F64: memcpy(p, &v, 8); break;
    case KILN_I32: { int32_t x = (int32_t)iv; memcpy(p, &x, 4); break; }
    case KILN_I64: memcpy(p, &iv, 8); break;
    case KILN_U8: *p = (char)(unsigned char)iv; break;
    case KILN_BOOL: *p = u < 0.5; break;
    default: break;
    }
  }
  kiln_tensor *t = kiln_from_data(dt, ndim, shape, buf);
  free(buf);
  return t;
}

kiln_tensor *tu_noncontiguous(kiln_tensor *x) {
  /* Its own scope, so it follows kiln's convention whatever the caller has
   * open: the result belongs to the caller's scope, or to the caller. */
  kiln_scope_begin();
  int nd = kiln_tensor_ndim(x);
  kiln_tensor *r;
  if (nd < 2) {
    /* A strided view: every other element of the tensor stacked with itself. */
    int64_t n = kiln_tensor_numel(x);
    kiln_tensor *st = kiln_stack(2, (kiln_tensor *const[]){x, x}, nd);
    kiln_tensor *v = kiln_slice(kiln_reshape(st, 1, (int64_t[]){2 * n}), 0, 0, KILN_END, 2);
    r = nd == 0 ? kiln_reshape(v, 0, NULL) : v;
  } else {
    kiln_tensor *c = kiln_contiguous(kiln_transpose(x, 0, nd - 1));
    r = kiln_transpose(c, 0, nd - 1);
  }
  kiln_keep(r);
  kiln_scope_end();
  return r;
}

static bool same_meta(const char *label, const kiln_tensor *got, int64_t n_want) {
  if (kiln_tensor_status(got) != KILN_OK) {
    fprintf(stderr, "%s: tensor failed: %s\n", label, kiln_tensor_error(got));
    return false;
  }
  if (kiln_tensor_numel(got) != n_want) {
    fprintf(stderr, "%s: %lld elements, expected %lld\n", label, (long long)kiln_tensor_numel(got),
            (long long)n_want);
    return false;
  }
  return true;
}

static double *to_doubles(const kiln_tensor *t) {
  int64_t n = kiln_tensor_numel(t);
  size_t es = kiln_dtype_size(kiln_tensor_dtype(t));
  char *raw = malloc((size_t)(n ? n : 1) * es);
  double *d = malloc((size_t)(n ? n : 1) * sizeof(double));
  if (kiln_tensor_copy_to(t, raw, (size_t)n * es) != KILN_OK) {
    free(raw);
    free(d);
    return NULL;
  }
  for (int64_t i = 0; i < n; i++) {
    char *p = raw + i * (int64_t)es;
    switch (kiln_tensor_dtype(t)) {
    case KILN_F32: { float f; memcpy(&f, p, 4); d[i] = f; break; }
    case KILN_F64: memcpy(&d[i], p, 8); break;
    case KILN_I32: { int32_t x; memcpy(&x, p, 4); d[i] = x; break; }
    case KILN_I64: { int64_t x; memcpy(&x, p, 8); d[i] = (double)x; break; }
    case KILN_U8: d[i] = (unsigned char)*p; break;
    case KILN_BOOL: d[i] = *p != 0; break;
    default: d[i] = NAN;
    }
  }
  free(raw);
  return d;
}

bool tu_close_values(const char *label, const kiln_tensor *got, const double *want, int64_t n, double rtol,
                     double atol) {
  if (!same_meta(label, got, n)) return false;
  double *g = to_doubles(got);
  if (!g) {
    fprintf(stderr, "%s: copy out failed: %s\n", label, kiln_last_error());
    return false;
  }
  bool ok = true;
  for (int64_t i = 0; i < n; i++) {
    double a = g[i], b = want[i];
    if (isnan(a) && isnan(b)) continue;
    if (isinf(a) || isinf(b) ? a == b : fabs(a - b) <= atol + rtol * fabs(b)) continue;
    fprintf(stderr, "%s: element %lld: got %.9g, expected %.9g (|diff| %.3g > atol %.3g + rtol %.3g * |expected|)\n",
            label, (long long)i, a, b, fabs(a - b), atol, rtol);
    ok = false;
    break;
  }
  free(g);
  return ok;
}

bool tu_close(const char *label, const kiln_tensor *got, const kiln_tensor *want, double rtol, double atol) {
  if (kiln_tensor_status(want) != KILN_OK) {
    fprintf(stderr, "%s: expected tensor failed: %s\n", label, kiln_tensor_error(want));
    return false;
  }
  if (kiln_tensor_status(got) == KILN_OK) {
    int nd = kiln_tensor_ndim(got);
    if (nd != kiln_tensor_ndim(want) || kiln_tensor_dtype(got) != kiln_tensor_dtype(want) ||
        memcmp(kiln_tensor_shape(got), kiln_tensor_shape(want), (size_t)nd * sizeof(int64_t)) != 0) {
      fprintf(stderr, "%s: got %s %dd, expected %s %dd (or shapes differ)\n", label,
              kiln_dtype_name(kiln_tensor_dtype(got)), nd, kiln_dtype_name(kiln_tensor_dtype(want)),
              kiln_tensor_ndim(want));
      return false;
    }
  }
  double *w = to_doubles(want);
  if (!w) return false;
  bool ok = tu_close_values(label, got, w, kiln_tensor_numel(want), rtol, atol);
  free(w);
  return ok;
}

bool tu_ok(const char *label, const kiln_tensor *t) {
  if (kiln_tensor_status(t) == KILN_OK) return true;
  fprintf(stderr, "%s: %s: %s\n", label, kiln_status_name(kiln_tensor_status(t)), kiln_tensor_error(t));
  return false;
}

void tu_assert_fails(const char *label, const kiln_tensor *t, kiln_status st, const char *text, const char *file,
                     int line) {
  kiln_status got = kiln_tensor_status(t);
  const char *msg = kiln_tensor_error(t);
  if (got != st || (text && !strstr(msg, text))) {
    fprintf(stderr, "%s:%d: %s: expected %s with \"%s\", got %s: \"%s\"\n", file, line, label, kiln_status_name(st),
            text ? text : "", kiln_status_name(got), msg);
    fail();
  }
}

kiln_tensor *tu_fixture(const char *name) {
  char path[1024];
  snprintf(path, sizeof path, "%s/%s.npy", KILN_FIXTURE_DIR, name);
  kiln_tensor *t = kiln_load_npy(path);
  if (kiln_tensor_status(t) != KILN_OK) {
    fprintf(stderr, "fixture %s: %s\n", path, kiln_tensor_error(t));
    fail();
  }
  return t;
}

void tu_settle(void) {
  kiln_waitall();
  kiln_release_cached_memory();
}

/* ------------------------------------------------------------ gradient checks */


static double loss_value(tu_op_fn f, kiln_tensor **in, kiln_tensor *w) {
  kiln_scope_begin();
  kiln_tensor *y = f(in);
  double v = NAN;
  kiln_tensor *l = kiln_sum(kiln_mul(y, w), 0, NULL, false);
  if (kiln_tensor_item(l, &v) != KILN_OK) fprintf(stderr, "loss: %s\n", kiln_last_error());
  kiln_scope_end();
  return v;
}

static void set_element(kiln_tensor **slot, int64_t i, double value) {
  kiln_tensor *t = *slot;
  int64_t n = kiln_tensor_numel(t);
  double *buf = malloc((size_t)n * sizeof(double));
  kiln_tensor_copy_to(t, buf, (size_t)n * sizeof(double));
  buf[i] = value;
  kiln_tensor *r = kiln_from_data(KILN_F64, kiln_tensor_ndim(t), kiln_tensor_shape(t), buf);
  free(buf);
  kiln_tensor_release(t);
  *slot = r;
}

/* Checks d loss / d in[k] for every float input against central
 * differences (h = 1e-6 in float64: truncation and rounding both ~1e-9
 * relative, so rtol 1e-5 leaves a wide margin). */
void tu_check_gradients(const char *name, tu_op_fn f, int n_in, kiln_tensor **in) {
  kiln_scope_begin();
  kiln_tensor *y0 = f(in);
  assert_true(tu_ok(name, y0));
  int nd = kiln_tensor_ndim(y0);
  int64_t shape[KILN_MAX_DIMS];
  memcpy(shape, kiln_tensor_shape(y0), sizeof(int64_t) * (size_t)nd);
  kiln_scope_end();
  kiln_tensor *w = tu_random(KILN_F64, nd, shape, 77, -1, 1);
  for (int k = 0; k < n_in; k++)
    if (kiln_tensor_dtype(in[k]) == KILN_F64) assert_int_equal(kiln_attach_grad(in[k], KILN_GRAD_WRITE), KILN_OK);
  kiln_scope_begin();
  kiln_record_begin(true);
  kiln_tensor *l = kiln_sum(kiln_mul(f(in), w), 0, NULL, false);
  kiln_record_end();
  kiln_status st = kiln_backward(l, NULL, false);
  if (st != KILN_OK) fprintf(stderr, "%s: backward: %s\n", name, kiln_last_error());
  assert_int_equal(st, KILN_OK);
  kiln_scope_end();
  for (int k = 0; k < n_in; k++) {
    if (kiln_tensor_dtype(in[k]) != KILN_F64) continue;
    int64_t n = kiln_tensor_numel(in[k]);
    double *analytic = malloc((size_t)(n ? n : 1) * sizeof(double)), *numeric = malloc((size_t)(n ? n : 1) * sizeof(double));
    assert_int_equal(kiln_tensor_copy_to(kiln_grad(in[k]), analytic, (size_t)n * sizeof(double)), KILN_OK);
    for (int64_t i = 0; i < n; i++) {
      double x0;
      double *buf = malloc((size_t)n * sizeof(double));
      kiln_tensor_copy_to(in[k], buf, (size_t)n * sizeof(double));
      x0 = buf[i];
      free(buf);
      const double h = 1e-6;
      set_element(&in[k], i, x0 + h);
      double up = loss_value(f, in, w);
      set_element(&in[k], i, x0 - h);
      double down = loss_value(f, in, w);
      set_element(&in[k], i, x0);
      numeric[i] = (up - down) / (2 * h);
    }
    char label[128];
    snprintf(label, sizeof label, "%s d/d input %d", name, k);
    kiln_tensor *want = kiln_from_data(KILN_F64, 1, (int64_t[]){n}, numeric);
    kiln_tensor *got = kiln_from_data(KILN_F64, 1, (int64_t[]){n}, analytic);
    assert_true(tu_close(label, got, want, 1e-5, 1e-7));
    kiln_tensor_release(want);
    kiln_tensor_release(got);
    free(analytic);
    free(numeric);
  }
  kiln_tensor_release(w);
}

kiln_tensor *tu_random_f64(int nd, const int64_t *shape, uint64_t seed, double lo, double hi) {
  return tu_random(KILN_F64, nd, shape, seed, lo, hi);
}

void tu_release_n(int n, kiln_tensor **in) {
  for (int i = 0; i < n; i++) kiln_tensor_release(in[i]);
}

/* ------------------------------------------------------------ allocation failures */

static atomic_long allocations;
static long failing;

static void *failing_alloc(size_t size, size_t align, void *user) {
  (void)user;
  if (atomic_fetch_add(&allocations, 1) == failing) return NULL;
  void *p = NULL;
  return posix_memalign(&p, align, size ? size : 1) == 0 ? p : NULL;
}

static void plain_free(void *ptr, void *user) {
  (void)user;
  free(ptr);
}

void tu_fail_allocation(long n) {
  failing = n;
  atomic_store(&allocations, 0);
  kiln_set_allocator(failing_alloc, plain_free, NULL);
}

long tu_allocations(void) { return atomic_load(&allocations); }

void tu_restore_allocator(void) { kiln_set_allocator(NULL, NULL, NULL); }

kiln_block *tu_lenet(void) {
  kiln_block *net = kiln_nn_sequential();
  kiln_conv2d_layer_params c1 = kiln_conv2d_layer_params_default(6, 5, 5), c2 = kiln_conv2d_layer_params_default(16, 5, 5);
  c1.conv.padding[0] = c1.conv.padding[1] = 2;
  c1.activation = c2.activation = KILN_ACT_RELU;
  kiln_pool2d_params pool = kiln_pool2d_params_default(2, 2);
  kiln_block_add_child(net, NULL, kiln_nn_conv2d(&c1));
  kiln_block_add_child(net, NULL, kiln_nn_max_pool2d(&pool));
  kiln_block_add_child(net, NULL, kiln_nn_conv2d(&c2));
  kiln_block_add_child(net, NULL, kiln_nn_max_pool2d(&pool));
  kiln_block_add_child(net, NULL, kiln_nn_dense(120, KILN_ACT_RELU));
  kiln_block_add_child(net, NULL, kiln_nn_dense(84, KILN_ACT_RELU));
  assert_int_equal(kiln_block_add_child(net, NULL, kiln_nn_dense(10, KILN_ACT_NONE)), KILN_OK);
  return net;
}

void tu_expect_no_temporaries(const char *path) {
  char dir[512];
  snprintf(dir, sizeof dir, "%s", path);
  char *slash = strrchr(dir, '/');
  assert_non_null(slash);
  const char *base = path + (slash - dir) + 1;
  *slash = '\0';
  DIR *d = opendir(dir);
  assert_non_null(d);
  for (struct dirent *e; (e = readdir(d));)
    if (strncmp(e->d_name, base, strlen(base)) == 0 && strstr(e->d_name, ".tmp.")) {
      fprintf(stderr, "temporary %s/%s left behind\n", dir, e->d_name);
      closedir(d);
      fail();
    }
  closedir(d);
}
