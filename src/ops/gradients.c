/* The gradient of every differentiable op, written with registry ops so it
 * runs on the engine like any op, and so that 4/8 can differentiate graphs
 * with the same definitions. Each function gets the op's saved inputs and
 * outputs and the gradient of each output (see imperative/autograd.h);
 * everything it makes belongs to backward's scope. Broadcasting ops reduce
 * their gradients back to each input's shape (sum_to). */
#include <pthread.h>
#include <string.h>

#include "imperative/autograd.h"
#include "imperative/dispatch.h"
#include "kernels/elementwise.h"
#include "kernels/reduce.h"
#include "ops/nn_grad.h"

/* ------------------------------------------------------------ helpers */

/* g summed over the dims it was broadcast along to reach like's shape. */
static kiln_tensor *sum_to(kiln_tensor *g, const kiln_tensor *like) {
  int axes[KILN_MAX_DIMS], n = 0, lead = g->ndim - like->ndim;
  for (int d = 0; d < g->ndim; d++) {
    int j = d - lead;
    if (j < 0 || (like->shape[j] == 1 && g->shape[d] != 1)) axes[n++] = d;
  }
  kiln_tensor *r = n ? kiln_sum(g, n, axes, true) : g;
  return kiln_reshape(r, like->ndim, like->shape);
}

/* The axes a reduction reduced (its "axes" attribute; empty means all). */
static void reduced_axes(const kiln_grad_call *c, bool *reduced) {
  const kiln_tensor *x = c->in[0];
  const kiln_attr_value *ax = &c->attrs[0];
  for (int d = 0; d < KILN_MAX_DIMS; d++) reduced[d] = ax->n == 0 && d < x->ndim;
  for (int i = 0; i < ax->n; i++) {
    int64_t a = ax->ints[i] < 0 ? ax->ints[i] + x->ndim : ax->ints[i];
    if (a >= 0 && a < x->ndim) reduced[a] = true;
  }
}

/* A reduction's output (or its gradient) broadcast back over x's shape. */
static kiln_tensor *expand_back(const kiln_grad_call *c, kiln_tensor *y) {
  const kiln_tensor *x = c->in[0];
  bool reduced[KILN_MAX_DIMS];
  reduced_axes(c, reduced);
  int64_t keep[KILN_MAX_DIMS];
  for (int d = 0; d < x->ndim; d++) keep[d] = reduced[d] ? 1 : x->shape[d];
  return kiln_broadcast_to(kiln_reshape(y, x->ndim, keep), x->ndim, x->shape);
}

static kiln_tensor *ones_minus(kiln_tensor *t) { return kiln_add_scalar(kiln_neg(t), 1); }

/* 1 where t > 0, else 0, in t's dtype (sign of relu). */
static kiln_tensor *positive_mask(kiln_tensor *t) { return kiln_sign(kiln_relu(t)); }

static kiln_tensor *as_mask(kiln_tensor *cond, kiln_dtype dt) { return kiln_cast(cond, dt); }

#define G (c->out_grad[0])
#define X (c->in[0])
#define Y (c->out[0])
#define NEED(i) (c->need[i])

/* ------------------------------------------------------------ elementwise */

