/* Tests of the shape and indexing ops: concat, stack, split, take, gather,
 * one_hot, pad and cast.
 *
 * Three kinds of check. Literal cases compare with arrays worked out by hand
 * (numpy and torch agree with them). Random cases run every op on every dtype
 * with random shapes, zero-size dims included, and inputs laid out every way
 * a view can be (transposed, reversed, stepped, broadcast), and require the
 * optimised and reference kernels to agree bit for bit: these ops only move
 * or convert elements, so no tolerance is needed; where cheap, the result is
 * also checked against an oracle built from other ops (slices of the output
 * equal the inputs). Error cases check both the status and the message text
 * of every misuse.
 *
 * Every handle is registered with own() and released by the teardown, so a
 * failing assertion leaks nothing and the ASan build stays clean. Scopes are
 * not used: tu_noncontiguous releases its intermediates explicitly, which is
 * unsafe inside a scope. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"

/* For KILN_MAX_ATTR_INTS, the longest list an attribute holds. */
#include "ops/op.h"

/* ---------------------------------------------------------------- helpers */

static kiln_tensor **owned;
static size_t n_owned, cap_owned;

static kiln_tensor *own(kiln_tensor *t) {
  if (n_owned == cap_owned) {
    cap_owned = cap_owned ? 2 * cap_owned : 256;
    owned = realloc(owned, cap_owned * sizeof *owned);
    assert_non_null(owned);
  }
  owned[n_owned++] = t;
  return t;
}

static int release_owned(void **state) {
  (void)state;
  for (size_t i = 0; i < n_owned; i++) kiln_tensor_release(owned[i]);
  free(owned);
  owned = NULL;
  n_owned = cap_owned = 0;
  kiln_use_reference_kernels(false);
  return 0;
}

