/* The neural-network ops of the registry: softmax, log_softmax,
 * softmax_cross_entropy, conv2d, max_pool2d, avg_pool2d, batch_norm,
 * batch_norm_train and dropout, with their attribute specs, shape and dtype
 * inference and the public wrappers of kiln.h.
 *
 * Inference is where caller mistakes are caught: every bad shape, dtype or
 * attribute fails here through kiln_op_fail, naming the op and the offending
 * shapes or values, before anything is allocated. The kernel bindings then
 * only translate attributes into the kernels' geometry structs (src/kernels/
 * nn.h); the one failure a kernel can find in data (a label out of range) is
 * turned into a message here, so the kernel layer needs no op. */
#include <math.h>
#include <string.h>

#include "imperative/dispatch.h"
#include "kernels/nn.h"
#include "ops/nn_grad.h"
#include "ops/op.h"
#include "tensor/tensor.h"

/* ------------------------------------------------------------ shared checks */

#define SHAPE_STR(buf, v) kiln_shape_str((buf), sizeof(buf), (v)->ndim, (v)->shape)

static kiln_status need_float(const kiln_op_call *c, const kk_view *v, const char *what) {
  if (kk_is_float(v->dtype)) return KILN_OK;
  return kiln_op_fail(c, KILN_ERR_DTYPE, "%s must be float32 or float64, got %s", what, kiln_dtype_name(v->dtype));
}

static kiln_status need_dtype(const kiln_op_call *c, const kk_view *v, kiln_dtype dt, const char *what) {
  if (v->dtype == dt) return KILN_OK;
  return kiln_op_fail(c, KILN_ERR_DTYPE, "%s is %s but the input is %s", what, kiln_dtype_name(v->dtype),
                      kiln_dtype_name(dt));
}

static void same_as(kiln_out_desc *out, const kk_view *v) {
  out->dtype = v->dtype;
  out->ndim = v->ndim;
  memcpy(out->shape, v->shape, sizeof out->shape);
}

/* A [C] parameter vector matching the channels of x. */
static kiln_status need_channel_vector(const kiln_op_call *c, const kk_view *v, const kk_view *x, const char *what) {
  char a[KILN_SHAPE_STR_MAX], b[KILN_SHAPE_STR_MAX];
  if (v->ndim != 1 || v->shape[0] != x->shape[1])
    return kiln_op_fail(c, KILN_ERR_SHAPE, "%s %s does not match the %lld channels of input %s (want [%lld])", what,
                        SHAPE_STR(a, v), (long long)x->shape[1], SHAPE_STR(b, x), (long long)x->shape[1]);
  return need_dtype(c, v, x->dtype, what);
}

/* A height/width pair from an INTS attribute: empty takes dflt, one value
 * serves both axes, two are (height, width). */
static kiln_status pair_attr(const kiln_op_call *c, int idx, int64_t dflt, int64_t out[2]) {
  const kiln_attr_value *v = &c->attrs[idx];
  const char *name = c->def->attrs[idx].name;
  switch (v->n) {
  case 0:
    out[0] = out[1] = dflt;
    return KILN_OK;
  case 1:
    out[0] = out[1] = v->ints[0];
    return KILN_OK;
  case 2:
    out[0] = v->ints[0];
    out[1] = v->ints[1];
    return KILN_OK;
  default:
    return kiln_op_fail(c, KILN_ERR_INVALID_ARGUMENT, "%s takes 1 or 2 values (height, width), got %d", name, v->n);
  }
}

/* Attribute values are bounded so that the size arithmetic below cannot
 * overflow: each is at most 2^31, so products of two fit in int64. */
#define ATTR_LIMIT ((int64_t)1 << 31)

static kiln_status check_pair(const kiln_op_call *c, const char *name, const int64_t v[2], int64_t min) {
  if (v[0] < min || v[1] < min)
    return kiln_op_fail(c, KILN_ERR_INVALID_ARGUMENT, "%s must be %s, got [%lld, %lld]", name,
                        min > 0 ? "positive" : "non-negative", (long long)v[0], (long long)v[1]);
  if (v[0] > ATTR_LIMIT || v[1] > ATTR_LIMIT)
    return kiln_op_fail(c, KILN_ERR_OVERFLOW, "%s [%lld, %lld] is too large", name, (long long)v[0],
                        (long long)v[1]);
  return KILN_OK;
}

/* Output length of a window sweep: floor((len + 2 pad - extent) / stride) + 1,
 * or a failure when the (dilated) window does not fit the padded input. */
static kiln_status sweep_len(const kiln_op_call *c, const kk_view *x, const char *what, const int64_t ext[2],
                             const int64_t kernel[2], const int64_t pad[2], const int64_t stride[2], int64_t out[2]) {
  for (int a = 0; a < 2; a++) {
    int64_t padded = x->shape[2 + a] + 2 * pad[a];
    if (ext[a] > padded) {
      char buf[KILN_SHAPE_STR_MAX];
      return kiln_op_fail(c, KILN_ERR_SHAPE,
                          "%s %lldx%lld (extent %lldx%lld) is larger than the padded input %lldx%lld (input %s, "
                          "padding [%lld, %lld])",
                          what, (long long)kernel[0], (long long)kernel[1], (long long)ext[0], (long long)ext[1],
                          (long long)(x->shape[2] + 2 * pad[0]), (long long)(x->shape[3] + 2 * pad[1]),
                          SHAPE_STR(buf, x), (long long)pad[0], (long long)pad[1]);
    }
    out[a] = (padded - ext[a]) / stride[a] + 1;
  }
  return KILN_OK;
}

static kiln_status need_nchw(const kiln_op_call *c, const kk_view *x) {
  char buf[KILN_SHAPE_STR_MAX];
  if (x->ndim != 4)
    return kiln_op_fail(c, KILN_ERR_SHAPE, "input must be 4-D [N, C, H, W], got %s", SHAPE_STR(buf, x));
  if (x->shape[2] > ATTR_LIMIT || x->shape[3] > ATTR_LIMIT)
    return kiln_op_fail(c, KILN_ERR_OVERFLOW, "input %s is too large", SHAPE_STR(buf, x));
  return need_float(c, x, "input");
}

/* ------------------------------------------------------------ softmax, log_softmax */

