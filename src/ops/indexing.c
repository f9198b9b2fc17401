/* The shape and indexing ops: concat, stack, split, take, gather, one_hot, pad
 * and cast. Each registry entry checks its inputs and attributes in inference
 * and fails there, naming the op and the offending shapes or values, so a bad
 * call is caught before any allocation; kernels only see calls that passed.
 * The one check inference cannot make is on index values (take, gather,
 * one_hot): the kernel reports the first bad index and this file turns it
 * into a message. The public wrappers at the bottom turn C arguments into
 * attributes and reject what attributes cannot represent (NULL arrays,
 * non-positive counts, lists longer than KILN_MAX_ATTR_INTS) with a failed
 * tensor or status instead of truncating. */
#include <stdio.h>
#include <string.h>

#include "imperative/dispatch.h"
#include "kernels/indexing.h"

#define SHAPE_OF(buf, v) kiln_shape_str((buf), sizeof(buf), (v)->ndim, (v)->shape)

static bool is_dtype(int64_t dt) { return dt >= 0 && dt < KILN_DTYPE_COUNT; }

static void set_out(kiln_out_desc *o, kiln_dtype dt, int ndim, const int64_t *shape) {
  o->dtype = dt;
  o->ndim = ndim;
  if (ndim > 0) memcpy(o->shape, shape, (size_t)ndim * sizeof *shape);
}

/* The axis attribute (always attribute 0 here) normalised against ndim.
 * Kernels call it after inference has accepted the same axis. */
static int kernel_axis(const kiln_op_call *c, int ndim) {
  int a = 0;
  kiln_status st = kiln_op_axis(c, c->attrs[0].i, ndim, &a);
  KILN_UNUSED(st);
  return a;
}

/* The message for a kernel's index failure. axis < 0 means one_hot, whose
 * bound is a depth rather than an axis length. */
static kiln_status index_failure(const kiln_op_call *c, kiln_status st, const kk_view *idx,
                                 const kk_index_error *e, int axis) {
  if (st == KILN_ERR_OUT_OF_MEMORY)
    return kiln_op_fail(c, st, "out of memory for a buffer of %lld indices", (long long)kk_numel(idx));
  if (st != KILN_ERR_OUT_OF_RANGE) return kiln_op_fail(c, st, "kernel failed on indices of dtype %s",
                                                       kiln_dtype_name(idx->dtype));
  int64_t m[KILN_MAX_DIMS];
  int64_t flat = e->position;
  for (int i = idx->ndim - 1; i >= 0; i--) {
    m[i] = flat % idx->shape[i];
    flat /= idx->shape[i];
  }
  char pos[KILN_SHAPE_STR_MAX], shp[KILN_SHAPE_STR_MAX];
  kiln_shape_str(pos, sizeof pos, idx->ndim, m);
  SHAPE_OF(shp, idx);
  if (axis < 0)
    return kiln_op_fail(c, st, "index %lld at position %s of indices %s is out of range for depth %lld",
                        (long long)e->value, pos, shp, (long long)e->limit);
  char valid[64];
  if (e->limit > 0)
    snprintf(valid, sizeof valid, "valid: %lld to %lld", (long long)-e->limit, (long long)e->limit - 1);
  else
    snprintf(valid, sizeof valid, "the axis is empty");
  return kiln_op_fail(c, st, "index %lld at position %s of indices %s is out of range for axis %d of length %lld (%s)",
                      (long long)e->value, pos, shp, axis, (long long)e->limit, valid);
}

static kiln_status need_index_dtype(const kiln_op_call *c, const kk_view *idx, bool u8_ok) {
  if (idx->dtype == KILN_I32 || idx->dtype == KILN_I64 || (u8_ok && idx->dtype == KILN_U8)) return KILN_OK;
  return kiln_op_fail(c, KILN_ERR_DTYPE, "indices must be int32 or int64%s, got %s", u8_ok ? " or uint8" : "",
                      kiln_dtype_name(idx->dtype));
}