/* splitmix64, for shapes and choices; tu_random makes the values. */
static uint64_t rng = 12345;
static uint64_t rnd(void) {
  uint64_t z = (rng += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}
/* Uniform in [lo, hi]. */
static int64_t rnd_in(int64_t lo, int64_t hi) { return lo + (int64_t)(rnd() % (uint64_t)(hi - lo + 1)); }

static const kiln_dtype all_dtypes[] = {KILN_F32, KILN_F64, KILN_I32, KILN_I64, KILN_U8, KILN_BOOL};
enum { N_DTYPES = 6 };

/* A random shape of nd dims; a dim is 0 one time in ten. */
static void rand_shape(int nd, int64_t max_dim, int64_t *shape) {
  for (int i = 0; i < nd; i++) shape[i] = rnd_in(0, 9) == 0 ? 0 : rnd_in(1, max_dim);
}

static kiln_tensor *rand_values(kiln_dtype dt, int nd, const int64_t *shape, double lo, double hi) {
  return own(tu_random(dt, nd, shape, rnd(), lo, hi));
}

/* A tensor of the given shape holding random values in [lo, hi], laid out
 * according to kind: contiguous, tu_noncontiguous, reversed (negative
 * stride), stepped with an offset, broadcast (zero strides), transposed, or a
 * transposed reversal. Shapes that cannot take a layout fall back to
 * contiguous. */
static kiln_tensor *make_input(kiln_dtype dt, int nd, const int64_t *shape, int kind, double lo, double hi) {
  int64_t s[KILN_MAX_DIMS];
  if (nd > 0) memcpy(s, shape, (size_t)nd * sizeof *s);
  int ax = nd > 0 ? (int)rnd_in(0, nd - 1) : 0;
  switch (kind % 7) {
  case 1: return own(tu_noncontiguous(rand_values(dt, nd, shape, lo, hi)));
  case 2:
    if (nd == 0) break;
    return own(kiln_slice(rand_values(dt, nd, shape, lo, hi), ax, KILN_END, KILN_END, -1));
  case 3:
    if (nd == 0) break;
    s[ax] = 3 * shape[ax];
    return own(kiln_slice(rand_values(dt, nd, s, lo, hi), ax, 1, KILN_END, 3));
  case 4: {
    if (nd == 0) break;
    /* Some dims become 1 and are broadcast back; sometimes a leading dim is
     * dropped altogether. */
    int drop = nd > 1 && rnd_in(0, 1);
    for (int i = 0; i < nd; i++)
      if (rnd_in(0, 1)) s[i] = 1;
    kiln_tensor *base = rand_values(dt, nd - drop, s + drop, lo, hi);
    return own(kiln_broadcast_to(base, nd, shape));
  }
  case 5:
  case 6: {
    if (nd < 2) break;
    int a = 0, b = nd - 1;
    s[a] = shape[b];
    s[b] = shape[a];
    kiln_tensor *base = rand_values(dt, nd, s, lo, hi);
    if (kind % 7 == 6) base = own(kiln_slice(base, ax, KILN_END, KILN_END, -1));
    return own(kiln_transpose(base, a, b));
  }
  default: break;
  }
  return rand_values(dt, nd, shape, lo, hi);
}

static kiln_tensor *make_data(kiln_dtype dt, int nd, const int64_t *shape) {
  double lo = dt == KILN_U8 ? 0 : -100, hi = dt == KILN_U8 ? 255 : 100;
  return make_input(dt, nd, shape, (int)rnd_in(0, 6), lo, hi);
}

/* A tensor from literal values converted to dt. */
static kiln_tensor *lit(kiln_dtype dt, int nd, const int64_t *shape, const double *vals) {
  int64_t n = 1;
  for (int i = 0; i < nd; i++) n *= shape[i];
  char buf[512];
  assert_true((size_t)n * kiln_dtype_size(dt) <= sizeof buf);
  for (int64_t i = 0; i < n; i++) {
    char *p = buf + i * (int64_t)kiln_dtype_size(dt);
    switch (dt) {
    case KILN_F32: { float f = (float)vals[i]; memcpy(p, &f, 4); break; }
    case KILN_F64: memcpy(p, &vals[i], 8); break;
    case KILN_I32: { int32_t x = (int32_t)vals[i]; memcpy(p, &x, 4); break; }
    case KILN_I64: { int64_t x = (int64_t)vals[i]; memcpy(p, &x, 8); break; }
    default: *p = (char)(unsigned char)vals[i]; break;
    }
  }
  return own(kiln_from_data(dt, nd, shape, buf));
}

#define VALS(...) ((const double[]){__VA_ARGS__})
#define NVALS(...) ((int64_t)(sizeof((const double[]){__VA_ARGS__}) / sizeof(double)))
#define CHECK_VALUES(t, ...) assert_true(tu_close_values(#t, (t), VALS(__VA_ARGS__), NVALS(__VA_ARGS__), 0, 0))

static void check_shape(const kiln_tensor *t, int nd, const int64_t *shape) {
  TU_OK(t);
  assert_int_equal(kiln_tensor_ndim(t), nd);
  for (int i = 0; i < nd; i++) assert_int_equal(kiln_tensor_dim(t, i), shape[i]);
}
#define CHECK_SHAPE(t, nd, ...) check_shape((t), (nd), TU_SHAPE(__VA_ARGS__))

/* True when both succeeded with the same dtype, shape and bytes; on a
 * mismatch prints the first differing element of each. */
static bool same_bits(const char *label, const kiln_tensor *got, const kiln_tensor *want) {
  if (!tu_ok(label, got) || !tu_ok(label, want)) return false;
  int nd = kiln_tensor_ndim(got);
  if (kiln_tensor_dtype(got) != kiln_tensor_dtype(want) || nd != kiln_tensor_ndim(want) ||
      (nd && memcmp(kiln_tensor_shape(got), kiln_tensor_shape(want), (size_t)nd * sizeof(int64_t)) != 0)) {
    fprintf(stderr, "%s: dtype or shape differ (%s %dd vs %s %dd)\n", label, kiln_dtype_name(kiln_tensor_dtype(got)),
            nd, kiln_dtype_name(kiln_tensor_dtype(want)), kiln_tensor_ndim(want));
    return false;
  }
  size_t es = kiln_dtype_size(kiln_tensor_dtype(got)), n = (size_t)kiln_tensor_numel(got);
  char *a = malloc(n * es + 1), *b = malloc(n * es + 1);
  bool ok = a && b && kiln_tensor_copy_to(got, a, n * es) == KILN_OK && kiln_tensor_copy_to(want, b, n * es) == KILN_OK;
  if (!ok) fprintf(stderr, "%s: copy out failed: %s\n", label, kiln_last_error());
  for (size_t i = 0; ok && i < n; i++) {
    if (memcmp(a + i * es, b + i * es, es) == 0) continue;
    uint64_t x = 0, y = 0;
    memcpy(&x, a + i * es, es);
    memcpy(&y, b + i * es, es);
    fprintf(stderr, "%s: %s element %zu differs: optimised 0x%llx, reference 0x%llx (exact match required)\n", label,
            kiln_dtype_name(kiln_tensor_dtype(got)), i, (unsigned long long)x, (unsigned long long)y);
    ok = false;
  }
  free(a);
  free(b);
  return ok;
}

/* Evaluates expr with the optimised kernels into opt and with the reference
 * kernels into ref. */
#define BOTH(opt, ref, expr)                                                                                         \
  do {                                                                                                               \
    kiln_use_reference_kernels(false);                                                                               \
    (opt) = own(expr);                                                                                               \
    kiln_use_reference_kernels(true);                                                                                \
    (ref) = own(expr);                                                                                               \
    kiln_use_reference_kernels(false);                                                                               \
  } while (0)

#define SAME_BITS(opt, ref) assert_true(same_bits(#opt, (opt), (ref)))

/* Both kernels must fail the same way. */
#define BOTH_FAIL(expr, st, text)                                                                                    \
  do {                                                                                                               \
    kiln_tensor *o_, *r_;                                                                                            \
    BOTH(o_, r_, expr);                                                                                              \
    TU_FAILS(o_, st, text);                                                                                          \
    TU_FAILS(r_, st, text);                                                                                          \
  } while (0)

/* The elements of t in row-major order as doubles (malloc'd). */
static double *values_of(const kiln_tensor *t) {
  size_t n = (size_t)kiln_tensor_numel(t), es = kiln_dtype_size(kiln_tensor_dtype(t));
  char *raw = malloc(n * es + 1);
  double *v = malloc(n * sizeof(double) + 1);
  assert_true(raw && v);
  assert_int_equal(kiln_tensor_copy_to(t, raw, n * es), KILN_OK);
  for (size_t i = 0; i < n; i++) {
    const char *p = raw + i * es;
    switch (kiln_tensor_dtype(t)) {
    case KILN_F32: { float f; memcpy(&f, p, 4); v[i] = f; break; }
    case KILN_F64: memcpy(&v[i], p, 8); break;
    case KILN_I32: { int32_t x; memcpy(&x, p, 4); v[i] = x; break; }
    case KILN_I64: { int64_t x; memcpy(&x, p, 8); v[i] = (double)x; break; }
    default: v[i] = (unsigned char)*p; break;
    }
  }
  free(raw);
  return v;
}

/* x sliced to [start, start + len) along axis equals want, exactly. */
static void check_part(kiln_tensor *x, int axis, int64_t start, int64_t len, kiln_tensor *want) {
  kiln_tensor *part = own(kiln_slice(x, axis, start, start + len, 1));
  assert_true(tu_close("slice of result", part, want, 0, 0));
}

/* ---------------------------------------------------------------- concat */

static void concat_literal(void **state) {
  (void)state;
  kiln_tensor *a = lit(KILN_F32, 2, TU_SHAPE(2, 2), VALS(1, 2, 3, 4));
  kiln_tensor *b = lit(KILN_F32, 2, TU_SHAPE(1, 2), VALS(5, 6));
  kiln_tensor *c = lit(KILN_F32, 2, TU_SHAPE(2, 1), VALS(7, 8));
  kiln_tensor *r0 = own(kiln_concat(2, (kiln_tensor *const[]){a, b}, 0));
  CHECK_SHAPE(r0, 2, 3, 2);
  CHECK_VALUES(r0, 1, 2, 3, 4, 5, 6);
  kiln_tensor *r1 = own(kiln_concat(2, (kiln_tensor *const[]){a, c}, -1));
  CHECK_SHAPE(r1, 2, 2, 3);
  CHECK_VALUES(r1, 1, 2, 7, 3, 4, 8);
  /* A transposed input: a^T = [[1, 3], [2, 4]]. */
  kiln_tensor *at = own(kiln_transpose(a, 0, 1));
  kiln_tensor *r2 = own(kiln_concat(3, (kiln_tensor *const[]){c, at, c}, 1));
  CHECK_SHAPE(r2, 2, 2, 4);
  CHECK_VALUES(r2, 7, 1, 3, 7, 8, 2, 4, 8);
  /* One input, and an empty one, change nothing. */
  kiln_tensor *e = own(kiln_zeros(KILN_F32, 2, TU_SHAPE(0, 2)));
  kiln_tensor *r3 = own(kiln_concat(3, (kiln_tensor *const[]){e, a, e}, 0));
  CHECK_SHAPE(r3, 2, 2, 2);
  CHECK_VALUES(r3, 1, 2, 3, 4);
  /* int64 values beyond 2^53 survive (compared bit for bit). */
  int64_t big[2] = {INT64_MAX, INT64_MIN + 1};
  kiln_tensor *bi = own(kiln_from_data(KILN_I64, 1, TU_SHAPE(2), big));
  kiln_tensor *r4 = own(kiln_concat(2, (kiln_tensor *const[]){bi, bi}, 0));
  int64_t got[4];
  assert_int_equal(kiln_tensor_copy_to(r4, got, sizeof got), KILN_OK);
  assert_true(got[0] == INT64_MAX && got[1] == INT64_MIN + 1 && got[2] == INT64_MAX && got[3] == INT64_MIN + 1);
}

static void concat_random(void **state) {
  (void)state;
  for (int d = 0; d < N_DTYPES; d++) {
    kiln_dtype dt = all_dtypes[d];
    for (int trial = 0; trial < 40; trial++) {
      int64_t shape[KILN_MAX_DIMS], lens[12];
      int nd = (int)rnd_in(1, 4);
      rand_shape(nd, trial < 36 ? 4 : 40, shape);
      int axis = (int)rnd_in(0, nd - 1), n = trial == 39 ? 12 : (int)rnd_in(1, 4);
      kiln_tensor *xs[12];
      for (int k = 0; k < n; k++) {
        shape[axis] = lens[k] = rnd_in(0, 4) == 0 ? 0 : rnd_in(1, 4);
        xs[k] = make_data(dt, nd, shape);
        TU_OK(xs[k]);
      }
      kiln_tensor *opt, *ref;
      BOTH(opt, ref, kiln_concat(n, xs, rnd_in(0, 1) ? axis : axis - nd));
      SAME_BITS(opt, ref);
      int64_t at = 0;
      for (int k = 0; k < n; k++) {
        check_part(opt, axis, at, lens[k], xs[k]);
        at += lens[k];
      }
      assert_int_equal(kiln_tensor_dim(opt, axis), at);
    }
  }
}

static void concat_errors(void **state) {
  (void)state;
  kiln_tensor *a = own(kiln_zeros(KILN_F32, 2, TU_SHAPE(2, 3)));
  kiln_tensor *b = own(kiln_zeros(KILN_F32, 2, TU_SHAPE(2, 4)));
  kiln_tensor *i = own(kiln_zeros(KILN_I32, 2, TU_SHAPE(2, 3)));
  kiln_tensor *v = own(kiln_zeros(KILN_F32, 1, TU_SHAPE(6)));
  kiln_tensor *s = own(kiln_zeros(KILN_F32, 0, NULL));
  kiln_tensor *t = own(kiln_concat(3, (kiln_tensor *const[]){a, a, b}, 0));
  TU_FAILS(t, KILN_ERR_SHAPE, "concat: input 2 has shape [2, 4] but input 0 has [2, 3]");
  TU_FAILS(own(kiln_concat(2, (kiln_tensor *const[]){a, i}, 0)), KILN_ERR_DTYPE,
           "concat: input 1 has dtype int32 but input 0 has float32");
  TU_FAILS(own(kiln_concat(2, (kiln_tensor *const[]){a, v}, 0)), KILN_ERR_SHAPE, "input 1 has shape [6]");
  TU_FAILS(own(kiln_concat(2, (kiln_tensor *const[]){a, a}, 2)), KILN_ERR_OUT_OF_RANGE, "concat: axis 2");
  TU_FAILS(own(kiln_concat(2, (kiln_tensor *const[]){a, a}, -3)), KILN_ERR_OUT_OF_RANGE, "axis -3");
  TU_FAILS(own(kiln_concat(2, (kiln_tensor *const[]){s, s}, 0)), KILN_ERR_SHAPE, "0-d");
  TU_FAILS(own(kiln_concat(0, (kiln_tensor *const[]){a}, 0)), KILN_ERR_INVALID_ARGUMENT, "concat: needs at least 1");
  TU_FAILS(own(kiln_concat(-1, (kiln_tensor *const[]){a}, 0)), KILN_ERR_INVALID_ARGUMENT, "concat");
  TU_FAILS(own(kiln_concat(2, NULL, 0)), KILN_ERR_INVALID_ARGUMENT, "concat: xs is NULL");
  TU_FAILS(own(kiln_concat(2, (kiln_tensor *const[]){a, NULL}, 0)), KILN_ERR_INVALID_ARGUMENT, "input 1 is NULL");
  /* A failed input is passed on unchanged. */
  kiln_tensor *c = own(kiln_concat(2, (kiln_tensor *const[]){a, t}, 0));
  TU_FAILS(c, KILN_ERR_SHAPE, "concat: input 2 has shape [2, 4]");
}

/* ---------------------------------------------------------------- stack */

static void stack_literal(void **state) {
  (void)state;
  kiln_tensor *a = lit(KILN_I32, 1, TU_SHAPE(3), VALS(1, 2, 3));
  kiln_tensor *b = lit(KILN_I32, 1, TU_SHAPE(3), VALS(4, 5, 6));
  kiln_tensor *r0 = own(kiln_stack(2, (kiln_tensor *const[]){a, b}, 0));
  CHECK_SHAPE(r0, 2, 2, 3);
  CHECK_VALUES(r0, 1, 2, 3, 4, 5, 6);
  kiln_tensor *r1 = own(kiln_stack(2, (kiln_tensor *const[]){a, b}, -1));
  CHECK_SHAPE(r1, 2, 3, 2);
  CHECK_VALUES(r1, 1, 4, 2, 5, 3, 6);
  kiln_tensor *s0 = lit(KILN_F64, 0, NULL, VALS(2.5));
  kiln_tensor *s1 = lit(KILN_F64, 0, NULL, VALS(-1));
  kiln_tensor *r2 = own(kiln_stack(3, (kiln_tensor *const[]){s0, s1, s0}, 0));
  CHECK_SHAPE(r2, 1, 3);
  CHECK_VALUES(r2, 2.5, -1, 2.5);
}

static void stack_random(void **state) {
  (void)state;
  for (int d = 0; d < N_DTYPES; d++) {
    kiln_dtype dt = all_dtypes[d];
    for (int trial = 0; trial < 40; trial++) {
      int64_t shape[KILN_MAX_DIMS];
      int nd = (int)rnd_in(0, 4), n = trial == 39 ? 10 : (int)rnd_in(1, 4);
      rand_shape(nd, 4, shape);
      int axis = (int)rnd_in(0, nd);
      kiln_tensor *xs[10];
      for (int k = 0; k < n; k++) xs[k] = make_data(dt, nd, shape);
      kiln_tensor *opt, *ref;
      BOTH(opt, ref, kiln_stack(n, xs, rnd_in(0, 1) ? axis : axis - nd - 1));
      SAME_BITS(opt, ref);
      assert_int_equal(kiln_tensor_dim(opt, axis), n);
      for (int k = 0; k < n; k++) {
        kiln_tensor *part = own(kiln_squeeze(own(kiln_slice(opt, axis, k, k + 1, 1)), axis));
        assert_true(tu_close("stack part", part, xs[k], 0, 0));
      }
    }
  }
}

static void stack_errors(void **state) {
  (void)state;
  kiln_tensor *a = own(kiln_zeros(KILN_F32, 2, TU_SHAPE(2, 3)));
  kiln_tensor *b = own(kiln_zeros(KILN_F32, 2, TU_SHAPE(3, 2)));
  kiln_tensor *i = own(kiln_zeros(KILN_I64, 2, TU_SHAPE(2, 3)));
  TU_FAILS(own(kiln_stack(2, (kiln_tensor *const[]){a, b}, 0)), KILN_ERR_SHAPE,
           "stack: input 1 has shape [3, 2] but input 0 has [2, 3]");
  TU_FAILS(own(kiln_stack(2, (kiln_tensor *const[]){a, i}, 0)), KILN_ERR_DTYPE, "input 1 has dtype int64");
  TU_FAILS(own(kiln_stack(2, (kiln_tensor *const[]){a, a}, 3)), KILN_ERR_OUT_OF_RANGE, "stack: axis 3");
  TU_FAILS(own(kiln_stack(2, (kiln_tensor *const[]){a, a}, -4)), KILN_ERR_OUT_OF_RANGE, "axis -4");
  TU_FAILS(own(kiln_stack(0, (kiln_tensor *const[]){a}, 0)), KILN_ERR_INVALID_ARGUMENT, "stack: needs at least 1");
  TU_FAILS(own(kiln_stack(1, NULL, 0)), KILN_ERR_INVALID_ARGUMENT, "stack: xs is NULL");
  kiln_tensor *big = own(kiln_zeros(KILN_F32, 8, TU_SHAPE(1, 1, 1, 1, 1, 1, 1, 1)));
  TU_FAILS(own(kiln_stack(2, (kiln_tensor *const[]){big, big}, 0)), KILN_ERR_SHAPE, "9 dims (at most 8)");
}

/* ---------------------------------------------------------------- split */

static kiln_status split_owned(kiln_tensor *x, int axis, int n, const int64_t *sizes, kiln_tensor **out) {
  kiln_status st = kiln_split(x, axis, n, sizes, out);
  for (int k = 0; k < n && out; k++) own(out[k]);
  return st;
}

static void split_literal(void **state) {
  (void)state;
  kiln_tensor *x = own(kiln_arange(0, 10, 1, KILN_I64));
  kiln_tensor *p[3];
  assert_int_equal(split_owned(x, 0, 3, TU_SHAPE(3, 0, 7), p), KILN_OK);
  CHECK_SHAPE(p[0], 1, 3);
  CHECK_VALUES(p[0], 0, 1, 2);
  CHECK_SHAPE(p[1], 1, 0);
  CHECK_SHAPE(p[2], 1, 7);
  CHECK_VALUES(p[2], 3, 4, 5, 6, 7, 8, 9);
  kiln_tensor *m = lit(KILN_F32, 2, TU_SHAPE(2, 3), VALS(0, 1, 2, 3, 4, 5));
  kiln_tensor *q[2];
  assert_int_equal(split_owned(m, -1, 2, TU_SHAPE(1, 2), q), KILN_OK);
  CHECK_SHAPE(q[0], 2, 2, 1);
  CHECK_VALUES(q[0], 0, 3);
  CHECK_SHAPE(q[1], 2, 2, 2);
  CHECK_VALUES(q[1], 1, 2, 4, 5);
}

static void split_random(void **state) {
  (void)state;
  for (int d = 0; d < N_DTYPES; d++) {
    kiln_dtype dt = all_dtypes[d];
    for (int trial = 0; trial < 40; trial++) {
      int64_t shape[KILN_MAX_DIMS], sizes[KILN_MAX_ATTR_INTS];
      int nd = (int)rnd_in(1, 4);
      rand_shape(nd, 5, shape);
      int axis = (int)rnd_in(0, nd - 1), n = trial == 39 ? KILN_MAX_ATTR_INTS : (int)rnd_in(1, 4);
      /* A random partition of the axis, zero-length parts included. */
      int64_t left = shape[axis];
      for (int k = 0; k < n - 1; k++) {
        sizes[k] = rnd_in(0, left);
        left -= sizes[k];
      }
      sizes[n - 1] = left;
      kiln_tensor *x = make_data(dt, nd, shape);
      kiln_tensor *opt[KILN_MAX_ATTR_INTS], *ref[KILN_MAX_ATTR_INTS];
      int ax = rnd_in(0, 1) ? axis : axis - nd;
      assert_int_equal(split_owned(x, ax, n, sizes, opt), KILN_OK);
      kiln_use_reference_kernels(true);
      assert_int_equal(split_owned(x, ax, n, sizes, ref), KILN_OK);
      kiln_use_reference_kernels(false);
      int64_t at = 0;
      for (int k = 0; k < n; k++) {
        SAME_BITS(opt[k], ref[k]);
        check_part(x, axis, at, sizes[k], opt[k]);
        at += sizes[k];
      }
    }
  }
}

static void split_errors(void **state) {
  (void)state;
  kiln_tensor *x = own(kiln_zeros(KILN_F32, 2, TU_SHAPE(5, 2)));
  kiln_tensor *p[KILN_MAX_ATTR_INTS + 1];
  assert_int_equal(split_owned(x, 0, 2, TU_SHAPE(2, 2), p), KILN_ERR_SHAPE);
  TU_FAILS(p[0], KILN_ERR_SHAPE, "split: sizes [2, 2] sum to 4 but axis 0 of shape [5, 2] has length 5");
  TU_FAILS(p[1], KILN_ERR_SHAPE, "sum to 4");
  assert_int_equal(split_owned(x, 0, 2, TU_SHAPE(6, -1), p), KILN_ERR_INVALID_ARGUMENT);
  TU_FAILS(p[1], KILN_ERR_INVALID_ARGUMENT, "split: size 1 is negative (-1)");
  assert_int_equal(split_owned(x, 2, 1, TU_SHAPE(5), p), KILN_ERR_OUT_OF_RANGE);
  TU_FAILS(p[0], KILN_ERR_OUT_OF_RANGE, "split: axis 2");
  int64_t many[KILN_MAX_ATTR_INTS + 1] = {0};
  many[0] = 5;
  assert_int_equal(split_owned(x, 0, KILN_MAX_ATTR_INTS + 1, many, p), KILN_ERR_INVALID_ARGUMENT);
  for (int k = 0; k < KILN_MAX_ATTR_INTS + 1; k++) TU_FAILS(p[k], KILN_ERR_INVALID_ARGUMENT, "17 parts, at most 16");
  assert_int_equal(split_owned(x, 0, 2, NULL, p), KILN_ERR_INVALID_ARGUMENT);
  TU_FAILS(p[0], KILN_ERR_INVALID_ARGUMENT, "split: sizes is NULL");
  TU_FAILS(p[1], KILN_ERR_INVALID_ARGUMENT, "split: sizes is NULL");
  assert_int_equal(kiln_split(x, 0, 1, TU_SHAPE(5), NULL), KILN_ERR_INVALID_ARGUMENT);
  assert_non_null(strstr(kiln_last_error(), "out is NULL"));
  assert_int_equal(kiln_split(x, 0, 0, TU_SHAPE(5), p), KILN_ERR_INVALID_ARGUMENT);
  assert_non_null(strstr(kiln_last_error(), "at least 1 part"));
  kiln_tensor *s = own(kiln_zeros(KILN_F32, 0, NULL));
  assert_int_equal(split_owned(s, 0, 1, TU_SHAPE(1), p), KILN_ERR_SHAPE);
  TU_FAILS(p[0], KILN_ERR_SHAPE, "split: cannot split a 0-d");
  assert_int_equal(split_owned(NULL, 0, 1, TU_SHAPE(1), p), KILN_ERR_INVALID_ARGUMENT);
  TU_FAILS(p[0], KILN_ERR_INVALID_ARGUMENT, "split: input 0 is NULL");
  /* A failed input reaches every part, even with bad sizes. */
  kiln_tensor *f = own(kiln_concat(0, &x, 0));
  assert_int_equal(split_owned(f, 0, 2, NULL, p), KILN_ERR_INVALID_ARGUMENT);
  TU_FAILS(p[0], KILN_ERR_INVALID_ARGUMENT, "concat: needs at least 1");
  TU_FAILS(p[1], KILN_ERR_INVALID_ARGUMENT, "concat: needs at least 1");
}

/* ---------------------------------------------------------------- take */

static void take_literal(void **state) {
  (void)state;
  kiln_tensor *x = lit(KILN_F32, 2, TU_SHAPE(2, 3), VALS(0, 1, 2, 3, 4, 5));
  kiln_tensor *i1 = lit(KILN_I32, 1, TU_SHAPE(2), VALS(-1, 0));
  kiln_tensor *r0 = own(kiln_take(x, i1, 1));
  CHECK_SHAPE(r0, 2, 2, 2);
  CHECK_VALUES(r0, 2, 0, 5, 3);
  kiln_tensor *i2 = lit(KILN_I64, 2, TU_SHAPE(3, 1), VALS(1, 0, -2));
  kiln_tensor *r1 = own(kiln_take(x, i2, 0));
  CHECK_SHAPE(r1, 3, 3, 1, 3);
  CHECK_VALUES(r1, 3, 4, 5, 0, 1, 2, 0, 1, 2);
  kiln_tensor *i0 = lit(KILN_I64, 0, NULL, VALS(1));
  kiln_tensor *r2 = own(kiln_take(x, i0, -1));
  CHECK_SHAPE(r2, 1, 2);
  CHECK_VALUES(r2, 1, 4);
  /* From a transposed x: x^T = [[0, 3], [1, 4], [2, 5]]. */
  kiln_tensor *xt = own(kiln_transpose(x, 0, 1));
  kiln_tensor *r3 = own(kiln_take(xt, i1, 0));
  CHECK_SHAPE(r3, 2, 2, 2);
  CHECK_VALUES(r3, 2, 5, 0, 3);
  /* Empty indices give an empty result, even from an empty axis. */
  kiln_tensor *ie = own(kiln_zeros(KILN_I32, 1, TU_SHAPE(0)));
  kiln_tensor *xe = own(kiln_zeros(KILN_F32, 2, TU_SHAPE(2, 0)));
  kiln_tensor *r4 = own(kiln_take(xe, ie, 1));
  CHECK_SHAPE(r4, 2, 2, 0);
}

static void take_random(void **state) {
  (void)state;
  for (int d = 0; d < N_DTYPES; d++) {
    kiln_dtype dt = all_dtypes[d];
    for (int trial = 0; trial < 40; trial++) {
      int64_t shape[KILN_MAX_DIMS], ishape[KILN_MAX_DIMS];
      int nd = (int)rnd_in(1, 4), ni = (int)rnd_in(0, 3);
      rand_shape(nd, 4, shape);
      rand_shape(ni, 4, ishape);
      int axis = (int)rnd_in(0, nd - 1);
      int64_t len = shape[axis];
      if (len == 0) {
        /* Only an empty index tensor can index an empty axis. */
        if (ni == 0) ni = 1;
        ishape[0] = 0;
      }
      kiln_dtype it = trial % 2 ? KILN_I32 : KILN_I64;
      kiln_tensor *x = make_data(dt, nd, shape);
      kiln_tensor *idx = make_input(it, ni, ishape, (int)rnd_in(0, 6), (double)-len, (double)(len - 1));
      kiln_tensor *opt, *ref;
      BOTH(opt, ref, kiln_take(x, idx, rnd_in(0, 1) ? axis : axis - nd));
      SAME_BITS(opt, ref);
      assert_int_equal(kiln_tensor_ndim(opt), nd - 1 + ni);
    }
  }
}

static void take_errors(void **state) {
  (void)state;
  kiln_tensor *x = own(kiln_zeros(KILN_F32, 2, TU_SHAPE(2, 5)));
  kiln_tensor *bad = lit(KILN_I64, 1, TU_SHAPE(3), VALS(0, 5, 1));
  BOTH_FAIL(kiln_take(x, bad, 1), KILN_ERR_OUT_OF_RANGE,
            "take: index 5 at position [1] of indices [3] is out of range for axis 1 of length 5");
  kiln_tensor *neg = lit(KILN_I32, 2, TU_SHAPE(2, 2), VALS(0, 1, -4, -6));
  BOTH_FAIL(kiln_take(x, neg, 1), KILN_ERR_OUT_OF_RANGE, "index -6 at position [1, 1] of indices [2, 2]");
  BOTH_FAIL(kiln_take(x, neg, 0), KILN_ERR_OUT_OF_RANGE, "index -4 at position [1, 0]");
  /* Indices are checked even when the result would be empty. */
  kiln_tensor *x0 = own(kiln_zeros(KILN_F32, 2, TU_SHAPE(0, 5)));
  BOTH_FAIL(kiln_take(x0, bad, 1), KILN_ERR_OUT_OF_RANGE, "index 5");
  kiln_tensor *xe = own(kiln_zeros(KILN_F32, 1, TU_SHAPE(0)));
  kiln_tensor *zero = lit(KILN_I32, 0, NULL, VALS(0));
  BOTH_FAIL(kiln_take(xe, zero, 0), KILN_ERR_OUT_OF_RANGE, "index 0 at position [] of indices []");
  kiln_tensor *fi = own(kiln_zeros(KILN_F32, 1, TU_SHAPE(2)));
  TU_FAILS(own(kiln_take(x, fi, 1)), KILN_ERR_DTYPE, "take: indices must be int32 or int64, got float32");
  kiln_tensor *ui = own(kiln_zeros(KILN_U8, 1, TU_SHAPE(2)));
  TU_FAILS(own(kiln_take(x, ui, 1)), KILN_ERR_DTYPE, "got uint8");
  kiln_tensor *ok = lit(KILN_I32, 1, TU_SHAPE(1), VALS(0));
  TU_FAILS(own(kiln_take(x, ok, 2)), KILN_ERR_OUT_OF_RANGE, "take: axis 2");
  kiln_tensor *s = own(kiln_zeros(KILN_F32, 0, NULL));
  TU_FAILS(own(kiln_take(s, ok, 0)), KILN_ERR_SHAPE, "take: cannot take from a 0-d");
  kiln_tensor *x8 = own(kiln_zeros(KILN_F32, 8, TU_SHAPE(1, 1, 1, 1, 1, 1, 1, 2)));
  kiln_tensor *i2 = own(kiln_zeros(KILN_I32, 2, TU_SHAPE(1, 1)));
  TU_FAILS(own(kiln_take(x8, i2, 0)), KILN_ERR_SHAPE, "9 dims (at most 8)");
  TU_FAILS(own(kiln_take(x, NULL, 0)), KILN_ERR_INVALID_ARGUMENT, "take: input 1 is NULL");
}

/* ---------------------------------------------------------------- gather */

static void gather_literal(void **state) {
  (void)state;
  /* torch.gather's documented example. */
  kiln_tensor *x = lit(KILN_F32, 2, TU_SHAPE(2, 2), VALS(1, 2, 3, 4));
  kiln_tensor *i = lit(KILN_I64, 2, TU_SHAPE(2, 2), VALS(0, 0, 1, 0));
  kiln_tensor *r0 = own(kiln_gather(x, 1, i));
  CHECK_SHAPE(r0, 2, 2, 2);
  CHECK_VALUES(r0, 1, 1, 4, 3);
  kiln_tensor *i1 = lit(KILN_I32, 2, TU_SHAPE(1, 2), VALS(1, 0));
  kiln_tensor *r1 = own(kiln_gather(x, 0, i1));
  CHECK_SHAPE(r1, 2, 1, 2);
  CHECK_VALUES(r1, 3, 2);
  kiln_tensor *in = lit(KILN_I32, 2, TU_SHAPE(1, 3), VALS(-1, -2, 1));
  kiln_tensor *r2 = own(kiln_gather(x, -1, in));
  CHECK_SHAPE(r2, 2, 1, 3);
  CHECK_VALUES(r2, 2, 1, 2);
  /* x = [[0, 1, 2], [3, 4, 5]] transposed: [[0, 3], [1, 4], [2, 5]]. */
  kiln_tensor *y = own(kiln_transpose(lit(KILN_I32, 2, TU_SHAPE(2, 3), VALS(0, 1, 2, 3, 4, 5)), 0, 1));
  kiln_tensor *r3 = own(kiln_gather(y, 0, i));
  CHECK_VALUES(r3, 0, 3, 1, 3);
}

static void gather_random(void **state) {
  (void)state;
  for (int d = 0; d < N_DTYPES; d++) {
    kiln_dtype dt = all_dtypes[d];
    for (int trial = 0; trial < 40; trial++) {
      int64_t shape[KILN_MAX_DIMS], ishape[KILN_MAX_DIMS];
      int nd = (int)rnd_in(1, 4);
      rand_shape(nd, 4, shape);
      int axis = (int)rnd_in(0, nd - 1);
      for (int k = 0; k < nd; k++) ishape[k] = k == axis ? rnd_in(0, 5) : rnd_in(0, shape[k]);
      int64_t len = shape[axis];
      if (len == 0) ishape[axis] = 0;
      kiln_dtype it = trial % 2 ? KILN_I32 : KILN_I64;
      kiln_tensor *x = make_data(dt, nd, shape);
      kiln_tensor *idx = make_input(it, nd, ishape, (int)rnd_in(0, 6), (double)-len, (double)(len - 1));
      kiln_tensor *opt, *ref;
      BOTH(opt, ref, kiln_gather(x, rnd_in(0, 1) ? axis : axis - nd, idx));
      SAME_BITS(opt, ref);
    }
  }
}

static void gather_errors(void **state) {
  (void)state;
  kiln_tensor *x = own(kiln_zeros(KILN_F32, 2, TU_SHAPE(2, 3)));
  kiln_tensor *bad = lit(KILN_I64, 2, TU_SHAPE(2, 2), VALS(0, 1, 2, 3));
  BOTH_FAIL(kiln_gather(x, 1, bad), KILN_ERR_OUT_OF_RANGE,
            "gather: index 3 at position [1, 1] of indices [2, 2] is out of range for axis 1 of length 3");
  BOTH_FAIL(kiln_gather(x, 0, bad), KILN_ERR_OUT_OF_RANGE, "index 2 at position [1, 0]");
  kiln_tensor *neg = lit(KILN_I32, 2, TU_SHAPE(1, 1), VALS(-4));
  BOTH_FAIL(kiln_gather(x, 1, neg), KILN_ERR_OUT_OF_RANGE, "index -4 at position [0, 0]");
  kiln_tensor *flat = own(kiln_zeros(KILN_I64, 1, TU_SHAPE(2)));
  TU_FAILS(own(kiln_gather(x, 0, flat)), KILN_ERR_SHAPE, "gather: index [2] must have as many dims as x [2, 3]");
  kiln_tensor *wide = own(kiln_zeros(KILN_I64, 2, TU_SHAPE(1, 4)));
  TU_FAILS(own(kiln_gather(x, 0, wide)), KILN_ERR_SHAPE, "index [1, 4] is longer than x [2, 3] on dim 1");
  TU_OK(own(kiln_gather(x, 1, wide))); /* the gathered axis may be longer */
  kiln_tensor *fi = own(kiln_zeros(KILN_F64, 2, TU_SHAPE(1, 1)));
  TU_FAILS(own(kiln_gather(x, 0, fi)), KILN_ERR_DTYPE, "gather: indices must be int32 or int64, got float64");
  TU_FAILS(own(kiln_gather(x, -3, wide)), KILN_ERR_OUT_OF_RANGE, "gather: axis -3");
}

/* ---------------------------------------------------------------- one_hot */

static void one_hot_literal(void **state) {
  (void)state;
  kiln_tensor *i = lit(KILN_I64, 1, TU_SHAPE(3), VALS(0, 2, 1));
  kiln_tensor *r0 = own(kiln_one_hot(i, 3, KILN_F32));
  CHECK_SHAPE(r0, 2, 3, 3);
  assert_int_equal(kiln_tensor_dtype(r0), KILN_F32);
  CHECK_VALUES(r0, 1, 0, 0, 0, 0, 1, 0, 1, 0);
  kiln_tensor *i2 = lit(KILN_I32, 2, TU_SHAPE(2, 1), VALS(1, 0));
  kiln_tensor *r1 = own(kiln_one_hot(i2, 2, KILN_I32));
  CHECK_SHAPE(r1, 3, 2, 1, 2);
  CHECK_VALUES(r1, 0, 1, 1, 0);
  /* uint8 labels, as IDX files store them, into bool. */
  kiln_tensor *u = lit(KILN_U8, 1, TU_SHAPE(2), VALS(3, 0));
  kiln_tensor *r2 = own(kiln_one_hot(u, 4, KILN_BOOL));
  assert_int_equal(kiln_tensor_dtype(r2), KILN_BOOL);
  CHECK_VALUES(r2, 0, 0, 0, 1, 1, 0, 0, 0);
  kiln_tensor *s = lit(KILN_I64, 0, NULL, VALS(2));
  kiln_tensor *r3 = own(kiln_one_hot(s, 3, KILN_F64));
  CHECK_SHAPE(r3, 1, 3);
  CHECK_VALUES(r3, 0, 0, 1);
  kiln_tensor *e = own(kiln_zeros(KILN_I32, 1, TU_SHAPE(0)));
  CHECK_SHAPE(own(kiln_one_hot(e, 0, KILN_F32)), 2, 0, 0);
}

static void one_hot_random(void **state) {
  (void)state;
  const kiln_dtype idx_types[] = {KILN_I32, KILN_I64, KILN_U8};
  for (int d = 0; d < N_DTYPES; d++) {
    for (int trial = 0; trial < 30; trial++) {
      int64_t ishape[KILN_MAX_DIMS];
      int ni = (int)rnd_in(0, 3);
      rand_shape(ni, 4, ishape);
      int64_t depth = rnd_in(0, 6);
      if (depth == 0) {
        if (ni == 0) ni = 1;
        ishape[0] = 0;
      }
      kiln_tensor *idx = make_input(idx_types[trial % 3], ni, ishape, (int)rnd_in(0, 6), 0, (double)(depth - 1));
      kiln_tensor *opt, *ref;
      BOTH(opt, ref, kiln_one_hot(idx, depth, all_dtypes[d]));
      SAME_BITS(opt, ref);
      /* Each row holds exactly one 1, so the sum is the row count. */
      kiln_tensor *sum = own(kiln_sum(own(kiln_cast(opt, KILN_F64)), 0, NULL, false));
      double total = -1;
      assert_int_equal(kiln_tensor_item(sum, &total), KILN_OK);
      assert_true(total == (double)kiln_tensor_numel(idx));
    }
  }
}

static void one_hot_errors(void **state) {
  (void)state;
  kiln_tensor *i = lit(KILN_I64, 2, TU_SHAPE(2, 2), VALS(0, 1, 2, 3));
  BOTH_FAIL(kiln_one_hot(i, 3, KILN_F32), KILN_ERR_OUT_OF_RANGE,
            "one_hot: index 3 at position [1, 1] of indices [2, 2] is out of range for depth 3");
  kiln_tensor *n = lit(KILN_I32, 1, TU_SHAPE(2), VALS(0, -1));
  BOTH_FAIL(kiln_one_hot(n, 3, KILN_F32), KILN_ERR_OUT_OF_RANGE, "index -1 at position [1]");
  BOTH_FAIL(kiln_one_hot(n, 0, KILN_F32), KILN_ERR_OUT_OF_RANGE, "index 0 at position [0]");
  TU_FAILS(own(kiln_one_hot(i, -1, KILN_F32)), KILN_ERR_INVALID_ARGUMENT, "one_hot: depth -1 is negative");
  TU_FAILS(own(kiln_one_hot(i, 4, (kiln_dtype)42)), KILN_ERR_DTYPE, "one_hot: unknown dtype 42");
  kiln_tensor *f = own(kiln_zeros(KILN_F32, 1, TU_SHAPE(2)));
  TU_FAILS(own(kiln_one_hot(f, 4, KILN_F32)), KILN_ERR_DTYPE, "indices must be int32 or int64 or uint8, got float32");
  kiln_tensor *b = own(kiln_zeros(KILN_BOOL, 1, TU_SHAPE(2)));
  TU_FAILS(own(kiln_one_hot(b, 4, KILN_F32)), KILN_ERR_DTYPE, "got bool");
  kiln_tensor *i8 = own(kiln_zeros(KILN_I32, 8, TU_SHAPE(1, 1, 1, 1, 1, 1, 1, 1)));
  TU_FAILS(own(kiln_one_hot(i8, 2, KILN_F32)), KILN_ERR_SHAPE, "9 dims (at most 8)");
  TU_FAILS(own(kiln_one_hot(NULL, 2, KILN_F32)), KILN_ERR_INVALID_ARGUMENT, "one_hot: input 0 is NULL");
}

/* ---------------------------------------------------------------- pad */

static void pad_literal(void **state) {
  (void)state;
  kiln_tensor *x = lit(KILN_F32, 2, TU_SHAPE(2, 2), VALS(1, 2, 3, 4));
  kiln_tensor *r0 = own(kiln_pad(x, 4, TU_SHAPE(1, 0, 0, 2), 9));
  CHECK_SHAPE(r0, 2, 3, 4);
  CHECK_VALUES(r0, 9, 9, 9, 9, 1, 2, 9, 9, 3, 4, 9, 9);
  /* A short list pads the leading axes. */
  kiln_tensor *r1 = own(kiln_pad(x, 2, TU_SHAPE(1, 1), 0));
  CHECK_SHAPE(r1, 2, 4, 2);
  CHECK_VALUES(r1, 0, 0, 1, 2, 3, 4, 0, 0);
  kiln_tensor *r2 = own(kiln_pad(x, 0, NULL, 5));
  CHECK_SHAPE(r2, 2, 2, 2);
  CHECK_VALUES(r2, 1, 2, 3, 4);
  /* The value converts as cast does. */
  kiln_tensor *xi = lit(KILN_I32, 1, TU_SHAPE(1), VALS(7));
  CHECK_VALUES(own(kiln_pad(xi, 2, TU_SHAPE(1, 1), -2.7)), -2, 7, -2);
  kiln_tensor *xu = lit(KILN_U8, 1, TU_SHAPE(1), VALS(7));
  CHECK_VALUES(own(kiln_pad(xu, 2, TU_SHAPE(1, 0), 300)), 255, 7);
  CHECK_VALUES(own(kiln_pad(xu, 2, TU_SHAPE(0, 1), NAN)), 7, 0);
  kiln_tensor *xb = lit(KILN_BOOL, 1, TU_SHAPE(1), VALS(0));
  CHECK_VALUES(own(kiln_pad(xb, 2, TU_SHAPE(1, 0), 0.5)), 1, 0);
  CHECK_VALUES(own(kiln_pad(x, 2, TU_SHAPE(0, 1), NAN)), 1, 2, 3, 4, NAN, NAN);
  /* A transposed x: [[1, 3], [2, 4]]. */
  kiln_tensor *xt = own(kiln_transpose(x, 0, 1));
  CHECK_VALUES(own(kiln_pad(xt, 4, TU_SHAPE(0, 0, 1, 0), -1)), -1, 1, 3, -1, 2, 4);
}

static void pad_random(void **state) {
  (void)state;
  const double values[] = {0, 1.5, -2.75, 300, NAN, -1e20, INFINITY};
  for (int d = 0; d < N_DTYPES; d++) {
    kiln_dtype dt = all_dtypes[d];
    for (int trial = 0; trial < 40; trial++) {
      int64_t shape[KILN_MAX_DIMS], pads[2 * KILN_MAX_DIMS];
      int nd = (int)rnd_in(0, 4), np = 2 * (int)rnd_in(0, nd);
      rand_shape(nd, 4, shape);
      for (int k = 0; k < np; k++) pads[k] = rnd_in(0, 2);
      kiln_tensor *x = make_data(dt, nd, shape);
      double value = values[trial % 7];
      kiln_tensor *opt, *ref;
      BOTH(opt, ref, kiln_pad(x, np, pads, value));
      SAME_BITS(opt, ref);
      /* The interior is x. */
      kiln_tensor *inner = opt;
      for (int k = 0; k < np / 2; k++) inner = own(kiln_slice(inner, k, pads[2 * k], pads[2 * k] + shape[k], 1));
      assert_true(tu_close("pad interior", inner, x, 0, 0));
    }
  }
}

static void pad_errors(void **state) {
  (void)state;
  kiln_tensor *x = own(kiln_zeros(KILN_F32, 2, TU_SHAPE(2, 3)));
  TU_FAILS(own(kiln_pad(x, 6, TU_SHAPE(0, 0, 0, 0, 1, 1), 0)), KILN_ERR_INVALID_ARGUMENT,
           "pad: too many pads: 6 values for 2 dims of shape [2, 3]");
  TU_FAILS(own(kiln_pad(x, 4, TU_SHAPE(0, 0, -1, 2), 0)), KILN_ERR_INVALID_ARGUMENT,
           "pad: negative pad (-1, 2) for axis 1");
  TU_FAILS(own(kiln_pad(x, 3, TU_SHAPE(1, 1, 1), 0)), KILN_ERR_INVALID_ARGUMENT, "pad: 3 pad values");
  int64_t many[KILN_MAX_ATTR_INTS + 2] = {0};
  TU_FAILS(own(kiln_pad(x, KILN_MAX_ATTR_INTS + 2, many, 0)), KILN_ERR_INVALID_ARGUMENT,
           "pad: too many pads: 18 values (at most 16");
  TU_FAILS(own(kiln_pad(x, 2, NULL, 0)), KILN_ERR_INVALID_ARGUMENT, "pad: pads is NULL");
  TU_FAILS(own(kiln_pad(x, -2, TU_SHAPE(0, 0), 0)), KILN_ERR_INVALID_ARGUMENT, "pad: n_pads is negative");
  TU_FAILS(own(kiln_pad(x, 2, TU_SHAPE(INT64_MAX, 1), 0)), KILN_ERR_OVERFLOW, "pad: padding axis 0");
  TU_FAILS(own(kiln_pad(NULL, 2, TU_SHAPE(0, 0), 0)), KILN_ERR_INVALID_ARGUMENT, "pad: input 0 is NULL");
  /* A failed input wins over a bad argument. */
  kiln_tensor *f = own(kiln_concat(0, &x, 0));
  TU_FAILS(own(kiln_pad(f, 2, NULL, 0)), KILN_ERR_INVALID_ARGUMENT, "concat: needs at least 1");
}

/* ---------------------------------------------------------------- cast */

static void cast_literal(void **state) {
  (void)state;
  /* Specials in both float widths, as a transposed [2, 8] view. */
  const double v[16] = {NAN, INFINITY, -INFINITY, 0.5, -0.5, -1.7, 2.9, 1e10,
                        -1e10, 3e9, -3e9, 255.5, 256, -0.0, 1e19, -1e19};
  const double want_i32[16] = {0, INT32_MAX, INT32_MIN, 0, 0, -1, 2, INT32_MAX,
                               INT32_MIN, INT32_MAX, INT32_MIN, 255, 256, 0, INT32_MAX, INT32_MIN};
  const double want_i64[16] = {0, (double)INT64_MAX, (double)INT64_MIN, 0, 0, -1, 2, 1e10,
                               -1e10, 3e9, -3e9, 255, 256, 0, (double)INT64_MAX, (double)INT64_MIN};
  const double want_u8[16] = {0, 255, 0, 0, 0, 0, 2, 255, 0, 255, 0, 255, 255, 0, 255, 0};
  const double want_bool[16] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 1, 1};
  for (int w = 0; w < 2; w++) {
    kiln_dtype src = w ? KILN_F64 : KILN_F32;
    /* Stored as [8, 2] holding v transposed, so the [2, 8] view reads v in
     * order through strides (1, 2). */
    double tv[16];
    for (int r = 0; r < 2; r++)
      for (int c = 0; c < 8; c++) tv[c * 2 + r] = v[r * 8 + c];
    kiln_tensor *x = own(kiln_transpose(lit(src, 2, TU_SHAPE(8, 2), tv), 0, 1));
    assert_false(kiln_tensor_is_contiguous(x));
    for (int d = 0; d < N_DTYPES; d++) {
      kiln_tensor *opt, *ref;
      BOTH(opt, ref, kiln_cast(x, all_dtypes[d]));
      SAME_BITS(opt, ref);
      CHECK_SHAPE(opt, 2, 2, 8);
      switch (all_dtypes[d]) {
      case KILN_I32: assert_true(tu_close_values("f->i32", opt, want_i32, 16, 0, 0)); break;
      case KILN_I64: assert_true(tu_close_values("f->i64", opt, want_i64, 16, 0, 0)); break;
      case KILN_U8: assert_true(tu_close_values("f->u8", opt, want_u8, 16, 0, 0)); break;
      case KILN_BOOL: assert_true(tu_close_values("f->bool", opt, want_bool, 16, 0, 0)); break;
      default: break;
      }
    }
  }
  kiln_tensor *f = lit(KILN_F64, 1, TU_SHAPE(3), VALS(0.1, 1e300, -1e-300));
  CHECK_VALUES(own(kiln_cast(f, KILN_F32)), (double)0.1f, INFINITY, -0.0);

  /* Integer narrowing keeps the low bits; bool is != 0. */
  const int64_t big[8] = {INT64_MIN, INT64_MAX, -1, ((int64_t)1 << 40) + 1, 255, 256, -129, 0};
  kiln_tensor *xi = own(kiln_from_data(KILN_I64, 1, TU_SHAPE(8), big));
  const double i32[8] = {0, -1, -1, 1, 255, 256, -129, 0};
  const double u8[8] = {0, 255, 255, 1, 255, 0, 127, 0};
  const double bl[8] = {1, 1, 1, 1, 1, 1, 1, 0};
  const double f64[8] = {(double)INT64_MIN, (double)INT64_MAX, -1, (double)(((int64_t)1 << 40) + 1), 255, 256, -129, 0};
  const double *want[N_DTYPES] = {f64, f64, i32, NULL, u8, bl};
  for (int d = 0; d < N_DTYPES; d++) {
    kiln_tensor *opt, *ref;
    BOTH(opt, ref, kiln_cast(xi, all_dtypes[d]));
    SAME_BITS(opt, ref);
    if (want[d]) assert_true(tu_close_values("i64 cast", opt, want[d], 8, d == 0 ? 1e-7 : 0, 0));
  }
  kiln_tensor *same = own(kiln_cast(xi, KILN_I64));
  int64_t back[8];
  assert_int_equal(kiln_tensor_copy_to(same, back, sizeof back), KILN_OK);
  assert_memory_equal(back, big, sizeof big);
  kiln_tensor *b = lit(KILN_BOOL, 1, TU_SHAPE(2), VALS(1, 0));
  CHECK_VALUES(own(kiln_cast(b, KILN_F32)), 1, 0);
  CHECK_VALUES(own(kiln_cast(b, KILN_I64)), 1, 0);
}