static kiln_status grad_unary(kiln_grad_call *c) {
  kiln_tensor *g = G, *x = X, *y = Y, *r;
  switch (c->def->code) {
  case KK_NEG: r = kiln_neg(g); break;
  case KK_ABS: r = kiln_mul(g, kiln_sign(x)); break;
  case KK_EXP: r = kiln_mul(g, y); break;
  case KK_LOG: r = kiln_div(g, x); break;
  case KK_SQRT: r = kiln_div(kiln_mul_scalar(g, 0.5), y); break;
  case KK_RSQRT: r = kiln_mul(g, kiln_mul_scalar(kiln_mul(y, kiln_square(y)), -0.5)); break;
  case KK_SQUARE: r = kiln_mul(g, kiln_mul_scalar(x, 2)); break;
  case KK_SIN: r = kiln_mul(g, kiln_cos(x)); break;
  case KK_COS: r = kiln_neg(kiln_mul(g, kiln_sin(x))); break;
  case KK_TANH: r = kiln_mul(g, ones_minus(kiln_square(y))); break;
  case KK_SIGMOID: r = kiln_mul(g, kiln_mul(y, ones_minus(y))); break;
  case KK_RELU: r = kiln_mul(g, kiln_sign(y)); break;
  case KK_LEAKY_RELU: {
    double slope = c->attrs[0].f;
    r = kiln_mul(g, kiln_add_scalar(kiln_mul_scalar(positive_mask(x), 1 - slope), slope));
    break;
  }
  case KK_SOFTPLUS: r = kiln_mul(g, kiln_sigmoid(x)); break;
  case KK_ERF: r = kiln_mul(g, kiln_mul_scalar(kiln_exp(kiln_mul_scalar(kiln_square(x), -1)), 1.1283791670955126)); break;
  case KK_GELU: {
    /* gelu = x Phi(x): Phi(x) + x phi(x), Phi = (1 + erf(x / sqrt 2)) / 2, phi = exp(-x^2 / 2) / sqrt(2 pi). */
    kiln_tensor *cdf = kiln_mul_scalar(kiln_add_scalar(kiln_erf(kiln_mul_scalar(x, 0.70710678118654752)), 1), 0.5);
    kiln_tensor *pdf = kiln_mul_scalar(kiln_exp(kiln_mul_scalar(kiln_square(x), -0.5)), 0.3989422804014327);
    r = kiln_mul(g, kiln_add(cdf, kiln_mul(x, pdf)));
    break;
  }
  case KK_CLIP: r = kiln_mul(g, as_mask(kiln_equal(x, y), g->dtype)); break;
  case KK_SIGN: case KK_FLOOR: case KK_CEIL: case KK_ROUND: r = kiln_zeros(g->dtype, g->ndim, g->shape); break;
  default: return kiln_errorf(KILN_ERR_UNSUPPORTED, "%s has no gradient", c->def->name);
  }
  c->in_grad[0] = r;
  return KILN_OK;
}

static kiln_status grad_binary(kiln_grad_call *c) {
  kiln_tensor *g = G, *a = c->in[0], *b = c->in[1], *y = Y;
  kiln_tensor *ga = NULL, *gb = NULL;
  switch (c->def->code) {
  case KK_ADD: ga = g, gb = g; break;
  case KK_SUB: ga = g, gb = kiln_neg(g); break;
  case KK_MUL: ga = kiln_mul(g, b), gb = kiln_mul(g, a); break;
  case KK_DIV: ga = kiln_div(g, b), gb = kiln_neg(kiln_div(kiln_mul(g, y), b)); break;
  case KK_POW:
    ga = kiln_mul(g, kiln_mul(b, kiln_pow(a, kiln_add_scalar(b, -1))));
    gb = kiln_mul(g, kiln_mul(y, kiln_log(a)));
    break;
  case KK_MAXIMUM: case KK_MINIMUM: {
    kiln_tensor *m = as_mask(c->def->code == KK_MAXIMUM ? kiln_greater_equal(a, b) : kiln_less_equal(a, b), g->dtype);
    ga = kiln_mul(g, m), gb = kiln_mul(g, ones_minus(m));
    break;
  }
  default: return kiln_errorf(KILN_ERR_UNSUPPORTED, "%s has no gradient", c->def->name);
  }
  if (NEED(0)) c->in_grad[0] = sum_to(ga, a);
  if (NEED(1)) c->in_grad[1] = sum_to(gb, b);
  return KILN_OK;
}

static kiln_status grad_scalar(kiln_grad_call *c) {
  kiln_tensor *g = G, *x = X, *y = Y;
  double s = c->attrs[0].f;
  switch (c->def->code) {
  case KK_ADD: case KK_SUB: c->in_grad[0] = g; break;
  case KK_MUL: c->in_grad[0] = kiln_mul_scalar(g, s); break;
  case KK_DIV: c->in_grad[0] = kiln_div_scalar(g, s); break;
  case KK_POW: c->in_grad[0] = kiln_mul(g, kiln_mul_scalar(kiln_pow_scalar(x, s - 1), s)); break;
  case KK_MAXIMUM: case KK_MINIMUM: c->in_grad[0] = kiln_mul(g, as_mask(kiln_equal(x, y), g->dtype)); break;
  default: return kiln_errorf(KILN_ERR_UNSUPPORTED, "%s has no gradient", c->def->name);
  }
  return KILN_OK;
}

