/* Internal wrappers of the gradient ops of the neural-network family
 * (conv2d_backward_data, conv2d_backward_weight, max_pool2d_backward,
 * avg_pool2d_backward), for the gradient functions of src/ops/gradients.c
 * and for the tests. They are not public API: they take the forward op's
 * attribute values as the registry holds them. Each returns a new handle
 * autoreleased into the current scope that carries any failure, like every
 * op function. */
#ifndef KILN_OPS_NN_GRAD_H
#define KILN_OPS_NN_GRAD_H

#include "ops/op.h"
#include "tensor/tensor.h"

/* gx [N, C, h, w] from gy [N, O, OH, OW] and w [O, C/groups, KH, KW];
 * conv_attrs are conv2d's (stride, padding, dilation, groups). */
kiln_tensor *nn_conv2d_backward_data(kiln_tensor *gy, kiln_tensor *w, const kiln_attr_value *conv_attrs, int64_t h,
                                     int64_t wd);
/* gw [O, C/groups, kh, kw] from gy [N, O, OH, OW] and x [N, C, H, W]. */
kiln_tensor *nn_conv2d_backward_weight(kiln_tensor *gy, kiln_tensor *x, const kiln_attr_value *conv_attrs,
                                       int64_t kh, int64_t kw);
/* gx shaped like x from gy; pool_attrs are the forward's (fwd is
 * KILN_OP_MAX_POOL2D or KILN_OP_AVG_POOL2D). */
kiln_tensor *nn_pool2d_backward(kiln_op_id fwd, kiln_tensor *gy, kiln_tensor *x, const kiln_attr_value *pool_attrs);

#endif
