/* Building graphs: inputs, bound tensors, op nodes recorded by dispatch,
 * symbolic tensors, tracing, and the text and Graphviz dumps. */
#include "graph/graph.h"

#include <pthread.h>
#include <string.h>

#include "imperative/autograd.h"
#include "imperative/dispatch.h"
#include "kernels/elementwise.h"

static _Thread_local kiln_graph *tracing;

/* ------------------------------------------------------------ lifetime */

static void value_free(void *sym) {
  graph_value *v = sym;
  kiln_graph_release(v->graph);
  kiln_free(v);
}

static const char *value_origin(const void *sym) {
  const graph_value *v = sym;
  const graph_node *n = &v->graph->nodes[v->ref.node];
  return n->kind == GRAPH_OP ? kiln_op_get(n->op)->name : n->kind == GRAPH_INPUT ? "a graph input" : "a bound tensor";
}

static void install_hooks(void) {
  tensor_sym_free = value_free;
  tensor_sym_origin = value_origin;
  dispatch_graph_wants = graph_wants;
  dispatch_graph_record = graph_record;
}

static void hooks_once(void) {
  static pthread_once_t once = PTHREAD_ONCE_INIT;
  pthread_once(&once, install_hooks);
}

kiln_graph *kiln_graph_new(void) {
  hooks_once();
  kiln_graph *g = kiln_calloc(1, sizeof *g);
  if (!g) {
    kiln_errorf(KILN_ERR_OUT_OF_MEMORY, "kiln_graph_new: out of memory");
    return NULL;
  }
  atomic_init(&g->refs, 1);
  return g;
}

kiln_graph *kiln_graph_retain(kiln_graph *g) {
  if (g) atomic_fetch_add(&g->refs, 1);
  return g;
}

void kiln_graph_release(kiln_graph *g) {
  if (!g || atomic_fetch_sub(&g->refs, 1) != 1) return;
  for (int i = 0; i < g->n; i++) {
    graph_node *n = &g->nodes[i];
    kiln_free(n->in);
    kiln_free(n->out);
    kiln_free(n->name);
    kiln_tensor_release(n->bound);
  }
  kiln_free(g->nodes);
  kiln_free(g);
}

/* A new node (zeroed) with room for its inputs and outputs; -1 when out
 * of memory. */
static int add_node(kiln_graph *g, graph_node_kind kind, int n_in, int n_out) {
  if (g->n == g->cap) {
    int cap = g->cap ? 2 * g->cap : 32;
    graph_node *nodes = kiln_alloc(sizeof *nodes * (size_t)cap);
    if (!nodes) return -1;
    if (g->n) memcpy(nodes, g->nodes, sizeof *nodes * (size_t)g->n);
    kiln_free(g->nodes);
    g->nodes = nodes;
    g->cap = cap;
  }
  graph_node *n = &g->nodes[g->n];
  memset(n, 0, sizeof *n);
  n->kind = kind;
  n->n_in = n_in;
  n->n_out = n_out;
  n->in = n_in ? kiln_calloc((size_t)n_in, sizeof *n->in) : NULL;
  n->out = kiln_calloc((size_t)(n_out ? n_out : 1), sizeof *n->out);
  if ((n_in && !n->in) || !n->out) {
    kiln_free(n->in);
    kiln_free(n->out);
    return -1;
  }
  return g->n++;
}

static kiln_tensor *symbolic(kiln_graph *g, int node, int index) {
  const kiln_out_desc *d = &g->nodes[node].out[index];
  graph_value *v = kiln_alloc(sizeof *v);
  if (!v) return tensor_new_failed(KILN_ERR_OUT_OF_MEMORY, "out of memory building a graph");
  v->graph = kiln_graph_retain(g);
  v->ref = (graph_ref){node, index};
  /* The strides the plan will give the value: a view's own, else
   * contiguous (every computed value gets a fresh buffer). */
  int64_t strides[KILN_MAX_DIMS];
  contiguous_strides(d->ndim, d->shape, strides);
  const graph_node *n = &g->nodes[node];
  bool view = n->kind == GRAPH_OP && (kiln_op_get(n->op)->flags & KILN_OP_VIEW);
  kiln_tensor *t = tensor_new_symbolic(d->dtype, d->ndim, d->shape, view ? d->strides : strides, v);
  if (tensor_failed(t)) value_free(v);
  return t;
}

