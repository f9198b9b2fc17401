/* Tensor layer tests: creation ops against closed forms, views (that they
 * share storage and read the right elements, checked against index
 * arithmetic written here), contiguous/copy, copy_to and item, the printer
 * (exact strings, which match numpy's repr for these inputs), scopes (with a
 * counting allocator so a leak fails even without LSan) and the random
 * generators (a Philox known-answer test, an independent Philox written here,
 * moments, and per-thread determinism). */
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/random.h"
#include "tensor/tensor.h"
#include <stdatomic.h>

#include "testutil.h"

/* ------------------------------------------------------------------ helpers */

/* The logical values of t in row-major order, as doubles (caller frees). */
static double *values_of(const kiln_tensor *t) {
  int64_t n = kiln_tensor_numel(t);
  size_t es = kiln_dtype_size(kiln_tensor_dtype(t));
  char *raw = malloc((size_t)(n ? n : 1) * es);
  double *d = malloc((size_t)(n ? n : 1) * sizeof(double));
  assert_int_equal(kiln_tensor_copy_to(t, raw, (size_t)n * es), KILN_OK);
  for (int64_t i = 0; i < n; i++) {
    const char *p = raw + i * (int64_t)es;
    switch (kiln_tensor_dtype(t)) {
    case KILN_F32: { float f; memcpy(&f, p, 4); d[i] = f; break; }
    case KILN_F64: memcpy(&d[i], p, 8); break;
    case KILN_I32: { int32_t x; memcpy(&x, p, 4); d[i] = x; break; }
    case KILN_I64: { int64_t x; memcpy(&x, p, 8); d[i] = (double)x; break; }
    case KILN_U8: d[i] = (unsigned char)*p; break;
    default: d[i] = *p != 0; break;
    }
  }
  free(raw);
  return d;
}

static void assert_shape(const kiln_tensor *t, int ndim, const int64_t *shape) {
  TU_OK(t);
  assert_int_equal(kiln_tensor_ndim(t), ndim);
  for (int i = 0; i < ndim; i++) assert_int_equal(kiln_tensor_shape(t)[i], shape[i]);
}

static bool same_storage(const kiln_tensor *a, const kiln_tensor *b) { return a->storage && a->storage == b->storage; }

/* x = arange(n) reshaped to shape, float64, so element values are their
 * row-major positions. */
static kiln_tensor *iota(kiln_dtype dt, int ndim, const int64_t *shape) {
  int64_t n = 1;
  for (int i = 0; i < ndim; i++) n *= shape[i];
  kiln_tensor *a = kiln_arange(0, (double)n, 1, dt);
  kiln_tensor *r = kiln_reshape(a, ndim, shape);
  kiln_tensor_release(a);
  return r;
}

/* ------------------------------------------------------------------ creation */

static void creation_full_zeros_ones(void **state) {
  (void)state;
  const int64_t shapes[3][2] = {{2, 3}, {0, 4}, {1, 1}};
  for (int dt = 0; dt < KILN_DTYPE_COUNT; dt++) {
    for (int s = 0; s < 3; s++) {
      kiln_tensor *z = kiln_zeros((kiln_dtype)dt, 2, shapes[s]);
      kiln_tensor *o = kiln_ones((kiln_dtype)dt, 2, shapes[s]);
      kiln_tensor *f = kiln_full((kiln_dtype)dt, 2, shapes[s], 7.0);
      assert_shape(z, 2, shapes[s]);
      assert_int_equal(kiln_tensor_dtype(f), dt);
      assert_true(kiln_tensor_is_contiguous(f));
      int64_t n = shapes[s][0] * shapes[s][1];
      double want0[6] = {0}, want1[6], want7[6];
      for (int i = 0; i < 6; i++) want1[i] = 1, want7[i] = dt == KILN_BOOL ? 1 : 7;
      assert_true(tu_close_values("zeros", z, want0, n, 0, 0));
      assert_true(tu_close_values("ones", o, want1, n, 0, 0));
      assert_true(tu_close_values("full", f, want7, n, 0, 0));
      kiln_tensor_release(z);
      kiln_tensor_release(o);
      kiln_tensor_release(f);
    }
  }
  /* 0-d. */
  kiln_tensor *s = kiln_full(KILN_F64, 0, NULL, -2.5);
  assert_shape(s, 0, NULL);
  double v = 0;
  assert_int_equal(kiln_tensor_item(s, &v), KILN_OK);
  assert_true(v == -2.5);
  kiln_tensor_release(s);
  /* Values converted to the dtype: float32 rounding, integer truncation. */
  kiln_tensor *f32 = kiln_full(KILN_F32, 1, (int64_t[]){2}, 0.1);
  double w32[2] = {(float)0.1, (float)0.1};
  assert_true(tu_close_values("full f32", f32, w32, 2, 0, 0));
  kiln_tensor *i32 = kiln_full(KILN_I32, 1, (int64_t[]){2}, -3.7);
  double wi[2] = {-3, -3};
  assert_true(tu_close_values("full i32", i32, wi, 2, 0, 0));
  kiln_tensor_release(f32);
  kiln_tensor_release(i32);
}

/* numpy.arange: ceil((stop - start) / step) elements, start + i * step. */
static void check_arange(double start, double stop, double step, kiln_dtype dt) {
  double count = ceil((stop - start) / step);
  int64_t n = count > 0 ? (int64_t)count : 0;
  kiln_tensor *t = kiln_arange(start, stop, step, dt);
  assert_shape(t, 1, &n);
  assert_int_equal(kiln_tensor_dtype(t), dt);
  double *want = malloc((size_t)(n ? n : 1) * sizeof *want);
  for (int64_t i = 0; i < n; i++) {
    double v = start + (double)i * step;
    want[i] = dt == KILN_F32 ? (double)(float)v : dt == KILN_F64 ? v : trunc(v);
  }
  char label[128];
  snprintf(label, sizeof label, "arange(%g, %g, %g, %s)", start, stop, step, kiln_dtype_name(dt));
  assert_true(tu_close_values(label, t, want, n, 0, 0));
  free(want);
  kiln_tensor_release(t);
}

static void creation_arange(void **state) {
  (void)state;
  check_arange(0, 5, 1, KILN_F32);
  check_arange(0, 5, 1, KILN_I64);
  check_arange(10, 0, -2.5, KILN_F64);
  check_arange(0, 1, 0.1, KILN_F64);
  check_arange(-3, 3, 1.5, KILN_F32);
  check_arange(0, 10, 3, KILN_I32);
  check_arange(5, 0, 1, KILN_F32);   /* empty */
  check_arange(0, 5, -1, KILN_F32);  /* empty */
  check_arange(2, 2, 1, KILN_F64);   /* empty */
  check_arange(-1, -10, -3, KILN_I32);
  /* Spot values independent of the formula above. */
  kiln_tensor *t = kiln_arange(1, -1, -0.5, KILN_F32);
  double want[4] = {1, 0.5, 0, -0.5};
  assert_true(tu_close_values("arange(1,-1,-0.5)", t, want, 4, 0, 0));
  kiln_tensor_release(t);
}

static void creation_linspace(void **state) {
  (void)state;
  kiln_tensor *t = kiln_linspace(0, 1, 5, KILN_F32);
  double w5[5] = {0, 0.25, 0.5, 0.75, 1};
  assert_true(tu_close_values("linspace 5", t, w5, 5, 0, 0));
  kiln_tensor_release(t);

  t = kiln_linspace(2, -2, 3, KILN_F64);
  double w3[3] = {2, 0, -2};
  assert_true(tu_close_values("linspace descending", t, w3, 3, 0, 0));
  kiln_tensor_release(t);

  t = kiln_linspace(3.5, 9, 1, KILN_F64);
  double w1[1] = {3.5};
  assert_shape(t, 1, (int64_t[]){1});
  assert_true(tu_close_values("linspace num 1", t, w1, 1, 0, 0));
  kiln_tensor_release(t);

  t = kiln_linspace(0, 1, 0, KILN_F32);
  assert_shape(t, 1, (int64_t[]){0});
  kiln_tensor_release(t);

  /* The last point is stop exactly; the others start + i * (stop-start)/(n-1). */
  t = kiln_linspace(0, 0.3, 7, KILN_F64);
  double *v = values_of(t);
  assert_true(v[6] == 0.3);
  for (int i = 0; i < 6; i++) assert_true(fabs(v[i] - 0.05 * i) <= 1e-15);
  free(v);
  kiln_tensor_release(t);

  t = kiln_linspace(-1, 1, 201, KILN_F32);
  v = values_of(t);
  for (int i = 0; i < 201; i++) assert_true(fabs(v[i] - (-1 + 0.01 * i)) <= 1e-7);
  free(v);
  kiln_tensor_release(t);
}