static kiln_status softmax_infer(const kiln_op_call *c, kiln_out_desc *out) {
  const kk_view *x = &c->in[0];
  kiln_status st = need_float(c, x, "input");
  if (st != KILN_OK) return st;
  /* A 0-d tensor is one row of one element, named by axis 0 or -1. */
  int axis;
  if ((st = kiln_op_axis(c, c->attrs[0].i, x->ndim, &axis)) != KILN_OK) return st;
  same_as(out, x);
  return KILN_OK;
}

static int softmax_axis(const kiln_op_call *c) {
  int64_t a = c->attrs[0].i, nd = c->in[0].ndim;
  if (nd == 0) return 0;
  return (int)(a < 0 ? a + nd : a);
}

/* code 1 is log_softmax. */
static kiln_status softmax_kernel(const kiln_op_call *c) {
  return kk_softmax(&c->in[0], &c->out[0], softmax_axis(c), c->def->code == 1);
}
static kiln_status softmax_reference(const kiln_op_call *c) {
  return kk_softmax_ref(&c->in[0], &c->out[0], softmax_axis(c), c->def->code == 1);
}

static const kiln_attr_spec softmax_attrs[] = {{"axis", KILN_ATTR_INT, -1}};
const kiln_op_def kiln_opdef_softmax = {.name = "softmax",
                                        .min_inputs = 1,
                                        .max_inputs = 1,
                                        .n_outputs = 1,
                                        .attrs = softmax_attrs,
                                        .n_attrs = KILN_COUNTOF(softmax_attrs),
                                        .code = 0,
                                        .infer = softmax_infer,
                                        .kernel = softmax_kernel,
                                        .reference = softmax_reference};
const kiln_op_def kiln_opdef_log_softmax = {.name = "log_softmax",
                                            .min_inputs = 1,
                                            .max_inputs = 1,
                                            .n_outputs = 1,
                                            .attrs = softmax_attrs,
                                            .n_attrs = KILN_COUNTOF(softmax_attrs),
                                            .code = 1,
                                            .infer = softmax_infer,
                                            .kernel = softmax_kernel,
                                            .reference = softmax_reference};

/* ------------------------------------------------------------ softmax_cross_entropy */

/* logits [N, C] float, labels [N] int32/int64 -> 0-d of the logits' dtype. */
static kiln_status xent_infer(const kiln_op_call *c, kiln_out_desc *out) {
  const kk_view *x = &c->in[0], *l = &c->in[1];
  char a[KILN_SHAPE_STR_MAX], b[KILN_SHAPE_STR_MAX];
  if (x->ndim != 2) return kiln_op_fail(c, KILN_ERR_SHAPE, "logits must be 2-D [N, C], got %s", SHAPE_STR(a, x));
  kiln_status st = need_float(c, x, "logits");
  if (st != KILN_OK) return st;
  if (l->ndim != 1) return kiln_op_fail(c, KILN_ERR_SHAPE, "labels must be 1-D [N], got %s", SHAPE_STR(a, l));
  if (l->dtype != KILN_I32 && l->dtype != KILN_I64)
    return kiln_op_fail(c, KILN_ERR_DTYPE, "labels must be int32 or int64, got %s", kiln_dtype_name(l->dtype));
  if (l->shape[0] != x->shape[0])
    return kiln_op_fail(c, KILN_ERR_SHAPE, "logits %s and labels %s disagree on the batch size", SHAPE_STR(a, x),
                        SHAPE_STR(b, l));
  out->dtype = x->dtype;
  out->ndim = 0;
  return KILN_OK;
}

static kiln_status xent_report(const kiln_op_call *c, int64_t bad) {
  if (bad < 0) return KILN_OK;
  const kk_view *l = &c->in[1];
  int64_t v = kk_get_i64(l->dtype, l->data + bad * l->strides[0] * (int64_t)kiln_dtype_size(l->dtype));
  return kiln_op_fail(c, KILN_ERR_OUT_OF_RANGE, "label %lld at index %lld is outside [0, %lld)", (long long)v,
                      (long long)bad, (long long)c->in[0].shape[1]);
}

static kiln_status xent_kernel(const kiln_op_call *c) {
  return xent_report(c, kk_softmax_xent(&c->in[0], &c->in[1], &c->out[0]));
}
static kiln_status xent_reference(const kiln_op_call *c) {
  return xent_report(c, kk_softmax_xent_ref(&c->in[0], &c->in[1], &c->out[0]));
}

const kiln_op_def kiln_opdef_softmax_cross_entropy = {.name = "softmax_cross_entropy",
                                                      .min_inputs = 2,
                                                      .max_inputs = 2,
                                                      .n_outputs = 1,
                                                      .infer = xent_infer,
                                                      .kernel = xent_kernel,
                                                      .reference = xent_reference};

/* ------------------------------------------------------------ conv2d */

enum { CONV_STRIDE, CONV_PADDING, CONV_DILATION, CONV_GROUPS };
static const kiln_attr_spec conv2d_attrs[] = {
    {"stride", KILN_ATTR_INTS, 0},
    {"padding", KILN_ATTR_INTS, 0},
    {"dilation", KILN_ATTR_INTS, 0},
    {"groups", KILN_ATTR_INT, 1},
};

static kiln_status conv_geom(const kiln_op_call *c, kk_conv2d_geom *g) {
  kiln_status st;
  if ((st = pair_attr(c, CONV_STRIDE, 1, g->stride)) != KILN_OK) return st;
  if ((st = pair_attr(c, CONV_PADDING, 0, g->pad)) != KILN_OK) return st;
  if ((st = pair_attr(c, CONV_DILATION, 1, g->dilation)) != KILN_OK) return st;
  g->groups = c->attrs[CONV_GROUPS].i;
  return KILN_OK;
}