static kiln_status grad_where(kiln_grad_call *c) {
  kiln_tensor *g = G, *zero = kiln_zeros(g->dtype, 0, NULL);
  if (NEED(1)) c->in_grad[1] = sum_to(kiln_where(c->in[0], g, zero), c->in[1]);
  if (NEED(2)) c->in_grad[2] = sum_to(kiln_where(c->in[0], zero, g), c->in[2]);
  return KILN_OK;
}

/* ------------------------------------------------------------ reductions */

static kiln_status grad_reduce(kiln_grad_call *c) {
  kiln_tensor *x = X, *gx = expand_back(c, G);
  int64_t count = kiln_tensor_numel(Y) ? kiln_tensor_numel(x) / kiln_tensor_numel(Y) : 0;
  bool reduced[KILN_MAX_DIMS];
  reduced_axes(c, reduced);
  int axes[KILN_MAX_DIMS], n = 0;
  for (int d = 0; d < x->ndim; d++)
    if (reduced[d]) axes[n++] = d;
  switch (c->def->code) {
  case KK_SUM: c->in_grad[0] = gx; break;
  case KK_MEAN: c->in_grad[0] = kiln_div_scalar(gx, (double)count); break;
  case KK_MAX: case KK_MIN: {
    /* Ties share the gradient equally, as torch's amax/amin. */
    kiln_tensor *m = as_mask(kiln_equal(x, expand_back(c, Y)), x->dtype);
    kiln_tensor *ties = n ? kiln_sum(m, n, axes, true) : m;
    c->in_grad[0] = kiln_div(kiln_mul(gx, m), ties);
    break;
  }
  case KK_LOGSUMEXP: c->in_grad[0] = kiln_mul(gx, kiln_exp(kiln_sub(x, expand_back(c, Y)))); break;
  case KK_PROD: {
    /* The product of the others, y / x, except where zeros are: with one
     * zero in the reduced set it is the product of the non-zeros at the
     * zero and 0 elsewhere; with two or more it is 0 everywhere. */
    kiln_tensor *zero = as_mask(kiln_equal(x, kiln_zeros(x->dtype, 0, NULL)), x->dtype);
    kiln_tensor *nonzero = kiln_add(x, zero); /* zeros replaced by ones */
    kiln_tensor *p = expand_back(c, kiln_prod(nonzero, n, axes, true));
    kiln_tensor *zeros_in_set = expand_back(c, kiln_sum(zero, n, axes, true));
    kiln_tensor *one_zero = as_mask(kiln_equal(zeros_in_set, kiln_ones(x->dtype, 0, NULL)), x->dtype);
    kiln_tensor *no_zero = as_mask(kiln_equal(zeros_in_set, kiln_zeros(x->dtype, 0, NULL)), x->dtype);
    kiln_tensor *others = kiln_add(kiln_mul(zero, kiln_mul(p, one_zero)), kiln_mul(kiln_div(p, nonzero), no_zero));
    c->in_grad[0] = kiln_mul(gx, others);
    break;
  }
  case KK_VAR: {
    kiln_tensor *mean = n ? kiln_mean(x, n, axes, true) : x;
    double denom = (double)(count - c->attrs[2].i);
    c->in_grad[0] = kiln_mul(gx, kiln_mul_scalar(kiln_sub(x, mean), 2.0 / denom));
    break;
  }
  default: return kiln_errorf(KILN_ERR_UNSUPPORTED, "%s has no gradient", c->def->name);
  }
  return KILN_OK;
}

/* ------------------------------------------------------------ linear algebra */

static kiln_tensor *transpose_last(kiln_tensor *t) { return kiln_transpose(t, -1, -2); }

static kiln_status grad_matmul(kiln_grad_call *c) {
  kiln_tensor *a = c->in[0], *b = c->in[1], *g = G;
  /* As >= 2-D operands: a [.., M, K], b [.., K, N], g [.., M, N]. */
  kiln_tensor *a2 = a->ndim == 1 ? kiln_reshape(a, 2, (int64_t[]){1, a->shape[0]}) : a;
  kiln_tensor *b2 = b->ndim == 1 ? kiln_reshape(b, 2, (int64_t[]){b->shape[0], 1}) : b;
  int64_t gs[KILN_MAX_DIMS + 2];
  int gn = 0;
  for (int d = 0; d < g->ndim - (a->ndim > 1) - (b->ndim > 1); d++) gs[gn++] = g->shape[d];
  gs[gn++] = a2->shape[a2->ndim - 2];
  gs[gn++] = b2->shape[b2->ndim - 1];
  kiln_tensor *g2 = kiln_reshape(g, gn, gs);
  if (NEED(0)) c->in_grad[0] = kiln_reshape(sum_to(kiln_matmul(g2, transpose_last(b2)), a2), a->ndim, a->shape);
  if (NEED(1)) c->in_grad[1] = kiln_reshape(sum_to(kiln_matmul(transpose_last(a2), g2), b2), b->ndim, b->shape);
  return KILN_OK;
}