/* ---------------------------------------------------------------- concat */

static kiln_status concat_infer(const kiln_op_call *c, kiln_out_desc *out) {
  const kk_view *x0 = &c->in[0];
  char s0[KILN_SHAPE_STR_MAX], sk[KILN_SHAPE_STR_MAX];
  if (x0->ndim == 0) return kiln_op_fail(c, KILN_ERR_SHAPE, "input 0 is 0-d; concatenation needs at least 1 dim");
  int axis;
  kiln_status st = kiln_op_axis(c, c->attrs[0].i, x0->ndim, &axis);
  if (st != KILN_OK) return st;
  int64_t total = x0->shape[axis];
  for (int k = 1; k < c->n_in; k++) {
    const kk_view *xk = &c->in[k];
    if (xk->dtype != x0->dtype)
      return kiln_op_fail(c, KILN_ERR_DTYPE, "input %d has dtype %s but input 0 has %s", k,
                          kiln_dtype_name(xk->dtype), kiln_dtype_name(x0->dtype));
    bool same = xk->ndim == x0->ndim;
    for (int i = 0; same && i < x0->ndim; i++) same = i == axis || xk->shape[i] == x0->shape[i];
    if (!same)
      return kiln_op_fail(c, KILN_ERR_SHAPE, "input %d has shape %s but input 0 has %s (they must agree except on axis %d)",
                          k, SHAPE_OF(sk, xk), SHAPE_OF(s0, x0), axis);
    if (!kiln_add_i64(total, xk->shape[axis], &total))
      return kiln_op_fail(c, KILN_ERR_OVERFLOW, "the length of axis %d overflows", axis);
  }
  set_out(out, x0->dtype, x0->ndim, x0->shape);
  out->shape[axis] = total;
  return KILN_OK;
}

static kiln_status concat_kernel(const kiln_op_call *c) {
  kk_concat(c->n_in, c->in, kernel_axis(c, c->in[0].ndim), &c->out[0]);
  return KILN_OK;
}

static kiln_status concat_reference(const kiln_op_call *c) {
  kk_concat_ref(c->n_in, c->in, kernel_axis(c, c->in[0].ndim), &c->out[0]);
  return KILN_OK;
}

static const kiln_attr_spec concat_attrs[] = {{"axis", KILN_ATTR_INT, 0}};
const kiln_op_def kiln_opdef_concat = {.name = "concat",
                                       .min_inputs = 1,
                                       .max_inputs = -1,
                                       .n_outputs = 1,
                                       .attrs = concat_attrs,
                                       .n_attrs = KILN_COUNTOF(concat_attrs),
                                       .infer = concat_infer,
                                       .kernel = concat_kernel,
                                       .reference = concat_reference};

/* ---------------------------------------------------------------- stack */

static kiln_status stack_infer(const kiln_op_call *c, kiln_out_desc *out) {
  const kk_view *x0 = &c->in[0];
  char s0[KILN_SHAPE_STR_MAX], sk[KILN_SHAPE_STR_MAX];
  if (x0->ndim + 1 > KILN_MAX_DIMS)
    return kiln_op_fail(c, KILN_ERR_SHAPE, "stacking inputs of shape %s would give %d dims (at most %d)",
                        SHAPE_OF(s0, x0), x0->ndim + 1, KILN_MAX_DIMS);
  int axis;
  kiln_status st = kiln_op_axis(c, c->attrs[0].i, x0->ndim + 1, &axis);
  if (st != KILN_OK) return st;
  for (int k = 1; k < c->n_in; k++) {
    const kk_view *xk = &c->in[k];
    if (xk->dtype != x0->dtype)
      return kiln_op_fail(c, KILN_ERR_DTYPE, "input %d has dtype %s but input 0 has %s", k,
                          kiln_dtype_name(xk->dtype), kiln_dtype_name(x0->dtype));
    bool same = xk->ndim == x0->ndim;
    for (int i = 0; same && i < x0->ndim; i++) same = xk->shape[i] == x0->shape[i];
    if (!same)
      return kiln_op_fail(c, KILN_ERR_SHAPE, "input %d has shape %s but input 0 has %s (all must be equal)", k,
                          SHAPE_OF(sk, xk), SHAPE_OF(s0, x0));
  }
  out->dtype = x0->dtype;
  out->ndim = x0->ndim + 1;
  for (int i = 0, j = 0; i < out->ndim; i++) out->shape[i] = i == axis ? c->n_in : x0->shape[j++];
  return KILN_OK;
}

