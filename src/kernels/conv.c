/* 2-D convolution (NCHW, PyTorch's cross-correlation, zero padding, stride,
 * dilation, groups, optional bias).
 *
 * The optimised kernel lowers each group of each block of images to one GEMM
 * (im2col): the patches of a block of nb images form col [K, nb * P] with
 * K = C/groups * KH * KW and P = OH * OW, and the group's output is
 * w_g [O/groups, K] . col. With one image per block the product lands
 * straight in y (its rows for that image and group are a [O/groups, P]
 * matrix with leading dimension P); with several, it goes to a scratch
 * [O/groups, nb * P] and is scattered to y with the bias added. Blocks keep
 * the scratch bounded (see block_images), so a big batch never needs a
 * batch-sized col buffer; an image too big for a block is lowered a band of
 * output rows at a time (chunk_rows). A 1x1 kernel with stride 1 and no
 * padding needs no im2col at all: the image itself is col.
 *
 * float32 with stride 1 on x86-64 with AVX2 and FMA takes a faster road that
 * needs no im2col (implicit GEMM): each image's group is copied once into a
 * zero-padded [Cg, Hp, Wp] buffer, and the output is computed on the padded
 * width, so output pixel q = oy * Wp + ox reads tap (c, i, j) at flat index
 * q + c * Hp * Wp + i * dh * Wp + j * dw: for every tap the B operand of the
 * GEMM is a contiguous run of the padded image. A 6x16 register-tiled FMA
 * micro-kernel sweeps those runs; the Wp - OW wrap-around columns are
 * computed and dropped (14% extra work on LeNet's conv1), and the valid ones
 * are copied out with the bias. Groups of 16 output channels may instead
 * put channels on the vector lanes and broadcast pixels (tile_oc16), which
 * computes wanted pixels only; direct_fits picks whichever wastes less (LeNet's
 * conv2: 2.0 -> 1.5 ms a batch on one thread, minimum of 40 runs). This is what
 * makes LeNet's small convolutions
 * (K = 25 and 150, where OpenBLAS's packing dominates) competitive. It is
 * chosen only when the padded image fits in L2; larger problems go to
 * OpenBLAS, whose packing pays off there. kk_conv2d_use_simd switches it off
 * so tests cover both roads.
 *
 * The reference kernel is the seven-deep loop of the definition, in double. */
#include <cblas.h>
#include <string.h>

#include "base/parallel.h"
#include "kernels/nn.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define CONV_HAVE_AVX2 1
#else
#define CONV_HAVE_AVX2 0
#endif

bool kk_conv2d_use_simd(bool on) {
  unsigned old = kk_options();
  kk_set_options(on ? old & ~(unsigned)KK_OPT_NO_SIMD : old | KK_OPT_NO_SIMD);
  return !(old & KK_OPT_NO_SIMD);
}

/* Upper bound on the col and product scratch of one block, in elements.
 * 256 K floats (1 MiB) stays within a core's L2 on current x86, where the
 * GEMM wants its packed panels to live. */
enum { BLOCK_ELEMS = 256 * 1024 };

typedef struct {
  int64_t n, c, h, w;   /* input */
  int64_t o, kh, kw;    /* weight */
  int64_t oh, ow;       /* output */
  int64_t cg, og, k, p; /* per group: channels in and out, GEMM depth, pixels */
} conv_dims;

static conv_dims dims_of(const kk_view *x, const kk_view *w, const kk_view *y, const kk_conv2d_geom *g) {
  conv_dims d;
  d.n = x->shape[0];
  d.c = x->shape[1];
  d.h = x->shape[2];
  d.w = x->shape[3];
  d.o = w->shape[0];
  d.kh = w->shape[2];
  d.kw = w->shape[3];
  d.oh = y->shape[2];
  d.ow = y->shape[3];
  d.cg = d.c / g->groups;
  d.og = d.o / g->groups;
  d.k = d.cg * d.kh * d.kw;
  d.p = d.oh * d.ow;
  return d;
}

/* The first output index o with o * s - pad + off >= 0, and the end of the
 * outputs with o * s - pad + off < len: the range where the input index is
 * inside, so the loops between need no bounds check. */
static void valid_range(int64_t n_out, int64_t s, int64_t pad, int64_t off, int64_t len, int64_t *lo, int64_t *hi) {
  int64_t a = pad - off; /* need o * s >= a */
  int64_t l = a <= 0 ? 0 : (a + s - 1) / s;
  int64_t b = len + pad - off; /* need o * s < b */
  int64_t h = b <= 0 ? 0 : (b + s - 1) / s;
  if (l > n_out) l = n_out;
  if (h > n_out) h = n_out;
  if (h < l) h = l;
  *lo = l;
  *hi = h;
}

/* im2col of output rows [oy0, oy1) of one image's group: img [cg, H, W] ->
 * col rows r = (c, kh, kw), each holding (oy1 - oy0) * OW entries at
 * col + r * ld. */
#define DEFINE_IM2COL(T, SUF)                                                                                   \
  static void im2col_##SUF(const T *img, const conv_dims *d, const kk_conv2d_geom *g, T *col, int64_t ld,       \
                           int64_t oy0, int64_t oy1) {                                                          \
    int64_t sh = g->stride[0], sw = g->stride[1];                                                               \
    for (int64_t c = 0; c < d->cg; c++)                                                                         \
      for (int64_t ki = 0; ki < d->kh; ki++)                                                                    \
        for (int64_t kj = 0; kj < d->kw; kj++) {                                                                \
          T *row = col + ((c * d->kh + ki) * d->kw + kj) * ld;                                                  \
          int64_t hoff = ki * g->dilation[0], woff = kj * g->dilation[1];                                       \
          int64_t ylo, yhi, xlo, xhi;                                                                           \
          valid_range(d->oh, sh, g->pad[0], hoff, d->h, &ylo, &yhi);                                            \
          valid_range(d->ow, sw, g->pad[1], woff, d->w, &xlo, &xhi);                                            \
          /* Rows of this chunk that read inside the image: [ya, yb). */                                       \
          int64_t ya = ylo < oy0 ? oy0 : ylo > oy1 ? oy1 : ylo;                                                 \
          int64_t yb = yhi < ya ? ya : yhi > oy1 ? oy1 : yhi;                                                   \
          memset(row, 0, sizeof(T) * (size_t)((ya - oy0) * d->ow));                                             \
          for (int64_t oy = ya; oy < yb; oy++) {                                                                \
            /* Input column of output ox is ox * sw + xoff, inside for ox in [xlo, xhi). */                    \
            const T *src = img + (c * d->h + oy * sh - g->pad[0] + hoff) * d->w;                                \
            int64_t xoff = woff - g->pad[1];                                                                    \
            T *dst = row + (oy - oy0) * d->ow;                                                                  \
            for (int64_t ox = 0; ox < xlo; ox++) dst[ox] = 0;                                                   \
            /* Rows are short (LeNet's are 10 to 28 wide), where a plain loop                                 \
             * beats a memcpy call per row. */                                                                 \
            if (sw == 1)                                                                                        \
              for (int64_t ox = xlo; ox < xhi; ox++) dst[ox] = src[ox + xoff];                                  \
            else                                                                                                \
              for (int64_t ox = xlo; ox < xhi; ox++) dst[ox] = src[ox * sw + xoff];                             \
            for (int64_t ox = xhi; ox < d->ow; ox++) dst[ox] = 0;                                               \
          }                                                                                                     \
          memset(row + (yb - oy0) * d->ow, 0, sizeof(T) * (size_t)((oy1 - yb) * d->ow));                        \
        }                                                                                                       \
  }