/* x [N, C, H, W], w [O, C/groups, KH, KW], bias [O] -> [N, O, OH, OW]. */
static kiln_status conv2d_infer(const kiln_op_call *c, kiln_out_desc *out) {
  const kk_view *x = &c->in[0], *w = &c->in[1];
  char a[KILN_SHAPE_STR_MAX], b[KILN_SHAPE_STR_MAX];
  kk_conv2d_geom g;
  kiln_status st = conv_geom(c, &g);
  if (st != KILN_OK) return st;
  if ((st = need_nchw(c, x)) != KILN_OK) return st;
  if (w->ndim != 4)
    return kiln_op_fail(c, KILN_ERR_SHAPE, "weight must be 4-D [O, C/groups, KH, KW], got %s", SHAPE_STR(a, w));
  if ((st = need_dtype(c, w, x->dtype, "weight")) != KILN_OK) return st;
  if (g.groups < 1 || g.groups > ATTR_LIMIT)
    return kiln_op_fail(c, KILN_ERR_INVALID_ARGUMENT, "groups must be positive, got %lld", (long long)g.groups);
  int64_t ch = x->shape[1], o = w->shape[0];
  if (ch % g.groups != 0)
    return kiln_op_fail(c, KILN_ERR_SHAPE, "groups %lld does not divide the %lld input channels of input %s",
                        (long long)g.groups, (long long)ch, SHAPE_STR(a, x));
  if (o % g.groups != 0)
    return kiln_op_fail(c, KILN_ERR_SHAPE, "groups %lld does not divide the %lld output channels of weight %s",
                        (long long)g.groups, (long long)o, SHAPE_STR(a, w));
  if (w->shape[1] != ch / g.groups)
    return kiln_op_fail(c, KILN_ERR_SHAPE,
                        "channel mismatch: input %s has %lld channels, so weight %s should have %lld per group "
                        "(groups %lld), not %lld",
                        SHAPE_STR(a, x), (long long)ch, SHAPE_STR(b, w), (long long)(ch / g.groups),
                        (long long)g.groups, (long long)w->shape[1]);
  if (w->shape[2] < 1 || w->shape[3] < 1 || w->shape[2] > ATTR_LIMIT || w->shape[3] > ATTR_LIMIT)
    return kiln_op_fail(c, KILN_ERR_SHAPE, "kernel size must be positive, got weight %s", SHAPE_STR(a, w));
  if ((st = check_pair(c, "stride", g.stride, 1)) != KILN_OK) return st;
  if ((st = check_pair(c, "padding", g.pad, 0)) != KILN_OK) return st;
  if ((st = check_pair(c, "dilation", g.dilation, 1)) != KILN_OK) return st;
  if (c->n_in > 2) {
    const kk_view *bias = &c->in[2];
    if (bias->ndim != 1 || bias->shape[0] != o)
      return kiln_op_fail(c, KILN_ERR_SHAPE, "bias must be [%lld] for weight %s, got %s", (long long)o,
                          SHAPE_STR(a, w), SHAPE_STR(b, bias));
    if ((st = need_dtype(c, bias, x->dtype, "bias")) != KILN_OK) return st;
  }
  int64_t kernel[2] = {w->shape[2], w->shape[3]}, ext[2], len[2];
  for (int i = 0; i < 2; i++) ext[i] = g.dilation[i] * (kernel[i] - 1) + 1;
  if ((st = sweep_len(c, x, "kernel", ext, kernel, g.pad, g.stride, len)) != KILN_OK) return st;
  out->dtype = x->dtype;
  out->ndim = 4;
  out->shape[0] = x->shape[0];
  out->shape[1] = o;
  out->shape[2] = len[0];
  out->shape[3] = len[1];
  return KILN_OK;
}

static kiln_status conv2d_kernel(const kiln_op_call *c) {
  kk_conv2d_geom g;
  conv_geom(c, &g);
  return kk_conv2d(&c->in[0], &c->in[1], c->n_in > 2 ? &c->in[2] : NULL, &c->out[0], &g);
}
static kiln_status conv2d_reference(const kiln_op_call *c) {
  kk_conv2d_geom g;
  conv_geom(c, &g);
  return kk_conv2d_ref(&c->in[0], &c->in[1], c->n_in > 2 ? &c->in[2] : NULL, &c->out[0], &g);
}

const kiln_op_def kiln_opdef_conv2d = {.name = "conv2d",
                                       .min_inputs = 2,
                                       .max_inputs = 3,
                                       .n_outputs = 1,
                                       .attrs = conv2d_attrs,
                                       .n_attrs = KILN_COUNTOF(conv2d_attrs),
                                       .infer = conv2d_infer,
                                       .kernel = conv2d_kernel,
                                       .reference = conv2d_reference};

/* ------------------------------------------------------------ max_pool2d, avg_pool2d */

enum { POOL_KERNEL, POOL_STRIDE, POOL_PADDING, POOL_COUNT_INCLUDE_PAD };
static const kiln_attr_spec max_pool_attrs[] = {
    {"kernel", KILN_ATTR_INTS, 0},
    {"stride", KILN_ATTR_INTS, 0},
    {"padding", KILN_ATTR_INTS, 0},
};
static const kiln_attr_spec avg_pool_attrs[] = {
    {"kernel", KILN_ATTR_INTS, 0},
    {"stride", KILN_ATTR_INTS, 0},
    {"padding", KILN_ATTR_INTS, 0},
    {"count_include_pad", KILN_ATTR_INT, 0},
};

/* Reads and checks the window; stride 0 (or absent) becomes the kernel. */
static kiln_status pool_geom(const kiln_op_call *c, kk_pool2d_geom *g) {
  kiln_status st;
  if (c->attrs[POOL_KERNEL].n == 0) return kiln_op_fail(c, KILN_ERR_INVALID_ARGUMENT, "kernel size is required");
  if ((st = pair_attr(c, POOL_KERNEL, 0, g->kernel)) != KILN_OK) return st;
  if ((st = pair_attr(c, POOL_STRIDE, 0, g->stride)) != KILN_OK) return st;
  if ((st = pair_attr(c, POOL_PADDING, 0, g->pad)) != KILN_OK) return st;
  g->count_include_pad = c->def->n_attrs > POOL_COUNT_INCLUDE_PAD && c->attrs[POOL_COUNT_INCLUDE_PAD].i != 0;
  if ((st = check_pair(c, "kernel", g->kernel, 1)) != KILN_OK) return st;
  if ((st = check_pair(c, "stride", g->stride, 0)) != KILN_OK) return st;
  if ((st = check_pair(c, "padding", g->pad, 0)) != KILN_OK) return st;
  for (int a = 0; a < 2; a++)
    if (g->stride[a] == 0) g->stride[a] = g->kernel[a];
  /* PyTorch's rule: beyond half the kernel a window could lie wholly in the
   * padding, where a max has nothing to take and an average nothing to
   * divide. */
  if (2 * g->pad[0] > g->kernel[0] || 2 * g->pad[1] > g->kernel[1])
    return kiln_op_fail(c, KILN_ERR_INVALID_ARGUMENT, "padding [%lld, %lld] must be at most half the kernel [%lld, %lld]",
                        (long long)g->pad[0], (long long)g->pad[1], (long long)g->kernel[0], (long long)g->kernel[1]);
  return KILN_OK;
}

