/* The tape. A recorded op becomes a node holding its attributes, references
 * to its input tensors and views of its outputs' storage (not the output
 * handles, which point back at the node: no cycles). Every tensor that takes
 * part has an entry: a leaf (kiln_attach_grad) with its gradient buffer, or
 * the node and output index that produced it. Releasing the last handle of
 * a result frees its node, which releases the inputs, and so on up.
 *
 * backward sorts the nodes behind the head (iteratively: tapes can be deep),
 * then visits them in reverse, summing the gradients that reach each
 * output and calling the op's gradient function. Everything it computes
 * lives in one scope, closed at the end; the leaves' sums are written into
 * their persistent buffers by engine ops, so a handle from kiln_grad stays
 * valid and sees the new values. */
#include "device/device.h"
#include "imperative/autograd.h"

#include <pthread.h>
#include <stdatomic.h>
#include <string.h>

#include "imperative/dispatch.h"
#include "kernels/elementwise.h"

typedef struct ag_node {
  atomic_long refs;
  kiln_op_id op;
  /* A node recorded by autograd_record_custom: its own gradient function
   * and context instead of the op's. */
  const kiln_op_def *custom_def;
  kiln_grad_fn custom_fn;
  void *ctx;
  void (*ctx_free)(void *);
  kiln_attr_value attrs[KILN_MAX_ATTRS];
  int n_in, n_out;
  kiln_tensor **in;  /* retained input handles */
  kiln_tensor **out; /* views of the outputs' storage */
  bool freed;        /* backward without retain_graph released in/out */
  /* backward's scratch */
  kiln_tensor **grad; /* per output: the sum reaching it (scope-owned) */
  uint64_t mark;
} ag_node;

typedef struct {
  ag_node *node; /* the producer, or NULL for a leaf */
  int index;
  kiln_grad_req req;     /* leaves */
  kiln_tensor *buffer;   /* leaves: the gradient buffer (owned) */
  kiln_tensor *pending;  /* leaves, during backward (scope-owned) */
  uint64_t mark;
} ag_entry;

static _Thread_local int record_depth, pause_depth;
static _Thread_local bool training_stack[64];
static atomic_ullong backward_generation;

/* ------------------------------------------------------------ lifetime */

static void node_release(ag_node *n) {
  if (!n || atomic_fetch_sub_explicit(&n->refs, 1, memory_order_acq_rel) != 1) return;
  if (!n->freed) {
    for (int i = 0; i < n->n_in; i++) kiln_tensor_release(n->in[i]);
    for (int i = 0; i < n->n_out; i++) kiln_tensor_release(n->out[i]);
  }
  if (n->ctx_free) n->ctx_free(n->ctx);
  kiln_free(n->in);
  kiln_free(n);
}

static void entry_free(void *p) {
  ag_entry *e = p;
  node_release(e->node);
  kiln_tensor_release(e->buffer);
  kiln_free(e);
}

static void install_destructor(void) { tensor_ag_free = entry_free; }

/* The tensor layer frees entries through a hook it cannot name itself;
 * installed once, not on every entry (threads record concurrently). */
static ag_entry *entry_new(void) {
  static pthread_once_t once = PTHREAD_ONCE_INIT;
  pthread_once(&once, install_destructor);
  return kiln_calloc(1, sizeof(ag_entry));
}

/* ------------------------------------------------------------ scopes */

kiln_status kiln_record_begin(bool training) {
  if (record_depth >= (int)(sizeof training_stack / sizeof training_stack[0]))
    return kiln_errorf(KILN_ERR_INVALID_ARGUMENT, "kiln_record_begin: record scopes nested too deep");
  training_stack[record_depth++] = training;
  return KILN_OK;
}

kiln_status kiln_record_end(void) {
  if (record_depth == 0) return kiln_errorf(KILN_ERR_INVALID_ARGUMENT, "kiln_record_end: no record scope is open");
  record_depth--;
  return KILN_OK;
}

kiln_status kiln_pause_begin(void) {
  pause_depth++;
  return KILN_OK;
}