DEFINE_IM2COL(float, f32)
DEFINE_IM2COL(double, f64)

static void gemm_f32(int64_t m, int64_t n, int64_t k, const float *a, int64_t lda, const float *b, int64_t ldb,
                     float *c, int64_t ldc) {
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (blasint)m, (blasint)n, (blasint)k, 1.0f, a, (blasint)lda,
              b, (blasint)ldb, 0.0f, c, (blasint)ldc);
}

static void gemm_f64(int64_t m, int64_t n, int64_t k, const double *a, int64_t lda, const double *b, int64_t ldb,
                     double *c, int64_t ldc) {
  cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (blasint)m, (blasint)n, (blasint)k, 1.0, a, (blasint)lda, b,
              (blasint)ldb, 0.0, c, (blasint)ldc);
}

/* Output rows per GEMM when one image is too big for a block: its col would
 * be K * P, which for a deep layer on a large image is hundreds of MiB. */
static int64_t chunk_rows(const conv_dims *d) {
  int64_t per_row = d->k * d->ow;
  int64_t rows = per_row > 0 ? 4 * (int64_t)BLOCK_ELEMS / per_row : d->oh;
  if (rows < 1) rows = 1;
  if (rows > d->oh) rows = d->oh;
  return rows;
}

/* How many images one GEMM covers. Small images make thin GEMMs whose call
 * and packing overhead dominates, so they are batched up to the scratch
 * bound; one image per block when the image alone fills it. */
static int64_t block_images(const conv_dims *d) {
  int64_t per = d->k * d->p + d->og * d->p;
  if (per <= 0) return d->n > 0 ? d->n : 1;
  int64_t nb = BLOCK_ELEMS / per;
  if (nb < 1) nb = 1;
  if (nb > d->n) nb = d->n;
  return nb;
}

/* x, w contiguous; bias read through its stride (NULL: none); y contiguous. */
#define DEFINE_CONV(T, SUF)                                                                                    \
  static kiln_status conv_##SUF(const T *x, const T *w, const kk_view *bias, T *y, const conv_dims *d,          \
                                const kk_conv2d_geom *g) {                                                     \
    bool direct_col = d->kh == 1 && d->kw == 1 && g->stride[0] == 1 && g->stride[1] == 1 && g->pad[0] == 0 &&  \
                      g->pad[1] == 0;                                                                          \
    int64_t nb = block_images(d);                                                                              \
    int64_t rows = chunk_rows(d);                                                                              \
    /* A 1x1 kernel still gathers several images into one col. */                                             \
    size_t col_elems = direct_col && nb == 1 ? 0 : nb == 1 ? (size_t)(d->k * rows * d->ow)                      \
                                                           : (size_t)(d->k * nb * d->p);                        \
    size_t prod_elems = nb > 1 ? (size_t)(d->og * nb * d->p) : 0;                                              \
    size_t bytes = (col_elems + prod_elems) * sizeof(T);                                                       \
    T *scratch = kiln_alloc(bytes);                                                                            \
    if (!scratch)                                                                                              \
      return kiln_errorf(KILN_ERR_OUT_OF_MEMORY, "conv2d: out of memory allocating %zu bytes of im2col scratch", \
                         bytes);                                                                               \
    T *col = scratch, *prod = scratch + col_elems;                                                             \
    int64_t bstride = bias ? bias->strides[0] : 0;                                                             \
    const T *bdata = bias ? (const T *)bias->data : NULL;                                                      \
    for (int64_t n0 = 0; n0 < d->n; n0 += nb) {                                                                \
      int64_t cnt = d->n - n0 < nb ? d->n - n0 : nb;                                                           \
      for (int64_t grp = 0; grp < g->groups; grp++) {                                                          \
        const T *wg = w + grp * d->og * d->k;                                                                  \
        if (cnt == 1) {                                                                                        \
          /* One image: the product goes straight to y. */                                                     \
          const T *img = x + (n0 * d->c + grp * d->cg) * d->h * d->w;                                          \
          T *yg = y + (n0 * d->o + grp * d->og) * d->p;                                                        \
          if (d->k == 0)                                                                                       \
            memset(yg, 0, sizeof(T) * (size_t)(d->og * d->p));                                                 \
          else if (direct_col)                                                                                 \
            gemm_##SUF(d->og, d->p, d->k, wg, d->k, img, d->p, yg, d->p);                                      \
          else                                                                                                 \
            for (int64_t oy0 = 0; oy0 < d->oh; oy0 += rows) {                                                  \
              int64_t oy1 = oy0 + rows < d->oh ? oy0 + rows : d->oh, cols = (oy1 - oy0) * d->ow;               \
              im2col_##SUF(img, d, g, col, cols, oy0, oy1);                                                    \
              gemm_##SUF(d->og, cols, d->k, wg, d->k, col, cols, yg + oy0 * d->ow, d->p);                      \
            }                                                                                                  \
          if (bdata)                                                                                           \
            for (int64_t oc = 0; oc < d->og; oc++) {                                                           \
              T bv = bdata[(grp * d->og + oc) * bstride];                                                      \
              T *yr = yg + oc * d->p;                                                                          \
              for (int64_t i = 0; i < d->p; i++) yr[i] += bv;                                                  \
            }                                                                                                  \
          continue;                                                                                            \
        }                                                                                                      \
        /* Several images: col [K, cnt * P], product [og, cnt * P], then                                       \
         * scattered to y[n, grp * og + oc, :] with the bias. */                                               \
        int64_t ld = cnt * d->p;                                                                               \
        for (int64_t i = 0; i < cnt; i++) {                                                                    \
          const T *img = x + ((n0 + i) * d->c + grp * d->cg) * d->h * d->w;                                    \
          if (direct_col)                                                                                      \
            for (int64_t r = 0; r < d->k; r++)                                                                 \
              memcpy(col + r * ld + i * d->p, img + r * d->p, sizeof(T) * (size_t)d->p);                       \
          else                                                                                                 \
            im2col_##SUF(img, d, g, col + i * d->p, ld, 0, d->oh);                                             \
        }                                                                                                      \
        if (d->k == 0)                                                                                         \
          memset(prod, 0, sizeof(T) * (size_t)(d->og * ld));                                                   \
        else                                                                                                   \
          gemm_##SUF(d->og, ld, d->k, wg, d->k, col, ld, prod, ld);                                            \
        for (int64_t i = 0; i < cnt; i++)                                                                      \
          for (int64_t oc = 0; oc < d->og; oc++) {                                                             \
            T bv = bdata ? bdata[(grp * d->og + oc) * bstride] : (T)0;                                         \
            const T *src = prod + oc * ld + i * d->p;                                                          \
            T *dst = y + ((n0 + i) * d->o + grp * d->og + oc) * d->p;                                          \
            for (int64_t q = 0; q < d->p; q++) dst[q] = src[q] + bv;                                           \
          }                                                                                                    \
      }                                                                                                        \
    }                                                                                                          \
    kiln_free(scratch);                                                                                        \
    return KILN_OK;                                                                                            \
  }