static void cast_random(void **state) {
  (void)state;
  for (int s = 0; s < N_DTYPES; s++) {
    for (int d = 0; d < N_DTYPES; d++) {
      for (int trial = 0; trial < 8; trial++) {
        int64_t shape[KILN_MAX_DIMS];
        int nd = (int)rnd_in(0, 4);
        rand_shape(nd, trial == 7 ? 40 : 5, shape);
        kiln_dtype st = all_dtypes[s];
        /* Wide ranges, so narrowing wraps and saturates. */
        double lo = st == KILN_U8 ? 0 : -400, hi = st == KILN_U8 ? 255 : 400;
        kiln_tensor *x = make_input(st, nd, shape, (int)rnd_in(0, 6), lo, hi);
        kiln_tensor *opt, *ref;
        BOTH(opt, ref, kiln_cast(x, all_dtypes[d]));
        SAME_BITS(opt, ref);
        assert_int_equal(kiln_tensor_dtype(opt), all_dtypes[d]);
        /* Widening to float64 is exact, and so is the way back. */
        if (d == 1) {
          double *want = values_of(x);
          bool ok = tu_close_values("cast to f64", opt, want, kiln_tensor_numel(x), 0, 0);
          free(want);
          assert_true(ok);
        }
      }
    }
  }
}

