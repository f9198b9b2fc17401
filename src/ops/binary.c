/* Binary elementwise ops with NumPy broadcasting, their scalar forms (one
 * input and a "scalar" attribute, so graphs and exports carry the constant
 * in the op) and where. */
#include "imperative/dispatch.h"
#include "kernels/elementwise.h"

static const kiln_attr_spec scalar_attrs[] = {{"scalar", KILN_ATTR_FLOAT, 0}};

static bool is_logical(kk_binary_op op) { return op == KK_LOGICAL_AND || op == KK_LOGICAL_OR; }

static kiln_status binary_infer(const kiln_op_call *c, kiln_out_desc *out) {
  kk_binary_op op = (kk_binary_op)c->def->code;
  const kk_view *a = &c->in[0];
  if (c->n_in == 2 && !is_logical(op) && c->in[1].dtype != a->dtype)
    return kiln_op_fail(c, KILN_ERR_DTYPE, "dtypes %s and %s differ (cast one first)", kiln_dtype_name(a->dtype),
                        kiln_dtype_name(c->in[1].dtype));
  if (!is_logical(op) && !kk_binary_is_compare(op) && a->dtype == KILN_BOOL)
    return kiln_op_fail(c, KILN_ERR_DTYPE, "does not take bool (use logical_and/logical_or or cast)");
  const kk_view *views[2] = {&c->in[0], c->n_in == 2 ? &c->in[1] : &c->in[0]};
  kiln_status st = kiln_op_broadcast(c, c->n_in, views, out);
  if (st != KILN_OK) return st;
  out->dtype = kk_binary_is_compare(op) ? KILN_BOOL : a->dtype;
  return KILN_OK;
}

/* The scalar operand as a 0-d view in x's dtype, in caller-provided bytes. */
static kk_view scalar_view(const kiln_op_call *c, char *bytes) {
  kk_view s = {.data = bytes, .dtype = c->in[0].dtype, .ndim = 0};
  kk_set_f64(s.dtype, bytes, c->attrs[0].f);
  return s;
}

static kiln_status binary_kernel(const kiln_op_call *c) {
  if (c->n_in == 2) return kk_binary((kk_binary_op)c->def->code, &c->in[0], &c->in[1], &c->out[0]);
  _Alignas(8) char bytes[8];
  kk_view s = scalar_view(c, bytes);
  return kk_binary((kk_binary_op)c->def->code, &c->in[0], &s, &c->out[0]);
}

static kiln_status binary_reference(const kiln_op_call *c) {
  if (c->n_in == 2) return kk_binary_ref((kk_binary_op)c->def->code, &c->in[0], &c->in[1], &c->out[0]);
  _Alignas(8) char bytes[8];
  kk_view s = scalar_view(c, bytes);
  return kk_binary_ref((kk_binary_op)c->def->code, &c->in[0], &s, &c->out[0]);
}

#define BINARY(opname, CODE)                                                                                    \
  const kiln_op_def kiln_opdef_##opname = {.name = #opname, .min_inputs = 2, .max_inputs = 2, .n_outputs = 1, \
                                           .flags = KILN_OP_ELEMENTWISE, .code = KK_##CODE,                    \
                                           .infer = binary_infer, .kernel = binary_kernel,                     \
                                           .reference = binary_reference};                                     \
  kiln_tensor *kiln_##opname(kiln_tensor *a, kiln_tensor *b) {                                                 \
    return kiln_dispatch1(KILN_OP_##CODE, 2, (kiln_tensor *[]){a, b}, NULL);                                   \
  }

#define SCALAR(opname, CODE)                                                                                    \
  const kiln_op_def kiln_opdef_##opname##_scalar = {                                                           \
      .name = #opname "_scalar", .min_inputs = 1, .max_inputs = 1, .n_outputs = 1, .attrs = scalar_attrs,      \
      .n_attrs = 1, .flags = KILN_OP_ELEMENTWISE, .code = KK_##CODE, .infer = binary_infer,                    \
      .kernel = binary_kernel, .reference = binary_reference};                                                 \
  kiln_tensor *kiln_##opname##_scalar(kiln_tensor *x, double s) {                                              \
    kiln_attr_value a[KILN_MAX_ATTRS];                                                                         \
    kiln_attrs_default(KILN_OP_##CODE##_SCALAR, a);                                                            \
    a[0].f = s;                                                                                                \
    return kiln_dispatch1(KILN_OP_##CODE##_SCALAR, 1, &x, a);                                                  \
  }

BINARY(add, ADD)
BINARY(sub, SUB)
BINARY(mul, MUL)
BINARY(div, DIV)
BINARY(pow, POW)
BINARY(maximum, MAXIMUM)
BINARY(minimum, MINIMUM)
BINARY(equal, EQUAL)
BINARY(not_equal, NOT_EQUAL)
BINARY(less, LESS)
BINARY(less_equal, LESS_EQUAL)
BINARY(greater, GREATER)
BINARY(greater_equal, GREATER_EQUAL)
BINARY(logical_and, LOGICAL_AND)
BINARY(logical_or, LOGICAL_OR)

SCALAR(add, ADD)
SCALAR(sub, SUB)
SCALAR(mul, MUL)
SCALAR(div, DIV)
SCALAR(pow, POW)
SCALAR(maximum, MAXIMUM)
SCALAR(minimum, MINIMUM)

/* ------------------------------------------------------------------ where */

static kiln_status where_infer(const kiln_op_call *c, kiln_out_desc *out) {
  if (c->in[1].dtype != c->in[2].dtype)
    return kiln_op_fail(c, KILN_ERR_DTYPE, "branches have dtypes %s and %s (cast one first)",
                        kiln_dtype_name(c->in[1].dtype), kiln_dtype_name(c->in[2].dtype));
  const kk_view *views[3] = {&c->in[0], &c->in[1], &c->in[2]};
  kiln_status st = kiln_op_broadcast(c, 3, views, out);
  out->dtype = c->in[1].dtype;
  return st;
}

static kiln_status where_kernel(const kiln_op_call *c) { return kk_where(&c->in[0], &c->in[1], &c->in[2], &c->out[0]); }
static kiln_status where_reference(const kiln_op_call *c) {
  return kk_where_ref(&c->in[0], &c->in[1], &c->in[2], &c->out[0]);
}

const kiln_op_def kiln_opdef_where = {.name = "where", .min_inputs = 3, .max_inputs = 3, .n_outputs = 1,
                                      .flags = KILN_OP_ELEMENTWISE, .infer = where_infer, .kernel = where_kernel,
                                      .reference = where_reference};

kiln_tensor *kiln_where(kiln_tensor *cond, kiln_tensor *a, kiln_tensor *b) {
  return kiln_dispatch1(KILN_OP_WHERE, 3, (kiln_tensor *[]){cond, a, b}, NULL);
}