DEFINE_CONV(float, f32)
DEFINE_CONV(double, f64)

/* ------------------------------------------------------------ implicit GEMM, AVX2 */

#if CONV_HAVE_AVX2
/* Two register tilings of 12 accumulators: 6 rows x 16 pixels and 4 rows x
 * 24 pixels; whichever pads the group's output channels less is used (6 for
 * LeNet's conv1, 4 for its 16-channel conv2). */
typedef void (*tile_fn)(const float *src, const int64_t *off, const float *wp, int64_t k, float *out, int64_t ldo);

/* out[r][0..16) = sum_k wp[k * 6 + r] * src[off[k] + 0..16) for r < 6:
 * twelve accumulators, two loads and six broadcasts per k. */
__attribute__((target("avx2,fma"))) static void tile_6x16(const float *src, const int64_t *off, const float *wp,
                                                           int64_t k, float *out, int64_t ldo) {
  __m256 c00 = _mm256_setzero_ps(), c01 = _mm256_setzero_ps(), c10 = _mm256_setzero_ps(),
         c11 = _mm256_setzero_ps(), c20 = _mm256_setzero_ps(), c21 = _mm256_setzero_ps(),
         c30 = _mm256_setzero_ps(), c31 = _mm256_setzero_ps(), c40 = _mm256_setzero_ps(),
         c41 = _mm256_setzero_ps(), c50 = _mm256_setzero_ps(), c51 = _mm256_setzero_ps();
  for (int64_t t = 0; t < k; t++, wp += 6) {
    const float *b = src + off[t];
    __m256 b0 = _mm256_loadu_ps(b), b1 = _mm256_loadu_ps(b + 8), a;
    a = _mm256_broadcast_ss(wp + 0);
    c00 = _mm256_fmadd_ps(a, b0, c00);
    c01 = _mm256_fmadd_ps(a, b1, c01);
    a = _mm256_broadcast_ss(wp + 1);
    c10 = _mm256_fmadd_ps(a, b0, c10);
    c11 = _mm256_fmadd_ps(a, b1, c11);
    a = _mm256_broadcast_ss(wp + 2);
    c20 = _mm256_fmadd_ps(a, b0, c20);
    c21 = _mm256_fmadd_ps(a, b1, c21);
    a = _mm256_broadcast_ss(wp + 3);
    c30 = _mm256_fmadd_ps(a, b0, c30);
    c31 = _mm256_fmadd_ps(a, b1, c31);
    a = _mm256_broadcast_ss(wp + 4);
    c40 = _mm256_fmadd_ps(a, b0, c40);
    c41 = _mm256_fmadd_ps(a, b1, c41);
    a = _mm256_broadcast_ss(wp + 5);
    c50 = _mm256_fmadd_ps(a, b0, c50);
    c51 = _mm256_fmadd_ps(a, b1, c51);
  }
  _mm256_storeu_ps(out + 0 * ldo, c00);
  _mm256_storeu_ps(out + 0 * ldo + 8, c01);
  _mm256_storeu_ps(out + 1 * ldo, c10);
  _mm256_storeu_ps(out + 1 * ldo + 8, c11);
  _mm256_storeu_ps(out + 2 * ldo, c20);
  _mm256_storeu_ps(out + 2 * ldo + 8, c21);
  _mm256_storeu_ps(out + 3 * ldo, c30);
  _mm256_storeu_ps(out + 3 * ldo + 8, c31);
  _mm256_storeu_ps(out + 4 * ldo, c40);
  _mm256_storeu_ps(out + 4 * ldo + 8, c41);
  _mm256_storeu_ps(out + 5 * ldo, c50);
  _mm256_storeu_ps(out + 5 * ldo + 8, c51);
}

/* out[r][0..24) = sum_k wp[k * 4 + r] * src[off[k] + 0..24) for r < 4. */
__attribute__((target("avx2,fma"))) static void tile_4x24(const float *src, const int64_t *off, const float *wp,
                                                           int64_t k, float *out, int64_t ldo) {
  __m256 c00 = _mm256_setzero_ps(), c01 = _mm256_setzero_ps(), c02 = _mm256_setzero_ps(),
         c10 = _mm256_setzero_ps(), c11 = _mm256_setzero_ps(), c12 = _mm256_setzero_ps(),
         c20 = _mm256_setzero_ps(), c21 = _mm256_setzero_ps(), c22 = _mm256_setzero_ps(),
         c30 = _mm256_setzero_ps(), c31 = _mm256_setzero_ps(), c32 = _mm256_setzero_ps();
  for (int64_t t = 0; t < k; t++, wp += 4) {
    const float *b = src + off[t];
    __m256 b0 = _mm256_loadu_ps(b), b1 = _mm256_loadu_ps(b + 8), b2 = _mm256_loadu_ps(b + 16), a;
    a = _mm256_broadcast_ss(wp + 0);
    c00 = _mm256_fmadd_ps(a, b0, c00);
    c01 = _mm256_fmadd_ps(a, b1, c01);
    c02 = _mm256_fmadd_ps(a, b2, c02);
    a = _mm256_broadcast_ss(wp + 1);
    c10 = _mm256_fmadd_ps(a, b0, c10);
    c11 = _mm256_fmadd_ps(a, b1, c11);
    c12 = _mm256_fmadd_ps(a, b2, c12);
    a = _mm256_broadcast_ss(wp + 2);
    c20 = _mm256_fmadd_ps(a, b0, c20);
    c21 = _mm256_fmadd_ps(a, b1, c21);
    c22 = _mm256_fmadd_ps(a, b2, c22);
    a = _mm256_broadcast_ss(wp + 3);
    c30 = _mm256_fmadd_ps(a, b0, c30);
    c31 = _mm256_fmadd_ps(a, b1, c31);
    c32 = _mm256_fmadd_ps(a, b2, c32);
  }
  _mm256_storeu_ps(out + 0 * ldo, c00);
  _mm256_storeu_ps(out + 0 * ldo + 8, c01);
  _mm256_storeu_ps(out + 0 * ldo + 16, c02);
  _mm256_storeu_ps(out + 1 * ldo, c10);
  _mm256_storeu_ps(out + 1 * ldo + 8, c11);
  _mm256_storeu_ps(out + 1 * ldo + 16, c12);
  _mm256_storeu_ps(out + 2 * ldo, c20);
  _mm256_storeu_ps(out + 2 * ldo + 8, c21);
  _mm256_storeu_ps(out + 2 * ldo + 16, c22);
  _mm256_storeu_ps(out + 3 * ldo, c30);
  _mm256_storeu_ps(out + 3 * ldo + 8, c31);
  _mm256_storeu_ps(out + 3 * ldo + 16, c32);
}

