/* Kernels that move elements without arithmetic: concat, stack, split, take,
 * gather, one_hot, pad, and the dtype conversion cast. Each comes twice: an
 * optimised kernel (coalesced strided runs, memcpy where the run is
 * contiguous, loops typed by element size or dtype) and a plain reference
 * (one element at a time through flat row-major indices, kk_element and the
 * kk_get_* / kk_set_* accessors) written independently, so tests can compare
 * the two bit for bit.
 *
 * Contract shared by every function here: inputs are any kk_view (strides of
 * any sign, zero for broadcast dims); outputs are freshly allocated,
 * contiguous, and already have the shapes and dtypes that inference gave
 * them. Shapes are not re-checked (inference did it); index VALUES are, since
 * only the kernel sees them. Functions that can fail return a kiln_status and
 * record no message: the op layer, which knows the op's name, formats it from
 * the kk_index_error they fill. */
#ifndef KILN_KERNELS_INDEXING_H
#define KILN_KERNELS_INDEXING_H

#include "kernels/view.h"

/* Where a range check failed: the index as given, its flat row-major position
 * in the index tensor, and the bound it broke ([-limit, limit) for take and
 * gather, [0, limit) for one_hot). */
typedef struct {
  int64_t value;
  int64_t position;
  int64_t limit;
} kk_index_error;

/* out = in[0] ++ ... ++ in[n-1] along axis; all have out's dtype. */
void kk_concat(int n, const kk_view *in, int axis, const kk_view *out);
void kk_concat_ref(int n, const kk_view *in, int axis, const kk_view *out);

/* out has a new dim of length n at axis; out[..., k, ...] = in[k]. */
void kk_stack(int n, const kk_view *in, int axis, const kk_view *out);
void kk_stack_ref(int n, const kk_view *in, int axis, const kk_view *out);

/* Cuts x along axis into out[0..n); the parts' lengths are their shapes'. */
void kk_split(const kk_view *x, int axis, int n, const kk_view *out);
void kk_split_ref(const kk_view *x, int axis, int n, const kk_view *out);

/* numpy.take along axis. idx is int32 or int64 of any shape; a negative
 * index counts from the end. Every index is checked, even when out is empty,
 * and the first bad one in row-major order is reported:
 * KILN_ERR_OUT_OF_RANGE with *err filled. KILN_ERR_OUT_OF_MEMORY when the
 * optimised kernel cannot allocate its index buffer. */
kiln_status kk_take(const kk_view *x, const kk_view *idx, int axis, const kk_view *out, kk_index_error *err);
kiln_status kk_take_ref(const kk_view *x, const kk_view *idx, int axis, const kk_view *out, kk_index_error *err);

/* torch.gather (and ONNX GatherElements, so negative indices count from the
 * end): out has idx's shape and out[p] = x[p with p[axis] = idx[p]]. Checks
 * and failures as kk_take. */
kiln_status kk_gather(const kk_view *x, int axis, const kk_view *idx, const kk_view *out, kk_index_error *err);
kiln_status kk_gather_ref(const kk_view *x, int axis, const kk_view *idx, const kk_view *out, kk_index_error *err);

/* out = idx.shape + [depth] with depth = out's last dim: 1 where the last
 * coordinate equals the index, else 0, in out's dtype. idx is int32, int64 or
 * uint8; an index outside [0, depth) fails (no silent all-zero row), as
 * torch.nn.functional.one_hot does. */
kiln_status kk_one_hot(const kk_view *idx, const kk_view *out, kk_index_error *err);
kiln_status kk_one_hot_ref(const kk_view *idx, const kk_view *out, kk_index_error *err);

/* Constant padding. pads[2i], pads[2i+1] (both >= 0) are added before and
 * after axis i for i < n_pads / 2; axes past that are not padded, so a short
 * list pads the LEADING axes (unlike torch.nn.functional.pad, which starts at
 * the last axis; this order is ONNX's and numpy's). value is converted to
 * out's dtype as kk_cast converts a float64. */
void kk_pad(const kk_view *x, int n_pads, const int64_t *pads, double value, const kk_view *out);
void kk_pad_ref(const kk_view *x, int n_pads, const int64_t *pads, double value, const kk_view *out);

/* Converts every element of x to out's dtype:
 *   float -> float: C conversion (rounds to nearest; NaN and inf survive);
 *   float -> integer: truncates toward zero, saturates at the target's range,
 *     NaN becomes 0 (numpy leaves these undefined; we pick the safe answer);
 *   integer -> integer: keeps the low bits (two's complement wrap, as numpy);
 *   integer -> float: rounds to nearest;
 *   anything -> bool: x != 0 (so NaN is true, as in numpy);
 *   bool -> anything: 0 or 1. */
void kk_cast(const kk_view *x, const kk_view *out);
void kk_cast_ref(const kk_view *x, const kk_view *out);

#endif
