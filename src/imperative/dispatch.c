/* Eager dispatch: check the inputs, infer the outputs, allocate them (all
 * in the caller, so shapes, dtypes and usage errors are known at once), then
 * push the kernel to the default engine with the inputs' storage variables
 * as reads and the outputs' as writes, and return. The kernel runs when
 * those allow; a storage released meanwhile is freed by the engine after
 * it. */
#include <pthread.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "device/device.h"
#include "engine/engine.h"
#include "imperative/autograd.h"
#include "imperative/dispatch.h"

enum { LOCAL_VIEWS = 8 };

static _Thread_local bool use_reference;

bool (*dispatch_graph_wants)(int n_in, kiln_tensor *const *in);
kiln_status (*dispatch_graph_record)(kiln_op_id id, int n_in, kiln_tensor *const *in, const kiln_attr_value *attrs,
                                     int n_out, const kiln_out_desc *desc, kiln_tensor **out);

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

/* ------------------------------------------------------------ pushed work */

/* An op call that outlives kiln_dispatch: the call with its views, kept
 * until the engine has run it. Pooled, so a push allocates nothing at
 * steady state. */
typedef struct pushed_call {
  kiln_op_call call;
  kk_view local_in[LOCAL_VIEWS], local_out[LOCAL_VIEWS];
  struct pushed_call *next_free;
} pushed_call;

static struct {
  pthread_mutex_t lock;
  pushed_call *free;
} call_pool = {PTHREAD_MUTEX_INITIALIZER, NULL};

static pushed_call *call_get(void) {
  pthread_mutex_lock(&call_pool.lock);
  pushed_call *p = call_pool.free;
  if (p) call_pool.free = p->next_free;
  pthread_mutex_unlock(&call_pool.lock);
  return p ? p : malloc(sizeof *p); /* pooled: bypasses the hook, as the engine's pools do */
}

static void call_put(void *data) {
  pushed_call *p = data;
  if (p->call.in != p->local_in) kiln_free(p->call.in);
  if (p->call.out != p->local_out) kiln_free(p->call.out);
  pthread_mutex_lock(&call_pool.lock);
  p->next_free = call_pool.free;
  call_pool.free = p;
  pthread_mutex_unlock(&call_pool.lock);
}

/* Runs on an engine worker (or inline in naive mode) with the caller's
 * kernel options. */
static kiln_status run_call(void *data) {
  const kiln_op_call *c = &((pushed_call *)data)->call;
  unsigned old = kk_set_options(c->options);
  kiln_kernel_fn fn = c->reference && c->def->reference ? c->def->reference : c->def->kernel;
  kiln_status st = fn(c);
  kk_set_options(old);
  return st;
}

static kiln_status push_kernel(const kiln_op_call *c, kiln_tensor *const *in, kiln_tensor **out) {
  pushed_call *p = call_get();
  kiln_engine_var *local_vars[2 * LOCAL_VIEWS];
  kiln_engine_var **vars = c->n_in + c->n_out <= 2 * LOCAL_VIEWS
                               ? local_vars
                               : kiln_alloc(sizeof(kiln_engine_var *) * (size_t)(c->n_in + c->n_out));
  if (!p || !vars) {
    if (p) call_put(p);
    if (vars != local_vars) kiln_free(vars);
    return kiln_errorf(KILN_ERR_OUT_OF_MEMORY, "%s: out of memory pushing the op", c->def->name);
  }
  p->call = *c;
  p->call.in = c->n_in <= LOCAL_VIEWS ? p->local_in : kiln_alloc(sizeof(kk_view) * (size_t)c->n_in);
  p->call.out = c->n_out <= LOCAL_VIEWS ? p->local_out : kiln_alloc(sizeof(kk_view) * (size_t)c->n_out);
  if (!p->call.in || !p->call.out) {
    if (!p->call.in) p->call.in = p->local_in;
    if (!p->call.out) p->call.out = p->local_out;
    call_put(p);
    if (vars != local_vars) kiln_free(vars);
    return kiln_errorf(KILN_ERR_OUT_OF_MEMORY, "%s: out of memory pushing the op", c->def->name);
  }
  if (c->n_in) memcpy(p->call.in, c->in, sizeof(kk_view) * (size_t)c->n_in);
  if (c->n_out) memcpy(p->call.out, c->out, sizeof(kk_view) * (size_t)c->n_out);
  for (int i = 0; i < c->n_in; i++) vars[i] = in[i]->storage->var;
  for (int i = 0; i < c->n_out; i++) vars[c->n_in + i] = out[i]->storage->var;
  kiln_status st = tensor_push(out[0], run_call, call_put, p, vars, c->n_in, vars + c->n_in,
                                    c->n_out, c->def->name, 0);
  if (st != KILN_OK) call_put(p);
  if (vars != local_vars) kiln_free(vars);
  return st;
}

kiln_tensor *kiln_failed(kiln_status status, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  kiln_verrorf(status, fmt, ap);
  va_end(ap);
  return tensor_autorelease(tensor_new_failed(status, kiln_last_error()));
}

kiln_tensor *kiln_zeros_like_owned(const kiln_tensor *t) {
  kiln_attr_value a[KILN_MAX_ATTRS];
  kiln_attrs_default(KILN_OP_FULL, a);
  kiln_attr_set_ints(&a[0], t->ndim, t->shape);
  a[1].i = t->dtype;
  kiln_tensor *z;
  int was = device_swap(t->storage ? t->storage->device : device_current());
  kiln_dispatch_owned(KILN_OP_FULL, 0, NULL, a, 1, &z);
  device_swap(was);
  return z;
}

