/* Unary elementwise ops: one infer and one kernel pair shared by the family,
 * the member chosen by the def's code. */
#include "imperative/dispatch.h"
#include "kernels/elementwise.h"

#include <math.h>

static const kiln_attr_spec leaky_attrs[] = {{"slope", KILN_ATTR_FLOAT, 0.01}};
static const kiln_attr_spec clip_attrs[] = {{"min", KILN_ATTR_FLOAT, -INFINITY}, {"max", KILN_ATTR_FLOAT, INFINITY}};

static kiln_status unary_infer(const kiln_op_call *c, kiln_out_desc *out) {
  const kk_view *x = &c->in[0];
  kk_unary_op op = (kk_unary_op)c->def->code;
  if (!kk_is_float(x->dtype) && (!kk_unary_takes_int(op) || (x->dtype == KILN_BOOL && op != KK_LOGICAL_NOT)))
    return kiln_op_fail(c, KILN_ERR_DTYPE, "does not take %s (cast to float32 first)", kiln_dtype_name(x->dtype));
  if (op == KK_CLIP && c->attrs[0].f > c->attrs[1].f)
    return kiln_op_fail(c, KILN_ERR_INVALID_ARGUMENT, "min %g is greater than max %g", c->attrs[0].f, c->attrs[1].f);
  out->dtype = op == KK_LOGICAL_NOT ? KILN_BOOL : x->dtype;
  out->ndim = x->ndim;
  for (int i = 0; i < x->ndim; i++) out->shape[i] = x->shape[i];
  return KILN_OK;
}

static kiln_status unary_kernel(const kiln_op_call *c) {
  return kk_unary((kk_unary_op)c->def->code, &c->in[0], &c->out[0], c->attrs[0].f, c->attrs[1].f);
}

static kiln_status unary_reference(const kiln_op_call *c) {
  return kk_unary_ref((kk_unary_op)c->def->code, &c->in[0], &c->out[0], c->attrs[0].f, c->attrs[1].f);
}

#define UNARY_DEF(opname, CODE, ATTRS, NATTRS)                                                                   \
  const kiln_op_def kiln_opdef_##opname = {.name = #opname, .min_inputs = 1, .max_inputs = 1, .n_outputs = 1,   \
                                           .attrs = ATTRS, .n_attrs = NATTRS, .flags = KILN_OP_ELEMENTWISE,     \
                                           .code = CODE, .infer = unary_infer, .kernel = unary_kernel,          \
                                           .reference = unary_reference};

/* The op ids (KILN_OP_X) and kernel codes (KK_X) share their spelling. */
#define UNARY_PLAIN(opname, CODE)                                                 \
  UNARY_DEF(opname, KK_##CODE, NULL, 0)                                           \
  kiln_tensor *kiln_##opname(kiln_tensor *x) { return kiln_dispatch1(KILN_OP_##CODE, 1, &x, NULL); }

UNARY_PLAIN(neg, NEG)
UNARY_PLAIN(abs, ABS)
UNARY_PLAIN(exp, EXP)
UNARY_PLAIN(log, LOG)
UNARY_PLAIN(sqrt, SQRT)
UNARY_PLAIN(rsqrt, RSQRT)
UNARY_PLAIN(square, SQUARE)
UNARY_PLAIN(sin, SIN)
UNARY_PLAIN(cos, COS)
UNARY_PLAIN(tanh, TANH)
UNARY_PLAIN(sigmoid, SIGMOID)
UNARY_PLAIN(relu, RELU)
UNARY_PLAIN(gelu, GELU)
UNARY_PLAIN(softplus, SOFTPLUS)
UNARY_PLAIN(sign, SIGN)
UNARY_PLAIN(floor, FLOOR)
UNARY_PLAIN(ceil, CEIL)
UNARY_PLAIN(round, ROUND)
UNARY_PLAIN(logical_not, LOGICAL_NOT)
UNARY_PLAIN(erf, ERF)

UNARY_DEF(leaky_relu, KK_LEAKY_RELU, leaky_attrs, KILN_COUNTOF(leaky_attrs))
UNARY_DEF(clip, KK_CLIP, clip_attrs, KILN_COUNTOF(clip_attrs))

kiln_tensor *kiln_leaky_relu(kiln_tensor *x, double slope) {
  kiln_attr_value a[KILN_MAX_ATTRS];
  kiln_attrs_default(KILN_OP_LEAKY_RELU, a);
  a[0].f = slope;
  return kiln_dispatch1(KILN_OP_LEAKY_RELU, 1, &x, a);
}

kiln_tensor *kiln_clip(kiln_tensor *x, double lo, double hi) {
  kiln_attr_value a[KILN_MAX_ATTRS];
  kiln_attrs_default(KILN_OP_CLIP, a);
  a[0].f = lo;
  a[1].f = hi;
  return kiln_dispatch1(KILN_OP_CLIP, 1, &x, a);
}