static kiln_status stack_kernel(const kiln_op_call *c) {
  kk_stack(c->n_in, c->in, kernel_axis(c, c->in[0].ndim + 1), &c->out[0]);
  return KILN_OK;
}

static kiln_status stack_reference(const kiln_op_call *c) {
  kk_stack_ref(c->n_in, c->in, kernel_axis(c, c->in[0].ndim + 1), &c->out[0]);
  return KILN_OK;
}

static const kiln_attr_spec stack_attrs[] = {{"axis", KILN_ATTR_INT, 0}};
const kiln_op_def kiln_opdef_stack = {.name = "stack",
                                      .min_inputs = 1,
                                      .max_inputs = -1,
                                      .n_outputs = 1,
                                      .attrs = stack_attrs,
                                      .n_attrs = KILN_COUNTOF(stack_attrs),
                                      .infer = stack_infer,
                                      .kernel = stack_kernel,
                                      .reference = stack_reference};

/* ---------------------------------------------------------------- split */

static int split_count(const kiln_op_call *c) { return c->attrs[1].n; }

static kiln_status split_infer(const kiln_op_call *c, kiln_out_desc *out) {
  const kk_view *x = &c->in[0];
  const kiln_attr_value *sizes = &c->attrs[1];
  char sx[KILN_SHAPE_STR_MAX];
  if (x->ndim == 0) return kiln_op_fail(c, KILN_ERR_SHAPE, "cannot split a 0-d tensor");
  if (sizes->n < 1 || sizes->n > KILN_MAX_ATTR_INTS)
    return kiln_op_fail(c, KILN_ERR_INVALID_ARGUMENT, "sizes has %d entries (1 to %d supported)", sizes->n,
                        KILN_MAX_ATTR_INTS);
  int axis;
  kiln_status st = kiln_op_axis(c, c->attrs[0].i, x->ndim, &axis);
  if (st != KILN_OK) return st;
  int64_t sum = 0;
  for (int k = 0; k < sizes->n; k++) {
    if (sizes->ints[k] < 0)
      return kiln_op_fail(c, KILN_ERR_INVALID_ARGUMENT, "size %d is negative (%lld)", k, (long long)sizes->ints[k]);
    if (!kiln_add_i64(sum, sizes->ints[k], &sum))
      return kiln_op_fail(c, KILN_ERR_OVERFLOW, "the sum of sizes overflows");
  }
  if (sum != x->shape[axis]) {
    char ss[KILN_SHAPE_STR_MAX];
    return kiln_op_fail(c, KILN_ERR_SHAPE, "sizes %s sum to %lld but axis %d of shape %s has length %lld",
                        kiln_shape_str(ss, sizeof ss, sizes->n, sizes->ints), (long long)sum, axis, SHAPE_OF(sx, x),
                        (long long)x->shape[axis]);
  }
  for (int k = 0; k < sizes->n; k++) {
    set_out(&out[k], x->dtype, x->ndim, x->shape);
    out[k].shape[axis] = sizes->ints[k];
  }
  return KILN_OK;
}

static kiln_status split_kernel(const kiln_op_call *c) {
  kk_split(&c->in[0], kernel_axis(c, c->in[0].ndim), c->n_out, c->out);
  return KILN_OK;
}

