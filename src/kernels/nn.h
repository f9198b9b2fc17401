/* Neural-network kernels: softmax and log-softmax, softmax cross-entropy,
 * 2-D convolution, max and average pooling, batch normalisation (inference
 * and training statistics) and dropout.
 *
 * Every kernel comes twice: an optimised one (kk_<name>) and a plain
 * reference (kk_<name>_ref) written independently with naive loops and
 * double accumulation, which the tests compare against. Both take kk_views
 * with any strides for their inputs; outputs are the contiguous tensors
 * dispatch allocates. The shapes were checked by the op's inference, so the
 * kernels only assert them. float32 and float64 are supported throughout.
 *
 * Kernels fail only for want of scratch memory (KILN_ERR_OUT_OF_MEMORY, with
 * a message naming the kernel) or, for cross-entropy, a label out of range,
 * which they report by index so the op layer can name the op. */
#ifndef KILN_KERNELS_NN_H
#define KILN_KERNELS_NN_H

#include "base/base.h"
#include "kernels/view.h"

/* y = softmax(x) or log_softmax(x) along axis; x and y have the same shape.
 * A 0-d x is treated as one row of length 1. */
kiln_status kk_softmax(const kk_view *x, const kk_view *y, int axis, bool log);
kiln_status kk_softmax_ref(const kk_view *x, const kk_view *y, int axis, bool log);

/* out (0-d) = mean over n of logsumexp(logits[n, :]) - logits[n, labels[n]];
 * logits [N, C] float, labels [N] int32 or int64. Returns -1 on success, or
 * the index n of the first label outside [0, C), in which case out is not
 * written. N == 0 gives NaN, as the mean of nothing does in PyTorch. */
int64_t kk_softmax_xent(const kk_view *logits, const kk_view *labels, const kk_view *out);
int64_t kk_softmax_xent_ref(const kk_view *logits, const kk_view *labels, const kk_view *out);

/* The geometry of a 2-D convolution; index 0 is height, 1 is width. */
typedef struct {
  int64_t stride[2];
  int64_t pad[2];
  int64_t dilation[2];
  int64_t groups;
} kk_conv2d_geom;

/* y [N, O, OH, OW] = conv(x [N, C, H, W], w [O, C/groups, KH, KW]) + bias [O]
 * (bias may be NULL), cross-correlation as in PyTorch, zero padding. */
kiln_status kk_conv2d(const kk_view *x, const kk_view *w, const kk_view *bias, const kk_view *y,
                      const kk_conv2d_geom *g);
kiln_status kk_conv2d_ref(const kk_view *x, const kk_view *w, const kk_view *bias, const kk_view *y,
                          const kk_conv2d_geom *g);
/* Switches the calling thread's SIMD implicit-GEMM road of kk_conv2d on or
 * off (on by default; it is taken only where the CPU has it), so tests and a
 * bisecting user can run the portable im2col + BLAS road. Returns the
 * previous setting. */
bool kk_conv2d_use_simd(bool on);

/* The gradients of kk_conv2d. gx [N, C, H, W] = the transposed convolution
 * of gy [N, O, OH, OW] with w [O, C/groups, KH, KW] (the gradient of y with
 * respect to x); gw [O, C/groups, KH, KW] = the correlation of gy with x
 * (the gradient with respect to w). Both overwrite their output. The
 * optimised kernels are GEMM-based (col2im and im2col), parallel over the
 * batch; the references are the definition's loops, in double. */
kiln_status kk_conv2d_backward_data(const kk_view *gy, const kk_view *w, const kk_view *gx, const kk_conv2d_geom *g);
kiln_status kk_conv2d_backward_data_ref(const kk_view *gy, const kk_view *w, const kk_view *gx,
                                        const kk_conv2d_geom *g);
kiln_status kk_conv2d_backward_weight(const kk_view *gy, const kk_view *x, const kk_view *gw,
                                      const kk_conv2d_geom *g);
kiln_status kk_conv2d_backward_weight_ref(const kk_view *gy, const kk_view *x, const kk_view *gw,
                                          const kk_conv2d_geom *g);

