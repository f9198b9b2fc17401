#include "kernels/gemm.h"

#include <cblas.h>
#include <string.h>

#include "kernels/elementwise.h"

/* Skinny products in plain loops. Measured on this machine (bench_gemm):
 * OpenBLAS's threaded sgemm takes ~120 us for (1x512).(512x256) and its
 * threaded sgemv ~55 us, while one thread streaming the 512 KiB of B takes
 * ~15 us: for these sizes the threads cost more than the work. The loops
 * keep eight independent partial sums per output, a fixed order, so results
 * are reproducible and the compiler vectorises them without -ffast-math. */
#define SKINNY_KERNELS(T, SUFFIX)                                                                        \
  /* y[n] = sum_k x[k] * B[k, n] (B row-major, rows ld apart). */                                       \
  KK_MULTIVERSION static void axpy_rows_##SUFFIX(int64_t n, int64_t k, const T *x, int64_t incx, const T *b, int64_t ld, \
                                 T *y, int64_t incy, double beta) {                                      \
    for (int64_t j = 0; j < n; j++) y[j * incy] = beta == 0 ? (T)0 : (T)(beta * y[j * incy]);          \
    if (incy == 1) {                                                                                     \
      for (int64_t kk = 0; kk < k; kk++) {                                                               \
        const T xv = x[kk * incx], *row = b + kk * ld;                                                   \
        for (int64_t j = 0; j < n; j++) y[j] += xv * row[j];                                             \
      }                                                                                                  \
      return;                                                                                            \
    }                                                                                                    \
    for (int64_t kk = 0; kk < k; kk++)                                                                   \
      for (int64_t j = 0; j < n; j++) y[j * incy] += x[kk * incx] * b[kk * ld + j];                      \
  }                                                                                                      \
  /* y[n] = sum_k x[k] * B[n, k] (rows of B are dot products with x). */                                \
  KK_MULTIVERSION static void dot_rows_##SUFFIX(int64_t n, int64_t k, const T *x, int64_t incx, const T *b, int64_t ld,  \
                                T *y, int64_t incy, double beta) {                                       \
    for (int64_t j = 0; j < n; j++) {                                                                    \
      const T *row = b + j * ld;                                                                         \
      T part[8] = {0};                                                                                   \
      int64_t kk = 0;                                                                                    \
      if (incx == 1)                                                                                     \
        for (; kk + 8 <= k; kk += 8)                                                                     \
          for (int l = 0; l < 8; l++) part[l] += x[kk + l] * row[kk + l];                                \
      T acc = ((part[0] + part[1]) + (part[2] + part[3])) + ((part[4] + part[5]) + (part[6] + part[7])); \
      for (; kk < k; kk++) acc += x[kk * incx] * row[kk];                                                \
      y[j * incy] = beta == 0 ? acc : (T)(acc + beta * y[j * incy]);                                     \
    }                                                                                                    \
  }

SKINNY_KERNELS(float, f32)
SKINNY_KERNELS(double, f64)

/* The skinny routes: a row vector times a matrix, or a matrix times a column. */
static bool gemm_skinny(kiln_dtype dt, bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, const void *a,
                        int64_t lda, const void *b, int64_t ldb, double beta, void *c, int64_t ldc) {
  if (m == 1) {
    /* c[1,N] = a[1,K] . op(B); a's elements are lda apart when transposed. */
    int64_t incx = trans_a ? lda : 1;
    if (dt == KILN_F32)
      (trans_b ? dot_rows_f32 : axpy_rows_f32)(n, k, a, incx, b, ldb, c, 1, beta);
    else
      (trans_b ? dot_rows_f64 : axpy_rows_f64)(n, k, a, incx, b, ldb, c, 1, beta);
    return true;
  }
  if (n == 1) {
    /* c[M,1] = op(A) . b[K,1]: the same with A in B's place. */
    int64_t incx = trans_b ? 1 : ldb;
    if (dt == KILN_F32)
      (trans_a ? axpy_rows_f32 : dot_rows_f32)(m, k, b, incx, a, lda, c, ldc, beta);
    else
      (trans_a ? axpy_rows_f64 : dot_rows_f64)(m, k, b, incx, a, lda, c, ldc, beta);
    return true;
  }
  return false;
}

