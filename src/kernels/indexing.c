/* Data-movement kernels: concat, stack, split, take, gather, one_hot, pad and
 * cast (see indexing.h for the semantics).
 *
 * The optimised kernels share one idea: describe a block as a shape walked by
 * one or two stride lists, drop length-1 dims and merge neighbours that are
 * traversed as one, then move the innermost run with memcpy when it is
 * contiguous on both sides and with a loop specialised by element size (or,
 * for cast, by the dtype pair) when it is not. So a contiguous concat is one
 * memcpy per outer row, and a transposed or broadcast input still takes the
 * tight loop. The reference kernels at the bottom do one element at a time by
 * flat row-major index and share none of that machinery, so a bug in the
 * walking code cannot hide in both. */
#include <assert.h>
#include <math.h>
#include <string.h>

#include "base/base.h"
#include "kernels/indexing.h"

/* ================================================================ optimised */

/* A block walked by a destination and a source stride list, in elements. */
typedef struct {
  int n;
  int64_t shape[KILN_MAX_DIMS];
  int64_t a[KILN_MAX_DIMS]; /* destination strides */
  int64_t b[KILN_MAX_DIMS]; /* source strides */
} walk2;

/* Length-1 dims carry no movement, and two neighbouring dims that both lists
 * step through as one longer dim can be merged; what remains is usually one
 * long run. Returns false for an empty block. */
static bool coalesce(int ndim, const int64_t *shape, const int64_t *da, const int64_t *sb, walk2 *w) {
  w->n = 0;
  for (int i = 0; i < ndim; i++)
    if (shape[i] == 0) return false;
  for (int i = 0; i < ndim; i++) {
    if (shape[i] == 1) continue;
    int m = w->n;
    if (m > 0 && w->a[m - 1] == da[i] * shape[i] && w->b[m - 1] == sb[i] * shape[i]) {
      w->shape[m - 1] *= shape[i];
      w->a[m - 1] = da[i];
      w->b[m - 1] = sb[i];
    } else {
      w->shape[m] = shape[i];
      w->a[m] = da[i];
      w->b[m] = sb[i];
      w->n++;
    }
  }
  return true;
}

/* Runs BODY with ES bound to the element size as a compile-time constant for
 * the sizes kiln has (1, 4, 8), so memcpy(dst, src, ES) becomes one load and
 * one store instead of a library call per element. */
#define BY_SIZE(es, ...)                                                                                              \
  switch (es) {                                                                                                       \
  case 1: {                                                                                                           \
    enum { ES = 1 };                                                                                                  \
    __VA_ARGS__;                                                                                                      \
    break;                                                                                                            \
  }                                                                                                                   \
  case 4: {                                                                                                           \
    enum { ES = 4 };                                                                                                  \
    __VA_ARGS__;                                                                                                      \
    break;                                                                                                            \
  }                                                                                                                   \
  case 8: {                                                                                                           \
    enum { ES = 8 };                                                                                                  \
    __VA_ARGS__;                                                                                                      \
    break;                                                                                                            \
  }                                                                                                                   \
  default: {                                                                                                          \
    const size_t ES = (es);                                                                                           \
    __VA_ARGS__;                                                                                                      \
    break;                                                                                                            \
  }                                                                                                                   \
  }

static void run_copy(char *dst, int64_t ds, const char *src, int64_t ss, int64_t len, size_t es) {
  if (ds == 1 && ss == 1) {
    memcpy(dst, src, (size_t)len * es);
    return;
  }
  BY_SIZE(es, for (int64_t i = 0; i < len; i++) memcpy(dst + i * ds * (int64_t)ES, src + i * ss * (int64_t)ES, ES));
}

/* Moves a coalesced block. Offsets are kept as integers and turned into
 * pointers only when used, so stepping past the end of an odometer wheel
 * never forms an out-of-object pointer. */
