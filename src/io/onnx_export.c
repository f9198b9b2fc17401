/* ONNX export: the graph a native export would write (model.h's
 * model_export_select: the nodes a hybridized block's latest inference plan
 * or a loaded model's plan computes its outputs from, under the same
 * parameter names) as an ONNX ModelProto, opset 17, packed by protobuf-c.
 *
 * Each kiln op becomes the ONNX node, or short composition of nodes, that
 * computes the same function (docs/onnx.md has the table); an op with no
 * such form (random ops, training-only and gradient ops) fails the export
 * with KILN_ERR_UNSUPPORTED naming the op and the node, before anything is
 * written. Bound tensors, constants and the values ops need as inputs
 * (Reshape's shape, Slice's starts, ...) are initializers with raw_data,
 * little-endian. Creation ops run at export and are written as their
 * values, as the compiler would fold them.
 *
 * Unknown dims: an input dim declared unknown (or dim 0 of every input with
 * kiln_export_options.dynamic_batch) is a dim_param, "batch" for dim 0.
 * Which dims of other values follow them is found by building the graph
 * again at another size there (graph_specialize) and comparing: a Slice on
 * such an axis must not depend on its length, and the outputs' shapes
 * declare those dims unknown.
 *
 * All protobuf messages, names and data live in one list of allocations
 * freed at the end; an allocation failure only marks the export failed,
 * so the builders need no unwinding. The file is written once, atomically
 * (model_write_atomic), and only when everything succeeded. */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "graph/graph.h"
#include "imperative/dispatch.h"
#include "io/model.h"
#include "kernels/view.h"
#include "onnx.pb-c.h"
#include "tensor/tensor.h"

#define OPSET 17
#define IR_VERSION 8 /* the IR of ONNX 1.12, whose opset is 17 */
/* Protobuf messages are limited to 2 GiB; larger models need external
 * data, which kiln does not write. */
#define MAX_FILE_BYTES ((size_t)INT32_MAX)

typedef struct {
  const char *fn, *path;
  const model_export_state *s;
  const kiln_graph *g;
  void **allocs;
  size_t n_allocs, cap_allocs;
  Onnx__NodeProto **nodes;
  size_t n_nodes, cap_nodes;
  Onnx__TensorProto **inits;
  size_t n_inits, cap_inits;
  char ***names;      /* per graph node, per output: the value's name */
  unsigned **varying; /* per graph node, per output: dims that follow an unknown input dim */
  const char *label;  /* the node being emitted, "relu.4" */
  int sub;            /* values made for it so far */
  int sub_nodes;      /* nodes made for it so far */
  bool oom;
} ex;

/* ---------------------------------------------------------------- memory */

static void *ex_alloc(ex *e, size_t n) {
  if (e->oom) return NULL;
  if (e->n_allocs == e->cap_allocs) {
    size_t cap = e->cap_allocs ? 2 * e->cap_allocs : 256;
    void **grown = kiln_alloc(cap * sizeof(void *));
    if (!grown) {
      e->oom = true;
      return NULL;
    }
    if (e->n_allocs) memcpy(grown, e->allocs, e->n_allocs * sizeof(void *));
    kiln_free(e->allocs);
    e->allocs = grown;
    e->cap_allocs = cap;
  }
  void *p = kiln_calloc(1, n ? n : 1);
  if (!p) {
    e->oom = true;
    return NULL;
  }
  e->allocs[e->n_allocs++] = p;
  return p;
}

