/* Creation ops: outputs made from attributes alone (no inputs), so a graph
 * can hold them as nodes and constant folding can evaluate them. Also
 * kiln_from_data, kiln_contiguous and kiln_copy, which build on these. */
#include <math.h>
#include <string.h>

#include "imperative/dispatch.h"
#include "kernels/elementwise.h"
#include "kernels/fill.h"

/* Every creation op starts with shape and dtype. */
#define SHAPE_DTYPE {"shape", KILN_ATTR_INTS, 0}, {"dtype", KILN_ATTR_INT, KILN_F32}

static const kiln_attr_spec full_attrs[] = {SHAPE_DTYPE, {"value", KILN_ATTR_FLOAT, 0}};
static const kiln_attr_spec arange_attrs[] = {
    SHAPE_DTYPE, {"start", KILN_ATTR_FLOAT, 0}, {"stop", KILN_ATTR_FLOAT, 0}, {"step", KILN_ATTR_FLOAT, 1}};
static const kiln_attr_spec linspace_attrs[] = {
    SHAPE_DTYPE, {"start", KILN_ATTR_FLOAT, 0}, {"stop", KILN_ATTR_FLOAT, 0}};
static const kiln_attr_spec eye_attrs[] = {SHAPE_DTYPE};
/* seed and offset are reserved from a generator when the op is created. */
static const kiln_attr_spec random_attrs[] = {SHAPE_DTYPE,
                                              {"a", KILN_ATTR_FLOAT, 0},
                                              {"b", KILN_ATTR_FLOAT, 1},
                                              {"seed", KILN_ATTR_INT, 0},
                                              {"offset", KILN_ATTR_INT, 0}};

static kiln_status shape_infer(const kiln_op_call *c, kiln_out_desc *out) {
  const kiln_attr_value *shape = &c->attrs[0];
  if ((unsigned)c->attrs[1].i >= KILN_DTYPE_COUNT)
    return kiln_op_fail(c, KILN_ERR_DTYPE, "dtype %lld is not a kiln dtype", (long long)c->attrs[1].i);
  if (shape->n > KILN_MAX_DIMS)
    return kiln_op_fail(c, KILN_ERR_INVALID_ARGUMENT, "%d dims (at most %d)", shape->n, KILN_MAX_DIMS);
  out->dtype = (kiln_dtype)c->attrs[1].i;
  out->ndim = shape->n;
  for (int i = 0; i < shape->n; i++) out->shape[i] = shape->ints[i];
  return KILN_OK; /* negative dims and overflow are checked by dispatch */
}

static kiln_status random_infer(const kiln_op_call *c, kiln_out_desc *out) {
  if (!kk_is_float((kiln_dtype)c->attrs[1].i) && c->def->code != KK_RANDOM_BERNOULLI)
    return kiln_op_fail(c, KILN_ERR_DTYPE, "makes float32 or float64, not %s", kiln_dtype_name((kiln_dtype)c->attrs[1].i));
  double a = c->attrs[2].f, b = c->attrs[3].f;
  if (!isfinite(a) || !isfinite(b))
    return kiln_op_fail(c, KILN_ERR_INVALID_ARGUMENT, "parameters %g and %g must be finite", a, b);
  if (c->def->code == KK_RANDOM_UNIFORM && !(a < b))
    return kiln_op_fail(c, KILN_ERR_INVALID_ARGUMENT, "low %g must be less than high %g", a, b);
  if (c->def->code == KK_RANDOM_NORMAL && b < 0)
    return kiln_op_fail(c, KILN_ERR_INVALID_ARGUMENT, "stddev %g is negative", b);
  if (c->def->code == KK_RANDOM_BERNOULLI && !(a >= 0 && a <= 1))
    return kiln_op_fail(c, KILN_ERR_INVALID_ARGUMENT, "p %g is outside [0, 1]", a);
  return shape_infer(c, out);
}

