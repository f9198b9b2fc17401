/* Building graphs: inputs, bound tensors, op nodes recorded by dispatch,
 * symbolic tensors, tracing, and the text and Graphviz dumps. */
#include "graph/graph.h"

#include <pthread.h>
#include <string.h>

#include "imperative/dispatch.h"

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
  int64_t numel;
  kiln_status st = tensor_checked_numel("kiln_graph_input", dt, ndim, shape, &numel);
  if (st != KILN_OK) return kiln_failed(st, "%s", kiln_last_error());
  int id = add_node(g, GRAPH_INPUT, 0, 1);
  char *copy = id >= 0 ? kiln_strdup(name) : NULL;
  if (!copy) return kiln_failed(KILN_ERR_OUT_OF_MEMORY, "kiln_graph_input: out of memory");
  graph_node *n = &g->nodes[id];
  n->name = copy;
  n->out[0].dtype = dt;
  n->out[0].ndim = ndim;
  if (ndim) memcpy(n->out[0].shape, shape, sizeof(int64_t) * (size_t)ndim);
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
                         kiln_tensor **out) {
  const kiln_op_def *def = kiln_op_get(id);
  kiln_graph *g = tracing;
  for (int i = 0; i < n_in; i++) {
    kiln_graph *h = NULL;
    if (graph_ref_of(in[i], &h, NULL) < 0) continue;
    if (!g) g = h;
    if (h != g) {
      kiln_status st = kiln_errorf(KILN_ERR_INVALID_ARGUMENT, "%s: input %d belongs to another graph%s", def->name, i,
                                   tracing ? " than the one being traced" : "");
      for (int k = 0; k < n_out; k++) out[k] = tensor_new_failed(st, kiln_last_error());
      return st;
    }
  }
  /* Inference as eager dispatch does it, on views without data: the
   * symbolic inputs' strides are the ones the plan will give them. */
  enum { LOCAL = 8 };
  kk_view local[LOCAL], local_out[LOCAL];
  kiln_out_desc local_desc[LOCAL];
  kk_view *vin = n_in <= LOCAL ? local : kiln_alloc(sizeof(kk_view) * (size_t)n_in);
  kk_view *vout = n_out <= LOCAL ? local_out : kiln_alloc(sizeof(kk_view) * (size_t)n_out);
  kiln_out_desc *desc = n_out <= LOCAL ? local_desc : kiln_alloc(sizeof(kiln_out_desc) * (size_t)n_out);
  kiln_op_call c = {.def = def, .n_in = n_in, .n_out = n_out, .in = vin, .out = vout};
  memcpy(c.attrs, attrs, sizeof(kiln_attr_value) * KILN_MAX_ATTRS);
  kiln_status st = KILN_OK;
  int node = -1;
  if (!vin || !vout || !desc) {
    st = kiln_errorf(KILN_ERR_OUT_OF_MEMORY, "%s: out of memory building a graph", def->name);
    goto done;
  }
  for (int i = 0; i < n_in; i++) vin[i] = tensor_view_of(in[i]);
  memset(desc, 0, sizeof(kiln_out_desc) * (size_t)n_out);
  if ((st = def->infer(&c, desc)) != KILN_OK) goto done;
  for (int k = 0; k < n_out; k++) {
    int64_t numel;
    if ((st = tensor_checked_numel(def->name, desc[k].dtype, desc[k].ndim, desc[k].shape, &numel)) != KILN_OK) goto done;
  }
  /* Bound tensors first, so node order stays a topological order. */
  for (int i = 0; i < n_in; i++) {
    if (in[i]->sym) continue;
    if (bind(g, in[i]) < 0) {
      st = kiln_errorf(KILN_ERR_OUT_OF_MEMORY, "%s: out of memory building a graph", def->name);
      goto done;
    }
  }
  node = add_node(g, GRAPH_OP, n_in, n_out);
  if (node < 0) {
    st = kiln_errorf(KILN_ERR_OUT_OF_MEMORY, "%s: out of memory building a graph", def->name);
    goto done;
  }
  for (int i = 0; i < n_in; i++) {
    int index = 0, src = graph_ref_of(in[i], NULL, &index);
    g->nodes[node].in[i] = (graph_ref){src >= 0 ? src : bind(g, in[i]), index};
  }
  graph_node *n = &g->nodes[node];
  n->op = id;
  memcpy(n->attrs, c.attrs, sizeof n->attrs);
  memcpy(n->out, desc, sizeof(kiln_out_desc) * (size_t)n_out);
  for (int k = 0; k < n_out; k++) out[k] = symbolic(g, node, k);
done:
  if (st != KILN_OK)
    for (int k = 0; k < n_out; k++) out[k] = tensor_new_failed(st, kiln_last_error());
  if (vin != local) kiln_free(vin);
  if (vout != local_out) kiln_free(vout);
  if (desc != local_desc) kiln_free(desc);
  return st;
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