void kk_gemm(kiln_dtype dt, bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, const void *a, int64_t lda,
             const void *b, int64_t ldb, double beta, void *c, int64_t ldc) {
  if (m == 0 || n == 0) return;
  if (gemm_skinny(dt, trans_a, trans_b, m, n, k, a, lda, b, ldb, beta, c, ldc)) return;
  if (k == 0) {
    /* BLAS leaves C alone for k == 0 only when beta == 1; do it explicitly. */
    size_t es = kiln_dtype_size(dt);
    for (int64_t i = 0; i < m; i++)
      for (int64_t j = 0; j < n; j++) {
        char *p = (char *)c + (i * ldc + j) * (int64_t)es;
        kk_set_f64(dt, p, beta == 0 ? 0 : beta * kk_get_f64(dt, p));
      }
    return;
  }
  CBLAS_TRANSPOSE ta = trans_a ? CblasTrans : CblasNoTrans, tb = trans_b ? CblasTrans : CblasNoTrans;
  if (dt == KILN_F32)
    cblas_sgemm(CblasRowMajor, ta, tb, (int)m, (int)n, (int)k, 1.0f, a, (int)lda, b, (int)ldb, (float)beta, c,
                (int)ldc);
  else
    cblas_dgemm(CblasRowMajor, ta, tb, (int)m, (int)n, (int)k, 1.0, a, (int)lda, b, (int)ldb, beta, c, (int)ldc);
}

/* A matrix operand: the last two dims of a view as BLAS sees them. A layout
 * BLAS cannot take (neither dim unit-stride) is copied to scratch. */
typedef struct {
  bool trans;
  int64_t ld;
} blas_layout;

static bool blas_layout_of(const kk_view *v, blas_layout *l) {
  int nd = v->ndim;
  int64_t rows = v->shape[nd - 2], cols = v->shape[nd - 1], rs = v->strides[nd - 2], cs = v->strides[nd - 1];
  /* A single row or column may have any stride along its length-1 dim;
   * BLAS still wants a leading dimension of at least the other extent. */
  int64_t min_ld_rows = cols > 1 ? cols : 1, min_ld_cols = rows > 1 ? rows : 1;
  if ((cs == 1 || cols <= 1) && (rows <= 1 || rs >= min_ld_rows)) {
    *l = (blas_layout){false, rows <= 1 ? min_ld_rows : rs};
    return true;
  }
  if ((rs == 1 || rows <= 1) && (cols <= 1 || cs >= min_ld_cols)) {
    *l = (blas_layout){true, cols <= 1 ? min_ld_cols : cs};
    return true;
  }
  return false;
}

/* A contiguous copy in scratch when BLAS cannot take the layout. */
static kiln_status blas_ready(const kk_view *v, kk_view *ready, blas_layout *l, void **scratch) {
  *ready = *v;
  *scratch = NULL;
  if (blas_layout_of(v, l)) return KILN_OK;
  size_t bytes = (size_t)kk_numel(v) * kiln_dtype_size(v->dtype);
  *scratch = kiln_alloc(bytes);
  if (!*scratch) return kiln_errorf(KILN_ERR_OUT_OF_MEMORY, "matmul: out of memory copying an operand");
  ready->data = *scratch;
  int64_t s = 1;
  for (int d = v->ndim - 1; d >= 0; d--) ready->strides[d] = s, s *= v->shape[d];
  kk_copy(v, ready);
  blas_layout_of(ready, l);
  return KILN_OK;
}