static void creation_eye(void **state) {
  (void)state;
  const int64_t dims[4][2] = {{3, 3}, {2, 4}, {4, 2}, {0, 3}};
  const kiln_dtype dts[3] = {KILN_F32, KILN_I32, KILN_BOOL};
  for (int d = 0; d < 4; d++)
    for (int k = 0; k < 3; k++) {
      kiln_tensor *e = kiln_eye(dims[d][0], dims[d][1], dts[k]);
      assert_shape(e, 2, dims[d]);
      assert_int_equal(kiln_tensor_dtype(e), dts[k]);
      double want[16];
      for (int64_t i = 0; i < dims[d][0]; i++)
        for (int64_t j = 0; j < dims[d][1]; j++) want[i * dims[d][1] + j] = i == j;
      assert_true(tu_close_values("eye", e, want, dims[d][0] * dims[d][1], 0, 0));
      kiln_tensor_release(e);
    }
}

static void creation_from_data_every_dtype(void **state) {
  (void)state;
  unsigned char bytes[6 * 8];
  for (size_t i = 0; i < sizeof bytes; i++) bytes[i] = (unsigned char)(i * 37 + 11);
  for (int dt = 0; dt < KILN_DTYPE_COUNT; dt++) {
    size_t es = kiln_dtype_size((kiln_dtype)dt);
    if (dt == KILN_BOOL)
      for (size_t i = 0; i < sizeof bytes; i++) bytes[i] = (unsigned char)(i % 3 == 0);
    /* Finite floats only, so byte equality is value equality. */
    if (dt == KILN_F32) {
      float f[6] = {1.5f, -2.25f, 0.0f, 1e-30f, 3e30f, -0.0f};
      memcpy(bytes, f, sizeof f);
    }
    if (dt == KILN_F64) {
      double f[6] = {1.5, -2.25, 0.0, 1e-300, 3e300, -0.0};
      memcpy(bytes, f, sizeof f);
    }
    kiln_tensor *t = kiln_from_data((kiln_dtype)dt, 2, (int64_t[]){2, 3}, bytes);
    assert_shape(t, 2, (int64_t[]){2, 3});
    assert_int_equal(kiln_tensor_dtype(t), dt);
    assert_true(kiln_tensor_is_contiguous(t));
    assert_int_equal(kiln_tensor_strides(t)[0], 3);
    assert_int_equal(kiln_tensor_strides(t)[1], 1);
    unsigned char back[6 * 8];
    assert_int_equal(kiln_tensor_copy_to(t, back, sizeof back), KILN_OK);
    assert_memory_equal(back, bytes, 6 * es);
    kiln_tensor_release(t);
  }
  /* The data is copied: changing the source afterwards changes nothing. */
  float src[3] = {1, 2, 3};
  kiln_tensor *t = kiln_from_data(KILN_F32, 1, (int64_t[]){3}, src);
  src[0] = 100;
  double w[3] = {1, 2, 3};
  assert_true(tu_close_values("from_data copies", t, w, 3, 0, 0));
  kiln_tensor_release(t);
  /* Zero elements: data may be NULL. */
  t = kiln_from_data(KILN_I64, 2, (int64_t[]){0, 5}, NULL);
  assert_shape(t, 2, (int64_t[]){0, 5});
  kiln_tensor_release(t);
  /* 0-d. */
  int32_t one = -42;
  t = kiln_from_data(KILN_I32, 0, NULL, &one);
  double v;
  assert_int_equal(kiln_tensor_item(t, &v), KILN_OK);
  assert_true(v == -42);
  kiln_tensor_release(t);
}

/* ------------------------------------------------------------------ views */

static void view_reshape(void **state) {
  (void)state;
  kiln_tensor *x = iota(KILN_F32, 3, (int64_t[]){2, 3, 4});
  kiln_tensor *r = kiln_reshape(x, 2, (int64_t[]){-1, 4});
  assert_shape(r, 2, (int64_t[]){6, 4});
  assert_true(same_storage(r, x));
  double want[24];
  for (int i = 0; i < 24; i++) want[i] = i;
  assert_true(tu_close_values("reshape -1", r, want, 24, 0, 0));
  kiln_tensor *r2 = kiln_reshape(x, 3, (int64_t[]){4, -1, 3});
  assert_shape(r2, 3, (int64_t[]){4, 2, 3});
  assert_true(same_storage(r2, x));
  kiln_tensor *flat = kiln_reshape(x, 1, (int64_t[]){-1});
  assert_shape(flat, 1, (int64_t[]){24});
  /* To and from 0-d. */
  kiln_tensor *one = kiln_full(KILN_F64, 3, (int64_t[]){1, 1, 1}, 9);
  kiln_tensor *s = kiln_reshape(one, 0, NULL);
  assert_shape(s, 0, NULL);
  kiln_tensor *back = kiln_reshape(s, 2, (int64_t[]){1, -1});
  assert_shape(back, 2, (int64_t[]){1, 1});
  /* Empty with -1. */
  kiln_tensor *e = kiln_zeros(KILN_F32, 2, (int64_t[]){0, 6});
  kiln_tensor *er = kiln_reshape(e, 3, (int64_t[]){-1, 2, 3});
  assert_shape(er, 3, (int64_t[]){0, 2, 3});
  kiln_tensor *rel[] = {x, r, r2, flat, one, s, back, e, er};
  for (size_t i = 0; i < sizeof rel / sizeof rel[0]; i++) kiln_tensor_release(rel[i]);
}

static void view_transpose_permute(void **state) {
  (void)state;
  const int64_t shape[3] = {2, 3, 4};
  kiln_tensor *x = iota(KILN_F64, 3, shape);
  kiln_tensor *t = kiln_transpose(x, 0, -1); /* [4, 3, 2] */
  assert_shape(t, 3, (int64_t[]){4, 3, 2});
  assert_true(same_storage(t, x));
  assert_false(kiln_tensor_is_contiguous(t));
  double want[24];
  for (int i = 0; i < 4; i++)
    for (int j = 0; j < 3; j++)
      for (int k = 0; k < 2; k++) want[(i * 3 + j) * 2 + k] = k * 12 + j * 4 + i;
  assert_true(tu_close_values("transpose", t, want, 24, 0, 0));

  const int axes[3] = {1, 2, 0}; /* [3, 4, 2] */
  kiln_tensor *p = kiln_permute(x, 3, axes);
  assert_shape(p, 3, (int64_t[]){3, 4, 2});
  assert_true(same_storage(p, x));
  for (int i = 0; i < 3; i++)
    for (int j = 0; j < 4; j++)
      for (int k = 0; k < 2; k++) want[(i * 4 + j) * 2 + k] = k * 12 + i * 4 + j;
  assert_true(tu_close_values("permute", p, want, 24, 0, 0));
  const int neg_axes[3] = {-2, -1, -3};
  kiln_tensor *pn = kiln_permute(x, 3, neg_axes);
  assert_true(tu_close_values("permute negative axes", pn, want, 24, 0, 0));

  /* A permutation of a permutation composes. */
  kiln_tensor *tt = kiln_transpose(t, 0, 2);
  for (int i = 0; i < 24; i++) want[i] = i;
  assert_true(tu_close_values("transpose twice", tt, want, 24, 0, 0));
  assert_true(kiln_tensor_is_contiguous(tt));
  kiln_tensor *rel[] = {x, t, p, pn, tt};
  for (size_t i = 0; i < sizeof rel / sizeof rel[0]; i++) kiln_tensor_release(rel[i]);
}

