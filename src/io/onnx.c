/* ONNX import: a ModelProto, parsed by the C code protoc-c generates from
 * Debian's onnx.proto, rebuilt node by node with the registry's ops on
 * symbolic tensors and compiled into a kiln_model (src/io/model.c), so an
 * ONNX model runs, answers introspection and is timed as a native one.
 *
 * Each ONNX node becomes one or a few kiln ops through dispatch, so every
 * op's own inference checks what the node gives it, at the node. Values
 * known at import (initializers, Constant nodes, Shape of a static shape,
 * anything computed only from those) are concrete tensors: ops on them run
 * eagerly, which is how Reshape's shape input, Slice's starts or a
 * ConstantOfShape become the static attributes kiln's ops want. A node
 * that needs as a value something only known at run time is refused.
 *
 * One run-time value is followed symbolically: the shape of a value with
 * unknown dims (a dynamic batch), which PyTorch writes for
 * x.view(x.size(0), -1) as Shape, Gather, Unsqueeze, Concat and Reshape.
 * Such a value is a shape_expr, entries that are constants or "dim d of
 * graph value V", carried through those ops; a Reshape whose target keeps
 * dims of its own input in place becomes kiln's reshape with -2 there (the
 * input's dim), which follows the batch when the plan is rebuilt at
 * another size. Any other use of such a shape is refused, naming the
 * node: folding it at the size the graph is built with would silently fix
 * the batch.
 *
 * ONNX and kiln differ in places (padding modes, ceil_mode, opset-dependent
 * axis rules). A node is mapped only where kiln computes exactly what ONNX
 * defines; anything else is KILN_ERR_UNSUPPORTED naming the op, the
 * attribute and the node. Attributes a handler does not know are refused
 * the same way, so a new attribute cannot be silently ignored.
 *
 * The file is hostile: protobuf-c checks the wire format, but nesting is
 * bounded first (it recurses), and every field is checked before use:
 * dtypes, dims, data lengths against dims, names defined before use (which
 * also rejects cycles: ONNX requires nodes in topological order). */
#include <assert.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "graph/graph.h"
#include "imperative/dispatch.h"
#include "io/model.h"
#include "io/onnx.h"
#include "onnx.pb-c.h"
#include "tensor/tensor.h"

#define MIN_OPSET 1
#define MAX_OPSET 17
/* Deeper nesting than any real model, shallow enough for protobuf-c's
 * recursion. */
#define MAX_NESTING 24
/* kiln's ops take at most this many inputs and outputs (compile.c). */
#define MAX_VALUES 64
/* Window sizes, strides, dilations, pads, block sizes and spatial dims the
 * importer computes with: far beyond any model, and small enough that its
 * arithmetic on them cannot overflow. */
#define MAX_EXTENT ((int64_t)1 << 24)

/* ================================================================ protobuf-c */

static void *pb_alloc(void *data, size_t size) {
  (void)data;
  return kiln_alloc(size);
}
static void pb_free(void *data, void *p) {
  (void)data;
  kiln_free(p);
}
static ProtobufCAllocator pb_allocator = {pb_alloc, pb_free, NULL};

/* Reads a varint at *p (< end); false when it runs off the end or is longer
 * than ten bytes. */
static bool varint(const uint8_t **p, const uint8_t *end, uint64_t *v) {
  *v = 0;
  for (int shift = 0; shift < 70 && *p < end; shift += 7) {
    uint8_t b = *(*p)++;
    *v |= (uint64_t)(b & 0x7f) << (shift < 64 ? shift : 63);
    if (!(b & 0x80)) return true;
  }
  return false;
}

/* True when no message field of desc nests deeper than MAX_NESTING in
 * data. Only the structure is checked: what protobuf-c rejects otherwise,
 * it rejects when it unpacks. */
static bool nesting_ok(const uint8_t *p, const uint8_t *end, const ProtobufCMessageDescriptor *desc, int depth) {
  if (depth > MAX_NESTING) return false;
  while (p < end) {
    uint64_t key, len;
    if (!varint(&p, end, &key)) return true;
    switch (key & 7) {
    case 0:
      if (!varint(&p, end, &len)) return true;
      break;
    case 1:
      p = end - p < 8 ? end : p + 8;
      break;
    case 5:
      p = end - p < 4 ? end : p + 4;
      break;
    case 2: {
      if (!varint(&p, end, &len) || len > (uint64_t)(end - p)) return true;
      const ProtobufCFieldDescriptor *f =
          key >> 3 <= UINT32_MAX ? protobuf_c_message_descriptor_get_field(desc, (unsigned)(key >> 3)) : NULL;
      if (f && f->type == PROTOBUF_C_TYPE_MESSAGE && !nesting_ok(p, p + len, f->descriptor, depth + 1)) return false;
      p += len;
      break;
    }
    default:
      return true;
    }
  }
  return true;
}

/* ================================================================ tensors */

static bool dtype_of(int32_t onnx, kiln_dtype *out) {
  switch (onnx) {
  case ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT:
    *out = KILN_F32;
    return true;
  case ONNX__TENSOR_PROTO__DATA_TYPE__DOUBLE:
    *out = KILN_F64;
    return true;
  case ONNX__TENSOR_PROTO__DATA_TYPE__INT32:
    *out = KILN_I32;
    return true;
  case ONNX__TENSOR_PROTO__DATA_TYPE__INT64:
    *out = KILN_I64;
    return true;
  case ONNX__TENSOR_PROTO__DATA_TYPE__UINT8:
    *out = KILN_U8;
    return true;
  case ONNX__TENSOR_PROTO__DATA_TYPE__BOOL:
    *out = KILN_BOOL;
    return true;
  default:
    return false;
  }
}

static const char *onnx_type_name(int32_t t) {
  const ProtobufCEnumValue *v = protobuf_c_enum_descriptor_get_value(&onnx__tensor_proto__data_type__descriptor, t);
  return v ? v->name : "unknown";
}

/* A TensorProto as a new tensor in the open scope; what is wrong goes
 * into msg. */
static kiln_status tensor_of_proto(const Onnx__TensorProto *tp, int64_t *budget, kiln_tensor **out, char *msg,
                                   size_t cap) {
  *out = NULL;
  kiln_dtype dt;
  if (!tp->has_data_type || !dtype_of(tp->data_type, &dt)) {
    snprintf(msg, cap, "data type %d (%s) is not one kiln has", (int)tp->data_type, onnx_type_name(tp->data_type));
    return KILN_ERR_UNSUPPORTED;
  }
  if (tp->has_data_location && tp->data_location == ONNX__TENSOR_PROTO__DATA_LOCATION__EXTERNAL) {
    snprintf(msg, cap, "data in an external file is not supported");
    return KILN_ERR_UNSUPPORTED;
  }
  if (tp->segment) {
    snprintf(msg, cap, "segmented tensors are not supported");
    return KILN_ERR_UNSUPPORTED;
  }
  if (tp->n_dims > KILN_MAX_DIMS) {
    snprintf(msg, cap, "%zu dims (kiln has at most %d)", tp->n_dims, KILN_MAX_DIMS);
    return KILN_ERR_UNSUPPORTED;
  }
  int64_t n = 1, shape[KILN_MAX_DIMS];
  for (size_t d = 0; d < tp->n_dims; d++) {
    shape[d] = tp->dims[d];
    if (shape[d] < 0) {
      snprintf(msg, cap, "dim %zu is %lld", d, (long long)shape[d]);
      return KILN_ERR_CORRUPT;
    }
    if (!kiln_mul_i64(n, shape[d], &n) || n > INT64_MAX / 8) {
      snprintf(msg, cap, "%zu dims whose element count overflows", tp->n_dims);
      return KILN_ERR_OVERFLOW;
    }
  }
  size_t es = kiln_dtype_size(dt);
  int64_t bytes = n * (int64_t)es;
  if (budget && *budget >= 0) {
    if (bytes > *budget) {
      snprintf(msg, cap, "%lld bytes are more than the limit left (%lld)", (long long)bytes, (long long)*budget);
      return KILN_ERR_UNSUPPORTED;
    }
    *budget -= bytes;
  }
  size_t have;
  const char *field;
  if (tp->has_raw_data) {
    have = tp->raw_data.len / es, field = "raw_data";
    if (tp->raw_data.len % es) have = (size_t)-1;
  } else {
    switch (dt) {
    case KILN_F32:
      have = tp->n_float_data, field = "float_data";
      break;
    case KILN_F64:
      have = tp->n_double_data, field = "double_data";
      break;
    case KILN_I64:
      have = tp->n_int64_data, field = "int64_data";
      break;
    default:
      have = tp->n_int32_data, field = "int32_data";
      break;
    }
  }
  if (have != (size_t)n) {
    if (tp->has_raw_data)
      snprintf(msg, cap, "raw_data holds %zu bytes, the dims ask for %lld elements of %zu bytes", tp->raw_data.len,
               (long long)n, es);
    else
      snprintf(msg, cap, "%s holds %zu elements, the dims ask for %lld", field, have, (long long)n);
    return KILN_ERR_CORRUPT;
  }
  uint8_t *buf = kiln_alloc((size_t)bytes + 1);
  if (!buf) {
    snprintf(msg, cap, "out of memory for %lld bytes", (long long)bytes);
    return KILN_ERR_OUT_OF_MEMORY;
  }
  if (tp->has_raw_data) {
    if (bytes) memcpy(buf, tp->raw_data.data, (size_t)bytes); /* little-endian, as kiln on x86-64 */
  } else {
    for (int64_t i = 0; i < n; i++) switch (dt) {
      case KILN_F32:
        ((float *)buf)[i] = tp->float_data[i];
        break;
      case KILN_F64:
        ((double *)buf)[i] = tp->double_data[i];
        break;
      case KILN_I64:
        ((int64_t *)buf)[i] = tp->int64_data[i];
        break;
      case KILN_I32:
        ((int32_t *)buf)[i] = tp->int32_data[i];
        break;
      default:
        buf[i] = (uint8_t)tp->int32_data[i];
        break;
      }
  }
  if (dt == KILN_BOOL) /* kiln's bools are 0 or 1 */
    for (int64_t i = 0; i < n; i++) buf[i] = buf[i] != 0;
  *out = kiln_from_data(dt, (int)tp->n_dims, shape, buf);
  kiln_free(buf);
  if (kiln_tensor_failed(*out)) {
    snprintf(msg, cap, "%s", kiln_tensor_error(*out));
    return kiln_tensor_status(*out);
  }
  return KILN_OK;
}

/* ================================================================ the importer */

/* A 0-d or 1-d int64 value computed from the shape of a value with unknown
 * dims: per entry a constant, or dim `dim` of graph value (node, index). */
typedef struct {
  int n;
  bool scalar; /* 0-d: one entry */
  struct {
    int node, index, dim; /* node < 0: the constant v */
    int64_t v;
  } e[KILN_MAX_DIMS];
} shape_expr;

typedef struct {
  const char *name;
  kiln_tensor *t;  /* owned; for a shape_expr, its values at the size the graph is built with */
  shape_expr *sx; /* owned; NULL unless the value is a shape known only at run time */
} named_value;

typedef struct {
  const char *fn, *path;
  int64_t opset;
  kiln_graph *graph;
  const kiln_onnx_options *opt;
  /* Names to values: open addressing, capacity a power of two. */
  named_value *values;
  size_t cap;
  /* Graph inputs that are model inputs: their symbolic tensors. */
  int n_inputs;
  kiln_tensor **inputs;
  int *input_index; /* per model input: its index among the graph inputs that are not initializers */
  bool any_unknown; /* some input dim is unknown */
  int op_count[KILN_OP_COUNT];
  int64_t flops, value_bytes, max_value_bytes;
  int parameters;
  int64_t parameter_elements, parameter_bytes;
  kiln_model **model;
} importer;

/* One node being imported. */
typedef struct {
  importer *im;
  const Onnx__NodeProto *node;
  size_t index;
  int n_in;
  kiln_tensor *in[MAX_VALUES]; /* NULL for an omitted optional input */
  int n_out;
  kiln_tensor *out[MAX_VALUES]; /* in the open scope */
  const shape_expr *in_sx[MAX_VALUES]; /* the inputs' shape_exprs, where they are */
  shape_expr *out_sx;                  /* output 0's, when a handler makes one (owned until defined) */
  char where[192];
} node_ctx;

static const char *str(const char *s) { return s ? s : ""; }

/* A name from the file as it goes into a message (kiln_printable). */
static const char *printable(char *buf, const char *s) { return kiln_printable(buf, str(s), strlen(str(s))); }

