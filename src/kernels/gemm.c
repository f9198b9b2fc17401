#include "kernels/gemm.h"

#include <cblas.h>
#include <string.h>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__)) && !defined(KILN_NO_MULTIVERSION)
#include <immintrin.h>
#define GEMM_HAVE_AVX2 1
#else
#define GEMM_HAVE_AVX2 0
#endif

#include "base/parallel.h"
#include "kernels/elementwise.h"

/* One budget of threads: kiln's pool (base/parallel.c) runs every parallel
 * loop, GEMM included, and OpenBLAS runs single-threaded inside it. Two
 * pools on two cores fight: OpenBLAS's threads spin after each call, and a
 * LeNet convolution on kiln's pool ran 1.85 ms beside them against 1.05 ms
 * without (bench_conv). Set at load time, before any BLAS call, so the
 * threads OpenBLAS starts go to sleep after their start-up spin and stay
 * asleep. A program that calls OpenBLAS itself may raise the count again. */
__attribute__((constructor)) static void blas_single_threaded(void) { openblas_set_num_threads(1); }

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

#if GEMM_HAVE_AVX2
/* The batch-1 Dense layer: y[j] = x . B[j, :] for float32 with x contiguous.
 * The loop above runs one row at a time on one 8-wide chain, so each FMA
 * waits for the last (measured: 6.5 GFLOP/s on d2l 13.1's MLP, a fifth of
 * what streaming B from L2 allows). Here four rows share each load of x
 * and each row keeps two chains, eight in flight. A row's sum has one fixed
 * order whatever rows it is grouped with, so results do not depend on how
 * the outputs are split across threads. */