/* Python's slice.indices with KILN_END as None; fills idx, returns count. */
static int64_t py_slice(int64_t len, int64_t start, int64_t stop, int64_t step, int64_t *idx) {
  int64_t lo, hi;
  if (step > 0) {
    lo = start == KILN_END ? 0 : start < 0 ? (start + len < 0 ? 0 : start + len) : (start > len ? len : start);
    hi = stop == KILN_END ? len : stop < 0 ? (stop + len < 0 ? 0 : stop + len) : (stop > len ? len : stop);
    int64_t n = 0;
    for (int64_t i = lo; i < hi; i += step) {
      idx[n++] = i;
      if (step > hi) break; /* one element; avoid overflow of i += step */
    }
    return n;
  }
  lo = start == KILN_END ? len - 1 : start < 0 ? (start + len < 0 ? -1 : start + len) : (start >= len ? len - 1 : start);
  hi = stop == KILN_END ? -1 : stop < 0 ? (stop + len < 0 ? -1 : stop + len) : (stop >= len ? len - 1 : stop);
  int64_t n = 0;
  for (int64_t i = lo; i > hi; i += step) {
    idx[n++] = i;
    if (-step > lo + 1) break;
  }
  return n;
}

/* Checks x[start:stop:step] along both axes of a [5, 7] iota against
 * py_slice. */
static void check_slices(const int64_t (*cases)[3], size_t n_cases) {
  const int64_t shape[2] = {5, 7};
  kiln_tensor *x = iota(KILN_F32, 2, shape);
  for (size_t c = 0; c < n_cases; c++)
    for (int axis = 0; axis < 2; axis++) {
      int64_t idx[16];
      int64_t len = shape[axis];
      int64_t n = py_slice(len, cases[c][0], cases[c][1], cases[c][2], idx);
      kiln_tensor *s = kiln_slice(x, axis == 0 ? 0 : -1, cases[c][0], cases[c][1], cases[c][2]);
      char label[160];
      snprintf(label, sizeof label, "slice axis %d [%lld:%lld:%lld]", axis, (long long)cases[c][0],
               (long long)cases[c][1], (long long)cases[c][2]);
      if (!tu_ok(label, s)) fail();
      int64_t want_shape[2] = {shape[0], shape[1]};
      want_shape[axis] = n;
      if (kiln_tensor_shape(s)[axis] != n) {
        fprintf(stderr, "%s: length %lld, expected %lld\n", label, (long long)kiln_tensor_shape(s)[axis], (long long)n);
        fail();
      }
      assert_shape(s, 2, want_shape);
      if (n > 0) assert_true(same_storage(s, x));
      double want[64];
      int64_t k = 0;
      for (int64_t i = 0; i < want_shape[0]; i++)
        for (int64_t j = 0; j < want_shape[1]; j++)
          want[k++] = axis == 0 ? (double)(idx[i] * 7 + j) : (double)(i * 7 + idx[j]);
      assert_true(tu_close_values(label, s, want, k, 0, 0));
      kiln_tensor_release(s);
    }
  kiln_tensor_release(x);
}

static void view_slice(void **state) {
  (void)state;
  static const int64_t cases[][3] = {
      {0, KILN_END, 1},   {1, 6, 2},         {KILN_END, KILN_END, -1}, {5, 1, -2},   {-2, KILN_END, 1},
      {-100, 100, 3},     {100, -100, -3},   {3, 3, 1},                {6, 0, 1},    {-1, -8, -1},
      {KILN_END, 2, -2},  {0, 1, 1},         {0, KILN_END, 7},         {6, KILN_END, -7},
      {0, KILN_END, 100}, {KILN_END, KILN_END, -100}, {-3, -1, 1}, {-1, -3, -1}, {2, -100, -1},
  };
  check_slices(cases, sizeof cases / sizeof cases[0]);
  const int64_t shape[2] = {5, 7};
  kiln_tensor *x = iota(KILN_F32, 2, shape);
  /* Slicing a slice: x[::-1][1::2] along axis 1. */
  kiln_tensor *a = kiln_slice(x, 1, KILN_END, KILN_END, -1);
  kiln_tensor *b = kiln_slice(a, 1, 1, KILN_END, 2);
  assert_shape(b, 2, (int64_t[]){5, 3});
  double want[15];
  for (int i = 0; i < 5; i++)
    for (int j = 0; j < 3; j++) want[i * 3 + j] = i * 7 + (5 - 2 * j);
  assert_true(tu_close_values("slice of slice", b, want, 15, 0, 0));
  kiln_tensor_release(a);
  kiln_tensor_release(b);
  kiln_tensor_release(x);
}

/* Steps so large that (stop - start + step - 1) overflows int64: Python
 * gives one element (x[0::sys.maxsize] == x[:1]). */
static void view_slice_huge_step(void **state) {
  (void)state;
  static const int64_t cases[][3] = {{0, KILN_END, INT64_MAX}, {KILN_END, KILN_END, -INT64_MAX},
                                     {2, KILN_END, INT64_MAX - 1}};
  check_slices(cases, sizeof cases / sizeof cases[0]);
}

/* KILN_END is documented as an open bound; as the start of a forward slice
 * that is the near end, element 0 (the code's own comment says so). */
static void view_slice_open_start_forward(void **state) {
  (void)state;
  static const int64_t cases[][3] = {{KILN_END, KILN_END, 1}, {KILN_END, 4, 2}};
  check_slices(cases, sizeof cases / sizeof cases[0]);
}

static void view_broadcast_squeeze_expand(void **state) {
  (void)state;
  kiln_tensor *x = iota(KILN_I32, 2, (int64_t[]){3, 1});
  kiln_tensor *b = kiln_broadcast_to(x, 3, (int64_t[]){2, 3, 4});
  assert_shape(b, 3, (int64_t[]){2, 3, 4});
  assert_true(same_storage(b, x));
  assert_int_equal(kiln_tensor_strides(b)[0], 0);
  assert_int_equal(kiln_tensor_strides(b)[2], 0);
  double want[24];
  for (int i = 0; i < 24; i++) want[i] = (i / 4) % 3;
  assert_true(tu_close_values("broadcast_to", b, want, 24, 0, 0));
  /* A broadcast 0-d. */
  kiln_tensor *s = kiln_full(KILN_F32, 0, NULL, 2.5);
  kiln_tensor *bs = kiln_broadcast_to(s, 2, (int64_t[]){2, 2});
  double w4[4] = {2.5, 2.5, 2.5, 2.5};
  assert_true(tu_close_values("broadcast 0-d", bs, w4, 4, 0, 0));
  /* To a zero-size dim. */
  kiln_tensor *bz = kiln_broadcast_to(x, 2, (int64_t[]){3, 0});
  assert_shape(bz, 2, (int64_t[]){3, 0});

  kiln_tensor *y = iota(KILN_F32, 4, (int64_t[]){1, 3, 1, 2});
  kiln_tensor *q0 = kiln_squeeze(y, 0);
  assert_shape(q0, 3, (int64_t[]){3, 1, 2});
  kiln_tensor *q2 = kiln_squeeze(y, -2);
  assert_shape(q2, 3, (int64_t[]){1, 3, 2});
  kiln_tensor *qa = kiln_squeeze(y, KILN_ALL_AXES);
  assert_shape(qa, 2, (int64_t[]){3, 2});
  assert_true(same_storage(qa, y));
  double w6[6] = {0, 1, 2, 3, 4, 5};
  assert_true(tu_close_values("squeeze all", qa, w6, 6, 0, 0));
  kiln_tensor *all1 = kiln_ones(KILN_F32, 3, (int64_t[]){1, 1, 1});
  kiln_tensor *q0d = kiln_squeeze(all1, KILN_ALL_AXES);
  assert_shape(q0d, 0, NULL);

  kiln_tensor *e_last = kiln_expand_dims(qa, -1);
  assert_shape(e_last, 3, (int64_t[]){3, 2, 1});
  kiln_tensor *e_first = kiln_expand_dims(qa, -3);
  assert_shape(e_first, 3, (int64_t[]){1, 3, 2});
  kiln_tensor *e_mid = kiln_expand_dims(qa, 1);
  assert_shape(e_mid, 3, (int64_t[]){3, 1, 2});
  assert_true(same_storage(e_mid, y));
  assert_true(tu_close_values("expand_dims", e_mid, w6, 6, 0, 0));
  /* expand_dims of a transposed view keeps the element order. */
  kiln_tensor *tq = kiln_transpose(qa, 0, 1);
  kiln_tensor *et = kiln_expand_dims(tq, 0);
  double wt[6] = {0, 2, 4, 1, 3, 5};
  assert_true(tu_close_values("expand_dims of transpose", et, wt, 6, 0, 0));
  kiln_tensor *e0 = kiln_expand_dims(s, 0);
  assert_shape(e0, 1, (int64_t[]){1});
  kiln_tensor *rel[] = {x, b, s, bs, bz, y, q0, q2, qa, all1, q0d, e_last, e_first, e_mid, tq, et, e0};
  for (size_t i = 0; i < sizeof rel / sizeof rel[0]; i++) kiln_tensor_release(rel[i]);
}