static kiln_status split_reference(const kiln_op_call *c) {
  kk_split_ref(&c->in[0], kernel_axis(c, c->in[0].ndim), c->n_out, c->out);
  return KILN_OK;
}

static const kiln_attr_spec split_attrs[] = {{"axis", KILN_ATTR_INT, 0}, {"sizes", KILN_ATTR_INTS, 0}};
const kiln_op_def kiln_opdef_split = {.name = "split",
                                      .min_inputs = 1,
                                      .max_inputs = 1,
                                      .n_outputs = 0,
                                      .count_outputs = split_count,
                                      .attrs = split_attrs,
                                      .n_attrs = KILN_COUNTOF(split_attrs),
                                      .infer = split_infer,
                                      .kernel = split_kernel,
                                      .reference = split_reference};

/* ---------------------------------------------------------------- take */

static kiln_status take_infer(const kiln_op_call *c, kiln_out_desc *out) {
  const kk_view *x = &c->in[0], *idx = &c->in[1];
  char sx[KILN_SHAPE_STR_MAX], si[KILN_SHAPE_STR_MAX];
  kiln_status st = need_index_dtype(c, idx, false);
  if (st != KILN_OK) return st;
  if (x->ndim == 0) return kiln_op_fail(c, KILN_ERR_SHAPE, "cannot take from a 0-d tensor (reshape it to 1-d)");
  int axis;
  st = kiln_op_axis(c, c->attrs[0].i, x->ndim, &axis);
  if (st != KILN_OK) return st;
  int nd = x->ndim - 1 + idx->ndim;
  if (nd > KILN_MAX_DIMS)
    return kiln_op_fail(c, KILN_ERR_SHAPE, "x %s with indices %s would give %d dims (at most %d)", SHAPE_OF(sx, x),
                        SHAPE_OF(si, idx), nd, KILN_MAX_DIMS);
  out->dtype = x->dtype;
  out->ndim = nd;
  int j = 0;
  for (int i = 0; i < axis; i++) out->shape[j++] = x->shape[i];
  for (int i = 0; i < idx->ndim; i++) out->shape[j++] = idx->shape[i];
  for (int i = axis + 1; i < x->ndim; i++) out->shape[j++] = x->shape[i];
  return KILN_OK;
}

static kiln_status take_run(const kiln_op_call *c, bool ref) {
  int axis = kernel_axis(c, c->in[0].ndim);
  kk_index_error e;
  kiln_status st = ref ? kk_take_ref(&c->in[0], &c->in[1], axis, &c->out[0], &e)
                       : kk_take(&c->in[0], &c->in[1], axis, &c->out[0], &e);
  return st == KILN_OK ? st : index_failure(c, st, &c->in[1], &e, axis);
}
static kiln_status take_kernel(const kiln_op_call *c) { return take_run(c, false); }
static kiln_status take_reference(const kiln_op_call *c) { return take_run(c, true); }

static const kiln_attr_spec take_attrs[] = {{"axis", KILN_ATTR_INT, 0}};
const kiln_op_def kiln_opdef_take = {.name = "take",
                                     .min_inputs = 2,
                                     .max_inputs = 2,
                                     .n_outputs = 1,
                                     .attrs = take_attrs,
                                     .n_attrs = KILN_COUNTOF(take_attrs),
                                     .infer = take_infer,
                                     .kernel = take_kernel,
                                     .reference = take_reference};

/* ---------------------------------------------------------------- gather */