static kiln_status grad_linear(kiln_grad_call *c) {
  kiln_tensor *x = c->in[0], *w = c->in[1], *g = G;
  /* Through the fused activation first, from its output. */
  switch (c->attrs[0].i) {
  case KILN_ACT_RELU: g = kiln_mul(g, positive_mask(Y)); break;
  case KILN_ACT_SIGMOID: g = kiln_mul(g, kiln_mul(Y, ones_minus(Y))); break;
  case KILN_ACT_TANH: g = kiln_mul(g, ones_minus(kiln_square(Y))); break;
  default: break;
  }
  int64_t in = w->shape[1], out = w->shape[0], rows = in ? kiln_tensor_numel(x) / in : 0;
  if (NEED(0)) c->in_grad[0] = kiln_matmul(g, w); /* [.., O] . [O, I] */
  kiln_tensor *g2 = kiln_reshape(g, 2, (int64_t[]){rows, out});
  if (NEED(1)) c->in_grad[1] = kiln_matmul(transpose_last(g2), kiln_reshape(x, 2, (int64_t[]){rows, in}));
  if (c->n_in == 3 && NEED(2)) c->in_grad[2] = kiln_sum(g2, 1, (int[]){0}, false);
  return KILN_OK;
}

/* ------------------------------------------------------------ layout */

static kiln_status grad_reshape_like(kiln_grad_call *c) {
  c->in_grad[0] = kiln_reshape(G, X->ndim, X->shape);
  return KILN_OK;
}

static kiln_status grad_permute(kiln_grad_call *c) {
  int inverse[KILN_MAX_DIMS];
  for (int i = 0; i < c->attrs[0].n; i++) {
    int64_t a = c->attrs[0].ints[i];
    inverse[a < 0 ? a + X->ndim : a] = i;
  }
  c->in_grad[0] = kiln_permute(G, X->ndim, inverse);
  return KILN_OK;
}

static kiln_status grad_broadcast_to(kiln_grad_call *c) {
  c->in_grad[0] = sum_to(G, X);
  return KILN_OK;
}

/* The gradient of picking x's entries at positions idx (int64 [K], each
 * in [0, N)) along axis, out = x.shape[:axis] + [K] + x.shape[axis+1:]:
 * scattered back and summed where positions repeat, as one_hot(idx)^T . g
 * over a [before, K, after] view of g. */
static kiln_tensor *scatter_along(kiln_tensor *g, int axis, kiln_tensor *idx, const kiln_tensor *x) {
  int64_t before = 1, after = 1, k = kiln_tensor_numel(idx), n = x->shape[axis];
  for (int d = 0; d < axis; d++) before *= x->shape[d];
  for (int d = axis + 1; d < x->ndim; d++) after *= x->shape[d];
  kiln_tensor *picks = kiln_transpose(kiln_one_hot(idx, n, g->dtype), 0, 1); /* [N, K] */
  kiln_tensor *gx = kiln_matmul(picks, kiln_reshape(g, 3, (int64_t[]){before, k, after}));
  return kiln_reshape(gx, x->ndim, x->shape);
}

/* Negative indices count from the end, as the indexing ops read them. */
static kiln_tensor *normalized_indices(kiln_tensor *idx, int64_t n) {
  kiln_tensor *i64 = kiln_cast(idx, KILN_I64);
  kiln_tensor *negative = kiln_cast(kiln_less(i64, kiln_zeros(KILN_I64, 0, NULL)), KILN_I64);
  return kiln_add(i64, kiln_mul_scalar(negative, (double)n));
}