kiln_status kiln_pause_end(void) {
  if (pause_depth == 0) return kiln_errorf(KILN_ERR_INVALID_ARGUMENT, "kiln_pause_end: no pause scope is open");
  pause_depth--;
  return KILN_OK;
}

bool kiln_is_recording(void) { return record_depth > 0 && pause_depth == 0; }
bool kiln_is_training(void) { return record_depth > 0 && training_stack[record_depth - 1]; }

/* ------------------------------------------------------------ leaves */

kiln_status kiln_attach_grad(kiln_tensor *t, kiln_grad_req req) {
  if (!t) return kiln_errorf(KILN_ERR_INVALID_ARGUMENT, "kiln_attach_grad: tensor is NULL");
  if (t->status != KILN_OK) return kiln_errorf(t->status, "kiln_attach_grad: %s", t->error);
  if (t->sym) return kiln_errorf(KILN_ERR_INVALID_ARGUMENT, "kiln_attach_grad: the tensor is symbolic (a graph value)");
  if (req != KILN_GRAD_NULL && req != KILN_GRAD_WRITE && req != KILN_GRAD_ADD)
    return kiln_errorf(KILN_ERR_INVALID_ARGUMENT, "kiln_attach_grad: grad_req %d is not a kiln_grad_req", (int)req);
  if (req != KILN_GRAD_NULL && !kk_is_float(t->dtype))
    return kiln_errorf(KILN_ERR_DTYPE, "kiln_attach_grad: %s tensors have no gradient (float32 or float64 only)",
                       kiln_dtype_name(t->dtype));
  ag_entry *e = NULL;
  if (req != KILN_GRAD_NULL) {
    e = entry_new();
    if (!e) return kiln_errorf(KILN_ERR_OUT_OF_MEMORY, "kiln_attach_grad: out of memory");
    kiln_tensor *zero = kiln_zeros_like_owned(t);
    if (zero->status != KILN_OK) {
      kiln_status st = kiln_errorf(zero->status, "kiln_attach_grad: %s", zero->error);
      kiln_tensor_release(zero);
      kiln_free(e);
      return st;
    }
    e->req = req;
    e->buffer = zero;
  }
  /* A tensor with history becomes a new leaf: its past is cut. */
  if (t->ag) entry_free(t->ag);
  t->ag = e;
  return KILN_OK;
}

kiln_tensor *kiln_grad(const kiln_tensor *t) {
  const ag_entry *e = t ? t->ag : NULL;
  return e && !e->node ? e->buffer : NULL;
}

/* ------------------------------------------------------------ recording */

bool autograd_wants(int n_in, kiln_tensor *const *in) {
  if (!kiln_is_recording()) return false;
  for (int i = 0; i < n_in; i++)
    if (in[i] && in[i]->ag) return true;
  return false;
}

static ag_node *record(kiln_op_id id, const kiln_attr_value *attrs, int n_in, kiln_tensor *const *in, int n_out,
                       kiln_tensor *const *out);

void autograd_record(kiln_op_id id, const kiln_attr_value *attrs, int n_in, kiln_tensor *const *in, int n_out,
                     kiln_tensor *const *out) {
  record(id, attrs, n_in, in, n_out, out);
}

bool autograd_record_custom(const kiln_op_def *def, kiln_grad_fn fn, void *ctx, void (*ctx_free)(void *), int n_in,
                            kiln_tensor *const *in, int n_out, kiln_tensor *const *out) {
  kiln_attr_value none[KILN_MAX_ATTRS] = {{0}};
  ag_node *n = record(KILN_OP_COPY, none, n_in, in, n_out, out);
  if (!n) return false;
  n->custom_def = def;
  n->custom_fn = fn;
  n->ctx = ctx;
  n->ctx_free = ctx_free;
  return true;
}

