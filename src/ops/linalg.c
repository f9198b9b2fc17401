/* matmul (numpy semantics) and linear (act(x . w^T + b)). */
#include <string.h>

#include "imperative/dispatch.h"
#include "kernels/gemm.h"

static kiln_status float_operands(const kiln_op_call *c) {
  kiln_dtype dt = c->in[0].dtype;
  if (!kk_is_float(dt)) return kiln_op_fail(c, KILN_ERR_DTYPE, "takes float32 or float64, not %s", kiln_dtype_name(dt));
  for (int i = 1; i < c->n_in; i++)
    if (c->in[i].dtype != dt)
      return kiln_op_fail(c, KILN_ERR_DTYPE, "input %d is %s, input 0 is %s", i, kiln_dtype_name(c->in[i].dtype),
                          kiln_dtype_name(dt));
  return KILN_OK;
}

/* The operands as >= 2-D views (1-D a becomes [1, K], 1-D b [K, 1]) and the
 * output with those added dims put back. */
static void promote(const kiln_op_call *c, kk_view *a, kk_view *b, kk_view *o) {
  *a = c->in[0];
  *b = c->in[1];
  if (a->ndim == 1) {
    a->ndim = 2;
    a->shape[1] = a->shape[0], a->strides[1] = a->strides[0];
    a->shape[0] = 1, a->strides[0] = a->shape[1] * a->strides[1];
  }
  if (b->ndim == 1) {
    b->ndim = 2;
    b->shape[1] = 1, b->strides[1] = 1;
  }
  if (o) {
    *o = c->out[0];
    int nd = a->ndim > b->ndim ? a->ndim : b->ndim;
    o->ndim = nd;
    for (int d = 0; d < nd - 2; d++) {
      int da = d - (nd - a->ndim), db = d - (nd - b->ndim);
      int64_t ea = da >= 0 ? a->shape[da] : 1, eb = db >= 0 ? b->shape[db] : 1;
      o->shape[d] = ea > eb ? ea : eb;
      if (ea == 0 || eb == 0) o->shape[d] = 0;
    }
    o->shape[nd - 2] = a->shape[a->ndim - 2];
    o->shape[nd - 1] = b->shape[b->ndim - 1];
    int64_t s = 1;
    for (int d = nd - 1; d >= 0; d--) o->strides[d] = s, s *= o->shape[d];
  }
}

static kiln_status matmul_infer(const kiln_op_call *c, kiln_out_desc *out) {
  kiln_status st = float_operands(c);
  if (st != KILN_OK) return st;
  const kk_view *ra = &c->in[0], *rb = &c->in[1];
  char as[KILN_SHAPE_STR_MAX], bs[KILN_SHAPE_STR_MAX];
  kiln_shape_str(as, sizeof as, ra->ndim, ra->shape);
  kiln_shape_str(bs, sizeof bs, rb->ndim, rb->shape);
  if (ra->ndim == 0 || rb->ndim == 0) return kiln_op_fail(c, KILN_ERR_SHAPE, "operands %s and %s must not be 0-d", as, bs);
  kk_view a, b;
  promote(c, &a, &b, NULL);
  int64_t k = a.shape[a.ndim - 1];
  if (b.shape[b.ndim - 2] != k)
    return kiln_op_fail(c, KILN_ERR_SHAPE, "inner dims differ: %s and %s (%lld vs %lld)", as, bs, (long long)k,
                        (long long)b.shape[b.ndim - 2]);
  /* Batch dims broadcast as NumPy's. */
  kk_view ba = a, bb = b;
  ba.ndim -= 2;
  bb.ndim -= 2;
  const kk_view *views[2] = {&ba, &bb};
  if (kiln_op_broadcast(c, 2, views, out) != KILN_OK)
    return kiln_op_fail(c, KILN_ERR_SHAPE, "batch dims of %s and %s cannot broadcast", as, bs);
  if (ra->ndim > 1) out->shape[out->ndim++] = a.shape[a.ndim - 2];
  if (rb->ndim > 1) out->shape[out->ndim++] = b.shape[b.ndim - 1];
  out->dtype = a.dtype;
  return KILN_OK;
}

static kiln_status matmul_kernel(const kiln_op_call *c) {
  kk_view a, b, o;
  promote(c, &a, &b, &o);
  return kk_numel(&o) ? kk_matmul(&a, &b, &o) : KILN_OK;
}

static kiln_status matmul_reference(const kiln_op_call *c) {
  kk_view a, b, o;
  promote(c, &a, &b, &o);
  return kk_numel(&o) ? kk_matmul_ref(&a, &b, &o) : KILN_OK;
}

