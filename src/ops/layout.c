/* Layout ops. All but copy are views: inference computes the output's
 * strides and offset into input 0's storage and dispatch aliases it, so no
 * data moves. In a graph they are ordinary nodes that the planner may alias
 * or materialise. */
#include <string.h>

#include "imperative/dispatch.h"
#include "kernels/elementwise.h"

static void copy_shape(kiln_out_desc *out, const kk_view *x) {
  out->dtype = x->dtype;
  out->ndim = x->ndim;
  memcpy(out->shape, x->shape, sizeof out->shape);
  memcpy(out->strides, x->strides, sizeof out->strides);
  out->offset = 0;
}

/* ------------------------------------------------------------------ reshape */

/* In shape, -1 is inferred from the element count and -2 is the input's
 * dim in the same place (ONNX Reshape's 0). A graph built at one size of
 * an unknown dim is rebuilt with the same attributes at others
 * (graph_specialize), so -2 is how a target like [batch, -1] follows the
 * batch. */
static const kiln_attr_spec reshape_attrs[] = {{"shape", KILN_ATTR_INTS, 0}};

static kiln_status reshape_infer(const kiln_op_call *c, kiln_out_desc *out) {
  const kk_view *x = &c->in[0];
  const kiln_attr_value *s = &c->attrs[0];
  int64_t target[KILN_MAX_DIMS];
  char xs[KILN_SHAPE_STR_MAX], ts[KILN_SHAPE_STR_MAX];
  kiln_shape_str(xs, sizeof xs, x->ndim, x->shape);
  kiln_shape_str(ts, sizeof ts, s->n, s->ints);
  if (s->n > KILN_MAX_DIMS) return kiln_op_fail(c, KILN_ERR_INVALID_ARGUMENT, "target %s has too many dims", ts);
  for (int i = 0; i < s->n; i++) {
    if (s->ints[i] == -2 && i >= x->ndim)
      return kiln_op_fail(c, KILN_ERR_INVALID_ARGUMENT, "target %s keeps dim %d (-2) of input %s", ts, i, xs);
    target[i] = s->ints[i] == -2 ? x->shape[i] : s->ints[i];
  }
  int64_t known = 1, total = kk_numel(x);
  int infer_at = -1;
  for (int i = 0; i < s->n; i++) {
    if (target[i] == -1 && infer_at < 0) {
      infer_at = i;
    } else if (target[i] < 0) {
      return kiln_op_fail(c, KILN_ERR_INVALID_ARGUMENT, "bad target shape %s for input %s", ts, xs);
    } else if (!kiln_mul_i64(known, target[i], &known)) {
      return kiln_op_fail(c, KILN_ERR_OVERFLOW, "target shape %s overflows", ts);
    }
  }
  out->dtype = x->dtype;
  out->ndim = s->n;
  for (int i = 0; i < s->n; i++) out->shape[i] = target[i];
  if (infer_at >= 0) {
    if (known == 0 || total % known != 0)
      return kiln_op_fail(c, KILN_ERR_SHAPE, "cannot reshape %s into %s", xs, ts);
    out->shape[infer_at] = total / known;
  } else if (known != total) {
    return kiln_op_fail(c, KILN_ERR_SHAPE, "cannot reshape %s (%lld elements) into %s (%lld)", xs, (long long)total,
                        ts, (long long)known);
  }
  if (!kk_is_contiguous(x))
    return kiln_op_fail(c, KILN_ERR_INVALID_ARGUMENT, "input %s is not contiguous (copy it first)", xs);
  contiguous_strides(out->ndim, out->shape, out->strides);
  return KILN_OK;
}

const kiln_op_def kiln_opdef_reshape = {.name = "reshape", .min_inputs = 1, .max_inputs = 1, .n_outputs = 1,
                                        .attrs = reshape_attrs, .n_attrs = 1, .flags = KILN_OP_VIEW,
                                        .infer = reshape_infer};

kiln_tensor *kiln_reshape(kiln_tensor *x, int ndim, const int64_t *shape) {
  kiln_attr_value a[KILN_MAX_ATTRS];
  kiln_attrs_default(KILN_OP_RESHAPE, a);
  if (ndim < 0 || ndim > KILN_MAX_DIMS || (ndim > 0 && !shape)) {
    return kiln_failed(KILN_ERR_INVALID_ARGUMENT, "reshape: bad target (%d dims, shape %s)", ndim, shape ? "given" : "NULL");
  }
  kiln_attr_set_ints(&a[0], ndim, shape);
  if (x && !tensor_failed(x) && !kiln_tensor_is_contiguous(x)) {
    /* As torch.reshape: a view when the layout allows it, else a copy. */
    kiln_tensor *c;
    kiln_dispatch_owned(KILN_OP_COPY, 1, &x, NULL, 1, &c);
    kiln_tensor *r = kiln_dispatch1(KILN_OP_RESHAPE, 1, &c, a);
    kiln_tensor_release(c);
    return r;
  }
  return kiln_dispatch1(KILN_OP_RESHAPE, 1, &x, a);
}

