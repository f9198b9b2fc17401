/* Reduction ops: sum, mean, max, min, prod, var, logsumexp over a set of
 * axes, and argmax/argmin along one axis or the flattened tensor. */
#include "imperative/dispatch.h"
#include "kernels/reduce.h"

static const kiln_attr_spec reduce_attrs[] = {
    {"axes", KILN_ATTR_INTS, 0}, {"keepdims", KILN_ATTR_INT, 0}, {"ddof", KILN_ATTR_INT, 0}};
static const kiln_attr_spec arg_attrs[] = {{"axis", KILN_ATTR_INT, KILN_ALL_AXES}, {"keepdims", KILN_ATTR_INT, 0}};

/* Which axes are reduced; an empty list means all. */
static kiln_status reduced_axes(const kiln_op_call *c, bool *reduced) {
  const kk_view *x = &c->in[0];
  const kiln_attr_value *ax = &c->attrs[0];
  for (int d = 0; d < KILN_MAX_DIMS; d++) reduced[d] = ax->n == 0 && d < x->ndim;
  for (int i = 0; i < ax->n; i++) {
    int a;
    kiln_status st = kiln_op_axis(c, ax->ints[i], x->ndim, &a);
    if (st != KILN_OK) return st;
    if (x->ndim == 0) continue;
    if (reduced[a]) return kiln_op_fail(c, KILN_ERR_INVALID_ARGUMENT, "axis %d listed twice", a);
    reduced[a] = true;
  }
  return KILN_OK;
}

static kiln_status reduce_infer(const kiln_op_call *c, kiln_out_desc *out) {
  const kk_view *x = &c->in[0];
  kk_reduce_op op = (kk_reduce_op)c->def->code;
  bool reduced[KILN_MAX_DIMS];
  if (c->attrs[0].n > KILN_MAX_DIMS) return kiln_op_fail(c, KILN_ERR_INVALID_ARGUMENT, "too many axes");
  kiln_status st = reduced_axes(c, reduced);
  if (st != KILN_OK) return st;
  bool float_only = op == KK_MEAN || op == KK_VAR || op == KK_LOGSUMEXP;
  if (float_only && !kk_is_float(x->dtype))
    return kiln_op_fail(c, KILN_ERR_DTYPE, "takes float32 or float64, not %s (cast first)", kiln_dtype_name(x->dtype));
  if (x->dtype == KILN_BOOL && (op == KK_MAX || op == KK_MIN))
    return kiln_op_fail(c, KILN_ERR_DTYPE, "does not take bool (use logical ops or cast)");
  int64_t r = 1, kept = 1;
  out->ndim = 0;
  for (int d = 0; d < x->ndim; d++) {
    if (reduced[d]) r *= x->shape[d];
    else kept *= x->shape[d];
    if (!reduced[d] || c->attrs[1].i) out->shape[out->ndim++] = reduced[d] ? 1 : x->shape[d];
  }
  if ((op == KK_MAX || op == KK_MIN) && r == 0 && kept > 0)
    return kiln_op_fail(c, KILN_ERR_SHAPE, "zero-size reduction has no identity");
  if (op == KK_VAR && c->attrs[2].i < 0) return kiln_op_fail(c, KILN_ERR_INVALID_ARGUMENT, "ddof is negative");
  bool widen = !kk_is_float(x->dtype) && (op == KK_SUM || op == KK_PROD);
  out->dtype = widen ? KILN_I64 : x->dtype;
  return KILN_OK;
}

static kiln_status reduce_kernel(const kiln_op_call *c) {
  bool reduced[KILN_MAX_DIMS];
  reduced_axes(c, reduced);
  return kk_reduce((kk_reduce_op)c->def->code, &c->in[0], reduced, &c->out[0], c->attrs[2].i);
}

static kiln_status reduce_reference(const kiln_op_call *c) {
  bool reduced[KILN_MAX_DIMS];
  reduced_axes(c, reduced);
  return kk_reduce_ref((kk_reduce_op)c->def->code, &c->in[0], reduced, &c->out[0], c->attrs[2].i);
}

#define REDUCE_DEF(opname, CODE)                                                                                   \
  const kiln_op_def kiln_opdef_##opname = {.name = #opname, .min_inputs = 1, .max_inputs = 1, .n_outputs = 1,    \
                                           .attrs = reduce_attrs, .n_attrs = KILN_COUNTOF(reduce_attrs),        \
                                           .code = CODE, .infer = reduce_infer, .kernel = reduce_kernel,        \
                                           .reference = reduce_reference};

REDUCE_DEF(sum, KK_SUM)
REDUCE_DEF(mean, KK_MEAN)
REDUCE_DEF(max, KK_MAX)
REDUCE_DEF(min, KK_MIN)
REDUCE_DEF(prod, KK_PROD)
REDUCE_DEF(var, KK_VAR)
REDUCE_DEF(logsumexp, KK_LOGSUMEXP)