/* The other orientation, for groups of 16 output channels: channels along
 * the vector lanes, pixels broadcast. Any set of pixels can form a tile, so
 * only wanted pixels are computed (the pixel-lane tiles above compute the
 * Wp - OW wrap-around columns too: 44% extra on LeNet's conv2). For np <= 6
 * pixels whose padded-image offsets are pix[p], accumulates
 * sum_t xpad[pix[p] + off[t]] * wp[t][0..16) and stores it plus the bias to
 * out[c * ldo + dst[p]] for c < 16. */
__attribute__((target("avx2,fma"))) static void tile_oc16(const float *xpad, const int64_t *pix, const int64_t *dst,
                                                          int np, const int64_t *off, const float *wp, int64_t k,
                                                          const float *bias16, float *out, int64_t ldo) {
  const float *s[6];
  for (int p = 0; p < 6; p++) s[p] = xpad + pix[p < np ? p : np - 1];
  __m256 a00 = _mm256_setzero_ps(), a01 = _mm256_setzero_ps(), a10 = _mm256_setzero_ps(),
         a11 = _mm256_setzero_ps(), a20 = _mm256_setzero_ps(), a21 = _mm256_setzero_ps(),
         a30 = _mm256_setzero_ps(), a31 = _mm256_setzero_ps(), a40 = _mm256_setzero_ps(),
         a41 = _mm256_setzero_ps(), a50 = _mm256_setzero_ps(), a51 = _mm256_setzero_ps();
  for (int64_t t = 0; t < k; t++, wp += 16) {
    int64_t o = off[t];
    __m256 w0 = _mm256_loadu_ps(wp), w1 = _mm256_loadu_ps(wp + 8), x;
    x = _mm256_broadcast_ss(s[0] + o);
    a00 = _mm256_fmadd_ps(x, w0, a00);
    a01 = _mm256_fmadd_ps(x, w1, a01);
    x = _mm256_broadcast_ss(s[1] + o);
    a10 = _mm256_fmadd_ps(x, w0, a10);
    a11 = _mm256_fmadd_ps(x, w1, a11);
    x = _mm256_broadcast_ss(s[2] + o);
    a20 = _mm256_fmadd_ps(x, w0, a20);
    a21 = _mm256_fmadd_ps(x, w1, a21);
    x = _mm256_broadcast_ss(s[3] + o);
    a30 = _mm256_fmadd_ps(x, w0, a30);
    a31 = _mm256_fmadd_ps(x, w1, a31);
    x = _mm256_broadcast_ss(s[4] + o);
    a40 = _mm256_fmadd_ps(x, w0, a40);
    a41 = _mm256_fmadd_ps(x, w1, a41);
    x = _mm256_broadcast_ss(s[5] + o);
    a50 = _mm256_fmadd_ps(x, w0, a50);
    a51 = _mm256_fmadd_ps(x, w1, a51);
  }
  float tmp[6][16];
  _mm256_storeu_ps(tmp[0], a00), _mm256_storeu_ps(tmp[0] + 8, a01);
  _mm256_storeu_ps(tmp[1], a10), _mm256_storeu_ps(tmp[1] + 8, a11);
  _mm256_storeu_ps(tmp[2], a20), _mm256_storeu_ps(tmp[2] + 8, a21);
  _mm256_storeu_ps(tmp[3], a30), _mm256_storeu_ps(tmp[3] + 8, a31);
  _mm256_storeu_ps(tmp[4], a40), _mm256_storeu_ps(tmp[4] + 8, a41);
  _mm256_storeu_ps(tmp[5], a50), _mm256_storeu_ps(tmp[5] + 8, a51);
  for (int p = 0; p < np; p++)
    for (int c = 0; c < 16; c++) out[c * ldo + dst[p]] = tmp[p][c] + bias16[c];
}

/* Padded-image geometry of the implicit GEMM. */
typedef struct {
  int64_t mr, nr;        /* the tile: rows (output channels) x pixels */
  tile_fn tile;
  int64_t hp, wp, plane; /* padded height, width, hp * wp */
  int64_t q, qpad;       /* computed pixels oy * wp + ox, and that rounded up to nr */
  int64_t opad;          /* output channels per group rounded up to mr */
  int64_t xlen;          /* padded image buffer, with slack for the last tile's reads */
  bool by_channel;       /* tile_oc16 (channels on lanes) rather than the pixel-lane tiles */
} direct_dims;

static bool direct_fits(const conv_dims *d, const kk_conv2d_geom *g, direct_dims *dd) {
  if (g->stride[0] != 1 || g->stride[1] != 1) return false;
  dd->hp = d->h + 2 * g->pad[0];
  dd->wp = d->w + 2 * g->pad[1];
  dd->plane = dd->hp * dd->wp;
  int64_t pad6 = (d->og + 5) / 6 * 6, pad4 = (d->og + 3) / 4 * 4;
  dd->mr = pad4 < pad6 ? 4 : 6;
  dd->nr = dd->mr == 4 ? 24 : 16;
  dd->tile = dd->mr == 4 ? tile_4x24 : tile_6x16;
  dd->q = d->oh * dd->wp;
  dd->qpad = (dd->q + dd->nr - 1) / dd->nr * dd->nr;
  dd->opad = dd->mr == 4 ? pad4 : pad6;
  int64_t max_off = (d->cg - 1) * dd->plane + (d->kh - 1) * g->dilation[0] * dd->wp + (d->kw - 1) * g->dilation[1];
  dd->xlen = d->cg * dd->plane > max_off + dd->qpad ? d->cg * dd->plane : max_off + dd->qpad;
  /* Channel lanes when they waste less: pixel lanes compute opad x qpad
   * products for og x p wanted ones, channel lanes (16 at a time, 6 pixels
   * per tile) og x round_up(p, 6). */
  double pixel_lanes = (double)(dd->opad * dd->qpad), channel_lanes = (double)(d->og * ((d->p + 5) / 6 * 6));
  dd->by_channel = d->og % 16 == 0 && channel_lanes < pixel_lanes;
  if (dd->by_channel) {
    dd->mr = 16;
    dd->opad = d->og;
  }
  /* Beyond L2 (512 KiB on current x86 cores) the taps' loads miss and
   * OpenBLAS's packed panels win. */
  return d->cg >= 1 && dd->xlen * (int64_t)sizeof(float) <= 512 * 1024 && d->k <= 4096;
}

static bool cpu_has_avx2_fma(void) {
  static _Atomic int cached = -1; /* -1 unknown, else 0 or 1; racing writers agree */
  int v = cached;
  if (v < 0) {
    __builtin_cpu_init();
    v = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    cached = v;
  }
  return v == 1;
}