__attribute__((target("avx2,fma"))) static inline float hsum8(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

__attribute__((target("avx2,fma"))) static void dot_rows_f32_avx2(int64_t n, int64_t k, const float *x, const float *b,
                                                                   int64_t ld, float *y, int64_t incy, double beta) {
  int64_t k16 = k / 16 * 16, k8 = k / 8 * 8;
  int64_t j = 0;
  for (; j + 4 <= n; j += 4) {
    const float *r0 = b + j * ld, *r1 = r0 + ld, *r2 = r1 + ld, *r3 = r2 + ld;
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, c0 = a0, c1 = a0, c2 = a0, c3 = a0;
    int64_t kk = 0;
    for (; kk < k16; kk += 16) {
      __m256 xl = _mm256_loadu_ps(x + kk), xh = _mm256_loadu_ps(x + kk + 8);
      a0 = _mm256_fmadd_ps(xl, _mm256_loadu_ps(r0 + kk), a0);
      c0 = _mm256_fmadd_ps(xh, _mm256_loadu_ps(r0 + kk + 8), c0);
      a1 = _mm256_fmadd_ps(xl, _mm256_loadu_ps(r1 + kk), a1);
      c1 = _mm256_fmadd_ps(xh, _mm256_loadu_ps(r1 + kk + 8), c1);
      a2 = _mm256_fmadd_ps(xl, _mm256_loadu_ps(r2 + kk), a2);
      c2 = _mm256_fmadd_ps(xh, _mm256_loadu_ps(r2 + kk + 8), c2);
      a3 = _mm256_fmadd_ps(xl, _mm256_loadu_ps(r3 + kk), a3);
      c3 = _mm256_fmadd_ps(xh, _mm256_loadu_ps(r3 + kk + 8), c3);
    }
    if (kk < k8) {
      __m256 xl = _mm256_loadu_ps(x + kk);
      a0 = _mm256_fmadd_ps(xl, _mm256_loadu_ps(r0 + kk), a0);
      a1 = _mm256_fmadd_ps(xl, _mm256_loadu_ps(r1 + kk), a1);
      a2 = _mm256_fmadd_ps(xl, _mm256_loadu_ps(r2 + kk), a2);
      a3 = _mm256_fmadd_ps(xl, _mm256_loadu_ps(r3 + kk), a3);
      kk += 8;
    }
    float acc[4] = {hsum8(_mm256_add_ps(a0, c0)), hsum8(_mm256_add_ps(a1, c1)), hsum8(_mm256_add_ps(a2, c2)),
                    hsum8(_mm256_add_ps(a3, c3))};
    for (; kk < k; kk++) {
      acc[0] += x[kk] * r0[kk];
      acc[1] += x[kk] * r1[kk];
      acc[2] += x[kk] * r2[kk];
      acc[3] += x[kk] * r3[kk];
    }
    for (int r = 0; r < 4; r++) {
      float *out = y + (j + r) * incy;
      *out = beta == 0 ? acc[r] : (float)(acc[r] + beta * *out);
    }
  }
  for (; j < n; j++) {
    const float *r0 = b + j * ld;
    __m256 a0 = _mm256_setzero_ps(), c0 = a0;
    int64_t kk = 0;
    for (; kk < k16; kk += 16) {
      a0 = _mm256_fmadd_ps(_mm256_loadu_ps(x + kk), _mm256_loadu_ps(r0 + kk), a0);
      c0 = _mm256_fmadd_ps(_mm256_loadu_ps(x + kk + 8), _mm256_loadu_ps(r0 + kk + 8), c0);
    }
    if (kk < k8) {
      a0 = _mm256_fmadd_ps(_mm256_loadu_ps(x + kk), _mm256_loadu_ps(r0 + kk), a0);
      kk += 8;
    }
    float acc = hsum8(_mm256_add_ps(a0, c0));
    for (; kk < k; kk++) acc += x[kk] * r0[kk];
    float *out = y + j * incy;
    *out = beta == 0 ? acc : (float)(acc + beta * *out);
  }
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
#endif

/* A skinny product as y[n] = x[k] . B, B's rows (dot) or columns (axpy) of
 * length k, split over the n outputs across the pool: the work is one pass
 * over B, so each worker streams its own share of it. */
typedef struct {
  kiln_dtype dt;
  bool dot;
  int64_t k;
  const char *x;
  int64_t incx;
  const char *b;
  int64_t ld;
  char *y;
  int64_t incy;
  double beta;
  kk_unary_op act; /* applied to each share of y once written; KK_UNARY_COUNT: none */
} skinny_job;

/* The epilogue: act over a block of C while it is still in cache. */
static void apply_act(kiln_dtype dt, kk_unary_op act, char *c, int64_t rows, int64_t cols, int64_t ldc, int64_t inc) {
  if (act == KK_UNARY_COUNT || rows == 0 || cols == 0) return;
  kk_view v = {.data = c, .dtype = dt, .ndim = 2, .shape = {rows, cols}, .strides = {ldc, inc}};
  kk_unary(act, &v, &v, 0, 0);
}

static void skinny_part(void *ctx, int64_t begin, int64_t end, int worker) {
  const skinny_job *j = ctx;
  (void)worker;
  int64_t es = (int64_t)kiln_dtype_size(j->dt), n = end - begin;
  /* Outputs begin.. read B's rows from `begin` (dot) or columns (axpy). */
  const char *b = j->b + (j->dot ? begin * j->ld : begin) * es;
  char *y = j->y + begin * j->incy * es;
#if GEMM_HAVE_AVX2
  if (j->dt == KILN_F32 && j->dot && j->incx == 1 && !(kk_options() & KK_OPT_NO_SIMD) && cpu_has_avx2_fma())
    dot_rows_f32_avx2(n, j->k, (const float *)j->x, (const float *)b, j->ld, (float *)y, j->incy, j->beta);
  else
#endif
  if (j->dt == KILN_F32)
    (j->dot ? dot_rows_f32 : axpy_rows_f32)(n, j->k, (const float *)j->x, j->incx, (const float *)b, j->ld,
                                            (float *)y, j->incy, j->beta);
  else
    (j->dot ? dot_rows_f64 : axpy_rows_f64)(n, j->k, (const double *)j->x, j->incx, (const double *)b, j->ld,
                                            (double *)y, j->incy, j->beta);
  apply_act(j->dt, j->act, y, 1, n, 0, j->incy);
}

/* The skinny routes: a row vector times a matrix, or a matrix times a column. */
static bool gemm_skinny(kiln_dtype dt, bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, const void *a,
                        int64_t lda, const void *b, int64_t ldb, double beta, void *c, int64_t ldc, kk_unary_op act) {
  skinny_job j;
  if (m == 1) {
    /* c[1,N] = a[1,K] . op(B); a's elements are lda apart when transposed. */
    j = (skinny_job){dt, trans_b, k, a, trans_a ? lda : 1, b, ldb, c, 1, beta, act};
  } else if (n == 1) {
    /* c[M,1] = op(A) . b[K,1]: the same with A in B's place. */
    j = (skinny_job){dt, !trans_a, k, b, trans_b ? 1 : ldb, a, lda, c, ldc, beta, act};
    n = m;
  } else {
    return false;
  }
  /* Chunks of at least 32 K multiply-adds; fewer are not worth a thread. */
  int64_t grain = k > 0 ? (32768 + k - 1) / k : n;
  kiln_parallel_for(n, grain, skinny_part, &j);
  return true;
}

/* A share of a GEMM: rows [r0, r1) of C (split_rows) or columns. */
typedef struct {
  kiln_dtype dt;
  bool trans_a, trans_b;
  int64_t m, n, k;
  const void *a;
  int64_t lda;
  const void *b;
  int64_t ldb;
  double beta;
  void *c;
  int64_t ldc;
  bool split_rows;
  int64_t block; /* rows or columns per share */
  kk_unary_op act;
} gemm_job;

static void gemm_blocks(void *ctx, int64_t begin, int64_t end, int worker) {
  const gemm_job *j = ctx;
  (void)worker;
  int64_t es = (int64_t)kiln_dtype_size(j->dt);
  int64_t lo = begin * j->block, hi = end * j->block;
  const char *a = j->a, *b = j->b;
  char *c = j->c;
  int64_t m = j->m, n = j->n;
  if (j->split_rows) {
    hi = hi < m ? hi : m;
    m = hi - lo;
    a += (j->trans_a ? lo : lo * j->lda) * es; /* row lo of op(A) */
    c += lo * j->ldc * es;
  } else {
    hi = hi < n ? hi : n;
    n = hi - lo;
    b += (j->trans_b ? lo * j->ldb : lo) * es; /* column lo of op(B) */
    c += lo * es;
  }
  CBLAS_TRANSPOSE ta = j->trans_a ? CblasTrans : CblasNoTrans, tb = j->trans_b ? CblasTrans : CblasNoTrans;
  if (j->dt == KILN_F32)
    cblas_sgemm(CblasRowMajor, ta, tb, (int)m, (int)n, (int)j->k, 1.0f, (const float *)a, (int)j->lda,
                (const float *)b, (int)j->ldb, (float)j->beta, (float *)c, (int)j->ldc);
  else
    cblas_dgemm(CblasRowMajor, ta, tb, (int)m, (int)n, (int)j->k, 1.0, (const double *)a, (int)j->lda,
                (const double *)b, (int)j->ldb, j->beta, (double *)c, (int)j->ldc);
  apply_act(j->dt, j->act, c, m, n, j->ldc, 1);
}

void kk_gemm(kiln_dtype dt, bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, const void *a, int64_t lda,
             const void *b, int64_t ldb, double beta, void *c, int64_t ldc) {
  kk_gemm_act(dt, trans_a, trans_b, m, n, k, a, lda, b, ldb, beta, c, ldc, KK_UNARY_COUNT);
}

void kk_gemm_act(kiln_dtype dt, bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, const void *a,
                 int64_t lda, const void *b, int64_t ldb, double beta, void *c, int64_t ldc, kk_unary_op act) {
  if (m == 0 || n == 0) return;
  if (gemm_skinny(dt, trans_a, trans_b, m, n, k, a, lda, b, ldb, beta, c, ldc, act)) return;
  if (k == 0) {
    /* BLAS leaves C alone for k == 0 only when beta == 1; do it explicitly. */
    size_t es = kiln_dtype_size(dt);
    for (int64_t i = 0; i < m; i++)
      for (int64_t j = 0; j < n; j++) {
        char *p = (char *)c + (i * ldc + j) * (int64_t)es;
        kk_set_f64(dt, p, beta == 0 ? 0 : beta * kk_get_f64(dt, p));
      }
    apply_act(dt, act, c, m, n, ldc, 1);
    return;
  }
  /* Split the longer of M and N across the pool in whole multiples of 16
   * (the register tiles of OpenBLAS's kernels); below ~100 K multiply-adds
   * the hand-off costs more than it saves. */
  int64_t split = m >= n ? m : n, workers = kiln_parallel_workers();
  int64_t block = (split + workers - 1) / workers;
  block = block < 16 ? 16 : (block + 15) / 16 * 16;
  if ((double)m * (double)n * (double)k < 1e5) block = split;
  gemm_job job = {dt, trans_a, trans_b, m, n, k, a, lda, b, ldb, beta, c, ldc, m >= n, block, act};
  kiln_parallel_for((split + block - 1) / block, 1, gemm_blocks, &job);
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

kiln_status kk_linear(const kk_view *x, const kk_view *w, const kk_view *bias, kk_unary_op act, const kk_view *out) {
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
  kk_gemm_act(out->dtype, false, !lw.trans, m, o, in, x2.data, in, wr.data, lw.ld, beta, out->data, o, act);
  kiln_free(sx);
  kiln_free(sw);
  return KILN_OK;
}

kiln_status kk_linear_ref(const kk_view *x, const kk_view *w, const kk_view *bias, kk_unary_op act, const kk_view *out) {
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
  return act == KK_UNARY_COUNT ? KILN_OK : kk_unary_ref(act, out, out, 0, 0);
}