static kiln_status gather_infer(const kiln_op_call *c, kiln_out_desc *out) {
  const kk_view *x = &c->in[0], *idx = &c->in[1];
  char sx[KILN_SHAPE_STR_MAX], si[KILN_SHAPE_STR_MAX];
  kiln_status st = need_index_dtype(c, idx, false);
  if (st != KILN_OK) return st;
  if (x->ndim == 0) return kiln_op_fail(c, KILN_ERR_SHAPE, "cannot gather from a 0-d tensor");
  if (idx->ndim != x->ndim)
    return kiln_op_fail(c, KILN_ERR_SHAPE, "index %s must have as many dims as x %s", SHAPE_OF(si, idx),
                        SHAPE_OF(sx, x));
  int axis;
  st = kiln_op_axis(c, c->attrs[0].i, x->ndim, &axis);
  if (st != KILN_OK) return st;
  for (int i = 0; i < x->ndim; i++)
    if (i != axis && idx->shape[i] > x->shape[i])
      return kiln_op_fail(c, KILN_ERR_SHAPE, "index %s is longer than x %s on dim %d (only axis %d may be)",
                          SHAPE_OF(si, idx), SHAPE_OF(sx, x), i, axis);
  set_out(out, x->dtype, idx->ndim, idx->shape);
  return KILN_OK;
}

static kiln_status gather_run(const kiln_op_call *c, bool ref) {
  int axis = kernel_axis(c, c->in[0].ndim);
  kk_index_error e;
  kiln_status st = ref ? kk_gather_ref(&c->in[0], axis, &c->in[1], &c->out[0], &e)
                       : kk_gather(&c->in[0], axis, &c->in[1], &c->out[0], &e);
  return st == KILN_OK ? st : index_failure(c, st, &c->in[1], &e, axis);
}
static kiln_status gather_kernel(const kiln_op_call *c) { return gather_run(c, false); }
static kiln_status gather_reference(const kiln_op_call *c) { return gather_run(c, true); }

static const kiln_attr_spec gather_attrs[] = {{"axis", KILN_ATTR_INT, 0}};
const kiln_op_def kiln_opdef_gather = {.name = "gather",
                                       .min_inputs = 2,
                                       .max_inputs = 2,
                                       .n_outputs = 1,
                                       .attrs = gather_attrs,
                                       .n_attrs = KILN_COUNTOF(gather_attrs),
                                       .infer = gather_infer,
                                       .kernel = gather_kernel,
                                       .reference = gather_reference};

/* ---------------------------------------------------------------- one_hot */

/* uint8 indices are admitted because dataset labels (IDX) come as uint8. */
static kiln_status one_hot_infer(const kiln_op_call *c, kiln_out_desc *out) {
  const kk_view *idx = &c->in[0];
  int64_t depth = c->attrs[0].i, dt = c->attrs[1].i;
  char si[KILN_SHAPE_STR_MAX];
  kiln_status st = need_index_dtype(c, idx, true);
  if (st != KILN_OK) return st;
  if (depth < 0) return kiln_op_fail(c, KILN_ERR_INVALID_ARGUMENT, "depth %lld is negative", (long long)depth);
  if (!is_dtype(dt)) return kiln_op_fail(c, KILN_ERR_DTYPE, "unknown dtype %lld", (long long)dt);
  if (idx->ndim + 1 > KILN_MAX_DIMS)
    return kiln_op_fail(c, KILN_ERR_SHAPE, "indices %s would give %d dims (at most %d)", SHAPE_OF(si, idx),
                        idx->ndim + 1, KILN_MAX_DIMS);
  set_out(out, (kiln_dtype)dt, idx->ndim, idx->shape);
  out->ndim = idx->ndim + 1;
  out->shape[idx->ndim] = depth;
  return KILN_OK;
}

static kiln_status one_hot_run(const kiln_op_call *c, bool ref) {
  kk_index_error e;
  kiln_status st = ref ? kk_one_hot_ref(&c->in[0], &c->out[0], &e) : kk_one_hot(&c->in[0], &c->out[0], &e);
  return st == KILN_OK ? st : index_failure(c, st, &c->in[0], &e, -1);
}
static kiln_status one_hot_kernel(const kiln_op_call *c) { return one_hot_run(c, false); }
static kiln_status one_hot_reference(const kiln_op_call *c) { return one_hot_run(c, true); }

