/* Eager dispatch. Today the kernel runs in the caller; 2/8 pushes it to the
 * engine, with this function keeping the same shape: check, infer, allocate,
 * run. */
#include <string.h>

#include "imperative/dispatch.h"

static _Thread_local bool use_reference;

bool kiln_use_reference_kernels(bool on) {
  bool old = use_reference;
  use_reference = on;
  return old;
}

void kiln_attrs_default(kiln_op_id id, kiln_attr_value *vals) {
  const kiln_op_def *def = kiln_op_get(id);
  for (int i = 0; i < def->n_attrs; i++) {
    vals[i].n = 0;
    vals[i].f = def->attrs[i].dflt;
    /* Defaults are doubles; INT64_MAX (an open bound) does not survive the
     * round trip, so saturate rather than convert out of range. */
    double d = def->attrs[i].dflt;
    vals[i].i = d >= 9223372036854775807.0 ? INT64_MAX : d <= -9223372036854775808.0 ? INT64_MIN : (int64_t)d;
  }
}

void kiln_attr_set_ints(kiln_attr_value *v, int n, const int64_t *ints) {
  v->n = n;
  for (int i = 0; i < n && i < KILN_MAX_ATTR_INTS; i++) v->ints[i] = ints[i];
}

static void fail_all(kiln_tensor **out, int n_out, kiln_status st, const char *msg) {
  for (int i = 0; i < n_out; i++) out[i] = tensor_new_failed(st, msg);
}

enum { LOCAL_VIEWS = 8 };

kiln_status kiln_dispatch_owned(kiln_op_id id, int n_in, kiln_tensor *const *in, const kiln_attr_value *attrs,
                                int n_out, kiln_tensor **out) {
  const kiln_op_def *def = kiln_op_get(id);
  kiln_op_call c;
  c.def = def;
  c.n_in = n_in;
  c.n_out = 0;
  c.in = c.out = NULL;
  c.reference = use_reference;
  /* Only the given attributes are copied; the rest get zero scalars (a
   * family's kernel may read a parameter its member does not declare).
   * List contents past a value's n are never read, so they are not
   * cleared: zeroing whole values made up a quarter of a small op. */
  if (attrs)
    memcpy(c.attrs, attrs, sizeof(kiln_attr_value) * (size_t)def->n_attrs);
  else
    kiln_attrs_default(id, c.attrs);
  for (int i = def->n_attrs; i < KILN_MAX_ATTRS; i++) c.attrs[i].i = 0, c.attrs[i].f = 0, c.attrs[i].n = 0;

  /* A failed or missing input: pass the first failure on without running. */
  for (int i = 0; i < n_in; i++) {
    if (!in[i]) {
      kiln_errorf(KILN_ERR_INVALID_ARGUMENT, "%s: input %d is NULL", def->name, i);
      fail_all(out, n_out, KILN_ERR_INVALID_ARGUMENT, kiln_last_error());
      return KILN_ERR_INVALID_ARGUMENT;
    }
    if (tensor_failed(in[i])) {
      kiln_errorf(in[i]->status, "%s", in[i]->error);
      for (int k = 0; k < n_out; k++) out[k] = tensor_new_failed_from(in[i]);
      return in[i]->status;
    }
  }
  if (n_in < def->min_inputs || (def->max_inputs >= 0 && n_in > def->max_inputs)) {
    kiln_errorf(KILN_ERR_INVALID_ARGUMENT, "%s: takes %d to %d inputs, got %d", def->name, def->min_inputs,
                def->max_inputs, n_in);
    fail_all(out, n_out, KILN_ERR_INVALID_ARGUMENT, kiln_last_error());
    return KILN_ERR_INVALID_ARGUMENT;
  }

  kk_view local_in[LOCAL_VIEWS], local_out[LOCAL_VIEWS];
  kiln_out_desc local_desc[LOCAL_VIEWS];
  kk_view *vin = n_in <= LOCAL_VIEWS ? local_in : kiln_alloc(sizeof(kk_view) * (size_t)n_in);
  kk_view *vout = n_out <= LOCAL_VIEWS ? local_out : kiln_alloc(sizeof(kk_view) * (size_t)n_out);
  kiln_out_desc *desc = n_out <= LOCAL_VIEWS ? local_desc : kiln_alloc(sizeof(kiln_out_desc) * (size_t)n_out);
  kiln_status st = KILN_OK;
  int made = 0;
  if (!vin || !vout || !desc) {
    st = kiln_errorf(KILN_ERR_OUT_OF_MEMORY, "%s: out of memory", def->name);
    goto fail;
  }
  for (int i = 0; i < n_in; i++) vin[i] = tensor_view_of(in[i]);
  c.in = vin;
  c.out = vout;
  c.n_out = n_out;
  int expect_out = def->count_outputs ? def->count_outputs(&c) : def->n_outputs;
  if (expect_out != n_out) {
    st = kiln_errorf(KILN_ERR_INVALID_ARGUMENT, "%s: gives %d outputs, %d requested", def->name, expect_out, n_out);
    goto fail;
  }
  memset(desc, 0, sizeof(kiln_out_desc) * (size_t)n_out);
  st = def->infer(&c, desc);
  if (st != KILN_OK) goto fail;

  for (; made < n_out; made++) {
    /* Views too: a broadcast view must not have more elements than an
     * int64 counts, or everything that walks it overflows. */
    int64_t numel;
    st = tensor_checked_numel(def->name, desc[made].dtype, desc[made].ndim, desc[made].shape, &numel);
    if (st != KILN_OK) goto fail;
    kiln_tensor *t = def->flags & KILN_OP_VIEW
                         ? tensor_new_view(in[0], desc[made].ndim, desc[made].shape, desc[made].strides, desc[made].offset)
                         : tensor_new(desc[made].dtype, desc[made].ndim, desc[made].shape);
    if (tensor_failed(t)) {
      st = kiln_errorf(t->status, "%s: %s", def->name, t->error);
      kiln_tensor_release(t);
      goto fail;
    }
    out[made] = t;
    vout[made] = tensor_view_of(t);
  }
  if (!(def->flags & KILN_OP_VIEW)) {
    kiln_kernel_fn fn = c.reference && def->reference ? def->reference : def->kernel;
    st = fn(&c);
    if (st != KILN_OK) goto fail;
  }
  goto done;

fail:
  for (int i = 0; i < made; i++) kiln_tensor_release(out[i]);
  fail_all(out, n_out, st, kiln_last_error());
done:
  if (vin != local_in) kiln_free(vin);
  if (vout != local_out) kiln_free(vout);
  if (desc != local_desc) kiln_free(desc);
  return st;
}

kiln_status kiln_dispatch(kiln_op_id id, int n_in, kiln_tensor *const *in, const kiln_attr_value *attrs, int n_out,
                          kiln_tensor **out) {
  kiln_status st = kiln_dispatch_owned(id, n_in, in, attrs, n_out, out);
  for (int i = 0; i < n_out; i++) out[i] = tensor_autorelease(out[i]);
  return st;
}

kiln_tensor *kiln_dispatch1(kiln_op_id id, int n_in, kiln_tensor *const *in, const kiln_attr_value *attrs) {
  kiln_tensor *out;
  kiln_dispatch(id, n_in, in, attrs, 1, &out);
  return out;
}