static void reshape_noncontiguous_copies(void **state) {
  (void)state;
  kiln_tensor *x = iota(KILN_F32, 2, (int64_t[]){3, 4});
  kiln_tensor *t = kiln_transpose(x, 0, 1); /* [4, 3] */
  kiln_tensor *r = kiln_reshape(t, 1, (int64_t[]){12});
  assert_shape(r, 1, (int64_t[]){12});
  assert_false(same_storage(r, x));
  double want[12];
  for (int i = 0; i < 4; i++)
    for (int j = 0; j < 3; j++) want[i * 3 + j] = j * 4 + i;
  assert_true(tu_close_values("reshape of transpose", r, want, 12, 0, 0));
  /* A negative-step slice reshaped. */
  kiln_tensor *s = kiln_slice(x, 1, KILN_END, KILN_END, -1);
  kiln_tensor *rs = kiln_reshape(s, 2, (int64_t[]){2, -1});
  for (int i = 0; i < 3; i++)
    for (int j = 0; j < 4; j++) want[i * 4 + j] = i * 4 + (3 - j);
  assert_true(tu_close_values("reshape of reversed", rs, want, 12, 0, 0));
  /* A contiguous slice (row block) reshapes as a view. */
  kiln_tensor *rows = kiln_slice(x, 0, 1, 3, 1);
  kiln_tensor *rr = kiln_reshape(rows, 1, (int64_t[]){8});
  assert_true(same_storage(rr, x));
  for (int i = 0; i < 8; i++) want[i] = 4 + i;
  assert_true(tu_close_values("reshape of row slice", rr, want, 8, 0, 0));
  kiln_tensor *rel[] = {x, t, r, s, rs, rows, rr};
  for (size_t i = 0; i < sizeof rel / sizeof rel[0]; i++) kiln_tensor_release(rel[i]);
}

static void contiguous_and_copy(void **state) {
  (void)state;
  for (int dt = 0; dt < KILN_DTYPE_COUNT; dt++) {
    kiln_tensor *x = tu_random((kiln_dtype)dt, 3, (int64_t[]){3, 4, 5}, 11 + (uint64_t)dt, -50, 50);
    double *xv = values_of(x);
    kiln_tensor *c = kiln_contiguous(x);
    assert_true(same_storage(c, x));
    kiln_tensor *cp = kiln_copy(x);
    assert_false(same_storage(cp, x));
    assert_true(tu_close_values("copy", cp, xv, 60, 0, 0));

    kiln_tensor *p = kiln_permute(x, 3, (int[]){2, 0, 1}); /* [5, 3, 4] */
    kiln_tensor *pc = kiln_contiguous(p);
    assert_true(kiln_tensor_is_contiguous(pc));
    assert_false(same_storage(pc, x));
    double want[60];
    for (int i = 0; i < 5; i++)
      for (int j = 0; j < 3; j++)
        for (int k = 0; k < 4; k++) want[(i * 3 + j) * 4 + k] = xv[(j * 4 + k) * 5 + i];
    assert_true(tu_close_values("contiguous of permute", pc, want, 60, 0, 0));
    kiln_tensor *pcp = kiln_copy(p);
    assert_true(tu_close_values("copy of permute", pcp, want, 60, 0, 0));
    /* Broadcast views materialise. */
    kiln_tensor *row = kiln_slice(x, 0, 0, 1, 1);
    kiln_tensor *bc = kiln_broadcast_to(row, 3, (int64_t[]){2, 4, 5});
    kiln_tensor *bcc = kiln_contiguous(bc);
    for (int i = 0; i < 40; i++) want[i] = xv[i % 20];
    assert_true(tu_close_values("contiguous of broadcast", bcc, want, 40, 0, 0));
    free(xv);
    kiln_tensor *rel[] = {x, c, cp, p, pc, pcp, row, bc, bcc};
    for (size_t i = 0; i < sizeof rel / sizeof rel[0]; i++) kiln_tensor_release(rel[i]);
  }
  kiln_tensor *e = kiln_zeros(KILN_F32, 2, (int64_t[]){0, 3});
  kiln_tensor *et = kiln_transpose(e, 0, 1);
  kiln_tensor *ec = kiln_copy(et);
  assert_shape(ec, 2, (int64_t[]){3, 0});
  kiln_tensor_release(e);
  kiln_tensor_release(et);
  kiln_tensor_release(ec);
}

static void copy_to_and_item(void **state) {
  (void)state;
  kiln_tensor *x = iota(KILN_I64, 2, (int64_t[]){3, 4});
  kiln_tensor *s = kiln_slice(x, 0, KILN_END, KILN_END, -2); /* rows 2, 0 */
  int64_t buf[8] = {0};
  assert_int_equal(kiln_tensor_copy_to(s, buf, sizeof buf), KILN_OK);
  const int64_t want[8] = {8, 9, 10, 11, 0, 1, 2, 3};
  assert_memory_equal(buf, want, sizeof want);
  /* A larger buffer is fine; only the elements are written. */
  int64_t big[10];
  for (int i = 0; i < 10; i++) big[i] = -1;
  assert_int_equal(kiln_tensor_copy_to(s, big, sizeof big), KILN_OK);
  assert_memory_equal(big, want, sizeof want);
  assert_true(big[8] == -1 && big[9] == -1);

  double v = 0;
  kiln_tensor *one = kiln_slice(s, 1, 3, 4, 1);
  kiln_tensor *el = kiln_slice(one, 0, 1, 2, 1); /* [[3]] */
  assert_int_equal(kiln_tensor_item(el, &v), KILN_OK);
  assert_true(v == 3);
  kiln_tensor *u8 = kiln_full(KILN_U8, 3, (int64_t[]){1, 1, 1}, 200);
  assert_int_equal(kiln_tensor_item(u8, &v), KILN_OK);
  assert_true(v == 200);
  kiln_tensor *bl = kiln_full(KILN_BOOL, 0, NULL, 1);
  assert_int_equal(kiln_tensor_item(bl, &v), KILN_OK);
  assert_true(v == 1);
  kiln_tensor *rel[] = {x, s, one, el, u8, bl};
  for (size_t i = 0; i < sizeof rel / sizeof rel[0]; i++) kiln_tensor_release(rel[i]);
}

/* ------------------------------------------------------------------ printer */

static void check_format(const char *label, kiln_tensor *t, const char *want) {
  char buf[8192];
  size_t needed = 0;
  assert_int_equal(kiln_tensor_format(t, buf, sizeof buf, &needed), KILN_OK);
  if (strcmp(buf, want) != 0 || needed != strlen(want)) {
    fprintf(stderr, "%s:\n got (%zu): \"%s\"\nwant (%zu): \"%s\"\n", label, needed, buf, strlen(want), want);
    fail();
  }
}