/* x [N, C, H, W] -> [N, C, OH, OW]. */
static kiln_status pool_infer(const kiln_op_call *c, kiln_out_desc *out) {
  const kk_view *x = &c->in[0];
  kk_pool2d_geom g;
  kiln_status st = need_nchw(c, x);
  if (st != KILN_OK) return st;
  if ((st = pool_geom(c, &g)) != KILN_OK) return st;
  int64_t len[2];
  if ((st = sweep_len(c, x, "kernel", g.kernel, g.kernel, g.pad, g.stride, len)) != KILN_OK) return st;
  out->dtype = x->dtype;
  out->ndim = 4;
  out->shape[0] = x->shape[0];
  out->shape[1] = x->shape[1];
  out->shape[2] = len[0];
  out->shape[3] = len[1];
  return KILN_OK;
}

/* code 1 is avg_pool2d. */
static kiln_status pool_kernel(const kiln_op_call *c) {
  kk_pool2d_geom g;
  pool_geom(c, &g);
  return c->def->code == 1 ? kk_avg_pool2d(&c->in[0], &c->out[0], &g) : kk_max_pool2d(&c->in[0], &c->out[0], &g);
}
static kiln_status pool_reference(const kiln_op_call *c) {
  kk_pool2d_geom g;
  pool_geom(c, &g);
  return c->def->code == 1 ? kk_avg_pool2d_ref(&c->in[0], &c->out[0], &g)
                           : kk_max_pool2d_ref(&c->in[0], &c->out[0], &g);
}

const kiln_op_def kiln_opdef_max_pool2d = {.name = "max_pool2d",
                                           .min_inputs = 1,
                                           .max_inputs = 1,
                                           .n_outputs = 1,
                                           .attrs = max_pool_attrs,
                                           .n_attrs = KILN_COUNTOF(max_pool_attrs),
                                           .code = 0,
                                           .infer = pool_infer,
                                           .kernel = pool_kernel,
                                           .reference = pool_reference};
const kiln_op_def kiln_opdef_avg_pool2d = {.name = "avg_pool2d",
                                           .min_inputs = 1,
                                           .max_inputs = 1,
                                           .n_outputs = 1,
                                           .attrs = avg_pool_attrs,
                                           .n_attrs = KILN_COUNTOF(avg_pool_attrs),
                                           .code = 1,
                                           .infer = pool_infer,
                                           .kernel = pool_kernel,
                                           .reference = pool_reference};

/* ------------------------------------------------------------ batch_norm, batch_norm_train */

static const kiln_attr_spec batch_norm_attrs[] = {{"eps", KILN_ATTR_FLOAT, 1e-5}};

static kiln_status bn_check(const kiln_op_call *c, int n_params, const char *const *names) {
  const kk_view *x = &c->in[0];
  char buf[KILN_SHAPE_STR_MAX];
  if (x->ndim < 2)
    return kiln_op_fail(c, KILN_ERR_SHAPE, "input must be [N, C, ...] with at least 2 dims, got %s",
                        SHAPE_STR(buf, x));
  kiln_status st = need_float(c, x, "input");
  if (st != KILN_OK) return st;
  for (int i = 0; i < n_params; i++)
    if ((st = need_channel_vector(c, &c->in[1 + i], x, names[i])) != KILN_OK) return st;
  double eps = c->attrs[0].f;
  if (!(eps >= 0) || isinf(eps))
    return kiln_op_fail(c, KILN_ERR_INVALID_ARGUMENT, "eps must be finite and non-negative, got %g", eps);
  return KILN_OK;
}

/* x [N, C, ...], gamma, beta, running_mean, running_var [C] -> x's shape. */
static kiln_status batch_norm_infer(const kiln_op_call *c, kiln_out_desc *out) {
  static const char *const names[] = {"gamma", "beta", "running_mean", "running_var"};
  kiln_status st = bn_check(c, 4, names);
  if (st != KILN_OK) return st;
  same_as(out, &c->in[0]);
  return KILN_OK;
}

static kiln_status batch_norm_kernel(const kiln_op_call *c) {
  return kk_batch_norm(&c->in[0], &c->in[1], &c->in[2], &c->in[3], &c->in[4], c->attrs[0].f, &c->out[0]);
}
static kiln_status batch_norm_reference(const kiln_op_call *c) {
  return kk_batch_norm_ref(&c->in[0], &c->in[1], &c->in[2], &c->in[3], &c->in[4], c->attrs[0].f, &c->out[0]);
}

const kiln_op_def kiln_opdef_batch_norm = {.name = "batch_norm",
                                           .min_inputs = 5,
                                           .max_inputs = 5,
                                           .n_outputs = 1,
                                           .attrs = batch_norm_attrs,
                                           .n_attrs = KILN_COUNTOF(batch_norm_attrs),
                                           .infer = batch_norm_infer,
                                           .kernel = batch_norm_kernel,
                                           .reference = batch_norm_reference};

/* x [N, C, ...], gamma, beta [C] -> y (x's shape), batch mean [C], unbiased
 * batch variance [C]. */
static kiln_status batch_norm_train_infer(const kiln_op_call *c, kiln_out_desc *out) {
  static const char *const names[] = {"gamma", "beta"};
  kiln_status st = bn_check(c, 2, names);
  if (st != KILN_OK) return st;
  const kk_view *x = &c->in[0];
  int64_t per_channel = x->shape[1] ? kk_numel(x) / x->shape[1] : 0;
  if (x->shape[1] > 0 && per_channel < 2) {
    char buf[KILN_SHAPE_STR_MAX];
    /* The unbiased variance divides by count - 1; PyTorch refuses too. */
    return kiln_op_fail(c, KILN_ERR_SHAPE, "expected more than 1 value per channel when training, got input %s",
                        SHAPE_STR(buf, x));
  }
  same_as(&out[0], x);
  for (int i = 1; i < 3; i++) {
    out[i].dtype = x->dtype;
    out[i].ndim = 1;
    out[i].shape[0] = x->shape[1];
  }
  return KILN_OK;
}