static kiln_status grad_slice(kiln_grad_call *c) {
  int64_t axis = c->attrs[0].i < 0 ? c->attrs[0].i + X->ndim : c->attrs[0].i;
  int64_t step = c->attrs[3].i, len = X->shape[axis], first, count;
  kiln_slice_bounds(len, c->attrs[1].i, c->attrs[2].i, step, &first, &count);
  if (step == 1) { /* a contiguous run: pad, no scatter */
    int64_t pads[2 * KILN_MAX_DIMS] = {0};
    pads[2 * axis] = first;
    pads[2 * axis + 1] = len - first - count;
    c->in_grad[0] = kiln_pad(G, (int)(2 * (axis + 1)), pads, 0);
    return KILN_OK;
  }
  kiln_tensor *idx = kiln_arange((double)first, (double)first + (double)count * (double)step, (double)step, KILN_I64);
  c->in_grad[0] = scatter_along(G, (int)axis, idx, X);
  return KILN_OK;
}

static kiln_status grad_take(kiln_grad_call *c) {
  int axis = (int)(c->attrs[0].i < 0 ? c->attrs[0].i + X->ndim : c->attrs[0].i);
  kiln_tensor *idx = normalized_indices(c->in[1], X->shape[axis]);
  if (NEED(0)) c->in_grad[0] = scatter_along(G, axis, kiln_reshape(idx, 1, (int64_t[]){kiln_tensor_numel(idx)}), X);
  return KILN_OK;
}

/* gather: out[.., k, ..] = x[.., index[.., k, ..], ..] along axis, index
 * no larger than x elsewhere. Each g element goes to the position its
 * index names: one_hot(index) weighted by g, summed over the index's axis,
 * the class dim moved into the axis, then padded to x's extent on the
 * other dims. */
static kiln_status grad_gather(kiln_grad_call *c) {
  kiln_tensor *x = X, *g = G;
  int nd = x->ndim, axis = (int)(c->attrs[0].i < 0 ? c->attrs[0].i + nd : c->attrs[0].i);
  kiln_tensor *idx = normalized_indices(c->in[1], x->shape[axis]);
  kiln_tensor *spread = kiln_mul(kiln_one_hot(idx, x->shape[axis], g->dtype), kiln_expand_dims(g, nd)); /* idx.shape + [N] */
  kiln_tensor *summed = kiln_sum(spread, 1, &axis, true); /* [.., 1, .., N] */
  int perm[KILN_MAX_DIMS + 1];
  for (int d = 0; d <= nd; d++) perm[d] = d;
  perm[axis] = nd, perm[nd] = axis;
  kiln_tensor *placed = kiln_squeeze(kiln_permute(summed, nd + 1, perm), nd); /* axis holds N */
  int64_t pads[2 * KILN_MAX_DIMS] = {0};
  for (int d = 0; d < nd; d++) pads[2 * d + 1] = x->shape[d] - kiln_tensor_dim(placed, d);
  if (NEED(0)) c->in_grad[0] = kiln_pad(placed, 2 * nd, pads, 0);
  return KILN_OK;
}

static kiln_status grad_stack(kiln_grad_call *c) {
  int axis = (int)(c->attrs[0].i < 0 ? c->attrs[0].i + X->ndim + 1 : c->attrs[0].i);
  int64_t ones[64];
  if (c->n_in > 64) return kiln_errorf(KILN_ERR_UNSUPPORTED, "stack: no gradient for more than 64 inputs yet");
  for (int i = 0; i < c->n_in; i++) ones[i] = 1;
  kiln_status st = kiln_split(G, axis, c->n_in, ones, c->in_grad);
  for (int i = 0; st == KILN_OK && i < c->n_in; i++) c->in_grad[i] = kiln_squeeze(c->in_grad[i], axis);
  return st;
}

static kiln_status grad_cast(kiln_grad_call *c) {
  if (!kk_is_float(X->dtype)) return kiln_errorf(KILN_ERR_UNSUPPORTED, "cast: no gradient into %s", kiln_dtype_name(X->dtype));
  c->in_grad[0] = kiln_cast(G, X->dtype);
  return KILN_OK;
}

static kiln_status grad_concat(kiln_grad_call *c) {
  int64_t axis = c->attrs[0].i < 0 ? c->attrs[0].i + X->ndim : c->attrs[0].i;
  int64_t sizes[64];
  if (c->n_in > 64) return kiln_errorf(KILN_ERR_UNSUPPORTED, "concat: no gradient for more than 64 inputs yet");
  for (int i = 0; i < c->n_in; i++) sizes[i] = c->in[i]->shape[axis];
  return kiln_split(G, (int)axis, c->n_in, sizes, c->in_grad);
}

