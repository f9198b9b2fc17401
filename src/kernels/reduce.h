/* Reductions over any set of axes. The optimised kernel streams the input
 * once per pass in its own layout, accumulating into a double (or int64)
 * buffer with one slot per output element: the accumulator is a view with
 * stride 0 along reduced axes, so one iterator serves reductions along inner
 * and outer axes alike, in a fixed order (reproducible bits). The reference
 * walks elements by flat index. */
#ifndef KILN_KERNELS_REDUCE_H
#define KILN_KERNELS_REDUCE_H

#include "base/base.h"
#include "kernels/view.h"

typedef enum { KK_SUM, KK_MEAN, KK_MAX, KK_MIN, KK_PROD, KK_VAR, KK_LOGSUMEXP } kk_reduce_op;

/* reduced[d] says whether axis d of x is reduced. out is contiguous with the
 * kept dims (keepdims only changes its shape). ddof is for var. */
kiln_status kk_reduce(kk_reduce_op op, const kk_view *x, const bool *reduced, const kk_view *out, int64_t ddof);
kiln_status kk_reduce_ref(kk_reduce_op op, const kk_view *x, const bool *reduced, const kk_view *out, int64_t ddof);

/* int64 index of the first max (is_max) or min along axis (axis < 0: over
 * the flattened tensor); NaN counts as the extreme, as in numpy. */
kiln_status kk_argext(bool is_max, const kk_view *x, int axis, const kk_view *out);
kiln_status kk_argext_ref(bool is_max, const kk_view *x, int axis, const kk_view *out);

#endif