static kiln_status batch_norm_train_kernel(const kiln_op_call *c) {
  return kk_batch_norm_train(&c->in[0], &c->in[1], &c->in[2], c->attrs[0].f, &c->out[0], &c->out[1], &c->out[2]);
}
static kiln_status batch_norm_train_reference(const kiln_op_call *c) {
  return kk_batch_norm_train_ref(&c->in[0], &c->in[1], &c->in[2], c->attrs[0].f, &c->out[0], &c->out[1],
                                 &c->out[2]);
}

const kiln_op_def kiln_opdef_batch_norm_train = {.name = "batch_norm_train",
                                                 .min_inputs = 3,
                                                 .max_inputs = 3,
                                                 .n_outputs = 3,
                                                 .attrs = batch_norm_attrs,
                                                 .n_attrs = KILN_COUNTOF(batch_norm_attrs),
                                                 .infer = batch_norm_train_infer,
                                                 .kernel = batch_norm_train_kernel,
                                                 .reference = batch_norm_train_reference};

/* ------------------------------------------------------------ dropout */

enum { DROPOUT_P, DROPOUT_SEED, DROPOUT_OFFSET };
static const kiln_attr_spec dropout_attrs[] = {
    {"p", KILN_ATTR_FLOAT, 0.5},
    {"seed", KILN_ATTR_INT, 0},
    {"offset", KILN_ATTR_INT, 0},
};

static kiln_status dropout_infer(const kiln_op_call *c, kiln_out_desc *out) {
  const kk_view *x = &c->in[0];
  kiln_status st = need_float(c, x, "input");
  if (st != KILN_OK) return st;
  double p = c->attrs[DROPOUT_P].f;
  if (!(p >= 0 && p < 1))
    return kiln_op_fail(c, KILN_ERR_OUT_OF_RANGE, "p must be in [0, 1), got %g", p);
  same_as(out, x);
  return KILN_OK;
}

static kiln_status dropout_kernel(const kiln_op_call *c) {
  return kk_dropout(&c->in[0], &c->out[0], c->attrs[DROPOUT_P].f, (uint64_t)c->attrs[DROPOUT_SEED].i,
                    (uint64_t)c->attrs[DROPOUT_OFFSET].i);
}
static kiln_status dropout_reference(const kiln_op_call *c) {
  return kk_dropout_ref(&c->in[0], &c->out[0], c->attrs[DROPOUT_P].f, (uint64_t)c->attrs[DROPOUT_SEED].i,
                        (uint64_t)c->attrs[DROPOUT_OFFSET].i);
}

const kiln_op_def kiln_opdef_dropout = {.name = "dropout",
                                        .min_inputs = 1,
                                        .max_inputs = 1,
                                        .n_outputs = 1,
                                        .attrs = dropout_attrs,
                                        .n_attrs = KILN_COUNTOF(dropout_attrs),
                                        .flags = KILN_OP_RANDOM,
                                        .infer = dropout_infer,
                                        .kernel = dropout_kernel,
                                        .reference = dropout_reference};

/* ------------------------------------------------------------ gradient ops */

/* conv2d's attributes, then the size the gradient has: the input's [H, W]
 * for the data gradient, the kernel's [KH, KW] for the weight gradient. */
enum { CONV_GRAD_SIZE = CONV_GROUPS + 1 };
static const kiln_attr_spec conv2d_backward_data_attrs[] = {
    {"stride", KILN_ATTR_INTS, 0},   {"padding", KILN_ATTR_INTS, 0},    {"dilation", KILN_ATTR_INTS, 0},
    {"groups", KILN_ATTR_INT, 1},    {"input_size", KILN_ATTR_INTS, 0},
};
static const kiln_attr_spec conv2d_backward_weight_attrs[] = {
    {"stride", KILN_ATTR_INTS, 0},   {"padding", KILN_ATTR_INTS, 0},    {"dilation", KILN_ATTR_INTS, 0},
    {"groups", KILN_ATTR_INT, 1},    {"kernel_size", KILN_ATTR_INTS, 0},
};

/* The geometry and the size attribute, checked as conv2d checks them. */
static kiln_status conv_grad_geom(const kiln_op_call *c, kk_conv2d_geom *g, int64_t size[2]) {
  kiln_status st = conv_geom(c, g);
  if (st != KILN_OK) return st;
  if (g->groups < 1 || g->groups > ATTR_LIMIT)
    return kiln_op_fail(c, KILN_ERR_INVALID_ARGUMENT, "groups must be positive, got %lld", (long long)g->groups);
  if ((st = check_pair(c, "stride", g->stride, 1)) != KILN_OK) return st;
  if ((st = check_pair(c, "padding", g->pad, 0)) != KILN_OK) return st;
  if ((st = check_pair(c, "dilation", g->dilation, 1)) != KILN_OK) return st;
  const kiln_attr_value *v = &c->attrs[CONV_GRAD_SIZE];
  if (v->n != 2)
    return kiln_op_fail(c, KILN_ERR_INVALID_ARGUMENT, "%s takes 2 values (height, width), got %d",
                        c->def->attrs[CONV_GRAD_SIZE].name, v->n);
  size[0] = v->ints[0];
  size[1] = v->ints[1];
  return check_pair(c, c->def->attrs[CONV_GRAD_SIZE].name, size, 1);
}

/* The output gradient must have the shape conv2d gives x [N, C, H, W] with
 * a [O, *, KH, KW] kernel. */