static kiln_status grad_split(kiln_grad_call *c) {
  int64_t axis = c->attrs[0].i < 0 ? c->attrs[0].i + X->ndim : c->attrs[0].i;
  c->in_grad[0] = kiln_concat(c->n_out, c->out_grad, (int)axis);
  return KILN_OK;
}

static kiln_status grad_pad(kiln_grad_call *c) {
  kiln_tensor *g = G;
  const kiln_attr_value *p = &c->attrs[0];
  for (int i = 0; i < p->n / 2; i++) g = kiln_slice(g, i, p->ints[2 * i], p->ints[2 * i] + X->shape[i], 1);
  c->in_grad[0] = g;
  return KILN_OK;
}

/* ------------------------------------------------------------ neural-network ops */

static kiln_status grad_softmax(kiln_grad_call *c) {
  int axis = (int)c->attrs[0].i;
  kiln_tensor *g = G, *y = Y;
  if (c->def->code == 0) /* softmax: y * (g - sum(g * y)) */
    c->in_grad[0] = kiln_mul(y, kiln_sub(g, kiln_sum(kiln_mul(g, y), 1, &axis, true)));
  else /* log_softmax: g - exp(y) * sum(g) */
    c->in_grad[0] = kiln_sub(g, kiln_mul(kiln_exp(y), kiln_sum(g, 1, &axis, true)));
  return KILN_OK;
}

static kiln_status grad_softmax_cross_entropy(kiln_grad_call *c) {
  kiln_tensor *logits = c->in[0], *labels = c->in[1];
  int64_t n = logits->shape[0], classes = logits->shape[1];
  kiln_tensor *p = kiln_softmax(logits, -1);
  kiln_tensor *diff = kiln_sub(p, kiln_one_hot(labels, classes, logits->dtype));
  c->in_grad[0] = kiln_div_scalar(kiln_mul(diff, G), n ? (double)n : 1.0);
  return KILN_OK;
}

/* conv2d: x [N, C, H, W], w [O, C/groups, KH, KW], bias [O]. The data and
 * weight gradients are the registry's conv2d_backward_data and
 * conv2d_backward_weight with conv2d's own attributes; the bias gradient
 * sums g over N, OH and OW. */
static kiln_status grad_conv2d(kiln_grad_call *c) {
  kiln_tensor *x = c->in[0], *w = c->in[1], *g = G;
  if (NEED(0)) c->in_grad[0] = nn_conv2d_backward_data(g, w, c->attrs, x->shape[2], x->shape[3]);
  if (NEED(1)) c->in_grad[1] = nn_conv2d_backward_weight(g, x, c->attrs, w->shape[2], w->shape[3]);
  if (c->n_in > 2 && NEED(2)) c->in_grad[2] = kiln_sum(g, 3, (int[]){0, 2, 3}, false);
  return KILN_OK;
}

/* Max pooling sends each window's gradient to its first maximum (PyTorch's
 * choice among ties); average pooling spreads it with the forward's
 * divisor. Both backward ops take the forward's attributes. */
static kiln_status grad_pool2d(kiln_grad_call *c) {
  kiln_op_id fwd = c->def->code == 1 ? KILN_OP_AVG_POOL2D : KILN_OP_MAX_POOL2D;
  c->in_grad[0] = nn_pool2d_backward(fwd, G, X, c->attrs);
  return KILN_OK;
}

/* dropout is y = x * keep / (1 - p) with keep a function of (seed, offset,
 * flat index) only, so its gradient is the same op, with the same
 * attributes, applied to g: g * keep / (1 - p), the mask recomputed rather
 * than saved (and right even where x was 0, which y != 0 would not be). */
static kiln_status grad_dropout(kiln_grad_call *c) {
  c->in_grad[0] = kiln_dispatch1(KILN_OP_DROPOUT, 1, (kiln_tensor *const[]){G}, c->attrs);
  return KILN_OK;
}

/* batch_norm with given statistics is affine in x per channel: y = gamma
 * (x - mean) rstd + beta, rstd = (var + eps)^-1/2. */