/* ------------------------------------------------------------------ permute */

static const kiln_attr_spec permute_attrs[] = {{"axes", KILN_ATTR_INTS, 0}};

static kiln_status permute_infer(const kiln_op_call *c, kiln_out_desc *out) {
  const kk_view *x = &c->in[0];
  const kiln_attr_value *ax = &c->attrs[0];
  if (ax->n != x->ndim)
    return kiln_op_fail(c, KILN_ERR_INVALID_ARGUMENT, "%d axes given for %d dims", ax->n, x->ndim);
  bool seen[KILN_MAX_DIMS] = {false};
  out->dtype = x->dtype;
  out->ndim = x->ndim;
  for (int i = 0; i < ax->n; i++) {
    int a;
    kiln_status st = kiln_op_axis(c, ax->ints[i], x->ndim, &a);
    if (st != KILN_OK) return st;
    if (seen[a]) return kiln_op_fail(c, KILN_ERR_INVALID_ARGUMENT, "axis %d repeated", a);
    seen[a] = true;
    out->shape[i] = x->shape[a];
    out->strides[i] = x->strides[a];
  }
  return KILN_OK;
}

const kiln_op_def kiln_opdef_permute = {.name = "permute", .min_inputs = 1, .max_inputs = 1, .n_outputs = 1,
                                        .attrs = permute_attrs, .n_attrs = 1, .flags = KILN_OP_VIEW,
                                        .infer = permute_infer};

kiln_tensor *kiln_permute(kiln_tensor *x, int ndim, const int *axes) {
  kiln_attr_value a[KILN_MAX_ATTRS];
  kiln_attrs_default(KILN_OP_PERMUTE, a);
  if (ndim < 0 || ndim > KILN_MAX_DIMS || (ndim > 0 && !axes)) {
    return kiln_failed(KILN_ERR_INVALID_ARGUMENT, "permute: bad axes (%d of them)", ndim);
  }
  a[0].n = ndim;
  for (int i = 0; i < ndim; i++) a[0].ints[i] = axes[i];
  return kiln_dispatch1(KILN_OP_PERMUTE, 1, &x, a);
}

kiln_tensor *kiln_transpose(kiln_tensor *x, int axis0, int axis1) {
  int nd = x && !tensor_failed(x) ? x->ndim : 0;
  int axes[KILN_MAX_DIMS];
  for (int i = 0; i < nd; i++) axes[i] = i;
  int a0 = axis0 < 0 ? axis0 + nd : axis0, a1 = axis1 < 0 ? axis1 + nd : axis1;
  if (a0 < 0 || a0 >= nd || a1 < 0 || a1 >= nd) {
    if (!x || tensor_failed(x)) return kiln_permute(x, 0, NULL);
    return kiln_failed(KILN_ERR_OUT_OF_RANGE, "transpose: axes %d and %d out of range for %d dims", axis0, axis1, nd);
  }
  axes[a0] = a1;
  axes[a1] = a0;
  return kiln_permute(x, nd, axes);
}

/* ------------------------------------------------------------------ slice */

static const kiln_attr_spec slice_attrs[] = {{"axis", KILN_ATTR_INT, 0},
                                             {"start", KILN_ATTR_INT, 0},
                                             {"stop", KILN_ATTR_INT, (double)INT64_MAX},
                                             {"step", KILN_ATTR_INT, 1}};

/* Python's slice.indices: clamp start and stop into the axis. */
static int64_t clamp_bound(int64_t v, int64_t len, int64_t step, bool is_start) {
  /* KILN_END is an omitted bound, Python's None: from the first element in
   * the step's direction, to past the last. */
  if (v == KILN_END) return is_start ? (step > 0 ? 0 : len - 1) : (step > 0 ? len : -1);
  if (v < 0) v = v < -len ? -1 : v + len;
  if (step > 0) return v < 0 ? 0 : v > len ? len : v;
  return v < 0 ? -1 : v > len - 1 ? len - 1 : v;
}

void kiln_slice_bounds(int64_t len, int64_t start, int64_t stop, int64_t step, int64_t *first, int64_t *count) {
  start = clamp_bound(start, len, step, true);
  stop = clamp_bound(stop, len, step, false);
  /* Written so that no intermediate overflows, whatever the step. */
  *first = start;
  *count = step > 0 ? (stop > start ? (stop - start - 1) / step + 1 : 0) : (start > stop ? (start - stop - 1) / -step + 1 : 0);
}