static kiln_status need_conv_out(const kiln_op_call *c, const kk_view *gy, const kk_view *x, int64_t o,
                                 const int64_t kernel[2], const kk_conv2d_geom *g) {
  char a[KILN_SHAPE_STR_MAX], b[KILN_SHAPE_STR_MAX];
  int64_t ext[2], len[2];
  for (int i = 0; i < 2; i++) ext[i] = g->dilation[i] * (kernel[i] - 1) + 1;
  kiln_status st = sweep_len(c, x, "kernel", ext, kernel, g->pad, g->stride, len);
  if (st != KILN_OK) return st;
  if (gy->shape[0] != x->shape[0] || gy->shape[1] != o || gy->shape[2] != len[0] || gy->shape[3] != len[1])
    return kiln_op_fail(c, KILN_ERR_SHAPE, "output gradient %s does not match conv2d's output [%lld, %lld, %lld, %lld] for input %s",
                        SHAPE_STR(a, gy), (long long)x->shape[0], (long long)o, (long long)len[0], (long long)len[1],
                        SHAPE_STR(b, x));
  return KILN_OK;
}

static kiln_status need_grad_4d(const kiln_op_call *c, const kk_view *gy) {
  char a[KILN_SHAPE_STR_MAX];
  if (gy->ndim != 4)
    return kiln_op_fail(c, KILN_ERR_SHAPE, "output gradient must be 4-D, got %s", SHAPE_STR(a, gy));
  return need_float(c, gy, "output gradient");
}

/* gy [N, O, OH, OW], w [O, C/groups, KH, KW] -> gx [N, C, H, W]. */
static kiln_status conv2d_backward_data_infer(const kiln_op_call *c, kiln_out_desc *out) {
  const kk_view *gy = &c->in[0], *w = &c->in[1];
  char a[KILN_SHAPE_STR_MAX];
  kk_conv2d_geom g;
  int64_t size[2] = {0, 0};
  kiln_status st = conv_grad_geom(c, &g, size);
  if (st != KILN_OK) return st;
  if ((st = need_grad_4d(c, gy)) != KILN_OK) return st;
  if (w->ndim != 4)
    return kiln_op_fail(c, KILN_ERR_SHAPE, "weight must be 4-D [O, C/groups, KH, KW], got %s", SHAPE_STR(a, w));
  if ((st = need_dtype(c, w, gy->dtype, "weight")) != KILN_OK) return st;
  if (w->shape[0] % g.groups != 0)
    return kiln_op_fail(c, KILN_ERR_SHAPE, "groups %lld does not divide the %lld output channels of weight %s",
                        (long long)g.groups, (long long)w->shape[0], SHAPE_STR(a, w));
  if (w->shape[2] < 1 || w->shape[3] < 1 || w->shape[2] > ATTR_LIMIT || w->shape[3] > ATTR_LIMIT ||
      w->shape[1] > ATTR_LIMIT)
    return kiln_op_fail(c, KILN_ERR_SHAPE, "bad weight %s", SHAPE_STR(a, w));
  /* The input the gradient is for, as a shape-only view. */
  kk_view x = {.dtype = gy->dtype, .ndim = 4, .shape = {gy->shape[0], w->shape[1] * g.groups, size[0], size[1]}};
  int64_t kernel[2] = {w->shape[2], w->shape[3]};
  if ((st = need_conv_out(c, gy, &x, w->shape[0], kernel, &g)) != KILN_OK) return st;
  out->dtype = gy->dtype;
  out->ndim = 4;
  memcpy(out->shape, x.shape, sizeof x.shape);
  return KILN_OK;
}

/* gy [N, O, OH, OW], x [N, C, H, W] -> gw [O, C/groups, KH, KW]. */
static kiln_status conv2d_backward_weight_infer(const kiln_op_call *c, kiln_out_desc *out) {
  const kk_view *gy = &c->in[0], *x = &c->in[1];
  char a[KILN_SHAPE_STR_MAX];
  kk_conv2d_geom g;
  int64_t kernel[2] = {0, 0};
  kiln_status st = conv_grad_geom(c, &g, kernel);
  if (st != KILN_OK) return st;
  if ((st = need_grad_4d(c, gy)) != KILN_OK) return st;
  if ((st = need_nchw(c, x)) != KILN_OK) return st;
  if ((st = need_dtype(c, x, gy->dtype, "input")) != KILN_OK) return st;
  int64_t o = gy->shape[1], ch = x->shape[1];
  if (ch % g.groups != 0)
    return kiln_op_fail(c, KILN_ERR_SHAPE, "groups %lld does not divide the %lld input channels of input %s",
                        (long long)g.groups, (long long)ch, SHAPE_STR(a, x));
  if (o % g.groups != 0)
    return kiln_op_fail(c, KILN_ERR_SHAPE, "groups %lld does not divide the %lld channels of output gradient %s",
                        (long long)g.groups, (long long)o, SHAPE_STR(a, gy));
  if ((st = need_conv_out(c, gy, x, o, kernel, &g)) != KILN_OK) return st;
  out->dtype = gy->dtype;
  out->ndim = 4;
  out->shape[0] = o;
  out->shape[1] = ch / g.groups;
  out->shape[2] = kernel[0];
  out->shape[3] = kernel[1];
  return KILN_OK;
}

static kiln_status conv2d_backward_data_kernel(const kiln_op_call *c) {
  kk_conv2d_geom g;
  conv_geom(c, &g);
  return kk_conv2d_backward_data(&c->in[0], &c->in[1], &c->out[0], &g);
}
static kiln_status conv2d_backward_data_reference(const kiln_op_call *c) {
  kk_conv2d_geom g;
  conv_geom(c, &g);
  return kk_conv2d_backward_data_ref(&c->in[0], &c->in[1], &c->out[0], &g);
}
static kiln_status conv2d_backward_weight_kernel(const kiln_op_call *c) {
  kk_conv2d_geom g;
  conv_geom(c, &g);
  return kk_conv2d_backward_weight(&c->in[0], &c->in[1], &c->out[0], &g);
}
static kiln_status conv2d_backward_weight_reference(const kiln_op_call *c) {
  kk_conv2d_geom g;
  conv_geom(c, &g);
  return kk_conv2d_backward_weight_ref(&c->in[0], &c->in[1], &c->out[0], &g);
}

const kiln_op_def kiln_opdef_conv2d_backward_data = {.name = "conv2d_backward_data",
                                                     .min_inputs = 2,
                                                     .max_inputs = 2,
                                                     .n_outputs = 1,
                                                     .attrs = conv2d_backward_data_attrs,
                                                     .n_attrs = KILN_COUNTOF(conv2d_backward_data_attrs),
                                                     .infer = conv2d_backward_data_infer,
                                                     .kernel = conv2d_backward_data_kernel,
                                                     .reference = conv2d_backward_data_reference};