static char *ex_strf(ex *e, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static char *ex_strf(ex *e, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(NULL, 0, fmt, ap);
  va_end(ap);
  char *s = n < 0 ? NULL : ex_alloc(e, (size_t)n + 1);
  if (!s) return NULL;
  va_start(ap, fmt);
  vsnprintf(s, (size_t)n + 1, fmt, ap);
  va_end(ap);
  return s;
}

static void ex_free(ex *e) {
  for (size_t i = 0; i < e->n_allocs; i++) kiln_free(e->allocs[i]);
  kiln_free(e->allocs);
  kiln_free(e->nodes);
  kiln_free(e->inits);
}

/* Grows a typed array held by e (nodes or initializers). */
#define EX_PUSH(e, arr, n, cap, item)                                                                                  \
  do {                                                                                                                 \
    if ((e)->oom || !(item)) break;                                                                                    \
    if ((n) == (cap)) {                                                                                                \
      size_t c_ = (cap) ? 2 * (cap) : 64;                                                                              \
      void *g_ = kiln_alloc(c_ * sizeof(*(arr)));                                                                      \
      if (!g_) {                                                                                                       \
        (e)->oom = true;                                                                                               \
        break;                                                                                                         \
      }                                                                                                                \
      if (n) memcpy(g_, (arr), (n) * sizeof(*(arr)));                                                                  \
      kiln_free(arr);                                                                                                  \
      (arr) = g_;                                                                                                      \
      (cap) = c_;                                                                                                      \
    }                                                                                                                  \
    (arr)[(n)++] = (item);                                                                                             \
  } while (0)

/* ---------------------------------------------------------------- values */

static int32_t onnx_dtype(kiln_dtype dt) {
  switch (dt) {
  case KILN_F32: return ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT;
  case KILN_F64: return ONNX__TENSOR_PROTO__DATA_TYPE__DOUBLE;
  case KILN_I32: return ONNX__TENSOR_PROTO__DATA_TYPE__INT32;
  case KILN_I64: return ONNX__TENSOR_PROTO__DATA_TYPE__INT64;
  case KILN_U8: return ONNX__TENSOR_PROTO__DATA_TYPE__UINT8;
  case KILN_BOOL: return ONNX__TENSOR_PROTO__DATA_TYPE__BOOL;
  default: return 0;
  }
}

static bool host_little_endian(void) {
  const uint16_t one = 1;
  unsigned char b;
  memcpy(&b, &one, 1);
  return b == 1;
}

/* A name for a value made on the way to the current node's result. */
static char *fresh(ex *e) { return ex_strf(e, "%s/%d", e->label, e->sub++); }

/* An initializer of the host-order, row-major bytes data; its name, or a
 * fresh one when name is NULL. */
static char *add_init(ex *e, const char *name, kiln_dtype dt, int ndim, const int64_t *shape, const void *data) {
  Onnx__TensorProto *t = ex_alloc(e, sizeof *t);
  int64_t *dims = ex_alloc(e, sizeof(int64_t) * ((size_t)ndim + 1));
  int64_t numel = 1;
  for (int d = 0; d < ndim; d++) numel *= shape[d];
  size_t es = kiln_dtype_size(dt), bytes = (size_t)numel * es;
  uint8_t *raw = ex_alloc(e, bytes);
  char *nm = name ? ex_strf(e, "%s", name) : fresh(e);
  if (!t || !dims || !raw || !nm) return NULL;
  *t = (Onnx__TensorProto)ONNX__TENSOR_PROTO__INIT;
  if (ndim) memcpy(dims, shape, sizeof(int64_t) * (size_t)ndim);
  t->n_dims = (size_t)ndim;
  t->dims = dims;
  t->has_data_type = 1;
  t->data_type = onnx_dtype(dt);
  t->name = nm;
  if (bytes) memcpy(raw, data, bytes);
  if (!host_little_endian() && es > 1)
    for (size_t i = 0; i < bytes; i += es)
      for (size_t a = 0, b = es - 1; a < b; a++, b--) {
        uint8_t x = raw[i + a];
        raw[i + a] = raw[i + b];
        raw[i + b] = x;
      }
  t->has_raw_data = 1;
  t->raw_data.len = bytes;
  t->raw_data.data = raw;
  EX_PUSH(e, e->inits, e->n_inits, e->cap_inits, t);
  return nm;
}

static char *c_i64(ex *e, int n, const int64_t *v) { return add_init(e, NULL, KILN_I64, 1, (int64_t[]){n}, v); }

/* A 0-d constant of dtype dt holding v as kiln converts a scalar
 * attribute to dt (so x op constant computes what kiln's x op_scalar s
 * does). */
static char *c_scalar(ex *e, kiln_dtype dt, double v) {
  _Alignas(8) char bytes[8] = {0};
  kk_set_f64(dt, bytes, v);
  return add_init(e, NULL, dt, 0, NULL, bytes);
}

/* ---------------------------------------------------------------- nodes */

/* A node of op_type reading in[0, n_in) (NULL entries are ONNX's omitted
 * optional inputs) and writing out[0, n_out). */
static Onnx__NodeProto *add_node(ex *e, const char *op_type, int n_in, char *const *in, int n_out, char *const *out) {
  Onnx__NodeProto *nd = ex_alloc(e, sizeof *nd);
  char **ins = ex_alloc(e, sizeof(char *) * ((size_t)n_in + 1));
  char **outs = ex_alloc(e, sizeof(char *) * ((size_t)n_out + 1));
  /* The first ONNX node made for a kiln node takes its name ("linear.3"),
   * the others add a suffix ("linear.3/1"). */
  char *name = e->sub_nodes ? ex_strf(e, "%s/%d", e->label, e->sub_nodes) : ex_strf(e, "%s", e->label);
  e->sub_nodes++;
  char *empty = ex_strf(e, "%s", "");
  if (!nd || !ins || !outs || !name || !empty) return NULL;
  *nd = (Onnx__NodeProto)ONNX__NODE_PROTO__INIT;
  for (int k = 0; k < n_in; k++) {
    ins[k] = in[k] ? in[k] : empty;
    if (!in[k] && k + 1 == n_in) n_in--; /* trailing omitted inputs are left out */
  }
  for (int k = 0; k < n_out; k++) {
    if (!out[k]) e->oom = true; /* a name that failed to allocate */
    outs[k] = out[k];
  }
  nd->n_input = (size_t)n_in;
  nd->input = ins;
  nd->n_output = (size_t)n_out;
  nd->output = outs;
  nd->name = name;
  nd->op_type = (char *)op_type;
  EX_PUSH(e, e->nodes, e->n_nodes, e->cap_nodes, nd);
  return nd;
}

/* One-output node; writes out, or a fresh value when out is NULL. */
static char *node1(ex *e, const char *op_type, int n_in, char *const *in, char *out) {
  char *o = out ? out : fresh(e);
  if (!o) {
    e->oom = true;
    return NULL;
  }
  add_node(e, op_type, n_in, in, 1, &o);
  return o;
}

static Onnx__AttributeProto *add_attr(ex *e, Onnx__NodeProto *nd, const char *name) {
  if (!nd) return NULL;
  Onnx__AttributeProto *a = ex_alloc(e, sizeof *a);
  Onnx__AttributeProto **list = ex_alloc(e, sizeof(void *) * (nd->n_attribute + 1));
  if (!a || !list) return NULL;
  *a = (Onnx__AttributeProto)ONNX__ATTRIBUTE_PROTO__INIT;
  a->name = (char *)name;
  a->has_type = 1;
  if (nd->n_attribute) memcpy(list, nd->attribute, sizeof(void *) * nd->n_attribute);
  list[nd->n_attribute++] = a;
  nd->attribute = list;
  return a;
}

static void attr_i(ex *e, Onnx__NodeProto *nd, const char *name, int64_t v) {
  Onnx__AttributeProto *a = add_attr(e, nd, name);
  if (!a) return;
  a->type = ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INT;
  a->has_i = 1;
  a->i = v;
}

static void attr_f(ex *e, Onnx__NodeProto *nd, const char *name, float v) {
  Onnx__AttributeProto *a = add_attr(e, nd, name);
  if (!a) return;
  a->type = ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__FLOAT;
  a->has_f = 1;
  a->f = v;
}

static void attr_ints(ex *e, Onnx__NodeProto *nd, const char *name, int n, const int64_t *v) {
  Onnx__AttributeProto *a = add_attr(e, nd, name);
  int64_t *copy = ex_alloc(e, sizeof(int64_t) * ((size_t)n + 1));
  if (!a || !copy) return;
  if (n) memcpy(copy, v, sizeof(int64_t) * (size_t)n);
  a->type = ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INTS;
  a->n_ints = (size_t)n;
  a->ints = copy;
}

static void attr_s(ex *e, Onnx__NodeProto *nd, const char *name, const char *v) {
  Onnx__AttributeProto *a = add_attr(e, nd, name);
  if (!a) return;
  a->type = ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__STRING;
  a->has_s = 1;
  a->s.len = strlen(v);
  a->s.data = (uint8_t *)v;
}

/* ---------------------------------------------------------------- op mapping */

typedef struct {
  ex *e;
  const graph_node *n;
  int index; /* in the graph */
  char *in[KILN_MAX_ATTRS * 8];
  char **out; /* the node's output names */
} op_ctx;

static const kiln_out_desc *in_desc(const op_ctx *c, int k) {
  const graph_ref r = c->n->in[k];
  return &c->e->g->nodes[r.node].out[r.index];
}

static unsigned in_varying(const op_ctx *c, int k) {
  const graph_ref r = c->n->in[k];
  return c->e->varying[r.node] ? c->e->varying[r.node][r.index] : 0;
}

static kiln_status unsupported(const op_ctx *c, const char *why) {
  const ex *e = c->e;
  return kiln_errorf(KILN_ERR_UNSUPPORTED, "%s: %s: node '%s' (op %s): %s", e->fn, e->path, e->label,
                     kiln_op_get(c->n->op)->name, why);
}

static int norm_axis(int64_t axis, int ndim) { return (int)(axis < 0 ? axis + ndim : axis); }

/* kiln's height/width pair attributes: empty is dflt, one value both. */
static void pair(const kiln_attr_value *a, int64_t dflt, int64_t out[2]) {
  out[0] = a->n == 0 ? dflt : a->ints[0];
  out[1] = a->n == 0 ? dflt : a->n == 1 ? a->ints[0] : a->ints[1];
}

static const char *unary_type(kiln_op_id id) {
  switch (id) {
  case KILN_OP_NEG: return "Neg";
  case KILN_OP_ABS: return "Abs";
  case KILN_OP_EXP: return "Exp";
  case KILN_OP_LOG: return "Log";
  case KILN_OP_SQRT: return "Sqrt";
  case KILN_OP_SIN: return "Sin";
  case KILN_OP_COS: return "Cos";
  case KILN_OP_TANH: return "Tanh";
  case KILN_OP_SIGMOID: return "Sigmoid";
  case KILN_OP_RELU: return "Relu";
  case KILN_OP_SOFTPLUS: return "Softplus";
  case KILN_OP_SIGN: return "Sign";
  case KILN_OP_FLOOR: return "Floor";
  case KILN_OP_CEIL: return "Ceil";
  case KILN_OP_ROUND: return "Round"; /* kiln's nearbyint: half to even, as ONNX's */
  case KILN_OP_ERF: return "Erf";
  case KILN_OP_LOGICAL_NOT: return "Not";
  case KILN_OP_COPY: return "Identity";
  default: return NULL;
  }
}

static const char *binary_type(kiln_op_id id) {
  switch (id) {
  case KILN_OP_ADD: case KILN_OP_ADD_SCALAR: return "Add";
  case KILN_OP_SUB: case KILN_OP_SUB_SCALAR: return "Sub";
  case KILN_OP_MUL: case KILN_OP_MUL_SCALAR: return "Mul";
  case KILN_OP_DIV: case KILN_OP_DIV_SCALAR: return "Div";
  case KILN_OP_POW: case KILN_OP_POW_SCALAR: return "Pow";
  case KILN_OP_MAXIMUM: case KILN_OP_MAXIMUM_SCALAR: return "Max";
  case KILN_OP_MINIMUM: case KILN_OP_MINIMUM_SCALAR: return "Min";
  case KILN_OP_EQUAL: case KILN_OP_NOT_EQUAL: return "Equal";
  case KILN_OP_LESS: return "Less";
  case KILN_OP_LESS_EQUAL: return "LessOrEqual";
  case KILN_OP_GREATER: return "Greater";
  case KILN_OP_GREATER_EQUAL: return "GreaterOrEqual";
  case KILN_OP_LOGICAL_AND: return "And";
  case KILN_OP_LOGICAL_OR: return "Or";
  default: return NULL;
  }
}

/* GELU by its definition, x/2 (1 + erf(x / sqrt 2)): opset 17 has no Gelu. */
static char *gelu(op_ctx *c, char *x, kiln_dtype dt, char *out) {
  ex *e = c->e;
  char *scaled = node1(e, "Mul", 2, (char *[]){x, c_scalar(e, dt, 0.70710678118654752440)}, NULL);
  char *erf = node1(e, "Erf", 1, &scaled, NULL);
  char *one_plus = node1(e, "Add", 2, (char *[]){erf, c_scalar(e, dt, 1)}, NULL);
  char *half = node1(e, "Mul", 2, (char *[]){x, c_scalar(e, dt, 0.5)}, NULL);
  return node1(e, "Mul", 2, (char *[]){half, one_plus}, out);
}

static kiln_status activation(op_ctx *c, int64_t act, char *x, kiln_dtype dt, char *out) {
  ex *e = c->e;
  switch (act) {
  case KILN_ACT_NONE: node1(e, "Identity", 1, &x, out); return KILN_OK;
  case KILN_ACT_RELU: node1(e, "Relu", 1, &x, out); return KILN_OK;
  case KILN_ACT_SIGMOID: node1(e, "Sigmoid", 1, &x, out); return KILN_OK;
  case KILN_ACT_TANH: node1(e, "Tanh", 1, &x, out); return KILN_OK;
  case KILN_ACT_SOFTPLUS: node1(e, "Softplus", 1, &x, out); return KILN_OK;
  case KILN_ACT_GELU: gelu(c, x, dt, out); return KILN_OK;
  default: return unsupported(c, "an activation kiln does not know");
  }
}

static kiln_status emit_linear(op_ctx *c) {
  ex *e = c->e;
  const kiln_out_desc *x = in_desc(c, 0);
  int64_t act = c->n->attrs[0].i;
  bool bias = c->n->n_in > 2;
  char *y = act == KILN_ACT_NONE ? c->out[0] : NULL;
  if (x->ndim == 2) {
    Onnx__NodeProto *nd;
    char *o = y ? y : fresh(e);
    nd = add_node(e, "Gemm", bias ? 3 : 2, c->in, 1, &o);
    attr_i(e, nd, "transB", 1);
    y = o;
  } else {
    char *wt = node1(e, "Transpose", 1, &c->in[1], NULL);
    char *mm = node1(e, "MatMul", 2, (char *[]){c->in[0], wt}, bias ? NULL : y);
    y = bias ? node1(e, "Add", 2, (char *[]){mm, c->in[2]}, y) : mm;
  }
  if (act == KILN_ACT_NONE) return KILN_OK;
  return activation(c, act, y, c->n->out[0].dtype, c->out[0]);
}

/* kiln's slice follows Python's slice.indices. On an axis of known length
 * the exact range is written (ONNX clamps a negative step's start
 * differently); on an axis that follows an unknown dim, a positive step,
 * where the two rules agree. */
static kiln_status emit_slice(op_ctx *c) {
  ex *e = c->e;
  const kiln_out_desc *x = in_desc(c, 0);
  const kiln_attr_value *a = c->n->attrs;
  int axis = norm_axis(a[0].i, x->ndim);
  int64_t start = a[1].i, stop = a[2].i, step = a[3].i;
  if (in_varying(c, 0) & (1u << axis)) {
    if (step < 0) return unsupported(c, "a negative step on an axis whose length is unknown");
  } else {
    int64_t first, count;
    kiln_slice_bounds(x->shape[axis], start, stop, step, &first, &count);
    if (count == 0) {
      start = stop = 0;
      step = 1;
    } else {
      start = first;
      stop = first + count * step;
      if (stop < 0) stop = INT64_MIN; /* past the first element: ONNX reads -1 as the last */
    }
  }
  int64_t ax = axis;
  char *in[5] = {c->in[0], c_i64(e, 1, &start), c_i64(e, 1, &stop), c_i64(e, 1, &ax), c_i64(e, 1, &step)};
  node1(e, "Slice", 5, in, c->out[0]);
  return KILN_OK;
}

static const char *reduce_type(kiln_op_id id) {
  switch (id) {
  case KILN_OP_SUM: return "ReduceSum";
  case KILN_OP_MEAN: return "ReduceMean";
  case KILN_OP_MAX: return "ReduceMax";
  case KILN_OP_MIN: return "ReduceMin";
  case KILN_OP_PROD: return "ReduceProd";
  case KILN_OP_LOGSUMEXP: return "ReduceLogSumExp";
  default: return NULL;
  }
}

/* A reduction over axes (all when k == 0). ReduceSum takes its axes as an
 * input from opset 13, the others as an attribute until opset 18. */
static char *reduce(op_ctx *c, const char *type, char *x, int k, const int64_t *axes, bool keepdims, char *out) {
  ex *e = c->e;
  bool as_input = strcmp(type, "ReduceSum") == 0;
  char *o = out ? out : fresh(e);
  char *in[2] = {x, as_input && k ? c_i64(e, k, axes) : NULL};
  Onnx__NodeProto *nd = add_node(e, type, in[1] ? 2 : 1, in, 1, &o);
  if (!as_input && k) attr_ints(e, nd, "axes", k, axes);
  attr_i(e, nd, "keepdims", keepdims);
  return o;
}

static kiln_status emit_reduce(op_ctx *c) {
  ex *e = c->e;
  const kiln_out_desc *x = in_desc(c, 0);
  const kiln_attr_value *a = c->n->attrs;
  int k = a[0].n;
  int64_t axes[KILN_MAX_ATTR_INTS];
  for (int i = 0; i < k; i++) axes[i] = norm_axis(a[0].ints[i], x->ndim);
  bool keep = a[1].i != 0;
  kiln_dtype odt = c->n->out[0].dtype;
  char *in = c->in[0];
  /* kiln reduces in the result's dtype (a sum of bools counts in int64). */
  if (x->dtype != odt) {
    char *cast = fresh(e);
    attr_i(e, add_node(e, "Cast", 1, &in, 1, &cast), "to", onnx_dtype(odt));
    in = cast;
  }
  if (c->n->op != KILN_OP_VAR) {
    reduce(c, reduce_type(c->n->op), in, k, axes, keep, c->out[0]);
    return KILN_OK;
  }
  /* The variance as its definition: sum((x - mean)^2) / (count - ddof). */
  int64_t count = 1;
  for (int d = 0; d < x->ndim; d++) {
    bool reduced = k == 0;
    for (int i = 0; i < k; i++) reduced = reduced || axes[i] == d;
    if (!reduced) continue;
    if (in_varying(c, 0) & (1u << d)) return unsupported(c, "a variance over an axis whose length is unknown");
    count *= x->shape[d];
  }
  char *mean = reduce(c, "ReduceMean", in, k, axes, true, NULL);
  char *dev = node1(e, "Sub", 2, (char *[]){in, mean}, NULL);
  char *sq = node1(e, "Mul", 2, (char *[]){dev, dev}, NULL);
  char *sum = reduce(c, "ReduceSum", sq, k, axes, keep, NULL);
  node1(e, "Div", 2, (char *[]){sum, c_scalar(e, odt, (double)(count - a[2].i))}, c->out[0]);
  return KILN_OK;
}

static kiln_status emit_arg(op_ctx *c) {
  ex *e = c->e;
  const kiln_out_desc *x = in_desc(c, 0);
  const kiln_out_desc *o = &c->n->out[0];
  int64_t axis = c->n->attrs[0].i;
  bool keep = c->n->attrs[1].i != 0, all = axis == KILN_ALL_AXES;
  char *in = c->in[0];
  if (all) in = node1(e, "Reshape", 2, (char *[]){in, c_i64(e, 1, (int64_t[]){-1})}, NULL);
  bool reshape = all && o->ndim > 0, cast = o->dtype != KILN_I64;
  char *y = reshape || cast ? fresh(e) : c->out[0];
  Onnx__NodeProto *nd = add_node(e, c->n->op == KILN_OP_ARGMAX ? "ArgMax" : "ArgMin", 1, &in, 1, &y);
  attr_i(e, nd, "axis", all ? 0 : norm_axis(axis, x->ndim));
  attr_i(e, nd, "keepdims", all ? 0 : keep);
  if (reshape) y = node1(e, "Reshape", 2, (char *[]){y, c_i64(e, o->ndim, o->shape)}, cast ? NULL : c->out[0]);
  if (cast) {
    nd = add_node(e, "Cast", 1, &y, 1, c->out);
    attr_i(e, nd, "to", onnx_dtype(o->dtype));
  }
  return KILN_OK;
}

static kiln_status emit_conv_pool(op_ctx *c) {
  ex *e = c->e;
  const kiln_attr_value *a = c->n->attrs;
  int64_t kernel[2], stride[2], pad[2], dilation[2] = {1, 1};
  const char *type;
  if (c->n->op == KILN_OP_CONV2D) {
    const kiln_out_desc *w = in_desc(c, 1);
    kernel[0] = w->shape[2], kernel[1] = w->shape[3];
    pair(&a[0], 1, stride);
    pair(&a[1], 0, pad);
    pair(&a[2], 1, dilation);
    type = "Conv";
  } else {
    pair(&a[0], 0, kernel);
    pair(&a[1], 0, stride);
    pair(&a[2], 0, pad);
    for (int d = 0; d < 2; d++)
      if (stride[d] == 0) stride[d] = kernel[d]; /* kiln's default stride is the window */
    type = c->n->op == KILN_OP_MAX_POOL2D ? "MaxPool" : "AveragePool";
  }
  Onnx__NodeProto *nd = add_node(e, type, c->n->n_in, c->in, 1, c->out);
  attr_ints(e, nd, "kernel_shape", 2, kernel);
  attr_ints(e, nd, "strides", 2, stride);
  attr_ints(e, nd, "pads", 4, (int64_t[]){pad[0], pad[1], pad[0], pad[1]});
  if (c->n->op == KILN_OP_CONV2D) {
    attr_ints(e, nd, "dilations", 2, dilation);
    attr_i(e, nd, "group", a[3].i);
  } else if (c->n->op == KILN_OP_AVG_POOL2D) {
    attr_i(e, nd, "count_include_pad", a[3].i != 0);
  }
  return KILN_OK;
}

/* Runs a creation op (its attributes fix its value) and writes the value as
 * an initializer under the node's output name. */
static kiln_status emit_creation(op_ctx *c) {
  ex *e = c->e;
  kiln_tensor *t = NULL;
  kiln_status st = kiln_dispatch_owned(c->n->op, 0, NULL, c->n->attrs, 1, &t);
  void *buf = NULL;
  size_t bytes = 0;
  if (st == KILN_OK) {
    bytes = (size_t)kiln_tensor_numel(t) * kiln_dtype_size(kiln_tensor_dtype(t));
    buf = kiln_alloc(bytes ? bytes : 1);
    st = buf ? kiln_tensor_copy_to(t, buf, bytes) : kiln_errorf(KILN_ERR_OUT_OF_MEMORY, "out of memory");
  }
  if (st == KILN_OK)
    add_init(e, c->out[0], kiln_tensor_dtype(t), kiln_tensor_ndim(t), kiln_tensor_shape(t), buf);
  else
    st = kiln_errorf(st, "%s: %s: node '%s': %s", e->fn, e->path, e->label, kiln_last_error());
  kiln_free(buf);
  kiln_tensor_release(t);
  return st;
}

static kiln_status emit_op(op_ctx *c) {
  ex *e = c->e;
  const graph_node *n = c->n;
  const kiln_attr_value *a = n->attrs;
  const kiln_out_desc *x = n->n_in ? in_desc(c, 0) : NULL;
  kiln_dtype dt = x ? x->dtype : n->out[0].dtype;
  kiln_op_id id = n->op;
  Onnx__NodeProto *nd;
  const char *type;
  if ((type = unary_type(id))) {
    node1(e, type, 1, c->in, c->out[0]);
    return KILN_OK;
  }
  if ((type = binary_type(id))) {
    bool scalar = id >= KILN_OP_ADD_SCALAR && id <= KILN_OP_MINIMUM_SCALAR;
    char *in[2] = {c->in[0], scalar ? c_scalar(e, dt, a[0].f) : c->in[1]};
    if (id == KILN_OP_NOT_EQUAL)
      node1(e, "Not", 1, (char *[]){node1(e, "Equal", 2, in, NULL)}, c->out[0]);
    else
      node1(e, type, 2, in, c->out[0]);
    return KILN_OK;
  }
  if ((type = reduce_type(id)) || id == KILN_OP_VAR) return emit_reduce(c);
  switch (id) {
  case KILN_OP_FULL:
  case KILN_OP_ARANGE:
  case KILN_OP_LINSPACE:
  case KILN_OP_EYE:
    return emit_creation(c);
  case KILN_OP_RESHAPE: {
    /* ONNX reads a 0 in the shape as "the input's dim here" unless
     * allowzero: kiln's -2 (the same) where that dim follows an unknown
     * dim, its known size where not; a 0 kiln means is a 0 only with
     * allowzero. */
    int64_t shape[KILN_MAX_DIMS] = {0};
    bool zero = false, kept = false;
    for (int i = 0; i < a[0].n && i < KILN_MAX_DIMS; i++) {
      shape[i] = a[0].ints[i];
      if (shape[i] == -2) {
        bool varies = in_varying(c, 0) & (1u << i);
        shape[i] = varies ? 0 : x->shape[i];
        kept = kept || varies;
      } else {
        zero = zero || shape[i] == 0;
      }
    }
    if (zero && kept) return unsupported(c, "a 0 in the target shape beside a dim kept from an unknown one");
    nd = add_node(e, "Reshape", 2, (char *[]){c->in[0], c_i64(e, a[0].n, shape)}, 1, c->out);
    if (zero) attr_i(e, nd, "allowzero", 1);
    return KILN_OK;
  }
  case KILN_OP_PERMUTE: {
    int64_t perm[KILN_MAX_DIMS];
    for (int i = 0; i < a[0].n; i++) perm[i] = norm_axis(a[0].ints[i], x->ndim);
    nd = add_node(e, "Transpose", 1, c->in, 1, c->out);
    attr_ints(e, nd, "perm", a[0].n, perm);
    return KILN_OK;
  }
  case KILN_OP_SLICE:
    return emit_slice(c);
  case KILN_OP_BROADCAST_TO:
    node1(e, "Expand", 2, (char *[]){c->in[0], c_i64(e, a[0].n, a[0].ints)}, c->out[0]);
    return KILN_OK;
  case KILN_OP_SQUEEZE:
    if (x->ndim == 0) {
      node1(e, "Identity", 1, c->in, c->out[0]);
    } else if (a[0].i == KILN_ALL_AXES) {
      /* Without axes ONNX squeezes every 1 at run time, as kiln does when
       * it builds the graph for new sizes. */
      node1(e, "Squeeze", 1, c->in, c->out[0]);
    } else {
      int64_t ax = norm_axis(a[0].i, x->ndim);
      node1(e, "Squeeze", 2, (char *[]){c->in[0], c_i64(e, 1, &ax)}, c->out[0]);
    }
    return KILN_OK;
  case KILN_OP_EXPAND_DIMS: {
    int64_t ax = norm_axis(a[0].i, x->ndim + 1);
    node1(e, "Unsqueeze", 2, (char *[]){c->in[0], c_i64(e, 1, &ax)}, c->out[0]);
    return KILN_OK;
  }
  case KILN_OP_RSQRT:
    node1(e, "Reciprocal", 1, (char *[]){node1(e, "Sqrt", 1, c->in, NULL)}, c->out[0]);
    return KILN_OK;
  case KILN_OP_SQUARE:
    node1(e, "Mul", 2, (char *[]){c->in[0], c->in[0]}, c->out[0]);
    return KILN_OK;
  case KILN_OP_LEAKY_RELU:
    /* ONNX's alpha is a float attribute: exact for float32 inputs, and for
     * float64 when the slope is a float. */
    if (dt != KILN_F32 && (double)(float)a[0].f != a[0].f)
      return unsupported(c, "a float64 slope that ONNX's float attribute alpha cannot hold");
    nd = add_node(e, "LeakyRelu", 1, c->in, 1, c->out);
    attr_f(e, nd, "alpha", (float)a[0].f);
    return KILN_OK;
  case KILN_OP_GELU:
    gelu(c, c->in[0], dt, c->out[0]);
    return KILN_OK;
  case KILN_OP_CLIP: {
    bool is_int = dt != KILN_F32 && dt != KILN_F64;
    char *in[3] = {c->in[0], NULL, NULL};
    for (int k = 0; k < 2; k++)
      if (!(is_int && isinf(a[k].f))) in[1 + k] = c_scalar(e, dt, a[k].f);
    node1(e, "Clip", 3, in, c->out[0]);
    return KILN_OK;
  }
  case KILN_OP_WHERE:
    node1(e, "Where", 3, c->in, c->out[0]);
    return KILN_OK;
  case KILN_OP_ARGMAX:
  case KILN_OP_ARGMIN:
    return emit_arg(c);
  case KILN_OP_MATMUL:
    node1(e, "MatMul", 2, c->in, c->out[0]);
    return KILN_OK;
  case KILN_OP_LINEAR:
    return emit_linear(c);
  case KILN_OP_CONCAT:
    nd = add_node(e, "Concat", n->n_in, c->in, 1, c->out);
    attr_i(e, nd, "axis", norm_axis(a[0].i, x->ndim));
    return KILN_OK;
  case KILN_OP_STACK: {
    int64_t ax = norm_axis(a[0].i, x->ndim + 1);
    char **parts = ex_alloc(e, sizeof(char *) * (size_t)n->n_in);
    if (!parts) return KILN_OK;
    for (int k = 0; k < n->n_in; k++) parts[k] = node1(e, "Unsqueeze", 2, (char *[]){c->in[k], c_i64(e, 1, &ax)}, NULL);
    nd = add_node(e, "Concat", n->n_in, parts, 1, c->out);
    attr_i(e, nd, "axis", ax);
    return KILN_OK;
  }
  case KILN_OP_SPLIT:
    nd = add_node(e, "Split", 2, (char *[]){c->in[0], c_i64(e, a[1].n, a[1].ints)}, n->n_out, c->out);
    attr_i(e, nd, "axis", norm_axis(a[0].i, x->ndim));
    return KILN_OK;
  case KILN_OP_TAKE:
  case KILN_OP_GATHER:
    nd = add_node(e, id == KILN_OP_TAKE ? "Gather" : "GatherElements", 2, c->in, 1, c->out);
    attr_i(e, nd, "axis", norm_axis(a[0].i, x->ndim));
    return KILN_OK;
  case KILN_OP_ONE_HOT: {
    kiln_dtype odt = n->out[0].dtype;
    _Alignas(8) char values[16] = {0};
    kk_set_f64(odt, values, 0);
    kk_set_f64(odt, values + kiln_dtype_size(odt), 1);
    char *in[3] = {c->in[0], c_i64(e, 1, &a[0].i), add_init(e, NULL, odt, 1, (int64_t[]){2}, values)};
    nd = add_node(e, "OneHot", 3, in, 1, c->out);
    attr_i(e, nd, "axis", -1);
    return KILN_OK;
  }
  case KILN_OP_PAD: {
    int64_t pads[2 * KILN_MAX_DIMS] = {0};
    for (int i = 0; i < a[0].n / 2; i++) pads[i] = a[0].ints[2 * i], pads[x->ndim + i] = a[0].ints[2 * i + 1];
    char *in[3] = {c->in[0], c_i64(e, 2 * x->ndim, pads), c_scalar(e, dt, a[1].f)};
    node1(e, "Pad", 3, in, c->out[0]);
    return KILN_OK;
  }
  case KILN_OP_CAST:
    nd = add_node(e, "Cast", 1, c->in, 1, c->out);
    attr_i(e, nd, "to", onnx_dtype(n->out[0].dtype));
    return KILN_OK;
  case KILN_OP_SOFTMAX:
  case KILN_OP_LOG_SOFTMAX:
    nd = add_node(e, id == KILN_OP_SOFTMAX ? "Softmax" : "LogSoftmax", 1, c->in, 1, c->out);
    attr_i(e, nd, "axis", x->ndim ? norm_axis(a[0].i, x->ndim) : 0);
    return KILN_OK;
  case KILN_OP_SOFTMAX_CROSS_ENTROPY: {
    char *labels = c->in[1];
    kiln_dtype ldt = in_desc(c, 1)->dtype;
    if (ldt != KILN_I32 && ldt != KILN_I64) {
      char *cast = fresh(e);
      attr_i(e, add_node(e, "Cast", 1, &labels, 1, &cast), "to", ONNX__TENSOR_PROTO__DATA_TYPE__INT64);
      labels = cast;
    }
    nd = add_node(e, "SoftmaxCrossEntropyLoss", 2, (char *[]){c->in[0], labels}, 1, c->out);
    attr_s(e, nd, "reduction", "mean");
    return KILN_OK;
  }
  case KILN_OP_CONV2D:
  case KILN_OP_MAX_POOL2D:
  case KILN_OP_AVG_POOL2D:
    return emit_conv_pool(c);
  case KILN_OP_BATCH_NORM:
    /* ONNX's epsilon is a float: kiln adds it in double, so an eps that
     * is not a float (1e-5) moves results by float rounding at most. */
    nd = add_node(e, "BatchNormalization", 5, c->in, 1, c->out);
    attr_f(e, nd, "epsilon", (float)a[0].f);
    return KILN_OK;
  case KILN_OP_DROPOUT:
    if (a[0].f != 0) return unsupported(c, "dropout with p > 0 draws random numbers (export an inference call)");
    node1(e, "Identity", 1, c->in, c->out[0]);
    return KILN_OK;
  case KILN_OP_RANDOM_UNIFORM:
  case KILN_OP_RANDOM_NORMAL:
  case KILN_OP_RANDOM_BERNOULLI:
    return unsupported(c, "ONNX's random ops cannot draw kiln's numbers");
  case KILN_OP_BATCH_NORM_TRAIN:
    return unsupported(c, "batch statistics are training only (export an inference call)");
  default:
    return unsupported(c, "no exact ONNX form");
  }
}

/* ---------------------------------------------------------------- the graph */

/* Which dims of each value follow an unknown input dim: the graph built
 * again with those dims one larger, every shape compared. */
static kiln_status find_varying(ex *e) {
  const kiln_graph *g = e->g;
  const model_export_state *s = e->s;
  int n_graph_inputs = 0;
  bool any = false;
  for (int i = 0; i < g->n; i++)
    if (g->nodes[i].kind == GRAPH_INPUT) {
      unsigned u = g->nodes[i].unknown | (s->dynamic_batch && g->nodes[i].out[0].ndim ? 1u : 0u);
      any = any || u;
      n_graph_inputs++;
    }
  e->varying = ex_alloc(e, sizeof(unsigned *) * ((size_t)g->n + 1));
  if (!e->varying) return kiln_errorf(KILN_ERR_OUT_OF_MEMORY, "%s: out of memory", e->fn);
  if (!any) return KILN_OK;
  kiln_graph *probe = kiln_graph_new();
  kiln_tensor **shaped = kiln_calloc((size_t)n_graph_inputs + 1, sizeof(kiln_tensor *));
  int *map = kiln_alloc(sizeof(int) * ((size_t)g->n + 1));
  kiln_status st = probe && shaped && map ? KILN_OK : kiln_errorf(KILN_ERR_OUT_OF_MEMORY, "%s: out of memory", e->fn);
  for (int i = 0, k = 0; i < g->n && st == KILN_OK; i++) {
    const graph_node *n = &g->nodes[i];
    if (n->kind != GRAPH_INPUT) continue;
    unsigned u = n->unknown | (s->dynamic_batch && n->out[0].ndim ? 1u : 0u);
    int64_t shape[KILN_MAX_DIMS];
    for (int d = 0; d < n->out[0].ndim; d++) shape[d] = n->out[0].shape[d] + (u & (1u << d) ? 1 : 0);
    shaped[k] = kiln_graph_input(probe, n->name, n->out[0].dtype, n->out[0].ndim, shape);
    if (kiln_tensor_failed(shaped[k])) st = kiln_errorf(kiln_tensor_status(shaped[k]), "%s: %s", e->fn, kiln_tensor_error(shaped[k]));
    k++;
  }
  kiln_graph *h = st == KILN_OK ? graph_specialize((kiln_graph *)g, g->n, shaped, s->n_out, s->outs, map) : NULL;
  if (st == KILN_OK && !h)
    st = kiln_errorf(kiln_last_status(), "%s: %s: the graph does not hold at another size of its unknown dims: %s",
                     e->fn, e->path, kiln_last_error());
  for (int i = 0; h && i < g->n && st == KILN_OK; i++) {
    if (s->index[i] < 0 || map[i] < 0) continue;
    const graph_node *a = &g->nodes[i], *b = &h->nodes[map[i]];
    unsigned *v = ex_alloc(e, sizeof(unsigned) * ((size_t)a->n_out + 1));
    if (!v) break;
    for (int k = 0; k < a->n_out && k < b->n_out; k++)
      for (int d = 0; d < a->out[k].ndim; d++)
        if (b->out[k].ndim != a->out[k].ndim || b->out[k].shape[d] != a->out[k].shape[d]) v[k] |= 1u << d;
    e->varying[i] = v;
  }
  kiln_graph_release(h);
  /* The placeholders are ours (and hold the probe graph alive). */
  for (int k = 0; shaped && k < n_graph_inputs; k++) kiln_tensor_release(shaped[k]);
  kiln_graph_release(probe);
  kiln_free(shaped);
  kiln_free(map);
  if (st == KILN_OK && e->oom) st = kiln_errorf(KILN_ERR_OUT_OF_MEMORY, "%s: out of memory", e->fn);
  return st;
}

/* A tensor type: dtype and shape, the dims in unknown unknown: dim 0
 * "batch" when batch, another dim of an input "<input>_dim<k>", of an
 * output unnamed. */
static Onnx__ValueInfoProto *value_info(ex *e, const char *name, const kiln_out_desc *d, unsigned unknown,
                                        bool batch, const char *input_name) {
  Onnx__ValueInfoProto *vi = ex_alloc(e, sizeof *vi);
  Onnx__TypeProto *tp = ex_alloc(e, sizeof *tp);
  Onnx__TypeProto__Tensor *tt = ex_alloc(e, sizeof *tt);
  Onnx__TensorShapeProto *sh = ex_alloc(e, sizeof *sh);
  Onnx__TensorShapeProto__Dimension **dims = ex_alloc(e, sizeof(void *) * ((size_t)d->ndim + 1));
  if (!vi || !tp || !tt || !sh || !dims) return NULL;
  *vi = (Onnx__ValueInfoProto)ONNX__VALUE_INFO_PROTO__INIT;
  *tp = (Onnx__TypeProto)ONNX__TYPE_PROTO__INIT;
  *tt = (Onnx__TypeProto__Tensor)ONNX__TYPE_PROTO__TENSOR__INIT;
  *sh = (Onnx__TensorShapeProto)ONNX__TENSOR_SHAPE_PROTO__INIT;
  for (int k = 0; k < d->ndim; k++) {
    Onnx__TensorShapeProto__Dimension *dim = ex_alloc(e, sizeof *dim);
    if (!dim) return NULL;
    *dim = (Onnx__TensorShapeProto__Dimension)ONNX__TENSOR_SHAPE_PROTO__DIMENSION__INIT;
    if (!(unknown & (1u << k))) {
      dim->value_case = ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_VALUE;
      dim->dim_value = d->shape[k];
    } else if (k == 0 && batch) {
      dim->value_case = ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_PARAM;
      dim->dim_param = ex_strf(e, "%s", "batch");
    } else if (input_name) {
      dim->value_case = ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_PARAM;
      dim->dim_param = ex_strf(e, "%s_dim%d", input_name, k);
    }
    dims[k] = dim;
  }
  sh->n_dim = (size_t)d->ndim;
  sh->dim = dims;
  tt->has_elem_type = 1;
  tt->elem_type = onnx_dtype(d->dtype);
  tt->shape = sh;
  tp->value_case = ONNX__TYPE_PROTO__VALUE_TENSOR_TYPE;
  tp->tensor_type = tt;
  vi->type = tp;
  vi->name = (char *)name;
  return vi;
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* ONNX names every value once (SSA). Names come from the model (inputs,
 * parameters) and from kiln: refuse a clash rather than write a file that
 * means something else. */
static kiln_status check_unique_names(ex *e, Onnx__GraphProto *gp) {
  size_t n = gp->n_input + gp->n_initializer;
  for (size_t i = 0; i < gp->n_node; i++) n += gp->node[i]->n_output;
  char **all = kiln_alloc(sizeof(char *) * (n + 1));
  if (!all) return kiln_errorf(KILN_ERR_OUT_OF_MEMORY, "%s: out of memory", e->fn);
  size_t k = 0;
  for (size_t i = 0; i < gp->n_input; i++) all[k++] = gp->input[i]->name;
  for (size_t i = 0; i < gp->n_initializer; i++) all[k++] = gp->initializer[i]->name;
  for (size_t i = 0; i < gp->n_node; i++)
    for (size_t j = 0; j < gp->node[i]->n_output; j++) all[k++] = gp->node[i]->output[j];
  qsort(all, n, sizeof(char *), cmp_str);
  kiln_status st = KILN_OK;
  for (size_t i = 1; i < n && st == KILN_OK; i++)
    if (strcmp(all[i - 1], all[i]) == 0) {
      char nm[KILN_PRINTABLE_MAX];
      st = kiln_errorf(KILN_ERR_UNSUPPORTED, "%s: %s: the name '%s' would name two values", e->fn, e->path,
                       kiln_printable(nm, all[i], strlen(all[i])));
    }
  kiln_free(all);
  return st;
}

static kiln_status build(ex *e, Onnx__ModelProto *mp, Onnx__GraphProto *gp) {
  const kiln_graph *g = e->g;
  const model_export_state *s = e->s;
  kiln_status st = find_varying(e);
  if (st != KILN_OK) return st;
  e->names = ex_alloc(e, sizeof(char **) * ((size_t)g->n + 1));
  Onnx__ValueInfoProto **inputs = ex_alloc(e, sizeof(void *) * ((size_t)s->n_inputs + 1));
  Onnx__ValueInfoProto **outputs = ex_alloc(e, sizeof(void *) * ((size_t)s->n_out + 1));
  if (!e->names || !inputs || !outputs) return kiln_errorf(KILN_ERR_OUT_OF_MEMORY, "%s: out of memory", e->fn);
  /* Value names: inputs and parameters keep theirs, op results are named
   * after their node ("relu.4", "split.7:1"), and a result that is a model
   * output takes the output's name. */
  for (int i = 0; i < g->n; i++) {
    const graph_node *n = &g->nodes[i];
    if (s->index[i] < 0) continue;
    char **v = ex_alloc(e, sizeof(char *) * ((size_t)n->n_out + 1));
    if (!v) return kiln_errorf(KILN_ERR_OUT_OF_MEMORY, "%s: out of memory", e->fn);
    e->names[i] = v;
    if (n->kind == GRAPH_INPUT) {
      v[0] = n->name;
    } else if (n->kind == GRAPH_BOUND) {
      v[0] = s->bound_name[i];
    } else {
      const char *op = kiln_op_get(n->op)->name;
      for (int k = 0; k < n->n_out; k++)
        v[k] = n->n_out == 1 ? ex_strf(e, "%s.%d", op, s->index[i]) : ex_strf(e, "%s.%d:%d", op, s->index[i], k);
    }
  }
  bool *renamed = ex_alloc(e, sizeof(bool) * ((size_t)s->n_out + 1));
  for (int k = 0; renamed && k < s->n_out; k++) {
    graph_ref r = s->outs[k];
    bool first = true;
    for (int j = 0; j < k; j++) first = first && (s->outs[j].node != r.node || s->outs[j].index != r.index);
    if (first && g->nodes[r.node].kind == GRAPH_OP) {
      e->names[r.node][r.index] = ex_strf(e, "output%d", k);
      renamed[k] = true;
    }
  }
  int n_in = 0;
  for (int i = 0; i < g->n && st == KILN_OK && !e->oom; i++) {
    const graph_node *n = &g->nodes[i];
    if (s->index[i] < 0) continue;
    if (n->kind == GRAPH_INPUT) {
      if (n_in >= s->n_inputs)
        return kiln_errorf(KILN_ERR_UNSUPPORTED, "%s: %s: an input beyond the plan's own", e->fn, e->path);
      unsigned u = n->unknown | (s->dynamic_batch && n->out[0].ndim ? 1u : 0u);
      inputs[n_in++] = value_info(e, n->name, &n->out[0], u, true, n->name);
    } else if (n->kind == GRAPH_BOUND) {
      size_t bytes = (size_t)kiln_tensor_numel(n->bound) * kiln_dtype_size(kiln_tensor_dtype(n->bound));
      void *buf = kiln_alloc(bytes ? bytes : 1);
      if (!buf) return kiln_errorf(KILN_ERR_OUT_OF_MEMORY, "%s: out of memory", e->fn);
      st = kiln_tensor_copy_to(n->bound, buf, bytes);
      if (st != KILN_OK)
        st = kiln_errorf(st, "%s: %s: parameter '%s': %s", e->fn, e->path, s->bound_name[i], kiln_last_error());
      else
        add_init(e, s->bound_name[i], n->out[0].dtype, n->out[0].ndim, n->out[0].shape, buf);
      kiln_free(buf);
    } else {
      op_ctx c = {.e = e, .n = n, .index = i, .out = e->names[i]};
      if (n->n_in > (int)(sizeof c.in / sizeof c.in[0]))
        return kiln_errorf(KILN_ERR_UNSUPPORTED, "%s: %s: node %s.%d has %d inputs", e->fn, e->path,
                           kiln_op_get(n->op)->name, s->index[i], n->n_in);
      for (int k = 0; k < n->n_in; k++) c.in[k] = e->names[n->in[k].node][n->in[k].index];
      char label[64];
      snprintf(label, sizeof label, "%s.%d", kiln_op_get(n->op)->name, s->index[i]);
      e->label = label;
      e->sub = e->sub_nodes = 0;
      st = emit_op(&c);
      e->label = NULL;
    }
  }
  if (st != KILN_OK) return st;
  if (n_in != s->n_inputs && !e->oom)
    return kiln_errorf(KILN_ERR_UNSUPPORTED, "%s: %s: the plan's inputs are not in its graph", e->fn, e->path);
  bool batch = false;
  for (int i = 0; i < g->n; i++)
    if (g->nodes[i].kind == GRAPH_INPUT && s->index[i] >= 0)
      batch = batch || (g->nodes[i].unknown & 1u) || (s->dynamic_batch && g->nodes[i].out[0].ndim);
  for (int k = 0; k < s->n_out && !e->oom; k++) {
    graph_ref r = s->outs[k];
    char *name = renamed && renamed[k] ? e->names[r.node][r.index] : ex_strf(e, "output%d", k);
    if (!renamed || !renamed[k]) {
      char label[32];
      snprintf(label, sizeof label, "output%d", k);
      e->label = label;
      e->sub = e->sub_nodes = 0;
      node1(e, "Identity", 1, &e->names[r.node][r.index], name);
      e->label = NULL;
    }
    unsigned v = e->varying[r.node] ? e->varying[r.node][r.index] : 0;
    /* dim 0 is "batch" when an input's dim 0 is unknown; any other dim
     * that varies is left unnamed (an unknown dim without a name). */
    outputs[k] = value_info(e, name, &g->nodes[r.node].out[r.index], v, batch, NULL);
  }
  if (e->oom) return kiln_errorf(KILN_ERR_OUT_OF_MEMORY, "%s: out of memory", e->fn);

  Onnx__OperatorSetIdProto *opset = ex_alloc(e, sizeof *opset);
  Onnx__OperatorSetIdProto **opsets = ex_alloc(e, sizeof(void *));
  if (!opset || !opsets) return kiln_errorf(KILN_ERR_OUT_OF_MEMORY, "%s: out of memory", e->fn);
  *opset = (Onnx__OperatorSetIdProto)ONNX__OPERATOR_SET_ID_PROTO__INIT;
  opset->domain = (char *)"";
  opset->has_version = 1;
  opset->version = OPSET;
  opsets[0] = opset;
  gp->name = (char *)"kiln";
  gp->n_node = e->n_nodes;
  gp->node = e->nodes;
  gp->n_initializer = e->n_inits;
  gp->initializer = e->inits;
  gp->n_input = (size_t)s->n_inputs;
  gp->input = inputs;
  gp->n_output = (size_t)s->n_out;
  gp->output = outputs;
  mp->has_ir_version = 1;
  mp->ir_version = IR_VERSION;
  mp->n_opset_import = 1;
  mp->opset_import = opsets;
  mp->producer_name = (char *)"kiln";
  mp->producer_version = (char *)KILN_VERSION_STRING;
  mp->graph = gp;
  return check_unique_names(e, gp);
}

static kiln_status export_onnx(const char *fn, kiln_block *b, const kiln_model *m, const char *path,
                               const kiln_export_options *options) {
  model_export_state s;
  kiln_status st = model_export_select(fn, b, m, options, &s);
  ex e = {.fn = fn, .path = path, .s = &s, .g = s.g};
  Onnx__ModelProto mp = ONNX__MODEL_PROTO__INIT;
  Onnx__GraphProto gp = ONNX__GRAPH_PROTO__INIT;
  if (st == KILN_OK) st = build(&e, &mp, &gp);
  uint8_t *buf = NULL;
  size_t len = 0;
  if (st == KILN_OK) {
    len = onnx__model_proto__get_packed_size(&mp);
    if (len > MAX_FILE_BYTES)
      st = kiln_errorf(KILN_ERR_UNSUPPORTED, "%s: %s: the model takes %zu bytes, over protobuf's 2 GiB", fn, path, len);
    else if (!(buf = kiln_alloc(len ? len : 1)))
      st = kiln_errorf(KILN_ERR_OUT_OF_MEMORY, "%s: %s: out of memory", fn, path);
  }
  if (st == KILN_OK) {
    onnx__model_proto__pack(&mp, buf);
    st = model_write_atomic(fn, path, buf, len);
  }
  kiln_free(buf);
  ex_free(&e);
  model_export_state_free(&s);
  return st;
}

kiln_status kiln_block_export_onnx(kiln_block *b, const char *path, const kiln_export_options *options) {
  static const char fn[] = "kiln_block_export_onnx";
  if (!b || !path || !*path)
    return kiln_errorf(KILN_ERR_INVALID_ARGUMENT, "%s: %s", fn, !b ? "block is NULL" : "path is NULL or empty");
  return export_onnx(fn, b, NULL, path, options);
}

kiln_status kiln_model_export_onnx(const kiln_model *m, const char *path) {
  static const char fn[] = "kiln_model_export_onnx";
  if (!m || !path || !*path)
    return kiln_errorf(KILN_ERR_INVALID_ARGUMENT, "%s: %s", fn, !m ? "model is NULL" : "path is NULL or empty");
  return export_onnx(fn, NULL, m, path, NULL);
}