kiln_tensor *kiln_graph_input(kiln_graph *g, const char *name, kiln_dtype dt, int ndim, const int64_t *shape) {
  if (!g || !name || !*name)
    return kiln_failed(KILN_ERR_INVALID_ARGUMENT, "kiln_graph_input: %s", g ? "name is empty" : "graph is NULL");
  if (kiln_dtype_size(dt) == 0 || ndim < 0 || ndim > KILN_MAX_DIMS || (ndim && !shape))
    return kiln_failed(KILN_ERR_INVALID_ARGUMENT, "kiln_graph_input: %s: bad dtype or %d dims", name, ndim);
  for (int i = 0; i < g->n; i++)
    if (g->nodes[i].kind == GRAPH_INPUT && !strcmp(g->nodes[i].name, name))
      return kiln_failed(KILN_ERR_INVALID_ARGUMENT, "kiln_graph_input: the graph already has an input '%s'", name);
  /* An unknown dim (-1) is built with 1; runs with other sizes rebuild
   * the graph for them (graph_specialize). */
  int64_t example[KILN_MAX_DIMS], numel;
  unsigned unknown = 0;
  for (int d = 0; d < ndim; d++) {
    example[d] = shape[d] == -1 ? 1 : shape[d];
    if (shape[d] == -1) unknown |= 1u << d;
  }
  kiln_status st = tensor_checked_numel("kiln_graph_input", dt, ndim, example, &numel);
  if (st != KILN_OK) return kiln_failed(st, "%s", kiln_last_error());
  int id = add_node(g, GRAPH_INPUT, 0, 1);
  char *copy = id >= 0 ? kiln_strdup(name) : NULL;
  if (!copy) return kiln_failed(KILN_ERR_OUT_OF_MEMORY, "kiln_graph_input: out of memory");
  graph_node *n = &g->nodes[id];
  n->name = copy;
  n->unknown = unknown;
  n->out[0].dtype = dt;
  n->out[0].ndim = ndim;
  if (ndim) memcpy(n->out[0].shape, example, sizeof(int64_t) * (size_t)ndim);
  g->n_inputs++;
  return tensor_autorelease(symbolic(g, id, 0));
}

/* ------------------------------------------------------------ recording */

bool graph_tracing(void) { return tracing != NULL; }

bool graph_wants(int n_in, kiln_tensor *const *in) {
  if (tracing) return true;
  for (int i = 0; i < n_in; i++)
    if (in[i] && in[i]->sym) return true;
  return false;
}

kiln_status graph_trace_begin(kiln_graph *g) {
  hooks_once();
  if (tracing) return kiln_errorf(KILN_ERR_INVALID_ARGUMENT, "a trace is already active on this thread");
  tracing = g;
  return KILN_OK;
}

void graph_trace_end(void) { tracing = NULL; }

kiln_graph *graph_trace_suspend(void) {
  kiln_graph *g = tracing;
  tracing = NULL;
  return g;
}

void graph_trace_resume(kiln_graph *g) { tracing = g; }

int graph_ref_of(const kiln_tensor *t, kiln_graph **g, int *index) {
  if (!t || !t->sym) return -1;
  const graph_value *v = t->sym;
  if (g) *g = v->graph;
  if (index) *index = v->ref.index;
  return v->ref.node;
}

/* The node standing for a concrete tensor in g: one per tensor, so the
 * same parameter used twice is one input of the plan. */
static int bind(kiln_graph *g, kiln_tensor *t) {
  for (int i = 0; i < g->n; i++)
    if (g->nodes[i].kind == GRAPH_BOUND && g->nodes[i].bound == t) return i;
  int id = add_node(g, GRAPH_BOUND, 0, 1);
  if (id < 0) return -1;
  graph_node *n = &g->nodes[id];
  n->bound = kiln_tensor_retain(t);
  n->out[0].dtype = t->dtype;
  n->out[0].ndim = t->ndim;
  memcpy(n->out[0].shape, t->shape, sizeof t->shape);
  memcpy(n->out[0].strides, t->strides, sizeof t->strides);
  return id;
}