static void copy_walk(const walk2 *w, char *dst, const char *src, size_t es) {
  if (w->n == 0) {
    memcpy(dst, src, es);
    return;
  }
  int last = w->n - 1;
  int64_t ctr[KILN_MAX_DIMS] = {0};
  int64_t doff = 0, soff = 0, ies = (int64_t)es;
  for (;;) {
    run_copy(dst + doff * ies, w->a[last], src + soff * ies, w->b[last], w->shape[last], es);
    int d = last - 1;
    for (; d >= 0; d--) {
      doff += w->a[d];
      soff += w->b[d];
      if (++ctr[d] < w->shape[d]) break;
      doff -= w->a[d] * w->shape[d];
      soff -= w->b[d] * w->shape[d];
      ctr[d] = 0;
    }
    if (d < 0) return;
  }
}

static void copy_block(char *dst, const int64_t *ds, const char *src, const int64_t *ss, int ndim,
                       const int64_t *shape, size_t es) {
  walk2 w;
  if (coalesce(ndim, shape, ds, ss, &w)) copy_walk(&w, dst, src, es);
}

/* Row-major runs of one view: each call yields the element offset of a run's
 * first element, its length and its stride. */
typedef struct {
  walk2 w;
  int64_t ctr[KILN_MAX_DIMS];
  int64_t off;
  bool more;
} run_iter;

static void run_iter_init(run_iter *it, const kk_view *v) {
  memset(it->ctr, 0, sizeof it->ctr);
  it->off = 0;
  it->more = coalesce(v->ndim, v->shape, v->strides, v->strides, &it->w);
}

static bool run_iter_next(run_iter *it, int64_t *off, int64_t *len, int64_t *stride) {
  if (!it->more) return false;
  int n = it->w.n;
  *off = it->off;
  if (n == 0) {
    *len = 1;
    *stride = 1;
    it->more = false;
    return true;
  }
  *len = it->w.shape[n - 1];
  *stride = it->w.b[n - 1];
  int d = n - 2;
  for (; d >= 0; d--) {
    it->off += it->w.b[d];
    if (++it->ctr[d] < it->w.shape[d]) break;
    it->off -= it->w.b[d] * it->w.shape[d];
    it->ctr[d] = 0;
  }
  if (d < 0) it->more = false;
  return true;
}

void kk_concat(int n, const kk_view *in, int axis, const kk_view *out) {
  size_t es = kiln_dtype_size(out->dtype);
  int64_t at = 0;
  for (int k = 0; k < n; k++) {
    if (kk_numel(&in[k]) > 0)
      copy_block(out->data + at * out->strides[axis] * (int64_t)es, out->strides, in[k].data, in[k].strides,
                 in[k].ndim, in[k].shape, es);
    at += in[k].shape[axis];
  }
}

void kk_stack(int n, const kk_view *in, int axis, const kk_view *out) {
  size_t es = kiln_dtype_size(out->dtype);
  /* Each input fills the slice out[..., k, ...]: out's strides without the
   * new axis describe that slice in the input's own dims. */
  int64_t ds[KILN_MAX_DIMS];
  for (int i = 0, j = 0; i < out->ndim; i++)
    if (i != axis) ds[j++] = out->strides[i];
  for (int k = 0; k < n; k++) {
    if (kk_numel(&in[k]) > 0)
      copy_block(out->data + k * out->strides[axis] * (int64_t)es, ds, in[k].data, in[k].strides, in[k].ndim,
                 in[k].shape, es);
  }
}

void kk_split(const kk_view *x, int axis, int n, const kk_view *out) {
  size_t es = kiln_dtype_size(x->dtype);
  int64_t at = 0;
  for (int k = 0; k < n; k++) {
    if (kk_numel(&out[k]) > 0)
      copy_block(out[k].data, out[k].strides, x->data + at * x->strides[axis] * (int64_t)es, x->strides, x->ndim,
                 out[k].shape, es);
    at += out[k].shape[axis];
  }
}

