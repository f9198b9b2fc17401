/* 2-D max and average pooling over NCHW, with PyTorch's semantics (floor
 * output size, implicit padding that never wins a max, count_include_pad for
 * the average's divisor).
 *
 * The optimised kernels make x contiguous and walk each [H, W] plane once per
 * output row, clipping the window to the image before the inner loops so
 * those carry no bounds checks. The references test every window position
 * against the bounds, in double, through the strides. */
#include <math.h>

#include "kernels/nn.h"

/* The window of output index o along one axis, clipped to [0, len): rows
 * [*lo, *hi); *full_hi is the end clipped only to the padded extent, which
 * PyTorch's count_include_pad divisor uses. */
static void window(int64_t o, int64_t s, int64_t pad, int64_t k, int64_t len, int64_t *lo, int64_t *hi,
                   int64_t *full_lo, int64_t *full_hi) {
  int64_t start = o * s - pad;
  int64_t end = start + k;
  *full_lo = start;
  *full_hi = end < len + pad ? end : len + pad;
  *lo = start < 0 ? 0 : start;
  *hi = end < len ? end : len;
}

#define DEFINE_POOL(T, SUF)                                                                                   \
  static void max_pool_##SUF(const T *x, T *y, int64_t planes, int64_t h, int64_t w, int64_t oh, int64_t ow,   \
                             const kk_pool2d_geom *g) {                                                       \
    for (int64_t pl = 0; pl < planes; pl++) {                                                                 \
      const T *img = x + pl * h * w;                                                                          \
      T *out = y + pl * oh * ow;                                                                              \
      for (int64_t oy = 0; oy < oh; oy++) {                                                                   \
        int64_t y0, y1, fy0, fy1;                                                                             \
        window(oy, g->stride[0], g->pad[0], g->kernel[0], h, &y0, &y1, &fy0, &fy1);                           \
        for (int64_t ox = 0; ox < ow; ox++) {                                                                 \
          int64_t x0, x1, fx0, fx1;                                                                           \
          window(ox, g->stride[1], g->pad[1], g->kernel[1], w, &x0, &x1, &fx0, &fx1);                         \
          T m = -INFINITY;                                                                                    \
          for (int64_t iy = y0; iy < y1; iy++)                                                                \
            for (int64_t ix = x0; ix < x1; ix++) {                                                            \
              T v = img[iy * w + ix];                                                                         \
              /* NaN propagates, as in PyTorch. */                                                            \
              if (v > m || isnan(v)) m = v;                                                                     \
            }                                                                                                 \
          out[oy * ow + ox] = m;                                                                              \
        }                                                                                                     \
      }                                                                                                       \
    }                                                                                                         \
  }                                                                                                           \
  static void avg_pool_##SUF(const T *x, T *y, int64_t planes, int64_t h, int64_t w, int64_t oh, int64_t ow,   \
                             const kk_pool2d_geom *g) {                                                       \
    for (int64_t pl = 0; pl < planes; pl++) {                                                                 \
      const T *img = x + pl * h * w;                                                                          \
      T *out = y + pl * oh * ow;                                                                              \
      for (int64_t oy = 0; oy < oh; oy++) {                                                                   \
        int64_t y0, y1, fy0, fy1;                                                                             \
        window(oy, g->stride[0], g->pad[0], g->kernel[0], h, &y0, &y1, &fy0, &fy1);                           \
        for (int64_t ox = 0; ox < ow; ox++) {                                                                 \
          int64_t x0, x1, fx0, fx1;                                                                           \
          window(ox, g->stride[1], g->pad[1], g->kernel[1], w, &x0, &x1, &fx0, &fx1);                         \
          double s = 0;                                                                                       \
          for (int64_t iy = y0; iy < y1; iy++)                                                                \
            for (int64_t ix = x0; ix < x1; ix++) s += img[iy * w + ix];                                       \
          int64_t div = g->count_include_pad ? (fy1 - fy0) * (fx1 - fx0) : (y1 - y0) * (x1 - x0);             \
          out[oy * ow + ox] = (T)(s / (double)div);                                                           \
        }                                                                                                     \
      }                                                                                                       \
    }                                                                                                         \
  }

DEFINE_POOL(float, f32)
DEFINE_POOL(double, f64)