static const kiln_attr_spec one_hot_attrs[] = {{"depth", KILN_ATTR_INT, 0}, {"dtype", KILN_ATTR_INT, KILN_F32}};
const kiln_op_def kiln_opdef_one_hot = {.name = "one_hot",
                                        .min_inputs = 1,
                                        .max_inputs = 1,
                                        .n_outputs = 1,
                                        .attrs = one_hot_attrs,
                                        .n_attrs = KILN_COUNTOF(one_hot_attrs),
                                        .infer = one_hot_infer,
                                        .kernel = one_hot_kernel,
                                        .reference = one_hot_reference};

/* ---------------------------------------------------------------- pad */

/* pads lists (before, after) pairs for the LEADING axes; a list shorter than
 * 2 * ndim leaves the trailing axes unpadded (ONNX's and numpy's order, not
 * torch.nn.functional.pad's, which starts from the last axis). */
static kiln_status pad_infer(const kiln_op_call *c, kiln_out_desc *out) {
  const kk_view *x = &c->in[0];
  const kiln_attr_value *pads = &c->attrs[0];
  char sx[KILN_SHAPE_STR_MAX];
  if (pads->n < 0 || pads->n > KILN_MAX_ATTR_INTS)
    return kiln_op_fail(c, KILN_ERR_INVALID_ARGUMENT, "%d pad values (0 to %d supported)", pads->n,
                        KILN_MAX_ATTR_INTS);
  if (pads->n % 2 != 0)
    return kiln_op_fail(c, KILN_ERR_INVALID_ARGUMENT, "%d pad values: they come in (before, after) pairs", pads->n);
  if (pads->n / 2 > x->ndim)
    return kiln_op_fail(c, KILN_ERR_INVALID_ARGUMENT, "too many pads: %d values for %d dims of shape %s", pads->n,
                        x->ndim, SHAPE_OF(sx, x));
  set_out(out, x->dtype, x->ndim, x->shape);
  for (int i = 0; i < pads->n / 2; i++) {
    int64_t before = pads->ints[2 * i], after = pads->ints[2 * i + 1];
    if (before < 0 || after < 0)
      return kiln_op_fail(c, KILN_ERR_INVALID_ARGUMENT, "negative pad (%lld, %lld) for axis %d", (long long)before,
                          (long long)after, i);
    if (!kiln_add_i64(out->shape[i], before, &out->shape[i]) || !kiln_add_i64(out->shape[i], after, &out->shape[i]))
      return kiln_op_fail(c, KILN_ERR_OVERFLOW, "padding axis %d of shape %s overflows", i, SHAPE_OF(sx, x));
  }
  return KILN_OK;
}

static kiln_status pad_kernel(const kiln_op_call *c) {
  kk_pad(&c->in[0], c->attrs[0].n, c->attrs[0].ints, c->attrs[1].f, &c->out[0]);
  return KILN_OK;
}

static kiln_status pad_reference(const kiln_op_call *c) {
  kk_pad_ref(&c->in[0], c->attrs[0].n, c->attrs[0].ints, c->attrs[1].f, &c->out[0]);
  return KILN_OK;
}

static const kiln_attr_spec pad_attrs[] = {{"pads", KILN_ATTR_INTS, 0}, {"value", KILN_ATTR_FLOAT, 0}};
const kiln_op_def kiln_opdef_pad = {.name = "pad",
                                    .min_inputs = 1,
                                    .max_inputs = 1,
                                    .n_outputs = 1,
                                    .attrs = pad_attrs,
                                    .n_attrs = KILN_COUNTOF(pad_attrs),
                                    .infer = pad_infer,
                                    .kernel = pad_kernel,
                                    .reference = pad_reference};

/* ---------------------------------------------------------------- cast */