static void printer_exact(void **state) {
  (void)state;
  kiln_tensor *f = kiln_from_data(KILN_F32, 2, (int64_t[]){2, 2}, (float[]){1, 2, 3, 4});
  check_format("float 2x2", f, "array([[1., 2.],\n       [3., 4.]], dtype=float32)");
  kiln_tensor *ft = kiln_transpose(f, 0, 1);
  check_format("transposed view", ft, "array([[1., 3.],\n       [2., 4.]], dtype=float32)");
  kiln_tensor *h = kiln_from_data(KILN_F64, 1, (int64_t[]){3}, (double[]){0.5, -1.5, 2.5});
  check_format("float64", h, "array([ 0.5, -1.5,  2.5], dtype=float64)");
  kiln_tensor *i = kiln_from_data(KILN_I32, 1, (int64_t[]){3}, (int32_t[]){-1, 20, 3});
  check_format("int32", i, "array([-1, 20,  3], dtype=int32)");
  kiln_tensor *b = kiln_from_data(KILN_BOOL, 1, (int64_t[]){2}, (uint8_t[]){1, 0});
  check_format("bool", b, "array([ True, False], dtype=bool)");
  kiln_tensor *z = kiln_full(KILN_F32, 0, NULL, 5);
  check_format("0-d", z, "array(5., dtype=float32)");
  kiln_tensor *zi = kiln_full(KILN_I64, 0, NULL, -7);
  check_format("0-d int", zi, "array(-7, dtype=int64)");
  kiln_tensor *e = kiln_zeros(KILN_F32, 2, (int64_t[]){0, 3});
  check_format("empty", e, "array([], shape=(0, 3), dtype=float32)");
  kiln_tensor *nan = kiln_from_data(KILN_F32, 1, (int64_t[]){3}, (float[]){NAN, INFINITY, -INFINITY});
  check_format("nan inf", nan, "array([ nan,  inf, -inf], dtype=float32)");
  kiln_tensor *c3 = iota(KILN_I32, 3, (int64_t[]){2, 2, 2});
  check_format("3-D", c3, "array([[[0, 1],\n        [2, 3]],\n\n       [[4, 5],\n        [6, 7]]], dtype=int32)");
  kiln_tensor *rel[] = {f, ft, h, i, b, z, zi, e, nan, c3};
  for (size_t k = 0; k < sizeof rel / sizeof rel[0]; k++) kiln_tensor_release(rel[k]);
}

/* numpy aligns the decimal points of a column of floats and pads the
 * fraction on the right ("1. " above "2.5"), and prints float32 with up to 8
 * significant digits (numpy 1.24's repr of these arrays, verbatim). */
static void printer_float_alignment_as_numpy(void **state) {
  (void)state;
  kiln_tensor *a = kiln_from_data(KILN_F32, 1, (int64_t[]){2}, (float[]){1, 2.5f});
  check_format("mixed fractions", a, "array([1. , 2.5], dtype=float32)");
  kiln_tensor *b = kiln_from_data(KILN_F32, 1, (int64_t[]){2}, (float[]){-0.5f, 0.25f});
  check_format("mixed fractions, negative", b, "array([-0.5 ,  0.25], dtype=float32)");
  kiln_tensor *c = kiln_full(KILN_F32, 0, NULL, 1.0 / 3.0);
  check_format("float32 1/3", c, "array(0.33333334, dtype=float32)");
  kiln_tensor_release(a);
  kiln_tensor_release(b);
  kiln_tensor_release(c);
}

static void printer_summary(void **state) {
  (void)state;
  kiln_tensor *a = kiln_arange(0, 2000, 1, KILN_I32);
  check_format("summary 1-D", a, "array([   0,    1,    2, ..., 1997, 1998, 1999], dtype=int32)");
  kiln_tensor *r = kiln_reshape(a, 2, (int64_t[]){1000, 2});
  check_format("summary rows", r,
               "array([[   0,    1],\n       [   2,    3],\n       [   4,    5],\n       ...,\n"
               "       [1994, 1995],\n       [1996, 1997],\n       [1998, 1999]], dtype=int32)");
  /* Exactly 1000 elements are not summarised. */
  kiln_tensor *k = kiln_zeros(KILN_U8, 1, (int64_t[]){1000});
  char *buf = malloc(8192);
  size_t needed = 0;
  assert_int_equal(kiln_tensor_format(k, buf, 8192, &needed), KILN_OK);
  assert_null(strstr(buf, "..."));
  assert_int_equal(needed, strlen("array([") + 1000 * 3 - 2 + strlen("], dtype=uint8)"));
  free(buf);
  /* 3-D summary, numpy's layout (from numpy 1.24's repr). */
  kiln_tensor *r3 = kiln_reshape(a, 3, (int64_t[]){2, 10, 100});
  check_format("summary 3-D", r3,
               "array([[[   0,    1,    2, ...,   97,   98,   99],\n"
               "        [ 100,  101,  102, ...,  197,  198,  199],\n"
               "        [ 200,  201,  202, ...,  297,  298,  299],\n"
               "        ...,\n"
               "        [ 700,  701,  702, ...,  797,  798,  799],\n"
               "        [ 800,  801,  802, ...,  897,  898,  899],\n"
               "        [ 900,  901,  902, ...,  997,  998,  999]],\n\n"
               "       [[1000, 1001, 1002, ..., 1097, 1098, 1099],\n"
               "        [1100, 1101, 1102, ..., 1197, 1198, 1199],\n"
               "        [1200, 1201, 1202, ..., 1297, 1298, 1299],\n"
               "        ...,\n"
               "        [1700, 1701, 1702, ..., 1797, 1798, 1799],\n"
               "        [1800, 1801, 1802, ..., 1897, 1898, 1899],\n"
               "        [1900, 1901, 1902, ..., 1997, 1998, 1999]]], dtype=int32)");
  kiln_tensor_release(a);
  kiln_tensor_release(r);
  kiln_tensor_release(k);
  kiln_tensor_release(r3);
}

static void printer_truncation_and_failure(void **state) {
  (void)state;
  kiln_tensor *f = kiln_from_data(KILN_F32, 2, (int64_t[]){2, 2}, (float[]){1, 2, 3, 4});
  const char *full = "array([[1., 2.],\n       [3., 4.]], dtype=float32)";
  char small[10];
  memset(small, 'x', sizeof small);
  size_t needed = 0;
  assert_int_equal(kiln_tensor_format(f, small, sizeof small, &needed), KILN_OK);
  assert_int_equal(needed, strlen(full));
  assert_int_equal(small[9], '\0');
  assert_memory_equal(small, full, 9);
  assert_int_equal(kiln_tensor_format(f, NULL, 0, &needed), KILN_OK);
  assert_int_equal(needed, strlen(full));

  kiln_tensor *bad = kiln_ones(KILN_F32, 2, (int64_t[]){2, 2});
  kiln_tensor *g = kiln_zeros(KILN_F32, 1, (int64_t[]){3});
  kiln_tensor *fail_t = kiln_add(bad, g);
  assert_int_not_equal(kiln_tensor_status(fail_t), KILN_OK);
  char want[600];
  snprintf(want, sizeof want, "<error: %s>", kiln_tensor_error(fail_t));
  check_format("failed tensor", fail_t, want);

  /* kiln_tensor_print writes the format and a newline. */
  FILE *tmp = tmpfile();
  assert_non_null(tmp);
  assert_int_equal(kiln_tensor_print(g, tmp), KILN_OK);
  rewind(tmp);
  char line[128] = {0};
  size_t got = fread(line, 1, sizeof line - 1, tmp);
  fclose(tmp);
  assert_string_equal(line, "array([0., 0., 0.], dtype=float32)\n");
  assert_int_equal(got, strlen(line));
  kiln_tensor_release(f);
  kiln_tensor_release(bad);
  kiln_tensor_release(g);
  kiln_tensor_release(fail_t);
}

/* ------------------------------------------------------------------ scopes */

/* A counting allocator: live allocations must return to the baseline, which
 * proves release without relying on LSan (so Release builds check it too). */