static void cast_errors(void **state) {
  (void)state;
  kiln_tensor *x = own(kiln_zeros(KILN_F32, 1, TU_SHAPE(2)));
  TU_FAILS(own(kiln_cast(x, (kiln_dtype)99)), KILN_ERR_DTYPE, "cast: unknown dtype 99");
  TU_FAILS(own(kiln_cast(x, (kiln_dtype)-1)), KILN_ERR_DTYPE, "cast: unknown dtype -1");
  TU_FAILS(own(kiln_cast(NULL, KILN_F32)), KILN_ERR_INVALID_ARGUMENT, "cast: input 0 is NULL");
  kiln_tensor *f = own(kiln_cast(x, (kiln_dtype)99));
  TU_FAILS(own(kiln_cast(f, KILN_F64)), KILN_ERR_DTYPE, "cast: unknown dtype 99");
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_teardown(concat_literal, release_owned),
      cmocka_unit_test_teardown(concat_random, release_owned),
      cmocka_unit_test_teardown(concat_errors, release_owned),
      cmocka_unit_test_teardown(stack_literal, release_owned),
      cmocka_unit_test_teardown(stack_random, release_owned),
      cmocka_unit_test_teardown(stack_errors, release_owned),
      cmocka_unit_test_teardown(split_literal, release_owned),
      cmocka_unit_test_teardown(split_random, release_owned),
      cmocka_unit_test_teardown(split_errors, release_owned),
      cmocka_unit_test_teardown(take_literal, release_owned),
      cmocka_unit_test_teardown(take_random, release_owned),
      cmocka_unit_test_teardown(take_errors, release_owned),
      cmocka_unit_test_teardown(gather_literal, release_owned),
      cmocka_unit_test_teardown(gather_random, release_owned),
      cmocka_unit_test_teardown(gather_errors, release_owned),
      cmocka_unit_test_teardown(one_hot_literal, release_owned),
      cmocka_unit_test_teardown(one_hot_random, release_owned),
      cmocka_unit_test_teardown(one_hot_errors, release_owned),
      cmocka_unit_test_teardown(pad_literal, release_owned),
      cmocka_unit_test_teardown(pad_random, release_owned),
      cmocka_unit_test_teardown(pad_errors, release_owned),
      cmocka_unit_test_teardown(cast_literal, release_owned),
      cmocka_unit_test_teardown(cast_random, release_owned),
      cmocka_unit_test_teardown(cast_errors, release_owned),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