static kiln_status cast_infer(const kiln_op_call *c, kiln_out_desc *out) {
  int64_t dt = c->attrs[0].i;
  if (!is_dtype(dt)) return kiln_op_fail(c, KILN_ERR_DTYPE, "unknown dtype %lld", (long long)dt);
  set_out(out, (kiln_dtype)dt, c->in[0].ndim, c->in[0].shape);
  return KILN_OK;
}

static kiln_status cast_kernel(const kiln_op_call *c) {
  kk_cast(&c->in[0], &c->out[0]);
  return KILN_OK;
}

static kiln_status cast_reference(const kiln_op_call *c) {
  kk_cast_ref(&c->in[0], &c->out[0]);
  return KILN_OK;
}

static const kiln_attr_spec cast_attrs[] = {{"dtype", KILN_ATTR_INT, KILN_F32}};
const kiln_op_def kiln_opdef_cast = {.name = "cast",
                                     .min_inputs = 1,
                                     .max_inputs = 1,
                                     .n_outputs = 1,
                                     .attrs = cast_attrs,
                                     .n_attrs = KILN_COUNTOF(cast_attrs),
                                     .flags = KILN_OP_ELEMENTWISE,
                                     .infer = cast_infer,
                                     .kernel = cast_kernel,
                                     .reference = cast_reference};

/* ---------------------------------------------------------------- public API */

/* A failed handle for a bad C argument, registered with the scope like any
 * op result. */

/* A failed input wins over a bad argument: the first failure of a chain is
 * the one reported, as when dispatch passes it on. */
static kiln_tensor *first_failure(int n, kiln_tensor *const *xs) {
  for (int i = 0; xs && i < n; i++)
    if (xs[i] && tensor_failed(xs[i])) return xs[i];
  return NULL;
}

static kiln_tensor *pass_on(kiln_tensor *failed) {
  kiln_errorf(failed->status, "%s", failed->error);
  return tensor_autorelease(tensor_new_failed_from(failed));
}

kiln_tensor *kiln_concat(int n, kiln_tensor *const *xs, int axis) {
  if (!xs) return kiln_failed(KILN_ERR_INVALID_ARGUMENT, "concat: xs is NULL");
  if (n <= 0) return kiln_failed(KILN_ERR_INVALID_ARGUMENT, "concat: needs at least 1 input, got %d", n);
  kiln_attr_value a[KILN_MAX_ATTRS];
  kiln_attrs_default(KILN_OP_CONCAT, a);
  a[0].i = axis;
  return kiln_dispatch1(KILN_OP_CONCAT, n, xs, a);
}

kiln_tensor *kiln_stack(int n, kiln_tensor *const *xs, int axis) {
  if (!xs) return kiln_failed(KILN_ERR_INVALID_ARGUMENT, "stack: xs is NULL");
  if (n <= 0) return kiln_failed(KILN_ERR_INVALID_ARGUMENT, "stack: needs at least 1 input, got %d", n);
  kiln_attr_value a[KILN_MAX_ATTRS];
  kiln_attrs_default(KILN_OP_STACK, a);
  a[0].i = axis;
  return kiln_dispatch1(KILN_OP_STACK, n, xs, a);
}