/* One worker's share of the batch of a direct convolution. The padded
 * image and the tile rows are the worker's own; the packed weights and the
 * tap offsets are shared and read-only. */
typedef struct {
  const float *x;
  const kk_view *bias;
  float *y;
  const conv_dims *d;
  const kk_conv2d_geom *g;
  const direct_dims *dd;
  const int64_t *off;
  const float *wpack;
  float *scratch; /* per worker: padded image [xlen], then tile rows [opad * qpad] */
  size_t scratch_per_worker;
  const int64_t *pix, *dst; /* by_channel: each output pixel's padded-image offset and index */
  const float *bias_all;    /* by_channel: the bias of every output channel, zeros without one */
} direct_job;

static void conv_direct_images(void *ctx, int64_t n_begin, int64_t n_end, int worker) {
  const direct_job *j = ctx;
  const conv_dims *d = j->d;
  const kk_conv2d_geom *g = j->g;
  const direct_dims *dd = j->dd;
  float *xpad = j->scratch + (size_t)worker * j->scratch_per_worker, *obuf = xpad + dd->xlen;
  int64_t mr = dd->mr;
  int64_t bstride = j->bias ? j->bias->strides[0] : 0;
  const float *bdata = j->bias ? (const float *)j->bias->data : NULL;
  memset(xpad, 0, (size_t)dd->xlen * sizeof(float));
  for (int64_t n = n_begin; n < n_end; n++)
    for (int64_t grp = 0; grp < g->groups; grp++) {
      /* The interior of the padded image; the border and slack stay zero. */
      const float *img = j->x + (n * d->c + grp * d->cg) * d->h * d->w;
      for (int64_t c = 0; c < d->cg; c++)
        for (int64_t r = 0; r < d->h; r++) {
          float *dst = xpad + c * dd->plane + (r + g->pad[0]) * dd->wp + g->pad[1];
          const float *src = img + (c * d->h + r) * d->w;
          for (int64_t q = 0; q < d->w; q++) dst[q] = src[q];
        }
      const float *wg = j->wpack + grp * dd->opad * d->k;
      if (dd->by_channel) {
        float *yg = j->y + (n * d->o + grp * d->og) * d->p;
        for (int64_t rb = 0; rb < d->og / 16; rb++)
          for (int64_t p0 = 0; p0 < d->p; p0 += 6)
            tile_oc16(xpad, j->pix + p0, j->dst + p0, (int)(d->p - p0 < 6 ? d->p - p0 : 6), j->off,
                      wg + rb * 16 * d->k, d->k, j->bias_all + grp * d->og + rb * 16, yg + rb * 16 * d->p, d->p);
        continue;
      }
      for (int64_t rb = 0; rb < dd->opad / mr; rb++)
        for (int64_t q0 = 0; q0 < dd->qpad; q0 += dd->nr)
          dd->tile(xpad + q0, j->off, wg + rb * mr * d->k, d->k, obuf + rb * mr * dd->qpad + q0, dd->qpad);
      for (int64_t oc = 0; oc < d->og; oc++) {
        float bv = bdata ? bdata[(grp * d->og + oc) * bstride] : 0.0f;
        float *dst = j->y + (n * d->o + grp * d->og + oc) * d->p;
        const float *src = obuf + oc * dd->qpad;
        for (int64_t oy = 0; oy < d->oh; oy++)
          for (int64_t ox = 0; ox < d->ow; ox++) dst[oy * d->ow + ox] = src[oy * dd->wp + ox] + bv;
      }
    }
}

static kiln_status conv_direct_f32(const float *x, const float *w, const kk_view *bias, float *y, const conv_dims *d,
                                   const kk_conv2d_geom *g, const direct_dims *dd) {
  /* Scratch: tap offsets [k], packed weights [groups][opad / mr][k][mr],
   * then per worker a padded image [xlen] and output tile rows [opad, qpad]. */
  int workers = kiln_parallel_workers();
  size_t per_worker = (size_t)(dd->xlen + dd->opad * dd->qpad);
  per_worker = (per_worker + 15) / 16 * 16; /* each worker's floats start 64-byte aligned */
  size_t wn = (size_t)(g->groups * dd->opad * d->k);
  wn = (wn + 15) / 16 * 16;
  size_t koff = (size_t)(d->k + 7) / 8 * 8; /* keeps the floats 64-byte aligned */
  size_t bytes = (wn + per_worker * (size_t)workers) * sizeof(float) + koff * sizeof(int64_t);
  /* The int64 offsets go first, where the allocation's alignment holds. */
  int64_t *off = kiln_alloc(bytes);
  if (!off)
    return kiln_errorf(KILN_ERR_OUT_OF_MEMORY, "conv2d: out of memory allocating %zu bytes of scratch", bytes);
  float *wpack = (float *)(off + koff), *scratch = wpack + wn;
  for (int64_t c = 0; c < d->cg; c++)
    for (int64_t i = 0; i < d->kh; i++)
      for (int64_t jj = 0; jj < d->kw; jj++)
        off[(c * d->kh + i) * d->kw + jj] = c * dd->plane + i * g->dilation[0] * dd->wp + jj * g->dilation[1];
  /* Weights as [block][k][mr] so a tile reads its rows' weights for one tap
   * as consecutive floats; rows past og are zero. */
  int64_t mr = dd->mr;
  for (int64_t grp = 0; grp < g->groups; grp++)
    for (int64_t rb = 0; rb < dd->opad / mr; rb++) {
      float *dst = wpack + (grp * dd->opad + rb * mr) * d->k;
      for (int64_t t = 0; t < d->k; t++)
        for (int64_t r = 0; r < mr; r++) {
          int64_t oc = rb * mr + r;
          dst[t * mr + r] = oc < d->og ? w[(grp * d->og + oc) * d->k + t] : 0.0f;
        }
    }
  direct_job job = {x, bias, y, d, g, dd, off, wpack, scratch, per_worker, NULL, NULL, NULL};
  int64_t *pix = NULL;
  if (dd->by_channel) {
    /* Pixel tables and a dense bias: [p] offsets, [p] indices, [o] floats. */
    pix = kiln_alloc((size_t)(2 * d->p) * sizeof(int64_t) + (size_t)d->o * sizeof(float));
    if (!pix) {
      kiln_free(off);
      return kiln_errorf(KILN_ERR_OUT_OF_MEMORY, "conv2d: out of memory allocating pixel tables");
    }
    int64_t *dst = pix + d->p;
    float *bias_all = (float *)(dst + d->p);
    for (int64_t oy = 0; oy < d->oh; oy++)
      for (int64_t ox = 0; ox < d->ow; ox++) {
        pix[oy * d->ow + ox] = oy * dd->wp + ox;
        dst[oy * d->ow + ox] = oy * d->ow + ox;
      }
    for (int64_t oc = 0; oc < d->o; oc++)
      bias_all[oc] = bias ? ((const float *)bias->data)[oc * bias->strides[0]] : 0.0f;
    job.pix = pix;
    job.dst = dst;
    job.bias_all = bias_all;
  }
  /* Images are independent and each writes its own outputs, so the split
   * changes no bits. A grain of a few images keeps tiny batches serial. */
  kiln_parallel_for(d->n, 4, conv_direct_images, &job);
  kiln_free(pix);
  kiln_free(off);
  return KILN_OK;
}
#endif