static kiln_status grad_batch_norm(kiln_grad_call *c) {
  kiln_tensor *x = X, *g = G;
  int axes[KILN_MAX_DIMS], n = 0;
  int64_t per_channel[KILN_MAX_DIMS];
  for (int d = 0; d < x->ndim; d++) {
    per_channel[d] = d == 1 ? x->shape[1] : 1;
    if (d != 1) axes[n++] = d;
  }
  kiln_tensor *gamma = kiln_reshape(c->in[1], x->ndim, per_channel);
  kiln_tensor *mean = kiln_reshape(c->in[3], x->ndim, per_channel);
  kiln_tensor *rstd = kiln_rsqrt(kiln_add_scalar(kiln_reshape(c->in[4], x->ndim, per_channel), c->attrs[0].f));
  kiln_tensor *centred = kiln_sub(x, mean), *g_scaled = kiln_mul(g, kiln_mul(gamma, rstd));
  const int64_t *ch = &x->shape[1];
  if (NEED(0)) c->in_grad[0] = g_scaled;
  if (NEED(1)) c->in_grad[1] = kiln_reshape(kiln_sum(kiln_mul(g, kiln_mul(centred, rstd)), n, axes, true), 1, ch);
  if (NEED(2)) c->in_grad[2] = kiln_reshape(kiln_sum(g, n, axes, true), 1, ch);
  if (NEED(3)) c->in_grad[3] = kiln_reshape(kiln_neg(kiln_sum(g_scaled, n, axes, true)), 1, ch);
  if (NEED(4)) {
    kiln_tensor *d = kiln_mul(g_scaled, kiln_mul_scalar(kiln_mul(centred, kiln_square(rstd)), -0.5));
    c->in_grad[4] = kiln_reshape(kiln_sum(d, n, axes, true), 1, ch);
  }
  return KILN_OK;
}

/* batch_norm_train over M = N * spatial elements per channel, with xhat =
 * (x - mean) rstd: dbeta = sum g, dgamma = sum g xhat, and
 * dx = gamma rstd / M (M g - dbeta - xhat dgamma), plus the terms of the
 * mean and variance outputs when a path reached them (d mean = 1 / M,
 * d var = 2 (x - mean) / (M - 1): the variance output is unbiased). */
static kiln_status grad_batch_norm_train(kiln_grad_call *c) {
  kiln_tensor *x = X, *gamma = c->in[1], *g = G;
  int axes[KILN_MAX_DIMS], n = 0;
  int64_t per_channel[KILN_MAX_DIMS];
  for (int d = 0; d < x->ndim; d++) {
    per_channel[d] = d == 1 ? x->shape[1] : 1;
    if (d != 1) axes[n++] = d;
  }
  double m = x->shape[1] ? (double)kiln_tensor_numel(x) / (double)x->shape[1] : 0;
  kiln_tensor *mean = kiln_reshape(c->out[1], x->ndim, per_channel);
  kiln_tensor *biased = kiln_mul_scalar(kiln_reshape(c->out[2], x->ndim, per_channel), m > 1 ? (m - 1) / m : 0);
  kiln_tensor *rstd = kiln_rsqrt(kiln_add_scalar(biased, c->attrs[0].f));
  kiln_tensor *centred = kiln_sub(x, mean), *xhat = kiln_mul(centred, rstd);
  kiln_tensor *dbeta = kiln_sum(g, n, axes, true), *dgamma = kiln_sum(kiln_mul(g, xhat), n, axes, true);
  if (NEED(0)) {
    kiln_tensor *scale = kiln_mul_scalar(kiln_mul(kiln_reshape(gamma, x->ndim, per_channel), rstd), m > 0 ? 1 / m : 0);
    kiln_tensor *dx = kiln_mul(scale, kiln_sub(kiln_sub(kiln_mul_scalar(g, m), dbeta), kiln_mul(xhat, dgamma)));
    if (c->out_reached[1]) dx = kiln_add(dx, kiln_mul_scalar(kiln_reshape(c->out_grad[1], x->ndim, per_channel), 1 / m));
    if (c->out_reached[2] && m > 1)
      dx = kiln_add(dx, kiln_mul(kiln_reshape(c->out_grad[2], x->ndim, per_channel), kiln_mul_scalar(centred, 2 / (m - 1))));
    c->in_grad[0] = dx;
  }
  if (NEED(1)) c->in_grad[1] = kiln_reshape(dgamma, 1, &x->shape[1]);
  if (NEED(2)) c->in_grad[2] = kiln_reshape(dbeta, 1, &x->shape[1]);
  return KILN_OK;
}

/* ------------------------------------------------------------ the table */