static kiln_status slice_infer(const kiln_op_call *c, kiln_out_desc *out) {
  const kk_view *x = &c->in[0];
  int axis;
  kiln_status st = kiln_op_axis(c, c->attrs[0].i, x->ndim, &axis);
  if (st != KILN_OK) return st;
  if (x->ndim == 0) return kiln_op_fail(c, KILN_ERR_INVALID_ARGUMENT, "cannot slice a 0-d tensor");
  int64_t step = c->attrs[3].i, len = x->shape[axis];
  if (step == 0) return kiln_op_fail(c, KILN_ERR_INVALID_ARGUMENT, "step is zero");
  if (step == INT64_MIN) return kiln_op_fail(c, KILN_ERR_OUT_OF_RANGE, "step is too large");
  int64_t start, count;
  kiln_slice_bounds(len, c->attrs[1].i, c->attrs[2].i, step, &start, &count);
  copy_shape(out, x);
  out->shape[axis] = count;
  /* With one element or none the stride is never used, and step may be
   * huge; with two or more |step| < len, so the product fits. */
  out->strides[axis] = count > 1 ? x->strides[axis] * step : x->strides[axis];
  out->offset = count > 0 ? start * x->strides[axis] : 0;
  return KILN_OK;
}

const kiln_op_def kiln_opdef_slice = {.name = "slice", .min_inputs = 1, .max_inputs = 1, .n_outputs = 1,
                                      .attrs = slice_attrs, .n_attrs = KILN_COUNTOF(slice_attrs),
                                      .flags = KILN_OP_VIEW, .infer = slice_infer};

kiln_tensor *kiln_slice(kiln_tensor *x, int axis, int64_t start, int64_t stop, int64_t step) {
  kiln_attr_value a[KILN_MAX_ATTRS];
  kiln_attrs_default(KILN_OP_SLICE, a);
  a[0].i = axis;
  a[1].i = start;
  a[2].i = stop;
  a[3].i = step;
  return kiln_dispatch1(KILN_OP_SLICE, 1, &x, a);
}

/* ------------------------------------------------------------------ broadcast_to */

static const kiln_attr_spec broadcast_attrs[] = {{"shape", KILN_ATTR_INTS, 0}};

static kiln_status broadcast_infer(const kiln_op_call *c, kiln_out_desc *out) {
  const kk_view *x = &c->in[0];
  const kiln_attr_value *s = &c->attrs[0];
  char xs[KILN_SHAPE_STR_MAX], ts[KILN_SHAPE_STR_MAX];
  if (s->n > KILN_MAX_DIMS || s->n < x->ndim)
    return kiln_op_fail(c, KILN_ERR_SHAPE, "cannot broadcast %s to %s", kiln_shape_str(xs, sizeof xs, x->ndim, x->shape),
                        kiln_shape_str(ts, sizeof ts, s->n < KILN_MAX_DIMS ? s->n : KILN_MAX_DIMS, s->ints));
  out->dtype = x->dtype;
  out->ndim = s->n;
  for (int i = s->n - 1; i >= 0; i--) {
    int j = i - (s->n - x->ndim);
    out->shape[i] = s->ints[i];
    if (s->ints[i] < 0) return kiln_op_fail(c, KILN_ERR_INVALID_ARGUMENT, "negative dim in target");
    if (j < 0) {
      out->strides[i] = 0;
    } else if (x->shape[j] == s->ints[i]) {
      out->strides[i] = x->strides[j];
    } else if (x->shape[j] == 1) {
      out->strides[i] = 0;
    } else {
      return kiln_op_fail(c, KILN_ERR_SHAPE, "cannot broadcast %s to %s (dim %d)",
                          kiln_shape_str(xs, sizeof xs, x->ndim, x->shape), kiln_shape_str(ts, sizeof ts, s->n, s->ints),
                          i);
    }
  }
  return KILN_OK;
}

const kiln_op_def kiln_opdef_broadcast_to = {.name = "broadcast_to", .min_inputs = 1, .max_inputs = 1,
                                             .n_outputs = 1, .attrs = broadcast_attrs, .n_attrs = 1,
                                             .flags = KILN_OP_VIEW, .infer = broadcast_infer};

kiln_tensor *kiln_broadcast_to(kiln_tensor *x, int ndim, const int64_t *shape) {
  kiln_attr_value a[KILN_MAX_ATTRS];
  kiln_attrs_default(KILN_OP_BROADCAST_TO, a);
  if (ndim < 0 || ndim > KILN_MAX_DIMS || (ndim > 0 && !shape)) {
    return kiln_failed(KILN_ERR_INVALID_ARGUMENT, "broadcast_to: bad target (%d dims)", ndim);
  }
  kiln_attr_set_ints(&a[0], ndim, shape);
  return kiln_dispatch1(KILN_OP_BROADCAST_TO, 1, &x, a);
}

/* ------------------------------------------------------------------ squeeze, expand_dims */

