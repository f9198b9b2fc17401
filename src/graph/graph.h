/* The graph IR and its building (see docs/design.md, "Graphs"). A graph is
 * a list of nodes in creation order, which is a topological order: inputs
 * (placeholders), bound tensors (concrete tensors an op used, captured by
 * reference: parameters) and op applications. Ops given a symbolic tensor,
 * or called while a trace is active on the thread, append a node instead
 * of running (imperative/dispatch.c calls graph_record), so the same op
 * functions build graphs and run eagerly. */
#ifndef KILN_GRAPH_H
#define KILN_GRAPH_H

#include <stdatomic.h>
#include <stdio.h>

#include "ops/op.h"
#include "tensor/tensor.h"

typedef enum { GRAPH_INPUT, GRAPH_BOUND, GRAPH_OP } graph_node_kind;

typedef struct {
  int node, index;
} graph_ref;

typedef struct {
  graph_node_kind kind;
  kiln_op_id op; /* GRAPH_OP */
  kiln_attr_value attrs[KILN_MAX_ATTRS];
  int n_in, n_out;
  graph_ref *in;
  kiln_out_desc *out; /* dtype and shape; views' strides and offset */
  char *name;         /* GRAPH_INPUT */
  unsigned unknown;   /* GRAPH_INPUT: bit d set when dim d is unknown (the graph is built with 1 there) */
  kiln_tensor *bound; /* GRAPH_BOUND: retained */
} graph_node;

struct kiln_graph {
  atomic_long refs;
  graph_node *nodes;
  int n, cap;
  int n_inputs;
};

/* What a symbolic tensor's sym points to. */
typedef struct {
  kiln_graph *graph; /* retained */
  graph_ref ref;
} graph_value;

/* True when an op on these inputs must be recorded into a graph: a trace is
 * active on this thread, or an input is symbolic. */
bool graph_wants(int n_in, kiln_tensor *const *in);
/* Appends op id to the graph (the trace's, else the symbolic inputs'),
 * after dispatch has checked and inferred the call exactly as it does
 * eagerly (so errors are found at the call), and gives symbolic outputs
 * shaped by desc. Same contract as kiln_dispatch_owned. */
kiln_status graph_record(kiln_op_id id, int n_in, kiln_tensor *const *in, const kiln_attr_value *attrs, int n_out,
                         const kiln_out_desc *desc, kiln_tensor **out);

/* Tracing: ops called on this thread append to g until the matching end.
 * Suspend/resume bracket work inside a trace that must run eagerly
 * (initialising a parameter the first forward shapes). */
kiln_status graph_trace_begin(kiln_graph *g);
void graph_trace_end(void);
kiln_graph *graph_trace_suspend(void);
void graph_trace_resume(kiln_graph *g);
bool graph_tracing(void);

/* The node producing a symbolic tensor, or -1 (and the graph in *g). */
int graph_ref_of(const kiln_tensor *t, kiln_graph **g, int *index);

/* Gives a random op's attributes (seed, offset) fresh counters from this
 * thread's default generator for numel values: a plan draws anew at each
 * run, as eager calls do. */
void graph_random_redraw(kiln_op_id op, kiln_attr_value *attrs, uint64_t numel);

/* Appends to g, which must be the thread's trace, the gradient of y (a
 * value of g) with respect to the first output of each src node, given
 * the head gradient head (a value of g): the registry's gradient functions
 * run on symbolic tensors, so they become nodes. grads[j] are new handles
 * the caller releases (zeros where no path leads). */
kiln_status graph_gradients(kiln_graph *g, kiln_tensor *y, kiln_tensor *head, int n_src, const int *src, kiln_tensor **grads);

/* kiln_graph_compile on graph values, of the graph as it stood with its
 * first n_nodes nodes (a forward plan compiled after backward nodes were
 * added), and with a cut: the values cut[j] are not computed but given to
 * each run after the graph's own inputs, in that order (a backward plan
 * takes what the forward run saved instead of recomputing it). */
kiln_plan *graph_compile_refs(kiln_graph *g, int n_nodes, int n_out, const graph_ref *outputs, int n_cut,
                              const graph_ref *cut, const kiln_compile_options *o);

/* What g's first n_nodes nodes compute for outputs, built again into a
 * new graph with g's inputs shaped like inputs[i] (one per GRAPH_INPUT, in
 * order): every op's inference runs anew, so a shape the graph cannot
 * take fails here with the node named. map[i] is old node i's node in the
 * new graph (-1 for a node the outputs do not need). NULL +
 * kiln_last_error on failure. */
kiln_graph *graph_specialize(kiln_graph *g, int n_nodes, kiln_tensor *const *inputs, int n_out, const graph_ref *outputs,
                             int *map);

/* Another reference to a plan (kiln_plan_free drops one). */
kiln_plan *graph_plan_retain(kiln_plan *p);

/* The graph a plan was compiled from (as traced, before the passes) and
 * the values of it the plan's outputs compute. */
kiln_graph *graph_plan_source(const kiln_plan *p, int *n_out, const graph_ref **outputs);

/* A description of a node for messages and dumps: "#12 relu". */
void graph_node_label(const kiln_graph *g, int node, char *buf, size_t cap);

#endif