static kiln_status pool(const kk_view *x, const kk_view *y, const kk_pool2d_geom *g, bool is_max) {
  int64_t planes = x->shape[0] * x->shape[1], h = x->shape[2], w = x->shape[3];
  int64_t oh = y->shape[2], ow = y->shape[3];
  if (planes * oh * ow == 0) return KILN_OK;
  const char *xd;
  void *scratch;
  kiln_status st = kk_nn_contiguous(x, is_max ? "max_pool2d" : "avg_pool2d", &xd, &scratch);
  if (st != KILN_OK) return st;
  if (x->dtype == KILN_F32) {
    if (is_max)
      max_pool_f32((const float *)xd, (float *)y->data, planes, h, w, oh, ow, g);
    else
      avg_pool_f32((const float *)xd, (float *)y->data, planes, h, w, oh, ow, g);
  } else {
    if (is_max)
      max_pool_f64((const double *)xd, (double *)y->data, planes, h, w, oh, ow, g);
    else
      avg_pool_f64((const double *)xd, (double *)y->data, planes, h, w, oh, ow, g);
  }
  kiln_free(scratch);
  return KILN_OK;
}

kiln_status kk_max_pool2d(const kk_view *x, const kk_view *y, const kk_pool2d_geom *g) { return pool(x, y, g, true); }
kiln_status kk_avg_pool2d(const kk_view *x, const kk_view *y, const kk_pool2d_geom *g) { return pool(x, y, g, false); }

static double get4(const kk_view *v, int64_t a, int64_t b, int64_t c, int64_t d) {
  int64_t off = a * v->strides[0] + b * v->strides[1] + c * v->strides[2] + d * v->strides[3];
  return kk_get_f64(v->dtype, v->data + off * (int64_t)kiln_dtype_size(v->dtype));
}

static void set4(const kk_view *v, int64_t a, int64_t b, int64_t c, int64_t d, double x) {
  int64_t off = a * v->strides[0] + b * v->strides[1] + c * v->strides[2] + d * v->strides[3];
  kk_set_f64(v->dtype, v->data + off * (int64_t)kiln_dtype_size(v->dtype), x);
}

/* Visits every window position of the padded input; is_max selects the
 * reduction. */
static kiln_status pool_ref(const kk_view *x, const kk_view *y, const kk_pool2d_geom *g, bool is_max) {
  int64_t H = x->shape[2], W = x->shape[3];
  for (int64_t n = 0; n < x->shape[0]; n++)
    for (int64_t c = 0; c < x->shape[1]; c++)
      for (int64_t oy = 0; oy < y->shape[2]; oy++)
        for (int64_t ox = 0; ox < y->shape[3]; ox++) {
          double best = -INFINITY, sum = 0;
          bool nan = false;
          int64_t inside = 0, padded = 0;
          for (int64_t i = 0; i < g->kernel[0]; i++)
            for (int64_t j = 0; j < g->kernel[1]; j++) {
              int64_t iy = oy * g->stride[0] - g->pad[0] + i;
              int64_t ix = ox * g->stride[1] - g->pad[1] + j;
              /* Positions in the padding count for count_include_pad; past
               * the padding (possible only at the far edge) never. */
              if (iy < H + g->pad[0] && ix < W + g->pad[1]) padded++;
              if (iy < 0 || iy >= H || ix < 0 || ix >= W) continue;
              double v = get4(x, n, c, iy, ix);
              inside++;
              sum += v;
              if (isnan(v)) nan = true;
              if (v > best) best = v;
            }
          double r = is_max ? (nan ? NAN : best) : sum / (double)(g->count_include_pad ? padded : inside);
          set4(y, n, c, oy, ox, r);
        }
  return KILN_OK;
}

kiln_status kk_max_pool2d_ref(const kk_view *x, const kk_view *y, const kk_pool2d_geom *g) {
  return pool_ref(x, y, g, true);
}
kiln_status kk_avg_pool2d_ref(const kk_view *x, const kk_view *y, const kk_pool2d_geom *g) {
  return pool_ref(x, y, g, false);
}

/* ------------------------------------------------------------ gradients
 *
 * The optimised kernels walk each plane's windows as the forward does and
 * scatter (add) the window's gradient onto the zeroed gx plane: to the
 * window's first maximum for max pooling (the forward's comparison, so NaN
 * and ties resolve the same way), evenly over the inside positions for
 * average pooling. The references do the same through the strides into a
 * double buffer, testing every window position against the bounds. */