/* Reads every index in row-major order into dst, normalised to [0, limit),
 * stopping at the first one out of range. Typed loops per index dtype. */
#define LOAD_RUN_(T)                                                                                                 \
  do {                                                                                                               \
    const T *s_ = (const T *)(const void *)idx->data + off;                                                          \
    for (int64_t i = 0; i < len; i++, p++) {                                                                         \
      int64_t v = (int64_t)s_[i * st];                                                                               \
      int64_t w = (v < 0 && negative_ok) ? v + limit : v;                                                            \
      if (w < 0 || w >= limit) {                                                                                     \
        err->value = v;                                                                                              \
        err->position = p;                                                                                           \
        err->limit = limit;                                                                                          \
        return KILN_ERR_OUT_OF_RANGE;                                                                                \
      }                                                                                                              \
      dst[p] = w;                                                                                                    \
    }                                                                                                                \
  } while (0)

static kiln_status load_indices(const kk_view *idx, int64_t limit, bool negative_ok, int64_t *dst,
                                kk_index_error *err) {
  run_iter it;
  run_iter_init(&it, idx);
  int64_t off, len, st, p = 0;
  while (run_iter_next(&it, &off, &len, &st)) {
    switch (idx->dtype) {
    case KILN_I32: LOAD_RUN_(int32_t); break;
    case KILN_I64: LOAD_RUN_(int64_t); break;
    case KILN_U8: LOAD_RUN_(uint8_t); break;
    default: return KILN_ERR_DTYPE; /* inference admits only the three above */
    }
  }
  return KILN_OK;
}

/* The normalised indices of idx in a fresh buffer the caller frees. */
static kiln_status index_buffer(const kk_view *idx, int64_t limit, bool negative_ok, int64_t **buf,
                                kk_index_error *err) {
  int64_t n = kk_numel(idx);
  *buf = kiln_alloc((size_t)n * sizeof(int64_t));
  if (!*buf) return KILN_ERR_OUT_OF_MEMORY;
  kiln_status st = load_indices(idx, limit, negative_ok, *buf, err);
  if (st != KILN_OK) {
    kiln_free(*buf);
    *buf = NULL;
  }
  return st;
}

kiln_status kk_take(const kk_view *x, const kk_view *idx, int axis, const kk_view *out, kk_index_error *err) {
  assert(kk_is_contiguous(out));
  int64_t *ix;
  kiln_status st = index_buffer(idx, x->shape[axis], true, &ix, err);
  if (st != KILN_OK) return st;
  int64_t ni = kk_numel(idx), outer_n = 1, inner_n = 1;
  for (int i = 0; i < axis; i++) outer_n *= x->shape[i];
  for (int i = axis + 1; i < x->ndim; i++) inner_n *= x->shape[i];
  if (ni == 0 || outer_n == 0 || inner_n == 0) {
    kiln_free(ix);
    return KILN_OK;
  }
  size_t es = kiln_dtype_size(x->dtype);
  int64_t ies = (int64_t)es, sa = x->strides[axis];
  for (int64_t j = 0; j < ni; j++) ix[j] *= sa;

  /* The block under one index: x's trailing dims, landing contiguously. */
  int n_inner = x->ndim - axis - 1;
  int64_t inner_ds[KILN_MAX_DIMS];
  int64_t step = 1;
  for (int i = n_inner - 1; i >= 0; i--) {
    inner_ds[i] = step;
    step *= x->shape[axis + 1 + i];
  }
  walk2 inner;
  coalesce(n_inner, x->shape + axis + 1, inner_ds, x->strides + axis + 1, &inner);
  /* run: the inner block's length when it is one contiguous run, else 0. */
  int64_t run = inner.n == 0 ? 1 : (inner.n == 1 && inner.b[0] == 1) ? inner.shape[0] : 0;

  int64_t ctr[KILN_MAX_DIMS] = {0}, ooff = 0;
  char *dp = out->data;
  for (int64_t o = 0; o < outer_n; o++) {
    const char *base = x->data + ooff * ies;
    if (run == 1) {
      BY_SIZE(es, for (int64_t j = 0; j < ni; j++) memcpy(dp + j * (int64_t)ES, base + ix[j] * (int64_t)ES, ES));
    } else if (run > 0) {
      for (int64_t j = 0; j < ni; j++) memcpy(dp + j * run * ies, base + ix[j] * ies, (size_t)(run * ies));
    } else {
      for (int64_t j = 0; j < ni; j++) copy_walk(&inner, dp + j * inner_n * ies, base + ix[j] * ies, es);
    }
    dp += ni * inner_n * ies;
    for (int d = axis - 1; d >= 0; d--) {
      ooff += x->strides[d];
      if (++ctr[d] < x->shape[d]) break;
      ooff -= x->strides[d] * x->shape[d];
      ctr[d] = 0;
    }
  }
  kiln_free(ix);
  return KILN_OK;
}