static ag_node *record(kiln_op_id id, const kiln_attr_value *attrs, int n_in, kiln_tensor *const *in, int n_out,
                       kiln_tensor *const *out) {
  const kiln_op_def *def = kiln_op_get(id);
  /* Integer and bool results (comparisons, argmax, casts to int) carry no
   * gradient: they end the tape rather than extend it. */
  bool any_float = false;
  for (int i = 0; i < n_out; i++) any_float = any_float || kk_is_float(out[i]->dtype);
  if (!any_float) return NULL;
  ag_node *n = kiln_calloc(1, sizeof *n);
  kiln_tensor **arrays = n ? kiln_calloc((size_t)(n_in + 2 * n_out) + 1, sizeof(kiln_tensor *)) : NULL;
  ag_entry **entries = kiln_calloc((size_t)n_out + 1, sizeof(ag_entry *));
  bool ok = n && arrays && entries;
  for (int i = 0; ok && i < n_out; i++) ok = (entries[i] = entry_new()) != NULL;
  if (!ok) {
    for (int i = 0; entries && i < n_out; i++) kiln_free(entries[i]);
    kiln_free(entries);
    kiln_free(arrays);
    kiln_free(n);
    return NULL; /* the outputs do not take part; backward says the path is cut */
  }
  atomic_init(&n->refs, n_out);
  n->op = id;
  memcpy(n->attrs, attrs, sizeof(kiln_attr_value) * (size_t)def->n_attrs);
  n->n_in = n_in;
  n->n_out = n_out;
  n->in = arrays;
  n->out = arrays + n_in;
  n->grad = arrays + n_in + n_out;
  for (int i = 0; i < n_in; i++) n->in[i] = kiln_tensor_retain(in[i]);
  for (int i = 0; i < n_out; i++) {
    n->out[i] = tensor_new_view(out[i], out[i]->ndim, out[i]->shape, out[i]->strides, 0);
    entries[i]->node = n;
    entries[i]->index = i;
    if (out[i]->ag) entry_free(out[i]->ag); /* a view op's output is a fresh handle: never set */
    out[i]->ag = entries[i];
  }
  kiln_free(entries);
  return n;
}

/* ------------------------------------------------------------ backward */

/* A growable array of pointers (kiln_alloc'd). */
typedef struct {
  void **v;
  size_t n, cap;
} ptr_list;

static bool list_push(ptr_list *l, void *n) {
  if (l->n == l->cap) {
    size_t cap = l->cap ? 2 * l->cap : 64;
    void **v = kiln_alloc(cap * sizeof *v);
    if (!v) return false;
    if (l->v) memcpy(v, l->v, l->n * sizeof *v);
    kiln_free(l->v);
    l->v = v;
    l->cap = cap;
  }
  l->v[l->n++] = n;
  return true;
}

/* Post-order of the nodes behind head, without recursion: a node is
 * appended after every node that produced one of its inputs. */
static kiln_status topo_sort(ag_node *head, uint64_t mark, ptr_list *order) {
  ptr_list stack = {0};
  ptr_list cursor = {0}; /* per stack entry: the next input to visit, as a pointer-sized int */
  kiln_status st = KILN_OK;
  if (!list_push(&stack, head) || !list_push(&cursor, NULL)) st = KILN_ERR_OUT_OF_MEMORY;
  head->mark = mark;
  while (st == KILN_OK && stack.n) {
    ag_node *n = stack.v[stack.n - 1];
    intptr_t next = (intptr_t)cursor.v[cursor.n - 1];
    /* A freed node's inputs are gone; backward stops there with a message. */
    if (!n->freed && next < n->n_in) {
      cursor.v[cursor.n - 1] = (void *)(next + 1);
      ag_entry *e = n->in[next]->ag;
      if (e && e->node && e->node->mark != mark) {
        e->node->mark = mark;
        if (!list_push(&stack, e->node) || !list_push(&cursor, NULL)) st = KILN_ERR_OUT_OF_MEMORY;
      }
      continue;
    }
    stack.n--;
    cursor.n--;
    if (!list_push(order, n)) st = KILN_ERR_OUT_OF_MEMORY;
  }
  kiln_free(stack.v);
  kiln_free(cursor.v);
  return st == KILN_OK ? st : kiln_errorf(st, "kiln_backward: out of memory sorting the tape");
}

static kiln_tensor *accumulate(kiln_tensor *sum, kiln_tensor *g) { return sum ? kiln_add(sum, g) : g; }