kiln_status kiln_split(kiln_tensor *x, int axis, int n, const int64_t *sizes, kiln_tensor **out) {
  if (!out) return kiln_errorf(KILN_ERR_INVALID_ARGUMENT, "split: out is NULL");
  if (n <= 0) return kiln_errorf(KILN_ERR_INVALID_ARGUMENT, "split: needs at least 1 part, got %d", n);
  kiln_tensor *bad = first_failure(1, &x);
  kiln_status st = KILN_OK;
  if (!bad && !sizes) st = kiln_errorf(KILN_ERR_INVALID_ARGUMENT, "split: sizes is NULL");
  if (!bad && n > KILN_MAX_ATTR_INTS)
    st = kiln_errorf(KILN_ERR_INVALID_ARGUMENT, "split: %d parts, at most %d supported", n, KILN_MAX_ATTR_INTS);
  if (bad || st != KILN_OK) {
    /* Every part carries the failure, as a dispatch failure would. */
    const char *msg = bad ? bad->error : kiln_last_error();
    st = bad ? bad->status : st;
    char copy[KILN_ERROR_MAX];
    snprintf(copy, sizeof copy, "%s", msg);
    for (int i = 0; i < n; i++) out[i] = tensor_autorelease(tensor_new_failed(st, copy));
    return kiln_errorf(st, "%s", copy);
  }
  kiln_attr_value a[KILN_MAX_ATTRS];
  kiln_attrs_default(KILN_OP_SPLIT, a);
  a[0].i = axis;
  kiln_attr_set_ints(&a[1], n, sizes);
  return kiln_dispatch(KILN_OP_SPLIT, 1, &x, a, n, out);
}

kiln_tensor *kiln_take(kiln_tensor *x, kiln_tensor *indices, int axis) {
  kiln_attr_value a[KILN_MAX_ATTRS];
  kiln_attrs_default(KILN_OP_TAKE, a);
  a[0].i = axis;
  return kiln_dispatch1(KILN_OP_TAKE, 2, (kiln_tensor *const[]){x, indices}, a);
}

kiln_tensor *kiln_gather(kiln_tensor *x, int axis, kiln_tensor *index) {
  kiln_attr_value a[KILN_MAX_ATTRS];
  kiln_attrs_default(KILN_OP_GATHER, a);
  a[0].i = axis;
  return kiln_dispatch1(KILN_OP_GATHER, 2, (kiln_tensor *const[]){x, index}, a);
}

kiln_tensor *kiln_one_hot(kiln_tensor *indices, int64_t depth, kiln_dtype dt) {
  kiln_attr_value a[KILN_MAX_ATTRS];
  kiln_attrs_default(KILN_OP_ONE_HOT, a);
  a[0].i = depth;
  a[1].i = (int)dt; /* through int: the enum's type may be unsigned */
  return kiln_dispatch1(KILN_OP_ONE_HOT, 1, &indices, a);
}

kiln_tensor *kiln_pad(kiln_tensor *x, int n_pads, const int64_t *pads, double value) {
  kiln_tensor *bad = first_failure(1, &x);
  if (!bad) {
    if (n_pads < 0) return kiln_failed(KILN_ERR_INVALID_ARGUMENT, "pad: n_pads is negative (%d)", n_pads);
    if (n_pads > 0 && !pads) return kiln_failed(KILN_ERR_INVALID_ARGUMENT, "pad: pads is NULL");
    if (n_pads > KILN_MAX_ATTR_INTS)
      return kiln_failed(KILN_ERR_INVALID_ARGUMENT, "pad: too many pads: %d values (at most %d, 2 per dim)", n_pads,
                         KILN_MAX_ATTR_INTS);
  } else if (n_pads < 0 || (n_pads > 0 && !pads) || n_pads > KILN_MAX_ATTR_INTS) {
    return pass_on(bad);
  }
  kiln_attr_value a[KILN_MAX_ATTRS];
  kiln_attrs_default(KILN_OP_PAD, a);
  kiln_attr_set_ints(&a[0], n_pads, pads);
  a[1].f = value;
  return kiln_dispatch1(KILN_OP_PAD, 1, &x, a);
}

kiln_tensor *kiln_cast(kiln_tensor *x, kiln_dtype dt) {
  kiln_attr_value a[KILN_MAX_ATTRS];
  kiln_attrs_default(KILN_OP_CAST, a);
  a[0].i = (int)dt; /* through int: the enum's type may be unsigned */
  return kiln_dispatch1(KILN_OP_CAST, 1, &x, a);
}