kiln_status kk_gather(const kk_view *x, int axis, const kk_view *idx, const kk_view *out, kk_index_error *err) {
  assert(kk_is_contiguous(out));
  int64_t *ix;
  kiln_status st = index_buffer(idx, x->shape[axis], true, &ix, err);
  if (st != KILN_OK) return st;
  int64_t ni = kk_numel(idx);
  if (ni == 0) {
    kiln_free(ix);
    return KILN_OK;
  }
  size_t es = kiln_dtype_size(x->dtype);
  int64_t ies = (int64_t)es;
  int last = idx->ndim - 1;
  int64_t rowlen = idx->shape[last], sa = x->strides[axis], sl = x->strides[last];
  /* Walk rows of idx (all dims but the last); base is x's offset for the
   * row's coordinates, leaving out the gathered axis, which the index
   * supplies. */
  int64_t ctr[KILN_MAX_DIMS] = {0}, xoff = 0;
  for (int64_t p = 0; p < ni; p += rowlen) {
    char *dp = out->data + p * ies;
    const char *xb = x->data + xoff * ies;
    const int64_t *iv = ix + p;
    if (axis == last) {
      BY_SIZE(es, for (int64_t k = 0; k < rowlen; k++)
                      memcpy(dp + k * (int64_t)ES, xb + iv[k] * sa * (int64_t)ES, ES));
    } else {
      BY_SIZE(es, for (int64_t k = 0; k < rowlen; k++)
                      memcpy(dp + k * (int64_t)ES, xb + (k * sl + iv[k] * sa) * (int64_t)ES, ES));
    }
    for (int d = last - 1; d >= 0; d--) {
      int64_t step = d == axis ? 0 : x->strides[d];
      xoff += step;
      if (++ctr[d] < idx->shape[d]) break;
      xoff -= step * idx->shape[d];
      ctr[d] = 0;
    }
  }
  kiln_free(ix);
  return KILN_OK;
}

kiln_status kk_one_hot(const kk_view *idx, const kk_view *out, kk_index_error *err) {
  assert(kk_is_contiguous(out));
  int64_t depth = out->shape[out->ndim - 1];
  int64_t *ix;
  kiln_status st = index_buffer(idx, depth, false, &ix, err);
  if (st != KILN_OK) return st;
  size_t es = kiln_dtype_size(out->dtype);
  /* All-zero bytes are 0 in every kiln dtype (IEEE +0.0 included). */
  memset(out->data, 0, (size_t)kk_numel(out) * es);
  char one[8];
  switch (out->dtype) {
  case KILN_F32: { float f = 1; memcpy(one, &f, 4); break; }
  case KILN_F64: { double f = 1; memcpy(one, &f, 8); break; }
  case KILN_I32: { int32_t f = 1; memcpy(one, &f, 4); break; }
  case KILN_I64: { int64_t f = 1; memcpy(one, &f, 8); break; }
  default: one[0] = 1; break; /* uint8, bool */
  }
  int64_t ni = kk_numel(idx), ies = (int64_t)es;
  BY_SIZE(es, for (int64_t p = 0; p < ni; p++) memcpy(out->data + (p * depth + ix[p]) * ies, one, ES));
  kiln_free(ix);
  return KILN_OK;
}