#define DEFINE_POOL_GRAD(T, SUF)                                                                              \
  static void max_pool_grad_##SUF(const T *gy, const T *x, T *gx, int64_t planes, int64_t h, int64_t w,       \
                                  int64_t oh, int64_t ow, const kk_pool2d_geom *g) {                          \
    for (int64_t pl = 0; pl < planes; pl++) {                                                                 \
      const T *img = x + pl * h * w, *gp = gy + pl * oh * ow;                                                 \
      T *out = gx + pl * h * w;                                                                               \
      for (int64_t i = 0; i < h * w; i++) out[i] = 0;                                                         \
      for (int64_t oy = 0; oy < oh; oy++) {                                                                   \
        int64_t y0, y1, fy0, fy1;                                                                             \
        window(oy, g->stride[0], g->pad[0], g->kernel[0], h, &y0, &y1, &fy0, &fy1);                           \
        for (int64_t ox = 0; ox < ow; ox++) {                                                                 \
          int64_t x0, x1, fx0, fx1;                                                                           \
          window(ox, g->stride[1], g->pad[1], g->kernel[1], w, &x0, &x1, &fx0, &fx1);                         \
          T m = -INFINITY;                                                                                    \
          int64_t best = y0 * w + x0;                                                                         \
          for (int64_t iy = y0; iy < y1; iy++)                                                                \
            for (int64_t ix = x0; ix < x1; ix++) {                                                            \
              T v = img[iy * w + ix];                                                                         \
              if (v > m || isnan(v)) {                                                                        \
                m = v;                                                                                        \
                best = iy * w + ix;                                                                           \
              }                                                                                               \
            }                                                                                                 \
          out[best] += gp[oy * ow + ox];                                                                      \
        }                                                                                                     \
      }                                                                                                       \
    }                                                                                                         \
  }                                                                                                           \
  static void avg_pool_grad_##SUF(const T *gy, T *gx, int64_t planes, int64_t h, int64_t w, int64_t oh,       \
                                  int64_t ow, const kk_pool2d_geom *g) {                                      \
    for (int64_t pl = 0; pl < planes; pl++) {                                                                 \
      const T *gp = gy + pl * oh * ow;                                                                        \
      T *out = gx + pl * h * w;                                                                               \
      for (int64_t i = 0; i < h * w; i++) out[i] = 0;                                                         \
      for (int64_t oy = 0; oy < oh; oy++) {                                                                   \
        int64_t y0, y1, fy0, fy1;                                                                             \
        window(oy, g->stride[0], g->pad[0], g->kernel[0], h, &y0, &y1, &fy0, &fy1);                           \
        for (int64_t ox = 0; ox < ow; ox++) {                                                                 \
          int64_t x0, x1, fx0, fx1;                                                                           \
          window(ox, g->stride[1], g->pad[1], g->kernel[1], w, &x0, &x1, &fx0, &fx1);                         \
          int64_t div = g->count_include_pad ? (fy1 - fy0) * (fx1 - fx0) : (y1 - y0) * (x1 - x0);             \
          T v = (T)((double)gp[oy * ow + ox] / (double)div);                                                  \
          for (int64_t iy = y0; iy < y1; iy++)                                                                \
            for (int64_t ix = x0; ix < x1; ix++) out[iy * w + ix] += v;                                       \
        }                                                                                                     \
      }                                                                                                       \
    }                                                                                                         \
  }

DEFINE_POOL_GRAD(float, f32)
DEFINE_POOL_GRAD(double, f64)

kiln_status kk_max_pool2d_backward(const kk_view *gy, const kk_view *x, const kk_view *gx, const kk_pool2d_geom *g) {
  static const char who[] = "max_pool2d_backward";
  int64_t planes = x->shape[0] * x->shape[1], h = x->shape[2], w = x->shape[3];
  int64_t oh = gy->shape[2], ow = gy->shape[3];
  if (planes * h * w == 0) return KILN_OK;
  const char *gyd, *xd;
  void *gys, *xs;
  kiln_status st = kk_nn_contiguous(gy, who, &gyd, &gys);
  if (st != KILN_OK) return st;
  if ((st = kk_nn_contiguous(x, who, &xd, &xs)) != KILN_OK) {
    kiln_free(gys);
    return st;
  }
  if (x->dtype == KILN_F32)
    max_pool_grad_f32((const float *)gyd, (const float *)xd, (float *)gx->data, planes, h, w, oh, ow, g);
  else
    max_pool_grad_f64((const double *)gyd, (const double *)xd, (double *)gx->data, planes, h, w, oh, ow, g);
  kiln_free(gys);
  kiln_free(xs);
  return KILN_OK;
}

