/* The op registry. One entry per op holds its attributes, its shape and dtype
 * inference and its kernels (an optimised one and a plain reference). Eager
 * dispatch reads the entry today; tracing, graph passes, the executor,
 * autograd and ONNX mapping read the same entry later, so an op is added in
 * one place and the modes cannot disagree. */
#ifndef KILN_OP_H
#define KILN_OP_H

#include "base/base.h"
#include "kernels/view.h"
#include "ops/op_list.h"

typedef enum {
#define KILN_OP_ENUM_(id, name, family) KILN_OP_##id,
  KILN_OP_LIST(KILN_OP_ENUM_)
#undef KILN_OP_ENUM_
  KILN_OP_COUNT
} kiln_op_id;

typedef enum { KILN_ATTR_INT, KILN_ATTR_FLOAT, KILN_ATTR_INTS } kiln_attr_type;

#define KILN_MAX_ATTRS 8
#define KILN_MAX_ATTR_INTS 16

typedef struct {
  const char *name;
  kiln_attr_type type;
  double dflt; /* for INT and FLOAT; an INTS default is the empty list */
} kiln_attr_spec;

typedef struct {
  int64_t i;
  double f;
  int n; /* INTS: length */
  int64_t ints[KILN_MAX_ATTR_INTS];
} kiln_attr_value;

struct kiln_op_def;

/* One application of an op: its inputs and outputs as kernel views and its
 * attribute values, positionally as the def's attrs list them. During
 * inference the views have shapes and dtypes but data may be NULL. */
typedef struct kiln_op_call {
  const struct kiln_op_def *def;
  int n_in, n_out;
  kk_view *in;
  kk_view *out;
  kiln_attr_value attrs[KILN_MAX_ATTRS];
  bool reference;   /* run the reference kernel */
  unsigned options; /* the caller's kk_options(), applied where the op runs */
} kiln_op_call;

/* What inference says of an output. strides and offset (elements, relative
 * to input 0's first element) are used only by view ops. */
typedef struct {
  kiln_dtype dtype;
  int ndim;
  int64_t shape[KILN_MAX_DIMS];
  int64_t strides[KILN_MAX_DIMS];
  int64_t offset;
} kiln_out_desc;

typedef kiln_status (*kiln_infer_fn)(const kiln_op_call *c, kiln_out_desc *out);
typedef kiln_status (*kiln_kernel_fn)(const kiln_op_call *c);

enum {
  KILN_OP_VIEW = 1u << 0,        /* output aliases input 0; no kernel */
  KILN_OP_ELEMENTWISE = 1u << 1, /* output[i] depends on inputs[i] only: fusable */
  KILN_OP_RANDOM = 1u << 2,      /* consumes generator counters (attrs seed, offset) */
};

typedef struct kiln_op_def {
  const char *name;
  int min_inputs, max_inputs; /* max_inputs -1: any number */
  int n_outputs;              /* fixed count; 0 when count_outputs decides */
  int (*count_outputs)(const kiln_op_call *c);
  const kiln_attr_spec *attrs;
  int n_attrs;
  unsigned flags;
  int code; /* which member of a family (a kernel's switch), see kernels.h */
  kiln_infer_fn infer;
  kiln_kernel_fn kernel;
  kiln_kernel_fn reference;
} kiln_op_def;

#define KILN_OP_DECL_(id, name, family) extern const kiln_op_def kiln_opdef_##name;
KILN_OP_LIST(KILN_OP_DECL_)
#undef KILN_OP_DECL_

const kiln_op_def *kiln_op_get(kiln_op_id id);
/* NULL when no op has that name. */
const kiln_op_def *kiln_op_find(const char *name);

/* Records "<op>: <message>" for kiln_last_error and returns status. Infer and
 * kernel functions fail through this so every message names its op. */
kiln_status kiln_op_fail(const kiln_op_call *c, kiln_status status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Normalises axis against ndim (negative counts from the end); fails naming
 * the op when out of range. */
kiln_status kiln_op_axis(const kiln_op_call *c, int64_t axis, int ndim, int *out);

/* NumPy broadcasting of n shapes into out; fails naming the op and shapes. */
kiln_status kiln_op_broadcast(const kiln_op_call *c, int n, const kk_view *const *views, kiln_out_desc *out);

/* Python's slice.indices for one axis of length len: the first index a
 * slice visits and how many it visits (step != 0, not INT64_MIN). */
void kiln_slice_bounds(int64_t len, int64_t start, int64_t stop, int64_t step, int64_t *first, int64_t *count);

/* Helper for defs: the number of entries of an attribute array. */
#define KILN_COUNTOF(a) ((int)(sizeof(a) / sizeof((a)[0])))

#endif
