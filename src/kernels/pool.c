/* 2-D max and average pooling over NCHW, with PyTorch's semantics (floor
 * output size, implicit padding that never wins a max, count_include_pad for
 * the average's divisor), and their gradients.
 *
 * The optimised kernels split the N*C planes across the intra-op pool and
 * read x and gy in place when their columns are unit-stride (any batch,
 * channel and row strides), copying them otherwise. Each writes every element
 * of its output planes, so a split gives the same bits as one thread.
 *
 * Three roads. The common 2x2 stride-2 unpadded window (LeNet's, VGG's) in
 * float32 on an AVX2 CPU: explicit vector code, forward and backward, every
 * output branch-free (below). The same window otherwise (float64, other CPUs,
 * KK_OPT_NO_SIMD): portable loops over a row pair that the compiler
 * vectorises. Any other window: the forward computes the outputs whose
 * windows lie inside the image in x a kernel tap at a time across the output
 * row, so the inner loops are vector loops; the backward finds the max's
 * winners the same way before scattering, and spreads the average's shares a
 * tap at a time. Border windows go one by one.
 *
 * The max keeps the scalar definition's choice exactly: the window's values
 * in row-major order, a later one taking over when it is greater or NaN, so a
 * tie goes to the first and a NaN wins. That rule is associative, so the 2x2
 * loops may combine the two rows' winners; they may not change the order.
 * The averages sum in the input's type, as PyTorch does.
 *
 * The references test every window position against the bounds, in double,
 * through the strides. */
#include <math.h>
#include <string.h>

#include "base/parallel.h"
#include "kernels/nn.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define POOL_HAVE_AVX2 1
#else
#define POOL_HAVE_AVX2 0
#endif

/* A later window value v takes over from the winner so far m. */
#define PICK(m, v) ((v) > (m) || (v) != (v) ? (v) : (m))

/* Runs the loop in __VA_ARGS__ with `step` the constant 1 when sx is 1, so
 * the stride-1 windows' loops are contiguous and vectorise, else sx. */
#define BY_STEP(sx, ...)          \
  do {                            \
    if ((sx) == 1) {              \
      const int64_t step = 1;     \
      __VA_ARGS__                 \
    } else {                      \
      const int64_t step = (sx);  \
      __VA_ARGS__                 \
    }                             \
  } while (0)

/* Interior windows a row's general backward handles at once (its buffers
 * live on the stack). */
enum { CHUNK = 256 };

/* A share of the planes below this many touched elements stays on one thread:
 * handing a share to another costs microseconds. */
#define PARALLEL_MIN_ELEMS ((int64_t)1 << 15)

/* The window of output index o along one axis, clipped to [0, len): rows
 * [*lo, *hi); *full_lo and *full_hi are clipped only to the padded extent,
 * which PyTorch's count_include_pad divisor uses. */
static void window(int64_t o, int64_t s, int64_t pad, int64_t k, int64_t len, int64_t *lo, int64_t *hi,
                   int64_t *full_lo, int64_t *full_hi) {
  int64_t start = o * s - pad;
  int64_t end = start + k;
  *full_lo = start;
  *full_hi = end < len + pad ? end : len + pad;
  *lo = start < 0 ? 0 : start;
  *hi = end < len ? end : len;
}

/* The outputs [*a, *b) along one axis whose windows lie wholly inside [0, len). */
static void interior(int64_t n_out, int64_t s, int64_t pad, int64_t k, int64_t len, int64_t *a, int64_t *b) {
  *a = (pad + s - 1) / s;
  if (*a > n_out) *a = n_out;
  *b = len + pad - k < 0 ? 0 : (len + pad - k) / s + 1;
  if (*b > n_out) *b = n_out;
  if (*b < *a) *b = *a;
}

/* Where a kernel reads a [N, C, H, W] operand: element [n, c, row, col] is
 * at data + n * sn + c * sc + row * sr + col, in elements. */
typedef struct {
  const char *data;
  int64_t sn, sc, sr;
  int64_t c;
} planes_in;

typedef enum { MAX_FWD, AVG_FWD, MAX_BWD, AVG_BWD } pool_kind;

typedef struct pool_job {
  pool_kind kind;
  kiln_dtype dtype;
  planes_in x, gy; /* gy only backward; x only for the max backward */
  char *out;       /* y or gx, contiguous */
  int64_t h, w, oh, ow;
  const kk_pool2d_geom *g;
  /* A SIMD kernel for the whole job, chosen on the calling thread (whose
   * kk_options the op carries), or NULL for the portable ones. */
  void (*simd)(const struct pool_job *j, int64_t p0, int64_t p1);
} pool_job;

static bool is_2x2_stride_2(const kk_pool2d_geom *g) {
  return g->kernel[0] == 2 && g->kernel[1] == 2 && g->stride[0] == 2 && g->stride[1] == 2 && g->pad[0] == 0 &&
         g->pad[1] == 0;
}