static kiln_grad_fn grads[KILN_OP_COUNT];

static void fill_table(void) {
  static const kiln_op_id unary[] = {KILN_OP_NEG,     KILN_OP_ABS,   KILN_OP_EXP,        KILN_OP_LOG,  KILN_OP_SQRT,
                                     KILN_OP_RSQRT,   KILN_OP_SQUARE, KILN_OP_SIN,       KILN_OP_COS,  KILN_OP_TANH,
                                     KILN_OP_SIGMOID, KILN_OP_RELU,  KILN_OP_LEAKY_RELU, KILN_OP_SOFTPLUS,
                                     KILN_OP_CLIP,    KILN_OP_SIGN,  KILN_OP_FLOOR,      KILN_OP_CEIL, KILN_OP_ROUND,
                                     KILN_OP_GELU,    KILN_OP_ERF};
  for (size_t i = 0; i < sizeof unary / sizeof *unary; i++) grads[unary[i]] = grad_unary;
  static const kiln_op_id binary[] = {KILN_OP_ADD, KILN_OP_SUB, KILN_OP_MUL, KILN_OP_DIV, KILN_OP_POW,
                                      KILN_OP_MAXIMUM, KILN_OP_MINIMUM};
  for (size_t i = 0; i < sizeof binary / sizeof *binary; i++) grads[binary[i]] = grad_binary;
  static const kiln_op_id scalar[] = {KILN_OP_ADD_SCALAR, KILN_OP_SUB_SCALAR, KILN_OP_MUL_SCALAR, KILN_OP_DIV_SCALAR,
                                      KILN_OP_POW_SCALAR, KILN_OP_MAXIMUM_SCALAR, KILN_OP_MINIMUM_SCALAR};
  for (size_t i = 0; i < sizeof scalar / sizeof *scalar; i++) grads[scalar[i]] = grad_scalar;
  static const kiln_op_id reductions[] = {KILN_OP_SUM, KILN_OP_MEAN, KILN_OP_MAX, KILN_OP_MIN, KILN_OP_LOGSUMEXP,
                                          KILN_OP_VAR, KILN_OP_PROD};
  for (size_t i = 0; i < sizeof reductions / sizeof *reductions; i++) grads[reductions[i]] = grad_reduce;
  grads[KILN_OP_WHERE] = grad_where;
  grads[KILN_OP_MATMUL] = grad_matmul;
  grads[KILN_OP_LINEAR] = grad_linear;
  grads[KILN_OP_RESHAPE] = grad_reshape_like;
  grads[KILN_OP_SQUEEZE] = grad_reshape_like;
  grads[KILN_OP_EXPAND_DIMS] = grad_reshape_like;
  grads[KILN_OP_COPY] = grad_reshape_like;
  grads[KILN_OP_PERMUTE] = grad_permute;
  grads[KILN_OP_BROADCAST_TO] = grad_broadcast_to;
  grads[KILN_OP_SLICE] = grad_slice;
  grads[KILN_OP_CAST] = grad_cast;
  grads[KILN_OP_CONCAT] = grad_concat;
  grads[KILN_OP_SPLIT] = grad_split;
  grads[KILN_OP_STACK] = grad_stack;
  grads[KILN_OP_TAKE] = grad_take;
  grads[KILN_OP_GATHER] = grad_gather;
  grads[KILN_OP_PAD] = grad_pad;
  grads[KILN_OP_SOFTMAX] = grad_softmax;
  grads[KILN_OP_LOG_SOFTMAX] = grad_softmax;
  grads[KILN_OP_SOFTMAX_CROSS_ENTROPY] = grad_softmax_cross_entropy;
  grads[KILN_OP_CONV2D] = grad_conv2d;
  grads[KILN_OP_MAX_POOL2D] = grad_pool2d;
  grads[KILN_OP_AVG_POOL2D] = grad_pool2d;
  grads[KILN_OP_DROPOUT] = grad_dropout;
  grads[KILN_OP_BATCH_NORM] = grad_batch_norm;
  grads[KILN_OP_BATCH_NORM_TRAIN] = grad_batch_norm_train;
}

kiln_grad_fn kiln_op_grad(kiln_op_id id) {
  static pthread_once_t once = PTHREAD_ONCE_INIT;
  pthread_once(&once, fill_table);
  return (unsigned)id < KILN_OP_COUNT ? grads[id] : NULL;
}