const kiln_op_def kiln_opdef_matmul = {.name = "matmul", .min_inputs = 2, .max_inputs = 2, .n_outputs = 1,
                                       .infer = matmul_infer, .kernel = matmul_kernel, .reference = matmul_reference};

kiln_tensor *kiln_matmul(kiln_tensor *a, kiln_tensor *b) {
  return kiln_dispatch1(KILN_OP_MATMUL, 2, (kiln_tensor *[]){a, b}, NULL);
}

/* ------------------------------------------------------------------ linear */

/* The activation a linear op applies in its GEMM's epilogue: those whose
 * derivative is a function of their output, so the gradient needs no
 * second copy of the pre-activation. KK_UNARY_COUNT for none, -1 for one
 * linear does not take. */
static int linear_act(int64_t activation) {
  switch (activation) {
  case KILN_ACT_NONE: return KK_UNARY_COUNT;
  case KILN_ACT_RELU: return KK_RELU;
  case KILN_ACT_SIGMOID: return KK_SIGMOID;
  case KILN_ACT_TANH: return KK_TANH;
  default: return -1;
  }
}

static kiln_status linear_infer(const kiln_op_call *c, kiln_out_desc *out) {
  kiln_status st = float_operands(c);
  if (st != KILN_OK) return st;
  if (linear_act(c->attrs[0].i) < 0)
    return kiln_op_fail(c, KILN_ERR_INVALID_ARGUMENT, "activation %lld is not none, relu, sigmoid or tanh",
                        (long long)c->attrs[0].i);
  const kk_view *x = &c->in[0], *w = &c->in[1];
  char xs[KILN_SHAPE_STR_MAX], ws[KILN_SHAPE_STR_MAX];
  kiln_shape_str(xs, sizeof xs, x->ndim, x->shape);
  kiln_shape_str(ws, sizeof ws, w->ndim, w->shape);
  if (w->ndim != 2) return kiln_op_fail(c, KILN_ERR_SHAPE, "weight %s must be [out, in]", ws);
  if (x->ndim < 1 || x->shape[x->ndim - 1] != w->shape[1])
    return kiln_op_fail(c, KILN_ERR_SHAPE, "input %s does not end in weight %s's in-dim %lld", xs, ws,
                        (long long)w->shape[1]);
  if (c->n_in == 3 && (c->in[2].ndim != 1 || c->in[2].shape[0] != w->shape[0])) {
    char bs[KILN_SHAPE_STR_MAX];
    return kiln_op_fail(c, KILN_ERR_SHAPE, "bias %s must be [%lld] for weight %s",
                        kiln_shape_str(bs, sizeof bs, c->in[2].ndim, c->in[2].shape), (long long)w->shape[0], ws);
  }
  out->dtype = x->dtype;
  out->ndim = x->ndim;
  memcpy(out->shape, x->shape, sizeof out->shape);
  out->shape[x->ndim - 1] = w->shape[0];
  return KILN_OK;
}

static kiln_status linear_kernel(const kiln_op_call *c) {
  return kk_linear(&c->in[0], &c->in[1], c->n_in == 3 ? &c->in[2] : NULL, (kk_unary_op)linear_act(c->attrs[0].i),
                   &c->out[0]);
}

static kiln_status linear_reference(const kiln_op_call *c) {
  return kk_linear_ref(&c->in[0], &c->in[1], c->n_in == 3 ? &c->in[2] : NULL, (kk_unary_op)linear_act(c->attrs[0].i),
                       &c->out[0]);
}

static const kiln_attr_spec linear_attrs[] = {{"activation", KILN_ATTR_INT, KILN_ACT_NONE}};

const kiln_op_def kiln_opdef_linear = {.name = "linear", .min_inputs = 2, .max_inputs = 3, .n_outputs = 1,
                                       .attrs = linear_attrs, .n_attrs = KILN_COUNTOF(linear_attrs),
                                       .infer = linear_infer, .kernel = linear_kernel, .reference = linear_reference};

kiln_tensor *kiln_linear(kiln_tensor *x, kiln_tensor *w, kiln_tensor *bias) {
  return kiln_linear_act(x, w, bias, KILN_ACT_NONE);
}

kiln_tensor *kiln_linear_act(kiln_tensor *x, kiln_tensor *w, kiln_tensor *bias, kiln_activation activation) {
  kiln_attr_value a[KILN_MAX_ATTRS];
  kiln_attrs_default(KILN_OP_LINEAR, a);
  a[0].i = activation;
  return kiln_dispatch1(KILN_OP_LINEAR, bias ? 3 : 2, (kiln_tensor *[]){x, w, bias}, a);
}