#define DEFINE_POOL(T, SUF)                                                                                       \
  static inline const T *plane_##SUF(const planes_in *in, int64_t pl) {                                           \
    /* Evenly spaced planes, the usual case, need no division. */                                                 \
    int64_t off = in->sn == in->c * in->sc ? pl * in->sc : (pl / in->c) * in->sn + (pl % in->c) * in->sc;         \
    return (const T *)in->data + off;                                                                             \
  }                                                                                                               \
                                                                                                                  \
  KK_MULTIVERSION static void max_2x2_##SUF(const pool_job *j, int64_t p0, int64_t p1) {                          \
    int64_t oh = j->oh, ow = j->ow, rs = j->x.sr;                                                                 \
    for (int64_t pl = p0; pl < p1; pl++) {                                                                        \
      const T *img = plane_##SUF(&j->x, pl);                                                                      \
      T *out = (T *)j->out + pl * oh * ow;                                                                        \
      for (int64_t oy = 0; oy < oh; oy++) {                                                                       \
        const T *restrict r0 = img + 2 * oy * rs, *restrict r1 = r0 + rs;                                         \
        T *restrict o = out + oy * ow;                                                                            \
        for (int64_t ox = 0; ox < ow; ox++) {                                                                     \
          T top = PICK(r0[2 * ox], r0[2 * ox + 1]), bottom = PICK(r1[2 * ox], r1[2 * ox + 1]);                    \
          o[ox] = PICK(top, bottom);                                                                              \
        }                                                                                                         \
      }                                                                                                           \
    }                                                                                                             \
  }                                                                                                               \
                                                                                                                  \
  /* The sum in T, as PyTorch's, and a quarter of it: exact scaling. */                                          \
  KK_MULTIVERSION static void avg_2x2_##SUF(const pool_job *j, int64_t p0, int64_t p1) {                          \
    int64_t oh = j->oh, ow = j->ow, rs = j->x.sr;                                                                 \
    for (int64_t pl = p0; pl < p1; pl++) {                                                                        \
      const T *img = plane_##SUF(&j->x, pl);                                                                      \
      T *out = (T *)j->out + pl * oh * ow;                                                                        \
      for (int64_t oy = 0; oy < oh; oy++) {                                                                       \
        const T *restrict r0 = img + 2 * oy * rs, *restrict r1 = r0 + rs;                                         \
        T *restrict o = out + oy * ow;                                                                            \
        for (int64_t ox = 0; ox < ow; ox++)                                                                       \
          o[ox] = ((r0[2 * ox] + r0[2 * ox + 1]) + (r1[2 * ox] + r1[2 * ox + 1])) * (T)0.25;                     \
      }                                                                                                           \
    }                                                                                                             \
  }                                                                                                               \
                                                                                                                  \
  /* Every gx element is written once: the window's winner gets the gradient, \
   * the other three and the row and column no window covers (odd H, W) 0. */   \
  KK_MULTIVERSION static void max_2x2_grad_##SUF(const pool_job *j, int64_t p0, int64_t p1) {                     \
    int64_t h = j->h, w = j->w, oh = j->oh, ow = j->ow, rs = j->x.sr, gs = j->gy.sr;                             \
    for (int64_t pl = p0; pl < p1; pl++) {                                                                        \
      const T *img = plane_##SUF(&j->x, pl), *gp = plane_##SUF(&j->gy, pl);                                       \
      T *out = (T *)j->out + pl * h * w;                                                                          \
      for (int64_t oy = 0; oy < oh; oy++) {                                                                       \
        const T *restrict r0 = img + 2 * oy * rs, *restrict r1 = r0 + rs, *restrict gr = gp + oy * gs;            \
        T *restrict g0 = out + 2 * oy * w, *restrict g1 = g0 + w;                                                 \
        for (int64_t ox = 0; ox < ow; ox++) {                                                                     \
          T a = r0[2 * ox], b = r0[2 * ox + 1], c = r1[2 * ox], d = r1[2 * ox + 1], gv = gr[ox];                  \
          bool right_top = b > a || b != b, right_bottom = d > c || d != d;                                       \
          T top = right_top ? b : a, bottom = right_bottom ? d : c;                                               \
          bool lower = bottom > top || bottom != bottom;                                                          \
          g0[2 * ox] = !lower && !right_top ? gv : 0;                                                             \
          g0[2 * ox + 1] = !lower && right_top ? gv : 0;                                                          \
          g1[2 * ox] = lower && !right_bottom ? gv : 0;                                                           \
          g1[2 * ox + 1] = lower && right_bottom ? gv : 0;                                                        \
        }                                                                                                         \
        if (w & 1) g0[w - 1] = g1[w - 1] = 0;                                                                     \
      }                                                                                                           \
      if (h & 1) memset(out + (h - 1) * w, 0, (size_t)w * sizeof(T));                                             \
    }                                                                                                             \
  }                                                                                                               \
                                                                                                                  \
  KK_MULTIVERSION static void avg_2x2_grad_##SUF(const pool_job *j, int64_t p0, int64_t p1) {                     \
    int64_t h = j->h, w = j->w, oh = j->oh, ow = j->ow, gs = j->gy.sr;                                           \
    for (int64_t pl = p0; pl < p1; pl++) {                                                                        \
      const T *gp = plane_##SUF(&j->gy, pl);                                                                      \
      T *out = (T *)j->out + pl * h * w;                                                                          \
      for (int64_t oy = 0; oy < oh; oy++) {                                                                       \
        const T *restrict gr = gp + oy * gs;                                                                      \
        T *restrict g0 = out + 2 * oy * w, *restrict g1 = g0 + w;                                                 \
        for (int64_t ox = 0; ox < ow; ox++) {                                                                     \
          T v = gr[ox] * (T)0.25;                                                                                 \
          g0[2 * ox] = g0[2 * ox + 1] = g1[2 * ox] = g1[2 * ox + 1] = v;                                          \
        }                                                                                                         \
        if (w & 1) g0[w - 1] = g1[w - 1] = 0;                                                                     \
      }                                                                                                           \
      if (h & 1) memset(out + (h - 1) * w, 0, (size_t)w * sizeof(T));                                             \
    }                                                                                                             \
  }                                                                                                               \
                                                                                                                  \
  /* Any window. The border outputs in x go window by window; the interior  \
   * ones a kernel tap at a time across the row, each output still seeing its \
   * window in row-major order. */                                                                              \
  KK_MULTIVERSION static void max_any_##SUF(const pool_job *j, int64_t p0, int64_t p1) {                          \
    const kk_pool2d_geom *g = j->g;                                                                               \
    int64_t h = j->h, w = j->w, oh = j->oh, ow = j->ow, rs = j->x.sr;                                            \
    int64_t sx = g->stride[1], px = g->pad[1], kx = g->kernel[1], xa, xb;                                         \
    interior(ow, sx, px, kx, w, &xa, &xb);                                                                        \
    for (int64_t pl = p0; pl < p1; pl++) {                                                                        \
      const T *img = plane_##SUF(&j->x, pl);                                                                      \
      T *out = (T *)j->out + pl * oh * ow;                                                                        \
      for (int64_t oy = 0; oy < oh; oy++) {                                                                       \
        int64_t y0, y1, fy0, fy1;                                                                                 \
        window(oy, g->stride[0], g->pad[0], g->kernel[0], h, &y0, &y1, &fy0, &fy1);                               \
        T *restrict o = out + oy * ow;                                                                            \
        for (int64_t ox = 0; ox < ow; ox++) {                                                                     \
          if (ox == xa && xb > xa) { /* the interior, below */                                                    \
            ox = xb - 1;                                                                                          \
            continue;                                                                                             \
          }                                                                                                       \
          int64_t x0, x1, fx0, fx1;                                                                               \
          window(ox, sx, px, kx, w, &x0, &x1, &fx0, &fx1);                                                        \
          T m = -INFINITY;                                                                                        \
          for (int64_t iy = y0; iy < y1; iy++)                                                                    \
            for (int64_t ix = x0; ix < x1; ix++) m = PICK(m, img[iy * rs + ix]);                                  \
          o[ox] = m;                                                                                              \
        }                                                                                                         \
        for (int64_t ox = xa; ox < xb; ox++) o[ox] = -INFINITY;                                                   \
        for (int64_t iy = y0; iy < y1; iy++)                                                                      \
          for (int64_t kj = 0; kj < kx; kj++) {                                                                   \
            const T *restrict q = img + iy * rs + xa * sx - px + kj;                                              \
            T *restrict oo = o + xa;                                                                              \
            BY_STEP(sx, for (int64_t i = 0; i < xb - xa; i++) oo[i] = PICK(oo[i], q[i * step]););                 \
          }                                                                                                       \
      }                                                                                                           \
    }                                                                                                             \
  }                                                                                                               \
                                                                                                                  \
  KK_MULTIVERSION static void avg_any_##SUF(const pool_job *j, int64_t p0, int64_t p1) {                          \
    const kk_pool2d_geom *g = j->g;                                                                               \
    int64_t h = j->h, w = j->w, oh = j->oh, ow = j->ow, rs = j->x.sr;                                            \
    int64_t sx = g->stride[1], px = g->pad[1], kx = g->kernel[1], xa, xb;                                         \
    interior(ow, sx, px, kx, w, &xa, &xb);                                                                        \
    for (int64_t pl = p0; pl < p1; pl++) {                                                                        \
      const T *img = plane_##SUF(&j->x, pl);                                                                      \
      T *out = (T *)j->out + pl * oh * ow;                                                                        \
      for (int64_t oy = 0; oy < oh; oy++) {                                                                       \
        int64_t y0, y1, fy0, fy1;                                                                                 \
        window(oy, g->stride[0], g->pad[0], g->kernel[0], h, &y0, &y1, &fy0, &fy1);                               \
        T *restrict o = out + oy * ow;                                                                            \
        for (int64_t ox = 0; ox < ow; ox++) {                                                                     \
          if (ox == xa && xb > xa) { /* the interior, below */                                                    \
            ox = xb - 1;                                                                                          \
            continue;                                                                                             \
          }                                                                                                       \
          int64_t x0, x1, fx0, fx1;                                                                               \
          window(ox, sx, px, kx, w, &x0, &x1, &fx0, &fx1);                                                        \
          T s = 0;                                                                                                \
          for (int64_t iy = y0; iy < y1; iy++)                                                                    \
            for (int64_t ix = x0; ix < x1; ix++) s += img[iy * rs + ix];                                          \
          int64_t div = g->count_include_pad ? (fy1 - fy0) * (fx1 - fx0) : (y1 - y0) * (x1 - x0);                 \
          o[ox] = s / (T)div;                                                                                     \
        }                                                                                                         \
        for (int64_t ox = xa; ox < xb; ox++) o[ox] = 0;                                                           \
        for (int64_t iy = y0; iy < y1; iy++)                                                                      \
          for (int64_t kj = 0; kj < kx; kj++) {                                                                   \
            const T *restrict q = img + iy * rs + xa * sx - px + kj;                                              \
            T *restrict oo = o + xa;                                                                              \
            BY_STEP(sx, for (int64_t i = 0; i < xb - xa; i++) oo[i] += q[i * step];);                             \
          }                                                                                                       \
        T div = (T)((g->count_include_pad ? fy1 - fy0 : y1 - y0) * kx);                                           \
        for (int64_t ox = xa; ox < xb; ox++) o[ox] /= div;                                                        \
      }                                                                                                           \
    }                                                                                                             \
  }                                                                                                               \
                                                                                                                  \
  /* Any window, backward: each plane of gx zeroed, then each window's                                            \
   * gradient added to its first maximum (the forward's rule) or spread over                                      \
   * its inside positions, windows in row-major order. The interior windows                                       \
   * of a row go CHUNK at a time: the max's winners found a kernel tap at a                                       \
   * time across them (vectorisable) before the scatter, the average's share                                      \
   * spread a tap at a time. */                                                                                   \
  KK_MULTIVERSION static void max_any_grad_##SUF(const pool_job *j, int64_t p0, int64_t p1) {                     \
    const kk_pool2d_geom *g = j->g;                                                                               \
    int64_t h = j->h, w = j->w, oh = j->oh, ow = j->ow, rs = j->x.sr, gs = j->gy.sr;                              \
    int64_t sx = g->stride[1], px = g->pad[1], kx = g->kernel[1], xa, xb;                                         \
    interior(ow, sx, px, kx, w, &xa, &xb);                                                                        \
    T best[CHUNK];                                                                                                \
    int64_t at[CHUNK];                                                                                            \
    for (int64_t pl = p0; pl < p1; pl++) {                                                                        \
      const T *img = plane_##SUF(&j->x, pl), *gp = plane_##SUF(&j->gy, pl);                                       \
      T *out = (T *)j->out + pl * h * w;                                                                          \
      memset(out, 0, (size_t)(h * w) * sizeof(T));                                                                \
      for (int64_t oy = 0; oy < oh; oy++) {                                                                       \
        int64_t y0, y1, fy0, fy1;                                                                                 \
        window(oy, g->stride[0], g->pad[0], g->kernel[0], h, &y0, &y1, &fy0, &fy1);                               \
        const T *gr = gp + oy * gs;                                                                               \
        for (int64_t ox = 0; ox < ow; ox++) {                                                                     \
          if (ox == xa && xb > xa) {                                                                              \
            for (int64_t c0 = xa; c0 < xb; c0 += CHUNK) {                                                         \
              int64_t n = xb - c0 < CHUNK ? xb - c0 : CHUNK;                                                      \
              for (int64_t i = 0; i < n; i++) {                                                                   \
                best[i] = -INFINITY;                                                                              \
                at[i] = y0 * w + (c0 + i) * sx - px;                                                              \
              }                                                                                                   \
              for (int64_t iy = y0; iy < y1; iy++)                                                                \
                for (int64_t kj = 0; kj < kx; kj++) {                                                             \
                  const T *restrict q = img + iy * rs + c0 * sx - px + kj;                                        \
                  int64_t first = iy * w + c0 * sx - px + kj;                                                     \
                  BY_STEP(sx, for (int64_t i = 0; i < n; i++) {                                                   \
                    T v = q[i * step];                                                                            \
                    bool take = v > best[i] || v != v;                                                            \
                    best[i] = take ? v : best[i];                                                                 \
                    at[i] = take ? first + i * step : at[i];                                                      \
                  });                                                                                             \
                }                                                                                                 \
              for (int64_t i = 0; i < n; i++) out[at[i]] += gr[c0 + i];                                           \
            }                                                                                                     \
            ox = xb - 1;                                                                                          \
            continue;                                                                                             \
          }                                                                                                       \
          int64_t x0, x1, fx0, fx1;                                                                               \
          window(ox, sx, px, kx, w, &x0, &x1, &fx0, &fx1);                                                        \
          T m = -INFINITY;                                                                                        \
          int64_t b = y0 * w + x0;                                                                                \
          for (int64_t iy = y0; iy < y1; iy++)                                                                    \
            for (int64_t ix = x0; ix < x1; ix++) {                                                                \
              T v = img[iy * rs + ix];                                                                            \
              if (v > m || v != v) {                                                                              \
                m = v;                                                                                            \
                b = iy * w + ix;                                                                                  \
              }                                                                                                   \
            }                                                                                                     \
          out[b] += gr[ox];                                                                                       \
        }                                                                                                         \
      }                                                                                                           \
    }                                                                                                             \
  }                                                                                                               \
                                                                                                                  \
  KK_MULTIVERSION static void avg_any_grad_##SUF(const pool_job *j, int64_t p0, int64_t p1) {                     \
    const kk_pool2d_geom *g = j->g;                                                                               \
    int64_t h = j->h, w = j->w, oh = j->oh, ow = j->ow, gs = j->gy.sr;                                            \
    int64_t sx = g->stride[1], px = g->pad[1], kx = g->kernel[1], xa, xb;                                         \
    interior(ow, sx, px, kx, w, &xa, &xb);                                                                        \
    T share[CHUNK];                                                                                               \
    for (int64_t pl = p0; pl < p1; pl++) {                                                                        \
      const T *gp = plane_##SUF(&j->gy, pl);                                                                      \
      T *out = (T *)j->out + pl * h * w;                                                                          \
      memset(out, 0, (size_t)(h * w) * sizeof(T));                                                                \
      for (int64_t oy = 0; oy < oh; oy++) {                                                                       \
        int64_t y0, y1, fy0, fy1;                                                                                 \
        window(oy, g->stride[0], g->pad[0], g->kernel[0], h, &y0, &y1, &fy0, &fy1);                               \
        const T *gr = gp + oy * gs;                                                                               \
        for (int64_t ox = 0; ox < ow; ox++) {                                                                     \
          if (ox == xa && xb > xa) {                                                                              \
            double div = (double)((g->count_include_pad ? fy1 - fy0 : y1 - y0) * kx);                             \
            for (int64_t c0 = xa; c0 < xb; c0 += CHUNK) {                                                         \
              int64_t n = xb - c0 < CHUNK ? xb - c0 : CHUNK;                                                      \
              for (int64_t i = 0; i < n; i++) share[i] = (T)((double)gr[c0 + i] / div);                           \
              for (int64_t iy = y0; iy < y1; iy++)                                                                \
                for (int64_t kj = 0; kj < kx; kj++) {                                                             \
                  T *restrict q = out + iy * w + c0 * sx - px + kj;                                               \
                  BY_STEP(sx, for (int64_t i = 0; i < n; i++) q[i * step] += share[i];);                          \
                }                                                                                                 \
            }                                                                                                     \
            ox = xb - 1;                                                                                          \
            continue;                                                                                             \
          }                                                                                                       \
          int64_t x0, x1, fx0, fx1;                                                                               \
          window(ox, sx, px, kx, w, &x0, &x1, &fx0, &fx1);                                                        \
          int64_t div = g->count_include_pad ? (fy1 - fy0) * (fx1 - fx0) : (y1 - y0) * (x1 - x0);                 \
          T v = (T)((double)gr[ox] / (double)div);                                                                \
          for (int64_t iy = y0; iy < y1; iy++)                                                                    \
            for (int64_t ix = x0; ix < x1; ix++) out[iy * w + ix] += v;                                           \
        }                                                                                                         \
      }                                                                                                           \
    }                                                                                                             \
  }                                                                                                               \
                                                                                                                  \
  static void run_##SUF(const pool_job *j, int64_t p0, int64_t p1) {                                              \
    bool k2 = is_2x2_stride_2(j->g);                                                                              \
    switch (j->kind) {                                                                                            \
      case MAX_FWD: (k2 ? max_2x2_##SUF : max_any_##SUF)(j, p0, p1); break;                                       \
      case AVG_FWD: (k2 ? avg_2x2_##SUF : avg_any_##SUF)(j, p0, p1); break;                                       \
      case MAX_BWD: (k2 ? max_2x2_grad_##SUF : max_any_grad_##SUF)(j, p0, p1); break;                             \
      case AVG_BWD: (k2 ? avg_2x2_grad_##SUF : avg_any_grad_##SUF)(j, p0, p1); break;                             \
    }                                                                                                             \
  }

DEFINE_POOL(float, f32)
DEFINE_POOL(double, f64)

/* ------------------------------------------------------------ 2x2 stride 2, float32, AVX2
 *
 * The portable loops above vectorise their body but leave each row's last
 * outputs to scalar code with branches, which mispredict on real data (the
 * max's gradient took 4.9 ms on LeNet's first pool, against 0.2 ms for the
 * average). These do every output with vector selects: 8 at a time, the row's
 * last block moved back to end at the row's end (recomputing a few outputs,
 * which writes the same values). Rows of fewer than 8 outputs take one block
 * each in dense planes (see dense() below); otherwise rows of 4 to 7 go two
 * at a time, 4 outputs of each in a 128-bit half, and shorter ones one output
 * at a time in a vector register.
 *
 * A block reads 2n columns of the two rows, splits them into even and odd
 * columns (shuffle_ps; in 256 bits the outputs come out in the order 0 1 4 5
 * 2 3 6 7, which permute4x64 0xD8 undoes and unpack redoes when writing
 * columns back) and combines with the max's rule: a later value takes over
 * when greater or unordered with itself (NaN). */
#if POOL_HAVE_AVX2

#define TARGET_AVX2 __attribute__((target("avx2")))

TARGET_AVX2 static inline __m256 take8(__m256 m, __m256 v) {
  return _mm256_or_ps(_mm256_cmp_ps(v, m, _CMP_GT_OQ), _mm256_cmp_ps(v, v, _CMP_UNORD_Q));
}
TARGET_AVX2 static inline __m128 take4(__m128 m, __m128 v) {
  return _mm_or_ps(_mm_cmp_ps(v, m, _CMP_GT_OQ), _mm_cmp_ps(v, v, _CMP_UNORD_Q));
}
TARGET_AVX2 static inline __m256 swap_mid(__m256 v) {
  return _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(v), 0xD8));
}

/* The four corners of n adjacent windows, as even and odd columns of the
 * top row (a, b) and the bottom row (c, d). Width 1 loads single elements. */
typedef struct {
  __m256 a, b, c, d;
} corners8;
typedef struct {
  __m128 a, b, c, d;
} corners4;

TARGET_AVX2 static inline corners8 load8(const float *r0, const float *r1) {
  __m256 t0 = _mm256_loadu_ps(r0), t1 = _mm256_loadu_ps(r0 + 8);
  __m256 b0 = _mm256_loadu_ps(r1), b1 = _mm256_loadu_ps(r1 + 8);
  return (corners8){_mm256_shuffle_ps(t0, t1, 0x88), _mm256_shuffle_ps(t0, t1, 0xDD),
                    _mm256_shuffle_ps(b0, b1, 0x88), _mm256_shuffle_ps(b0, b1, 0xDD)};
}
TARGET_AVX2 static inline corners4 load4(const float *r0, const float *r1) {
  __m128 t0 = _mm_loadu_ps(r0), t1 = _mm_loadu_ps(r0 + 4);
  __m128 b0 = _mm_loadu_ps(r1), b1 = _mm_loadu_ps(r1 + 4);
  return (corners4){_mm_shuffle_ps(t0, t1, 0x88), _mm_shuffle_ps(t0, t1, 0xDD), _mm_shuffle_ps(b0, b1, 0x88),
                    _mm_shuffle_ps(b0, b1, 0xDD)};
}
TARGET_AVX2 static inline corners4 load1(const float *r0, const float *r1) {
  return (corners4){_mm_load_ss(r0), _mm_load_ss(r0 + 1), _mm_load_ss(r1), _mm_load_ss(r1 + 1)};
}

/* Rows of 4 to 7 outputs go two at a time, one in each 128-bit half, which
 * the 4-wide lane arithmetic keeps apart: *_pair load and store the halves. */
TARGET_AVX2 static inline __m256 load_pair(const float *lo, const float *hi) {
  return _mm256_insertf128_ps(_mm256_castps128_ps256(_mm_loadu_ps(lo)), _mm_loadu_ps(hi), 1);
}
TARGET_AVX2 static inline void store_pair(float *lo, float *hi, __m256 v) {
  _mm_storeu_ps(lo, _mm256_castps256_ps128(v));
  _mm_storeu_ps(hi, _mm256_extractf128_ps(v, 1));
}
/* Stores 8 columns to each of two rows from the unpacked halves of a pair:
 * lo holds columns 0-3 of both rows, hi columns 4-7. */
TARGET_AVX2 static inline void store_cols_pair(float *ra, float *rb, __m256 lo, __m256 hi) {
  _mm256_storeu_ps(ra, _mm256_permute2f128_ps(lo, hi, 0x20));
  _mm256_storeu_ps(rb, _mm256_permute2f128_ps(lo, hi, 0x31));
}
/* The corners of 4 windows of row pair (r0, r1) in the low half and of
 * (s0, s1) in the high half, outputs in order. */
TARGET_AVX2 static inline corners8 load4x2(const float *r0, const float *r1, const float *s0, const float *s1) {
  __m256 t0 = load_pair(r0, s0), t1 = load_pair(r0 + 4, s0 + 4);
  __m256 b0 = load_pair(r1, s1), b1 = load_pair(r1 + 4, s1 + 4);
  return (corners8){_mm256_shuffle_ps(t0, t1, 0x88), _mm256_shuffle_ps(t0, t1, 0xDD),
                    _mm256_shuffle_ps(b0, b1, 0x88), _mm256_shuffle_ps(b0, b1, 0xDD)};
}

TARGET_AVX2 static inline __m256 max8(corners8 k) {
  __m256 top = _mm256_blendv_ps(k.a, k.b, take8(k.a, k.b)), bottom = _mm256_blendv_ps(k.c, k.d, take8(k.c, k.d));
  return _mm256_blendv_ps(top, bottom, take8(top, bottom));
}
TARGET_AVX2 static inline __m128 max4(corners4 k) {
  __m128 top = _mm_blendv_ps(k.a, k.b, take4(k.a, k.b)), bottom = _mm_blendv_ps(k.c, k.d, take4(k.c, k.d));
  return _mm_blendv_ps(top, bottom, take4(top, bottom));
}

/* The gradient g (in the corners' lane order) routed to each window's
 * winner: a gets it where neither the bottom row nor b won, and so on. */
typedef struct {
  __m256 a, b, c, d;
} routed8;
typedef struct {
  __m128 a, b, c, d;
} routed4;

TARGET_AVX2 static inline routed8 route8(corners8 k, __m256 g) {
  __m256 right_top = take8(k.a, k.b), right_bottom = take8(k.c, k.d);
  __m256 top = _mm256_blendv_ps(k.a, k.b, right_top), bottom = _mm256_blendv_ps(k.c, k.d, right_bottom);
  __m256 lower = take8(top, bottom), gl = _mm256_and_ps(lower, g), gu = _mm256_andnot_ps(lower, g);
  return (routed8){_mm256_andnot_ps(right_top, gu), _mm256_and_ps(right_top, gu), _mm256_andnot_ps(right_bottom, gl),
                   _mm256_and_ps(right_bottom, gl)};
}
TARGET_AVX2 static inline routed4 route4(corners4 k, __m128 g) {
  __m128 right_top = take4(k.a, k.b), right_bottom = take4(k.c, k.d);
  __m128 top = _mm_blendv_ps(k.a, k.b, right_top), bottom = _mm_blendv_ps(k.c, k.d, right_bottom);
  __m128 lower = take4(top, bottom), gl = _mm_and_ps(lower, g), gu = _mm_andnot_ps(lower, g);
  return (routed4){_mm_andnot_ps(right_top, gu), _mm_and_ps(right_top, gu), _mm_andnot_ps(right_bottom, gl),
                   _mm_and_ps(right_bottom, gl)};
}

/* Rows of fewer than 8 outputs in planes laid out densely (x, gy and the
 * output) take one 8-wide block each, which reads and writes past the row's
 * end into the rows and planes after it: those are this share's and are
 * written after, so the stray values do not last. A share's last planes, up
 * to 16 elements from its end, are done exactly, so no block crosses into
 * memory another thread writes or past the end of the buffers. */
static bool dense(const planes_in *in, int64_t h, int64_t w) {
  return in->sr == w && in->sc == h * w && in->sn == in->c * h * w;
}
static bool spills(bool dense_rows, int64_t pl, int64_t p1, int64_t out_plane) {
  return dense_rows && (p1 - 1 - pl) * out_plane >= 16;
}

/* Runs BLOCK8(ox), BLOCK4(ox) or BLOCK1(ox) over a row of ow outputs, or
 * BLOCK(ox) over two rows of 4 to 7. */
#define ROW_BLOCKS(ow, BLOCK8, BLOCK4, BLOCK1)              \
  do {                                                      \
    if ((ow) >= 8) {                                        \
      int64_t ox_ = 0;                                      \
      for (; ox_ + 8 <= (ow); ox_ += 8) BLOCK8(ox_);        \
      if (ox_ < (ow)) BLOCK8((ow) - 8);                     \
    } else if ((ow) >= 4) {                                 \
      BLOCK4(0);                                            \
      if ((ow) > 4) BLOCK4((ow) - 4);                       \
    } else {                                                \
      for (int64_t ox_ = 0; ox_ < (ow); ox_++) BLOCK1(ox_); \
    }                                                       \
  } while (0)
#define TWO_ROW_BLOCKS(ow, BLOCK)  \
  do {                             \
    BLOCK(0);                      \
    if ((ow) > 4) BLOCK((ow) - 4); \
  } while (0)

TARGET_AVX2 static void max_2x2_avx2(const pool_job *j, int64_t p0, int64_t p1) {
  int64_t oh = j->oh, ow = j->ow, rs = j->x.sr;
  bool short_rows = ow < 8 && dense(&j->x, j->h, j->w);
  for (int64_t pl = p0; pl < p1; pl++) {
    const float *img = plane_f32(&j->x, pl);
    float *out = (float *)j->out + pl * oh * ow;
    bool spill = spills(short_rows, pl, p1, oh * ow);
    int64_t oy = 0;
    for (; !spill && ow >= 4 && ow < 8 && oy + 2 <= oh; oy += 2) {
      const float *r0 = img + 2 * oy * rs, *r1 = r0 + rs, *s0 = r1 + rs, *s1 = s0 + rs;
      float *o = out + oy * ow;
#define B(ox)                                                                          \
  do {                                                                                 \
    corners8 k_ = load4x2(r0 + 2 * (ox), r1 + 2 * (ox), s0 + 2 * (ox), s1 + 2 * (ox)); \
    store_pair(o + (ox), o + ow + (ox), max8(k_));                                     \
  } while (0)
      TWO_ROW_BLOCKS(ow, B);
#undef B
    }
    for (; oy < oh; oy++) {
      const float *r0 = img + 2 * oy * rs, *r1 = r0 + rs;
      float *o = out + oy * ow;
#define B8(ox) _mm256_storeu_ps(o + (ox), swap_mid(max8(load8(r0 + 2 * (ox), r1 + 2 * (ox)))))
#define B4(ox) _mm_storeu_ps(o + (ox), max4(load4(r0 + 2 * (ox), r1 + 2 * (ox))))
#define B1(ox) _mm_store_ss(o + (ox), max4(load1(r0 + 2 * (ox), r1 + 2 * (ox))))
      if (spill)
        B8(0);
      else
        ROW_BLOCKS(ow, B8, B4, B1);
#undef B8
#undef B4
#undef B1
    }
  }
}

/* The sum in float, as PyTorch's, and a quarter of it (exact scaling). */
TARGET_AVX2 static void avg_2x2_avx2(const pool_job *j, int64_t p0, int64_t p1) {
  int64_t oh = j->oh, ow = j->ow, rs = j->x.sr;
  bool short_rows = ow < 8 && dense(&j->x, j->h, j->w);
  const __m256 q8 = _mm256_set1_ps(0.25f);
  const __m128 q4 = _mm_set1_ps(0.25f);
  for (int64_t pl = p0; pl < p1; pl++) {
    const float *img = plane_f32(&j->x, pl);
    float *out = (float *)j->out + pl * oh * ow;
#define SUM8(k) _mm256_mul_ps(_mm256_add_ps(_mm256_add_ps((k).a, (k).b), _mm256_add_ps((k).c, (k).d)), q8)
#define SUM4(k) _mm_mul_ps(_mm_add_ps(_mm_add_ps((k).a, (k).b), _mm_add_ps((k).c, (k).d)), q4)
    bool spill = spills(short_rows, pl, p1, oh * ow);
    int64_t oy = 0;
    for (; !spill && ow >= 4 && ow < 8 && oy + 2 <= oh; oy += 2) {
      const float *r0 = img + 2 * oy * rs, *r1 = r0 + rs, *s0 = r1 + rs, *s1 = s0 + rs;
      float *o = out + oy * ow;
#define B(ox)                                                                          \
  do {                                                                                 \
    corners8 k_ = load4x2(r0 + 2 * (ox), r1 + 2 * (ox), s0 + 2 * (ox), s1 + 2 * (ox)); \
    store_pair(o + (ox), o + ow + (ox), SUM8(k_));                                     \
  } while (0)
      TWO_ROW_BLOCKS(ow, B);
#undef B
    }
    for (; oy < oh; oy++) {
      const float *r0 = img + 2 * oy * rs, *r1 = r0 + rs;
      float *o = out + oy * ow;
#define B8(ox)                                         \
  do {                                                 \
    corners8 k_ = load8(r0 + 2 * (ox), r1 + 2 * (ox)); \
    _mm256_storeu_ps(o + (ox), swap_mid(SUM8(k_)));    \
  } while (0)
#define B4(ox)                                         \
  do {                                                 \
    corners4 k_ = load4(r0 + 2 * (ox), r1 + 2 * (ox)); \
    _mm_storeu_ps(o + (ox), SUM4(k_));                 \
  } while (0)
#define B1(ox)                                         \
  do {                                                 \
    corners4 k_ = load1(r0 + 2 * (ox), r1 + 2 * (ox)); \
    _mm_store_ss(o + (ox), SUM4(k_));                  \
  } while (0)
      if (spill)
        B8(0);
      else
        ROW_BLOCKS(ow, B8, B4, B1);
#undef B8
#undef B4
#undef B1
    }
#undef SUM8
#undef SUM4
  }
}

/* Every gx element is written once: the window's winner gets the gradient,
 * the other three and the row and column no window covers (odd H, W) 0. */
TARGET_AVX2 static void max_2x2_grad_avx2(const pool_job *j, int64_t p0, int64_t p1) {
  int64_t h = j->h, w = j->w, oh = j->oh, ow = j->ow, rs = j->x.sr, gs = j->gy.sr;
  bool short_rows = ow < 8 && dense(&j->x, h, w) && dense(&j->gy, oh, ow);
  for (int64_t pl = p0; pl < p1; pl++) {
    const float *img = plane_f32(&j->x, pl), *gp = plane_f32(&j->gy, pl);
    float *out = (float *)j->out + pl * h * w;
    bool spill = spills(short_rows, pl, p1, oh * ow);
    int64_t oy = 0;
    for (; !spill && ow >= 4 && ow < 8 && oy + 2 <= oh; oy += 2) {
      const float *r0 = img + 2 * oy * rs, *r1 = r0 + rs, *s0 = r1 + rs, *s1 = s0 + rs, *gr = gp + oy * gs;
      float *g0 = out + 2 * oy * w, *g1 = g0 + w, *h0 = g1 + w, *h1 = h0 + w;
#define B(ox)                                                                                \
  do {                                                                                       \
    corners8 k_ = load4x2(r0 + 2 * (ox), r1 + 2 * (ox), s0 + 2 * (ox), s1 + 2 * (ox));       \
    routed8 r_ = route8(k_, load_pair(gr + (ox), gr + gs + (ox)));                           \
    __m256 ab_lo_ = _mm256_unpacklo_ps(r_.a, r_.b), ab_hi_ = _mm256_unpackhi_ps(r_.a, r_.b); \
    __m256 cd_lo_ = _mm256_unpacklo_ps(r_.c, r_.d), cd_hi_ = _mm256_unpackhi_ps(r_.c, r_.d); \
    store_cols_pair(g0 + 2 * (ox), h0 + 2 * (ox), ab_lo_, ab_hi_);                           \
    store_cols_pair(g1 + 2 * (ox), h1 + 2 * (ox), cd_lo_, cd_hi_);                           \
  } while (0)
      TWO_ROW_BLOCKS(ow, B);
#undef B
      if (w & 1) g0[w - 1] = g1[w - 1] = h0[w - 1] = h1[w - 1] = 0;
    }
    for (; oy < oh; oy++) {
      const float *r0 = img + 2 * oy * rs, *r1 = r0 + rs, *gr = gp + oy * gs;
      float *g0 = out + 2 * oy * w, *g1 = g0 + w;
#define B8(ox)                                                                                      \
  do {                                                                                              \
    routed8 r_ = route8(load8(r0 + 2 * (ox), r1 + 2 * (ox)), swap_mid(_mm256_loadu_ps(gr + (ox)))); \
    _mm256_storeu_ps(g0 + 2 * (ox), _mm256_unpacklo_ps(r_.a, r_.b));                                \
    _mm256_storeu_ps(g0 + 2 * (ox) + 8, _mm256_unpackhi_ps(r_.a, r_.b));                            \
    _mm256_storeu_ps(g1 + 2 * (ox), _mm256_unpacklo_ps(r_.c, r_.d));                                \
    _mm256_storeu_ps(g1 + 2 * (ox) + 8, _mm256_unpackhi_ps(r_.c, r_.d));                            \
  } while (0)
#define B4(ox)                                                                         \
  do {                                                                                 \
    routed4 r_ = route4(load4(r0 + 2 * (ox), r1 + 2 * (ox)), _mm_loadu_ps(gr + (ox))); \
    _mm_storeu_ps(g0 + 2 * (ox), _mm_unpacklo_ps(r_.a, r_.b));                         \
    _mm_storeu_ps(g0 + 2 * (ox) + 4, _mm_unpackhi_ps(r_.a, r_.b));                     \
    _mm_storeu_ps(g1 + 2 * (ox), _mm_unpacklo_ps(r_.c, r_.d));                         \
    _mm_storeu_ps(g1 + 2 * (ox) + 4, _mm_unpackhi_ps(r_.c, r_.d));                     \
  } while (0)
#define B1(ox)                                                                        \
  do {                                                                                \
    routed4 r_ = route4(load1(r0 + 2 * (ox), r1 + 2 * (ox)), _mm_load_ss(gr + (ox))); \
    _mm_storel_pi((__m64 *)(g0 + 2 * (ox)), _mm_unpacklo_ps(r_.a, r_.b));             \
    _mm_storel_pi((__m64 *)(g1 + 2 * (ox)), _mm_unpacklo_ps(r_.c, r_.d));             \
  } while (0)
      if (spill)
        B8(0);
      else
        ROW_BLOCKS(ow, B8, B4, B1);
#undef B8
#undef B4
#undef B1
      if (w & 1) g0[w - 1] = g1[w - 1] = 0;
    }
    if (h & 1) memset(out + (h - 1) * w, 0, (size_t)w * sizeof(float));
  }
}

TARGET_AVX2 static void avg_2x2_grad_avx2(const pool_job *j, int64_t p0, int64_t p1) {
  int64_t h = j->h, w = j->w, oh = j->oh, ow = j->ow, gs = j->gy.sr;
  bool short_rows = ow < 8 && dense(&j->gy, oh, ow);
  const __m256 q8 = _mm256_set1_ps(0.25f);
  const __m128 q4 = _mm_set1_ps(0.25f);
  for (int64_t pl = p0; pl < p1; pl++) {
    const float *gp = plane_f32(&j->gy, pl);
    float *out = (float *)j->out + pl * h * w;
    bool spill = spills(short_rows, pl, p1, oh * ow);
    int64_t oy = 0;
    for (; !spill && ow >= 4 && ow < 8 && oy + 2 <= oh; oy += 2) {
      const float *gr = gp + oy * gs;
      float *g0 = out + 2 * oy * w, *g1 = g0 + w, *h0 = g1 + w, *h1 = h0 + w;
#define B(ox)                                                                  \
  do {                                                                         \
    __m256 v_ = _mm256_mul_ps(load_pair(gr + (ox), gr + gs + (ox)), q8);       \
    __m256 lo_ = _mm256_unpacklo_ps(v_, v_), hi_ = _mm256_unpackhi_ps(v_, v_); \
    store_cols_pair(g0 + 2 * (ox), h0 + 2 * (ox), lo_, hi_);                   \
    store_cols_pair(g1 + 2 * (ox), h1 + 2 * (ox), lo_, hi_);                   \
  } while (0)
      TWO_ROW_BLOCKS(ow, B);
#undef B
      if (w & 1) g0[w - 1] = g1[w - 1] = h0[w - 1] = h1[w - 1] = 0;
    }
    for (; oy < oh; oy++) {
      const float *gr = gp + oy * gs;
      float *g0 = out + 2 * oy * w, *g1 = g0 + w;
#define B8(ox)                                                                 \
  do {                                                                         \
    __m256 v_ = swap_mid(_mm256_mul_ps(_mm256_loadu_ps(gr + (ox)), q8));       \
    __m256 lo_ = _mm256_unpacklo_ps(v_, v_), hi_ = _mm256_unpackhi_ps(v_, v_); \
    _mm256_storeu_ps(g0 + 2 * (ox), lo_);                                      \
    _mm256_storeu_ps(g0 + 2 * (ox) + 8, hi_);                                  \
    _mm256_storeu_ps(g1 + 2 * (ox), lo_);                                      \
    _mm256_storeu_ps(g1 + 2 * (ox) + 8, hi_);                                  \
  } while (0)
#define B4(ox)                                                           \
  do {                                                                   \
    __m128 v_ = _mm_mul_ps(_mm_loadu_ps(gr + (ox)), q4);                 \
    __m128 lo_ = _mm_unpacklo_ps(v_, v_), hi_ = _mm_unpackhi_ps(v_, v_); \
    _mm_storeu_ps(g0 + 2 * (ox), lo_);                                   \
    _mm_storeu_ps(g0 + 2 * (ox) + 4, hi_);                               \
    _mm_storeu_ps(g1 + 2 * (ox), lo_);                                   \
    _mm_storeu_ps(g1 + 2 * (ox) + 4, hi_);                               \
  } while (0)
#define B1(ox) g0[2 * (ox)] = g0[2 * (ox) + 1] = g1[2 * (ox)] = g1[2 * (ox) + 1] = gr[ox] * 0.25f
      if (spill)
        B8(0);
      else
        ROW_BLOCKS(ow, B8, B4, B1);
#undef B8
#undef B4
#undef B1
      if (w & 1) g0[w - 1] = g1[w - 1] = 0;
    }
    if (h & 1) memset(out + (h - 1) * w, 0, (size_t)w * sizeof(float));
  }
}

static bool cpu_has_avx2(void) {
  static _Atomic int cached = -1; /* -1 unknown, else 0 or 1; racing writers agree */
  int v = cached;
  if (v < 0) {
    __builtin_cpu_init();
    v = __builtin_cpu_supports("avx2") != 0;
    cached = v;
  }
  return v == 1;
}

/* The AVX2 kernel for j, or NULL. */
static void (*avx2_kernel(const pool_job *j))(const pool_job *, int64_t, int64_t) {
  if (j->dtype != KILN_F32 || !is_2x2_stride_2(j->g) || !cpu_has_avx2()) return NULL;
  switch (j->kind) {
    case MAX_FWD: return max_2x2_avx2;
    case AVG_FWD: return avg_2x2_avx2;
    case MAX_BWD: return max_2x2_grad_avx2;
    case AVG_BWD: return avg_2x2_grad_avx2;
  }
  return NULL;
}
#else
static void (*avx2_kernel(const pool_job *j))(const pool_job *, int64_t, int64_t) {
  (void)j;
  return NULL;
}
#endif

static void pool_part(void *ctx, int64_t begin, int64_t end, int worker) {
  (void)worker;
  const pool_job *j = ctx;
  if (j->simd)
    j->simd(j, begin, end);
  else if (j->dtype == KILN_F32)
    run_f32(j, begin, end);
  else
    run_f64(j, begin, end);
}

/* Points *in at v's elements when its columns are unit-stride, else at a
 * contiguous copy (*scratch, for the caller to free). */
static kiln_status planes_of(const kk_view *v, const char *who, planes_in *in, void **scratch) {
  *scratch = NULL;
  if (v->strides[3] == 1 || v->shape[3] == 1) {
    *in = (planes_in){v->data, v->strides[0], v->strides[1], v->strides[2], v->shape[1]};
    return KILN_OK;
  }
  const char *d;
  kiln_status st = kk_nn_contiguous(v, who, &d, scratch);
  if (st != KILN_OK) return st;
  int64_t c = v->shape[1], h = v->shape[2], w = v->shape[3];
  *in = (planes_in){d, c * h * w, h * w, w, c};
  return KILN_OK;
}

/* Runs j over its planes, split across the pool when each share would touch
 * at least PARALLEL_MIN_ELEMS elements. */
static void run_job(pool_job *j, int64_t planes) {
  j->simd = kk_options() & KK_OPT_NO_SIMD ? NULL : avx2_kernel(j);
  int64_t per_plane = j->h * j->w + j->oh * j->ow + (j->kind == MAX_BWD ? j->h * j->w : 0);
  if (per_plane < 1) per_plane = 1;
  kiln_parallel_for(planes, (PARALLEL_MIN_ELEMS + per_plane - 1) / per_plane, pool_part, j);
}

static kiln_status pool(const kk_view *x, const kk_view *y, const kk_pool2d_geom *g, pool_kind kind) {
  pool_job j = {.kind = kind, .dtype = x->dtype, .out = y->data, .g = g};
  j.h = x->shape[2], j.w = x->shape[3], j.oh = y->shape[2], j.ow = y->shape[3];
  int64_t planes = x->shape[0] * x->shape[1];
  if (planes * j.oh * j.ow == 0) return KILN_OK;
  void *xs;
  kiln_status st = planes_of(x, kind == MAX_FWD ? "max_pool2d" : "avg_pool2d", &j.x, &xs);
  if (st != KILN_OK) return st;
  run_job(&j, planes);
  kiln_free(xs);
  return KILN_OK;
}

kiln_status kk_max_pool2d(const kk_view *x, const kk_view *y, const kk_pool2d_geom *g) {
  return pool(x, y, g, MAX_FWD);
}
kiln_status kk_avg_pool2d(const kk_view *x, const kk_view *y, const kk_pool2d_geom *g) {
  return pool(x, y, g, AVG_FWD);
}

/* x is NULL for the average, which needs only gx's shape. */
static kiln_status pool_grad(const kk_view *gy, const kk_view *x, const kk_view *gx, const kk_pool2d_geom *g,
                             const char *who) {
  pool_job j = {.kind = x ? MAX_BWD : AVG_BWD, .dtype = gx->dtype, .out = gx->data, .g = g};
  j.h = gx->shape[2], j.w = gx->shape[3], j.oh = gy->shape[2], j.ow = gy->shape[3];
  int64_t planes = gx->shape[0] * gx->shape[1];
  if (planes * j.h * j.w == 0) return KILN_OK;
  void *gys, *xs = NULL;
  kiln_status st = planes_of(gy, who, &j.gy, &gys);
  if (st == KILN_OK && x) st = planes_of(x, who, &j.x, &xs);
  if (st == KILN_OK) run_job(&j, planes);
  kiln_free(gys);
  kiln_free(xs);
  return st;
}

kiln_status kk_max_pool2d_backward(const kk_view *gy, const kk_view *x, const kk_view *gx, const kk_pool2d_geom *g) {
  return pool_grad(gy, x, gx, g, "max_pool2d_backward");
}
kiln_status kk_avg_pool2d_backward(const kk_view *gy, const kk_view *gx, const kk_pool2d_geom *g) {
  return pool_grad(gy, NULL, gx, g, "avg_pool2d_backward");
}

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