static kiln_tensor *reduce(kiln_op_id id, kiln_tensor *x, int n, const int *axes, bool keepdims, int ddof) {
  kiln_attr_value a[KILN_MAX_ATTRS];
  kiln_attrs_default(id, a);
  if (n < 0 || n > KILN_MAX_DIMS || (n > 0 && !axes)) {
    return kiln_failed(KILN_ERR_INVALID_ARGUMENT, "%s: bad axes (%d of them%s)", kiln_op_get(id)->name, n,
                axes ? "" : ", NULL");
  }
  a[0].n = n;
  for (int i = 0; i < n; i++) a[0].ints[i] = axes[i];
  a[1].i = keepdims;
  a[2].i = ddof;
  return kiln_dispatch1(id, 1, &x, a);
}

kiln_tensor *kiln_sum(kiln_tensor *x, int n, const int *axes, bool keepdims) {
  return reduce(KILN_OP_SUM, x, n, axes, keepdims, 0);
}
kiln_tensor *kiln_mean(kiln_tensor *x, int n, const int *axes, bool keepdims) {
  return reduce(KILN_OP_MEAN, x, n, axes, keepdims, 0);
}
kiln_tensor *kiln_max(kiln_tensor *x, int n, const int *axes, bool keepdims) {
  return reduce(KILN_OP_MAX, x, n, axes, keepdims, 0);
}
kiln_tensor *kiln_min(kiln_tensor *x, int n, const int *axes, bool keepdims) {
  return reduce(KILN_OP_MIN, x, n, axes, keepdims, 0);
}
kiln_tensor *kiln_prod(kiln_tensor *x, int n, const int *axes, bool keepdims) {
  return reduce(KILN_OP_PROD, x, n, axes, keepdims, 0);
}
kiln_tensor *kiln_var(kiln_tensor *x, int n, const int *axes, bool keepdims, int ddof) {
  return reduce(KILN_OP_VAR, x, n, axes, keepdims, ddof);
}
kiln_tensor *kiln_logsumexp(kiln_tensor *x, int n, const int *axes, bool keepdims) {
  return reduce(KILN_OP_LOGSUMEXP, x, n, axes, keepdims, 0);
}

/* ------------------------------------------------------------------ argmax, argmin */

static kiln_status arg_axis(const kiln_op_call *c, int *axis) {
  if (c->attrs[0].i == KILN_ALL_AXES) {
    *axis = -1;
    return KILN_OK;
  }
  if (c->in[0].ndim == 0) return kiln_op_fail(c, KILN_ERR_OUT_OF_RANGE, "a 0-d tensor has no axis %lld", (long long)c->attrs[0].i);
  return kiln_op_axis(c, c->attrs[0].i, c->in[0].ndim, axis);
}

static kiln_status arg_infer(const kiln_op_call *c, kiln_out_desc *out) {
  const kk_view *x = &c->in[0];
  int axis;
  kiln_status st = arg_axis(c, &axis);
  if (st != KILN_OK) return st;
  if (x->dtype == KILN_BOOL) return kiln_op_fail(c, KILN_ERR_DTYPE, "does not take bool");
  if (axis < 0 ? kk_numel(x) == 0 : x->shape[axis] == 0)
    return kiln_op_fail(c, KILN_ERR_SHAPE, "attempt to take the extreme of an empty sequence");
  out->dtype = KILN_I64;
  out->ndim = 0;
  for (int d = 0; d < x->ndim; d++)
    if (axis < 0 ? c->attrs[1].i : (d != axis || c->attrs[1].i)) out->shape[out->ndim++] = d == axis || axis < 0 ? 1 : x->shape[d];
  return KILN_OK;
}

static kiln_status arg_kernel(const kiln_op_call *c) {
  int axis;
  arg_axis(c, &axis);
  return kk_argext(c->def->code, &c->in[0], axis, &c->out[0]);
}

static kiln_status arg_reference(const kiln_op_call *c) {
  int axis;
  arg_axis(c, &axis);
  return kk_argext_ref(c->def->code, &c->in[0], axis, &c->out[0]);
}

const kiln_op_def kiln_opdef_argmax = {.name = "argmax", .min_inputs = 1, .max_inputs = 1, .n_outputs = 1,
                                       .attrs = arg_attrs, .n_attrs = KILN_COUNTOF(arg_attrs), .code = 1,
                                       .infer = arg_infer, .kernel = arg_kernel, .reference = arg_reference};
const kiln_op_def kiln_opdef_argmin = {.name = "argmin", .min_inputs = 1, .max_inputs = 1, .n_outputs = 1,
                                       .attrs = arg_attrs, .n_attrs = KILN_COUNTOF(arg_attrs), .code = 0,
                                       .infer = arg_infer, .kernel = arg_kernel, .reference = arg_reference};

static kiln_tensor *arg(kiln_op_id id, kiln_tensor *x, int axis, bool keepdims) {
  kiln_attr_value a[KILN_MAX_ATTRS];
  kiln_attrs_default(id, a);
  a[0].i = axis;
  a[1].i = keepdims;
  return kiln_dispatch1(id, 1, &x, a);
}

kiln_tensor *kiln_argmax(kiln_tensor *x, int axis, bool keepdims) { return arg(KILN_OP_ARGMAX, x, axis, keepdims); }
kiln_tensor *kiln_argmin(kiln_tensor *x, int axis, bool keepdims) { return arg(KILN_OP_ARGMIN, x, axis, keepdims); }