static atomic_long live_allocs; /* engine workers free storage too */
static atomic_long alloc_calls;
static void *count_alloc(size_t size, size_t align, void *user) {
  (void)user;
  void *p = NULL;
  if (posix_memalign(&p, align, size ? size : 1) != 0) return NULL;
  live_allocs++;
  alloc_calls++;
  return p;
}
static void count_free(void *p, void *user) {
  (void)user;
  if (p) live_allocs--;
  free(p);
}

static void scopes_release_everything(void **state) {
  (void)state;
  kiln_waitall(); /* memory the old allocator gave must go back to it */
  kiln_set_allocator(count_alloc, count_free, NULL);
  tu_settle();
  long base = live_allocs;
  kiln_tensor *keep_outside = kiln_ones(KILN_F32, 1, (int64_t[]){8});
  assert_int_equal(kiln_scope_begin(), KILN_OK);
  kiln_tensor *acc = kiln_zeros(KILN_F32, 1, (int64_t[]){8});
  for (int i = 0; i < 100; i++) {
    kiln_tensor *t = kiln_exp(acc);
    kiln_tensor *v = kiln_reshape(t, 2, (int64_t[]){2, 4});
    kiln_tensor *w = kiln_transpose(v, 0, 1);
    kiln_tensor *s = kiln_sum(w, 0, NULL, false);
    (void)s;
    acc = kiln_add(acc, keep_outside);
  }
  double want[8];
  for (int i = 0; i < 8; i++) want[i] = 100;
  assert_true(tu_close_values("loop result", acc, want, 8, 0, 0));
  assert_true(live_allocs > base + 100);
  assert_int_equal(kiln_scope_end(), KILN_OK);
  tu_settle(); /* storage is freed by the engine after pending work, into the block cache */
  assert_int_equal(live_allocs, base + 2); /* keep_outside: header, storage with its data inline */
  TU_OK(keep_outside);
  kiln_tensor_release(keep_outside);
  tu_settle(); /* storage is freed by the engine after pending work, into the block cache */
  assert_int_equal(live_allocs, base);
  kiln_waitall(); /* memory the old allocator gave must go back to it */
  kiln_set_allocator(NULL, NULL, NULL);
}

/* A full block cache makes room for a freed block by freeing its oldest:
 * a cache full of sizes no longer asked for (an evaluation's, the last
 * batch of an epoch's) used to refuse every new block, so each later
 * allocation of the sizes in use went back to the allocator. */
static void block_cache_makes_room(void **state) {
  (void)state;
  kiln_waitall(); /* memory the old allocator gave must go back to it */
  kiln_set_allocator(count_alloc, count_free, NULL);
  long base = live_allocs;
  enum { STALE = 300 }; /* more than the cache holds */
  void *stale[STALE];
  size_t sizes[STALE];
  for (int i = 0; i < STALE; i++) stale[i] = kiln_alloc_block(1024 + 64 * (size_t)i, &sizes[i]);
  for (int i = 0; i < STALE; i++) kiln_free_block(stale[i], sizes[i]);
  size_t got;
  void *block = kiln_alloc_block(100000, &got);
  assert_non_null(block);
  kiln_free_block(block, got);
  long calls = alloc_calls;
  size_t again;
  void *reused = kiln_alloc_block(100000, &again);
  assert_ptr_equal(reused, block); /* from the cache */
  assert_int_equal(alloc_calls, calls);
  kiln_free_block(reused, again);
  kiln_set_allocator(NULL, NULL, NULL); /* empties the cache through count_free */
  assert_int_equal(live_allocs, base);
}

static void scopes_keep_and_nest(void **state) {
  (void)state;
  kiln_waitall(); /* memory the old allocator gave must go back to it */
  kiln_set_allocator(count_alloc, count_free, NULL);
  tu_settle();
  long base = live_allocs;
  /* kiln_keep with no enclosing scope hands the tensor to the caller. */
  assert_int_equal(kiln_scope_begin(), KILN_OK);
  kiln_tensor *x = kiln_full(KILN_F64, 1, (int64_t[]){3}, 2);
  kiln_tensor *k = kiln_keep(kiln_mul(x, x));
  assert_int_equal(kiln_scope_end(), KILN_OK);
  double four[3] = {4, 4, 4};
  assert_true(tu_close_values("kept", k, four, 3, 0, 0));
  kiln_tensor_release(k);
  tu_settle(); /* storage is freed by the engine after pending work, into the block cache */
  assert_int_equal(live_allocs, base);

  /* Nested: the kept tensor moves to the outer scope and dies with it. */
  assert_int_equal(kiln_scope_begin(), KILN_OK);
  kiln_tensor *a = kiln_full(KILN_F32, 1, (int64_t[]){2}, 3);
  tu_settle();
  long before_inner = live_allocs;
  assert_int_equal(kiln_scope_begin(), KILN_OK);
  kiln_tensor *tmp = kiln_add(a, a);
  kiln_tensor *b = kiln_keep(kiln_mul(tmp, a));
  (void)kiln_neg(b);
  assert_int_equal(kiln_scope_begin(), KILN_OK); /* third level, empty */
  assert_int_equal(kiln_scope_end(), KILN_OK);
  assert_int_equal(kiln_scope_end(), KILN_OK);
  /* tmp and neg(b) are gone; b (2 allocations) survives in the outer scope. */
  tu_settle(); /* storage is freed by the engine after pending work, into the block cache */
  assert_int_equal(live_allocs, before_inner + 2);
  double eighteen[2] = {18, 18};
  assert_true(tu_close_values("kept into outer scope", b, eighteen, 2, 0, 0));
  kiln_tensor *c = kiln_add(b, b);
  assert_int_equal(kiln_scope_end(), KILN_OK);
  (void)c;
  tu_settle(); /* storage is freed by the engine after pending work, into the block cache */
  assert_int_equal(live_allocs, base);

  /* A handle retained by the caller outlives the scope that created it. */
  assert_int_equal(kiln_scope_begin(), KILN_OK);
  kiln_tensor *r = kiln_tensor_retain(kiln_ones(KILN_I32, 1, (int64_t[]){2}));
  assert_int_equal(kiln_scope_end(), KILN_OK);
  double ones[2] = {1, 1};
  assert_true(tu_close_values("retained", r, ones, 2, 0, 0));
  kiln_tensor_release(r);
  tu_settle(); /* storage is freed by the engine after pending work, into the block cache */
  assert_int_equal(live_allocs, base);

  /* A failing op inside a scope is released by it too. */
  assert_int_equal(kiln_scope_begin(), KILN_OK);
  kiln_tensor *p = kiln_ones(KILN_F32, 1, (int64_t[]){2});
  kiln_tensor *q = kiln_ones(KILN_F32, 1, (int64_t[]){3});
  kiln_tensor *bad = kiln_add(p, q);
  assert_int_equal(kiln_tensor_status(bad), KILN_ERR_SHAPE);
  (void)kiln_exp(bad);
  assert_int_equal(kiln_scope_end(), KILN_OK);
  tu_settle(); /* storage is freed by the engine after pending work, into the block cache */
  assert_int_equal(live_allocs, base);
  kiln_waitall(); /* memory the old allocator gave must go back to it */
  kiln_set_allocator(NULL, NULL, NULL);
}

/* ------------------------------------------------------------------ random */

/* Philox-4x32-10 written from the paper, independently of the kernel. */
static void philox_ref(uint32_t ctr[4], uint32_t key[2]) {
  uint32_t k0 = key[0], k1 = key[1];
  for (int r = 0; r < 10; r++) {
    uint64_t m0 = (uint64_t)ctr[0] * 0xD2511F53u, m1 = (uint64_t)ctr[2] * 0xCD9E8D57u;
    uint32_t hi0 = (uint32_t)(m0 >> 32), lo0 = (uint32_t)m0, hi1 = (uint32_t)(m1 >> 32), lo1 = (uint32_t)m1;
    uint32_t n0 = hi1 ^ ctr[1] ^ k0, n1 = lo1, n2 = hi0 ^ ctr[3] ^ k1, n3 = lo0;
    ctr[0] = n0, ctr[1] = n1, ctr[2] = n2, ctr[3] = n3;
    k0 += 0x9E3779B9u;
    k1 += 0xBB67AE85u;
  }
}

