/* Matrix products on CBLAS (OpenBLAS). Shapes are row-major; a matrix is a
 * pointer, a leading dimension and whether it is used transposed, so views
 * that are transposes of contiguous data need no copy. */
#ifndef KILN_KERNELS_GEMM_H
#define KILN_KERNELS_GEMM_H

#include "base/base.h"
#include "kernels/elementwise.h"
#include "kernels/view.h"

/* C[M,N] = op(A)[M,K] . op(B)[K,N] + beta * C, float32 or float64 (dt).
 * Skinny products (M or N of 1) run in kiln's own loops: this machine's
 * OpenBLAS spends several times longer on them than one thread streaming
 * the matrix (figures in gemm.c and docs/performance.md). */
void kk_gemm(kiln_dtype dt, bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, const void *a, int64_t lda,
             const void *b, int64_t ldb, double beta, void *c, int64_t ldc);
/* The same, then act applied to each block of C as soon as it is written,
 * while it is still in cache (KK_UNARY_COUNT: none): a Dense layer's
 * activation without a second pass over its output. */
void kk_gemm_act(kiln_dtype dt, bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, const void *a,
                 int64_t lda, const void *b, int64_t ldb, double beta, void *c, int64_t ldc, kk_unary_op act);

/* numpy.matmul over views already promoted to >= 2 dims with batch dims
 * broadcast to out's (out is contiguous [..., M, N]). */
kiln_status kk_matmul(const kk_view *a, const kk_view *b, const kk_view *out);
kiln_status kk_matmul_ref(const kk_view *a, const kk_view *b, const kk_view *out);

/* out[..., O] = act(x[..., I] . w[O, I]^T + bias[O]) (bias may be NULL;
 * act KK_UNARY_COUNT for none). */
kiln_status kk_linear(const kk_view *x, const kk_view *w, const kk_view *bias, kk_unary_op act, const kk_view *out);
kiln_status kk_linear_ref(const kk_view *x, const kk_view *w, const kk_view *bias, kk_unary_op act, const kk_view *out);

#endif