kiln_status graph_record(kiln_op_id id, int n_in, kiln_tensor *const *in, const kiln_attr_value *attrs, int n_out,
                         const kiln_out_desc *desc, kiln_tensor **out) {
  const kiln_op_def *def = kiln_op_get(id);
  kiln_graph *g = tracing;
  kiln_status st = KILN_OK;
  for (int i = 0; i < n_in && st == KILN_OK; i++) {
    kiln_graph *h = NULL;
    if (graph_ref_of(in[i], &h, NULL) < 0) continue;
    if (!g) g = h;
    if (h != g)
      st = kiln_errorf(KILN_ERR_INVALID_ARGUMENT, "%s: input %d belongs to another graph%s", def->name, i,
                       tracing ? " than the one being traced" : "");
  }
  /* Bound tensors first, so node order stays a topological order. */
  for (int i = 0; i < n_in && st == KILN_OK; i++)
    if (!in[i]->sym && bind(g, in[i]) < 0) st = kiln_errorf(KILN_ERR_OUT_OF_MEMORY, "%s: out of memory building a graph", def->name);
  int node = st == KILN_OK ? add_node(g, GRAPH_OP, n_in, n_out) : -1;
  if (st == KILN_OK && node < 0) st = kiln_errorf(KILN_ERR_OUT_OF_MEMORY, "%s: out of memory building a graph", def->name);
  if (st != KILN_OK) {
    for (int k = 0; k < n_out; k++) out[k] = tensor_new_failed(st, kiln_last_error());
    return st;
  }
  graph_node *n = &g->nodes[node];
  for (int i = 0; i < n_in; i++) {
    int index = 0, src = graph_ref_of(in[i], NULL, &index);
    n->in[i] = (graph_ref){src >= 0 ? src : bind(g, in[i]), index};
  }
  n->op = id;
  memcpy(n->attrs, attrs, sizeof n->attrs);
  memcpy(n->out, desc, sizeof(kiln_out_desc) * (size_t)n_out);
  for (int k = 0; k < n_out; k++) out[k] = symbolic(g, node, k);
  return KILN_OK;
}