static void random_philox_known_answer(void **state) {
  (void)state;
  uint32_t out[4];
  kk_philox4x32(0, 0, out);
  assert_int_equal(out[0], 0x6627e8d5u);
  assert_int_equal(out[1], 0xe169c58du);
  assert_int_equal(out[2], 0xbc57ac4cu);
  assert_int_equal(out[3], 0x9b00dbd8u);
  /* The same KAT through the independent implementation, then agreement on
   * many (key, counter) pairs. */
  uint32_t c[4] = {0, 0, 0, 0}, k[2] = {0, 0};
  philox_ref(c, k);
  assert_int_equal(c[0], 0x6627e8d5u);
  assert_int_equal(c[3], 0x9b00dbd8u);
  uint64_t s = 12345;
  for (int i = 0; i < 1000; i++) {
    s = s * 6364136223846793005ull + 1442695040888963407ull;
    uint64_t key = s ^ (s >> 29), ctr = (s >> 7) * 0x9E3779B97F4A7C15ull;
    uint32_t cc[4] = {(uint32_t)ctr, (uint32_t)(ctr >> 32), 0, 0}, kk[2] = {(uint32_t)key, (uint32_t)(key >> 32)};
    philox_ref(cc, kk);
    kk_philox4x32(key, ctr, out);
    assert_memory_equal(out, cc, sizeof cc);
  }
}

/* Uniform float64: a + (b - a) * u, u from 53 bits of Philox(seed, i). */
static void random_uniform_exact_values(void **state) {
  (void)state;
  kiln_generator *g = kiln_generator_new(987654321);
  kiln_tensor *u = kiln_random_uniform(g, -1, 3, KILN_F64, 1, (int64_t[]){64});
  kiln_tensor *u2 = kiln_random_uniform(g, -1, 3, KILN_F64, 1, (int64_t[]){8}); /* counters 64.. */
  double want[64];
  for (int i = 0; i < 72; i++) {
    uint32_t c[4] = {(uint32_t)i, 0, 0, 0}, k[2] = {987654321u, 0};
    philox_ref(c, k);
    double u01 = (double)(((uint64_t)c[0] << 21) ^ (c[1] >> 11)) / 9007199254740992.0;
    want[i % 64] = -1 + 4 * u01;
    if (i == 63) assert_true(tu_close_values("uniform exact", u, want, 64, 1e-15, 0));
  }
  assert_true(tu_close_values("uniform second call", u2, want, 8, 1e-15, 0));
  kiln_tensor_release(u);
  kiln_tensor_release(u2);
  kiln_generator_free(g);
}

static void random_moments(void **state) {
  (void)state;
  const int64_t n = 200000;
  kiln_generator *g = kiln_generator_new(42);
  for (int dt = KILN_F32; dt <= KILN_F64; dt++) {
    kiln_tensor *u = kiln_random_uniform(g, -2, 3, (kiln_dtype)dt, 2, (int64_t[]){400, 500});
    double *v = values_of(u);
    double mean = 0, var = 0, lo = INFINITY, hi = -INFINITY;
    for (int64_t i = 0; i < n; i++) mean += v[i], lo = fmin(lo, v[i]), hi = fmax(hi, v[i]);
    mean /= n;
    for (int64_t i = 0; i < n; i++) var += (v[i] - mean) * (v[i] - mean);
    var /= n;
    /* Uniform(-2, 3): mean 0.5, variance 25/12; 6 standard errors. */
    double se_mean = sqrt(25.0 / 12 / n), se_var = sqrt(625.0 / 180 / n); /* var of (x-mu)^2 = (b-a)^4/180 */
    assert_true(fabs(mean - 0.5) < 6 * se_mean);
    assert_true(fabs(var - 25.0 / 12) < 6 * se_var);
    assert_true(lo >= -2 && hi < 3);
    assert_true(lo < -1.99 && hi > 2.99);
    free(v);
    kiln_tensor_release(u);

    kiln_tensor *z = kiln_random_normal(g, 1.5, 2, (kiln_dtype)dt, 1, &n);
    v = values_of(z);
    mean = 0, var = 0;
    int64_t within1 = 0;
    for (int64_t i = 0; i < n; i++) mean += v[i];
    mean /= n;
    for (int64_t i = 0; i < n; i++) var += (v[i] - mean) * (v[i] - mean), within1 += fabs(v[i] - 1.5) < 2;
    double sd = sqrt(var / (n - 1));
    assert_true(fabs(mean - 1.5) < 6 * 2 / sqrt((double)n));
    assert_true(fabs(sd - 2) < 6 * 2 / sqrt(2.0 * n));
    /* 68.27% within one sigma: a shape check, not just two moments. */
    double frac = (double)within1 / n;
    assert_true(fabs(frac - 0.682689) < 6 * sqrt(0.6827 * 0.3173 / n));
    free(v);
    kiln_tensor_release(z);
  }
  const kiln_dtype bdt[3] = {KILN_F32, KILN_U8, KILN_BOOL};
  for (int k = 0; k < 3; k++) {
    kiln_tensor *b = kiln_random_bernoulli(g, 0.3, bdt[k], 1, &n);
    assert_int_equal(kiln_tensor_dtype(b), bdt[k]);
    double *v = values_of(b);
    double ones = 0;
    for (int64_t i = 0; i < n; i++) {
      assert_true(v[i] == 0 || v[i] == 1);
      ones += v[i];
    }
    assert_true(fabs(ones / n - 0.3) < 6 * sqrt(0.3 * 0.7 / n));
    free(v);
    kiln_tensor_release(b);
  }
  /* p = 0 and p = 1 are exact. */
  kiln_tensor *b0 = kiln_random_bernoulli(g, 0, KILN_F32, 1, (int64_t[]){1000});
  kiln_tensor *b1 = kiln_random_bernoulli(g, 1, KILN_F32, 1, (int64_t[]){1000});
  kiln_tensor *s0 = kiln_sum(b0, 0, NULL, false), *s1 = kiln_sum(b1, 0, NULL, false);
  double v0, v1;
  assert_int_equal(kiln_tensor_item(s0, &v0), KILN_OK);
  assert_int_equal(kiln_tensor_item(s1, &v1), KILN_OK);
  assert_true(v0 == 0 && v1 == 1000);
  kiln_tensor *rel[] = {b0, b1, s0, s1};
  for (size_t i = 0; i < 4; i++) kiln_tensor_release(rel[i]);
  kiln_generator_free(g);
}

static bool tensors_identical(kiln_tensor *a, kiln_tensor *b) {
  int64_t n = kiln_tensor_numel(a);
  size_t bytes = (size_t)n * kiln_dtype_size(kiln_tensor_dtype(a));
  if (n != kiln_tensor_numel(b)) return false;
  char *x = malloc(bytes + 1), *y = malloc(bytes + 1);
  bool ok = kiln_tensor_copy_to(a, x, bytes) == KILN_OK && kiln_tensor_copy_to(b, y, bytes) == KILN_OK &&
            memcmp(x, y, bytes) == 0;
  free(x);
  free(y);
  return ok;
}