/* The leaf's buffer takes the sum: overwritten or added to, by an engine op
 * that writes the buffer's storage in place. */
typedef struct {
  kk_view dst, src;
  bool add;
} assign_call;

static kiln_status run_assign(void *data) {
  assign_call *a = data;
  if (a->add) return kk_binary(KK_ADD, &a->dst, &a->src, &a->dst);
  kk_copy(&a->src, &a->dst);
  return KILN_OK;
}

static void free_assign(void *data) { kiln_free(data); }

static kiln_status assign_into(kiln_tensor *dst, kiln_tensor *src, bool add) {
  if (src->status != KILN_OK) return kiln_errorf(src->status, "%s", src->error);
  assign_call *a = kiln_alloc(sizeof *a);
  if (!a) return kiln_errorf(KILN_ERR_OUT_OF_MEMORY, "kiln_backward: out of memory");
  a->dst = tensor_view_of(dst);
  a->src = tensor_view_of(src);
  a->add = add;
  kiln_engine_var *reads[1] = {src->storage->var}, *writes[1] = {dst->storage->var};
  kiln_status st = tensor_push(dst, run_assign, free_assign, a, reads, 1, writes, 1,
                                    add ? "grad_add" : "grad_write", 0);
  if (st != KILN_OK) kiln_free(a);
  return st;
}