const kiln_op_def kiln_opdef_conv2d_backward_weight = {.name = "conv2d_backward_weight",
                                                       .min_inputs = 2,
                                                       .max_inputs = 2,
                                                       .n_outputs = 1,
                                                       .attrs = conv2d_backward_weight_attrs,
                                                       .n_attrs = KILN_COUNTOF(conv2d_backward_weight_attrs),
                                                       .infer = conv2d_backward_weight_infer,
                                                       .kernel = conv2d_backward_weight_kernel,
                                                       .reference = conv2d_backward_weight_reference};

/* gy [N, C, OH, OW], x [N, C, H, W] -> gx [N, C, H, W]; the attributes are
 * the forward pool's (code 1: average). The average reads only x's shape. */
static kiln_status pool_backward_infer(const kiln_op_call *c, kiln_out_desc *out) {
  const kk_view *gy = &c->in[0], *x = &c->in[1];
  char a[KILN_SHAPE_STR_MAX], b[KILN_SHAPE_STR_MAX];
  kk_pool2d_geom g;
  kiln_status st = need_grad_4d(c, gy);
  if (st != KILN_OK) return st;
  if ((st = need_nchw(c, x)) != KILN_OK) return st;
  if ((st = need_dtype(c, x, gy->dtype, "input")) != KILN_OK) return st;
  if ((st = pool_geom(c, &g)) != KILN_OK) return st;
  int64_t len[2];
  if ((st = sweep_len(c, x, "kernel", g.kernel, g.kernel, g.pad, g.stride, len)) != KILN_OK) return st;
  if (gy->shape[0] != x->shape[0] || gy->shape[1] != x->shape[1] || gy->shape[2] != len[0] || gy->shape[3] != len[1])
    return kiln_op_fail(c, KILN_ERR_SHAPE, "output gradient %s does not match the pool's output [%lld, %lld, %lld, %lld] for input %s",
                        SHAPE_STR(a, gy), (long long)x->shape[0], (long long)x->shape[1], (long long)len[0],
                        (long long)len[1], SHAPE_STR(b, x));
  same_as(out, x);
  return KILN_OK;
}

static kiln_status pool_backward_kernel(const kiln_op_call *c) {
  kk_pool2d_geom g;
  pool_geom(c, &g);
  return c->def->code == 1 ? kk_avg_pool2d_backward(&c->in[0], &c->out[0], &g)
                           : kk_max_pool2d_backward(&c->in[0], &c->in[1], &c->out[0], &g);
}
static kiln_status pool_backward_reference(const kiln_op_call *c) {
  kk_pool2d_geom g;
  pool_geom(c, &g);
  return c->def->code == 1 ? kk_avg_pool2d_backward_ref(&c->in[0], &c->out[0], &g)
                           : kk_max_pool2d_backward_ref(&c->in[0], &c->in[1], &c->out[0], &g);
}

const kiln_op_def kiln_opdef_max_pool2d_backward = {.name = "max_pool2d_backward",
                                                    .min_inputs = 2,
                                                    .max_inputs = 2,
                                                    .n_outputs = 1,
                                                    .attrs = max_pool_attrs,
                                                    .n_attrs = KILN_COUNTOF(max_pool_attrs),
                                                    .code = 0,
                                                    .infer = pool_backward_infer,
                                                    .kernel = pool_backward_kernel,
                                                    .reference = pool_backward_reference};
const kiln_op_def kiln_opdef_avg_pool2d_backward = {.name = "avg_pool2d_backward",
                                                    .min_inputs = 2,
                                                    .max_inputs = 2,
                                                    .n_outputs = 1,
                                                    .attrs = avg_pool_attrs,
                                                    .n_attrs = KILN_COUNTOF(avg_pool_attrs),
                                                    .code = 1,
                                                    .infer = pool_backward_infer,
                                                    .kernel = pool_backward_kernel,
                                                    .reference = pool_backward_reference};

/* ------------------------------------------------------------ public wrappers */

kiln_tensor *kiln_softmax(kiln_tensor *x, int axis) {
  kiln_attr_value a[KILN_MAX_ATTRS];
  kiln_attrs_default(KILN_OP_SOFTMAX, a);
  a[0].i = axis;
  return kiln_dispatch1(KILN_OP_SOFTMAX, 1, (kiln_tensor *const[]){x}, a);
}

kiln_tensor *kiln_log_softmax(kiln_tensor *x, int axis) {
  kiln_attr_value a[KILN_MAX_ATTRS];
  kiln_attrs_default(KILN_OP_LOG_SOFTMAX, a);
  a[0].i = axis;
  return kiln_dispatch1(KILN_OP_LOG_SOFTMAX, 1, (kiln_tensor *const[]){x}, a);
}

kiln_tensor *kiln_softmax_cross_entropy(kiln_tensor *logits, kiln_tensor *labels) {
  return kiln_dispatch1(KILN_OP_SOFTMAX_CROSS_ENTROPY, 2, (kiln_tensor *const[]){logits, labels}, NULL);
}

kiln_conv2d_params kiln_conv2d_params_default(void) {
  kiln_conv2d_params p = {.stride = {1, 1}, .padding = {0, 0}, .dilation = {1, 1}, .groups = 1};
  return p;
}

kiln_tensor *kiln_conv2d(kiln_tensor *x, kiln_tensor *w, kiln_tensor *bias, const kiln_conv2d_params *p) {
  kiln_conv2d_params dflt = kiln_conv2d_params_default();
  if (!p) p = &dflt;
  kiln_attr_value a[KILN_MAX_ATTRS];
  kiln_attrs_default(KILN_OP_CONV2D, a);
  kiln_attr_set_ints(&a[CONV_STRIDE], 2, p->stride);
  kiln_attr_set_ints(&a[CONV_PADDING], 2, p->padding);
  kiln_attr_set_ints(&a[CONV_DILATION], 2, p->dilation);
  a[CONV_GROUPS].i = p->groups;
  return kiln_dispatch1(KILN_OP_CONV2D, bias ? 3 : 2, (kiln_tensor *const[]){x, w, bias}, a);
}