kiln_status kk_matmul(const kk_view *a, const kk_view *b, const kk_view *out) {
  int nd = out->ndim;
  int64_t m = out->shape[nd - 2], n = out->shape[nd - 1], k = a->shape[a->ndim - 1];
  kk_view av = kk_broadcast_view(a, out), bv = kk_broadcast_view(b, out);
  /* broadcast_view sized the matrix dims like out's; restore the operands'. */
  av.shape[nd - 1] = k;
  av.strides[nd - 1] = a->strides[a->ndim - 1];
  av.shape[nd - 2] = m;
  av.strides[nd - 2] = a->strides[a->ndim - 2];
  bv.shape[nd - 2] = k;
  bv.strides[nd - 2] = b->strides[b->ndim - 2];
  bv.shape[nd - 1] = n;
  bv.strides[nd - 1] = b->strides[b->ndim - 1];
  kk_view ar, br;
  blas_layout la, lb;
  void *sa, *sb;
  kiln_status st = blas_ready(&av, &ar, &la, &sa);
  if (st == KILN_OK) st = blas_ready(&bv, &br, &lb, &sb);
  if (st != KILN_OK) {
    kiln_free(sa);
    return st;
  }
  size_t es = kiln_dtype_size(out->dtype);
  int64_t batch = 1;
  for (int d = 0; d < nd - 2; d++) batch *= out->shape[d];
  bool b_shared = true;
  for (int d = 0; d < nd - 2; d++) b_shared = b_shared && (br.strides[d] == 0 || out->shape[d] == 1);
  /* A's rows run on across batches when its batch strides are those of a
   * contiguous [batch..., M, K] array. */
  bool a_rows_fold = !la.trans && la.ld == k;
  int64_t want = m * k;
  for (int d = nd - 3; d >= 0 && a_rows_fold; d--) {
    a_rows_fold = out->shape[d] == 1 || ar.strides[d] == want;
    want *= out->shape[d];
  }
  if (batch > 1 && b_shared && a_rows_fold) {
    /* Every batch multiplies the same B and A's rows are contiguous across
     * batches: one GEMM of (batch * M) rows instead of batch small ones. */
    kk_gemm(out->dtype, false, lb.trans, batch * m, n, k, ar.data, k, br.data, lb.ld, 0, out->data, n);
  } else {
    int64_t idx[KILN_MAX_DIMS] = {0};
    for (int64_t bi = 0; bi < batch; bi++) {
      int64_t off_a = 0, off_b = 0;
      for (int d = 0; d < nd - 2; d++) off_a += idx[d] * ar.strides[d], off_b += idx[d] * br.strides[d];
      kk_gemm(out->dtype, la.trans, lb.trans, m, n, k, ar.data + off_a * (int64_t)es, la.ld,
              br.data + off_b * (int64_t)es, lb.ld, 0, out->data + bi * m * n * (int64_t)es, n);
      for (int d = nd - 3; d >= 0; d--) {
        if (++idx[d] < out->shape[d]) break;
        idx[d] = 0;
      }
    }
  }
  kiln_free(sa);
  kiln_free(sb);
  return KILN_OK;
}

/* ------------------------------------------------------------------ reference */

enum { REF_BLOCK = 48 };

/* C = A . B by cache blocks, accumulating in double; element access through
 * strides, so it shares nothing with the BLAS path. */
static kiln_status ref_gemm(const kk_view *a, int64_t a_off, const kk_view *b, int64_t b_off, int64_t m, int64_t n,
                            int64_t k, double *acc) {
  int nd = a->ndim;
  int64_t ars = a->strides[nd - 2], acs = a->strides[nd - 1], brs = b->strides[b->ndim - 2],
          bcs = b->strides[b->ndim - 1];
  size_t es = kiln_dtype_size(a->dtype);
  memset(acc, 0, (size_t)(m * n) * sizeof(double));
  for (int64_t i0 = 0; i0 < m; i0 += REF_BLOCK)
    for (int64_t k0 = 0; k0 < k; k0 += REF_BLOCK)
      for (int64_t j0 = 0; j0 < n; j0 += REF_BLOCK)
        for (int64_t i = i0; i < i0 + REF_BLOCK && i < m; i++)
          for (int64_t kk = k0; kk < k0 + REF_BLOCK && kk < k; kk++) {
            double av = kk_get_f64(a->dtype, a->data + (a_off + i * ars + kk * acs) * (int64_t)es);
            for (int64_t j = j0; j < j0 + REF_BLOCK && j < n; j++)
              acc[i * n + j] += av * kk_get_f64(b->dtype, b->data + (b_off + kk * brs + j * bcs) * (int64_t)es);
          }
  return KILN_OK;
}