kiln_status kiln_backward(kiln_tensor *head, kiln_tensor *head_grad, bool retain_graph) {
  if (!head) return kiln_errorf(KILN_ERR_INVALID_ARGUMENT, "kiln_backward: head is NULL");
  if (head->status != KILN_OK) return kiln_errorf(head->status, "kiln_backward: %s", head->error);
  ag_entry *he = head->ag;
  if (!he) return kiln_errorf(KILN_ERR_INVALID_ARGUMENT, "kiln_backward: the head was not computed from any tensor with a gradient, inside a record scope");
  if (!head_grad && kiln_tensor_numel(head) != 1)
    return kiln_errorf(KILN_ERR_SHAPE, "kiln_backward: a head of %lld elements needs a head gradient",
                       (long long)kiln_tensor_numel(head));
  if (head_grad && (head_grad->status != KILN_OK || head_grad->ndim != head->ndim || head_grad->dtype != head->dtype ||
                    memcmp(head_grad->shape, head->shape, sizeof(int64_t) * (size_t)head->ndim) != 0))
    return kiln_errorf(KILN_ERR_SHAPE, "kiln_backward: the head gradient must have the head's shape and dtype");
  if (he->node && he->node->freed)
    return kiln_errorf(KILN_ERR_INVALID_ARGUMENT,
                       "kiln_backward: the tape behind this head was freed by an earlier backward (pass retain_graph)");

  uint64_t mark = atomic_fetch_add(&backward_generation, 1) + 1;
  ptr_list order = {0};
  kiln_status st = KILN_OK;
  if (he->node) st = topo_sort(he->node, mark, &order);
  kiln_scope_begin();
  kiln_pause_begin(); /* gradients are not recorded (no higher order yet) */
  /* The buffers backward makes (the seed, zeros) belong on the head's
   * device, where the whole recorded graph is. */
  int was_device = device_swap(head->storage ? head->storage->device : device_current());
  for (size_t k = 0; k < order.n; k++) {
    ag_node *n = order.v[k];
    atomic_fetch_add(&n->refs, 1); /* alive until the end, whatever is released */
    memset(n->grad, 0, sizeof(kiln_tensor *) * (size_t)n->n_out);
  }
  ptr_list leaves = {0}; /* the leaf entries reached */
  kiln_tensor *seed = head_grad ? head_grad : kiln_ones(head->dtype, head->ndim, head->shape);
  if (he->node) {
    he->node->grad[he->index] = seed;
  } else {
    he->pending = seed;
    if (!list_push(&leaves, he)) st = kiln_errorf(KILN_ERR_OUT_OF_MEMORY, "kiln_backward: out of memory");
  }

  for (size_t k = order.n; k-- > 0 && st == KILN_OK;) {
    ag_node *n = order.v[k];
    const kiln_op_def *def = n->custom_def ? n->custom_def : kiln_op_get(n->op);
    kiln_grad_fn fn = n->custom_fn ? n->custom_fn : kiln_op_grad(n->op);
    if (n->freed) {
      st = kiln_errorf(KILN_ERR_INVALID_ARGUMENT, "kiln_backward: the tape through %s was freed by an earlier backward (pass retain_graph)", def->name);
      break;
    }
    if (!fn) {
      st = kiln_errorf(KILN_ERR_UNSUPPORTED, "kiln_backward: %s has no gradient (on the path to a tensor with attach_grad)", def->name);
      break;
    }
    bool any = false;
    for (int o = 0; o < n->n_out; o++) any = any || n->grad[o];
    if (!any) continue;
    enum { LOCAL = 16 };
    bool need[LOCAL], reached[LOCAL];
    kiln_tensor *in_grad[LOCAL];
    bool big = n->n_in > LOCAL || n->n_out > LOCAL;
    bool *needp = big ? kiln_calloc((size_t)n->n_in, sizeof(bool)) : need;
    bool *reachedp = big ? kiln_calloc((size_t)n->n_out, sizeof(bool)) : reached;
    kiln_tensor **gp = big ? kiln_calloc((size_t)n->n_in, sizeof(kiln_tensor *)) : in_grad;
    if (!needp || !reachedp || !gp) {
      st = kiln_errorf(KILN_ERR_OUT_OF_MEMORY, "kiln_backward: out of memory");
      if (big) {
        kiln_free(needp);
        kiln_free(reachedp);
        kiln_free(gp);
      }
      break;
    }
    for (int o = 0; o < n->n_out; o++) {
      reachedp[o] = n->grad[o] != NULL;
      if (!n->grad[o]) n->grad[o] = kiln_zeros(n->out[o]->dtype, n->out[o]->ndim, n->out[o]->shape);
    }
    for (int i = 0; i < n->n_in; i++) {
      ag_entry *e = n->in[i]->ag;
      needp[i] = e && (e->node || e->req != KILN_GRAD_NULL);
      gp[i] = NULL;
    }
    kiln_grad_call call = {def, n->attrs, n->n_in, n->n_out, n->in, n->out, n->grad, reachedp, needp, gp, n->ctx};
    st = fn(&call);
    for (int i = 0; st == KILN_OK && i < n->n_in; i++) {
      if (!needp[i]) continue;
      if (!gp[i]) {
        st = kiln_errorf(KILN_ERR_UNSUPPORTED, "kiln_backward: %s gives no gradient for its input %d", def->name, i);
        break;
      }
      ag_entry *e = n->in[i]->ag;
      if (e->node) {
        e->node->grad[e->index] = accumulate(e->node->grad[e->index], gp[i]);
      } else {
        if (!e->pending && !list_push(&leaves, e)) st = kiln_errorf(KILN_ERR_OUT_OF_MEMORY, "kiln_backward: out of memory");
        e->pending = accumulate(e->pending, gp[i]);
      }
    }
    if (big) {
      kiln_free(needp);
      kiln_free(reachedp);
      kiln_free(gp);
    }
  }

  for (size_t k = 0; k < leaves.n; k++) {
    ag_entry *e = leaves.v[k];
    if (st == KILN_OK && e->req != KILN_GRAD_NULL) st = assign_into(e->buffer, e->pending, e->req == KILN_GRAD_ADD);
    e->pending = NULL;
  }
  kiln_pause_end();
  device_swap(was_device);
  kiln_scope_end(); /* the pushed assignments hold the storage they read */

  for (size_t k = 0; k < order.n; k++) {
    ag_node *n = order.v[k];
    if (!retain_graph && !n->freed) {
      n->freed = true;
      for (int i = 0; i < n->n_in; i++) kiln_tensor_release(n->in[i]);
      for (int i = 0; i < n->n_out; i++) kiln_tensor_release(n->out[i]);
    }
    node_release(n);
  }
  kiln_free(order.v);
  kiln_free(leaves.v);
  return st;
}