static void random_same_seed_same_values(void **state) {
  (void)state;
  kiln_generator *g1 = kiln_generator_new(7), *g2 = kiln_generator_new(7), *g3 = kiln_generator_new(8);
  kiln_tensor *a = kiln_random_normal(g1, 0, 1, KILN_F32, 2, (int64_t[]){10, 10});
  kiln_tensor *b = kiln_random_normal(g2, 0, 1, KILN_F32, 2, (int64_t[]){10, 10});
  kiln_tensor *c = kiln_random_normal(g3, 0, 1, KILN_F32, 2, (int64_t[]){10, 10});
  assert_true(tensors_identical(a, b));
  assert_false(tensors_identical(a, c));
  /* The next call of a generator continues, it does not repeat. */
  kiln_tensor *a2 = kiln_random_normal(g1, 0, 1, KILN_F32, 2, (int64_t[]){10, 10});
  assert_false(tensors_identical(a, a2));
  /* The default generator: kiln_seed resets it. */
  kiln_seed(99);
  kiln_tensor *d1 = kiln_random_uniform(NULL, 0, 1, KILN_F64, 1, (int64_t[]){50});
  kiln_tensor *d1b = kiln_random_uniform(NULL, 0, 1, KILN_F64, 1, (int64_t[]){50});
  kiln_seed(99);
  kiln_tensor *d2 = kiln_random_uniform(NULL, 0, 1, KILN_F64, 1, (int64_t[]){50});
  kiln_tensor *d2b = kiln_random_uniform(NULL, 0, 1, KILN_F64, 1, (int64_t[]){50});
  assert_true(tensors_identical(d1, d2));
  assert_true(tensors_identical(d1b, d2b));
  assert_false(tensors_identical(d1, d1b));
  /* A generator seeded 99 gives what the default seeded 99 gave. */
  kiln_generator *g99 = kiln_generator_new(99);
  kiln_tensor *e = kiln_random_uniform(g99, 0, 1, KILN_F64, 1, (int64_t[]){50});
  assert_true(tensors_identical(d1, e));
  kiln_tensor *rel[] = {a, b, c, a2, d1, d1b, d2, d2b, e};
  for (size_t i = 0; i < sizeof rel / sizeof rel[0]; i++) kiln_tensor_release(rel[i]);
  kiln_generator_free(g1);
  kiln_generator_free(g2);
  kiln_generator_free(g3);
  kiln_generator_free(g99);
}

/* Per-thread generators: each thread's numbers are the same whatever the
 * interleaving with another thread. */
enum { THREAD_CALLS = 40, THREAD_N = 257 };
typedef struct {
  uint64_t seed;
  float out[THREAD_CALLS][THREAD_N];
  bool ok;
} thread_job;

static void *thread_main(void *arg) {
  thread_job *job = arg;
  kiln_generator *g = kiln_generator_new(job->seed);
  job->ok = g != NULL;
  for (int c = 0; c < THREAD_CALLS && job->ok; c++) {
    kiln_tensor *t = c % 3 == 0   ? kiln_random_normal(g, 0, 1, KILN_F32, 1, (int64_t[]){THREAD_N})
                     : c % 3 == 1 ? kiln_random_uniform(g, -1, 1, KILN_F32, 1, (int64_t[]){THREAD_N})
                                  : kiln_random_bernoulli(g, 0.5, KILN_F32, 1, (int64_t[]){THREAD_N});
    job->ok = kiln_tensor_copy_to(t, job->out[c], sizeof job->out[c]) == KILN_OK;
    kiln_tensor_release(t);
  }
  kiln_generator_free(g);
  return NULL;
}

static void random_threads_independent(void **state) {
  (void)state;
  thread_job *seq = calloc(2, sizeof *seq), *par = calloc(2, sizeof *par);
  seq[0].seed = par[0].seed = 1111;
  seq[1].seed = par[1].seed = 2222;
  /* Sequential: one after the other on this thread. */
  thread_main(&seq[0]);
  thread_main(&seq[1]);
  for (int rep = 0; rep < 3; rep++) {
    pthread_t th[2];
    assert_int_equal(pthread_create(&th[0], NULL, thread_main, &par[0]), 0);
    assert_int_equal(pthread_create(&th[1], NULL, thread_main, &par[1]), 0);
    pthread_join(th[0], NULL);
    pthread_join(th[1], NULL);
    for (int k = 0; k < 2; k++) {
      assert_true(seq[k].ok && par[k].ok);
      assert_memory_equal(seq[k].out, par[k].out, sizeof seq[k].out);
    }
  }
  assert_memory_not_equal(seq[0].out, seq[1].out, sizeof seq[0].out);
  free(seq);
  free(par);
}

static void random_order_across_generators(void **state) {
  (void)state;
  /* g1's second call gives the same numbers whether g2 was used between or not. */
  kiln_generator *g1 = kiln_generator_new(5), *g2 = kiln_generator_new(6);
  kiln_tensor *a1 = kiln_random_uniform(g1, 0, 1, KILN_F32, 1, (int64_t[]){33});
  kiln_tensor *x = kiln_random_uniform(g2, 0, 1, KILN_F32, 1, (int64_t[]){77});
  kiln_tensor *a2 = kiln_random_uniform(g1, 0, 1, KILN_F32, 1, (int64_t[]){33});
  kiln_tensor *x2 = kiln_random_uniform(NULL, 0, 1, KILN_F32, 1, (int64_t[]){5}); /* default generator */
  kiln_generator *h1 = kiln_generator_new(5), *h2 = kiln_generator_new(6);
  kiln_tensor *y = kiln_random_uniform(h2, 0, 1, KILN_F32, 1, (int64_t[]){77});
  kiln_tensor *b1 = kiln_random_uniform(h1, 0, 1, KILN_F32, 1, (int64_t[]){33});
  kiln_tensor *b2 = kiln_random_uniform(h1, 0, 1, KILN_F32, 1, (int64_t[]){33});
  assert_true(tensors_identical(a1, b1));
  assert_true(tensors_identical(a2, b2));
  assert_true(tensors_identical(x, y));
  assert_false(tensors_identical(a1, a2));
  kiln_tensor *rel[] = {a1, x, a2, x2, y, b1, b2};
  for (size_t i = 0; i < sizeof rel / sizeof rel[0]; i++) kiln_tensor_release(rel[i]);
  kiln_generator_free(g1);
  kiln_generator_free(g2);
  kiln_generator_free(h1);
  kiln_generator_free(h2);
}

/* The fill kernels against their element-at-a-time references, every dtype:
 * exact, since both compute each element from the same closed form (the
 * reference in long double, which rounds to the same double here). */
static void creation_kernels_match_reference(void **state) {
  (void)state;
  kiln_scope_begin();
  for (int dt = 0; dt < KILN_DTYPE_COUNT; dt++) {
    kiln_tensor *got[4], *want[4];
    for (int ref = 0; ref < 2; ref++) {
      bool old = kiln_use_reference_kernels(ref);
      kiln_tensor **t = ref ? want : got;
      t[0] = kiln_full((kiln_dtype)dt, 2, TU_SHAPE(3, 5), 2.5);
      t[1] = kiln_arange(-3, 7, 0.5, (kiln_dtype)dt);
      t[2] = kiln_linspace(-1, 2, 13, (kiln_dtype)dt);
      t[3] = kiln_eye(4, 6, (kiln_dtype)dt);
      kiln_use_reference_kernels(old);
    }
    for (int i = 0; i < 4; i++) TU_CLOSE(got[i], want[i], 0, 0);
  }
  kiln_scope_end();
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(creation_full_zeros_ones),
      cmocka_unit_test(creation_arange),
      cmocka_unit_test(creation_linspace),
      cmocka_unit_test(creation_eye),
      cmocka_unit_test(creation_kernels_match_reference),
      cmocka_unit_test(creation_from_data_every_dtype),
      cmocka_unit_test(view_reshape),
      cmocka_unit_test(view_transpose_permute),
      cmocka_unit_test(view_slice),
      cmocka_unit_test(view_slice_open_start_forward),
      cmocka_unit_test(view_broadcast_squeeze_expand),
      cmocka_unit_test(reshape_noncontiguous_copies),
      cmocka_unit_test(contiguous_and_copy),
      cmocka_unit_test(copy_to_and_item),
      cmocka_unit_test(printer_exact),
      cmocka_unit_test(printer_float_alignment_as_numpy),
      cmocka_unit_test(printer_summary),
      cmocka_unit_test(printer_truncation_and_failure),
      cmocka_unit_test(scopes_release_everything),
      cmocka_unit_test(scopes_keep_and_nest),
      cmocka_unit_test(block_cache_makes_room),
      cmocka_unit_test(random_philox_known_answer),
      cmocka_unit_test(random_uniform_exact_values),
      cmocka_unit_test(random_moments),
      cmocka_unit_test(random_same_seed_same_values),
      cmocka_unit_test(random_threads_independent),
      cmocka_unit_test(random_order_across_generators),
      /* Last: under UBSan the signed overflow it exposes aborts the program. */
      cmocka_unit_test(view_slice_huge_step),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