kiln_pool2d_params kiln_pool2d_params_default(int64_t kh, int64_t kw) {
  kiln_pool2d_params p = {.kernel = {kh, kw}, .stride = {0, 0}, .padding = {0, 0}, .count_include_pad = false};
  return p;
}

static kiln_tensor *pool_call(kiln_op_id id, const char *name, kiln_tensor *x, const kiln_pool2d_params *p) {
  if (!p) {
    /* A pool has no default window. */
    return kiln_failed(KILN_ERR_INVALID_ARGUMENT, "%s: params is NULL (the kernel size is required)", name);
  }
  kiln_attr_value a[KILN_MAX_ATTRS];
  kiln_attrs_default(id, a);
  kiln_attr_set_ints(&a[POOL_KERNEL], 2, p->kernel);
  kiln_attr_set_ints(&a[POOL_STRIDE], 2, p->stride);
  kiln_attr_set_ints(&a[POOL_PADDING], 2, p->padding);
  if (id == KILN_OP_AVG_POOL2D) a[POOL_COUNT_INCLUDE_PAD].i = p->count_include_pad;
  return kiln_dispatch1(id, 1, (kiln_tensor *const[]){x}, a);
}

kiln_tensor *kiln_max_pool2d(kiln_tensor *x, const kiln_pool2d_params *p) {
  return pool_call(KILN_OP_MAX_POOL2D, "max_pool2d", x, p);
}

kiln_tensor *kiln_avg_pool2d(kiln_tensor *x, const kiln_pool2d_params *p) {
  return pool_call(KILN_OP_AVG_POOL2D, "avg_pool2d", x, p);
}

kiln_tensor *kiln_batch_norm(kiln_tensor *x, kiln_tensor *gamma, kiln_tensor *beta, kiln_tensor *running_mean,
                             kiln_tensor *running_var, double eps) {
  kiln_attr_value a[KILN_MAX_ATTRS];
  kiln_attrs_default(KILN_OP_BATCH_NORM, a);
  a[0].f = eps;
  return kiln_dispatch1(KILN_OP_BATCH_NORM, 5, (kiln_tensor *const[]){x, gamma, beta, running_mean, running_var}, a);
}

kiln_tensor *kiln_batch_norm_train(kiln_tensor *x, kiln_tensor *gamma, kiln_tensor *beta, double eps,
                                   kiln_tensor **batch_mean, kiln_tensor **batch_var) {
  kiln_attr_value a[KILN_MAX_ATTRS];
  kiln_attrs_default(KILN_OP_BATCH_NORM_TRAIN, a);
  a[0].f = eps;
  /* Owned outputs, so the statistics the caller does not ask for can be
   * released here whether or not a scope is open. */
  kiln_tensor *out[3];
  kiln_dispatch_owned(KILN_OP_BATCH_NORM_TRAIN, 3, (kiln_tensor *const[]){x, gamma, beta}, a, 3, out);
  kiln_tensor **want[3] = {NULL, batch_mean, batch_var};
  for (int i = 1; i < 3; i++) {
    if (want[i])
      *want[i] = tensor_autorelease(out[i]);
    else
      kiln_tensor_release(out[i]);
  }
  return tensor_autorelease(out[0]);
}

kiln_tensor *kiln_dropout(kiln_generator *gen, kiln_tensor *x, double p) {
  kiln_attr_value a[KILN_MAX_ATTRS];
  kiln_attrs_default(KILN_OP_DROPOUT, a);
  a[DROPOUT_P].f = p;
  /* The counters are reserved now, at the call, so the mask depends on the
   * generator's history of calls and not on when the kernel runs. */
  uint64_t n = x && !tensor_failed(x) ? (uint64_t)kiln_tensor_numel(x) : 0;
  a[DROPOUT_SEED].i = (int64_t)generator_seed(gen);
  a[DROPOUT_OFFSET].i = (int64_t)generator_reserve(gen, n);
  return kiln_dispatch1(KILN_OP_DROPOUT, 1, (kiln_tensor *const[]){x}, a);
}

/* ------------------------------------------------------------ gradient wrappers (ops/nn_grad.h) */

kiln_tensor *nn_conv2d_backward_data(kiln_tensor *gy, kiln_tensor *w, const kiln_attr_value *conv_attrs, int64_t h,
                                     int64_t wd) {
  kiln_attr_value a[KILN_MAX_ATTRS];
  kiln_attrs_default(KILN_OP_CONV2D_BACKWARD_DATA, a);
  memcpy(a, conv_attrs, sizeof(kiln_attr_value) * CONV_GRAD_SIZE);
  kiln_attr_set_ints(&a[CONV_GRAD_SIZE], 2, (const int64_t[]){h, wd});
  return kiln_dispatch1(KILN_OP_CONV2D_BACKWARD_DATA, 2, (kiln_tensor *const[]){gy, w}, a);
}

kiln_tensor *nn_conv2d_backward_weight(kiln_tensor *gy, kiln_tensor *x, const kiln_attr_value *conv_attrs,
                                       int64_t kh, int64_t kw) {
  kiln_attr_value a[KILN_MAX_ATTRS];
  kiln_attrs_default(KILN_OP_CONV2D_BACKWARD_WEIGHT, a);
  memcpy(a, conv_attrs, sizeof(kiln_attr_value) * CONV_GRAD_SIZE);
  kiln_attr_set_ints(&a[CONV_GRAD_SIZE], 2, (const int64_t[]){kh, kw});
  return kiln_dispatch1(KILN_OP_CONV2D_BACKWARD_WEIGHT, 2, (kiln_tensor *const[]){gy, x}, a);
}

kiln_tensor *nn_pool2d_backward(kiln_op_id fwd, kiln_tensor *gy, kiln_tensor *x, const kiln_attr_value *pool_attrs) {
  kiln_op_id id = fwd == KILN_OP_AVG_POOL2D ? KILN_OP_AVG_POOL2D_BACKWARD : KILN_OP_MAX_POOL2D_BACKWARD;
  /* The backward ops take the forward's attribute list unchanged. */
  return kiln_dispatch1(id, 2, (kiln_tensor *const[]){gy, x}, pool_attrs);
}