/* ------------------------------------------------------------ entry points */

kiln_status kk_conv2d(const kk_view *x, const kk_view *w, const kk_view *bias, const kk_view *y,
                      const kk_conv2d_geom *g) {
  conv_dims d = dims_of(x, w, y, g);
  if (d.n == 0 || d.o == 0 || d.p == 0) return KILN_OK;
  if (d.p > INT32_MAX || d.k > INT32_MAX || d.o > INT32_MAX)
    return kiln_errorf(KILN_ERR_UNSUPPORTED,
                       "conv2d: a GEMM dimension (pixels %lld, depth %lld, channels %lld) exceeds BLAS's int range",
                       (long long)d.p, (long long)d.k, (long long)d.o);
  const char *xd, *wd;
  void *xs, *ws;
  kiln_status st = kk_nn_contiguous(x, "conv2d", &xd, &xs);
  if (st != KILN_OK) return st;
  st = kk_nn_contiguous(w, "conv2d", &wd, &ws);
  if (st != KILN_OK) {
    kiln_free(xs);
    return st;
  }
#if CONV_HAVE_AVX2
  direct_dims dd;
  if (x->dtype == KILN_F32 && !(kk_options() & KK_OPT_NO_SIMD) && direct_fits(&d, g, &dd) && cpu_has_avx2_fma())
    st = conv_direct_f32((const float *)xd, (const float *)wd, bias, (float *)y->data, &d, g, &dd);
  else
#endif
      if (x->dtype == KILN_F32)
    st = conv_f32((const float *)xd, (const float *)wd, bias, (float *)y->data, &d, g);
  else
    st = conv_f64((const double *)xd, (const double *)wd, bias, (double *)y->data, &d, g);
  kiln_free(xs);
  kiln_free(ws);
  return st;
}

static double at4(const kk_view *v, int64_t a, int64_t b, int64_t c, int64_t e) {
  int64_t off = a * v->strides[0] + b * v->strides[1] + c * v->strides[2] + e * v->strides[3];
  return kk_get_f64(v->dtype, v->data + off * (int64_t)kiln_dtype_size(v->dtype));
}

kiln_status kk_conv2d_ref(const kk_view *x, const kk_view *w, const kk_view *bias, const kk_view *y,
                          const kk_conv2d_geom *g) {
  int64_t N = x->shape[0], H = x->shape[2], W = x->shape[3];
  int64_t O = w->shape[0], CG = w->shape[1], KH = w->shape[2], KW = w->shape[3];
  int64_t OH = y->shape[2], OW = y->shape[3], OG = O / g->groups;
  size_t es = kiln_dtype_size(y->dtype);
  for (int64_t n = 0; n < N; n++)
    for (int64_t o = 0; o < O; o++) {
      int64_t grp = o / OG;
      for (int64_t oy = 0; oy < OH; oy++)
        for (int64_t ox = 0; ox < OW; ox++) {
          double acc = bias ? kk_get_f64(bias->dtype, bias->data + o * bias->strides[0] * (int64_t)es) : 0.0;
          for (int64_t c = 0; c < CG; c++)
            for (int64_t i = 0; i < KH; i++)
              for (int64_t j = 0; j < KW; j++) {
                int64_t iy = oy * g->stride[0] - g->pad[0] + i * g->dilation[0];
                int64_t ix = ox * g->stride[1] - g->pad[1] + j * g->dilation[1];
                if (iy < 0 || iy >= H || ix < 0 || ix >= W) continue; /* zero padding */
                acc += at4(x, n, grp * CG + c, iy, ix) * at4(w, o, c, i, j);
              }
          int64_t off = n * y->strides[0] + o * y->strides[1] + oy * y->strides[2] + ox * y->strides[3];
          kk_set_f64(y->dtype, y->data + off * (int64_t)es, acc);
        }
    }
  return KILN_OK;
}

/* ------------------------------------------------------------ gradients
 *
 * Both gradients reuse the forward's lowering. For image n and group grp,
 * with col the [K, P] im2col of the image's group and gy_g its [og, P]
 * output gradient:
 *   the data gradient is col2im(w_g^T [K, og] . gy_g), the transposed
 *   lowering scattered (added) back onto the image;
 *   the weight gradient is the sum over images of gy_g . col^T [og, K].
 * Images are split over the parallel pool. The data gradient writes
 * disjoint images, so its bits do not depend on the split; the weight
 * gradient sums a partial [O, K] per worker, added in worker order, so its
 * bits depend only on the worker count. A band of output rows at a time
 * bounds each worker's col (see band_rows). */

/* Output rows per band: the col of a band stays within BLOCK_ELEMS. */
static int64_t band_rows(const conv_dims *d) {
  int64_t per_row = d->k * d->ow;
  int64_t rows = per_row > 0 ? (int64_t)BLOCK_ELEMS / per_row : d->oh;
  if (rows < 1) rows = 1;
  if (rows > d->oh) rows = d->oh;
  return rows;
}

typedef struct {
  const void *gy;    /* [N, O, OH, OW], contiguous */
  const void *other; /* w (data gradient) or x (weight gradient), contiguous */
  void *out;         /* gx [N, C, H, W] (data), or the partials [workers][O, K] (weight) */
  const conv_dims *d;
  const kk_conv2d_geom *g;
  int64_t rows;
  size_t per_worker; /* elements of scratch per worker */
  void *scratch;
} conv_grad_job;

/* The adjoint of im2col: adds col rows r = (c, kh, kw) of output rows
 * [oy0, oy1) back onto img [cg, H, W]. */
#define DEFINE_COL2IM(T, SUF)                                                                                   \
  static void col2im_##SUF(const T *col, const conv_dims *d, const kk_conv2d_geom *g, T *img, int64_t ld,       \
                           int64_t oy0, int64_t oy1) {                                                          \
    int64_t sh = g->stride[0], sw = g->stride[1];                                                               \
    for (int64_t c = 0; c < d->cg; c++)                                                                         \
      for (int64_t ki = 0; ki < d->kh; ki++)                                                                    \
        for (int64_t kj = 0; kj < d->kw; kj++) {                                                                \
          const T *row = col + ((c * d->kh + ki) * d->kw + kj) * ld;                                            \
          int64_t hoff = ki * g->dilation[0], woff = kj * g->dilation[1];                                       \
          int64_t ylo, yhi, xlo, xhi;                                                                           \
          valid_range(d->oh, sh, g->pad[0], hoff, d->h, &ylo, &yhi);                                            \
          valid_range(d->ow, sw, g->pad[1], woff, d->w, &xlo, &xhi);                                            \
          int64_t ya = ylo < oy0 ? oy0 : ylo > oy1 ? oy1 : ylo;                                                 \
          int64_t yb = yhi < ya ? ya : yhi > oy1 ? oy1 : yhi;                                                   \
          int64_t xoff = woff - g->pad[1];                                                                      \
          for (int64_t oy = ya; oy < yb; oy++) {                                                                \
            T *dst = img + (c * d->h + oy * sh - g->pad[0] + hoff) * d->w;                                      \
            const T *src = row + (oy - oy0) * d->ow;                                                            \
            if (sw == 1)                                                                                        \
              for (int64_t ox = xlo; ox < xhi; ox++) dst[ox + xoff] += src[ox];                                 \
            else                                                                                                \
              for (int64_t ox = xlo; ox < xhi; ox++) dst[ox * sw + xoff] += src[ox];                            \
          }                                                                                                     \
        }                                                                                                       \
  }