static void fail_all(kiln_tensor **out, int n_out, kiln_status st, const char *msg) {
  for (int i = 0; i < n_out; i++) out[i] = tensor_new_failed(st, msg);
}

kiln_status kiln_dispatch_owned(kiln_op_id id, int n_in, kiln_tensor *const *in, const kiln_attr_value *attrs,
                                int n_out, kiln_tensor **out) {
  const kiln_op_def *def = kiln_op_get(id);
  kiln_op_call c;
  c.def = def;
  c.n_in = n_in;
  c.n_out = 0;
  c.in = c.out = NULL;
  c.reference = use_reference;
  c.options = kk_options();
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
  int device = device_current();
  for (int i = 0, first = -1; i < n_in; i++) {
    if (!in[i]->storage) continue; /* symbolic */
    if (first < 0) {
      first = i;
      device = in[i]->storage->device;
    } else if (in[i]->storage->device != device) {
      char a[32], b[32];
      kiln_errorf(KILN_ERR_INVALID_ARGUMENT, "%s: input %d is on %s, input %d on %s (kiln_to_device moves a tensor)",
                  def->name, first, kiln_device_name(device_of_index(device), a, sizeof a), i,
                  kiln_device_name(device_of_index(in[i]->storage->device), b, sizeof b));
      fail_all(out, n_out, KILN_ERR_INVALID_ARGUMENT, kiln_last_error());
      return KILN_ERR_INVALID_ARGUMENT;
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
  /* Views too: a broadcast view must not have more elements than an int64
   * counts, or everything that walks it overflows. */
  for (int k = 0; k < n_out; k++) {
    int64_t numel;
    st = tensor_checked_numel(def->name, desc[k].dtype, desc[k].ndim, desc[k].shape, &numel);
    if (st != KILN_OK) goto fail;
  }
  if (dispatch_graph_wants && dispatch_graph_wants(n_in, in)) {
    st = dispatch_graph_record(id, n_in, in, c.attrs, n_out, desc, out);
    goto done;
  }

  for (; made < n_out; made++) {
    kiln_tensor *t = def->flags & KILN_OP_VIEW
                         ? tensor_new_view(in[0], desc[made].ndim, desc[made].shape, desc[made].strides, desc[made].offset)
                         : tensor_new_on(device, desc[made].dtype, desc[made].ndim, desc[made].shape);
    if (tensor_failed(t)) {
      st = kiln_errorf(t->status, "%s: %s", def->name, t->error);
      kiln_tensor_release(t);
      goto fail;
    }
    out[made] = t;
    vout[made] = tensor_view_of(t);
  }
  if (!(def->flags & KILN_OP_VIEW)) {
    st = push_kernel(&c, in, out);
    if (st != KILN_OK) goto fail;
  }
  if (autograd_wants(n_in, in)) autograd_record(id, c.attrs, n_in, in, n_out, out);
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

/* ------------------------------------------------------------ in place */

kiln_status kiln_assign(kiln_tensor *dst, kiln_tensor *src) {
  if (!dst || !src) return kiln_errorf(KILN_ERR_INVALID_ARGUMENT, "kiln_assign: %s is NULL", dst ? "src" : "dst");
  if (tensor_failed(dst)) return kiln_errorf(dst->status, "kiln_assign: dst: %s", dst->error);
  if (tensor_failed(src)) return kiln_errorf(src->status, "kiln_assign: src: %s", src->error);
  if (dst->sym || src->sym)
    return kiln_errorf(KILN_ERR_UNSUPPORTED, "kiln_assign: %s is symbolic: graphs do not write tensors in place yet",
                       dst->sym ? "dst" : "src");
  if (src->dtype != dst->dtype)
    return kiln_errorf(KILN_ERR_DTYPE, "kiln_assign: src is %s, dst %s (cast first)", kiln_dtype_name(src->dtype),
                       kiln_dtype_name(dst->dtype));
  /* A source on another device comes over first (how parameters loaded on
   * one device reach replicas on others). */
  kiln_tensor *moved = src->storage->device != dst->storage->device ? transfer_owned(src, dst->storage->device) : NULL;
  if (moved && tensor_failed(moved)) {
    kiln_status failed = kiln_errorf(moved->status, "kiln_assign: %s", moved->error);
    kiln_tensor_release(moved);
    return failed;
  }
  if (moved) src = moved;
  /* The engine orders work by variable; a push that reads and writes the
   * same one would wait on itself, so an aliasing source is copied first. */
  kiln_tensor *from = NULL;
  kiln_attr_value a[KILN_MAX_ATTRS];
  kiln_attrs_default(KILN_OP_BROADCAST_TO, a);
  kiln_attr_set_ints(&a[0], dst->ndim, dst->shape);
  kiln_status st = kiln_dispatch_owned(KILN_OP_BROADCAST_TO, 1, &src, a, 1, &from);
  kiln_tensor_release(moved);
  if (st == KILN_OK && from->storage == dst->storage) {
    kiln_tensor *copy;
    st = kiln_dispatch_owned(KILN_OP_COPY, 1, &from, NULL, 1, &copy);
    kiln_tensor_release(from);
    from = copy;
  }
  if (st != KILN_OK) {
    kiln_tensor_release(from);
    return kiln_errorf(st, "kiln_assign: %s", kiln_last_error());
  }
  kiln_op_call c = {.def = kiln_op_get(KILN_OP_COPY), .n_in = 1, .n_out = 1, .reference = use_reference,
                    .options = kk_options()};
  kk_view vin = tensor_view_of(from), vout = tensor_view_of(dst);
  c.in = &vin;
  c.out = &vout;
  st = push_kernel(&c, &from, &dst);
  kiln_tensor_release(from);
  return st;
}