static const kiln_attr_spec axis_attrs[] = {{"axis", KILN_ATTR_INT, KILN_ALL_AXES}};

static kiln_status squeeze_infer(const kiln_op_call *c, kiln_out_desc *out) {
  const kk_view *x = &c->in[0];
  int only = -1;
  if (c->attrs[0].i != KILN_ALL_AXES) {
    kiln_status st = kiln_op_axis(c, c->attrs[0].i, x->ndim, &only);
    if (st != KILN_OK) return st;
    if (x->ndim == 0) { /* axis 0 or -1 of a 0-d tensor: nothing to squeeze, as in torch */
      copy_shape(out, x);
      return KILN_OK;
    }
    if (x->shape[only] != 1)
      return kiln_op_fail(c, KILN_ERR_SHAPE, "axis %d has size %lld, not 1", only, (long long)x->shape[only]);
  }
  out->dtype = x->dtype;
  out->ndim = 0;
  for (int i = 0; i < x->ndim; i++) {
    if (x->shape[i] == 1 && (only < 0 || only == i)) continue;
    out->shape[out->ndim] = x->shape[i];
    out->strides[out->ndim++] = x->strides[i];
  }
  return KILN_OK;
}

static kiln_status expand_dims_infer(const kiln_op_call *c, kiln_out_desc *out) {
  const kk_view *x = &c->in[0];
  int axis;
  if (x->ndim >= KILN_MAX_DIMS) return kiln_op_fail(c, KILN_ERR_INVALID_ARGUMENT, "already %d dims", x->ndim);
  kiln_status st = kiln_op_axis(c, c->attrs[0].i, x->ndim + 1, &axis);
  if (st != KILN_OK) return st;
  out->dtype = x->dtype;
  out->ndim = x->ndim + 1;
  for (int i = 0, j = 0; i < out->ndim; i++) {
    if (i == axis) {
      out->shape[i] = 1;
      out->strides[i] = j < x->ndim ? x->strides[j] * x->shape[j] : 1;
    } else {
      out->shape[i] = x->shape[j];
      out->strides[i] = x->strides[j++];
    }
  }
  return KILN_OK;
}

const kiln_op_def kiln_opdef_squeeze = {.name = "squeeze", .min_inputs = 1, .max_inputs = 1, .n_outputs = 1,
                                        .attrs = axis_attrs, .n_attrs = 1, .flags = KILN_OP_VIEW,
                                        .infer = squeeze_infer};
const kiln_op_def kiln_opdef_expand_dims = {.name = "expand_dims", .min_inputs = 1, .max_inputs = 1,
                                            .n_outputs = 1, .attrs = axis_attrs, .n_attrs = 1,
                                            .flags = KILN_OP_VIEW, .infer = expand_dims_infer};

static kiln_tensor *axis_op(kiln_op_id id, kiln_tensor *x, int axis) {
  kiln_attr_value a[KILN_MAX_ATTRS];
  kiln_attrs_default(id, a);
  a[0].i = axis;
  return kiln_dispatch1(id, 1, &x, a);
}

kiln_tensor *kiln_squeeze(kiln_tensor *x, int axis) { return axis_op(KILN_OP_SQUEEZE, x, axis); }
kiln_tensor *kiln_expand_dims(kiln_tensor *x, int axis) {
  if (axis == KILN_ALL_AXES) {
    return kiln_failed(KILN_ERR_INVALID_ARGUMENT, "expand_dims: needs one axis");
  }
  return axis_op(KILN_OP_EXPAND_DIMS, x, axis);
}

/* ------------------------------------------------------------------ copy */

static kiln_status copy_infer(const kiln_op_call *c, kiln_out_desc *out) {
  copy_shape(out, &c->in[0]);
  return KILN_OK;
}

static kiln_status copy_kernel(const kiln_op_call *c) {
  kk_copy(&c->in[0], &c->out[0]);
  return KILN_OK;
}

static kiln_status copy_reference(const kiln_op_call *c) {
  kk_copy_ref(&c->in[0], &c->out[0]);
  return KILN_OK;
}

const kiln_op_def kiln_opdef_copy = {.name = "copy", .min_inputs = 1, .max_inputs = 1, .n_outputs = 1,
                                     .flags = KILN_OP_ELEMENTWISE, .infer = copy_infer, .kernel = copy_kernel,
                                     .reference = copy_reference};

kiln_tensor *kiln_copy(kiln_tensor *x) { return kiln_dispatch1(KILN_OP_COPY, 1, &x, NULL); }

kiln_tensor *kiln_contiguous(kiln_tensor *x) {
  if (x && !tensor_failed(x) && kiln_tensor_is_contiguous(x)) return tensor_autorelease(kiln_tensor_retain(x));
  return kiln_copy(x);
}