DEFINE_COL2IM(float, f32)
DEFINE_COL2IM(double, f64)

static void gemmt_f32(enum CBLAS_TRANSPOSE ta, enum CBLAS_TRANSPOSE tb, int64_t m, int64_t n, int64_t k,
                      const float *a, int64_t lda, const float *b, int64_t ldb, float beta, float *c, int64_t ldc) {
  cblas_sgemm(CblasRowMajor, ta, tb, (blasint)m, (blasint)n, (blasint)k, 1.0f, a, (blasint)lda, b, (blasint)ldb, beta,
              c, (blasint)ldc);
}

static void gemmt_f64(enum CBLAS_TRANSPOSE ta, enum CBLAS_TRANSPOSE tb, int64_t m, int64_t n, int64_t k,
                      const double *a, int64_t lda, const double *b, int64_t ldb, double beta, double *c,
                      int64_t ldc) {
  cblas_dgemm(CblasRowMajor, ta, tb, (blasint)m, (blasint)n, (blasint)k, 1.0, a, (blasint)lda, b, (blasint)ldb, beta,
              c, (blasint)ldc);
}

/* Images [b, e) of the data gradient: for each group and band of output
 * rows, col = w_g^T . gy_g[:, band], then col2im onto the zeroed image. */
#define DEFINE_CONV_GRAD(T, SUF)                                                                                \
  static void bwd_data_##SUF(void *ctx, int64_t b, int64_t e, int worker) {                                     \
    const conv_grad_job *j = ctx;                                                                               \
    const conv_dims *d = j->d;                                                                                  \
    const T *gy = j->gy, *w = j->other;                                                                         \
    T *gx = j->out, *col = (T *)j->scratch + (size_t)worker * j->per_worker;                                   \
    for (int64_t n = b; n < e; n++)                                                                             \
      for (int64_t grp = 0; grp < j->g->groups; grp++) {                                                        \
        T *img = gx + (n * d->c + grp * d->cg) * d->h * d->w;                                                   \
        memset(img, 0, sizeof(T) * (size_t)(d->cg * d->h * d->w));                                              \
        const T *gyg = gy + (n * d->o + grp * d->og) * d->p, *wg = w + grp * d->og * d->k;                     \
        for (int64_t oy0 = 0; oy0 < d->oh; oy0 += j->rows) {                                                    \
          int64_t oy1 = oy0 + j->rows < d->oh ? oy0 + j->rows : d->oh, cols = (oy1 - oy0) * d->ow;             \
          gemmt_##SUF(CblasTrans, CblasNoTrans, d->k, cols, d->og, wg, d->k, gyg + oy0 * d->ow, d->p, 0, col,   \
                      cols);                                                                                    \
          col2im_##SUF(col, d, j->g, img, cols, oy0, oy1);                                                      \
        }                                                                                                       \
      }                                                                                                         \
  }                                                                                                             \
  /* Images [b, e) of the weight gradient, added into this worker's [O, K]                                     \
   * partial (zeroed by the caller): partial_g += gy_g[:, band] . col^T. */                                    \
  static void bwd_weight_##SUF(void *ctx, int64_t b, int64_t e, int worker) {                                   \
    const conv_grad_job *j = ctx;                                                                               \
    const conv_dims *d = j->d;                                                                                  \
    const T *gy = j->gy, *x = j->other;                                                                         \
    T *part = (T *)j->out + (size_t)worker * (size_t)(d->o * d->k);                                            \
    T *col = (T *)j->scratch + (size_t)worker * j->per_worker;                                                 \
    for (int64_t n = b; n < e; n++)                                                                             \
      for (int64_t grp = 0; grp < j->g->groups; grp++) {                                                        \
        const T *img = x + (n * d->c + grp * d->cg) * d->h * d->w;                                              \
        const T *gyg = gy + (n * d->o + grp * d->og) * d->p;                                                    \
        for (int64_t oy0 = 0; oy0 < d->oh; oy0 += j->rows) {                                                    \
          int64_t oy1 = oy0 + j->rows < d->oh ? oy0 + j->rows : d->oh, cols = (oy1 - oy0) * d->ow;             \
          im2col_##SUF(img, d, j->g, col, cols, oy0, oy1);                                                      \
          gemmt_##SUF(CblasNoTrans, CblasTrans, d->og, d->k, cols, gyg + oy0 * d->ow, d->p, col, cols, 1,       \
                      part + grp * d->og * d->k, d->k);                                                         \
        }                                                                                                       \
      }                                                                                                         \
  }

DEFINE_CONV_GRAD(float, f32)
DEFINE_CONV_GRAD(double, f64)

static kiln_status gemm_dims_fit(const conv_dims *d, const char *who) {
  if (d->p > INT32_MAX || d->k > INT32_MAX || d->o > INT32_MAX)
    return kiln_errorf(KILN_ERR_UNSUPPORTED,
                       "%s: a GEMM dimension (pixels %lld, depth %lld, channels %lld) exceeds BLAS's int range", who,
                       (long long)d->p, (long long)d->k, (long long)d->o);
  return KILN_OK;
}

kiln_status kk_conv2d_backward_data(const kk_view *gy, const kk_view *w, const kk_view *gx, const kk_conv2d_geom *g) {
  static const char who[] = "conv2d_backward_data";
  conv_dims d = dims_of(gx, w, gy, g);
  size_t es = kiln_dtype_size(gx->dtype);
  if (kk_numel(gx) == 0) return KILN_OK;
  if (d.o == 0 || d.p == 0 || d.k == 0) {
    memset(gx->data, 0, (size_t)kk_numel(gx) * es);
    return KILN_OK;
  }
  kiln_status st = gemm_dims_fit(&d, who);
  if (st != KILN_OK) return st;
  int64_t workers = kiln_parallel_workers();
  conv_grad_job j = {.d = &d, .g = g, .rows = band_rows(&d), .out = gx->data};
  j.per_worker = (size_t)(d.k * j.rows * d.ow);
  size_t bytes = j.per_worker * (size_t)workers * es;
  const char *gyd, *wd;
  void *gys, *ws;
  if ((st = kk_nn_contiguous(gy, who, &gyd, &gys)) != KILN_OK) return st;
  if ((st = kk_nn_contiguous(w, who, &wd, &ws)) != KILN_OK) {
    kiln_free(gys);
    return st;
  }
  j.gy = gyd;
  j.other = wd;
  j.scratch = kiln_alloc(bytes);
  if (!j.scratch) {
    st = kiln_errorf(KILN_ERR_OUT_OF_MEMORY, "%s: out of memory allocating %zu bytes of col2im scratch", who, bytes);
  } else {
    kiln_parallel_for(d.n, 1, gx->dtype == KILN_F32 ? bwd_data_f32 : bwd_data_f64, &j);
  }
  kiln_free(j.scratch);
  kiln_free(gys);
  kiln_free(ws);
  return st;
}