static kiln_status failf(const importer *im, kiln_status st, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static kiln_status failf(const importer *im, kiln_status st, const char *fmt, ...) {
  char what[KILN_ERROR_MAX];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(what, sizeof what, fmt, ap);
  va_end(ap);
  return kiln_errorf(st, "%s: %s: %s", im->fn, im->path, what);
}

static kiln_status nfail(const node_ctx *n, kiln_status st, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static kiln_status nfail(const node_ctx *n, kiln_status st, const char *fmt, ...) {
  char what[KILN_ERROR_MAX];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(what, sizeof what, fmt, ap);
  va_end(ap);
  return failf(n->im, st, "%s: %s", n->where, what);
}

static uint64_t hash(const char *s) {
  uint64_t h = 1469598103934665603u;
  for (; *s; s++) h = (h ^ (unsigned char)*s) * 1099511628211u;
  return h;
}

static named_value *slot(importer *im, const char *name) {
  for (size_t i = hash(name) & (im->cap - 1);; i = (i + 1) & (im->cap - 1))
    if (!im->values[i].name || strcmp(im->values[i].name, name) == 0) return &im->values[i];
}

static kiln_tensor *lookup(importer *im, const char *name) { return slot(im, name)->t; }

/* Defines name (retaining t); false when it is defined already. */
static bool define(importer *im, const char *name, kiln_tensor *t) {
  named_value *v = slot(im, name);
  if (v->name) return false;
  v->name = name;
  v->t = kiln_tensor_retain(t);
  return true;
}

static bool symbolic(const kiln_tensor *t) { return graph_ref_of(t, NULL, NULL) >= 0; }

/* With a limit on the model's values, an op on known values (which runs
 * at once, allocating) is sized by its own inference first, and refused
 * when its outputs would pass the limit. */
static bool over_limit(importer *im, kiln_op_id id, int n_in, kiln_tensor *const *in, const kiln_attr_value *attrs,
                       int n_out) {
  if (im->max_value_bytes <= 0) return false;
  kk_view views[MAX_VALUES];
  for (int k = 0; k < n_in; k++) {
    if (!in[k] || kiln_tensor_failed(in[k]) || symbolic(in[k])) return false;
    views[k] = tensor_view_of(in[k]);
  }
  const kiln_op_def *def = kiln_op_get(id);
  kiln_op_call c = {.def = def, .n_in = n_in, .n_out = n_out, .in = views};
  memcpy(c.attrs, attrs, sizeof c.attrs);
  kiln_out_desc d[MAX_VALUES];
  if (def->infer(&c, d) != KILN_OK) return false; /* dispatch says why */
  int64_t total = im->value_bytes;
  for (int k = 0; k < n_out; k++) {
    int64_t numel = 1;
    for (int i = 0; i < d[k].ndim; i++)
      if (!kiln_mul_i64(numel, d[k].shape[i], &numel)) return true;
    if (!kiln_mul_i64(numel, (int64_t)kiln_dtype_size(d[k].dtype), &numel) || !kiln_add_i64(total, numel, &total))
      return true;
  }
  return total > im->max_value_bytes;
}

/* Op id with attributes, one or more outputs, counted when it becomes a
 * node of the graph. Failures travel in the outputs. */
static void run(node_ctx *n, kiln_op_id id, int n_in, kiln_tensor *const *in, const kiln_attr_value *attrs, int n_out,
                kiln_tensor **out) {
  importer *im = n->im;
  if (over_limit(im, id, n_in, in, attrs, n_out)) {
    for (int k = 0; k < n_out; k++)
      out[k] = kiln_failed(KILN_ERR_UNSUPPORTED, "%s: the model's values take more than the limit of %lld bytes",
                           kiln_op_get(id)->name, (long long)im->max_value_bytes);
    return;
  }
  kiln_dispatch(id, n_in, in, attrs, n_out, out);
  if (kiln_tensor_failed(out[0])) return;
  for (int k = 0; k < n_out; k++) {
    int64_t b = kiln_tensor_numel(out[k]) * (int64_t)kiln_dtype_size(kiln_tensor_dtype(out[k]));
    im->value_bytes = b > INT64_MAX - im->value_bytes ? INT64_MAX : im->value_bytes + b;
  }
  if (!symbolic(out[0])) return;
  im->op_count[id]++;
  int64_t f = model_node_flops(id, n_in, in, attrs, out);
  im->flops = f > INT64_MAX - im->flops ? INT64_MAX : im->flops + f;
}

/* Attributes by name, so a handler never depends on their order. The names
 * are the importer's own: one the op lacks is a kiln bug. */
static kiln_attr_value *attr_slot(kiln_op_id id, kiln_attr_value *a, const char *name) {
  const kiln_op_def *def = kiln_op_get(id);
  int k = 0;
  while (k < def->n_attrs && strcmp(def->attrs[k].name, name) != 0) k++;
  assert(k < def->n_attrs);
  return &a[k];
}

typedef struct {
  kiln_op_id id;
  kiln_attr_value a[KILN_MAX_ATTRS];
} call;

static call op(kiln_op_id id) {
  call c = {.id = id};
  kiln_attrs_default(id, c.a);
  return c;
}
static void set_i(call *c, const char *name, int64_t v) { attr_slot(c->id, c->a, name)->i = v; }
static void set_f(call *c, const char *name, double v) { attr_slot(c->id, c->a, name)->f = v; }
static void set_ints(call *c, const char *name, int k, const int64_t *v) {
  kiln_attr_set_ints(attr_slot(c->id, c->a, name), k, v);
}

static kiln_tensor *run1(node_ctx *n, const call *c, int n_in, kiln_tensor *const *in) {
  kiln_tensor *out;
  run(n, c->id, n_in, in, c->a, 1, &out);
  return out;
}
static kiln_tensor *un(node_ctx *n, kiln_op_id id, kiln_tensor *x) {
  call c = op(id);
  return run1(n, &c, 1, &x);
}
static kiln_tensor *bin(node_ctx *n, kiln_op_id id, kiln_tensor *a, kiln_tensor *b) {
  call c = op(id);
  return run1(n, &c, 2, (kiln_tensor *[]){a, b});
}
static kiln_tensor *scalar_op(node_ctx *n, kiln_op_id id, kiln_tensor *x, double s) {
  call c = op(id);
  set_f(&c, "scalar", s);
  return run1(n, &c, 1, &x);
}
/* keep: bit i makes dim i of the result x's dim i, at every size (reshape's
 * -2), where shape[i] is only its value at the size the graph is built with. */
static kiln_tensor *reshape_keep(node_ctx *n, kiln_tensor *x, int nd, const int64_t *shape, int64_t keep) {
  /* A graph's reshape is a view, so it needs contiguous data. */
  if (!kiln_tensor_failed(x) && !kiln_tensor_is_contiguous(x)) x = un(n, KILN_OP_COPY, x);
  int64_t target[KILN_MAX_DIMS];
  for (int d = 0; d < nd && d < KILN_MAX_DIMS; d++) target[d] = keep >> d & 1 ? -2 : shape[d];
  call c = op(KILN_OP_RESHAPE);
  set_ints(&c, "shape", nd, nd <= KILN_MAX_DIMS ? target : shape);
  return run1(n, &c, 1, &x);
}
static kiln_tensor *reshape(node_ctx *n, kiln_tensor *x, int nd, const int64_t *shape) {
  return reshape_keep(n, x, nd, shape, 0);
}
/* A 0-d constant of x's dtype. */
static kiln_tensor *scalar_like(const kiln_tensor *x, double v) { return kiln_full(kiln_tensor_dtype(x), 0, NULL, v); }

/* ---------------------------------------------------------------- attributes */

static const Onnx__AttributeProto *attr(const node_ctx *n, const char *name) {
  for (size_t i = 0; i < n->node->n_attribute; i++)
    if (strcmp(str(n->node->attribute[i]->name), name) == 0) return n->node->attribute[i];
  return NULL;
}

/* The attribute's type; old files may leave it out, and then the field
 * that is set says. */
static int attr_type(const Onnx__AttributeProto *a) {
  if (a->has_type) return a->type;
  if (a->n_ints) return ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INTS;
  if (a->n_floats) return ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__FLOATS;
  if (a->t) return ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__TENSOR;
  if (a->has_s) return ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__STRING;
  if (a->has_f) return ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__FLOAT;
  return ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INT;
}

static kiln_status bad_type(const node_ctx *n, const char *name, const char *want) {
  return nfail(n, KILN_ERR_CORRUPT, "attribute '%s' is not %s", name, want);
}

static kiln_status get_i(const node_ctx *n, const char *name, int64_t def, int64_t *v) {
  const Onnx__AttributeProto *a = attr(n, name);
  *v = def;
  if (!a) return KILN_OK;
  if (attr_type(a) != ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INT) return bad_type(n, name, "an int");
  *v = a->i;
  return KILN_OK;
}

static kiln_status get_f(const node_ctx *n, const char *name, double def, double *v) {
  const Onnx__AttributeProto *a = attr(n, name);
  *v = def;
  if (!a) return KILN_OK;
  if (attr_type(a) != ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__FLOAT) return bad_type(n, name, "a float");
  *v = a->f;
  return KILN_OK;
}

/* An ints attribute into v[0, max); *k is -1 when it is absent. */
static kiln_status get_ints(const node_ctx *n, const char *name, int max, int64_t *v, int *k) {
  const Onnx__AttributeProto *a = attr(n, name);
  *k = -1;
  if (!a) return KILN_OK;
  if (attr_type(a) != ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INTS) return bad_type(n, name, "a list of ints");
  if (a->n_ints > (size_t)max)
    return nfail(n, KILN_ERR_UNSUPPORTED, "attribute '%s' has %zu values (kiln takes at most %d)", name, a->n_ints,
                 max);
  if (a->n_ints) memcpy(v, a->ints, a->n_ints * sizeof(int64_t));
  *k = (int)a->n_ints;
  return KILN_OK;
}

/* A string attribute compared with what kiln supports: true when it is
 * absent or one of the allowed values (a list ending in NULL). */
static kiln_status check_string(const node_ctx *n, const char *name, const char *const *allowed) {
  const Onnx__AttributeProto *a = attr(n, name);
  if (!a) return KILN_OK;
  if (attr_type(a) != ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__STRING) return bad_type(n, name, "a string");
  for (int i = 0; allowed[i]; i++)
    if (a->s.len == strlen(allowed[i]) && memcmp(a->s.data, allowed[i], a->s.len) == 0) return KILN_OK;
  char v[KILN_PRINTABLE_MAX];
  return nfail(n, KILN_ERR_UNSUPPORTED, "attribute %s='%s' is not supported", name,
               kiln_printable(v, (const char *)a->s.data, a->s.len));
}

static bool string_is(const node_ctx *n, const char *name, const char *v) {
  const Onnx__AttributeProto *a = attr(n, name);
  return a && a->s.len == strlen(v) && memcmp(a->s.data, v, a->s.len) == 0;
}

/* ---------------------------------------------------------------- static values */

/* The values of input k, which must be known at import, as int64 (or as
 * doubles into dv when dv is not NULL): at most max of them. */
static kiln_status static_values(node_ctx *n, int k, int max, int64_t *iv, double *dv, int *count) {
  kiln_tensor *t = n->in[k];
  importer *im = n->im;
  if (!t) return nfail(n, KILN_ERR_INTERNAL, "input %d is absent", k);
  if (symbolic(t)) {
    for (int i = 0; i < im->n_inputs; i++)
      if (im->inputs[i] == t && im->opt && im->opt->needed_input) *im->opt->needed_input = im->input_index[i];
    char nm[KILN_PRINTABLE_MAX];
    return nfail(n, KILN_ERR_UNSUPPORTED,
                 "input %d ('%s') must be known when the model is loaded (kiln compiles static "
                 "graphs), but it is computed at run time",
                 k, printable(nm, n->node->input[k]));
  }
  int64_t numel = kiln_tensor_numel(t);
  if (numel > max)
    return nfail(n, KILN_ERR_UNSUPPORTED, "input %d has %lld values (kiln takes at most %d)", k, (long long)numel, max);
  kiln_tensor *c = kiln_cast(t, dv ? KILN_F64 : KILN_I64);
  kiln_status st = kiln_tensor_copy_to(c, dv ? (void *)dv : (void *)iv, (size_t)numel * 8);
  if (st != KILN_OK) return nfail(n, st, "input %d: %s", k, kiln_last_error());
  *count = (int)numel;
  return KILN_OK;
}

/* A scalar (one element) input known at import. */
static kiln_status static_scalar(node_ctx *n, int k, double *v) {
  int count;
  kiln_status st = static_values(n, k, 1, NULL, v, &count);
  if (st == KILN_OK && count != 1) return nfail(n, KILN_ERR_SHAPE, "input %d must hold one value", k);
  return st;
}

/* Fails unless x's shape is known at import and cannot change at run time
 * (the model has no unknown input dims, or x is known already). */
static kiln_status static_shape(node_ctx *n, kiln_tensor *x) {
  if (n->im->any_unknown && symbolic(x))
    return nfail(n, KILN_ERR_UNSUPPORTED, "the shape of a value computed from inputs with unknown dims");
  return KILN_OK;
}

static kiln_status normalize_axis(const node_ctx *n, const char *what, int64_t axis, int rank, int *out) {
  *out = 0;
  if (axis < -rank || axis >= rank || (rank == 0 && axis != 0 && axis != -1))
    return nfail(n, KILN_ERR_OUT_OF_RANGE, "%s %lld is out of range for rank %d", what, (long long)axis, rank);
  *out = (int)(axis < 0 ? axis + rank : axis);
  return KILN_OK;
}

/* ================================================================ handlers */

typedef kiln_status (*handler)(node_ctx *n);

#define X0 (n->in[0])
#define ND(t) kiln_tensor_ndim(t)
#define TRY(e)                                                                                                         \
  do {                                                                                                                 \
    kiln_status st_ = (e);                                                                                             \
    if (st_ != KILN_OK) return st_;                                                                                    \
  } while (0)

static kiln_op_id unary_id(const char *op_type) {
  static const struct {
    const char *name;
    kiln_op_id id;
  } t[] = {{"Relu", KILN_OP_RELU},         {"Sigmoid", KILN_OP_SIGMOID}, {"Tanh", KILN_OP_TANH},
           {"Exp", KILN_OP_EXP},           {"Log", KILN_OP_LOG},         {"Sqrt", KILN_OP_SQRT},
           {"Abs", KILN_OP_ABS},           {"Neg", KILN_OP_NEG},         {"Floor", KILN_OP_FLOOR},
           {"Ceil", KILN_OP_CEIL},         {"Erf", KILN_OP_ERF},         {"Sin", KILN_OP_SIN},
           {"Cos", KILN_OP_COS},           {"Sign", KILN_OP_SIGN},       {"Round", KILN_OP_ROUND},
           {"Softplus", KILN_OP_SOFTPLUS}, {"Not", KILN_OP_LOGICAL_NOT}};
  for (size_t i = 0; i < sizeof t / sizeof t[0]; i++)
    if (strcmp(t[i].name, op_type) == 0) return t[i].id;
  return KILN_OP_COUNT;
}

static kiln_status h_unary(node_ctx *n) {
  n->out[0] = un(n, unary_id(n->node->op_type), X0);
  return KILN_OK;
}

static kiln_op_id binary_id(const char *op_type) {
  static const struct {
    const char *name;
    kiln_op_id id;
  } t[] = {{"Add", KILN_OP_ADD},
           {"Sub", KILN_OP_SUB},
           {"Mul", KILN_OP_MUL},
           {"Div", KILN_OP_DIV},
           {"Equal", KILN_OP_EQUAL},
           {"Less", KILN_OP_LESS},
           {"Greater", KILN_OP_GREATER},
           {"LessOrEqual", KILN_OP_LESS_EQUAL},
           {"GreaterOrEqual", KILN_OP_GREATER_EQUAL},
           {"And", KILN_OP_LOGICAL_AND},
           {"Or", KILN_OP_LOGICAL_OR},
           {"Xor", KILN_OP_NOT_EQUAL},
           {"Max", KILN_OP_MAXIMUM},
           {"Min", KILN_OP_MINIMUM},
           {"Sum", KILN_OP_ADD},
           {"Mean", KILN_OP_ADD}};
  for (size_t i = 0; i < sizeof t / sizeof t[0]; i++)
    if (strcmp(t[i].name, op_type) == 0) return t[i].id;
  return KILN_OP_COUNT;
}

/* Before opset 7, binary ops broadcast only when asked (broadcast=1), B
 * aligned at axis; aligned at the end, that is numpy's rule, which kiln's
 * ops follow. */
static kiln_status legacy_broadcast(node_ctx *n) {
  int64_t broadcast, axis;
  TRY(get_i(n, "broadcast", 0, &broadcast));
  TRY(get_i(n, "axis", INT64_MIN, &axis));
  if (!attr(n, "broadcast") && !attr(n, "axis")) return KILN_OK;
  if (n->im->opset >= 7) return nfail(n, KILN_ERR_CORRUPT, "attributes broadcast and axis were removed in opset 7");
  if (axis != INT64_MIN && n->n_in > 1 && axis != ND(X0) - ND(n->in[1]) && axis != -ND(n->in[1]))
    return nfail(n, KILN_ERR_UNSUPPORTED, "legacy broadcast at axis %lld (only at the end, numpy's rule)",
                 (long long)axis);
  return KILN_OK;
}

/* Binary and variadic elementwise ops: a left fold. */
static kiln_status h_binary(node_ctx *n) {
  TRY(legacy_broadcast(n));
  kiln_op_id id = binary_id(n->node->op_type);
  kiln_tensor *acc = X0;
  for (int k = 1; k < n->n_in; k++) acc = bin(n, id, acc, n->in[k]);
  if (strcmp(n->node->op_type, "Mean") == 0 && n->n_in > 1) acc = scalar_op(n, KILN_OP_DIV_SCALAR, acc, n->n_in);
  /* Xor is "differ" on bools only; kiln's not_equal would compare numbers. */
  if (id == KILN_OP_NOT_EQUAL && kiln_tensor_dtype(X0) != KILN_BOOL)
    return nfail(n, KILN_ERR_UNSUPPORTED, "Xor of %s", kiln_dtype_name(kiln_tensor_dtype(X0)));
  n->out[0] = n->n_in == 1 ? un(n, KILN_OP_COPY, acc) : acc;
  return KILN_OK;
}

static kiln_status h_pow(node_ctx *n) {
  TRY(legacy_broadcast(n));
  kiln_tensor *e = n->in[1];
  /* ONNX lets the exponent's type differ; a float base keeps its type. */
  if (kiln_tensor_dtype(e) != kiln_tensor_dtype(X0)) {
    if (kiln_tensor_dtype(X0) != KILN_F32 && kiln_tensor_dtype(X0) != KILN_F64) {
      /* An integer base by a float exponent: in double, truncated back. */
      call to_f = op(KILN_OP_CAST), back = op(KILN_OP_CAST);
      set_i(&to_f, "dtype", KILN_F64);
      set_i(&back, "dtype", kiln_tensor_dtype(X0));
      kiln_tensor *y = bin(n, KILN_OP_POW, run1(n, &to_f, 1, &X0), run1(n, &to_f, 1, &e));
      n->out[0] = run1(n, &back, 1, &y);
      return KILN_OK;
    }
    call c = op(KILN_OP_CAST);
    set_i(&c, "dtype", kiln_tensor_dtype(X0));
    e = run1(n, &c, 1, &e);
  }
  n->out[0] = bin(n, KILN_OP_POW, X0, e);
  return KILN_OK;
}

static kiln_status h_where(node_ctx *n) {
  call c = op(KILN_OP_WHERE);
  n->out[0] = run1(n, &c, 3, n->in);
  return KILN_OK;
}

static kiln_status h_identity(node_ctx *n) {
  n->out[0] = X0;
  return KILN_OK;
}

static kiln_status h_reciprocal(node_ctx *n) {
  n->out[0] = bin(n, KILN_OP_DIV, scalar_like(X0, 1), X0);
  return KILN_OK;
}

static kiln_status h_leaky_relu(node_ctx *n) {
  double alpha;
  TRY(get_f(n, "alpha", 0.01, &alpha));
  call c = op(KILN_OP_LEAKY_RELU);
  set_f(&c, "slope", alpha);
  n->out[0] = run1(n, &c, 1, &X0);
  return KILN_OK;
}

/* x where x > 0, else f(x): the ELU family. */
static kiln_tensor *where_pos(node_ctx *n, kiln_tensor *x, kiln_tensor *pos, kiln_tensor *neg) {
  kiln_tensor *cond = bin(n, KILN_OP_GREATER, x, scalar_like(x, 0));
  return run1(n, &(call){.id = KILN_OP_WHERE}, 3, (kiln_tensor *[]){cond, pos, neg});
}

static kiln_status h_elu(node_ctx *n) {
  double alpha, gamma = 1;
  bool selu = strcmp(n->node->op_type, "Selu") == 0;
  TRY(get_f(n, "alpha", selu ? 1.67326319217681884765625 : 1, &alpha));
  if (selu) TRY(get_f(n, "gamma", 1.05070102214813232421875, &gamma));
  kiln_tensor *neg =
      scalar_op(n, KILN_OP_MUL_SCALAR, scalar_op(n, KILN_OP_SUB_SCALAR, un(n, KILN_OP_EXP, X0), 1), alpha);
  kiln_tensor *y = where_pos(n, X0, X0, neg);
  n->out[0] = selu ? scalar_op(n, KILN_OP_MUL_SCALAR, y, gamma) : y;
  return KILN_OK;
}

static kiln_status h_celu(node_ctx *n) {
  double alpha;
  TRY(get_f(n, "alpha", 1, &alpha));
  kiln_tensor *e = un(n, KILN_OP_EXP, scalar_op(n, KILN_OP_DIV_SCALAR, X0, alpha));
  kiln_tensor *neg = scalar_op(n, KILN_OP_MUL_SCALAR, scalar_op(n, KILN_OP_SUB_SCALAR, e, 1), alpha);
  n->out[0] = bin(n, KILN_OP_ADD, un(n, KILN_OP_RELU, X0), scalar_op(n, KILN_OP_MINIMUM_SCALAR, neg, 0));
  return KILN_OK;
}

static kiln_status h_thresholded_relu(node_ctx *n) {
  double alpha;
  TRY(get_f(n, "alpha", 1, &alpha));
  kiln_tensor *cond = bin(n, KILN_OP_GREATER, X0, scalar_like(X0, alpha));
  n->out[0] = run1(n, &(call){.id = KILN_OP_WHERE}, 3, (kiln_tensor *[]){cond, X0, scalar_like(X0, 0)});
  return KILN_OK;
}

static kiln_tensor *hard_sigmoid(node_ctx *n, kiln_tensor *x, double alpha, double beta) {
  call c = op(KILN_OP_CLIP);
  set_f(&c, "min", 0);
  set_f(&c, "max", 1);
  kiln_tensor *y = scalar_op(n, KILN_OP_ADD_SCALAR, scalar_op(n, KILN_OP_MUL_SCALAR, x, alpha), beta);
  return run1(n, &c, 1, &y);
}

static kiln_status h_hard_sigmoid(node_ctx *n) {
  double alpha, beta;
  TRY(get_f(n, "alpha", 0.2, &alpha));
  TRY(get_f(n, "beta", 0.5, &beta));
  n->out[0] = hard_sigmoid(n, X0, alpha, beta);
  return KILN_OK;
}

static kiln_status h_hard_swish(node_ctx *n) {
  n->out[0] = bin(n, KILN_OP_MUL, X0, hard_sigmoid(n, X0, 1.0 / 6, 0.5));
  return KILN_OK;
}

static kiln_status h_softsign(node_ctx *n) {
  n->out[0] = bin(n, KILN_OP_DIV, X0, scalar_op(n, KILN_OP_ADD_SCALAR, un(n, KILN_OP_ABS, X0), 1));
  return KILN_OK;
}

static kiln_status h_prelu(node_ctx *n) {
  kiln_tensor *slope = n->in[1];
  /* Before opset 7 a [C] slope is per channel, dim 1 of X. */
  if (n->im->opset < 7 && ND(slope) == 1 && ND(X0) > 2 && kiln_tensor_dim(slope, 0) == kiln_tensor_dim(X0, 1)) {
    int64_t shape[KILN_MAX_DIMS];
    shape[0] = kiln_tensor_dim(slope, 0);
    for (int d = 1; d < ND(X0) - 1; d++) shape[d] = 1;
    slope = reshape(n, slope, ND(X0) - 1, shape);
  }
  kiln_tensor *neg = bin(n, KILN_OP_MUL, X0, slope);
  kiln_tensor *cond = bin(n, KILN_OP_LESS, X0, scalar_like(X0, 0));
  n->out[0] = run1(n, &(call){.id = KILN_OP_WHERE}, 3, (kiln_tensor *[]){cond, neg, X0});
  return KILN_OK;
}

static kiln_status h_isnan(node_ctx *n) {
  n->out[0] = bin(n, KILN_OP_NOT_EQUAL, X0, X0);
  return KILN_OK;
}

static kiln_status h_isinf(node_ctx *n) {
  int64_t neg, pos;
  TRY(get_i(n, "detect_negative", 1, &neg));
  TRY(get_i(n, "detect_positive", 1, &pos));
  kiln_tensor *p = bin(n, KILN_OP_EQUAL, X0, scalar_like(X0, INFINITY));
  kiln_tensor *m = bin(n, KILN_OP_EQUAL, X0, scalar_like(X0, -INFINITY));
  n->out[0] = pos && neg ? bin(n, KILN_OP_LOGICAL_OR, p, m) : pos ? p : neg ? m : bin(n, KILN_OP_LOGICAL_AND, p, m);
  return KILN_OK;
}

static kiln_status h_clip(node_ctx *n) {
  double lo = -INFINITY, hi = INFINITY;
  if (n->im->opset < 11) {
    TRY(get_f(n, "min", -INFINITY, &lo));
    TRY(get_f(n, "max", INFINITY, &hi));
  } else {
    if (n->n_in > 1 && n->in[1]) TRY(static_scalar(n, 1, &lo));
    if (n->n_in > 2 && n->in[2]) TRY(static_scalar(n, 2, &hi));
  }
  kiln_dtype dt = kiln_tensor_dtype(X0);
  if (dt != KILN_F32 && dt != KILN_F64) {
    /* Integer clips as max then min, in the integers. */
    kiln_tensor *y = X0;
    if (!isinf(lo)) y = scalar_op(n, KILN_OP_MAXIMUM_SCALAR, y, lo);
    if (!isinf(hi)) y = scalar_op(n, KILN_OP_MINIMUM_SCALAR, y, hi);
    n->out[0] = y == X0 ? un(n, KILN_OP_COPY, y) : y;
    return KILN_OK;
  }
  /* min > max gives max everywhere in ONNX (numpy.clip's order). */
  call c = op(KILN_OP_CLIP);
  set_f(&c, "min", lo > hi ? hi : lo);
  set_f(&c, "max", hi);
  n->out[0] = run1(n, &c, 1, &X0);
  return KILN_OK;
}

/* ---------------------------------------------------------------- linear algebra */

static kiln_status h_matmul(node_ctx *n) {
  n->out[0] = bin(n, KILN_OP_MATMUL, X0, n->in[1]);
  return KILN_OK;
}

static kiln_status h_gemm(node_ctx *n) {
  double alpha, beta;
  int64_t ta, tb;
  TRY(get_f(n, "alpha", 1, &alpha));
  TRY(get_f(n, "beta", 1, &beta));
  TRY(get_i(n, "transA", 0, &ta));
  TRY(get_i(n, "transB", 0, &tb));
  int64_t broadcast;
  TRY(get_i(n, "broadcast", 0, &broadcast)); /* before opset 7; C broadcasts as numpy's rule says either way */
  kiln_tensor *a = X0, *b = n->in[1], *c = n->n_in > 2 ? n->in[2] : NULL;
  if (ND(a) != 2 || ND(b) != 2) return nfail(n, KILN_ERR_SHAPE, "Gemm takes 2-D A and B");
  /* A dense layer (B is [N, K]): kiln's linear, whose GEMM takes the
   * transpose without a copy and can fuse a following activation. */
  if (!ta && tb && alpha == 1 && (!c || (beta == 1 && ND(c) == 1 && kiln_tensor_dim(c, 0) == kiln_tensor_dim(b, 0)))) {
    kiln_tensor *in[3] = {a, b, c};
    call l = op(KILN_OP_LINEAR);
    n->out[0] = run1(n, &l, c ? 3 : 2, in);
    return KILN_OK;
  }
  call p = op(KILN_OP_PERMUTE);
  set_ints(&p, "axes", 2, (int64_t[]){1, 0});
  if (ta) a = run1(n, &p, 1, &a);
  if (tb) b = run1(n, &p, 1, &b);
  kiln_tensor *y = bin(n, KILN_OP_MATMUL, a, b);
  if (alpha != 1) y = scalar_op(n, KILN_OP_MUL_SCALAR, y, alpha);
  if (c) y = bin(n, KILN_OP_ADD, y, beta == 1 ? c : scalar_op(n, KILN_OP_MUL_SCALAR, c, beta));
  n->out[0] = y;
  return KILN_OK;
}

/* ---------------------------------------------------------------- softmax */

static kiln_status h_softmax(node_ctx *n) {
  bool log = strcmp(n->node->op_type, "LogSoftmax") == 0;
  bool coerce = n->im->opset < 13; /* before 13: over the axes from axis on, flattened */
  int64_t axis;
  int ax, r = ND(X0);
  TRY(get_i(n, "axis", coerce ? 1 : -1, &axis));
  TRY(normalize_axis(n, "axis", axis, r, &ax));
  call c = op(log ? KILN_OP_LOG_SOFTMAX : KILN_OP_SOFTMAX);
  if (!coerce || ax == r - 1) {
    set_i(&c, "axis", ax);
    n->out[0] = run1(n, &c, 1, &X0);
    return KILN_OK;
  }
  int64_t outer = 1, inner = 1;
  for (int d = 0; d < r; d++) {
    if (d < ax)
      outer *= kiln_tensor_dim(X0, d);
    else
      inner *= kiln_tensor_dim(X0, d);
  }
  set_i(&c, "axis", 1);
  kiln_tensor *y = run1(n, &c, 1, (kiln_tensor *[]){reshape(n, X0, 2, (int64_t[]){outer, inner})});
  n->out[0] = reshape(n, y, r, kiln_tensor_shape(X0));
  return KILN_OK;
}

/* ---------------------------------------------------------------- convolution and pooling */

typedef struct {
  int64_t kernel[2], stride[2], dilation[2], pad_begin[2], pad_end[2];
} window;

/* A list attribute of sp values (one per spatial dim) into the last sp
 * of out[2], the first 2 - sp keeping what out holds. */
static kiln_status get_spatial(node_ctx *n, const char *name, int sp, int64_t *out, int per_dim, bool *given) {
  int64_t v[8];
  int k;
  TRY(get_ints(n, name, 8, v, &k));
  if (given) *given = k >= 0;
  if (k < 0) return KILN_OK;
  if (k != sp * per_dim) return nfail(n, KILN_ERR_CORRUPT, "%s has %d values, not %d", name, k, sp * per_dim);
  for (int i = 0; i < k; i++)
    if (v[i] < -MAX_EXTENT || v[i] > MAX_EXTENT)
      return nfail(n, KILN_ERR_UNSUPPORTED, "%s of %lld", name, (long long)v[i]);
  for (int r = 0; r < per_dim; r++)
    for (int d = 0; d < sp; d++) out[r * 2 + 2 - sp + d] = v[r * sp + d];
  return KILN_OK;
}

/* The window attributes of Conv, ConvTranspose and the pools over sp (1
 * or 2) spatial dims of x, as 2-D windows (a 1-D window is 1 high), with
 * auto_pad resolved into pads. */
static kiln_status get_window(node_ctx *n, kiln_tensor *x, int sp, const int64_t *kernel_from_weight, window *w) {
  if (sp < 1 || sp > 2 || ND(x) != sp + 2)
    return nfail(n, KILN_ERR_UNSUPPORTED, "input of rank %d (kiln's conv2d and pools take 1 or 2 spatial dims)", ND(x));
  for (int d = 2; d < ND(x); d++)
    if (kiln_tensor_dim(x, d) > MAX_EXTENT)
      return nfail(n, KILN_ERR_UNSUPPORTED, "a spatial dim of %lld", (long long)kiln_tensor_dim(x, d));
  for (int d = 0; d < 2; d++)
    w->kernel[d] = 1, w->stride[d] = 1, w->dilation[d] = 1, w->pad_begin[d] = 0, w->pad_end[d] = 0;
  bool has_kernel;
  TRY(get_spatial(n, "kernel_shape", sp, w->kernel, 1, &has_kernel));
  if (!has_kernel && !kernel_from_weight) return nfail(n, KILN_ERR_CORRUPT, "attribute 'kernel_shape' is missing");
  for (int d = 0; kernel_from_weight && d < sp; d++) {
    if (has_kernel && w->kernel[2 - sp + d] != kernel_from_weight[d])
      return nfail(n, KILN_ERR_SHAPE, "kernel_shape disagrees with the weight's shape");
    w->kernel[2 - sp + d] = kernel_from_weight[d];
  }
  TRY(get_spatial(n, "strides", sp, w->stride, 1, NULL));
  TRY(get_spatial(n, "dilations", sp, w->dilation, 1, NULL));
  for (int d = 0; d < 2; d++)
    if (w->kernel[d] < 1 || w->stride[d] < 1 || w->dilation[d] < 1)
      return nfail(n, KILN_ERR_CORRUPT, "kernel, strides and dilations must be positive");
  int64_t pads[4] = {0, 0, 0, 0};
  TRY(get_spatial(n, "pads", sp, pads, 2, NULL));
  for (int d = 0; d < 2; d++) {
    w->pad_begin[d] = pads[d], w->pad_end[d] = pads[2 + d];
    if (w->pad_begin[d] < 0 || w->pad_end[d] < 0) return nfail(n, KILN_ERR_UNSUPPORTED, "negative pads");
  }
  static const char *const modes[] = {"NOTSET", "VALID", "SAME_UPPER", "SAME_LOWER", NULL};
  TRY(check_string(n, "auto_pad", modes));
  bool upper = string_is(n, "auto_pad", "SAME_UPPER"), lower = string_is(n, "auto_pad", "SAME_LOWER");
  if (string_is(n, "auto_pad", "VALID"))
    memset(w->pad_begin, 0, sizeof w->pad_begin), memset(w->pad_end, 0, sizeof w->pad_end);
  if ((upper || lower) && strcmp(n->node->op_type, "ConvTranspose") != 0) {
    if (n->im->any_unknown) return nfail(n, KILN_ERR_UNSUPPORTED, "auto_pad=SAME on a model with unknown input dims");
    for (int d = 2 - sp; d < 2; d++) {
      int64_t in = kiln_tensor_dim(x, 2 + d - (2 - sp)), out = (in + w->stride[d] - 1) / w->stride[d];
      int64_t total = (out - 1) * w->stride[d] + (w->kernel[d] - 1) * w->dilation[d] + 1 - in;
      if (total < 0) total = 0;
      w->pad_begin[d] = upper ? total / 2 : total - total / 2;
      w->pad_end[d] = total - w->pad_begin[d];
    }
  }
  return KILN_OK;
}

/* Pads kiln's conv2d and pools take: the same at both ends, at most half
 * the kernel. */
static bool symmetric(const window *w) {
  return w->pad_begin[0] == w->pad_end[0] && w->pad_begin[1] == w->pad_end[1] && 2 * w->pad_begin[0] <= w->kernel[0] &&
         2 * w->pad_begin[1] <= w->kernel[1];
}

/* x with the window's pads added explicitly (value v), the window then
 * unpadded: for the pads kiln's ops cannot take. */
static kiln_tensor *pad_explicitly(node_ctx *n, kiln_tensor *x, window *w, double v) {
  call c = op(KILN_OP_PAD);
  int64_t pads[8] = {0, 0, 0, 0, w->pad_begin[0], w->pad_end[0], w->pad_begin[1], w->pad_end[1]};
  set_ints(&c, "pads", 8, pads);
  set_f(&c, "value", v);
  memset(w->pad_begin, 0, sizeof w->pad_begin), memset(w->pad_end, 0, sizeof w->pad_end);
  return run1(n, &c, 1, &x);
}

/* A 1-D input [N, C, L] as [N, C, 1, L]; 2-D as it is. */
static kiln_tensor *as_2d(node_ctx *n, kiln_tensor *x, int sp) {
  if (sp == 2) return x;
  return reshape(n, x, 4, (int64_t[]){kiln_tensor_dim(x, 0), kiln_tensor_dim(x, 1), 1, kiln_tensor_dim(x, 2)});
}

static kiln_tensor *from_2d(node_ctx *n, kiln_tensor *y, int sp) {
  if (sp == 2 || kiln_tensor_failed(y)) return y;
  return reshape(n, y, 3, (int64_t[]){kiln_tensor_dim(y, 0), kiln_tensor_dim(y, 1), kiln_tensor_dim(y, 3)});
}

static kiln_status h_conv(node_ctx *n) {
  kiln_tensor *wt = n->in[1];
  int sp = ND(wt) - 2;
  if (sp < 1 || sp > 2)
    return nfail(n, KILN_ERR_UNSUPPORTED, "weight of rank %d (kiln's conv2d takes 1 or 2 spatial dims)", ND(wt));
  window w;
  TRY(get_window(n, X0, sp, kiln_tensor_shape(wt) + 2, &w));
  int64_t group;
  TRY(get_i(n, "group", 1, &group));
  kiln_tensor *x = as_2d(n, X0, sp);
  if (!symmetric(&w)) x = pad_explicitly(n, x, &w, 0);
  call c = op(KILN_OP_CONV2D);
  set_ints(&c, "stride", 2, w.stride);
  set_ints(&c, "padding", 2, w.pad_begin);
  set_ints(&c, "dilation", 2, w.dilation);
  set_i(&c, "groups", group);
  kiln_tensor *in[3] = {x, as_2d(n, wt, sp), n->n_in > 2 ? n->in[2] : NULL};
  n->out[0] = from_2d(n, run1(n, &c, in[2] ? 3 : 2, in), sp);
  return KILN_OK;
}

/* The transposed convolution is conv2d's data gradient: X [N, C_in, H, W]
 * is the gradient of a conv2d output, W [C_in, C_out/group, KH, KW] that
 * conv2d's weight. It is computed unpadded, at the full size, and the
 * pads are then cut off. */
static kiln_status h_conv_transpose(node_ctx *n) {
  kiln_tensor *wt = n->in[1];
  int sp = ND(wt) - 2;
  if (sp < 1 || sp > 2)
    return nfail(n, KILN_ERR_UNSUPPORTED, "weight of rank %d (kiln's conv2d takes 1 or 2 spatial dims)", ND(wt));
  window w;
  TRY(get_window(n, X0, sp, kiln_tensor_shape(wt) + 2, &w));
  int64_t group, out_pad[2] = {0, 0}, out_shape[2] = {-1, -1};
  bool has_shape;
  TRY(get_i(n, "group", 1, &group));
  TRY(get_spatial(n, "output_padding", sp, out_pad, 1, NULL));
  TRY(get_spatial(n, "output_shape", sp, out_shape, 1, &has_shape));
  kiln_tensor *x = as_2d(n, X0, sp);
  bool same = string_is(n, "auto_pad", "SAME_UPPER") || string_is(n, "auto_pad", "SAME_LOWER");
  int64_t full[2], size[2];
  for (int d = 0; d < 2; d++) {
    int64_t in = kiln_tensor_dim(x, 2 + d);
    if (out_pad[d] < 0 || (out_pad[d] >= w.stride[d] && out_pad[d] >= w.dilation[d]))
      return nfail(n, KILN_ERR_INVALID_ARGUMENT, "output_padding %lld", (long long)out_pad[d]);
    full[d] = w.stride[d] * (in - 1) + (w.kernel[d] - 1) * w.dilation[d] + 1 + out_pad[d];
    if (d < 2 - sp) continue;
    /* ONNX's rule: the total padding that gives output_shape (or in *
     * stride for SAME), split with the extra at the end unless SAME_LOWER. */
    if (has_shape || same) {
      int64_t want = has_shape ? out_shape[d] : in * w.stride[d], total = full[d] - want;
      if (total < 0) {
        /* Rows past the last window: output padding, zeros where no
         * window reaches, while it stays under the stride. */
        if (out_pad[d] - total >= w.stride[d])
          return nfail(n, KILN_ERR_UNSUPPORTED,
                       "an output_shape a stride or more past the full transposed convolution");
        full[d] -= total;
        continue;
      }
      bool lower = string_is(n, "auto_pad", "SAME_LOWER") || (!same && !string_is(n, "auto_pad", "SAME_UPPER"));
      w.pad_begin[d] = lower ? total - total / 2 : total / 2;
      w.pad_end[d] = total - w.pad_begin[d];
    }
  }
  call c = op(KILN_OP_CONV2D_BACKWARD_DATA);
  int64_t zero[2] = {0, 0};
  set_ints(&c, "stride", 2, w.stride);
  set_ints(&c, "padding", 2, zero);
  set_ints(&c, "dilation", 2, w.dilation);
  set_i(&c, "groups", group);
  memcpy(size, full, sizeof size);
  set_ints(&c, "input_size", 2, size);
  kiln_tensor *y = run1(n, &c, 2, (kiln_tensor *[]){x, as_2d(n, wt, sp)});
  for (int d = 0; d < 2; d++) {
    if (!w.pad_begin[d] && !w.pad_end[d]) continue;
    call sl = op(KILN_OP_SLICE);
    set_i(&sl, "axis", 2 + d);
    set_i(&sl, "start", w.pad_begin[d]);
    set_i(&sl, "stop", full[d] - w.pad_end[d]);
    y = run1(n, &sl, 1, &y);
  }
  if (n->n_in > 2 && n->in[2]) {
    int64_t bshape[3] = {kiln_tensor_dim(n->in[2], 0), 1, 1};
    y = bin(n, KILN_OP_ADD, y, reshape(n, n->in[2], 3, bshape));
  }
  n->out[0] = from_2d(n, y, sp);
  return KILN_OK;
}

/* ceil_mode is exact only where it gives floor's sizes. */
static kiln_status check_ceil_mode(node_ctx *n, kiln_tensor *x, const window *w) {
  int64_t ceil_mode;
  TRY(get_i(n, "ceil_mode", 0, &ceil_mode));
  if (!ceil_mode) return KILN_OK;
  for (int d = 0; d < 2; d++) {
    int64_t span = kiln_tensor_dim(x, 2 + d) + w->pad_begin[d] + w->pad_end[d] - w->kernel[d];
    if (span >= 0 && span % w->stride[d] != 0)
      return nfail(n, KILN_ERR_UNSUPPORTED, "ceil_mode=1 where it adds a partial window");
  }
  return KILN_OK;
}

static kiln_status h_pool(node_ctx *n) {
  bool is_max = strcmp(n->node->op_type, "MaxPool") == 0;
  int sp = ND(X0) - 2;
  window w;
  TRY(get_window(n, X0, sp, NULL, &w));
  kiln_tensor *x = as_2d(n, X0, sp);
  TRY(check_ceil_mode(n, x, &w));
  if (w.dilation[0] != 1 || w.dilation[1] != 1) return nfail(n, KILN_ERR_UNSUPPORTED, "dilations other than 1");
  int64_t include_pad = 0, order;
  if (is_max) {
    TRY(get_i(n, "storage_order", 0, &order));
    if (n->n_out > 1) return nfail(n, KILN_ERR_UNSUPPORTED, "the Indices output");
  } else {
    TRY(get_i(n, "count_include_pad", 0, &include_pad));
  }
  call c = op(is_max ? KILN_OP_MAX_POOL2D : KILN_OP_AVG_POOL2D);
  kiln_tensor *count = NULL;
  if (!symmetric(&w)) {
    /* A max ignores -inf padding. An average over explicit zero padding
     * counts the padding; excluding it, the sums are divided by the
     * fraction of each window inside the input instead: the same average
     * of ones, padded likewise. */
    if (!is_max && !include_pad) {
      TRY(static_shape(n, x));
      window wc = w;
      kiln_tensor *ones =
          kiln_ones(kiln_tensor_dtype(x), 4, (int64_t[]){1, 1, kiln_tensor_dim(x, 2), kiln_tensor_dim(x, 3)});
      count = pad_explicitly(n, ones, &wc, 0);
    }
    x = pad_explicitly(n, x, &w, is_max ? -INFINITY : 0);
  }
  set_ints(&c, "kernel", 2, w.kernel);
  set_ints(&c, "stride", 2, w.stride);
  set_ints(&c, "padding", 2, w.pad_begin);
  if (!is_max) set_i(&c, "count_include_pad", count ? 1 : include_pad);
  kiln_tensor *y = run1(n, &c, 1, &x);
  if (count) y = bin(n, KILN_OP_DIV, y, run1(n, &c, 1, &count));
  n->out[0] = from_2d(n, y, sp);
  return KILN_OK;
}

static kiln_tensor *reduce(node_ctx *n, kiln_op_id id, kiln_tensor *x, int k, const int64_t *axes, bool keepdims) {
  call c = op(id);
  set_ints(&c, "axes", k, axes);
  set_i(&c, "keepdims", keepdims);
  return run1(n, &c, 1, &x);
}

static kiln_status h_global_pool(node_ctx *n) {
  int r = ND(X0);
  if (r < 3) return nfail(n, KILN_ERR_SHAPE, "input of rank %d (at least [N, C, D])", r);
  int64_t axes[KILN_MAX_DIMS];
  for (int d = 2; d < r; d++) axes[d - 2] = d;
  bool is_max = strcmp(n->node->op_type, "GlobalMaxPool") == 0;
  n->out[0] = reduce(n, is_max ? KILN_OP_MAX : KILN_OP_MEAN, X0, r - 2, axes, true);
  return KILN_OK;
}

static kiln_status h_batch_norm(node_ctx *n) {
  double eps;
  int64_t training;
  TRY(get_f(n, "epsilon", 1e-5, &eps));
  TRY(get_i(n, "training_mode", 0, &training));
  int64_t is_test, spatial;
  TRY(get_i(n, "is_test", 1, &is_test)); /* before opset 7 */
  TRY(get_i(n, "spatial", 1, &spatial)); /* before opset 9 */
  if (training || !is_test || n->n_out > 1)
    return nfail(n, KILN_ERR_UNSUPPORTED, "training mode (only inference is mapped)");
  if (!spatial) return nfail(n, KILN_ERR_UNSUPPORTED, "spatial=0 (statistics per element)");
  call c = op(KILN_OP_BATCH_NORM);
  set_f(&c, "eps", eps);
  n->out[0] = run1(n, &c, 5, n->in);
  return KILN_OK;
}

/* A [rows, cols] bool mask, true where j - i >= k (upper) or j - i <= k. */
static kiln_tensor *band_mask(int64_t rows, int64_t cols, int64_t k, bool upper) {
  int64_t numel;
  if (!kiln_mul_i64(rows, cols, &numel) || numel > INT64_MAX / 2)
    return kiln_failed(KILN_ERR_OVERFLOW, "a [%lld, %lld] mask", (long long)rows, (long long)cols);
  uint8_t *m = kiln_alloc((size_t)numel + 1);
  if (!m)
    return kiln_failed(KILN_ERR_OUT_OF_MEMORY, "out of memory for a [%lld, %lld] mask", (long long)rows,
                       (long long)cols);
  for (int64_t i = 0; i < rows; i++)
    for (int64_t j = 0; j < cols; j++) m[i * cols + j] = upper ? j - i >= k : j - i <= k; /* |j - i| < 2^62 */
  kiln_tensor *t = kiln_from_data(KILN_BOOL, 2, (int64_t[]){rows, cols}, m);
  kiln_free(m);
  return t;
}

static kiln_tensor *where3(node_ctx *n, kiln_tensor *cond, kiln_tensor *a, kiln_tensor *b) {
  call c = op(KILN_OP_WHERE);
  return run1(n, &c, 3, (kiln_tensor *[]){cond, a, b});
}

/* (x - mean) / sqrt(var + eps) over axes, with the mean and the inverse
 * deviation (keeping the reduced dims) into *mean and *inv. */
static kiln_tensor *normalize(node_ctx *n, kiln_tensor *x, int k, const int64_t *axes, double eps, kiln_tensor **mean,
                              kiln_tensor **inv) {
  *mean = reduce(n, KILN_OP_MEAN, x, k, axes, true);
  kiln_tensor *dev = bin(n, KILN_OP_SUB, x, *mean);
  kiln_tensor *var = reduce(n, KILN_OP_MEAN, un(n, KILN_OP_SQUARE, dev), k, axes, true);
  *inv = un(n, KILN_OP_RSQRT, scalar_op(n, KILN_OP_ADD_SCALAR, var, eps));
  return bin(n, KILN_OP_MUL, dev, *inv);
}

static kiln_status h_layer_norm(node_ctx *n) {
  int64_t axis, stash;
  double eps;
  int ax, r = ND(X0);
  TRY(get_i(n, "axis", -1, &axis));
  TRY(get_f(n, "epsilon", 1e-5, &eps));
  TRY(get_i(n, "stash_type", 1, &stash));
  TRY(normalize_axis(n, "axis", axis, r, &ax));
  int64_t axes[KILN_MAX_DIMS];
  for (int d = ax; d < r; d++) axes[d - ax] = d;
  kiln_tensor *mean, *inv;
  kiln_tensor *y = bin(n, KILN_OP_MUL, normalize(n, X0, r - ax, axes, eps, &mean, &inv), n->in[1]);
  n->out[0] = n->n_in > 2 && n->in[2] ? bin(n, KILN_OP_ADD, y, n->in[2]) : y;
  if (n->n_out > 1) n->out[1] = mean;
  if (n->n_out > 2) n->out[2] = inv;
  return KILN_OK;
}

static kiln_status h_instance_norm(node_ctx *n) {
  double eps;
  int r = ND(X0);
  TRY(get_f(n, "epsilon", 1e-5, &eps));
  if (r < 3) return nfail(n, KILN_ERR_SHAPE, "input of rank %d (at least [N, C, D])", r);
  int64_t axes[KILN_MAX_DIMS], cshape[KILN_MAX_DIMS];
  for (int d = 2; d < r; d++) axes[d - 2] = d;
  cshape[0] = kiln_tensor_dim(X0, 1);
  for (int d = 1; d < r - 1; d++) cshape[d] = 1;
  kiln_tensor *mean, *inv;
  kiln_tensor *y = normalize(n, X0, r - 2, axes, eps, &mean, &inv);
  y = bin(n, KILN_OP_MUL, y, reshape(n, n->in[1], r - 1, cshape));
  n->out[0] = bin(n, KILN_OP_ADD, y, reshape(n, n->in[2], r - 1, cshape));
  return KILN_OK;
}

/* The negative log-likelihood of input [N, C, ...] at target [N, ...],
 * weighted by weight[target] (when weight is not NULL), with targets equal
 * to ignore_index counting for nothing (when has_ii). */
static kiln_status nll(node_ctx *n, kiln_tensor *input, kiln_tensor *target, kiln_tensor *weight, kiln_tensor **out) {
  static const char *const reductions[] = {"mean", "sum", "none", NULL};
  int64_t ii;
  TRY(check_string(n, "reduction", reductions));
  bool has_ii = attr(n, "ignore_index") != NULL;
  TRY(get_i(n, "ignore_index", 0, &ii));
  kiln_tensor *keep = NULL, *tgt = target;
  if (has_ii) {
    keep = bin(n, KILN_OP_NOT_EQUAL, target, scalar_like(target, (double)ii));
    tgt = where3(n, keep, target, scalar_like(target, 0));
  }
  call g = op(KILN_OP_GATHER), e = op(KILN_OP_EXPAND_DIMS), sq = op(KILN_OP_SQUEEZE), t = op(KILN_OP_TAKE);
  set_i(&g, "axis", 1);
  set_i(&e, "axis", 1);
  set_i(&sq, "axis", 1);
  kiln_tensor *idx = run1(n, &e, 1, &tgt);
  kiln_tensor *picked = run1(n, &sq, 1, (kiln_tensor *[]){run1(n, &g, 2, (kiln_tensor *[]){input, idx})});
  kiln_tensor *loss = un(n, KILN_OP_NEG, picked);
  kiln_tensor *w = weight ? run1(n, &t, 2, (kiln_tensor *[]){weight, tgt}) : NULL;
  if (keep) {
    call cast = op(KILN_OP_CAST);
    set_i(&cast, "dtype", kiln_tensor_dtype(input));
    w = w ? where3(n, keep, w, scalar_like(w, 0)) : run1(n, &cast, 1, &keep);
  }
  if (w) loss = bin(n, KILN_OP_MUL, loss, w);
  if (string_is(n, "reduction", "none")) {
    *out = loss;
  } else if (string_is(n, "reduction", "sum")) {
    *out = reduce(n, KILN_OP_SUM, loss, 0, NULL, false);
  } else {
    /* The mean is weighted: over the weights of the targets counted. */
    *out =
        w ? bin(n, KILN_OP_DIV, reduce(n, KILN_OP_SUM, loss, 0, NULL, false), reduce(n, KILN_OP_SUM, w, 0, NULL, false))
          : reduce(n, KILN_OP_MEAN, loss, 0, NULL, false);
  }
  return KILN_OK;
}

static kiln_status h_nll(node_ctx *n) {
  if (ND(X0) < 2) return nfail(n, KILN_ERR_SHAPE, "input of rank %d (at least [N, C])", ND(X0));
  return nll(n, X0, n->in[1], n->n_in > 2 ? n->in[2] : NULL, &n->out[0]);
}

static kiln_status h_softmax_cross_entropy(node_ctx *n) {
  if (ND(X0) < 2) return nfail(n, KILN_ERR_SHAPE, "scores of rank %d (at least [N, C])", ND(X0));
  call c = op(KILN_OP_LOG_SOFTMAX);
  set_i(&c, "axis", 1);
  kiln_tensor *log_prob = run1(n, &c, 1, &X0);
  if (n->n_out > 1) n->out[1] = log_prob;
  return nll(n, log_prob, n->in[1], n->n_in > 2 ? n->in[2] : NULL, &n->out[0]);
}

/* ---------------------------------------------------------------- shapes and layout */

static kiln_status h_flatten(node_ctx *n) {
  int64_t axis;
  int r = ND(X0), ax;
  TRY(get_i(n, "axis", 1, &axis));
  if (axis == r)
    ax = r;
  else
    TRY(normalize_axis(n, "axis", axis, r, &ax));
  int64_t outer = 1, inner = 1;
  for (int d = 0; d < r; d++) {
    if (d < ax)
      outer *= kiln_tensor_dim(X0, d);
    else
      inner *= kiln_tensor_dim(X0, d);
  }
  /* At axis 1 the result is [dim 0 kept, -1], exact at every size of any
   * unknown dim; elsewhere -1 for the batch keeps the graph valid at any
   * batch. */
  if (ax == 1 && n->im->any_unknown) {
    n->out[0] = reshape_keep(n, X0, 2, (int64_t[]){outer, -1}, 1);
    return KILN_OK;
  }
  int64_t shape[2] = {ax >= 1 && inner > 0 && n->im->any_unknown ? -1 : outer, inner};
  n->out[0] = reshape(n, X0, 2, shape);
  return KILN_OK;
}

/* True when t is graph value (node, index). */
static bool is_value(const kiln_tensor *t, int node, int index) {
  int i = 0, nd = graph_ref_of(t, NULL, &i);
  return nd >= 0 && nd == node && i == index;
}

static kiln_status h_reshape(node_ctx *n) {
  int64_t shape[KILN_MAX_DIMS], allowzero, keep = 0;
  int k;
  TRY(get_i(n, "allowzero", 0, &allowzero));
  const shape_expr *sx = n->n_in > 1 ? n->in_sx[1] : NULL;
  if (n->im->opset < 5) {
    TRY(get_ints(n, "shape", KILN_MAX_DIMS, shape, &k));
    if (k < 0) return nfail(n, KILN_ERR_CORRUPT, "attribute 'shape' is missing");
  } else if (sx) {
    /* A target computed from run-time dims: exact only where an entry is
     * the input's own dim in the same place, which reshape's -2 follows. */
    if (sx->scalar) return nfail(n, KILN_ERR_SHAPE, "the shape input is 0-d (it must be 1-d)");
    k = sx->n;
    for (int d = 0; d < k; d++) {
      if (sx->e[d].node < 0) {
        shape[d] = sx->e[d].v;
        continue;
      }
      if (!is_value(X0, sx->e[d].node, sx->e[d].index) || sx->e[d].dim != d) {
        char nm[KILN_PRINTABLE_MAX];
        return nfail(n, KILN_ERR_UNSUPPORTED,
                     "entry %d of the shape '%s' is dim %d of %s, known only at run time (kiln's reshape follows "
                     "only the input's own dim in the same place, so it cannot keep this exact at other sizes)",
                     d, printable(nm, n->node->input[1]), sx->e[d].dim,
                     is_value(X0, sx->e[d].node, sx->e[d].index) ? "the input" : "another value");
      }
      if (d >= ND(X0)) return nfail(n, KILN_ERR_INTERNAL, "shape entry %d beyond the input's rank", d);
      shape[d] = kiln_tensor_dim(X0, d);
      keep |= (int64_t)1 << d;
    }
  } else {
    TRY(static_values(n, 1, KILN_MAX_DIMS, shape, NULL, &k));
  }
  /* -2 would be kiln's "keep", which ONNX does not have. */
  for (int d = 0; d < k; d++)
    if (shape[d] < -1 && !(keep >> d & 1))
      return nfail(n, KILN_ERR_SHAPE, "shape[%d] is %lld (ONNX allows -1, 0 and sizes)", d, (long long)shape[d]);
  /* ONNX's 0 copies the input's dim: kept, so an unknown one follows the
   * size the model runs at rather than the size the graph is built with. */
  for (int d = 0; d < k; d++)
    if (shape[d] == 0 && !allowzero && !(keep >> d & 1)) {
      if (d >= ND(X0)) return nfail(n, KILN_ERR_SHAPE, "shape[%d] is 0 (copy) beyond the input's rank", d);
      shape[d] = kiln_tensor_dim(X0, d);
      keep |= (int64_t)1 << d;
    }
  n->out[0] = reshape_keep(n, X0, k, shape, keep);
  return KILN_OK;
}

static kiln_status h_transpose(node_ctx *n) {
  int64_t perm[KILN_MAX_DIMS];
  int k, r = ND(X0);
  TRY(get_ints(n, "perm", KILN_MAX_DIMS, perm, &k));
  if (k < 0)
    for (k = 0; k < r; k++) perm[k] = r - 1 - k;
  call c = op(KILN_OP_PERMUTE);
  set_ints(&c, "axes", k, perm);
  n->out[0] = run1(n, &c, 1, &X0);
  return KILN_OK;
}

static kiln_status h_concat(node_ctx *n) {
  int64_t axis;
  int ax;
  TRY(get_i(n, "axis", INT64_MIN, &axis));
  if (axis == INT64_MIN) return nfail(n, KILN_ERR_CORRUPT, "attribute 'axis' is missing");
  TRY(normalize_axis(n, "axis", axis, ND(X0), &ax));
  call c = op(KILN_OP_CONCAT);
  set_i(&c, "axis", ax);
  n->out[0] = run1(n, &c, n->n_in, n->in);
  return KILN_OK;
}

static kiln_status h_split(node_ctx *n) {
  int64_t axis, sizes[MAX_VALUES];
  int ax, k = -1;
  TRY(get_i(n, "axis", 0, &axis));
  TRY(normalize_axis(n, "axis", axis, ND(X0), &ax));
  if (n->im->opset < 13)
    TRY(get_ints(n, "split", MAX_VALUES, sizes, &k));
  else if (n->n_in > 1 && n->in[1])
    TRY(static_values(n, 1, MAX_VALUES, sizes, NULL, &k));
  if (k < 0) {
    int64_t len = kiln_tensor_dim(X0, ax);
    if (len % n->n_out)
      return nfail(n, KILN_ERR_SHAPE, "axis of %lld does not split into %d equal parts", (long long)len, n->n_out);
    for (k = 0; k < n->n_out; k++) sizes[k] = len / n->n_out;
  }
  if (k != n->n_out) return nfail(n, KILN_ERR_CORRUPT, "split gives %d sizes for %d outputs", k, n->n_out);
  if (k > KILN_MAX_ATTR_INTS)
    return nfail(n, KILN_ERR_UNSUPPORTED, "%d parts (kiln splits into at most %d)", k, KILN_MAX_ATTR_INTS);
  call c = op(KILN_OP_SPLIT);
  set_i(&c, "axis", ax);
  set_ints(&c, "sizes", k, sizes);
  run(n, c.id, 1, &X0, c.a, k, n->out);
  return KILN_OK;
}

static kiln_status h_gather(node_ctx *n) {
  int64_t axis;
  int ax;
  TRY(get_i(n, "axis", 0, &axis));
  TRY(normalize_axis(n, "axis", axis, ND(X0), &ax));
  bool elements = strcmp(n->node->op_type, "GatherElements") == 0;
  call c = op(elements ? KILN_OP_GATHER : KILN_OP_TAKE);
  set_i(&c, "axis", ax);
  n->out[0] = run1(n, &c, 2, n->in);
  return KILN_OK;
}

static int cmp_i64(const void *a, const void *b) {
  int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
  return (x > y) - (x < y);
}

/* Axes from the attribute (before opset 13) or input 1: *k = -1 when
 * there are none. */
static kiln_status get_axes(node_ctx *n, int first_input_opset, int64_t *axes, int *k) {
  *k = -1;
  if (n->im->opset < first_input_opset) return get_ints(n, "axes", KILN_MAX_DIMS, axes, k);
  if (n->n_in > 1 && n->in[1]) return static_values(n, 1, KILN_MAX_DIMS, axes, NULL, k);
  return KILN_OK;
}

/* Normalises axes against rank, sorted, refusing duplicates. */
static kiln_status sort_axes(node_ctx *n, int64_t *axes, int k, int rank) {
  for (int i = 0; i < k; i++) {
    int a;
    TRY(normalize_axis(n, "axis", axes[i], rank, &a));
    axes[i] = a;
  }
  qsort(axes, (size_t)k, sizeof(int64_t), cmp_i64);
  for (int i = 1; i < k; i++)
    if (axes[i] == axes[i - 1]) return nfail(n, KILN_ERR_CORRUPT, "axis %lld is given twice", (long long)axes[i]);
  return KILN_OK;
}

static kiln_status h_squeeze(node_ctx *n) {
  int64_t axes[KILN_MAX_DIMS];
  int k;
  TRY(get_axes(n, 13, axes, &k));
  kiln_tensor *y = X0;
  if (k < 0) {
    call c = op(KILN_OP_SQUEEZE);
    y = run1(n, &c, 1, &y);
  } else {
    TRY(sort_axes(n, axes, k, ND(X0)));
    for (int i = k - 1; i >= 0; i--) {
      call c = op(KILN_OP_SQUEEZE);
      set_i(&c, "axis", axes[i]);
      y = run1(n, &c, 1, &y);
    }
  }
  n->out[0] = y;
  return KILN_OK;
}

static kiln_status h_unsqueeze(node_ctx *n) {
  int64_t axes[KILN_MAX_DIMS];
  int k;
  TRY(get_axes(n, 13, axes, &k));
  if (k < 0) return nfail(n, KILN_ERR_CORRUPT, "no axes");
  if (ND(X0) + k > KILN_MAX_DIMS) return nfail(n, KILN_ERR_UNSUPPORTED, "more than %d dims", KILN_MAX_DIMS);
  TRY(sort_axes(n, axes, k, ND(X0) + k));
  kiln_tensor *y = X0;
  for (int i = 0; i < k; i++) {
    call c = op(KILN_OP_EXPAND_DIMS);
    set_i(&c, "axis", axes[i]);
    y = run1(n, &c, 1, &y);
  }
  n->out[0] = k ? y : un(n, KILN_OP_COPY, y);
  return KILN_OK;
}

static kiln_status h_slice(node_ctx *n) {
  int64_t starts[KILN_MAX_DIMS], ends[KILN_MAX_DIMS], axes[KILN_MAX_DIMS], steps[KILN_MAX_DIMS];
  int ks, ke, ka = -1, kt = -1, r = ND(X0);
  if (n->im->opset < 10) {
    TRY(get_ints(n, "starts", KILN_MAX_DIMS, starts, &ks));
    TRY(get_ints(n, "ends", KILN_MAX_DIMS, ends, &ke));
    TRY(get_ints(n, "axes", KILN_MAX_DIMS, axes, &ka));
  } else {
    TRY(static_values(n, 1, KILN_MAX_DIMS, starts, NULL, &ks));
    TRY(static_values(n, 2, KILN_MAX_DIMS, ends, NULL, &ke));
    if (n->n_in > 3 && n->in[3]) TRY(static_values(n, 3, KILN_MAX_DIMS, axes, NULL, &ka));
    if (n->n_in > 4 && n->in[4]) TRY(static_values(n, 4, KILN_MAX_DIMS, steps, NULL, &kt));
  }
  if (ks != ke || (ka >= 0 && ka != ks) || (kt >= 0 && kt != ks))
    return nfail(n, KILN_ERR_CORRUPT, "starts, ends, axes and steps differ in length");
  kiln_tensor *y = X0;
  for (int i = 0; i < ks; i++) {
    int ax;
    TRY(normalize_axis(n, "axis", ka >= 0 ? axes[i] : i, r, &ax));
    call c = op(KILN_OP_SLICE);
    set_i(&c, "axis", ax);
    set_i(&c, "start", starts[i]);
    set_i(&c, "stop", ends[i]);
    set_i(&c, "step", kt >= 0 ? steps[i] : 1);
    y = run1(n, &c, 1, &y);
  }
  n->out[0] = ks ? y : un(n, KILN_OP_COPY, y);
  return KILN_OK;
}

static kiln_status h_expand(node_ctx *n) {
  int64_t shape[KILN_MAX_DIMS], out[KILN_MAX_DIMS];
  int k, r = ND(X0);
  TRY(static_values(n, 1, KILN_MAX_DIMS, shape, NULL, &k));
  int nd = k > r ? k : r;
  for (int d = 0; d < nd; d++) {
    int64_t a = d - (nd - r) >= 0 ? kiln_tensor_dim(X0, d - (nd - r)) : 1,
            b = d - (nd - k) >= 0 ? shape[d - (nd - k)] : 1;
    if (a != b && a != 1 && b != 1)
      return nfail(n, KILN_ERR_SHAPE, "dim %d: %lld does not broadcast with %lld", d, (long long)a, (long long)b);
    out[d] = a == 1 ? b : a;
  }
  call c = op(KILN_OP_BROADCAST_TO);
  set_ints(&c, "shape", nd, out);
  n->out[0] = un(n, KILN_OP_COPY, run1(n, &c, 1, &X0));
  return KILN_OK;
}

static kiln_status h_tile(node_ctx *n) {
  int64_t reps[KILN_MAX_DIMS];
  int k;
  TRY(static_values(n, 1, KILN_MAX_DIMS, reps, NULL, &k));
  if (k != ND(X0)) return nfail(n, KILN_ERR_SHAPE, "repeats has %d values for rank %d", k, ND(X0));
  kiln_tensor *y = X0;
  for (int d = 0; d < k; d++) {
    if (reps[d] < 1 || reps[d] > MAX_VALUES)
      return nfail(n, KILN_ERR_UNSUPPORTED, "repeats of %lld (kiln tiles 1 to %d times)", (long long)reps[d],
                   MAX_VALUES);
    if (reps[d] == 1) continue;
    kiln_tensor *parts[MAX_VALUES];
    for (int64_t i = 0; i < reps[d]; i++) parts[i] = y;
    call c = op(KILN_OP_CONCAT);
    set_i(&c, "axis", d);
    y = run1(n, &c, (int)reps[d], parts);
  }
  n->out[0] = y == X0 ? un(n, KILN_OP_COPY, y) : y;
  return KILN_OK;
}

/* Edge and reflect padding along one axis: slices of x concatenated. */
static kiln_tensor *pad_axis(node_ctx *n, kiln_tensor *x, int axis, int64_t before, int64_t after, bool reflect) {
  int64_t len = kiln_tensor_dim(x, axis);
  kiln_tensor *parts[2 * MAX_VALUES + 1];
  int k = 0;
  call sl = op(KILN_OP_SLICE);
  set_i(&sl, "axis", axis);
  if (reflect) {
    /* x[before:0:-1] and x[len-2:len-2-after:-1] */
    set_i(&sl, "step", -1);
    if (before) {
      set_i(&sl, "start", before), set_i(&sl, "stop", 0);
      parts[k++] = run1(n, &sl, 1, &x);
    }
    parts[k++] = x;
    if (after) {
      /* A stop of -1 would count from the end: KILN_END runs to index 0. */
      set_i(&sl, "start", len - 2), set_i(&sl, "stop", len - 2 - after < 0 ? KILN_END : len - 2 - after);
      parts[k++] = run1(n, &sl, 1, &x);
    }
  } else {
    set_i(&sl, "start", 0), set_i(&sl, "stop", 1);
    kiln_tensor *first = run1(n, &sl, 1, &x);
    set_i(&sl, "start", len - 1), set_i(&sl, "stop", len);
    kiln_tensor *last = run1(n, &sl, 1, &x);
    for (int64_t i = 0; i < before; i++) parts[k++] = first;
    parts[k++] = x;
    for (int64_t i = 0; i < after; i++) parts[k++] = last;
  }
  call c = op(KILN_OP_CONCAT);
  set_i(&c, "axis", axis);
  return run1(n, &c, k, parts);
}

static kiln_status h_pad(node_ctx *n) {
  static const char *const modes[] = {"constant", "edge", "reflect", NULL};
  TRY(check_string(n, "mode", modes));
  bool edge = string_is(n, "mode", "edge"), reflect = string_is(n, "mode", "reflect");
  int64_t pads[2 * KILN_MAX_DIMS], kp[2 * KILN_MAX_DIMS];
  int k, r = ND(X0);
  double value = 0;
  if (n->im->opset < 11) {
    TRY(get_ints(n, "pads", 2 * KILN_MAX_DIMS, pads, &k));
    TRY(get_f(n, "value", 0, &value));
  } else {
    TRY(static_values(n, 1, 2 * KILN_MAX_DIMS, pads, NULL, &k));
    if (n->n_in > 2 && n->in[2]) TRY(static_scalar(n, 2, &value));
  }
  if (k != 2 * r) return nfail(n, KILN_ERR_SHAPE, "pads has %d values for rank %d", k, r);
  for (int d = 0; d < r; d++) {
    kp[2 * d] = pads[d], kp[2 * d + 1] = pads[d + r];
    if (kp[2 * d] < 0 || kp[2 * d + 1] < 0) return nfail(n, KILN_ERR_UNSUPPORTED, "negative pads");
  }
  if (edge || reflect) {
    kiln_tensor *y = X0;
    for (int d = 0; d < r; d++) {
      if (!kp[2 * d] && !kp[2 * d + 1]) continue;
      int64_t len = kiln_tensor_dim(X0, d);
      if (len < 1 || (reflect && (kp[2 * d] >= len || kp[2 * d + 1] >= len)))
        return nfail(n, KILN_ERR_UNSUPPORTED, "%s pads of axis %d longer than it", reflect ? "reflect" : "edge", d);
      if (!reflect && (kp[2 * d] > MAX_VALUES || kp[2 * d + 1] > MAX_VALUES))
        return nfail(n, KILN_ERR_UNSUPPORTED, "edge pads of more than %d", MAX_VALUES);
      y = pad_axis(n, y, d, kp[2 * d], kp[2 * d + 1], reflect);
    }
    n->out[0] = y == X0 ? un(n, KILN_OP_COPY, y) : y;
    return KILN_OK;
  }
  call c = op(KILN_OP_PAD);
  set_ints(&c, "pads", 2 * r, kp);
  set_f(&c, "value", value);
  n->out[0] = run1(n, &c, 1, &X0);
  return KILN_OK;
}

/* Cumulative sums as a product with a triangular matrix of ones, in
 * double (exact for integers below 2^53): x moved to put axis last. */
static kiln_status h_cumsum(node_ctx *n) {
  int64_t exclusive, reverse, axis;
  int ax, r = ND(X0), count;
  TRY(get_i(n, "exclusive", 0, &exclusive));
  TRY(get_i(n, "reverse", 0, &reverse));
  TRY(static_values(n, 1, 1, &axis, NULL, &count));
  if (count != 1) return nfail(n, KILN_ERR_SHAPE, "axis must hold one value");
  TRY(normalize_axis(n, "axis", axis, r, &ax));
  int64_t len = kiln_tensor_dim(X0, ax);
  if (len > 4096)
    return nfail(n, KILN_ERR_UNSUPPORTED, "an axis of %lld (kiln sums at most 4096 this way)", (long long)len);
  /* m[i][j] = 1 when input i adds into output j. */
  kiln_tensor *m = band_mask(len, len, exclusive ? (reverse ? -1 : 1) : 0, !reverse);
  call to_f = op(KILN_OP_CAST), back = op(KILN_OP_CAST), perm = op(KILN_OP_PERMUTE);
  set_i(&to_f, "dtype", KILN_F64);
  set_i(&back, "dtype", kiln_tensor_dtype(X0));
  int64_t axes[KILN_MAX_DIMS];
  for (int d = 0, src = 0; d < r - 1; d++, src++) {
    if (src == ax) src++;
    axes[d] = src;
  }
  axes[r - 1] = ax;
  set_ints(&perm, "axes", r, axes);
  kiln_tensor *x = run1(n, &to_f, 1, &X0);
  if (ax != r - 1) x = run1(n, &perm, 1, &x);
  kiln_tensor *y = bin(n, KILN_OP_MATMUL, x, run1(n, &to_f, 1, &m));
  if (ax != r - 1) {
    int64_t inv[KILN_MAX_DIMS];
    for (int d = 0; d < r; d++) inv[axes[d]] = d;
    call p2 = op(KILN_OP_PERMUTE);
    set_ints(&p2, "axes", r, inv);
    y = run1(n, &p2, 1, &y);
  }
  n->out[0] = run1(n, &back, 1, &y);
  return KILN_OK;
}

/* Mod: fmod=1 takes the dividend's sign (C's fmod), fmod=0 the divisor's
 * (Python's %), from the truncated quotient. */
static kiln_status h_mod(node_ctx *n) {
  int64_t fmod_;
  TRY(get_i(n, "fmod", 0, &fmod_));
  kiln_tensor *a = X0, *b = n->in[1];
  kiln_dtype dt = kiln_tensor_dtype(a);
  bool is_float = dt == KILN_F32 || dt == KILN_F64;
  if (is_float && !fmod_) return nfail(n, KILN_ERR_CORRUPT, "fmod=0 on floats");
  kiln_tensor *q = bin(n, KILN_OP_DIV, a, b);
  if (is_float) /* truncated toward zero */
    q = bin(n, KILN_OP_MUL, un(n, KILN_OP_SIGN, q), un(n, KILN_OP_FLOOR, un(n, KILN_OP_ABS, q)));
  kiln_tensor *rem = bin(n, KILN_OP_SUB, a, bin(n, KILN_OP_MUL, q, b));
  if (!fmod_) {
    kiln_tensor *zero = scalar_like(rem, 0);
    kiln_tensor *differ = bin(n, KILN_OP_NOT_EQUAL, bin(n, KILN_OP_LESS, rem, zero), bin(n, KILN_OP_LESS, b, zero));
    kiln_tensor *fix = bin(n, KILN_OP_LOGICAL_AND, bin(n, KILN_OP_NOT_EQUAL, rem, zero), differ);
    rem = where3(n, fix, bin(n, KILN_OP_ADD, rem, b), rem);
  }
  n->out[0] = rem;
  return KILN_OK;
}

/* ---------------------------------------------------------------- reductions */

static kiln_status h_reduce(node_ctx *n) {
  const char *t = n->node->op_type;
  int64_t keepdims, noop, axes[KILN_MAX_DIMS];
  int k;
  TRY(get_i(n, "keepdims", 1, &keepdims));
  TRY(get_i(n, "noop_with_empty_axes", 0, &noop));
  /* ReduceSum takes its axes as an input from opset 13, the others from 18. */
  TRY(get_axes(n, strcmp(t, "ReduceSum") == 0 ? 13 : 18, axes, &k));
  if (k <= 0 && noop) {
    n->out[0] = un(n, KILN_OP_COPY, X0);
    return KILN_OK;
  }
  if (k < 0) k = 0;
  TRY(sort_axes(n, axes, k, ND(X0)));
  if (k == 0 && ND(X0) > 0) /* all axes, explicitly: kiln's 0 means all too, but keepdims needs them */
    for (k = 0; k < ND(X0); k++) axes[k] = k;
  kiln_tensor *x = X0;
  kiln_op_id id;
  if (strcmp(t, "ReduceSum") == 0)
    id = KILN_OP_SUM;
  else if (strcmp(t, "ReduceMean") == 0)
    id = KILN_OP_MEAN;
  else if (strcmp(t, "ReduceMax") == 0)
    id = KILN_OP_MAX;
  else if (strcmp(t, "ReduceMin") == 0)
    id = KILN_OP_MIN;
  else if (strcmp(t, "ReduceProd") == 0)
    id = KILN_OP_PROD;
  else if (strcmp(t, "ReduceLogSumExp") == 0)
    id = KILN_OP_LOGSUMEXP;
  else if (strcmp(t, "ReduceSumSquare") == 0)
    id = KILN_OP_SUM, x = un(n, KILN_OP_SQUARE, x);
  else if (strcmp(t, "ReduceL1") == 0)
    id = KILN_OP_SUM, x = un(n, KILN_OP_ABS, x);
  else
    id = KILN_OP_SUM, x = strcmp(t, "ReduceL2") == 0 ? un(n, KILN_OP_SQUARE, x) : x;
  kiln_tensor *y = reduce(n, id, x, k, axes, keepdims);
  if (strcmp(t, "ReduceL2") == 0) y = un(n, KILN_OP_SQRT, y);
  if (strcmp(t, "ReduceLogSum") == 0) y = un(n, KILN_OP_LOG, y);
  n->out[0] = y;
  return KILN_OK;
}

static kiln_status h_arg(node_ctx *n) {
  int64_t axis, keepdims, last;
  int ax;
  TRY(get_i(n, "axis", 0, &axis));
  TRY(get_i(n, "keepdims", 1, &keepdims));
  TRY(get_i(n, "select_last_index", 0, &last));
  TRY(normalize_axis(n, "axis", axis, ND(X0), &ax));
  call c = op(strcmp(n->node->op_type, "ArgMax") == 0 ? KILN_OP_ARGMAX : KILN_OP_ARGMIN);
  set_i(&c, "axis", ax);
  set_i(&c, "keepdims", keepdims);
  if (!last) {
    n->out[0] = run1(n, &c, 1, &X0);
    return KILN_OK;
  }
  /* The last extreme is the first of the reversed axis, counted back. */
  call rev = op(KILN_OP_SLICE);
  set_i(&rev, "axis", ax);
  set_i(&rev, "start", KILN_END);
  set_i(&rev, "stop", KILN_END);
  set_i(&rev, "step", -1);
  kiln_tensor *i = run1(n, &c, 1, (kiln_tensor *[]){run1(n, &rev, 1, &X0)});
  n->out[0] =
      scalar_op(n, KILN_OP_ADD_SCALAR, scalar_op(n, KILN_OP_MUL_SCALAR, i, -1), (double)(kiln_tensor_dim(X0, ax) - 1));
  return KILN_OK;
}

/* ---------------------------------------------------------------- types and constants */

static kiln_status h_cast(node_ctx *n) {
  kiln_dtype dt;
  if (strcmp(n->node->op_type, "CastLike") == 0) {
    dt = kiln_tensor_dtype(n->in[1]);
  } else {
    int64_t to;
    TRY(get_i(n, "to", -1, &to));
    if (to < INT32_MIN || to > INT32_MAX || !dtype_of((int32_t)to, &dt))
      return nfail(n, KILN_ERR_UNSUPPORTED, "cast to %lld (%s)", (long long)to,
                   to >= INT32_MIN && to <= INT32_MAX ? onnx_type_name((int32_t)to) : "unknown");
  }
  call c = op(KILN_OP_CAST);
  set_i(&c, "dtype", dt);
  n->out[0] = run1(n, &c, 1, &X0);
  return KILN_OK;
}

static kiln_status tensor_attr(node_ctx *n, const Onnx__AttributeProto *a, kiln_tensor **out) {
  if (attr_type(a) != ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__TENSOR || !a->t) return bad_type(n, a->name, "a tensor");
  char msg[256];
  int64_t budget = n->im->max_value_bytes > 0 ? n->im->max_value_bytes - n->im->value_bytes : -1;
  kiln_tensor *t;
  kiln_status st = tensor_of_proto(a->t, &budget, &t, msg, sizeof msg);
  if (st != KILN_OK) return nfail(n, st, "attribute '%s': %s", a->name, msg);
  n->im->value_bytes += kiln_tensor_numel(t) * (int64_t)kiln_dtype_size(kiln_tensor_dtype(t));
  *out = t;
  return KILN_OK;
}

static kiln_status h_constant(node_ctx *n) {
  if (n->node->n_attribute != 1) return nfail(n, KILN_ERR_CORRUPT, "a Constant has exactly one attribute");
  const Onnx__AttributeProto *a = n->node->attribute[0];
  const char *name = str(a->name);
  int type = attr_type(a);
  if (strcmp(name, "value") == 0) return tensor_attr(n, a, &n->out[0]);
  if (strcmp(name, "value_float") == 0 && type == ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__FLOAT)
    n->out[0] = kiln_from_data(KILN_F32, 0, NULL, &a->f);
  else if (strcmp(name, "value_int") == 0 && type == ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INT)
    n->out[0] = kiln_from_data(KILN_I64, 0, NULL, &a->i);
  else if (strcmp(name, "value_floats") == 0 && type == ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__FLOATS)
    n->out[0] = kiln_from_data(KILN_F32, 1, (int64_t[]){(int64_t)a->n_floats}, a->n_floats ? a->floats : &a->f);
  else if (strcmp(name, "value_ints") == 0 && type == ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INTS)
    n->out[0] = kiln_from_data(KILN_I64, 1, (int64_t[]){(int64_t)a->n_ints}, a->n_ints ? a->ints : &a->i);
  else {
    char nm[KILN_PRINTABLE_MAX];
    return nfail(n, KILN_ERR_UNSUPPORTED, "attribute '%s' (of type %d)", printable(nm, name), type);
  }
  return KILN_OK;
}

static kiln_status h_shape(node_ctx *n) {
  int64_t start, end;
  int r = ND(X0);
  TRY(get_i(n, "start", 0, &start));
  TRY(get_i(n, "end", r, &end));
  if (start < 0) start += r;
  if (end < 0) end += r;
  start = start < 0 ? 0 : start > r ? r : start;
  end = end < 0 ? 0 : end > r ? r : end;
  int64_t len = end > start ? end - start : 0;
  n->out[0] = kiln_from_data(KILN_I64, 1, &len, kiln_tensor_shape(X0) + start);
  if (!n->im->any_unknown || !symbolic(X0)) return KILN_OK; /* folded: it cannot change */
  /* Dims the graph input declares are constants; any other dim is
   * followed symbolically (see shape_expr). */
  int index = 0, node = graph_ref_of(X0, NULL, &index);
  const graph_node *gn = &n->im->graph->nodes[node];
  if (!(n->out_sx = kiln_calloc(1, sizeof(shape_expr)))) return nfail(n, KILN_ERR_OUT_OF_MEMORY, "out of memory");
  n->out_sx->n = (int)len;
  for (int i = 0; i < (int)len; i++) {
    int d = (int)start + i;
    if (gn->kind == GRAPH_INPUT && !(gn->unknown & (1u << d)))
      n->out_sx->e[i].node = -1, n->out_sx->e[i].v = kiln_tensor_dim(X0, d);
    else
      n->out_sx->e[i].node = node, n->out_sx->e[i].index = index, n->out_sx->e[i].dim = d;
  }
  return KILN_OK;
}

/* ---------------------------------------------------------------- shapes known at run time */

/* The ops a shape_expr passes through, and the input it may be. */
static bool takes_shape_expr(const char *op_type, int k) {
  static const char *const any[] = {"Concat", "Cast", "Identity"}, *const first[] = {"Gather", "Unsqueeze", "Squeeze"};
  for (size_t i = 0; i < sizeof any / sizeof any[0]; i++)
    if (strcmp(op_type, any[i]) == 0) return true;
  for (size_t i = 0; i < sizeof first / sizeof first[0]; i++)
    if (strcmp(op_type, first[i]) == 0) return k == 0;
  return strcmp(op_type, "Reshape") == 0 && k == 1;
}

/* Input k as entries: its shape_expr, or the values of a known 1-d int
 * tensor as constants. */
static kiln_status expr_entries(node_ctx *n, int k, shape_expr *out) {
  if (n->in_sx[k]) {
    *out = *n->in_sx[k];
    return KILN_OK;
  }
  kiln_tensor *t = n->in[k];
  if (symbolic(t) || ND(t) != 1)
    return nfail(n, KILN_ERR_UNSUPPORTED,
                 "input %d is %s, joined with a shape known only at run time (kiln follows such shapes only "
                 "through 1-d values known at load)",
                 k, symbolic(t) ? "computed at run time" : "not 1-d");
  int64_t v[KILN_MAX_DIMS];
  int count;
  TRY(static_values(n, k, KILN_MAX_DIMS, v, NULL, &count));
  out->n = count;
  out->scalar = false;
  for (int i = 0; i < count; i++) out->e[i].node = -1, out->e[i].v = v[i];
  return KILN_OK;
}

/* After a handler has computed a node's values at the size the graph is
 * built with: the shape_expr of its output, from its inputs'. */
static kiln_status follow_shape_expr(node_ctx *n) {
  const char *ty = n->node->op_type;
  kiln_tensor *y = n->out[0];
  if (!y || kiln_tensor_failed(y)) return KILN_OK; /* import_node reports it */
  shape_expr r = {0};
  if (strcmp(ty, "Concat") == 0) {
    for (int k = 0; k < n->n_in; k++) {
      shape_expr part;
      TRY(expr_entries(n, k, &part));
      if (part.scalar) return nfail(n, KILN_ERR_SHAPE, "input %d is 0-d", k);
      if (r.n + part.n > KILN_MAX_DIMS)
        return nfail(n, KILN_ERR_UNSUPPORTED, "a shape known only at run time of over %d entries", KILN_MAX_DIMS);
      memcpy(&r.e[r.n], part.e, sizeof part.e[0] * (size_t)part.n);
      r.n += part.n;
    }
  } else if (strcmp(ty, "Gather") == 0) {
    const shape_expr *x = n->in_sx[0];
    int64_t idx[KILN_MAX_DIMS];
    int count;
    if (x->scalar) return nfail(n, KILN_ERR_SHAPE, "gathers from a 0-d value");
    if (ND(n->in[1]) > 1)
      return nfail(n, KILN_ERR_UNSUPPORTED, "indices of %d dims into a shape known only at run time", ND(n->in[1]));
    TRY(static_values(n, 1, KILN_MAX_DIMS, idx, NULL, &count));
    r.scalar = ND(n->in[1]) == 0;
    r.n = count;
    for (int i = 0; i < count; i++) {
      int64_t j = idx[i] < 0 ? idx[i] + x->n : idx[i];
      if (j < 0 || j >= x->n) return nfail(n, KILN_ERR_OUT_OF_RANGE, "index %lld of %d", (long long)idx[i], x->n);
      r.e[i] = x->e[j];
    }
  } else {
    /* Unsqueeze, Squeeze, Cast and Identity keep the entries; only a 0-d
     * or 1-d int result is still a shape. */
    r = *n->in_sx[0];
    kiln_dtype dt = kiln_tensor_dtype(y);
    if (ND(y) > 1 || (dt != KILN_I64 && dt != KILN_I32))
      return nfail(n, KILN_ERR_UNSUPPORTED, "makes a %d-d %s value of a shape known only at run time", ND(y),
                   kiln_dtype_name(dt));
    r.scalar = ND(y) == 0;
  }
  if (kiln_tensor_numel(y) != r.n) return nfail(n, KILN_ERR_INTERNAL, "shape entries do not match the value");
  if (!(n->out_sx = kiln_alloc(sizeof r))) return nfail(n, KILN_ERR_OUT_OF_MEMORY, "out of memory");
  *n->out_sx = r;
  return KILN_OK;
}

static kiln_status h_size(node_ctx *n) {
  TRY(static_shape(n, X0));
  int64_t numel = kiln_tensor_numel(X0);
  n->out[0] = kiln_from_data(KILN_I64, 0, NULL, &numel);
  return KILN_OK;
}

static kiln_status h_constant_of_shape(node_ctx *n) {
  int64_t shape[KILN_MAX_DIMS];
  int k;
  TRY(static_values(n, 0, KILN_MAX_DIMS, shape, NULL, &k));
  kiln_dtype dt = KILN_F32;
  double v = 0;
  const Onnx__AttributeProto *a = attr(n, "value");
  if (a) {
    kiln_tensor *t;
    TRY(tensor_attr(n, a, &t));
    if (kiln_tensor_numel(t) != 1) return nfail(n, KILN_ERR_CORRUPT, "value must hold one element");
    dt = kiln_tensor_dtype(t);
    kiln_status st = kiln_tensor_item(t, &v);
    if (st != KILN_OK) return nfail(n, st, "value: %s", kiln_last_error());
  }
  int64_t numel = 1;
  for (int d = 0; d < k; d++) {
    if (shape[d] < 0) return nfail(n, KILN_ERR_SHAPE, "a negative dim, %lld", (long long)shape[d]);
    if (!kiln_mul_i64(numel, shape[d], &numel)) return nfail(n, KILN_ERR_OVERFLOW, "the shape's size overflows");
  }
  int64_t bytes = numel * (int64_t)kiln_dtype_size(dt);
  if (n->im->max_value_bytes > 0 && bytes > n->im->max_value_bytes - n->im->value_bytes)
    return nfail(n, KILN_ERR_UNSUPPORTED, "the model's values take more than the limit");
  n->out[0] = kiln_full(dt, k, shape, v);
  return KILN_OK;
}

static kiln_status h_range(node_ctx *n) {
  double v[3];
  for (int k = 0; k < 3; k++) TRY(static_scalar(n, k, &v[k]));
  if (v[2] == 0) return nfail(n, KILN_ERR_INVALID_ARGUMENT, "delta is 0");
  double count = ceil((v[1] - v[0]) / v[2]);
  if (n->im->max_value_bytes > 0 && count * 8 > (double)(n->im->max_value_bytes - n->im->value_bytes))
    return nfail(n, KILN_ERR_UNSUPPORTED, "the model's values take more than the limit");
  n->out[0] = kiln_arange(v[0], v[1], v[2], kiln_tensor_dtype(X0));
  return KILN_OK;
}

static kiln_status h_dropout(node_ctx *n) {
  if (n->n_in > 2 && n->in[2]) {
    double training;
    TRY(static_scalar(n, 2, &training));
    double ratio = 0.5;
    if (n->n_in > 1 && n->in[1]) TRY(static_scalar(n, 1, &ratio));
    /* Training with ratio 0 keeps everything, as inference does. */
    if (training != 0 && ratio != 0)
      return nfail(n, KILN_ERR_UNSUPPORTED, "training_mode=true (only inference is mapped)");
  }
  n->out[0] = X0;
  if (n->n_out > 1) {
    /* Inference keeps every element: the mask is all true. */
    TRY(static_shape(n, X0));
    n->out[1] = kiln_full(KILN_BOOL, ND(X0), kiln_tensor_shape(X0), 1);
  }
  return KILN_OK;
}

/* ---------------------------------------------------------------- composed ops */

static kiln_status h_trig(node_ctx *n) {
  const char *t = n->node->op_type;
  kiln_tensor *x = X0, *y;
  if (!strcmp(t, "Tan")) {
    y = bin(n, KILN_OP_DIV, un(n, KILN_OP_SIN, x), un(n, KILN_OP_COS, x));
  } else if (!strcmp(t, "Sinh") || !strcmp(t, "Cosh")) {
    kiln_tensor *ep = un(n, KILN_OP_EXP, x), *em = un(n, KILN_OP_EXP, un(n, KILN_OP_NEG, x));
    y = scalar_op(n, KILN_OP_MUL_SCALAR, bin(n, !strcmp(t, "Sinh") ? KILN_OP_SUB : KILN_OP_ADD, ep, em), 0.5);
  } else if (!strcmp(t, "Asinh")) {
    /* Odd, so computed on |x| where the sum does not cancel. */
    kiln_tensor *a = un(n, KILN_OP_ABS, x);
    kiln_tensor *r = un(n, KILN_OP_SQRT, scalar_op(n, KILN_OP_ADD_SCALAR, un(n, KILN_OP_SQUARE, a), 1));
    y = bin(n, KILN_OP_MUL, un(n, KILN_OP_SIGN, x), un(n, KILN_OP_LOG, bin(n, KILN_OP_ADD, a, r)));
  } else if (!strcmp(t, "Acosh")) {
    kiln_tensor *r = un(n, KILN_OP_SQRT, scalar_op(n, KILN_OP_SUB_SCALAR, un(n, KILN_OP_SQUARE, x), 1));
    y = un(n, KILN_OP_LOG, bin(n, KILN_OP_ADD, x, r));
  } else { /* Atanh */
    kiln_tensor *q = bin(n, KILN_OP_DIV, scalar_op(n, KILN_OP_ADD_SCALAR, x, 1),
                         scalar_op(n, KILN_OP_ADD_SCALAR, un(n, KILN_OP_NEG, x), 1));
    y = scalar_op(n, KILN_OP_MUL_SCALAR, un(n, KILN_OP_LOG, q), 0.5);
  }
  n->out[0] = y;
  return KILN_OK;
}

static kiln_status h_shrink(node_ctx *n) {
  double bias, lambd;
  TRY(get_f(n, "bias", 0, &bias));
  TRY(get_f(n, "lambd", 0.5, &lambd));
  kiln_tensor *x = X0;
  kiln_tensor *hi = where3(n, bin(n, KILN_OP_GREATER, x, scalar_like(x, lambd)),
                           scalar_op(n, KILN_OP_SUB_SCALAR, x, bias), scalar_like(x, 0));
  n->out[0] = where3(n, bin(n, KILN_OP_LESS, x, scalar_like(x, -lambd)), scalar_op(n, KILN_OP_ADD_SCALAR, x, bias), hi);
  return KILN_OK;
}

static kiln_status h_trilu(node_ctx *n) {
  int64_t upper, k = 0;
  int r = ND(X0), count;
  TRY(get_i(n, "upper", 1, &upper));
  if (n->n_in > 1 && n->in[1]) TRY(static_values(n, 1, 1, &k, NULL, &count));
  if (r < 2) return nfail(n, KILN_ERR_SHAPE, "input of rank %d (at least 2)", r);
  TRY(static_shape(n, X0));
  kiln_tensor *mask = band_mask(kiln_tensor_dim(X0, -2), kiln_tensor_dim(X0, -1), k, upper != 0);
  n->out[0] = where3(n, mask, X0, scalar_like(X0, 0));
  return KILN_OK;
}

static kiln_status h_eye_like(node_ctx *n) {
  int64_t k, to;
  TRY(get_i(n, "k", 0, &k));
  TRY(get_i(n, "dtype", -1, &to));
  kiln_dtype dt = kiln_tensor_dtype(X0);
  if (to != -1 && (to < INT32_MIN || to > INT32_MAX || !dtype_of((int32_t)to, &dt)))
    return nfail(n, KILN_ERR_UNSUPPORTED, "dtype %lld", (long long)to);
  if (ND(X0) != 2) return nfail(n, KILN_ERR_SHAPE, "input of rank %d (EyeLike takes 2-D)", ND(X0));
  TRY(static_shape(n, X0));
  kiln_tensor *mask = band_mask(kiln_tensor_dim(X0, 0), kiln_tensor_dim(X0, 1), k, true);
  kiln_tensor *upper = band_mask(kiln_tensor_dim(X0, 0), kiln_tensor_dim(X0, 1), k + 1, true);
  kiln_tensor *diag = kiln_logical_and(mask, kiln_logical_not(upper));
  n->out[0] = kiln_cast(diag, dt);
  return KILN_OK;
}

static kiln_status h_hardmax(node_ctx *n) {
  bool coerce = n->im->opset < 13;
  int64_t axis;
  int ax, r = ND(X0);
  TRY(get_i(n, "axis", coerce ? 1 : -1, &axis));
  TRY(normalize_axis(n, "axis", axis, r, &ax));
  kiln_tensor *x = X0;
  if (coerce) {
    int64_t outer = 1, inner = 1;
    for (int d = 0; d < r; d++) {
      if (d < ax)
        outer *= kiln_tensor_dim(X0, d);
      else
        inner *= kiln_tensor_dim(X0, d);
    }
    x = reshape(n, x, 2, (int64_t[]){outer, inner});
  }
  int xa = coerce ? 1 : ax, xr = ND(x);
  call am = op(KILN_OP_ARGMAX), oh = op(KILN_OP_ONE_HOT), perm = op(KILN_OP_PERMUTE);
  set_i(&am, "axis", xa);
  set_i(&oh, "depth", kiln_tensor_dim(x, xa));
  set_i(&oh, "dtype", kiln_tensor_dtype(X0));
  /* one_hot appends the class axis; it moves back to xa. */
  kiln_tensor *y = run1(n, &oh, 1, (kiln_tensor *[]){run1(n, &am, 1, &x)});
  int64_t axes[KILN_MAX_DIMS];
  for (int d = 0, src = 0; d < xr; d++) axes[d] = d == xa ? xr - 1 : src++;
  set_ints(&perm, "axes", xr, axes);
  y = run1(n, &perm, 1, &y);
  n->out[0] = coerce ? reshape(n, y, r, kiln_tensor_shape(X0)) : un(n, KILN_OP_COPY, y);
  return KILN_OK;
}

static kiln_status h_depth_space(node_ctx *n) {
  int64_t bs;
  TRY(get_i(n, "blocksize", 0, &bs));
  static const char *const modes[] = {"DCR", "CRD", NULL};
  TRY(check_string(n, "mode", modes));
  if (ND(X0) != 4) return nfail(n, KILN_ERR_SHAPE, "input of rank %d (takes [N, C, H, W])", ND(X0));
  if (bs < 1 || bs > MAX_EXTENT) return nfail(n, KILN_ERR_UNSUPPORTED, "blocksize %lld", (long long)bs);
  int64_t N = kiln_tensor_dim(X0, 0), C = kiln_tensor_dim(X0, 1), H = kiln_tensor_dim(X0, 2),
          W = kiln_tensor_dim(X0, 3);
  if (H > MAX_EXTENT || W > MAX_EXTENT)
    return nfail(n, KILN_ERR_UNSUPPORTED, "spatial dims over %lld", (long long)MAX_EXTENT);
  int64_t shape[6], perm[6], out[4];
  if (strcmp(n->node->op_type, "DepthToSpace") == 0) {
    if (C % (bs * bs)) return nfail(n, KILN_ERR_SHAPE, "channels %lld are not a multiple of blocksize^2", (long long)C);
    bool crd = string_is(n, "mode", "CRD");
    int64_t c = C / (bs * bs);
    memcpy(shape, crd ? (int64_t[]){N, c, bs, bs, H, W} : (int64_t[]){N, bs, bs, c, H, W}, sizeof shape);
    memcpy(perm, crd ? (int64_t[]){0, 1, 4, 2, 5, 3} : (int64_t[]){0, 3, 4, 1, 5, 2}, sizeof perm);
    memcpy(out, (int64_t[]){N, c, H * bs, W * bs}, sizeof out);
  } else {
    if (H % bs || W % bs) return nfail(n, KILN_ERR_SHAPE, "H and W are not multiples of the blocksize");
    memcpy(shape, (int64_t[]){N, C, H / bs, bs, W / bs, bs}, sizeof shape);
    memcpy(perm, (int64_t[]){0, 3, 5, 1, 2, 4}, sizeof perm);
    memcpy(out, (int64_t[]){N, C * bs * bs, H / bs, W / bs}, sizeof out);
  }
  call p = op(KILN_OP_PERMUTE);
  set_ints(&p, "axes", 6, perm);
  kiln_tensor *y = run1(n, &p, 1, (kiln_tensor *[]){reshape(n, X0, 6, shape)});
  n->out[0] = reshape(n, y, 4, out);
  return KILN_OK;
}

/* ---------------------------------------------------------------- more compositions */

static kiln_status h_mvn(node_ctx *n) {
  int64_t axes[KILN_MAX_DIMS] = {0, 2, 3};
  int k;
  TRY(get_ints(n, "axes", KILN_MAX_DIMS, axes, &k));
  if (k < 0) k = 3;
  TRY(sort_axes(n, axes, k, ND(X0)));
  /* The function's definition: (x - mean) / (sqrt(var) + 1e-9). */
  kiln_tensor *mean = reduce(n, KILN_OP_MEAN, X0, k, axes, true);
  kiln_tensor *dev = bin(n, KILN_OP_SUB, X0, mean);
  kiln_tensor *sd = un(n, KILN_OP_SQRT, reduce(n, KILN_OP_MEAN, un(n, KILN_OP_SQUARE, dev), k, axes, true));
  n->out[0] = bin(n, KILN_OP_DIV, dev, scalar_op(n, KILN_OP_ADD_SCALAR, sd, 1e-9));
  return KILN_OK;
}

/* x / (bias + alpha / size * (sum of x^2 over the size channels around
 * c))^beta, the window [c - (size-1)/2, c + size/2] cut at the ends. */
static kiln_status h_lrn(node_ctx *n) {
  double alpha, beta, bias;
  int64_t size;
  TRY(get_f(n, "alpha", 1e-4, &alpha));
  TRY(get_f(n, "beta", 0.75, &beta));
  TRY(get_f(n, "bias", 1, &bias));
  TRY(get_i(n, "size", 0, &size));
  if (size < 1 || size > MAX_VALUES)
    return nfail(n, KILN_ERR_UNSUPPORTED, "size %lld (1 to %d)", (long long)size, MAX_VALUES);
  if (ND(X0) < 3) return nfail(n, KILN_ERR_SHAPE, "input of rank %d (at least [N, C, D])", ND(X0));
  int64_t c = kiln_tensor_dim(X0, 1), pads[2 * KILN_MAX_DIMS] = {0};
  pads[2] = (size - 1) / 2, pads[3] = size / 2;
  call p = op(KILN_OP_PAD), sl = op(KILN_OP_SLICE);
  set_ints(&p, "pads", 2 * ND(X0), pads);
  kiln_tensor *sq = run1(n, &p, 1, (kiln_tensor *[]){un(n, KILN_OP_SQUARE, X0)}), *sum = NULL;
  set_i(&sl, "axis", 1);
  for (int64_t j = 0; j < size; j++) {
    set_i(&sl, "start", j), set_i(&sl, "stop", j + c);
    kiln_tensor *part = run1(n, &sl, 1, &sq);
    sum = sum ? bin(n, KILN_OP_ADD, sum, part) : part;
  }
  kiln_tensor *den =
      scalar_op(n, KILN_OP_ADD_SCALAR, scalar_op(n, KILN_OP_MUL_SCALAR, sum, alpha / (double)size), bias);
  n->out[0] = bin(n, KILN_OP_DIV, X0, scalar_op(n, KILN_OP_POW_SCALAR, den, beta));
  return KILN_OK;
}

/* OneHot(indices, depth, values [off, on]) along axis: off + (on - off) *
 * one_hot, indices below 0 counted from depth. */
static kiln_status h_one_hot(node_ctx *n) {
  int64_t axis;
  double depth_v;
  int count, r = ND(X0) + 1, ax;
  TRY(get_i(n, "axis", -1, &axis));
  TRY(static_scalar(n, 1, &depth_v));
  double v[2];
  TRY(static_values(n, 2, 2, NULL, v, &count));
  if (count != 2) return nfail(n, KILN_ERR_SHAPE, "values must hold [off, on]");
  if (!(depth_v >= 1 && depth_v <= (double)MAX_EXTENT)) return nfail(n, KILN_ERR_UNSUPPORTED, "depth %g", depth_v);
  TRY(normalize_axis(n, "axis", axis, r, &ax));
  int64_t depth = (int64_t)depth_v;
  call cast = op(KILN_OP_CAST), oh = op(KILN_OP_ONE_HOT), back = op(KILN_OP_CAST), perm = op(KILN_OP_PERMUTE);
  set_i(&cast, "dtype", KILN_I64);
  kiln_tensor *idx = run1(n, &cast, 1, &X0);
  idx = where3(n, bin(n, KILN_OP_LESS, idx, scalar_like(idx, 0)), scalar_op(n, KILN_OP_ADD_SCALAR, idx, (double)depth),
               idx);
  set_i(&oh, "depth", depth);
  set_i(&oh, "dtype", KILN_F64);
  kiln_tensor *y = run1(n, &oh, 1, &idx);
  y = scalar_op(n, KILN_OP_ADD_SCALAR, scalar_op(n, KILN_OP_MUL_SCALAR, y, v[1] - v[0]), v[0]);
  set_i(&back, "dtype", kiln_tensor_dtype(n->in[2]));
  y = run1(n, &back, 1, &y);
  if (ax != r - 1) {
    int64_t axes[KILN_MAX_DIMS];
    for (int d = 0, src = 0; d < r; d++) axes[d] = d == ax ? r - 1 : src++;
    set_ints(&perm, "axes", r, axes);
    y = un(n, KILN_OP_COPY, run1(n, &perm, 1, &y));
  }
  n->out[0] = y;
  return KILN_OK;
}

/* GatherND (batch_dims 0): the last dim of indices, k long, indexes x's
 * first k dims; as a take over those dims flattened, at the row-major
 * index sum(i_j * stride_j), negative i_j counted from the end. */
static kiln_status h_gather_nd(node_ctx *n) {
  int64_t batch_dims;
  TRY(get_i(n, "batch_dims", 0, &batch_dims));
  if (batch_dims) return nfail(n, KILN_ERR_UNSUPPORTED, "batch_dims=%lld", (long long)batch_dims);
  kiln_tensor *x = X0, *ind = n->in[1];
  int q = ND(ind), r = ND(x);
  if (q < 1) return nfail(n, KILN_ERR_SHAPE, "indices must have a last dim");
  int64_t k = kiln_tensor_dim(ind, -1);
  if (k < 1 || k > r) return nfail(n, KILN_ERR_SHAPE, "indices' last dim %lld for data of rank %d", (long long)k, r);
  call sl = op(KILN_OP_SLICE), sq = op(KILN_OP_SQUEEZE), cast = op(KILN_OP_CAST), t = op(KILN_OP_TAKE);
  set_i(&sl, "axis", q - 1);
  set_i(&sq, "axis", q - 1);
  set_i(&cast, "dtype", KILN_I64);
  ind = run1(n, &cast, 1, &ind);
  kiln_tensor *flat = NULL;
  int64_t stride = 1, shape[KILN_MAX_DIMS], rows = 1;
  for (int64_t j = k - 1; j >= 0; j--) {
    int64_t dim = kiln_tensor_dim(x, (int)j);
    set_i(&sl, "start", j), set_i(&sl, "stop", j + 1);
    kiln_tensor *ij = run1(n, &sq, 1, (kiln_tensor *[]){run1(n, &sl, 1, &ind)});
    ij = where3(n, bin(n, KILN_OP_LESS, ij, scalar_like(ij, 0)), scalar_op(n, KILN_OP_ADD_SCALAR, ij, (double)dim), ij);
    /* An index out of [0, dim) must fail, not wrap into another row. */
    kiln_tensor *bad = bin(n, KILN_OP_LOGICAL_OR, bin(n, KILN_OP_LESS, ij, scalar_like(ij, 0)),
                           bin(n, KILN_OP_GREATER_EQUAL, ij, scalar_like(ij, (double)dim)));
    ij = where3(n, bad, scalar_like(ij, -(double)INT32_MAX), ij);
    kiln_tensor *term = stride == 1 ? ij : scalar_op(n, KILN_OP_MUL_SCALAR, ij, (double)stride);
    flat = flat ? bin(n, KILN_OP_ADD, flat, term) : term;
    stride *= dim, rows *= dim;
  }
  shape[0] = rows;
  for (int d = (int)k; d < r; d++) shape[d - k + 1] = kiln_tensor_dim(x, d);
  set_i(&t, "axis", 0);
  n->out[0] = run1(n, &t, 2, (kiln_tensor *[]){reshape(n, x, r - (int)k + 1, shape), flat});
  return KILN_OK;
}

/* ---------------------------------------------------------------- resizing */

/* Resize and Upsample are separable: along each axis whose size changes,
 * output o reads taps of the input near x = transform(o), weighted by the
 * mode's coefficients, as ONNX's reference computes them (the taps left of
 * x first, x itself counting as left; taps past the ends clamped, which is
 * the reference's edge padding). Indices and coefficients are computed here
 * in double and become constants; the graph gathers with take and sums. */
typedef enum { RESIZE_NEAREST, RESIZE_LINEAR, RESIZE_CUBIC } resize_mode;

typedef struct {
  resize_mode mode;
  int transform; /* 0 half_pixel, 1 asymmetric, 2 align_corners, 3 pytorch_half_pixel, 4 tf_half_pixel_for_nn */
  int nearest;   /* 0 round_prefer_floor, 1 round_prefer_ceil, 2 floor, 3 ceil */
  double cubic_a;
  bool exclude_outside;
} resize_opts;

static double resize_source(const resize_opts *o, int64_t x, double scale, int64_t in) {
  double out_width = scale * (double)in;
  switch (o->transform) {
  case 1:
    return (double)x / scale;
  case 2:
    return out_width == 1 ? 0 : (double)x * (double)(in - 1) / (out_width - 1);
  case 3:
    return out_width == 1 ? -0.5 : ((double)x + 0.5) / scale - 0.5;
  case 4:
    return ((double)x + 0.5) / scale;
  default:
    return ((double)x + 0.5) / scale - 0.5;
  }
}

/* The taps of output x: n indices (clamped) and coefficients. */
static int resize_taps(const resize_opts *o, int64_t x, double scale, int64_t in, int64_t *idx, double *coef) {
  double src = resize_source(o, x, scale, in);
  double lower = ceil(src) - 1, r = src - lower; /* r in (0, 1] */
  int n = o->mode == RESIZE_CUBIC ? 4 : 2;
  int64_t first = (int64_t)lower - (n == 4);
  if (o->mode == RESIZE_NEAREST) {
    bool right = r == 1 || (o->nearest == 0 ? r > 0.5 : o->nearest == 1 ? r >= 0.5 : o->nearest == 3);
    coef[0] = !right, coef[1] = right;
  } else if (o->mode == RESIZE_LINEAR) {
    coef[0] = 1 - r, coef[1] = r;
  } else {
    double a = o->cubic_a, s = 1 - r;
    coef[0] = ((a * (r + 1) - 5 * a) * (r + 1) + 8 * a) * (r + 1) - 4 * a;
    coef[1] = ((a + 2) * r - (a + 3)) * r * r + 1;
    coef[2] = ((a + 2) * s - (a + 3)) * s * s + 1;
    coef[3] = ((a * (s + 1) - 5 * a) * (s + 1) + 8 * a) * (s + 1) - 4 * a;
  }
  double sum = 0;
  for (int j = 0; j < n; j++) {
    int64_t i = first + j;
    if (o->exclude_outside && (i < 0 || i >= in)) coef[j] = 0;
    sum += coef[j];
    idx[j] = i < 0 ? 0 : i >= in ? in - 1 : i;
  }
  if (o->exclude_outside && sum != 0)
    for (int j = 0; j < n; j++) coef[j] /= sum;
  return n;
}

static kiln_tensor *resize_axis(node_ctx *n, kiln_tensor *x, int axis, int64_t out, double scale,
                                const resize_opts *o) {
  int64_t in = kiln_tensor_dim(x, axis), *idx = kiln_alloc((size_t)out * 4 * sizeof(int64_t) + 1);
  double *coef = kiln_alloc((size_t)out * 4 * sizeof(double) + 1);
  if (!idx || !coef) {
    kiln_free(idx), kiln_free(coef);
    return kiln_failed(KILN_ERR_OUT_OF_MEMORY, "out of memory for a resize of %lld", (long long)out);
  }
  int taps = 2;
  for (int64_t i = 0; i < out; i++) {
    int64_t ti[4];
    double tc[4];
    taps = resize_taps(o, i, scale, in, ti, tc);
    for (int j = 0; j < taps; j++) idx[j * out + i] = ti[j], coef[j * out + i] = tc[j];
  }
  /* Coefficients shaped [out, 1, ...] to broadcast along the later axes. */
  int64_t cshape[KILN_MAX_DIMS];
  int cr = ND(x) - axis;
  cshape[0] = out;
  for (int d = 1; d < cr; d++) cshape[d] = 1;
  call t = op(KILN_OP_TAKE), cast = op(KILN_OP_CAST);
  set_i(&t, "axis", axis);
  set_i(&cast, "dtype", kiln_tensor_dtype(x));
  kiln_tensor *y = NULL;
  for (int j = 0; j < taps; j++) {
    kiln_tensor *ij = kiln_from_data(KILN_I64, 1, &out, idx + j * out);
    kiln_tensor *g = run1(n, &t, 2, (kiln_tensor *[]){x, ij});
    if (o->mode == RESIZE_NEAREST) {
      /* One tap has coefficient 1: take it, exactly. */
      bool all_left = true, all_right = true;
      for (int64_t i = 0; i < out; i++)
        all_left = all_left && coef[i] == 1, all_right = all_right && coef[out + i] == 1;
      if ((j == 0 && !all_left) || (j == 1 && !all_right)) continue;
      y = g;
      break;
    }
    kiln_tensor *cj = run1(n, &cast, 1, (kiln_tensor *[]){kiln_from_data(KILN_F64, cr, cshape, coef + j * out)});
    kiln_tensor *term = bin(n, KILN_OP_MUL, g, cj);
    y = y ? bin(n, KILN_OP_ADD, y, term) : term;
  }
  if (!y) { /* nearest picking left for some outputs, right for others */
    for (int64_t i = 0; i < out; i++) idx[i] = coef[i] == 1 ? idx[i] : idx[out + i];
    y = run1(n, &t, 2, (kiln_tensor *[]){x, kiln_from_data(KILN_I64, 1, &out, idx)});
  }
  kiln_free(idx), kiln_free(coef);
  return y;
}

static kiln_status h_resize(node_ctx *n) {
  const char *t = n->node->op_type;
  bool upsample = strcmp(t, "Upsample") == 0;
  int r = ND(X0), k = 0;
  resize_opts o = {.cubic_a = -0.75};
  static const char *const modes[] = {"nearest", "linear", "cubic", "bilinear", NULL};
  TRY(check_string(n, "mode", modes));
  o.mode = string_is(n, "mode", "linear") || string_is(n, "mode", "bilinear") ? RESIZE_LINEAR
           : string_is(n, "mode", "cubic")                                    ? RESIZE_CUBIC
                                                                              : RESIZE_NEAREST;
  static const char *const transforms[] = {"half_pixel",         "asymmetric",           "align_corners",
                                           "pytorch_half_pixel", "tf_half_pixel_for_nn", NULL};
  static const char *const nearest[] = {"round_prefer_floor", "round_prefer_ceil", "floor", "ceil", NULL};
  TRY(check_string(n, "coordinate_transformation_mode", transforms));
  TRY(check_string(n, "nearest_mode", nearest));
  for (int i = 0; transforms[i]; i++)
    if (string_is(n, "coordinate_transformation_mode", transforms[i])) o.transform = i;
  for (int i = 0; nearest[i]; i++)
    if (string_is(n, "nearest_mode", nearest[i])) o.nearest = i;
  /* Before opset 11 (and in Upsample) the source is x / scale, floored. */
  if (upsample || n->im->opset < 11) o.transform = 1, o.nearest = 2;
  int64_t excl;
  TRY(get_f(n, "cubic_coeff_a", -0.75, &o.cubic_a));
  TRY(get_i(n, "exclude_outside", 0, &excl));
  o.exclude_outside = excl != 0;
  double scales[KILN_MAX_DIMS];
  int64_t sizes[KILN_MAX_DIMS], out[KILN_MAX_DIMS];
  int scales_at = upsample || n->im->opset < 11 ? 1 : 2, sizes_at = 3;
  if (upsample && n->im->opset < 9) {
    float fs[KILN_MAX_DIMS];
    const Onnx__AttributeProto *a = attr(n, "scales");
    if (!a || a->n_floats != (size_t)r) return nfail(n, KILN_ERR_CORRUPT, "attribute 'scales' needs %d values", r);
    for (int d = 0; d < r; d++) fs[d] = a->floats[d], scales[d] = fs[d];
    k = r;
  } else if (n->n_in > sizes_at && n->in[sizes_at]) {
    TRY(static_values(n, sizes_at, KILN_MAX_DIMS, sizes, NULL, &k));
    if (k != r) return nfail(n, KILN_ERR_SHAPE, "sizes has %d values for rank %d", k, r);
    for (int d = 0; d < r; d++) scales[d] = (double)sizes[d] / (double)kiln_tensor_dim(X0, d);
  } else {
    if (n->n_in <= scales_at || !n->in[scales_at]) return nfail(n, KILN_ERR_CORRUPT, "neither scales nor sizes");
    TRY(static_values(n, scales_at, KILN_MAX_DIMS, NULL, scales, &k));
    if (k != r) return nfail(n, KILN_ERR_SHAPE, "scales has %d values for rank %d", k, r);
    /* The reference computes in float32's scale. */
    for (int d = 0; d < r; d++) scales[d] = (float)scales[d];
  }
  bool by_size = n->n_in > sizes_at && n->in[sizes_at];
  for (int d = 0; d < r; d++) {
    if (!(scales[d] > 0) || scales[d] > 1e6) return nfail(n, KILN_ERR_UNSUPPORTED, "scale %g", scales[d]);
    double o_d = by_size ? (double)sizes[d] : floor((double)kiln_tensor_dim(X0, d) * scales[d]);
    if (!(o_d >= 1 && o_d <= (double)MAX_EXTENT)) return nfail(n, KILN_ERR_UNSUPPORTED, "an output dim of %g", o_d);
    out[d] = (int64_t)o_d;
  }
  if (n->im->any_unknown) return nfail(n, KILN_ERR_UNSUPPORTED, "Resize on a model with unknown input dims");
  kiln_tensor *y = X0;
  for (int d = 0; d < r; d++)
    if (out[d] != kiln_tensor_dim(X0, d) || scales[d] != 1) y = resize_axis(n, y, d, out[d], scales[d], &o);
  n->out[0] = y == X0 ? un(n, KILN_OP_COPY, y) : y;
  return KILN_OK;
}

/* ---------------------------------------------------------------- the table */

typedef struct {
  const char *op_type;
  handler fn;
  int min_in, max_in, max_out;
  const char *attrs; /* the attributes the handler reads, space-separated */
} op_entry;

#define UNARY(name)                                                                                                    \
  { name, h_unary, 1, 1, 1, "" }
#define BINARY(name)                                                                                                   \
  { name, h_binary, 2, 2, 1, "broadcast axis" }
#define VARIADIC(name)                                                                                                 \
  { name, h_binary, 1, MAX_VALUES, 1, "" }
#define REDUCE(name)                                                                                                   \
  { name, h_reduce, 1, 2, 1, "axes keepdims noop_with_empty_axes" }
static const op_entry ops[] = {
    UNARY("Relu"),
    UNARY("Sigmoid"),
    UNARY("Tanh"),
    UNARY("Exp"),
    UNARY("Log"),
    UNARY("Sqrt"),
    UNARY("Abs"),
    UNARY("Neg"),
    UNARY("Floor"),
    UNARY("Ceil"),
    UNARY("Erf"),
    UNARY("Sin"),
    UNARY("Cos"),
    UNARY("Sign"),
    UNARY("Round"),
    UNARY("Softplus"),
    UNARY("Not"),
    BINARY("Add"),
    BINARY("Sub"),
    BINARY("Mul"),
    BINARY("Div"),
    BINARY("Equal"),
    BINARY("Less"),
    BINARY("Greater"),
    BINARY("LessOrEqual"),
    BINARY("GreaterOrEqual"),
    BINARY("And"),
    BINARY("Or"),
    BINARY("Xor"),
    VARIADIC("Max"),
    VARIADIC("Min"),
    VARIADIC("Sum"),
    VARIADIC("Mean"),
    {"Pow", h_pow, 2, 2, 1, "broadcast axis"},
    {"Where", h_where, 3, 3, 1, ""},
    {"Identity", h_identity, 1, 1, 1, ""},
    {"Reciprocal", h_reciprocal, 1, 1, 1, ""},
    {"LeakyRelu", h_leaky_relu, 1, 1, 1, "alpha"},
    {"Elu", h_elu, 1, 1, 1, "alpha"},
    {"Selu", h_elu, 1, 1, 1, "alpha gamma"},
    {"Celu", h_celu, 1, 1, 1, "alpha"},
    {"ThresholdedRelu", h_thresholded_relu, 1, 1, 1, "alpha"},
    {"HardSigmoid", h_hard_sigmoid, 1, 1, 1, "alpha beta"},
    {"HardSwish", h_hard_swish, 1, 1, 1, ""},
    {"Softsign", h_softsign, 1, 1, 1, ""},
    {"PRelu", h_prelu, 2, 2, 1, ""},
    {"IsNaN", h_isnan, 1, 1, 1, ""},
    {"IsInf", h_isinf, 1, 1, 1, "detect_negative detect_positive"},
    {"Clip", h_clip, 1, 3, 1, "min max"},
    {"MatMul", h_matmul, 2, 2, 1, ""},
    {"Gemm", h_gemm, 2, 3, 1, "alpha beta broadcast transA transB"},
    {"Softmax", h_softmax, 1, 1, 1, "axis"},
    {"LogSoftmax", h_softmax, 1, 1, 1, "axis"},
    {"Conv", h_conv, 2, 3, 1, "auto_pad dilations group kernel_shape pads strides"},
    {"ConvTranspose", h_conv_transpose, 2, 3, 1,
     "auto_pad dilations group kernel_shape output_padding output_shape pads strides"},
    {"MaxPool", h_pool, 1, 1, 2, "auto_pad ceil_mode dilations kernel_shape pads storage_order strides"},
    {"AveragePool", h_pool, 1, 1, 1, "auto_pad ceil_mode count_include_pad kernel_shape pads strides"},
    {"GlobalAveragePool", h_global_pool, 1, 1, 1, ""},
    {"GlobalMaxPool", h_global_pool, 1, 1, 1, ""},
    {"BatchNormalization", h_batch_norm, 5, 5, 3, "consumed_inputs epsilon is_test momentum spatial training_mode"},
    {"LayerNormalization", h_layer_norm, 2, 3, 3, "axis epsilon stash_type"},
    {"InstanceNormalization", h_instance_norm, 3, 3, 1, "epsilon"},
    {"NegativeLogLikelihoodLoss", h_nll, 2, 3, 1, "ignore_index reduction"},
    {"SoftmaxCrossEntropyLoss", h_softmax_cross_entropy, 2, 3, 2, "ignore_index reduction"},
    {"Tan", h_trig, 1, 1, 1, ""},
    {"Sinh", h_trig, 1, 1, 1, ""},
    {"Cosh", h_trig, 1, 1, 1, ""},
    {"Asinh", h_trig, 1, 1, 1, ""},
    {"Acosh", h_trig, 1, 1, 1, ""},
    {"Atanh", h_trig, 1, 1, 1, ""},
    {"Shrink", h_shrink, 1, 1, 1, "bias lambd"},
    {"Trilu", h_trilu, 1, 2, 1, "upper"},
    {"EyeLike", h_eye_like, 1, 1, 1, "dtype k"},
    {"Hardmax", h_hardmax, 1, 1, 1, "axis"},
    {"DepthToSpace", h_depth_space, 1, 1, 1, "blocksize mode"},
    {"SpaceToDepth", h_depth_space, 1, 1, 1, "blocksize"},
    {"Flatten", h_flatten, 1, 1, 1, "axis"},
    {"Reshape", h_reshape, 1, 2, 1, "shape allowzero"},
    {"Transpose", h_transpose, 1, 1, 1, "perm"},
    {"Concat", h_concat, 1, MAX_VALUES, 1, "axis"},
    {"Split", h_split, 1, 2, MAX_VALUES, "axis split"},
    {"Gather", h_gather, 2, 2, 1, "axis"},
    {"GatherElements", h_gather, 2, 2, 1, "axis"},
    {"Squeeze", h_squeeze, 1, 2, 1, "axes"},
    {"Unsqueeze", h_unsqueeze, 1, 2, 1, "axes"},
    {"Slice", h_slice, 1, 5, 1, "starts ends axes"},
    {"Expand", h_expand, 2, 2, 1, ""},
    {"Tile", h_tile, 2, 2, 1, ""},
    {"CumSum", h_cumsum, 2, 2, 1, "exclusive reverse"},
    {"MeanVarianceNormalization", h_mvn, 1, 1, 1, "axes"},
    {"LRN", h_lrn, 1, 1, 1, "alpha beta bias size"},
    {"OneHot", h_one_hot, 3, 3, 1, "axis"},
    {"GatherND", h_gather_nd, 2, 2, 1, "batch_dims"},
    {"Resize", h_resize, 1, 4, 1, "coordinate_transformation_mode cubic_coeff_a exclude_outside mode nearest_mode"},
    {"Upsample", h_resize, 1, 2, 1, "mode scales"},
    {"Mod", h_mod, 2, 2, 1, "fmod"},
    {"Pad", h_pad, 1, 3, 1, "mode pads value"},
    REDUCE("ReduceSum"),
    REDUCE("ReduceMean"),
    REDUCE("ReduceMax"),
    REDUCE("ReduceMin"),
    REDUCE("ReduceProd"),
    REDUCE("ReduceLogSumExp"),
    REDUCE("ReduceSumSquare"),
    REDUCE("ReduceL1"),
    REDUCE("ReduceL2"),
    REDUCE("ReduceLogSum"),
    {"ArgMax", h_arg, 1, 1, 1, "axis keepdims select_last_index"},
    {"ArgMin", h_arg, 1, 1, 1, "axis keepdims select_last_index"},
    {"Cast", h_cast, 1, 1, 1, "to"},
    {"CastLike", h_cast, 2, 2, 1, ""},
    {"Constant", h_constant, 0, 0, 1, "value value_float value_floats value_int value_ints"},
    {"ConstantOfShape", h_constant_of_shape, 1, 1, 1, "value"},
    {"Shape", h_shape, 1, 1, 1, "start end"},
    {"Size", h_size, 1, 1, 1, ""},
    {"Range", h_range, 3, 3, 1, ""},
    {"Dropout", h_dropout, 1, 3, 2, "ratio seed is_test"},
};

static const op_entry *find_op(const char *op_type) {
  for (size_t i = 0; i < sizeof ops / sizeof ops[0]; i++)
    if (strcmp(ops[i].op_type, op_type) == 0) return &ops[i];
  return NULL;
}

static bool listed(const char *list, const char *name) {
  size_t len = strlen(name);
  if (!len) return false;
  for (const char *p = list; (p = strstr(p, name)) != NULL; p += len)
    if ((p == list || p[-1] == ' ') && (p[len] == ' ' || p[len] == '\0')) return true;
  return false;
}

/* ================================================================ the graph */

static kiln_status import_node(importer *im, size_t i, const Onnx__NodeProto *node) {
  node_ctx *n = kiln_calloc(1, sizeof(node_ctx));
  if (!n) return failf(im, KILN_ERR_OUT_OF_MEMORY, "out of memory");
  char nm[KILN_PRINTABLE_MAX], ty[KILN_PRINTABLE_MAX];
  n->im = im, n->node = node, n->index = i;
  snprintf(n->where, sizeof n->where, "node %zu ('%s', %s)", i, printable(nm, node->name),
           printable(ty, node->op_type));
  kiln_status st = KILN_OK;
  const op_entry *e = NULL;
  if (node->domain && *node->domain && strcmp(node->domain, "ai.onnx") != 0)
    st = nfail(n, KILN_ERR_UNSUPPORTED, "op domain '%s' (kiln reads the default domain)", printable(nm, node->domain));
  else if (!(e = find_op(str(node->op_type))))
    st = nfail(n, KILN_ERR_UNSUPPORTED, "op %s is not one kiln imports", printable(nm, node->op_type));
  else if (node->n_input < (size_t)e->min_in || node->n_input > (size_t)e->max_in)
    st = e->min_in == e->max_in
             ? nfail(n, KILN_ERR_CORRUPT, "%zu inputs (%s takes %d)", node->n_input, e->op_type, e->min_in)
             : nfail(n, KILN_ERR_CORRUPT, "%zu inputs (%s takes %d to %d)", node->n_input, e->op_type, e->min_in,
                     e->max_in);
  else if (node->n_output < 1 || node->n_output > (size_t)e->max_out)
    st = nfail(n, KILN_ERR_UNSUPPORTED, "%zu outputs (kiln maps %d)", node->n_output, e->max_out);
  for (size_t a = 0; st == KILN_OK && a < node->n_attribute; a++)
    if (!listed(e->attrs, str(node->attribute[a]->name)))
      st = nfail(n, KILN_ERR_UNSUPPORTED, "attribute '%s' is not supported", printable(nm, node->attribute[a]->name));
  n->n_in = (int)node->n_input;
  n->n_out = (int)node->n_output;
  for (int k = 0; k < n->n_in && st == KILN_OK; k++) {
    const char *name = str(node->input[k]);
    if (!*name) continue; /* an omitted optional input */
    named_value *v = slot(im, name);
    n->in[k] = v->t;
    n->in_sx[k] = v->sx;
    if (!n->in[k])
      st = nfail(n, KILN_ERR_CORRUPT,
                 "input %d ('%s') is not defined before the node (nodes must be in topological order)", k,
                 printable(nm, name));
    else if (v->sx && !takes_shape_expr(e->op_type, k))
      st = nfail(n, KILN_ERR_UNSUPPORTED,
                 "input %d ('%s') is a shape of a value with unknown dims, known only at run time: kiln follows it "
                 "through Gather, Unsqueeze, Squeeze, Concat, Cast and Identity into a Reshape's shape, and "
                 "nowhere else (folding it would fix the unknown dims at the size the graph is built with)",
                 k, printable(nm, name));
  }
  if (st == KILN_OK)
    for (int k = 0; k < n->n_in; k++)
      if (!n->in[k] && (k < e->min_in || e->max_in == MAX_VALUES))
        st = nfail(n, KILN_ERR_CORRUPT, "input %d is empty, and %s needs it", k, e->op_type);
  if (st == KILN_OK) st = e->fn(n);
  bool any_sx = false;
  for (int k = 0; k < n->n_in; k++) any_sx = any_sx || n->in_sx[k];
  if (st == KILN_OK && any_sx && strcmp(e->op_type, "Reshape") != 0) st = follow_shape_expr(n);
  for (int k = 0; k < n->n_out && st == KILN_OK; k++) {
    const char *name = str(node->output[k]);
    if (!*name) continue;
    kiln_tensor *t = n->out[k];
    if (!t) {
      st = nfail(n, KILN_ERR_UNSUPPORTED, "output %d", k);
    } else if (kiln_tensor_status(t) != KILN_OK) {
      kiln_status ts = kiln_tensor_status(t);
      /* An op that lacks the dtype is a limit of kiln's, not a bad file. */
      st = nfail(n, ts == KILN_ERR_DTYPE ? KILN_ERR_UNSUPPORTED : ts, "%s", kiln_tensor_error(t));
    } else if (!define(im, name, t)) {
      st = nfail(n, KILN_ERR_CORRUPT, "output '%s' is defined twice", printable(nm, name));
    } else if (k == 0) {
      slot(im, name)->sx = n->out_sx;
      n->out_sx = NULL;
    }
  }
  kiln_free(n->out_sx);
  if (st == KILN_OK && im->max_value_bytes > 0 && im->value_bytes > im->max_value_bytes)
    st = nfail(n, KILN_ERR_UNSUPPORTED, "the model's values take more than the limit of %lld bytes",
               (long long)im->max_value_bytes);
  kiln_free(n);
  return st;
}

/* A graph input's type: a tensor of a kiln dtype and a known rank. */
static kiln_status input_decl(importer *im, size_t i, const Onnx__ValueInfoProto *vi, kiln_model_value *d,
                              int64_t *shape) {
  char nm[KILN_PRINTABLE_MAX];
  const char *name = printable(nm, vi->name);
  const Onnx__TypeProto *tp = vi->type;
  if (!tp || tp->value_case != ONNX__TYPE_PROTO__VALUE_TENSOR_TYPE || !tp->tensor_type)
    return failf(im, KILN_ERR_UNSUPPORTED, "graph input %zu ('%s') is not a tensor", i, name);
  const Onnx__TypeProto__Tensor *tt = tp->tensor_type;
  if (!tt->has_elem_type || !dtype_of(tt->elem_type, &d->dtype))
    return failf(im, KILN_ERR_UNSUPPORTED, "graph input %zu ('%s'): element type %d (%s) is not one kiln has", i, name,
                 (int)tt->elem_type, onnx_type_name(tt->elem_type));
  if (!tt->shape)
    return failf(im, KILN_ERR_UNSUPPORTED, "graph input %zu ('%s') has no shape (kiln needs the rank)", i, name);
  if (tt->shape->n_dim > KILN_MAX_DIMS)
    return failf(im, KILN_ERR_UNSUPPORTED, "graph input %zu ('%s') has %zu dims (kiln has at most %d)", i, name,
                 tt->shape->n_dim, KILN_MAX_DIMS);
  d->ndim = (int)tt->shape->n_dim;
  for (int k = 0; k < d->ndim; k++) {
    const Onnx__TensorShapeProto__Dimension *dim = tt->shape->dim[k];
    bool known = dim->value_case == ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_VALUE;
    shape[k] = known ? dim->dim_value : -1;
    if (known && shape[k] < 0)
      return failf(im, KILN_ERR_CORRUPT, "graph input %zu ('%s'): dim %d is %lld", i, name, k, (long long)shape[k]);
    im->any_unknown = im->any_unknown || !known;
  }
  d->shape = shape;
  return KILN_OK;
}

static kiln_status import_graph(importer *im, const Onnx__ModelProto *mp) {
  const Onnx__GraphProto *g = mp->graph;
  if (!g) return failf(im, KILN_ERR_CORRUPT, "the model has no graph");
  if (g->n_sparse_initializer) return failf(im, KILN_ERR_UNSUPPORTED, "sparse initializers");
  if (g->n_output < 1 || g->n_output > MAX_VALUES)
    return failf(im, KILN_ERR_UNSUPPORTED, "%zu graph outputs (kiln runs 1 to %d)", g->n_output, MAX_VALUES);
  size_t n_values = g->n_input + g->n_initializer;
  for (size_t i = 0; i < g->n_node; i++) n_values += g->node[i]->n_output;
  im->cap = 16;
  while (im->cap < 2 * n_values + 1) im->cap *= 2;
  im->values = kiln_calloc(im->cap, sizeof(named_value));
  im->inputs = kiln_calloc(g->n_input + 1, sizeof(kiln_tensor *));
  im->input_index = kiln_calloc(g->n_input + 1, sizeof(int));
  kiln_model_value *decls = kiln_calloc(g->n_input + 1, sizeof(kiln_model_value));
  int64_t(*shapes)[KILN_MAX_DIMS] = kiln_calloc(g->n_input + 1, sizeof *shapes);
  kiln_tensor *outs[MAX_VALUES];
  const char *out_names[MAX_VALUES];
  int n_outs = 0;
  kiln_status st = im->values && im->inputs && im->input_index && decls && shapes
                       ? KILN_OK
                       : failf(im, KILN_ERR_OUT_OF_MEMORY, "out of memory for %zu values", n_values);
  char nm[KILN_PRINTABLE_MAX];
  /* Initializers first: a graph input of the same name is its default,
   * which kiln takes as a constant. Options' constants override both. */
  int64_t budget = im->max_value_bytes > 0 ? im->max_value_bytes : -1;
  for (size_t i = 0; i < g->n_initializer && st == KILN_OK; i++) {
    const Onnx__TensorProto *tp = g->initializer[i];
    char msg[256];
    kiln_tensor *t = NULL;
    if (!tp->name || !*tp->name) {
      st = failf(im, KILN_ERR_CORRUPT, "initializer %zu has no name", i);
      break;
    }
    if ((st = tensor_of_proto(tp, &budget, &t, msg, sizeof msg)) != KILN_OK) {
      st = failf(im, st, "initializer %zu ('%s'): %s", i, printable(nm, tp->name), msg);
      break;
    }
    if (!define(im, tp->name, t))
      st = failf(im, KILN_ERR_CORRUPT, "initializer '%s' is defined twice", printable(nm, tp->name));
    im->parameters++;
    im->parameter_elements += kiln_tensor_numel(t);
    im->parameter_bytes += kiln_tensor_numel(t) * (int64_t)kiln_dtype_size(kiln_tensor_dtype(t));
  }
  im->value_bytes = im->parameter_bytes;
  int position = 0; /* among the graph inputs that are not initializers */
  for (size_t i = 0; i < g->n_input && st == KILN_OK; i++) {
    const Onnx__ValueInfoProto *vi = g->input[i];
    if (!vi->name || !*vi->name) {
      st = failf(im, KILN_ERR_CORRUPT, "graph input %zu has no name", i);
      break;
    }
    kiln_tensor *known = lookup(im, vi->name);
    for (int k = 0; known && k < im->n_inputs; k++)
      if (im->inputs[k] == known)
        st = failf(im, KILN_ERR_CORRUPT, "graph input '%s' is declared twice", printable(nm, vi->name));
    if (known) continue; /* an initializer gives it a default: kiln takes it as a constant */
    const kiln_onnx_options *o = im->opt;
    kiln_tensor *c = NULL;
    for (int k = 0; o && k < o->n_constants; k++)
      if (o->constant_inputs[k] == position) c = o->constant_values[k];
    position++;
    if (c) {
      if (!define(im, vi->name, c)) st = failf(im, KILN_ERR_INTERNAL, "constant '%s' twice", printable(nm, vi->name));
      continue;
    }
    kiln_model_value *d = &decls[im->n_inputs];
    if ((st = input_decl(im, i, vi, d, shapes[im->n_inputs])) != KILN_OK) break;
    d->name = vi->name;
    kiln_tensor *t = kiln_graph_input(im->graph, vi->name, d->dtype, d->ndim, d->shape);
    if (kiln_tensor_failed(t)) {
      st = failf(im, kiln_tensor_status(t), "graph input %zu ('%s'): %s", i, printable(nm, vi->name),
                 kiln_tensor_error(t));
      break;
    }
    int64_t b = kiln_tensor_numel(t) * (int64_t)kiln_dtype_size(d->dtype);
    im->value_bytes = b > INT64_MAX - im->value_bytes ? INT64_MAX : im->value_bytes + b;
    if (im->max_value_bytes > 0 && im->value_bytes > im->max_value_bytes)
      st = failf(im, KILN_ERR_UNSUPPORTED, "the model's values take more than the limit of %lld bytes",
                 (long long)im->max_value_bytes);
    im->inputs[im->n_inputs] = t;
    im->input_index[im->n_inputs++] = position - 1;
    define(im, vi->name, t);
  }
  for (size_t i = 0; i < g->n_node && st == KILN_OK; i++) st = import_node(im, i, g->node[i]);
  for (size_t k = 0; k < g->n_output && st == KILN_OK; k++) {
    const char *name = str(g->output[k]->name);
    kiln_tensor *t = lookup(im, name);
    if (!t) {
      st = failf(im, KILN_ERR_CORRUPT, "graph output %zu ('%s') is not defined", k, printable(nm, name));
      break;
    }
    if (slot(im, name)->sx) {
      st = failf(im, KILN_ERR_UNSUPPORTED,
                 "graph output %zu ('%s') is a shape of a value with unknown dims, known only at run time (kiln "
                 "follows such shapes only into a Reshape)",
                 k, printable(nm, name));
      break;
    }
    /* A value known at import is still an output the plan computes: a copy
     * of it, made inside the graph. */
    if (!symbolic(t)) {
      if (graph_trace_begin(im->graph) != KILN_OK) {
        st = failf(im, KILN_ERR_INVALID_ARGUMENT, "cannot load a model while a trace is active on this thread");
        break;
      }
      t = kiln_copy(t);
      graph_trace_end();
      if (kiln_tensor_failed(t)) {
        st = failf(im, kiln_tensor_status(t), "graph output %zu: %s", k, kiln_tensor_error(t));
        break;
      }
    }
    outs[n_outs] = t;
    out_names[n_outs++] = name;
  }
  if (st == KILN_OK) {
    model_parts parts = {.fn = im->fn,
                         .path = im->path,
                         .graph = im->graph,
                         .n_inputs = im->n_inputs,
                         .inputs = decls,
                         .n_outputs = n_outs,
                         .outputs = outs,
                         .output_names = out_names,
                         .op_count = im->op_count,
                         .flops = im->flops,
                         .parameters = im->parameters,
                         .parameter_elements = im->parameter_elements,
                         .parameter_bytes = im->parameter_bytes};
    st = model_from_graph(&parts, im->model);
  }
  kiln_free(decls);
  kiln_free(shapes);
  return st;
}

static kiln_status opset_of(importer *im, const Onnx__ModelProto *mp) {
  im->opset = -1;
  for (size_t i = 0; i < mp->n_opset_import; i++) {
    const Onnx__OperatorSetIdProto *o = mp->opset_import[i];
    if (!o->domain || !*o->domain || strcmp(o->domain, "ai.onnx") == 0) im->opset = o->has_version ? o->version : -1;
  }
  if (im->opset < 0) return failf(im, KILN_ERR_UNSUPPORTED, "the model imports no default-domain opset");
  if (im->opset < MIN_OPSET || im->opset > MAX_OPSET)
    return failf(im, KILN_ERR_UNSUPPORTED, "default-domain opset %lld (kiln reads %d to %d)", (long long)im->opset,
                 MIN_OPSET, MAX_OPSET);
  return KILN_OK;
}

kiln_status onnx_load_memory(const void *data, size_t len, const char *name, const kiln_onnx_options *options,
                             int64_t max_value_bytes, kiln_model **out) {
  importer im = {.fn = "kiln_onnx_load",
                 .path = name ? name : "(memory)",
                 .opt = options,
                 .max_value_bytes = max_value_bytes,
                 .model = out};
  if (!out) return kiln_errorf(KILN_ERR_INVALID_ARGUMENT, "%s: out is NULL", im.fn);
  *out = NULL;
  if (options && options->needed_input) *options->needed_input = -1;
  if (!data && len) return kiln_errorf(KILN_ERR_INVALID_ARGUMENT, "%s: data is NULL", im.fn);
  for (int c = 0; options && c < options->n_constants; c++)
    if (!options->constant_inputs || !options->constant_values || !options->constant_values[c] ||
        kiln_tensor_failed(options->constant_values[c]))
      return kiln_errorf(KILN_ERR_INVALID_ARGUMENT, "%s: constant %d is NULL or failed", im.fn, c);
  if (graph_tracing())
    return failf(&im, KILN_ERR_INVALID_ARGUMENT, "cannot load a model while a trace is active on this thread");
  const uint8_t *p = data;
  if (!nesting_ok(p, p + len, &onnx__model_proto__descriptor, 0))
    return failf(&im, KILN_ERR_UNSUPPORTED, "messages nest more than %d deep", MAX_NESTING);
  Onnx__ModelProto *mp = onnx__model_proto__unpack(&pb_allocator, len, p);
  if (!mp) return failf(&im, KILN_ERR_CORRUPT, "not an ONNX model (the protobuf does not parse as a ModelProto)");
  kiln_status st = opset_of(&im, mp);
  if (st == KILN_OK) {
    im.graph = kiln_graph_new();
    if (!im.graph) st = failf(&im, KILN_ERR_OUT_OF_MEMORY, "out of memory");
  }
  if (st == KILN_OK) {
    kiln_scope_begin();
    st = import_graph(&im, mp);
    for (size_t i = 0; i < im.cap; i++) {
      kiln_tensor_release(im.values[i].t);
      kiln_free(im.values[i].sx);
    }
    kiln_scope_end();
  }
  kiln_free(im.values);
  kiln_free(im.inputs);
  kiln_free(im.input_index);
  kiln_graph_release(im.graph);
  onnx__model_proto__free_unpacked(mp, &pb_allocator);
  return st;
}

static kiln_status read_whole(const char *fn, const char *path, uint8_t **data, size_t *len) {
  *data = NULL;
  FILE *f = fopen(path, "rb");
  if (!f) return kiln_errorf(KILN_ERR_IO, "%s: %s: cannot open: %s", fn, path, strerror(errno));
  struct stat sb;
  kiln_status st = KILN_OK;
  if (fstat(fileno(f), &sb) != 0 || !S_ISREG(sb.st_mode)) {
    st = kiln_errorf(KILN_ERR_IO, "%s: %s: not a regular file", fn, path);
  } else {
    *len = (size_t)sb.st_size;
    if (!(*data = kiln_alloc(*len + 1)))
      st = kiln_errorf(KILN_ERR_OUT_OF_MEMORY, "%s: %s: out of memory for %zu bytes", fn, path, *len);
    else if (fread(*data, 1, *len, f) != *len)
      st = kiln_errorf(KILN_ERR_IO, "%s: %s: read error", fn, path);
  }
  fclose(f);
  if (st != KILN_OK) {
    kiln_free(*data);
    *data = NULL;
  }
  return st;
}

kiln_status onnx_load_file(const char *path, const kiln_onnx_options *options, kiln_model **out) {
  if (!out) return kiln_errorf(KILN_ERR_INVALID_ARGUMENT, "kiln_onnx_load: out is NULL");
  *out = NULL;
  if (!path || !*path) return kiln_errorf(KILN_ERR_INVALID_ARGUMENT, "kiln_onnx_load: path is NULL or empty");
  uint8_t *data;
  size_t len = 0;
  kiln_status st = read_whole("kiln_onnx_load", path, &data, &len);
  if (st == KILN_OK) st = onnx_load_memory(data, len, path, options, 0, out);
  kiln_free(data);
  return st;
}

kiln_status kiln_onnx_load(const char *path, const kiln_onnx_options *options, kiln_model **out) {
  return onnx_load_file(path, options, out);
}

kiln_tensor *kiln_onnx_load_tensor(const char *path) {
  static const char fn[] = "kiln_onnx_load_tensor";
  if (!path) return kiln_failed(KILN_ERR_INVALID_ARGUMENT, "%s: path is NULL", fn);
  uint8_t *data;
  size_t len = 0;
  kiln_status st = read_whole(fn, path, &data, &len);
  if (st != KILN_OK) return kiln_failed(st, "%s", kiln_last_error());
  Onnx__TensorProto *tp = nesting_ok(data, data + len, &onnx__tensor_proto__descriptor, 0)
                              ? onnx__tensor_proto__unpack(&pb_allocator, len, data)
                              : NULL;
  kiln_free(data);
  if (!tp) return kiln_failed(KILN_ERR_CORRUPT, "%s: %s: not a TensorProto", fn, path);
  char msg[256];
  kiln_tensor *t;
  st = tensor_of_proto(tp, NULL, &t, msg, sizeof msg);
  onnx__tensor_proto__free_unpacked(tp, &pb_allocator);
  return st == KILN_OK ? t : kiln_failed(st, "%s: %s: %s", fn, path, msg);
}

kiln_status kiln_onnx_op_types(const char *path, char *buf, size_t cap) {
  static const char fn[] = "kiln_onnx_op_types";
  if (!path || !buf || !cap) return kiln_errorf(KILN_ERR_INVALID_ARGUMENT, "%s: path or buf is NULL", fn);
  buf[0] = '\0';
  uint8_t *data;
  size_t len = 0, used = 0;
  kiln_status st = read_whole(fn, path, &data, &len);
  if (st != KILN_OK) return st;
  Onnx__ModelProto *mp = nesting_ok(data, data + len, &onnx__model_proto__descriptor, 0)
                             ? onnx__model_proto__unpack(&pb_allocator, len, data)
                             : NULL;
  kiln_free(data);
  if (!mp) return kiln_errorf(KILN_ERR_CORRUPT, "%s: %s: not an ONNX model", fn, path);
  for (size_t i = 0; mp->graph && i < mp->graph->n_node; i++) {
    const char *t = str(mp->graph->node[i]->op_type);
    bool seen = false;
    for (size_t j = 0; j < i && !seen; j++) seen = strcmp(str(mp->graph->node[j]->op_type), t) == 0;
    if (seen) continue;
    int w = snprintf(buf + used, cap - used, "%s%s", used ? " " : "", t);
    if (w < 0 || (size_t)w >= cap - used) break;
    used += (size_t)w;
  }
  onnx__model_proto__free_unpacked(mp, &pb_allocator);
  return KILN_OK;
}