kiln_graph *graph_specialize(kiln_graph *g, int n_nodes, kiln_tensor *const *inputs, int n_out, const graph_ref *outputs,
                             int *map) {
  kiln_graph *h = kiln_graph_new();
  int *first = kiln_alloc(sizeof(int) * ((size_t)n_nodes + 1)), total = 0;
  for (int i = 0; first && i < n_nodes; i++) first[i] = total, total += g->nodes[i].n_out;
  kiln_tensor **val = kiln_calloc((size_t)total + 1, sizeof(kiln_tensor *));
  bool *needed = kiln_calloc((size_t)n_nodes + 1, sizeof(bool));
  if (!h || !first || !val || !needed) {
    kiln_graph_release(h), kiln_free(first), kiln_free(val), kiln_free(needed);
    kiln_errorf(KILN_ERR_OUT_OF_MEMORY, "out of memory rebuilding a graph");
    return NULL;
  }
  /* What the outputs need (nodes are in topological order), and the
   * inputs, which every run passes. */
  for (int k = 0; k < n_out; k++) needed[outputs[k].node] = true;
  for (int i = n_nodes - 1; i >= 0; i--) {
    const graph_node *n = &g->nodes[i];
    needed[i] = needed[i] || n->kind == GRAPH_INPUT;
    for (int k = 0; needed[i] && k < n->n_in; k++) needed[n->in[k].node] = true;
  }
  /* Every op records, even one on parameters alone, as under the trace
   * that built g; nothing is taped. */
  kiln_graph *outer = graph_trace_suspend();
  kiln_pause_begin();
  graph_trace_begin(h);
  kiln_scope_begin();
  kiln_status st = KILN_OK;
  int input = 0;
  for (int i = 0; i < n_nodes && st == KILN_OK; i++) {
    const graph_node *n = &g->nodes[i];
    map[i] = -1;
    if (!needed[i]) continue;
    if (n->kind == GRAPH_INPUT) {
      const kiln_tensor *t = inputs[input++];
      val[first[i]] = kiln_tensor_retain(kiln_graph_input(h, n->name, n->out[0].dtype, t->ndim, t->shape));
      st = kiln_tensor_status(val[first[i]]);
      map[i] = graph_ref_of(val[first[i]], NULL, NULL);
    } else if (n->kind == GRAPH_BOUND) {
      val[first[i]] = kiln_tensor_retain(n->bound);
      map[i] = bind(h, n->bound);
      if (map[i] < 0) st = kiln_errorf(KILN_ERR_OUT_OF_MEMORY, "out of memory rebuilding a graph");
    } else {
      kiln_tensor *in[64];
      for (int k = 0; k < n->n_in && k < 64; k++) in[k] = val[first[n->in[k].node] + n->in[k].index];
      st = kiln_dispatch_owned(n->op, n->n_in, in, n->attrs, n->n_out, &val[first[i]]);
      if (st != KILN_OK) {
        char label[96];
        graph_node_label(g, i, label, sizeof label);
        st = kiln_errorf(st, "node %s: %s", label, kiln_last_error());
      }
      map[i] = st == KILN_OK ? graph_ref_of(val[first[i]], NULL, NULL) : -1;
    }
  }
  kiln_scope_end();
  graph_trace_end();
  kiln_pause_end();
  graph_trace_resume(outer);
  for (int v = 0; v < total; v++) kiln_tensor_release(val[v]);
  kiln_free(first), kiln_free(val), kiln_free(needed);
  if (st != KILN_OK) {
    kiln_graph_release(h);
    return NULL;
  }
  return h;
}

/* ------------------------------------------------------------ dumps */

void graph_node_label(const kiln_graph *g, int node, char *buf, size_t cap) {
  const graph_node *n = &g->nodes[node];
  if (n->kind == GRAPH_INPUT)
    snprintf(buf, cap, "#%d input '%s'", node, n->name);
  else if (n->kind == GRAPH_BOUND)
    snprintf(buf, cap, "#%d bound", node);
  else
    snprintf(buf, cap, "#%d %s", node, kiln_op_get(n->op)->name);
}

void graph_random_redraw(kiln_op_id op, kiln_attr_value *attrs, uint64_t numel) {
  const kiln_op_def *def = kiln_op_get(op);
  for (int k = 0; k < def->n_attrs; k++) {
    if (!strcmp(def->attrs[k].name, "seed")) attrs[k].i = (int64_t)generator_seed(NULL);
    if (!strcmp(def->attrs[k].name, "offset")) attrs[k].i = (int64_t)generator_reserve(NULL, numel);
  }
}

/* ------------------------------------------------------------ gradients */