/* ---------------------------------------------------------------- cast */

typedef void (*cast_fn)(const char *src, int64_t ss, char *dst, int64_t n);

/* Truncation toward zero with saturation: C leaves out-of-range
 * float-to-integer conversion undefined, so the bounds are tested first. */
static inline int32_t sat_i32(double v) {
  return isnan(v) ? 0 : v >= 2147483647.0 ? INT32_MAX : v <= -2147483648.0 ? INT32_MIN : (int32_t)v;
}
static inline int64_t sat_i64(double v) {
  return isnan(v)                        ? 0
         : v >= 9223372036854775808.0    ? INT64_MAX
         : v <= -9223372036854775808.0   ? INT64_MIN
                                         : (int64_t)v;
}
static inline uint8_t sat_u8(double v) { return isnan(v) ? 0 : v >= 255.0 ? 255 : v <= 0.0 ? 0 : (uint8_t)v; }

/* One loop per dtype pair; the unit-stride branch is separate so the
 * compiler can vectorise it. */
#define CAST_FN_(NAME, ST, DT, CONV)                                                                                 \
  static void NAME(const char *src, int64_t ss, char *dst, int64_t n) {                                              \
    const ST *s = (const ST *)(const void *)src;                                                                     \
    DT *d = (DT *)(void *)dst;                                                                                       \
    if (ss == 1)                                                                                                     \
      for (int64_t i = 0; i < n; i++) {                                                                              \
        ST v = s[i];                                                                                                 \
        d[i] = CONV;                                                                                                 \
      }                                                                                                              \
    else                                                                                                             \
      for (int64_t i = 0; i < n; i++) {                                                                              \
        ST v = s[i * ss];                                                                                            \
        d[i] = CONV;                                                                                                 \
      }                                                                                                              \
  }