/* The geometry of a 2-D pooling window; stride already resolved (never 0). */
typedef struct {
  int64_t kernel[2];
  int64_t stride[2];
  int64_t pad[2];
  bool count_include_pad; /* avg only */
} kk_pool2d_geom;

/* y [N, C, OH, OW] from x [N, C, H, W]. Padding never wins a max (it is
 * -inf); for avg it counts in the divisor only with count_include_pad. */
kiln_status kk_max_pool2d(const kk_view *x, const kk_view *y, const kk_pool2d_geom *g);
kiln_status kk_max_pool2d_ref(const kk_view *x, const kk_view *y, const kk_pool2d_geom *g);
kiln_status kk_avg_pool2d(const kk_view *x, const kk_view *y, const kk_pool2d_geom *g);
kiln_status kk_avg_pool2d_ref(const kk_view *x, const kk_view *y, const kk_pool2d_geom *g);

/* The gradients of the pools: gx [N, C, H, W] (overwritten) from gy
 * [N, C, OH, OW]. Max pooling sends each window's gradient to the first
 * maximum of x in the window (row-major order; a NaN wins, the last one
 * seen, as the forward and PyTorch pick it); average pooling spreads it
 * evenly over the window's inside positions with the forward's divisor. */
kiln_status kk_max_pool2d_backward(const kk_view *gy, const kk_view *x, const kk_view *gx, const kk_pool2d_geom *g);
kiln_status kk_max_pool2d_backward_ref(const kk_view *gy, const kk_view *x, const kk_view *gx,
                                       const kk_pool2d_geom *g);
kiln_status kk_avg_pool2d_backward(const kk_view *gy, const kk_view *gx, const kk_pool2d_geom *g);
kiln_status kk_avg_pool2d_backward_ref(const kk_view *gy, const kk_view *gx, const kk_pool2d_geom *g);

/* Inference: y = (x - mean[c]) / sqrt(var[c] + eps) * gamma[c] + beta[c] for
 * x [N, C, ...]; the four parameter views are [C]. */
kiln_status kk_batch_norm(const kk_view *x, const kk_view *gamma, const kk_view *beta, const kk_view *mean,
                          const kk_view *var, double eps, const kk_view *y);
kiln_status kk_batch_norm_ref(const kk_view *x, const kk_view *gamma, const kk_view *beta, const kk_view *mean,
                              const kk_view *var, double eps, const kk_view *y);

/* Training: normalises with the batch statistics over every axis but 1
 * (biased variance, as PyTorch normalises) and writes the batch mean and the
 * UNBIASED variance (count / (count - 1) times the biased one, what the
 * running statistics are updated with) to mean_out and var_out [C]. The op
 * guarantees more than one value per channel. */
kiln_status kk_batch_norm_train(const kk_view *x, const kk_view *gamma, const kk_view *beta, double eps,
                                const kk_view *y, const kk_view *mean_out, const kk_view *var_out);
kiln_status kk_batch_norm_train_ref(const kk_view *x, const kk_view *gamma, const kk_view *beta, double eps,
                                    const kk_view *y, const kk_view *mean_out, const kk_view *var_out);

/* y[i] = keep(i) ? x[i] / (1 - p) : 0 over the flat row-major index i, where
 * keep(i) is "uniform >= p" for the uniform made from the first word of
 * kk_philox4x32(seed, offset + i): the mask depends only on seed, offset and
 * i, never on layout or threads. 0 <= p < 1. */
kiln_status kk_dropout(const kk_view *x, const kk_view *y, double p, uint64_t seed, uint64_t offset);
kiln_status kk_dropout_ref(const kk_view *x, const kk_view *y, double p, uint64_t seed, uint64_t offset);

/* For the optimised kernels: *data points at a contiguous copy of v's
 * elements, or at v's own data when it is already contiguous. *scratch is
 * what the caller must kiln_free (NULL when nothing was copied). Fails only
 * for want of memory, with a message naming who. */
kiln_status kk_nn_contiguous(const kk_view *v, const char *who, const char **data, void **scratch);

#endif