kiln_status kk_avg_pool2d_backward(const kk_view *gy, const kk_view *gx, const kk_pool2d_geom *g) {
  int64_t planes = gx->shape[0] * gx->shape[1], h = gx->shape[2], w = gx->shape[3];
  int64_t oh = gy->shape[2], ow = gy->shape[3];
  if (planes * h * w == 0) return KILN_OK;
  const char *gyd;
  void *gys;
  kiln_status st = kk_nn_contiguous(gy, "avg_pool2d_backward", &gyd, &gys);
  if (st != KILN_OK) return st;
  if (gx->dtype == KILN_F32)
    avg_pool_grad_f32((const float *)gyd, (float *)gx->data, planes, h, w, oh, ow, g);
  else
    avg_pool_grad_f64((const double *)gyd, (double *)gx->data, planes, h, w, oh, ow, g);
  kiln_free(gys);
  return KILN_OK;
}

/* Both references: every window position of the padded input, the
 * gradient accumulated in double and written once at the end. x is NULL
 * for the average. */
static kiln_status pool_grad_ref(const kk_view *gy, const kk_view *x, const kk_view *gx, const kk_pool2d_geom *g,
                                 const char *who) {
  int64_t N = gx->shape[0], C = gx->shape[1], H = gx->shape[2], W = gx->shape[3];
  int64_t total = N * C * H * W;
  double *acc = kiln_alloc((size_t)(total ? total : 1) * sizeof(double));
  if (!acc) return kiln_errorf(KILN_ERR_OUT_OF_MEMORY, "%s: out of memory allocating the reference's buffer", who);
  for (int64_t i = 0; i < total; i++) acc[i] = 0;
  for (int64_t n = 0; n < N; n++)
    for (int64_t c = 0; c < C; c++)
      for (int64_t oy = 0; oy < gy->shape[2]; oy++)
        for (int64_t ox = 0; ox < gy->shape[3]; ox++) {
          double best = -INFINITY;
          int64_t best_at = -1, padded = 0, inside = 0;
          for (int64_t i = 0; i < g->kernel[0]; i++)
            for (int64_t j = 0; j < g->kernel[1]; j++) {
              int64_t iy = oy * g->stride[0] - g->pad[0] + i;
              int64_t ix = ox * g->stride[1] - g->pad[1] + j;
              if (iy < H + g->pad[0] && ix < W + g->pad[1]) padded++;
              if (iy < 0 || iy >= H || ix < 0 || ix >= W) continue;
              inside++;
              if (x) {
                double v = get4(x, n, c, iy, ix);
                if (best_at < 0 || v > best || isnan(v)) {
                  best = v;
                  best_at = iy * W + ix;
                }
              }
            }
          double gv = get4(gy, n, c, oy, ox);
          double *plane = acc + (n * C + c) * H * W;
          if (x) {
            plane[best_at] += gv;
            continue;
          }
          double share = gv / (double)(g->count_include_pad ? padded : inside);
          for (int64_t i = 0; i < g->kernel[0]; i++)
            for (int64_t j = 0; j < g->kernel[1]; j++) {
              int64_t iy = oy * g->stride[0] - g->pad[0] + i;
              int64_t ix = ox * g->stride[1] - g->pad[1] + j;
              if (iy < 0 || iy >= H || ix < 0 || ix >= W) continue;
              plane[iy * W + ix] += share;
            }
        }
  for (int64_t n = 0; n < N; n++)
    for (int64_t c = 0; c < C; c++)
      for (int64_t iy = 0; iy < H; iy++)
        for (int64_t ix = 0; ix < W; ix++) set4(gx, n, c, iy, ix, acc[((n * C + c) * H + iy) * W + ix]);
  kiln_free(acc);
  return KILN_OK;
}

kiln_status kk_max_pool2d_backward_ref(const kk_view *gy, const kk_view *x, const kk_view *gx,
                                       const kk_pool2d_geom *g) {
  return pool_grad_ref(gy, x, gx, g, "max_pool2d_backward");
}
kiln_status kk_avg_pool2d_backward_ref(const kk_view *gy, const kk_view *gx, const kk_pool2d_geom *g) {
  return pool_grad_ref(gy, NULL, gx, g, "avg_pool2d_backward");
}