kiln_status kk_matmul_ref(const kk_view *a, const kk_view *b, const kk_view *out) {
  int nd = out->ndim;
  int64_t m = out->shape[nd - 2], n = out->shape[nd - 1], k = a->shape[a->ndim - 1];
  double *acc = kiln_alloc((size_t)(m * n) * sizeof(double));
  if (!acc) return kiln_errorf(KILN_ERR_OUT_OF_MEMORY, "matmul: out of memory");
  int64_t batch = 1;
  for (int d = 0; d < nd - 2; d++) batch *= out->shape[d];
  size_t es = kiln_dtype_size(out->dtype);
  for (int64_t bi = 0; bi < batch; bi++) {
    /* Broadcast batch coordinates: a dim of size 1 (or missing) reads 0. */
    int64_t rem = bi, off_a = 0, off_b = 0;
    for (int d = nd - 3; d >= 0; d--) {
      int64_t coord = rem % out->shape[d];
      rem /= out->shape[d];
      int da = d - (nd - a->ndim), db = d - (nd - b->ndim);
      if (da >= 0 && a->shape[da] != 1) off_a += coord * a->strides[da];
      if (db >= 0 && b->shape[db] != 1) off_b += coord * b->strides[db];
    }
    ref_gemm(a, off_a, b, off_b, m, n, k, acc);
    for (int64_t i = 0; i < m * n; i++) kk_set_f64(out->dtype, out->data + (bi * m * n + i) * (int64_t)es, acc[i]);
  }
  kiln_free(acc);
  return KILN_OK;
}

/* ------------------------------------------------------------------ linear */

kiln_status kk_linear(const kk_view *x, const kk_view *w, const kk_view *bias, const kk_view *out) {
  int64_t in = w->shape[1], o = w->shape[0], m = 1;
  for (int d = 0; d < x->ndim - 1; d++) m *= x->shape[d];
  if (m == 0 || o == 0) return KILN_OK;
  size_t es = kiln_dtype_size(out->dtype);
  /* x as a [M, I] matrix; copied when its rows are not evenly strided. */
  kk_view x2 = {.data = x->data, .dtype = x->dtype, .ndim = 2, .shape = {m, in}, .strides = {in, 1}};
  void *sx = NULL;
  if (!kk_is_contiguous(x)) {
    sx = kiln_alloc((size_t)(m * in) * es);
    if (!sx) return kiln_errorf(KILN_ERR_OUT_OF_MEMORY, "linear: out of memory copying the input");
    kk_view dst = *x;
    dst.data = sx;
    int64_t s = 1;
    for (int d = dst.ndim - 1; d >= 0; d--) dst.strides[d] = s, s *= dst.shape[d];
    kk_copy(x, &dst);
    x2.data = sx;
  }
  kk_view wr;
  blas_layout lw;
  void *sw;
  kiln_status st = blas_ready(w, &wr, &lw, &sw);
  if (st != KILN_OK) {
    kiln_free(sx);
    return st;
  }
  double beta = 0;
  if (bias) {
    /* Start from the bias in every row and let BLAS accumulate onto it. */
    kk_view row = {.data = out->data, .dtype = out->dtype, .ndim = 2, .shape = {m, o}, .strides = {o, 1}};
    kk_view bb = {.data = bias->data, .dtype = bias->dtype, .ndim = 2, .shape = {1, o}, .strides = {0, bias->strides[0]}};
    kk_copy(&bb, &row);
    beta = 1;
  }
  /* out = x . w^T: w is [O, I], used transposed unless its view already is. */
  kk_gemm(out->dtype, false, !lw.trans, m, o, in, x2.data, in, wr.data, lw.ld, beta, out->data, o);
  kiln_free(sx);
  kiln_free(sw);
  return KILN_OK;
}

kiln_status kk_linear_ref(const kk_view *x, const kk_view *w, const kk_view *bias, const kk_view *out) {
  int64_t in = w->shape[1], o = w->shape[0];
  int64_t m = o ? kk_numel(out) / o : 0;
  for (int64_t r = 0; r < m; r++)
    for (int64_t j = 0; j < o; j++) {
      double acc = bias ? kk_get_f64(bias->dtype, kk_element(bias, j)) : 0;
      for (int64_t i = 0; i < in; i++)
        acc += kk_get_f64(x->dtype, kk_element(x, r * in + i)) *
               kk_get_f64(w->dtype, w->data + (j * w->strides[0] + i * w->strides[1]) * (int64_t)kiln_dtype_size(w->dtype));
      kk_set_f64(out->dtype, kk_element(out, r * o + j), acc);
    }
  return KILN_OK;
}