static kiln_status full_kernel(const kiln_op_call *c) {
  kk_fill(&c->out[0], c->attrs[2].f);
  return KILN_OK;
}
static kiln_status arange_kernel(const kiln_op_call *c) {
  kk_arange(&c->out[0], c->attrs[2].f, c->attrs[4].f);
  return KILN_OK;
}
static kiln_status linspace_kernel(const kiln_op_call *c) {
  kk_linspace(&c->out[0], c->attrs[2].f, c->attrs[3].f);
  return KILN_OK;
}
static kiln_status eye_kernel(const kiln_op_call *c) {
  kk_eye(&c->out[0]);
  return KILN_OK;
}
static kiln_status full_reference(const kiln_op_call *c) {
  kk_fill_ref(&c->out[0], c->attrs[2].f);
  return KILN_OK;
}
static kiln_status arange_reference(const kiln_op_call *c) {
  kk_arange_ref(&c->out[0], c->attrs[2].f, c->attrs[4].f);
  return KILN_OK;
}
static kiln_status linspace_reference(const kiln_op_call *c) {
  kk_linspace_ref(&c->out[0], c->attrs[2].f, c->attrs[3].f);
  return KILN_OK;
}
static kiln_status eye_reference(const kiln_op_call *c) {
  kk_eye_ref(&c->out[0]);
  return KILN_OK;
}
static kiln_status random_kernel(const kiln_op_call *c) {
  kk_random(&c->out[0], (kk_random_kind)c->def->code, (uint64_t)c->attrs[4].i, (uint64_t)c->attrs[5].i, c->attrs[2].f,
            c->attrs[3].f);
  return KILN_OK;
}

#define CREATION(opname, ATTRS, INFER, KERNEL, REFERENCE, CODE, FLAGS)                                        \
  const kiln_op_def kiln_opdef_##opname = {.name = #opname, .n_outputs = 1, .attrs = ATTRS,                 \
                                           .n_attrs = KILN_COUNTOF(ATTRS), .flags = FLAGS, .code = CODE,   \
                                           .infer = INFER, .kernel = KERNEL, .reference = REFERENCE};

CREATION(full, full_attrs, shape_infer, full_kernel, full_reference, 0, 0)
CREATION(arange, arange_attrs, shape_infer, arange_kernel, arange_reference, 0, 0)
CREATION(linspace, linspace_attrs, shape_infer, linspace_kernel, linspace_reference, 0, 0)
CREATION(eye, eye_attrs, shape_infer, eye_kernel, eye_reference, 0, 0)
/* The random ops' reference is the Philox stream itself (see fill.c). */
CREATION(random_uniform, random_attrs, random_infer, random_kernel, random_kernel, KK_RANDOM_UNIFORM, KILN_OP_RANDOM)
CREATION(random_normal, random_attrs, random_infer, random_kernel, random_kernel, KK_RANDOM_NORMAL, KILN_OP_RANDOM)
CREATION(random_bernoulli, random_attrs, random_infer, random_kernel, random_kernel, KK_RANDOM_BERNOULLI,
         KILN_OP_RANDOM)

/* Checks the public shape arguments before they become an attribute. */
static kiln_tensor *bad_shape(const char *fn, int ndim, const int64_t *shape) {
  if (ndim < 0 || ndim > KILN_MAX_DIMS)
    return kiln_failed(KILN_ERR_INVALID_ARGUMENT, "%s: %d dims (kiln supports 0 to %d)", fn, ndim, KILN_MAX_DIMS);
  if (ndim > 0 && !shape) return kiln_failed(KILN_ERR_INVALID_ARGUMENT, "%s: shape is NULL", fn);
  return NULL;
}

static kiln_tensor *create(kiln_op_id id, const char *fn, kiln_dtype dt, int ndim, const int64_t *shape,
                           kiln_attr_value *a) {
  kiln_tensor *bad = bad_shape(fn, ndim, shape);
  if (bad) return bad;
  kiln_attr_set_ints(&a[0], ndim, shape);
  a[1].i = dt;
  return kiln_dispatch1(id, 0, NULL, a);
}

kiln_tensor *kiln_full(kiln_dtype dt, int ndim, const int64_t *shape, double value) {
  kiln_attr_value a[KILN_MAX_ATTRS];
  kiln_attrs_default(KILN_OP_FULL, a);
  a[2].f = value;
  return create(KILN_OP_FULL, "kiln_full", dt, ndim, shape, a);
}

kiln_tensor *kiln_zeros(kiln_dtype dt, int ndim, const int64_t *shape) { return kiln_full(dt, ndim, shape, 0); }
kiln_tensor *kiln_ones(kiln_dtype dt, int ndim, const int64_t *shape) { return kiln_full(dt, ndim, shape, 1); }