kiln_status graph_gradients(kiln_graph *g, kiln_tensor *y, kiln_tensor *head, int n_src, const int *src, kiln_tensor **grads) {
  int yi, y_node = graph_ref_of(y, NULL, &yi), n0 = g->n;
  if (y_node < 0 || tracing != g) return kiln_errorf(KILN_ERR_INVALID_ARGUMENT, "graph_gradients: y is not being traced");
  int *first = kiln_alloc(sizeof(int) * (size_t)(n0 + 1));
  bool *depends = kiln_calloc((size_t)n0 + 1, sizeof(bool));
  int total = 0;
  for (int i = 0; first && i < n0; i++) first[i] = total, total += g->nodes[i].n_out;
  kiln_tensor **val = kiln_calloc((size_t)total + 1, sizeof(kiln_tensor *));
  kiln_tensor **acc = kiln_calloc((size_t)total + 1, sizeof(kiln_tensor *));
  kiln_status st = first && depends && val && acc ? KILN_OK : kiln_errorf(KILN_ERR_OUT_OF_MEMORY, "graph_gradients: out of memory");
  for (int j = 0; st == KILN_OK && j < n_src; j++) depends[src[j]] = true;
  for (int i = 0; st == KILN_OK && i < n0; i++) {
    const graph_node *n = &g->nodes[i];
    for (int k = 0; k < n->n_in; k++) depends[i] = depends[i] || depends[n->in[k].node];
    for (int k = 0; k < n->n_out; k++)
      val[first[i] + k] = n->kind == GRAPH_BOUND ? kiln_tensor_retain(n->bound) : symbolic(g, i, k);
  }
  if (st == KILN_OK) acc[first[y_node] + yi] = kiln_tensor_retain(head);
  for (int i = y_node; st == KILN_OK && i >= 0; i--) {
    graph_node *n = &g->nodes[i];
    bool any = false;
    for (int k = 0; k < n->n_out; k++) any = any || acc[first[i] + k];
    if (n->kind != GRAPH_OP || !any || !depends[i]) continue;
    const kiln_op_def *def = kiln_op_get(n->op);
    kiln_grad_fn fn = kiln_op_grad(n->op);
    if (!fn) {
      st = kiln_errorf(KILN_ERR_UNSUPPORTED, "%s has no gradient (on the path to a parameter)", def->name);
      break;
    }
    enum { MAX = 64 };
    kiln_tensor *in[MAX], *out_grad[MAX], *in_grad[MAX] = {0};
    bool need[MAX], reached[MAX];
    if (n->n_in > MAX || n->n_out > MAX) {
      st = kiln_errorf(KILN_ERR_UNSUPPORTED, "%s: more than %d inputs or outputs", def->name, MAX);
      break;
    }
    for (int k = 0; k < n->n_in; k++) {
      in[k] = val[first[n->in[k].node] + n->in[k].index];
      need[k] = depends[n->in[k].node] && kk_is_float(in[k]->dtype);
    }
    for (int k = 0; k < n->n_out; k++) {
      kiln_tensor **a = &acc[first[i] + k];
      reached[k] = *a != NULL;
      if (!*a) {
        *a = kiln_tensor_retain(kiln_zeros(n->out[k].dtype, n->out[k].ndim, n->out[k].shape));
        n = &g->nodes[i]; /* the zeros are a node: g->nodes may have moved */
      }
      out_grad[k] = *a;
    }
    /* The gradient function appends nodes, which may move g->nodes: it
     * gets a copy of the attributes, and n is looked up again after. */
    kiln_attr_value attrs[KILN_MAX_ATTRS];
    memcpy(attrs, n->attrs, sizeof attrs);
    kiln_grad_call call = {def, attrs, n->n_in, n->n_out, in, &val[first[i]], out_grad, reached, need, in_grad, NULL};
    st = fn(&call);
    n = &g->nodes[i];
    for (int k = 0; st == KILN_OK && k < n->n_in; k++) {
      if (!need[k]) continue;
      if (!in_grad[k]) {
        st = kiln_errorf(KILN_ERR_UNSUPPORTED, "%s gives no gradient for its input %d", def->name, k);
        break;
      }
      kiln_tensor **a = &acc[first[n->in[k].node] + n->in[k].index];
      kiln_tensor *sum = *a ? kiln_add(*a, in_grad[k]) : in_grad[k];
      kiln_tensor_release(*a);
      *a = kiln_tensor_retain(sum);
    }
  }
  for (int j = 0; j < n_src; j++) {
    grads[j] = NULL;
    if (st != KILN_OK) continue;
    const graph_node *n = &g->nodes[src[j]];
    kiln_tensor *a = acc[first[src[j]]];
    grads[j] = kiln_tensor_retain(a ? a : kiln_zeros(n->out[0].dtype, n->out[0].ndim, n->out[0].shape));
  }
  for (int i = 0; val && acc && i < total; i++) {
    kiln_tensor_release(val[i]);
    kiln_tensor_release(acc[i]);
  }
  kiln_free(first), kiln_free(depends), kiln_free(val), kiln_free(acc);
  return st;
}