#define FROM_FLOAT_(ST, SN)                                                                                          \
  CAST_FN_(cast_##SN##_f32, ST, float, (float)v)                                                                     \
  CAST_FN_(cast_##SN##_f64, ST, double, (double)v)                                                                   \
  CAST_FN_(cast_##SN##_i32, ST, int32_t, sat_i32((double)v))                                                         \
  CAST_FN_(cast_##SN##_i64, ST, int64_t, sat_i64((double)v))                                                         \
  CAST_FN_(cast_##SN##_u8, ST, uint8_t, sat_u8((double)v))                                                           \
  CAST_FN_(cast_##SN##_bool, ST, uint8_t, (uint8_t)(v != 0))
#define FROM_INT_(ST, SN)                                                                                            \
  CAST_FN_(cast_##SN##_f32, ST, float, (float)v)                                                                     \
  CAST_FN_(cast_##SN##_f64, ST, double, (double)v)                                                                   \
  CAST_FN_(cast_##SN##_i32, ST, int32_t, (int32_t)v)                                                                 \
  CAST_FN_(cast_##SN##_i64, ST, int64_t, (int64_t)v)                                                                 \
  CAST_FN_(cast_##SN##_u8, ST, uint8_t, (uint8_t)v)                                                                  \
  CAST_FN_(cast_##SN##_bool, ST, uint8_t, (uint8_t)(v != 0))
/* A bool byte other than 0 or 1 still reads as true. */
#define FROM_BOOL_(ST, SN)                                                                                           \
  CAST_FN_(cast_##SN##_f32, ST, float, (float)(v != 0))                                                              \
  CAST_FN_(cast_##SN##_f64, ST, double, (double)(v != 0))                                                            \
  CAST_FN_(cast_##SN##_i32, ST, int32_t, (int32_t)(v != 0))                                                          \
  CAST_FN_(cast_##SN##_i64, ST, int64_t, (int64_t)(v != 0))                                                          \
  CAST_FN_(cast_##SN##_u8, ST, uint8_t, (uint8_t)(v != 0))                                                           \
  CAST_FN_(cast_##SN##_bool, ST, uint8_t, (uint8_t)(v != 0))

FROM_FLOAT_(float, f32)
FROM_FLOAT_(double, f64)
FROM_INT_(int32_t, i32)
FROM_INT_(int64_t, i64)
FROM_INT_(uint8_t, u8)
FROM_BOOL_(uint8_t, bool)

#define CAST_ROW_(SN) {cast_##SN##_f32, cast_##SN##_f64, cast_##SN##_i32, cast_##SN##_i64, cast_##SN##_u8, cast_##SN##_bool}
static const cast_fn cast_table[KILN_DTYPE_COUNT][KILN_DTYPE_COUNT] = {
    CAST_ROW_(f32), CAST_ROW_(f64), CAST_ROW_(i32), CAST_ROW_(i64), CAST_ROW_(u8), CAST_ROW_(bool),
};
_Static_assert(KILN_F32 == 0 && KILN_F64 == 1 && KILN_I32 == 2 && KILN_I64 == 3 && KILN_U8 == 4 && KILN_BOOL == 5 &&
                   KILN_DTYPE_COUNT == 6,
               "cast_table rows and columns follow the kiln_dtype order");

void kk_cast(const kk_view *x, const kk_view *out) {
  assert(kk_is_contiguous(out));
  /* Same dtype is a plain copy, except bool, whose bytes are normalised. */
  if (x->dtype == out->dtype && x->dtype != KILN_BOOL) {
    copy_block(out->data, out->strides, x->data, x->strides, x->ndim, x->shape, kiln_dtype_size(x->dtype));
    return;
  }
  cast_fn fn = cast_table[x->dtype][out->dtype];
  int64_t ses = (int64_t)kiln_dtype_size(x->dtype), des = (int64_t)kiln_dtype_size(out->dtype);
  run_iter it;
  run_iter_init(&it, x);
  int64_t off, len, st, p = 0;
  while (run_iter_next(&it, &off, &len, &st)) {
    fn(x->data + off * ses, st, out->data + p * des, len);
    p += len;
  }
}

void kk_pad(const kk_view *x, int n_pads, const int64_t *pads, double value, const kk_view *out) {
  assert(kk_is_contiguous(out));
  size_t es = kiln_dtype_size(out->dtype);
  int64_t n = kk_numel(out), ies = (int64_t)es;
  /* The fill value goes through kk_cast so pad converts exactly as cast. */
  char fill[8] = {0};
  kk_view vsrc = {.data = (char *)&value, .dtype = KILN_F64, .ndim = 0};
  kk_view vdst = {.data = fill, .dtype = out->dtype, .ndim = 0};
  kk_cast(&vsrc, &vdst);
  bool uniform = true;
  for (size_t i = 1; i < es; i++) uniform = uniform && fill[i] == fill[0];
  /* Filling everything and then overwriting the interior writes the interior
   * twice, but both passes are streaming and branch-free. */
  if (uniform)
    memset(out->data, fill[0], (size_t)n * es);
  else
    BY_SIZE(es, for (int64_t i = 0; i < n; i++) memcpy(out->data + i * (int64_t)ES, fill, ES));
  if (kk_numel(x) == 0) return;
  int64_t at = 0;
  for (int i = 0; i < n_pads / 2; i++) at += pads[2 * i] * out->strides[i];
  copy_block(out->data + at * ies, out->strides, x->data, x->strides, x->ndim, x->shape, es);
}

/* ================================================================ reference */

/* Row-major coordinates of a flat index; shape has no zero dims here, since
 * the loops calling it run only over non-empty tensors. */
static void unravel(int64_t flat, int ndim, const int64_t *shape, int64_t *m) {
  for (int i = ndim - 1; i >= 0; i--) {
    m[i] = flat % shape[i];
    flat /= shape[i];
  }
}

static int64_t ravel(int ndim, const int64_t *shape, const int64_t *m) {
  int64_t f = 0;
  for (int i = 0; i < ndim; i++) f = f * shape[i] + m[i];
  return f;
}

static void move_elem(const kk_view *dst, int64_t df, const kk_view *src, int64_t sf) {
  memcpy(kk_element(dst, df), kk_element(src, sf), kiln_dtype_size(src->dtype));
}

/* The semantics of kk_cast for one element, spelled out case by case. */
static void ref_convert(kiln_dtype sdt, const char *s, kiln_dtype ddt, char *d) {
  if (ddt == KILN_BOOL) {
    bool nz = kk_is_float(sdt) ? kk_get_f64(sdt, s) != 0 : kk_get_i64(sdt, s) != 0;
    kk_set_i64(KILN_BOOL, d, nz);
    return;
  }
  if (!kk_is_float(sdt)) {
    kk_set_i64(ddt, d, kk_get_i64(sdt, s));
    return;
  }
  double v = kk_get_f64(sdt, s);
  if (kk_is_float(ddt)) {
    kk_set_f64(ddt, d, v);
    return;
  }
  double lo, hi;
  int64_t ilo, ihi;
  switch (ddt) {
  case KILN_I32: lo = -2147483648.0, hi = 2147483647.0, ilo = INT32_MIN, ihi = INT32_MAX; break;
  case KILN_U8: lo = 0.0, hi = 255.0, ilo = 0, ihi = 255; break;
  default: lo = -9223372036854775808.0, hi = 9223372036854775808.0, ilo = INT64_MIN, ihi = INT64_MAX; break;
  }
  int64_t r = isnan(v) ? 0 : v <= lo ? ilo : v >= hi ? ihi : (int64_t)trunc(v);
  kk_set_i64(ddt, d, r);
}

void kk_concat_ref(int n, const kk_view *in, int axis, const kk_view *out) {
  int64_t m[KILN_MAX_DIMS];
  int64_t total = kk_numel(out);
  for (int64_t f = 0; f < total; f++) {
    unravel(f, out->ndim, out->shape, m);
    int k = 0;
    while (m[axis] >= in[k].shape[axis]) m[axis] -= in[k++].shape[axis];
    assert(k < n);
    move_elem(out, f, &in[k], ravel(in[k].ndim, in[k].shape, m));
  }
  KILN_UNUSED(n);
}

void kk_stack_ref(int n, const kk_view *in, int axis, const kk_view *out) {
  int64_t m[KILN_MAX_DIMS], mi[KILN_MAX_DIMS];
  int64_t total = kk_numel(out);
  for (int64_t f = 0; f < total; f++) {
    unravel(f, out->ndim, out->shape, m);
    int64_t k = m[axis];
    assert(k < n);
    for (int i = 0, j = 0; i < out->ndim; i++)
      if (i != axis) mi[j++] = m[i];
    move_elem(out, f, &in[k], ravel(in[k].ndim, in[k].shape, mi));
  }
  KILN_UNUSED(n);
}

void kk_split_ref(const kk_view *x, int axis, int n, const kk_view *out) {
  int64_t m[KILN_MAX_DIMS];
  int64_t at = 0;
  for (int k = 0; k < n; k++) {
    int64_t total = kk_numel(&out[k]);
    for (int64_t f = 0; f < total; f++) {
      unravel(f, out[k].ndim, out[k].shape, m);
      m[axis] += at;
      move_elem(&out[k], f, x, ravel(x->ndim, x->shape, m));
    }
    at += out[k].shape[axis];
  }
}

static kiln_status check_indices_ref(const kk_view *idx, int64_t limit, bool negative_ok, kk_index_error *err) {
  int64_t n = kk_numel(idx);
  for (int64_t p = 0; p < n; p++) {
    int64_t v = kk_get_i64(idx->dtype, kk_element(idx, p));
    bool ok = negative_ok ? (v >= -limit && v < limit) : (v >= 0 && v < limit);
    if (!ok) {
      err->value = v;
      err->position = p;
      err->limit = limit;
      return KILN_ERR_OUT_OF_RANGE;
    }
  }
  return KILN_OK;
}

kiln_status kk_take_ref(const kk_view *x, const kk_view *idx, int axis, const kk_view *out, kk_index_error *err) {
  int64_t len = x->shape[axis];
  kiln_status st = check_indices_ref(idx, len, true, err);
  if (st != KILN_OK) return st;
  int ni = idx->ndim;
  int64_t m[KILN_MAX_DIMS], xm[KILN_MAX_DIMS];
  int64_t total = kk_numel(out);
  for (int64_t f = 0; f < total; f++) {
    /* out's coordinates: x's leading dims, then idx's dims, then x's
     * trailing dims. */
    unravel(f, out->ndim, out->shape, m);
    int64_t v = kk_get_i64(idx->dtype, kk_element(idx, ravel(ni, idx->shape, m + axis)));
    for (int i = 0; i < axis; i++) xm[i] = m[i];
    xm[axis] = v < 0 ? v + len : v;
    for (int i = axis + 1; i < x->ndim; i++) xm[i] = m[i - 1 + ni];
    move_elem(out, f, x, ravel(x->ndim, x->shape, xm));
  }
  return KILN_OK;
}

kiln_status kk_gather_ref(const kk_view *x, int axis, const kk_view *idx, const kk_view *out, kk_index_error *err) {
  int64_t len = x->shape[axis];
  kiln_status st = check_indices_ref(idx, len, true, err);
  if (st != KILN_OK) return st;
  int64_t m[KILN_MAX_DIMS];
  int64_t total = kk_numel(out);
  for (int64_t f = 0; f < total; f++) {
    unravel(f, out->ndim, out->shape, m);
    int64_t v = kk_get_i64(idx->dtype, kk_element(idx, f));
    m[axis] = v < 0 ? v + len : v;
    move_elem(out, f, x, ravel(x->ndim, x->shape, m));
  }
  return KILN_OK;
}

kiln_status kk_one_hot_ref(const kk_view *idx, const kk_view *out, kk_index_error *err) {
  int64_t depth = out->shape[out->ndim - 1];
  kiln_status st = check_indices_ref(idx, depth, false, err);
  if (st != KILN_OK) return st;
  int64_t total = kk_numel(out);
  for (int64_t f = 0; f < total; f++) {
    int64_t v = kk_get_i64(idx->dtype, kk_element(idx, f / depth));
    kk_set_i64(out->dtype, kk_element(out, f), v == f % depth);
  }
  return KILN_OK;
}

void kk_pad_ref(const kk_view *x, int n_pads, const int64_t *pads, double value, const kk_view *out) {
  int64_t m[KILN_MAX_DIMS];
  int64_t total = kk_numel(out);
  for (int64_t f = 0; f < total; f++) {
    unravel(f, out->ndim, out->shape, m);
    bool inside = true;
    for (int i = 0; i < n_pads / 2; i++) {
      m[i] -= pads[2 * i];
      if (m[i] < 0 || m[i] >= x->shape[i]) inside = false;
    }
    if (inside)
      move_elem(out, f, x, ravel(x->ndim, x->shape, m));
    else
      ref_convert(KILN_F64, (const char *)&value, out->dtype, kk_element(out, f));
  }
}

void kk_cast_ref(const kk_view *x, const kk_view *out) {
  int64_t total = kk_numel(out);
  for (int64_t f = 0; f < total; f++) ref_convert(x->dtype, kk_element(x, f), out->dtype, kk_element(out, f));
}