kiln_tensor *kiln_arange(double start, double stop, double step, kiln_dtype dt) {
  kiln_attr_value a[KILN_MAX_ATTRS];
  kiln_attrs_default(KILN_OP_ARANGE, a);
  if (!isfinite(start) || !isfinite(stop) || !isfinite(step) || step == 0) {
    return kiln_failed(KILN_ERR_INVALID_ARGUMENT, "arange: start %g, stop %g and step %g must be finite, step nonzero", start,
                stop, step);
  }
  double count = ceil((stop - start) / step);
  if (count > 9.0e15) {
    return kiln_failed(KILN_ERR_OVERFLOW, "arange: %g elements is too many", count);
  }
  int64_t n = count > 0 ? (int64_t)count : 0;
  a[2].f = start;
  a[3].f = stop;
  a[4].f = step;
  return create(KILN_OP_ARANGE, "arange", dt, 1, &n, a);
}

kiln_tensor *kiln_linspace(double start, double stop, int64_t num, kiln_dtype dt) {
  kiln_attr_value a[KILN_MAX_ATTRS];
  kiln_attrs_default(KILN_OP_LINSPACE, a);
  if (!isfinite(start) || !isfinite(stop) || num < 0) {
    return kiln_failed(KILN_ERR_INVALID_ARGUMENT, "linspace: start %g and stop %g must be finite and num %lld >= 0", start,
                stop, (long long)num);
  }
  a[2].f = start;
  a[3].f = stop;
  return create(KILN_OP_LINSPACE, "linspace", dt, 1, &num, a);
}

kiln_tensor *kiln_eye(int64_t n, int64_t m, kiln_dtype dt) {
  kiln_attr_value a[KILN_MAX_ATTRS];
  kiln_attrs_default(KILN_OP_EYE, a);
  return create(KILN_OP_EYE, "eye", dt, 2, (int64_t[]){n, m}, a);
}

static kiln_tensor *random_op(kiln_op_id id, const char *fn, kiln_generator *gen, double p0, double p1, kiln_dtype dt,
                              int ndim, const int64_t *shape) {
  kiln_attr_value a[KILN_MAX_ATTRS];
  kiln_attrs_default(id, a);
  kiln_tensor *bad = bad_shape(fn, ndim, shape);
  if (bad) return bad;
  int64_t n;
  kiln_status st = tensor_checked_numel(fn, dt, ndim, shape, &n);
  if (st != KILN_OK) return tensor_autorelease(tensor_new_failed(st, kiln_last_error()));
  a[2].f = p0;
  a[3].f = p1;
  a[4].i = (int64_t)generator_seed(gen);
  a[5].i = (int64_t)generator_reserve(gen, (uint64_t)n);
  return create(id, fn, dt, ndim, shape, a);
}

kiln_tensor *kiln_random_uniform(kiln_generator *gen, double low, double high, kiln_dtype dt, int ndim,
                                 const int64_t *shape) {
  return random_op(KILN_OP_RANDOM_UNIFORM, "random_uniform", gen, low, high, dt, ndim, shape);
}
kiln_tensor *kiln_random_normal(kiln_generator *gen, double mean, double stddev, kiln_dtype dt, int ndim,
                                const int64_t *shape) {
  return random_op(KILN_OP_RANDOM_NORMAL, "random_normal", gen, mean, stddev, dt, ndim, shape);
}
kiln_tensor *kiln_random_bernoulli(kiln_generator *gen, double p, kiln_dtype dt, int ndim, const int64_t *shape) {
  return random_op(KILN_OP_RANDOM_BERNOULLI, "random_bernoulli", gen, p, 0, dt, ndim, shape);
}

kiln_tensor *kiln_from_data(kiln_dtype dt, int ndim, const int64_t *shape, const void *data) {
  kiln_tensor *bad = bad_shape("kiln_from_data", ndim, shape);
  if (bad) return bad;
  kiln_tensor *t = tensor_new(dt, ndim, shape);
  if (!tensor_failed(t)) {
    size_t nbytes = (size_t)kiln_tensor_numel(t) * kiln_dtype_size(dt);
    if (!data && nbytes) {
      kiln_tensor_release(t);
      kiln_errorf(KILN_ERR_INVALID_ARGUMENT, "kiln_from_data: data is NULL");
      t = tensor_new_failed(KILN_ERR_INVALID_ARGUMENT, kiln_last_error());
    } else if (nbytes) {
      memcpy(tensor_data(t), data, nbytes);
    }
  }
  return tensor_autorelease(t);
}