kiln_status kk_conv2d_backward_weight(const kk_view *gy, const kk_view *x, const kk_view *gw,
                                      const kk_conv2d_geom *g) {
  static const char who[] = "conv2d_backward_weight";
  conv_dims d = dims_of(x, gw, gy, g);
  size_t es = kiln_dtype_size(gw->dtype);
  size_t n_out = (size_t)kk_numel(gw);
  if (n_out == 0) return KILN_OK;
  if (d.n == 0 || d.p == 0) {
    memset(gw->data, 0, n_out * es);
    return KILN_OK;
  }
  kiln_status st = gemm_dims_fit(&d, who);
  if (st != KILN_OK) return st;
  int nw = kiln_parallel_workers();
  conv_grad_job j = {.d = &d, .g = g, .rows = band_rows(&d)};
  j.per_worker = (size_t)(d.k * j.rows * d.ow);
  /* The partials first, then each worker's col. */
  size_t part_elems = n_out * (size_t)nw;
  size_t bytes = (part_elems + j.per_worker * (size_t)nw) * es;
  const char *gyd, *xd;
  void *gys, *xs;
  if ((st = kk_nn_contiguous(gy, who, &gyd, &gys)) != KILN_OK) return st;
  if ((st = kk_nn_contiguous(x, who, &xd, &xs)) != KILN_OK) {
    kiln_free(gys);
    return st;
  }
  j.gy = gyd;
  j.other = xd;
  char *buf = kiln_alloc(bytes);
  if (!buf) {
    st = kiln_errorf(KILN_ERR_OUT_OF_MEMORY, "%s: out of memory allocating %zu bytes of im2col scratch", who, bytes);
  } else {
    memset(buf, 0, part_elems * es);
    j.out = buf;
    j.scratch = buf + part_elems * es;
    if (gw->dtype == KILN_F32) {
      kiln_parallel_for(d.n, 1, bwd_weight_f32, &j);
      float *dst = (float *)gw->data;
      const float *p = (const float *)buf;
      memcpy(dst, p, n_out * es);
      for (int wk = 1; wk < nw; wk++)
        for (size_t i = 0; i < n_out; i++) dst[i] += p[(size_t)wk * n_out + i];
    } else {
      kiln_parallel_for(d.n, 1, bwd_weight_f64, &j);
      double *dst = (double *)gw->data;
      const double *p = (const double *)buf;
      memcpy(dst, p, n_out * es);
      for (int wk = 1; wk < nw; wk++)
        for (size_t i = 0; i < n_out; i++) dst[i] += p[(size_t)wk * n_out + i];
    }
  }
  kiln_free(buf);
  kiln_free(gys);
  kiln_free(xs);
  return st;
}

/* gx[n, c, iy, ix] = sum over the taps (o, i, j) of c's group whose output
 * position (oy, ox) reads (iy, ix): iy = oy * sh - ph + i * dh. */
kiln_status kk_conv2d_backward_data_ref(const kk_view *gy, const kk_view *w, const kk_view *gx,
                                        const kk_conv2d_geom *g) {
  int64_t N = gx->shape[0], C = gx->shape[1], H = gx->shape[2], W = gx->shape[3];
  int64_t O = w->shape[0], CG = w->shape[1], KH = w->shape[2], KW = w->shape[3];
  int64_t OH = gy->shape[2], OW = gy->shape[3], OG = O / g->groups;
  size_t es = kiln_dtype_size(gx->dtype);
  for (int64_t n = 0; n < N; n++)
    for (int64_t c = 0; c < C; c++) {
      int64_t grp = c / CG, cc = c % CG;
      for (int64_t iy = 0; iy < H; iy++)
        for (int64_t ix = 0; ix < W; ix++) {
          double acc = 0;
          for (int64_t o = grp * OG; o < (grp + 1) * OG; o++)
            for (int64_t i = 0; i < KH; i++)
              for (int64_t jj = 0; jj < KW; jj++) {
                int64_t ty = iy + g->pad[0] - i * g->dilation[0];
                int64_t tx = ix + g->pad[1] - jj * g->dilation[1];
                if (ty < 0 || tx < 0 || ty % g->stride[0] != 0 || tx % g->stride[1] != 0) continue;
                int64_t oy = ty / g->stride[0], ox = tx / g->stride[1];
                if (oy >= OH || ox >= OW) continue;
                acc += at4(gy, n, o, oy, ox) * at4(w, o, cc, i, jj);
              }
          int64_t off = n * gx->strides[0] + c * gx->strides[1] + iy * gx->strides[2] + ix * gx->strides[3];
          kk_set_f64(gx->dtype, gx->data + off * (int64_t)es, acc);
        }
    }
  return KILN_OK;
}

/* gw[o, c, i, j] = sum over n, oy, ox of gy[n, o, oy, ox] times the input
 * that tap (c, i, j) reads there (zero in the padding). */
kiln_status kk_conv2d_backward_weight_ref(const kk_view *gy, const kk_view *x, const kk_view *gw,
                                          const kk_conv2d_geom *g) {
  int64_t N = x->shape[0], H = x->shape[2], W = x->shape[3];
  int64_t O = gw->shape[0], CG = gw->shape[1], KH = gw->shape[2], KW = gw->shape[3];
  int64_t OH = gy->shape[2], OW = gy->shape[3], OG = O / g->groups;
  size_t es = kiln_dtype_size(gw->dtype);
  for (int64_t o = 0; o < O; o++) {
    int64_t grp = o / OG;
    for (int64_t c = 0; c < CG; c++)
      for (int64_t i = 0; i < KH; i++)
        for (int64_t jj = 0; jj < KW; jj++) {
          double acc = 0;
          for (int64_t n = 0; n < N; n++)
            for (int64_t oy = 0; oy < OH; oy++)
              for (int64_t ox = 0; ox < OW; ox++) {
                int64_t iy = oy * g->stride[0] - g->pad[0] + i * g->dilation[0];
                int64_t ix = ox * g->stride[1] - g->pad[1] + jj * g->dilation[1];
                if (iy < 0 || iy >= H || ix < 0 || ix >= W) continue;
                acc += at4(gy, n, o, oy, ox) * at4(x, n, grp * CG + c, iy, ix);
              }
          int64_t off = o * gw->strides[0] + c * gw->strides[1] + i * gw->strides[2] + jj * gw->strides[3];
          kk_set_f64(gw->dtype, gw->data + off * (int64_t)es, acc);
        }
  }
  return KILN_OK;
}
