/* Compiling a graph into a plan, and running plans.
 *
 * Passes, each switchable off (kiln_compile_options, KILN_DISABLE_PASSES)
 * and each followed by a verifier in debug builds: on the graph,
 * algebraic simplification, common-subexpression elimination, constant
 * folding and dead-code elimination, recorded as forwarding references (a
 * node "is" another value) resolved when the plan is laid out; on the
 * laid-out steps, fusion (activations into a GEMM's epilogue, elementwise
 * chains into one loop), the schedule (parallel segments) and memory
 * planning.
 *
 * A plan is a list of steps (kernel calls) over values: the run's inputs,
 * bound tensors (parameters, folded constants), views, fresh output
 * tensors, and buffers in one arena owned by the plan, placed by liveness
 * so buffers are reused as soon as their last reader has run. A run is one
 * engine op (or one per parallel segment) reading the inputs and bound
 * tensors and writing the outputs and the arena: no dispatch, no
 * allocation but the outputs. A plan of a graph with unknown input dims
 * keeps variants compiled for the other sizes it has run at. */
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "device/device.h"
#include "engine/engine.h"
#include "graph/graph.h"
#include "imperative/dispatch.h"
#include "kernels/elementwise.h"
#include "tensor/tensor.h"

typedef enum { VAL_INPUT, VAL_BOUND, VAL_ARENA, VAL_VIEW, VAL_OUTPUT } value_kind;

typedef struct {
  value_kind kind;
  kiln_dtype dtype;
  int ndim;
  int64_t shape[KILN_MAX_DIMS], strides[KILN_MAX_DIMS];
  int index;          /* VAL_INPUT: the input; VAL_OUTPUT: the output; VAL_VIEW: the base value */
  int64_t offset;     /* VAL_VIEW: elements from the base's first; VAL_ARENA: bytes into the arena */
  kiln_tensor *bound; /* VAL_BOUND, retained */
} plan_value;

typedef struct {
  kiln_op_id op;
  int node; /* in the source graph, for messages */
  kiln_attr_value attrs[KILN_MAX_ATTRS];
  int n_in, n_out;
  int *in, *out; /* value ids */
  kk_fused_program *fused; /* a fused elementwise chain (in: its inputs), or NULL */
} plan_step;

/* A part of the schedule: steps run in order by one engine op, after the
 * segments it reads values from. */
typedef struct {
  int n_steps, *steps; /* in plan order */
  int n_deps, *deps;
  int n_uses, *uses; /* the input, bound and output values it touches (their variables go to the engine) */
  int64_t work;
  kiln_engine_var *var; /* written by each run of the segment */
} plan_segment;

enum { MAX_SEGMENTS = 64 }; /* a reach set is one word */

/* The plan for inputs of other sizes where the graph has unknown dims:
 * the graph rebuilt for them and compiled (the cache is small; least
 * recently used goes). */
enum { MAX_VARIANTS = 8 };
typedef struct {
  int64_t (*shapes)[KILN_MAX_DIMS]; /* per input */
  kiln_plan *plan;
  uint64_t last_use;
} plan_variant;

struct kiln_plan {
  atomic_long refs; /* the caller's, and tape nodes' (graph_plan_retain) */
  kiln_compile_options opts;
  kiln_graph *graph;
  int n_nodes; /* of graph, the ones compiled */
  int n_inputs, n_outputs, n_values, n_steps;
  /* The values the inputs are: the graph's inputs in creation order,
   * then the values given in place of their computation (graph_compile_refs). */
  graph_ref *input_refs;
  int *outputs;     /* value ids */
  graph_ref *output_refs; /* the graph values they compute, as given to compile */
  plan_value *values;
  plan_step *steps;
  size_t arena_bytes;
  void *arena;
  kiln_engine *engine;
  int device, queue; /* where runs go: the parameters' device, else the compiling thread's */
  kiln_engine_var *arena_var;
  /* One segment, the whole plan, unless independent branches each carry
   * enough work to be worth a thread of their own. */
  int n_segments;
  plan_segment *segments;
  int *segment_of;        /* per step */
  uint64_t *reach;        /* per segment: the segments it runs after, transitively */
  bool polymorphic;       /* an input has unknown dims */
  /* What each run pushes, found once at compile time rather than by a
   * scan of every value and step per call. */
  int n_bound;
  kiln_engine_var **bound_vars;
  bool has_random;
  pthread_mutex_t variant_lock;
  plan_variant variants[MAX_VARIANTS];
  int n_variants;
  uint64_t variant_clock;
  kiln_plan_stats stats;
};

/* A plan runs where its parameters are (data parallelism compiles one
 * per device, each over its own replica), or, without parameters, on the
 * compiling thread's device. */
static kiln_status place(kiln_plan *p) {
  p->device = -1;
  for (int v = 0; v < p->n_values; v++) {
    if (p->values[v].kind != VAL_BOUND) continue;
    int d = p->values[v].bound->storage->device;
    if (p->device < 0) {
      p->device = d;
    } else if (d != p->device) {
      char a[32], b[32];
      return kiln_errorf(KILN_ERR_INVALID_ARGUMENT, "kiln_graph_compile: the graph holds tensors on %s and on %s",
                         kiln_device_name(device_of_index(p->device), a, sizeof a),
                         kiln_device_name(device_of_index(d), b, sizeof b));
    }
  }
  if (p->device < 0) p->device = device_current();
  return device_start(p->device, &p->engine, &p->queue);
}

kiln_compile_options kiln_compile_options_default(void) {
  kiln_compile_options o = {.simplify = true, .cse = true, .fold = true, .dce = true, .fuse = true, .parallel = true,
                            .plan_memory = true};
  const char *off = getenv("KILN_DISABLE_PASSES");
  if (off) {
    o.simplify = !strstr(off, "simplify");
    o.cse = !strstr(off, "cse");
    o.fold = !strstr(off, "fold");
    o.dce = !strstr(off, "dce");
    o.fuse = !strstr(off, "fuse");
    o.parallel = !strstr(off, "parallel");
    o.plan_memory = !strstr(off, "memory");
  }
  return o;
}

/* ------------------------------------------------------------ passes */

typedef struct {
  kiln_graph *g;
  int n; /* the nodes compiled: the graph as it stood with n nodes */
  graph_ref *forward; /* per node (single-output nodes): the value it is, or {-1} */
  int *same_as;       /* per node: an identical earlier node, or itself */
  kiln_tensor **folded; /* per node: its value computed at compile time, or NULL */
  bool *live;
  bool *cut; /* per node: its values come in as inputs */
} pass_state;

static graph_ref resolve(const pass_state *s, graph_ref r) {
  for (;;) {
    if (s->same_as[r.node] != r.node) {
      r.node = s->same_as[r.node];
      continue;
    }
    if (s->forward[r.node].node >= 0 && r.index == 0) {
      r = s->forward[r.node];
      continue;
    }
    return r;
  }
}

static const graph_node *node_at(const pass_state *s, int i) { return &s->g->nodes[i]; }

static bool is_view(const graph_node *n) { return n->kind == GRAPH_OP && (kiln_op_get(n->op)->flags & KILN_OP_VIEW); }

static bool same_desc(const kiln_out_desc *a, const kiln_out_desc *b) {
  return a->dtype == b->dtype && a->ndim == b->ndim && !memcmp(a->shape, b->shape, sizeof(int64_t) * (size_t)a->ndim);
}

/* x * 1, x / 1, x + 0, x - 0, x ^ 1, transpose of a transpose, reshape of
 * a reshape: results equal to a value already there. */
static int simplify(pass_state *s) {
  int changed = 0;
  for (int i = 0; i < s->n; i++) {
    const graph_node *n = node_at(s, i);
    if (n->kind != GRAPH_OP || n->n_out != 1 || n->n_in < 1) continue;
    graph_ref x = resolve(s, n->in[0]);
    const graph_node *src = node_at(s, x.node);
    const kiln_out_desc *xd = &src->out[x.index];
    double f = n->attrs[0].f;
    bool identity = false;
    switch (n->op) {
    case KILN_OP_MUL_SCALAR: case KILN_OP_DIV_SCALAR: case KILN_OP_POW_SCALAR: identity = f == 1; break;
    case KILN_OP_ADD_SCALAR: case KILN_OP_SUB_SCALAR: identity = f == 0; break;
    case KILN_OP_PERMUTE:
      if (src->kind == GRAPH_OP && src->op == KILN_OP_PERMUTE && src->attrs[0].n == n->attrs[0].n) {
        identity = true;
        for (int d = 0; d < n->attrs[0].n; d++) identity = identity && src->attrs[0].ints[n->attrs[0].ints[d]] == d;
        if (identity) {
          s->forward[i] = resolve(s, src->in[0]);
          changed++;
          continue;
        }
      }
      break;
    case KILN_OP_RESHAPE: {
      /* reshape(reshape(y)) is reshape(y) when y is laid out contiguously
       * (a computed value or an input; the node's own strides then hold),
       * unless it keeps dims of its input (-2), which are the inner one's. */
      bool keeps = false;
      for (int d = 0; d < n->attrs[0].n; d++) keeps = keeps || n->attrs[0].ints[d] == -2;
      if (src->kind != GRAPH_OP || src->op != KILN_OP_RESHAPE || keeps) break;
      graph_ref y = resolve(s, src->in[0]);
      const graph_node *base = node_at(s, y.node);
      if (base->kind == GRAPH_BOUND || is_view(base)) break;
      s->g->nodes[i].in[0] = y;
      if (same_desc(&n->out[0], &base->out[y.index])) s->forward[i] = y;
      changed++;
      continue;
    }
    default: break;
    }
    if (identity && same_desc(&n->out[0], xd) && !is_view(n)) {
      s->forward[i] = x;
      changed++;
    }
  }
  return changed;
}

static bool same_attrs(const kiln_op_def *def, const kiln_attr_value *a, const kiln_attr_value *b) {
  for (int k = 0; k < def->n_attrs; k++) {
    if (a[k].i != b[k].i || a[k].n != b[k].n || memcmp(&a[k].f, &b[k].f, sizeof(double))) return false;
    if (a[k].n && memcmp(a[k].ints, b[k].ints, sizeof(int64_t) * (size_t)a[k].n)) return false;
  }
  return true;
}

static uint64_t node_hash(const pass_state *s, const graph_node *n) {
  uint64_t h = 1469598103934665603ull ^ (uint64_t)n->op;
  for (int k = 0; k < n->n_in; k++) {
    graph_ref r = resolve(s, n->in[k]);
    h = (h ^ (uint64_t)r.node) * 1099511628211ull;
    h = (h ^ (uint64_t)r.index) * 1099511628211ull;
  }
  return h;
}

/* An op applied to the same values with the same attributes twice is
 * computed once; random ops never (each call draws anew). */
static int cse(pass_state *s) {
  int n = s->n, merged = 0;
  uint64_t *hash = kiln_alloc(sizeof(uint64_t) * (size_t)(n ? n : 1));
  if (!hash) return 0;
  for (int i = 0; i < n; i++) {
    const graph_node *a = node_at(s, i);
    hash[i] = a->kind == GRAPH_OP ? node_hash(s, a) : 0;
    if (a->kind != GRAPH_OP || (kiln_op_get(a->op)->flags & KILN_OP_RANDOM)) continue;
    for (int j = 0; j < i; j++) {
      const graph_node *b = node_at(s, j);
      if (hash[j] != hash[i] || b->kind != GRAPH_OP || b->op != a->op || b->n_in != a->n_in || s->same_as[j] != j)
        continue;
      bool same = same_attrs(kiln_op_get(a->op), a->attrs, b->attrs);
      for (int k = 0; same && k < a->n_in; k++) {
        graph_ref ra = resolve(s, a->in[k]), rb = resolve(s, b->in[k]);
        same = ra.node == rb.node && ra.index == rb.index;
      }
      if (same) {
        s->same_as[i] = j;
        merged++;
        break;
      }
    }
  }
  kiln_free(hash);
  return merged;
}

/* Ops whose inputs are all known at compile time (creation ops and what is
 * computed from them, never bound parameters, whose values change) are
 * computed now and become constants. */
static int fold(pass_state *s) {
  int folded = 0;
  for (int i = 0; i < s->n; i++) {
    const graph_node *n = node_at(s, i);
    if (n->kind != GRAPH_OP || n->n_out != 1 || s->same_as[i] != i || s->forward[i].node >= 0 ||
        (kiln_op_get(n->op)->flags & KILN_OP_RANDOM))
      continue;
    kiln_tensor *in[16];
    bool constant = n->n_in <= 16;
    for (int k = 0; constant && k < n->n_in; k++) {
      graph_ref r = resolve(s, n->in[k]);
      constant = s->folded[r.node] != NULL && r.index == 0;
      if (constant) in[k] = s->folded[r.node];
    }
    if (!constant) continue;
    kiln_tensor *out;
    if (kiln_dispatch_owned(n->op, n->n_in, in, n->attrs, 1, &out) != KILN_OK) {
      kiln_tensor_release(out);
      continue; /* left to fail at run time, where the message belongs */
    }
    kiln_tensor *c;
    if (kiln_dispatch_owned(KILN_OP_COPY, 1, &out, NULL, 1, &c) != KILN_OK) { /* its own contiguous storage */
      kiln_tensor_release(out);
      kiln_tensor_release(c);
      continue;
    }
    kiln_tensor_release(out);
    s->folded[i] = c;
    folded++;
  }
  return folded;
}

/* The graph verifier, after each pass: a value replaced by another is
 * replaced by an earlier one (so the graph stays acyclic) of the same
 * dtype and shape, and a folded constant has its node's dtype and shape. */
static kiln_status verify_pass(const pass_state *s, const char *pass) {
  for (int i = 0; i < s->n; i++) {
    const graph_node *n = node_at(s, i);
    for (int k = 0; k < n->n_out; k++) {
      graph_ref r = resolve(s, (graph_ref){i, k});
      const kiln_out_desc *was = &n->out[k], *now = &node_at(s, r.node)->out[r.index];
      if (r.node > i || (r.node == i && r.index != k) || !same_desc(was, now)) {
        char a[96], b[96];
        graph_node_label(s->g, i, a, sizeof a);
        graph_node_label(s->g, r.node, b, sizeof b);
        return kiln_errorf(KILN_ERR_INTERNAL, "graph verifier after %s: %s output %d became %s output %d, %s", pass, a, k, b,
                           r.index, r.node > i ? "a later node" : "of another dtype or shape");
      }
    }
    const kiln_tensor *c = s->folded[i];
    if (c && (c->dtype != n->out[0].dtype || c->ndim != n->out[0].ndim ||
              memcmp(c->shape, n->out[0].shape, sizeof(int64_t) * (size_t)c->ndim))) {
      char a[96];
      graph_node_label(s->g, i, a, sizeof a);
      return kiln_errorf(KILN_ERR_INTERNAL, "graph verifier after %s: %s folded to a constant of another dtype or shape", pass, a);
    }
  }
  return KILN_OK;
}

static void mark_live(pass_state *s, graph_ref r) {
  r = resolve(s, r);
  if (s->live[r.node]) return;
  s->live[r.node] = true;
  const graph_node *n = node_at(s, r.node);
  if (s->folded[r.node] || s->cut[r.node]) return;
  for (int k = 0; k < n->n_in; k++) mark_live(s, n->in[k]);
}

/* ------------------------------------------------------------ layout */

static int add_value(kiln_plan *p, int *cap, const kiln_out_desc *d, value_kind kind) {
  if (p->n_values == *cap) {
    int c = *cap ? 2 * *cap : 64;
    plan_value *v = kiln_alloc(sizeof *v * (size_t)c);
    if (!v) return -1;
    if (p->n_values) memcpy(v, p->values, sizeof *v * (size_t)p->n_values);
    kiln_free(p->values);
    p->values = v;
    *cap = c;
  }
  plan_value *v = &p->values[p->n_values];
  memset(v, 0, sizeof *v);
  v->kind = kind;
  v->dtype = d->dtype;
  v->ndim = d->ndim;
  memcpy(v->shape, d->shape, sizeof v->shape);
  contiguous_strides(d->ndim, d->shape, v->strides);
  return p->n_values++;
}

static size_t value_bytes(const plan_value *v) {
  size_t n = kiln_dtype_size(v->dtype);
  for (int d = 0; d < v->ndim; d++) n *= (size_t)v->shape[d];
  return n;
}

static int root_of(const kiln_plan *p, int v) {
  while (p->values[v].kind == VAL_VIEW) v = p->values[v].index;
  return v;
}

/* Places arena values: each lives from the step that writes it to the last
 * step that reads it (through views too), and a freed range is reused
 * first-fit. Without planning every value gets its own range. With
 * segments running in parallel, a range is reused only by a step whose
 * segment runs after every segment that touched the range's last value. */
static kiln_status plan_memory(kiln_plan *p) {
  size_t nv = (size_t)p->n_values + 1;
  int *last = kiln_alloc(sizeof(int) * nv), *dying = kiln_alloc(sizeof(int) * nv);
  int *dies_at = kiln_alloc(sizeof(int) * ((size_t)p->n_steps + 1)); /* per step: a list through dying */
  uint64_t *access = kiln_calloc(nv, sizeof(uint64_t)), *free_access = kiln_alloc(sizeof(uint64_t) * nv);
  size_t *free_off = kiln_alloc(sizeof(size_t) * nv), *free_len = kiln_alloc(sizeof(size_t) * nv);
  bool *taken = kiln_calloc(nv, sizeof(bool)); /* its range went to an in-place output */
  if (!last || !dying || !dies_at || !access || !free_access || !free_off || !free_len || !taken) {
    kiln_free(last), kiln_free(dying), kiln_free(dies_at), kiln_free(access), kiln_free(free_access);
    kiln_free(free_off), kiln_free(free_len), kiln_free(taken);
    return kiln_errorf(KILN_ERR_OUT_OF_MEMORY, "kiln_graph_compile: out of memory planning memory");
  }
  for (int v = 0; v < p->n_values; v++) last[v] = -1;
  for (int s = 0; s < p->n_steps; s++) {
    uint64_t bit = 1ull << p->segment_of[s];
    dies_at[s] = -1;
    for (int k = 0; k < p->steps[s].n_in; k++) {
      int root = root_of(p, p->steps[s].in[k]);
      last[root] = s;
      access[root] |= bit;
    }
    for (int k = 0; k < p->steps[s].n_out; k++) {
      int v = p->steps[s].out[k];
      if (last[v] < s) last[v] = s;
      access[v] |= bit;
    }
  }
  for (int v = p->n_values - 1; v >= 0; v--)
    if (p->values[v].kind == VAL_ARENA && last[v] >= 0) {
      dying[v] = dies_at[last[v]];
      dies_at[last[v]] = v;
    }
  int n_free = 0, in_place = 0;
  size_t top = 0;
  for (int s = 0; s < p->n_steps; s++) {
    const plan_step *ps = &p->steps[s];
    const kiln_op_def *def = kiln_op_get(ps->op);
    int seg = p->segment_of[s];
    uint64_t after = p->reach[seg] | (1ull << seg); /* what this step surely runs after, or in order with */
    for (int k = 0; k < ps->n_out; k++) {
      plan_value *v = &p->values[ps->out[k]];
      if (v->kind != VAL_ARENA) continue;
      /* In place: an elementwise op may write over an input that dies here
       * and has exactly the output's dtype and shape, read without a view,
       * by this input alone (element i is read before it is written, by the
       * same thread; a view of the same buffer, add(a, transpose(a)), would
       * read elements already overwritten). Not copy, whose kernel may be a
       * memcpy. */
      int reuse = -1;
      for (int i = 0; p->opts.plan_memory && (def->flags & KILN_OP_ELEMENTWISE) && ps->op != KILN_OP_COPY && ps->n_out == 1 &&
                      i < ps->n_in && reuse < 0;
           i++) {
        int u = ps->in[i];
        const plan_value *in = &p->values[u];
        bool alone = true;
        for (int j = 0; j < ps->n_in && alone; j++) alone = ps->in[j] == u || root_of(p, ps->in[j]) != u;
        if (alone && in->kind == VAL_ARENA && last[u] == s && !taken[u] && !(access[u] & ~after) && in->dtype == v->dtype &&
            in->ndim == v->ndim && !memcmp(in->shape, v->shape, sizeof(int64_t) * (size_t)v->ndim))
          reuse = u;
      }
      if (reuse >= 0) {
        v->offset = p->values[reuse].offset;
        taken[reuse] = true;
        access[ps->out[k]] |= access[reuse]; /* the range's history goes on with it */
        in_place++;
        continue;
      }
      size_t need = (value_bytes(v) + KILN_ALIGN - 1) / KILN_ALIGN * KILN_ALIGN;
      if (need == 0) need = KILN_ALIGN;
      int fit = -1;
      for (int f = 0; p->opts.plan_memory && f < n_free && fit < 0; f++)
        if (free_len[f] >= need && !(free_access[f] & ~after)) fit = f;
      if (fit >= 0) {
        v->offset = (int64_t)free_off[fit];
        free_off[fit] += need;
        free_len[fit] -= need;
        access[ps->out[k]] |= free_access[fit];
      } else {
        v->offset = (int64_t)top;
        top += need;
      }
    }
    if (!p->opts.plan_memory) continue;
    /* Values whose last reader is this step give their range back. */
    for (int v = dies_at[s]; v >= 0; v = dying[v]) {
      const plan_value *pv = &p->values[v];
      if (taken[v]) continue;
      size_t len = (value_bytes(pv) + KILN_ALIGN - 1) / KILN_ALIGN * KILN_ALIGN;
      free_off[n_free] = (size_t)pv->offset;
      free_access[n_free] = access[v];
      free_len[n_free++] = len ? len : KILN_ALIGN;
    }
  }
  p->arena_bytes = top;
  size_t sum = 0;
  for (int v = 0; v < p->n_values; v++)
    if (p->values[v].kind == VAL_ARENA) sum += value_bytes(&p->values[v]);
  p->stats.arena_bytes = (int64_t)top;
  p->stats.unplanned_bytes = (int64_t)sum;
  p->stats.in_place = in_place;
  kiln_free(last), kiln_free(dying), kiln_free(dies_at), kiln_free(access), kiln_free(free_access);
  kiln_free(free_off), kiln_free(free_len), kiln_free(taken);
  return KILN_OK;
}

static kiln_status add_step(kiln_plan *p, int *cap, const graph_node *n, int node, const int *in, const int *out) {
  if (p->n_steps == *cap) {
    int c = *cap ? 2 * *cap : 64;
    plan_step *s = kiln_alloc(sizeof *s * (size_t)c);
    if (!s) return kiln_errorf(KILN_ERR_OUT_OF_MEMORY, "kiln_graph_compile: out of memory");
    if (p->n_steps) memcpy(s, p->steps, sizeof *s * (size_t)p->n_steps);
    kiln_free(p->steps);
    p->steps = s;
    *cap = c;
  }
  plan_step *s = &p->steps[p->n_steps];
  memset(s, 0, sizeof *s);
  s->op = n->op;
  s->node = node;
  memcpy(s->attrs, n->attrs, sizeof s->attrs);
  s->n_in = n->n_in;
  s->n_out = n->n_out;
  s->in = kiln_alloc(sizeof(int) * (size_t)(n->n_in + n->n_out + 1));
  if (!s->in) return kiln_errorf(KILN_ERR_OUT_OF_MEMORY, "kiln_graph_compile: out of memory");
  s->out = s->in + n->n_in;
  if (n->n_in) memcpy(s->in, in, sizeof(int) * (size_t)n->n_in);
  memcpy(s->out, out, sizeof(int) * (size_t)n->n_out);
  p->n_steps++;
  return KILN_OK;
}

/* ------------------------------------------------------------ fusion */

/* Fusion works on the laid-out steps: a value can disappear into the step
 * that reads it when that step is its only reader, reads it directly (not
 * through a view) and it is no output of the plan. */
typedef struct {
  int *readers;  /* per value: how many step inputs read it (or a view of it) */
  int *reader;   /* per value: the last step that reads it */
  int *producer; /* per value: the step that writes it, or -1 */
  bool *viewed;  /* per value: read through a view somewhere */
} use_info;

static void use_info_free(use_info *u) {
  kiln_free(u->readers), kiln_free(u->reader), kiln_free(u->producer), kiln_free(u->viewed);
}

static bool use_info_build(const kiln_plan *p, use_info *u) {
  size_t n = (size_t)p->n_values + 1;
  u->readers = kiln_calloc(n, sizeof(int));
  u->reader = kiln_calloc(n, sizeof(int));
  u->producer = kiln_alloc(n * sizeof(int));
  u->viewed = kiln_calloc(n, sizeof(bool));
  if (!u->readers || !u->reader || !u->producer || !u->viewed) {
    use_info_free(u);
    return false;
  }
  for (int v = 0; v < p->n_values; v++) u->producer[v] = -1;
  for (int s = 0; s < p->n_steps; s++) {
    const plan_step *ps = &p->steps[s];
    for (int k = 0; k < ps->n_in; k++) {
      int root = root_of(p, ps->in[k]);
      u->readers[root]++;
      u->reader[root] = s;
      if (root != ps->in[k]) u->viewed[root] = true;
    }
    for (int k = 0; k < ps->n_out; k++) u->producer[ps->out[k]] = s;
  }
  return true;
}

/* A value that may vanish into its one reader. */
static bool private_value(const kiln_plan *p, const use_info *u, int v) {
  return p->values[v].kind == VAL_ARENA && u->readers[v] == 1 && !u->viewed[v];
}

static void drop_steps(kiln_plan *p, const bool *gone) {
  int kept = 0;
  for (int s = 0; s < p->n_steps; s++) {
    if (gone[s]) {
      kiln_free(p->steps[s].in);
      kiln_free(p->steps[s].fused);
      continue;
    }
    p->steps[kept++] = p->steps[s];
  }
  p->n_steps = kept;
}

/* Which fused instruction an op is: float unary ops, binary arithmetic and
 * their scalar forms (not comparisons, logic or where, whose outputs or
 * inputs are not the chain's dtype). */
static bool fusable_op(kiln_op_id op, bool *binary, bool *scalar) {
  *scalar = op >= KILN_OP_ADD_SCALAR && op <= KILN_OP_MINIMUM_SCALAR;
  *binary = *scalar || (op >= KILN_OP_ADD && op <= KILN_OP_MINIMUM);
  return *binary || (op >= KILN_OP_NEG && op <= KILN_OP_CLIP) || op == KILN_OP_ERF;
}

static bool fusable_step(const kiln_plan *p, const plan_step *ps) {
  bool binary, scalar;
  if (ps->n_out != 1 || !fusable_op(ps->op, &binary, &scalar)) return false;
  kiln_dtype dt = p->values[ps->out[0]].dtype;
  if (dt != KILN_F32 && dt != KILN_F64) return false;
  for (int k = 0; k < ps->n_in; k++)
    if (p->values[ps->in[k]].dtype != dt) return false;
  return true;
}

static bool same_shape(const plan_value *a, const plan_value *b) {
  return a->ndim == b->ndim && !memcmp(a->shape, b->shape, sizeof(int64_t) * (size_t)a->ndim);
}

/* linear followed by relu, sigmoid or tanh of its output alone: the
 * activation moves into the GEMM's epilogue (linear's attribute). */
static int fuse_epilogues(kiln_plan *p, bool *gone) {
  use_info u;
  if (!use_info_build(p, &u)) return 0;
  int fused = 0;
  for (int s = 0; s < p->n_steps; s++) {
    plan_step *lin = &p->steps[s];
    if (lin->op != KILN_OP_LINEAR || lin->attrs[0].i != KILN_ACT_NONE || !private_value(p, &u, lin->out[0])) continue;
    plan_step *act = &p->steps[u.reader[lin->out[0]]];
    int code = act->op == KILN_OP_RELU ? KILN_ACT_RELU : act->op == KILN_OP_SIGMOID ? KILN_ACT_SIGMOID
                                   : act->op == KILN_OP_TANH ? KILN_ACT_TANH : KILN_ACT_NONE;
    if (code == KILN_ACT_NONE) continue;
    lin->attrs[0].i = code;
    lin->out[0] = act->out[0];
    lin->node = act->node; /* the step now computes the activation's node */
    gone[act - p->steps] = true;
    fused++;
  }
  use_info_free(&u);
  return fused;
}

/* Appends the instructions of the chain ending at step s (the steps whose
 * value only s reads are in the chain: absorbed[t] == s) and returns the
 * register of s's result. Leaves are the chain's inputs, each once. */
static int emit_chain(const kiln_plan *p, const use_info *u, const int *absorbed, int s, kk_fused_program *prog,
                      int *leaves) {
  const plan_step *ps = &p->steps[s];
  bool binary, scalar;
  fusable_op(ps->op, &binary, &scalar);
  kk_fused_instr ins = {.binary = binary, .op = kiln_op_get(ps->op)->code, .tag = (int)ps->op};
  if (scalar) {
    ins.scalar = ps->attrs[0].f;
    ins.src[1] = KK_FUSED_SCALAR;
  } else if (!binary) {
    ins.a = ps->attrs[0].f;
    ins.b = ps->attrs[1].f;
  }
  for (int k = 0; k < ps->n_in; k++) {
    int v = ps->in[k], t = u->producer[v];
    if (t >= 0 && absorbed[t] == s) {
      ins.src[k] = -1 - emit_chain(p, u, absorbed, t, prog, leaves);
      continue;
    }
    int leaf = 0;
    while (leaf < prog->n_inputs && leaves[leaf] != v) leaf++;
    if (leaf == prog->n_inputs) leaves[prog->n_inputs++] = v;
    ins.src[k] = leaf;
  }
  prog->instr[prog->n_instr] = ins;
  return prog->n_instr++;
}

/* Chains of float elementwise ops, each value read only by the next op
 * and shaped like the chain's output (so nothing is computed twice under
 * broadcasting), become one step: one loop over the output instead of a
 * pass and a buffer per op. Returns the number of steps removed, or -1
 * when out of memory. */
static int fuse_elementwise(kiln_plan *p, bool *gone) {
  use_info u;
  if (!use_info_build(p, &u)) return -1;
  int n = p->n_steps, removed = 0;
  int *absorbed = kiln_alloc(sizeof(int) * (size_t)(n + 1)), *size = kiln_alloc(sizeof(int) * (size_t)(n + 1)),
      *leaves = kiln_alloc(sizeof(int) * (size_t)(n + 1));
  if (!absorbed || !size || !leaves) {
    kiln_free(absorbed), kiln_free(size), kiln_free(leaves);
    use_info_free(&u);
    return -1;
  }
  for (int t = 0; t < n; t++) {
    absorbed[t] = -1;
    size[t] = 1;
    leaves[t] = p->steps[t].n_in;
    const plan_step *pt = &p->steps[t];
    if (gone[t] || !fusable_step(p, pt)) continue;
    for (int k = 0; k < pt->n_in; k++) {
      int v = pt->in[k], s = u.producer[v];
      if (s < 0 || gone[s] || !fusable_step(p, &p->steps[s]) || !private_value(p, &u, v) ||
          !same_shape(&p->values[v], &p->values[pt->out[0]]) || size[t] + size[s] > KK_FUSED_MAX_INSTR ||
          leaves[t] - 1 + leaves[s] > KK_FUSED_MAX_INPUTS)
        continue;
      absorbed[s] = t;
      size[t] += size[s];
      leaves[t] += leaves[s] - 1;
    }
  }
  int status = 0;
  for (int t = 0; t < n && status == 0; t++) {
    if (size[t] < 2 || absorbed[t] >= 0) continue;
    kk_fused_program *prog = kiln_calloc(1, sizeof *prog);
    int *in = kiln_alloc(sizeof(int) * (KK_FUSED_MAX_INPUTS + 1));
    if (!prog || !in) {
      kiln_free(prog), kiln_free(in);
      status = -1;
      break;
    }
    int leaf_values[KK_FUSED_MAX_INPUTS * 2];
    emit_chain(p, &u, absorbed, t, prog, leaf_values);
    plan_step *pt = &p->steps[t];
    memcpy(in, leaf_values, sizeof(int) * (size_t)prog->n_inputs);
    in[prog->n_inputs] = pt->out[0];
    kiln_free(pt->in);
    pt->in = in;
    pt->out = in + prog->n_inputs;
    pt->n_in = prog->n_inputs;
    pt->fused = prog;
    removed += size[t] - 1;
  }
  for (int t = 0; t < n; t++)
    if (absorbed[t] >= 0) gone[t] = true;
  kiln_free(absorbed), kiln_free(size), kiln_free(leaves);
  use_info_free(&u);
  return status < 0 ? -1 : removed;
}

static kiln_status fuse(kiln_plan *p) {
  bool *gone = kiln_calloc((size_t)p->n_steps + 1, sizeof(bool));
  if (!gone) return kiln_errorf(KILN_ERR_OUT_OF_MEMORY, "kiln_graph_compile: out of memory fusing");
  int epilogues = fuse_epilogues(p, gone);
  drop_steps(p, gone);
  memset(gone, 0, sizeof(bool) * ((size_t)p->n_steps + 1));
  int chained = fuse_elementwise(p, gone);
  if (chained >= 0) drop_steps(p, gone);
  kiln_free(gone);
  if (chained < 0) return kiln_errorf(KILN_ERR_OUT_OF_MEMORY, "kiln_graph_compile: out of memory fusing");
  p->stats.fused = epilogues + chained;
  return KILN_OK;
}

/* ------------------------------------------------------------ schedule */

/* Multiply-adds a step costs, roughly: what decides whether a branch is
 * worth an engine op (and a thread) of its own. */
static int64_t step_work(const kiln_plan *p, const plan_step *st) {
  const plan_value *out = &p->values[st->out[0]], *in0 = st->n_in ? &p->values[st->in[0]] : out;
  int64_t n = 1, depth = 1;
  for (int d = 0; d < out->ndim; d++) n *= out->shape[d];
  if ((st->op == KILN_OP_LINEAR || st->op == KILN_OP_MATMUL) && in0->ndim) depth = in0->shape[in0->ndim - 1];
  if (st->op == KILN_OP_CONV2D && st->n_in > 1) {
    const plan_value *w = &p->values[st->in[1]];
    depth = w->shape[1] * w->shape[2] * w->shape[3];
  }
  if (st->fused) depth = st->fused->n_instr;
  return n * depth;
}

static void free_segments(kiln_plan *p) {
  for (int g = 0; g < p->n_segments; g++) {
    kiln_free(p->segments[g].steps);
    kiln_free(p->segments[g].deps);
    kiln_free(p->segments[g].uses);
  }
  kiln_free(p->segments), kiln_free(p->segment_of), kiln_free(p->reach);
  p->segments = NULL, p->segment_of = NULL, p->reach = NULL;
  p->n_segments = 0;
}

/* Steps as one segment (the whole plan in order). */
static kiln_status single_segment(kiln_plan *p) {
  free_segments(p);
  p->segments = kiln_calloc(1, sizeof(plan_segment));
  p->segment_of = kiln_calloc((size_t)p->n_steps + 1, sizeof(int));
  p->reach = kiln_calloc(1, sizeof(uint64_t));
  if (p->segments) p->segments[0].steps = kiln_alloc(sizeof(int) * ((size_t)p->n_steps + 1));
  if (!p->segments || !p->segment_of || !p->reach || !p->segments[0].steps) {
    if (p->segments) p->n_segments = 1;
    return kiln_errorf(KILN_ERR_OUT_OF_MEMORY, "kiln_graph_compile: out of memory scheduling");
  }
  p->n_segments = 1;
  for (int t = 0; t < p->n_steps; t++) p->segments[0].steps[t] = t;
  p->segments[0].n_steps = p->n_steps;
  return KILN_OK;
}

/* Chains of dependent steps stay together (one engine op, no hand-off
 * between them); a step whose inputs come from more than one chain, or
 * from a chain another step already continued, starts a segment that
 * waits for those it reads. When two segments that do not wait for each
 * other both carry at least PARALLEL_WORK multiply-adds, the segments go
 * to the engine as separate ops and run in parallel; otherwise the plan
 * stays one op (the hand-offs would cost more than they save). */
enum { PARALLEL_WORK = 1 << 18 };

static kiln_status schedule(kiln_plan *p) {
  if (!p->opts.parallel || p->n_steps < 2) return single_segment(p);
  int n = p->n_steps;
  int *producer = kiln_alloc(sizeof(int) * ((size_t)p->n_values + 1)), *seg = kiln_alloc(sizeof(int) * ((size_t)n + 1));
  int *last = kiln_alloc(sizeof(int) * ((size_t)n + 1)); /* per segment: its last step */
  uint64_t *deps = kiln_calloc((size_t)n + 1, sizeof(uint64_t)), *reach = kiln_calloc((size_t)n + 1, sizeof(uint64_t));
  int64_t *work = kiln_calloc((size_t)n + 1, sizeof(int64_t));
  kiln_status st = KILN_OK;
  if (!producer || !seg || !last || !deps || !reach || !work) {
    st = kiln_errorf(KILN_ERR_OUT_OF_MEMORY, "kiln_graph_compile: out of memory scheduling");
    goto done;
  }
  for (int v = 0; v < p->n_values; v++) producer[v] = -1;
  int n_seg = 0;
  bool too_many = false;
  for (int t = 0; t < n && !too_many; t++) {
    const plan_step *ps = &p->steps[t];
    uint64_t from = 0;
    bool extends = false;
    for (int k = 0; k < ps->n_in; k++) {
      int w = producer[root_of(p, ps->in[k])];
      if (w < 0) continue;
      from |= 1ull << seg[w];
      extends = extends || last[seg[w]] == w;
    }
    int g;
    if (from && !(from & (from - 1)) && extends) {
      g = __builtin_ctzll(from); /* continues the one chain it reads */
    } else {
      if (n_seg == MAX_SEGMENTS) {
        too_many = true;
        break;
      }
      g = n_seg++;
      deps[g] = from;
      for (int d = 0; d < g; d++)
        if (from & (1ull << d)) reach[g] |= (1ull << d) | reach[d];
    }
    seg[t] = g;
    last[g] = t;
    work[g] += step_work(p, ps);
    for (int k = 0; k < ps->n_out; k++) producer[ps->out[k]] = t;
  }
  bool parallel = false;
  for (int a = 0; a < n_seg && !parallel && !too_many; a++)
    for (int b = a + 1; b < n_seg && !parallel; b++)
      parallel = work[a] >= PARALLEL_WORK && work[b] >= PARALLEL_WORK && !(reach[b] & (1ull << a));
  if (!parallel) {
    st = single_segment(p);
    goto done;
  }
  free_segments(p);
  p->segments = kiln_calloc((size_t)n_seg, sizeof(plan_segment));
  p->segment_of = kiln_alloc(sizeof(int) * ((size_t)n + 1));
  p->reach = kiln_calloc((size_t)n_seg, sizeof(uint64_t));
  if (!p->segments || !p->segment_of || !p->reach) {
    kiln_free(p->segments), kiln_free(p->segment_of), kiln_free(p->reach);
    p->segments = NULL, p->segment_of = NULL, p->reach = NULL;
    st = kiln_errorf(KILN_ERR_OUT_OF_MEMORY, "kiln_graph_compile: out of memory scheduling");
    goto done;
  }
  p->n_segments = n_seg;
  for (int g = 0; g < n_seg && st == KILN_OK; g++) {
    plan_segment *sg = &p->segments[g];
    sg->steps = kiln_alloc(sizeof(int) * ((size_t)n + 1));
    sg->deps = kiln_alloc(sizeof(int) * MAX_SEGMENTS);
    if (!sg->steps || !sg->deps) st = kiln_errorf(KILN_ERR_OUT_OF_MEMORY, "kiln_graph_compile: out of memory scheduling");
    for (int d = 0; sg->deps && d < g; d++)
      if (deps[g] & (1ull << d)) sg->deps[sg->n_deps++] = d;
    sg->work = work[g];
    p->reach[g] = reach[g];
  }
  for (int t = 0; t < n && st == KILN_OK; t++) {
    p->segment_of[t] = seg[t];
    plan_segment *sg = &p->segments[seg[t]];
    sg->steps[sg->n_steps++] = t;
  }
  p->stats.segments = n_seg;
done:
  kiln_free(producer), kiln_free(seg), kiln_free(last), kiln_free(deps), kiln_free(reach), kiln_free(work);
  return st;
}

/* The bound tensors' variables, whether any step draws random numbers,
 * and per segment the input, bound and output values it touches. */
static kiln_status plan_run_lists(kiln_plan *p) {
  p->bound_vars = kiln_alloc(sizeof(kiln_engine_var *) * ((size_t)p->n_values + 1));
  bool *uses = kiln_alloc(sizeof(bool) * ((size_t)p->n_values + 1));
  if (!p->bound_vars || !uses) {
    kiln_free(uses);
    return kiln_errorf(KILN_ERR_OUT_OF_MEMORY, "kiln_graph_compile: out of memory");
  }
  for (int v = 0; v < p->n_values; v++)
    if (p->values[v].kind == VAL_BOUND) p->bound_vars[p->n_bound++] = p->values[v].bound->storage->var;
  for (int t = 0; t < p->n_steps; t++) p->has_random = p->has_random || (kiln_op_get(p->steps[t].op)->flags & KILN_OP_RANDOM);
  kiln_status st = KILN_OK;
  for (int g = 0; p->n_segments > 1 && g < p->n_segments && st == KILN_OK; g++) {
    plan_segment *sg = &p->segments[g];
    memset(uses, 0, sizeof(bool) * (size_t)p->n_values);
    for (int i = 0; i < sg->n_steps; i++) {
      const plan_step *ps = &p->steps[sg->steps[i]];
      for (int k = 0; k < ps->n_in; k++) uses[root_of(p, ps->in[k])] = true;
      for (int k = 0; k < ps->n_out; k++) uses[ps->out[k]] = true;
    }
    sg->uses = kiln_alloc(sizeof(int) * ((size_t)p->n_values + 1));
    if (!sg->uses) st = kiln_errorf(KILN_ERR_OUT_OF_MEMORY, "kiln_graph_compile: out of memory");
    for (int v = 0; sg->uses && v < p->n_values; v++) {
      value_kind k = p->values[v].kind;
      if (uses[v] && (k == VAL_INPUT || k == VAL_BOUND || k == VAL_OUTPUT)) sg->uses[sg->n_uses++] = v;
    }
  }
  kiln_free(uses);
  return st;
}

kiln_plan *graph_plan_retain(kiln_plan *p) {
  if (p) atomic_fetch_add(&p->refs, 1);
  return p;
}

/* The verifier: every step reads only values that exist by then (inputs,
 * bound tensors, earlier steps' outputs, views of those), writes values
 * no other step writes, and its op's inference on its input values gives
 * exactly its output values' dtypes and shapes. Run after the passes in
 * debug builds and when the options ask. */
static kiln_status verify(const kiln_plan *p) {
  bool *ready = kiln_calloc((size_t)p->n_values + 1, sizeof(bool));
  if (!ready) return kiln_errorf(KILN_ERR_OUT_OF_MEMORY, "plan verifier: out of memory");
  kiln_status st = KILN_OK;
  for (int v = 0; v < p->n_values; v++) ready[v] = p->values[v].kind == VAL_INPUT || p->values[v].kind == VAL_BOUND;
  for (int s = 0; s < p->n_steps && st == KILN_OK; s++) {
    const plan_step *ps = &p->steps[s];
    const kiln_op_def *def = kiln_op_get(ps->op);
    kk_view vin[64], vout[64];
    kiln_out_desc desc[64];
    for (int k = 0; k < ps->n_in && st == KILN_OK; k++) {
      const plan_value *v = &p->values[ps->in[k]];
      if (!ready[root_of(p, ps->in[k])])
        st = kiln_errorf(KILN_ERR_INTERNAL, "plan verifier: step %d (%s) reads value %d before it is written", s, def->name,
                         ps->in[k]);
      vin[k] = (kk_view){.dtype = v->dtype, .ndim = v->ndim};
      memcpy(vin[k].shape, v->shape, sizeof vin[k].shape);
      memcpy(vin[k].strides, v->strides, sizeof vin[k].strides);
    }
    for (int k = 0; k < ps->n_out && st == KILN_OK; k++)
      if (ready[ps->out[k]])
        st = kiln_errorf(KILN_ERR_INTERNAL, "plan verifier: step %d (%s) writes value %d, already written", s, def->name,
                         ps->out[k]);
    if (st != KILN_OK) break;
    if (ps->fused) {
      /* A fused chain's inputs broadcast to its output, all of its dtype. */
      const plan_value *o = &p->values[ps->out[0]];
      for (int k = 0; k < ps->n_in && st == KILN_OK; k++) {
        const plan_value *v = &p->values[ps->in[k]];
        bool fits = v->dtype == o->dtype && v->ndim <= o->ndim;
        for (int d = 0; fits && d < v->ndim; d++) {
          int64_t want = o->shape[o->ndim - v->ndim + d];
          fits = v->shape[d] == want || v->shape[d] == 1;
        }
        if (!fits)
          st = kiln_errorf(KILN_ERR_INTERNAL, "plan verifier: fused step %d: input %d does not broadcast to its output", s, k);
      }
      ready[ps->out[0]] = true;
      continue;
    }
    kiln_op_call c = {.def = def, .n_in = ps->n_in, .n_out = ps->n_out, .in = vin, .out = vout};
    memcpy(c.attrs, ps->attrs, sizeof c.attrs);
    memset(desc, 0, sizeof(kiln_out_desc) * (size_t)ps->n_out);
    if ((st = def->infer(&c, desc)) != KILN_OK) {
      st = kiln_errorf(KILN_ERR_INTERNAL, "plan verifier: step %d (%s) no longer infers: %s", s, def->name, kiln_last_error());
      break;
    }
    for (int k = 0; k < ps->n_out && st == KILN_OK; k++) {
      const plan_value *v = &p->values[ps->out[k]];
      if (desc[k].dtype != v->dtype || desc[k].ndim != v->ndim ||
          memcmp(desc[k].shape, v->shape, sizeof(int64_t) * (size_t)v->ndim))
        st = kiln_errorf(KILN_ERR_INTERNAL, "plan verifier: step %d (%s) output %d: the op gives a different shape or dtype",
                         s, def->name, k);
      ready[ps->out[k]] = true;
    }
  }
  /* The schedule (once made): every step in one segment, after the steps
   * it reads, in its own segment or in one it waits for. */
  int *producer = st == KILN_OK && p->n_segments ? kiln_alloc(sizeof(int) * ((size_t)p->n_values + 1)) : NULL;
  if (st == KILN_OK && p->n_segments && !producer) st = kiln_errorf(KILN_ERR_OUT_OF_MEMORY, "plan verifier: out of memory");
  for (int v = 0; producer && v < p->n_values; v++) producer[v] = -1;
  int placed = 0;
  for (int g = 0; g < p->n_segments; g++) placed += p->segments[g].n_steps;
  if (st == KILN_OK && producer && placed != p->n_steps)
    st = kiln_errorf(KILN_ERR_INTERNAL, "plan verifier: %d steps in segments, the plan has %d", placed, p->n_steps);
  for (int s = 0; producer && s < p->n_steps && st == KILN_OK; s++) {
    const plan_step *ps = &p->steps[s];
    int g = p->segment_of[s];
    for (int k = 0; k < ps->n_in && st == KILN_OK; k++) {
      int w = producer[root_of(p, ps->in[k])];
      if (w >= 0 && p->segment_of[w] != g && !(p->reach[g] & (1ull << p->segment_of[w])))
        st = kiln_errorf(KILN_ERR_INTERNAL, "plan verifier: step %d (segment %d) reads step %d's value from segment %d, "
                         "which it does not wait for", s, g, w, p->segment_of[w]);
    }
    for (int k = 0; k < ps->n_out; k++) producer[ps->out[k]] = s;
  }
  kiln_free(producer);
  kiln_free(ready);
  return st;
}

void kiln_plan_free(kiln_plan *p) {
  if (!p || atomic_fetch_sub(&p->refs, 1) != 1) return;
  /* Every run holds a reference, so none is in flight now; this may run
   * on an engine worker (the last run's, or a tape node's release), where
   * waiting would deadlock. */
  if (p->arena_var) kiln_engine_delete_var(p->engine, p->arena_var, NULL, NULL);
  for (int g = 0; g < p->n_segments; g++)
    if (p->segments[g].var) kiln_engine_delete_var(p->engine, p->segments[g].var, NULL, NULL);
  free_segments(p);
  for (int i = 0; i < p->n_variants; i++) {
    kiln_plan_free(p->variants[i].plan);
    kiln_free(p->variants[i].shapes);
  }
  pthread_mutex_destroy(&p->variant_lock);
  kiln_free(p->arena);
  kiln_free(p->bound_vars);
  for (int v = 0; v < p->n_values; v++) kiln_tensor_release(p->values[v].bound);
  for (int s = 0; s < p->n_steps; s++) {
    kiln_free(p->steps[s].in);
    kiln_free(p->steps[s].fused);
  }
  kiln_free(p->steps);
  kiln_free(p->values);
  kiln_free(p->input_refs);
  kiln_free(p->outputs);
  kiln_free(p->output_refs);
  kiln_graph_release(p->graph);
  kiln_free(p);
}

kiln_plan *kiln_graph_compile(kiln_graph *g, int n_out, kiln_tensor *const *outputs, const kiln_compile_options *o) {
  if (!g || n_out < 1 || !outputs) {
    kiln_errorf(KILN_ERR_INVALID_ARGUMENT, "kiln_graph_compile: needs a graph and at least one output");
    return NULL;
  }
  for (int k = 0; k < n_out; k++) {
    kiln_graph *h;
    if (!outputs[k] || tensor_failed(outputs[k])) {
      kiln_errorf(outputs[k] ? outputs[k]->status : KILN_ERR_INVALID_ARGUMENT, "kiln_graph_compile: output %d %s%s", k,
                  outputs[k] ? "failed: " : "is NULL", outputs[k] ? outputs[k]->error : "");
      return NULL;
    }
    if (graph_ref_of(outputs[k], &h, NULL) < 0 || h != g) {
      kiln_errorf(KILN_ERR_INVALID_ARGUMENT, "kiln_graph_compile: output %d is not a value of this graph", k);
      return NULL;
    }
  }
  graph_ref *refs = kiln_alloc(sizeof(graph_ref) * (size_t)n_out);
  if (!refs) {
    kiln_errorf(KILN_ERR_OUT_OF_MEMORY, "kiln_graph_compile: out of memory");
    return NULL;
  }
  for (int k = 0; k < n_out; k++) refs[k] = ((const graph_value *)outputs[k]->sym)->ref;
  kiln_plan *p = graph_compile_refs(g, g->n, n_out, refs, 0, NULL, o);
  kiln_free(refs);
  return p;
}

kiln_plan *graph_compile_refs(kiln_graph *g, int n_nodes, int n_out, const graph_ref *out_refs, int n_cut,
                              const graph_ref *cut, const kiln_compile_options *o) {
  kiln_plan *p = kiln_calloc(1, sizeof *p);
  if (p) {
    atomic_init(&p->refs, 1);
    pthread_mutex_init(&p->variant_lock, NULL);
  }
  int n = n_nodes, n_graph_inputs = 0;
  bool polymorphic = false;
  for (int i = 0; i < n; i++) {
    n_graph_inputs += g->nodes[i].kind == GRAPH_INPUT;
    polymorphic = polymorphic || (g->nodes[i].kind == GRAPH_INPUT && g->nodes[i].unknown);
  }
  if (polymorphic && n_cut) {
    kiln_plan_free(p);
    kiln_errorf(KILN_ERR_UNSUPPORTED, "kiln_graph_compile: a cut in a graph with unknown dims");
    return NULL;
  }
  pass_state s = {g, n, kiln_alloc(sizeof(graph_ref) * (size_t)n), kiln_alloc(sizeof(int) * (size_t)n),
                  kiln_calloc((size_t)n, sizeof(kiln_tensor *)), kiln_calloc((size_t)n, sizeof(bool)),
                  kiln_calloc((size_t)n + 1, sizeof(bool))};
  int *value_of = kiln_alloc(sizeof(int) * (size_t)n * 2 + 1); /* first value id of each node */
  graph_ref *cut_at = kiln_alloc(sizeof(graph_ref) * (size_t)(n_cut + 1)); /* the cut values, resolved */
  kiln_status st = KILN_OK;
  if (!p || !s.forward || !s.same_as || !s.folded || !s.live || !s.cut || !value_of || !cut_at) {
    st = kiln_errorf(KILN_ERR_OUT_OF_MEMORY, "kiln_graph_compile: out of memory");
    goto done;
  }
  p->opts = o ? *o : kiln_compile_options_default();
  p->graph = kiln_graph_retain(g);
  p->n_nodes = n;
  p->polymorphic = polymorphic;
  for (int i = 0; i < n; i++) s.forward[i] = (graph_ref){-1, 0}, s.same_as[i] = i, value_of[i] = -1;
  p->stats.nodes_before = n;
#ifndef NDEBUG
  const bool verify_always = true;
#else
  const bool verify_always = false;
#endif
  bool check = verify_always || p->opts.verify;
  if (p->opts.simplify) p->stats.simplified = simplify(&s);
  if (check && p->opts.simplify && (st = verify_pass(&s, "simplify")) != KILN_OK) goto done;
  if (p->opts.cse) p->stats.merged = cse(&s);
  if (check && p->opts.cse && (st = verify_pass(&s, "cse")) != KILN_OK) goto done;
  if (p->opts.fold) p->stats.folded = fold(&s);
  if (check && p->opts.fold && (st = verify_pass(&s, "fold")) != KILN_OK) goto done;
  /* A cut value computed by an op of its own becomes an input; one that
   * resolved to an input, a parameter or a constant needs nothing. */
  for (int j = 0; j < n_cut; j++) {
    cut_at[j] = resolve(&s, cut[j]);
    const graph_node *c = &g->nodes[cut_at[j].node];
    if (c->kind == GRAPH_OP && !s.folded[cut_at[j].node]) s.cut[cut_at[j].node] = true;
  }
  if (p->opts.dce) {
    for (int k = 0; k < n_out; k++) mark_live(&s, out_refs[k]);
    /* Inputs stay inputs of the plan even when unused: the caller passes
     * them all. */
    for (int i = 0; i < n; i++)
      if (g->nodes[i].kind == GRAPH_INPUT) s.live[i] = true;
  } else {
    for (int i = 0; i < n; i++) s.live[i] = s.same_as[i] == i && s.forward[i].node < 0;
    for (int k = 0; k < n_out; k++) mark_live(&s, out_refs[k]);
  }

  /* Lay out values and steps in node order. */
  int vcap = 0, scap = 0;
  p->input_refs = kiln_alloc(sizeof(graph_ref) * (size_t)(n_graph_inputs + n_cut + 1));
  p->outputs = kiln_alloc(sizeof(int) * (size_t)n_out);
  p->output_refs = kiln_alloc(sizeof(graph_ref) * (size_t)n_out);
  if (!p->input_refs || !p->outputs || !p->output_refs) {
    st = kiln_errorf(KILN_ERR_OUT_OF_MEMORY, "kiln_graph_compile: out of memory");
    goto done;
  }
  for (int i = 0; i < n && st == KILN_OK; i++) {
    const graph_node *node = &g->nodes[i];
    if (node->kind == GRAPH_INPUT) {
      int v = add_value(p, &vcap, &node->out[0], VAL_INPUT);
      if (v < 0) {
        st = kiln_errorf(KILN_ERR_OUT_OF_MEMORY, "kiln_graph_compile: out of memory");
        break;
      }
      p->values[v].index = p->n_inputs;
      p->input_refs[p->n_inputs++] = (graph_ref){i, 0};
      value_of[i] = v;
      continue;
    }
    if (!s.live[i] || s.same_as[i] != i || (s.forward[i].node >= 0 && !s.folded[i])) continue;
    if (s.cut[i]) {
      /* Its values come in after the graph's inputs; an output of it no
       * cut names is never read (the caller cuts all it needs). */
      for (int k = 0; k < node->n_out; k++) {
        int j = 0;
        while (j < n_cut && (cut_at[j].node != i || cut_at[j].index != k)) j++;
        int v = add_value(p, &vcap, &node->out[k], j < n_cut ? VAL_INPUT : VAL_ARENA);
        if (v < 0) {
          st = kiln_errorf(KILN_ERR_OUT_OF_MEMORY, "kiln_graph_compile: out of memory");
          break;
        }
        p->values[v].index = n_graph_inputs + j;
        if (k == 0) value_of[i] = v;
      }
      continue;
    }
    if (node->kind == GRAPH_BOUND || s.folded[i]) {
      int v = add_value(p, &vcap, &node->out[0], VAL_BOUND);
      if (v < 0) {
        st = kiln_errorf(KILN_ERR_OUT_OF_MEMORY, "kiln_graph_compile: out of memory");
        break;
      }
      p->values[v].bound = kiln_tensor_retain(s.folded[i] ? s.folded[i] : node->bound);
      memcpy(p->values[v].strides, p->values[v].bound->strides, sizeof p->values[v].strides);
      value_of[i] = v;
      continue;
    }
    int in[64], out[64];
    if (node->n_in > 64 || node->n_out > 64) {
      st = kiln_errorf(KILN_ERR_UNSUPPORTED, "kiln_graph_compile: %s with more than 64 inputs or outputs",
                       kiln_op_get(node->op)->name);
      break;
    }
    for (int k = 0; k < node->n_in; k++) {
      graph_ref r = resolve(&s, node->in[k]);
      in[k] = value_of[r.node] + r.index;
    }
    if (is_view(node)) {
      int v = add_value(p, &vcap, &node->out[0], VAL_VIEW);
      if (v < 0) {
        st = kiln_errorf(KILN_ERR_OUT_OF_MEMORY, "kiln_graph_compile: out of memory");
        break;
      }
      plan_value *pv = &p->values[v], *base = &p->values[in[0]];
      memcpy(pv->strides, node->out[0].strides, sizeof pv->strides);
      pv->index = in[0];
      pv->offset = node->out[0].offset;
      if (base->kind == VAL_VIEW) {
        pv->index = base->index;
        pv->offset += base->offset;
      }
      value_of[i] = v;
      continue;
    }
    int first = -1;
    for (int k = 0; k < node->n_out; k++) {
      int v = add_value(p, &vcap, &node->out[k], VAL_ARENA);
      if (v < 0) {
        st = kiln_errorf(KILN_ERR_OUT_OF_MEMORY, "kiln_graph_compile: out of memory");
        break;
      }
      if (k == 0) first = v;
      out[k] = v;
    }
    value_of[i] = first;
    if (first < 0 || (st = add_step(p, &scap, node, i, in, out)) != KILN_OK) break;
  }
  /* Outputs: a computed value not yet claimed becomes the output buffer
   * itself; an input, bound tensor, view or repeat gets a copy. */
  for (int k = 0; st == KILN_OK && k < n_out; k++) {
    graph_ref r = resolve(&s, out_refs[k]);
    int v = value_of[r.node] + r.index;
    if (p->values[v].kind == VAL_ARENA) {
      p->values[v].kind = VAL_OUTPUT;
      p->values[v].index = k;
      p->outputs[k] = v;
      continue;
    }
    kiln_out_desc d = {.dtype = p->values[v].dtype, .ndim = p->values[v].ndim};
    memcpy(d.shape, p->values[v].shape, sizeof d.shape);
    int c = add_value(p, &vcap, &d, VAL_OUTPUT);
    graph_node copy = {.kind = GRAPH_OP, .op = KILN_OP_COPY, .n_in = 1, .n_out = 1};
    kiln_attrs_default(KILN_OP_COPY, copy.attrs);
    if (c < 0 || (st = add_step(p, &scap, &copy, r.node, &v, &c)) != KILN_OK) break;
    p->values[c].index = k;
    p->outputs[k] = c;
  }
  for (int k = 0; st == KILN_OK && k < n_out; k++) p->output_refs[k] = out_refs[k];
  p->n_outputs = n_out;
  /* The cut inputs, in the caller's order; one whose value needs no input
   * (it resolved to another's, or to a parameter) still takes its place. */
  for (int j = 0; st == KILN_OK && j < n_cut; j++) {
    p->input_refs[n_graph_inputs + j] = cut_at[j];
    bool placed = false;
    for (int v = 0; v < p->n_values && !placed; v++)
      placed = p->values[v].kind == VAL_INPUT && p->values[v].index == n_graph_inputs + j;
    if (placed) continue;
    int v = add_value(p, &vcap, &g->nodes[cut_at[j].node].out[cut_at[j].index], VAL_INPUT);
    if (v < 0) st = kiln_errorf(KILN_ERR_OUT_OF_MEMORY, "kiln_graph_compile: out of memory");
    else p->values[v].index = n_graph_inputs + j;
  }
  p->n_inputs = n_graph_inputs + n_cut;
  /* The plan verifier after layout (dce's outcome), fusion and the schedule. */
  if (st == KILN_OK && check) st = verify(p);
  if (st == KILN_OK && p->opts.fuse && !p->opts.reference_kernels) st = fuse(p); /* reference runs each op as defined */
  p->stats.steps = p->n_steps;
  p->stats.segments = 1;
  if (st == KILN_OK) st = schedule(p);
  if (st == KILN_OK && check) st = verify(p);
  if (st == KILN_OK) st = plan_memory(p);
  if (st == KILN_OK && p->arena_bytes) {
    p->arena = kiln_alloc(p->arena_bytes);
    if (!p->arena) st = kiln_errorf(KILN_ERR_OUT_OF_MEMORY, "kiln_graph_compile: out of memory for a %zu-byte arena", p->arena_bytes);
  }
  if (st == KILN_OK) st = place(p);
  if (st == KILN_OK) {
    p->arena_var = engine_new_var_on(p->engine, p->queue);
    if (!p->arena_var) st = kiln_errorf(KILN_ERR_OUT_OF_MEMORY, "kiln_graph_compile: out of memory");
    for (int seg = 0; p->n_segments > 1 && seg < p->n_segments && st == KILN_OK; seg++)
      if (!(p->segments[seg].var = engine_new_var_on(p->engine, p->queue)))
        st = kiln_errorf(KILN_ERR_OUT_OF_MEMORY, "kiln_graph_compile: out of memory");
  }
  if (st == KILN_OK) st = plan_run_lists(p);
done:
  for (int i = 0; s.folded && i < n; i++) kiln_tensor_release(s.folded[i]);
  kiln_free(s.forward), kiln_free(s.same_as), kiln_free(s.folded), kiln_free(s.live), kiln_free(s.cut), kiln_free(value_of);
  kiln_free(cut_at);
  if (st != KILN_OK) {
    kiln_plan_free(p);
    return NULL;
  }
  return p;
}

kiln_plan_stats kiln_plan_get_stats(const kiln_plan *p) { return p ? p->stats : (kiln_plan_stats){0}; }
int kiln_plan_num_inputs(const kiln_plan *p) { return p ? p->n_inputs : 0; }

kiln_graph *graph_plan_source(const kiln_plan *p, int *n_out, const graph_ref **outputs) {
  *n_out = p->n_outputs;
  *outputs = p->output_refs;
  return p->graph;
}

/* ------------------------------------------------------------ running */

typedef struct plan_run plan_run;
typedef struct {
  plan_run *run;
  int segment;
} segment_run;

struct plan_run {
  kiln_plan *plan;
  kiln_tensor **inputs, **outputs; /* retained */
  kiln_attr_value *random_attrs;   /* per step: drawn at the call, for random ops */
  segment_run *segments;           /* with more than one segment */
  atomic_int pending;              /* segments not done, and the pusher's hold */
};

static kk_view value_view(const plan_run *r, int v) {
  const kiln_plan *p = r->plan;
  const plan_value *pv = &p->values[v];
  kk_view view = {.dtype = pv->dtype, .ndim = pv->ndim};
  memcpy(view.shape, pv->shape, sizeof view.shape);
  memcpy(view.strides, pv->strides, sizeof view.strides);
  switch (pv->kind) {
  case VAL_INPUT: view.data = tensor_data(r->inputs[pv->index]); break;
  case VAL_BOUND: view.data = tensor_data(pv->bound); break;
  case VAL_ARENA: view.data = (char *)p->arena + pv->offset; break;
  case VAL_OUTPUT: view.data = tensor_data(r->outputs[pv->index]); break;
  case VAL_VIEW: {
    kk_view base = value_view(r, pv->index);
    view.data = (char *)base.data + pv->offset * (int64_t)kiln_dtype_size(pv->dtype);
    break;
  }
  }
  return view;
}

/* Step s of run r, with the step's attributes or the run's redrawn ones. */
static kiln_status run_step(const plan_run *r, int s, bool reference, kk_view *vin, kk_view *vout) {
  const kiln_plan *p = r->plan;
  const plan_step *st = &p->steps[s];
  for (int k = 0; k < st->n_in; k++) vin[k] = value_view(r, st->in[k]);
  for (int k = 0; k < st->n_out; k++) vout[k] = value_view(r, st->out[k]);
  if (st->fused) {
    kk_fused(st->fused, vin, &vout[0]);
    return KILN_OK;
  }
  kiln_op_call c = {.def = kiln_op_get(st->op), .n_in = st->n_in, .n_out = st->n_out, .in = vin, .out = vout,
                    .reference = reference};
  memcpy(c.attrs, r->random_attrs ? &r->random_attrs[s * KILN_MAX_ATTRS] : st->attrs, sizeof c.attrs);
  kiln_kernel_fn fn = c.reference && c.def->reference ? c.def->reference : c.def->kernel;
  return fn(&c);
}

static kiln_status run_steps(plan_run *r, int n, const int *steps) {
  const kiln_plan *p = r->plan;
  kk_view vin[64], vout[64];
  for (int i = 0; i < n; i++) {
    int s = steps[i];
    kiln_status status = run_step(r, s, p->opts.reference_kernels, vin, vout);
    if (status != KILN_OK) {
      char label[96];
      graph_node_label(p->graph, p->steps[s].node, label, sizeof label);
      return kiln_errorf(status, "plan step %d (node %s): %s", s, label, kiln_last_error());
    }
  }
  return KILN_OK;
}

static kiln_status run_plan(void *data) {
  plan_run *r = data;
  return run_steps(r, r->plan->segments[0].n_steps, r->plan->segments[0].steps);
}

static kiln_status run_segment(void *data) {
  segment_run *sr = data;
  const plan_segment *g = &sr->run->plan->segments[sr->segment];
  return run_steps(sr->run, g->n_steps, g->steps);
}

static kiln_status run_start(void *data) {
  (void)data;
  return KILN_OK;
}

static void free_run(void *data) {
  plan_run *r = data;
  for (int i = 0; i < r->plan->n_inputs; i++) kiln_tensor_release(r->inputs[i]);
  for (int k = 0; k < r->plan->n_outputs; k++) kiln_tensor_release(r->outputs[k]);
  kiln_free(r->random_attrs);
  kiln_free(r->segments); /* inputs and outputs share r's allocation */
  kiln_plan_free(r->plan);
  kiln_free(r);
}

static void add_var(kiln_engine_var **vars, int *n, kiln_engine_var *v) {
  for (int i = 0; i < *n; i++)
    if (vars[i] == v) return;
  vars[(*n)++] = v;
}

static void free_run(void *data);

static void release_run(plan_run *r, int n) {
  if (atomic_fetch_sub(&r->pending, n) == n) free_run(r);
}

static void segment_done(void *data) { release_run(((segment_run *)data)->run, 1); }

/* One engine op per segment, reading the inputs, parameters and segments
 * it uses and writing its own variable and the outputs it computes. Runs
 * of a plan share its arena: an op writing the arena's variable goes
 * first and every segment reads it, so a run starts after the last one's
 * segments all end, and a failed run does not hold back the next. The
 * last segment done frees the run. */
static kiln_status push_segments(kiln_plan *p, plan_run *r, kiln_engine_var **vars, bool *handed_off) {
  r->segments = kiln_alloc(sizeof(segment_run) * (size_t)p->n_segments);
  if (!r->segments) return kiln_errorf(KILN_ERR_OUT_OF_MEMORY, "kiln_plan_run: out of memory");
  kiln_status st = engine_push_on(p->engine, p->queue, run_start, NULL, NULL, NULL, 0, &p->arena_var, 1, "plan start", 0);
  if (st != KILN_OK) return st;
  atomic_init(&r->pending, p->n_segments + 1);
  *handed_off = true;
  int pushed = 0;
  for (int g = 0; g < p->n_segments && st == KILN_OK; g++) {
    const plan_segment *sg = &p->segments[g];
    int nr = 0, nw = 0;
    add_var(vars, &nr, p->arena_var);
    for (int d = 0; d < sg->n_deps; d++) add_var(vars, &nr, p->segments[sg->deps[d]].var);
    for (int u = 0; u < sg->n_uses; u++) {
      const plan_value *pv = &p->values[sg->uses[u]];
      if (pv->kind == VAL_INPUT) add_var(vars, &nr, r->inputs[pv->index]->storage->var);
      if (pv->kind == VAL_BOUND) add_var(vars, &nr, pv->bound->storage->var);
    }
    kiln_engine_var **writes = vars + nr;
    writes[nw++] = sg->var;
    for (int u = 0; u < sg->n_uses; u++) {
      const plan_value *pv = &p->values[sg->uses[u]];
      if (pv->kind == VAL_OUTPUT) add_var(writes, &nw, r->outputs[pv->index]->storage->var);
    }
    r->segments[g] = (segment_run){r, g};
    st = engine_push_on(p->engine, p->queue, run_segment, segment_done, &r->segments[g], vars, nr, writes, nw, "plan segment", 0);
    if (st == KILN_OK) pushed++;
  }
  release_run(r, 1 + p->n_segments - pushed); /* the hold, and the segments never pushed */
  return st;
}

/* How a message names input i: a graph input's name, or the node whose
 * value a cut gives. */
static const char *input_name(const kiln_plan *p, int i, char *buf, size_t cap) {
  graph_ref ref = p->input_refs[i];
  const graph_node *node = &p->graph->nodes[ref.node];
  if (node->kind == GRAPH_INPUT) snprintf(buf, cap, "%s", node->name);
  else snprintf(buf, cap, "the value of node #%d.%d", ref.node, ref.index);
  return buf;
}

/* An input's shape, "?" for its unknown dims. */
static void input_shape_str(const graph_node *node, const kiln_out_desc *d, char *buf, size_t cap) {
  size_t used = (size_t)snprintf(buf, cap, "[");
  for (int k = 0; k < d->ndim && used < cap; k++) {
    if (node->kind == GRAPH_INPUT && (node->unknown & (1u << k)))
      used += (size_t)snprintf(buf + used, cap - used, "%s?", k ? ", " : "");
    else
      used += (size_t)snprintf(buf + used, cap - used, "%s%lld", k ? ", " : "", (long long)d->shape[k]);
  }
  if (used < cap) snprintf(buf + used, cap - used, "]");
}

/* The plan for these input sizes (a retained reference), compiled from
 * the graph rebuilt for them on first use; NULL + kiln_last_error when the
 * graph does not hold for them. */
static kiln_plan *plan_variant_for(kiln_plan *p, kiln_tensor *const *inputs) {
  pthread_mutex_lock(&p->variant_lock);
  kiln_plan *found = NULL;
  for (int i = 0; i < p->n_variants && !found; i++) {
    bool same = true;
    for (int k = 0; same && k < p->n_inputs; k++)
      same = !memcmp(p->variants[i].shapes[k], inputs[k]->shape, sizeof(int64_t) * (size_t)inputs[k]->ndim);
    if (same) {
      p->variants[i].last_use = ++p->variant_clock;
      found = graph_plan_retain(p->variants[i].plan);
    }
  }
  if (found) {
    pthread_mutex_unlock(&p->variant_lock);
    return found;
  }
  int *map = kiln_alloc(sizeof(int) * ((size_t)p->n_nodes + 1));
  graph_ref *refs = kiln_alloc(sizeof(graph_ref) * ((size_t)p->n_outputs + 1));
  int64_t(*shapes)[KILN_MAX_DIMS] = kiln_calloc((size_t)p->n_inputs + 1, sizeof *shapes);
  kiln_graph *h = map && refs && shapes ? graph_specialize(p->graph, p->n_nodes, inputs, p->n_outputs, p->output_refs, map) : NULL;
  if (!map || !refs || !shapes) kiln_errorf(KILN_ERR_OUT_OF_MEMORY, "out of memory");
  if (h) {
    for (int k = 0; k < p->n_outputs; k++) refs[k] = (graph_ref){map[p->output_refs[k].node], p->output_refs[k].index};
    int was = device_swap(p->device); /* a variant runs where its plan does */
    found = graph_compile_refs(h, h->n, p->n_outputs, refs, 0, NULL, &p->opts);
    device_swap(was);
    kiln_graph_release(h);
  }
  if (found) {
    for (int k = 0; k < p->n_inputs; k++) memcpy(shapes[k], inputs[k]->shape, sizeof(int64_t) * (size_t)inputs[k]->ndim);
    int slot = p->n_variants;
    if (slot == MAX_VARIANTS) {
      slot = 0;
      for (int i = 1; i < p->n_variants; i++)
        if (p->variants[i].last_use < p->variants[slot].last_use) slot = i;
      kiln_plan_free(p->variants[slot].plan); /* runs in flight hold their own reference */
      kiln_free(p->variants[slot].shapes);
    } else {
      p->n_variants++;
    }
    p->variants[slot] = (plan_variant){shapes, found, ++p->variant_clock};
    shapes = NULL;
    graph_plan_retain(found);
  }
  pthread_mutex_unlock(&p->variant_lock);
  kiln_free(map), kiln_free(refs), kiln_free(shapes);
  return found;
}

kiln_status kiln_plan_run(kiln_plan *p, int n_in, kiln_tensor *const *inputs, kiln_tensor **outputs) {
  if (!p || !outputs || (n_in && !inputs))
    return kiln_errorf(KILN_ERR_INVALID_ARGUMENT, "kiln_plan_run: plan, inputs or outputs is NULL");
  for (int k = 0; k < p->n_outputs; k++) outputs[k] = NULL;
  if (n_in != p->n_inputs)
    return kiln_errorf(KILN_ERR_INVALID_ARGUMENT, "kiln_plan_run: the plan takes %d inputs, got %d", p->n_inputs, n_in);
  bool other_sizes = false;
  for (int i = 0; i < n_in; i++) {
    graph_ref ref = p->input_refs[i];
    const graph_node *node = &p->graph->nodes[ref.node];
    const kiln_out_desc *want = &node->out[ref.index];
    char name[64];
    const kiln_tensor *t = inputs[i];
    if (!t || t->sym)
      return kiln_errorf(KILN_ERR_INVALID_ARGUMENT, "kiln_plan_run: input '%s' is %s", input_name(p, i, name, sizeof name),
                         t ? "symbolic" : "NULL");
    if (tensor_failed(t))
      return kiln_errorf(t->status, "kiln_plan_run: input '%s': %s", input_name(p, i, name, sizeof name), t->error);
    if (t->storage->device != p->device) {
      char a[32], b[32];
      return kiln_errorf(KILN_ERR_INVALID_ARGUMENT, "kiln_plan_run: input '%s' is on %s, the plan runs on %s",
                         input_name(p, i, name, sizeof name), kiln_device_name(kiln_tensor_device(t), a, sizeof a),
                         kiln_device_name(device_of_index(p->device), b, sizeof b));
    }
    bool fits = t->dtype == want->dtype && t->ndim == want->ndim;
    for (int d = 0; fits && d < t->ndim; d++) {
      bool unknown = node->kind == GRAPH_INPUT && (node->unknown & (1u << d));
      fits = unknown || t->shape[d] == want->shape[d];
      other_sizes = other_sizes || t->shape[d] != want->shape[d];
    }
    if (!fits) {
      char ws[KILN_SHAPE_STR_MAX], got[KILN_SHAPE_STR_MAX];
      input_shape_str(node, want, ws, sizeof ws);
      return kiln_errorf(KILN_ERR_SHAPE, "kiln_plan_run: input '%s' must be %s %s, got %s %s", input_name(p, i, name, sizeof name),
                         kiln_dtype_name(want->dtype), ws, kiln_dtype_name(t->dtype),
                         kiln_shape_str(got, sizeof got, t->ndim, t->shape));
    }
  }
  if (other_sizes) {
    /* Unknown dims of other sizes than the graph was built with. */
    kiln_plan *v = plan_variant_for(p, inputs);
    if (!v) {
      for (int k = 0; k < p->n_outputs; k++) outputs[k] = NULL;
      return kiln_errorf(kiln_last_status(), "kiln_plan_run: %s", kiln_last_error());
    }
    kiln_status st = kiln_plan_run(v, n_in, inputs, outputs);
    kiln_plan_free(v);
    return st;
  }
  /* The run and its tensors in one allocation; the engine's variable
   * lists on the stack when they fit (a batch-1 call is a few µs). */
  size_t handles = (size_t)(n_in + p->n_outputs + 1);
  plan_run *r = kiln_alloc(sizeof *r + sizeof(kiln_tensor *) * handles);
  enum { STACK_VARS = 64 };
  kiln_engine_var *stack_vars[STACK_VARS];
  int n_vars = n_in + p->n_bound + p->n_outputs + MAX_SEGMENTS + 2;
  kiln_engine_var **vars = n_vars <= STACK_VARS ? stack_vars : kiln_alloc(sizeof(kiln_engine_var *) * (size_t)n_vars);
  if (!r || !vars) {
    kiln_free(r);
    if (vars != stack_vars) kiln_free(vars);
    return kiln_errorf(KILN_ERR_OUT_OF_MEMORY, "kiln_plan_run: out of memory");
  }
  memset(r, 0, sizeof *r);
  r->plan = graph_plan_retain(p);
  r->inputs = (kiln_tensor **)(r + 1);
  memset(r->inputs, 0, sizeof(kiln_tensor *) * handles);
  r->outputs = r->inputs + n_in;
  kiln_status st = KILN_OK;
  /* The plan's views assume contiguous inputs. */
  for (int i = 0; i < n_in; i++) {
    kiln_tensor *c = inputs[i];
    if (!kiln_tensor_is_contiguous(c)) {
      kiln_dispatch_owned(KILN_OP_COPY, 1, &c, NULL, 1, &r->inputs[i]);
    } else {
      r->inputs[i] = kiln_tensor_retain(c);
    }
  }
  for (int k = 0; k < p->n_outputs; k++) {
    const plan_value *v = &p->values[p->outputs[k]];
    r->outputs[k] = tensor_new_on(p->device, v->dtype, v->ndim, v->shape);
    if (tensor_failed(r->outputs[k]) && st == KILN_OK) st = kiln_errorf(r->outputs[k]->status, "kiln_plan_run: %s", r->outputs[k]->error);
  }
  /* Random ops draw fresh counters at each call, as eager ones do. */
  for (int s = 0; p->has_random && st == KILN_OK && s < p->n_steps; s++) {
    const plan_step *ps = &p->steps[s];
    if (!(kiln_op_get(ps->op)->flags & KILN_OP_RANDOM)) continue;
    if (!r->random_attrs) {
      r->random_attrs = kiln_alloc(sizeof(kiln_attr_value) * KILN_MAX_ATTRS * (size_t)p->n_steps);
      if (!r->random_attrs) {
        st = kiln_errorf(KILN_ERR_OUT_OF_MEMORY, "kiln_plan_run: out of memory");
        break;
      }
      for (int t = 0; t < p->n_steps; t++) memcpy(&r->random_attrs[t * KILN_MAX_ATTRS], p->steps[t].attrs, sizeof p->steps[t].attrs);
    }
    kiln_attr_value *a = &r->random_attrs[s * KILN_MAX_ATTRS];
    int64_t numel = 1;
    const plan_value *out = &p->values[ps->n_out ? ps->out[0] : ps->in[0]];
    for (int d = 0; d < out->ndim; d++) numel *= out->shape[d];
    graph_random_redraw(ps->op, a, (uint64_t)numel);
  }
  /* The caller's handles, taken before the push: the run may finish and
   * release its own at once. */
  for (int k = 0; st == KILN_OK && k < p->n_outputs; k++) outputs[k] = kiln_tensor_retain(r->outputs[k]);
  if (st == KILN_OK && p->n_segments == 1) {
    int nr = 0, nw = 0;
    for (int i = 0; i < n_in; i++) vars[nr++] = r->inputs[i]->storage->var;
    memcpy(vars + nr, p->bound_vars, sizeof(kiln_engine_var *) * (size_t)p->n_bound);
    nr += p->n_bound;
    kiln_engine_var **writes = vars + nr;
    for (int k = 0; k < p->n_outputs; k++) writes[nw++] = r->outputs[k]->storage->var;
    writes[nw++] = p->arena_var;
    st = engine_push_on(p->engine, p->queue, run_plan, free_run, r, vars, nr, writes, nw, "plan", 0);
  } else if (st == KILN_OK) {
    bool handed_off = false; /* to the segments, which free it */
    st = push_segments(p, r, vars, &handed_off);
    if (handed_off) r = NULL;
  }
  if (vars != stack_vars) kiln_free(vars);
  if (st != KILN_OK) {
    for (int k = 0; k < p->n_outputs; k++) {
      kiln_tensor_release(outputs[k]);
      outputs[k] = NULL;
    }
    if (r) free_run(r);
    return st;
  }
  for (int k = 0; k < p->n_outputs; k++) outputs[k] = tensor_autorelease(outputs[k]);
  return KILN_OK;
}

/* ------------------------------------------------------------ dumps */

static void print_attrs(FILE *f, const kiln_op_def *def, const kiln_attr_value *a) {
  for (int k = 0; k < def->n_attrs; k++) {
    fprintf(f, "%s%s=", k ? ", " : " {", def->attrs[k].name);
    if (def->attrs[k].type == KILN_ATTR_FLOAT)
      fprintf(f, "%g", a[k].f);
    else if (def->attrs[k].type == KILN_ATTR_INT)
      fprintf(f, "%lld", (long long)a[k].i);
    else
      for (int i = 0; i < a[k].n; i++) fprintf(f, "%s%lld", i ? "x" : "", (long long)a[k].ints[i]);
  }
  if (def->n_attrs) fputc('}', f);
}

static void print_desc(FILE *f, kiln_dtype dt, int ndim, const int64_t *shape) {
  char buf[KILN_SHAPE_STR_MAX];
  fprintf(f, "%s %s", kiln_dtype_name(dt), kiln_shape_str(buf, sizeof buf, ndim, shape));
}

kiln_status kiln_graph_dump(const kiln_graph *g, FILE *f, bool dot) {
  if (!g || !f) return kiln_errorf(KILN_ERR_INVALID_ARGUMENT, "kiln_graph_dump: graph or file is NULL");
  if (dot) fprintf(f, "digraph kiln {\n  node [shape=box, fontname=monospace];\n");
  for (int i = 0; i < g->n; i++) {
    const graph_node *n = &g->nodes[i];
    char label[96];
    graph_node_label(g, i, label, sizeof label);
    if (dot) {
      fprintf(f, "  n%d [label=\"%s\\n", i, label);
      print_desc(f, n->out[0].dtype, n->out[0].ndim, n->out[0].shape);
      fprintf(f, "\"];\n");
      for (int k = 0; k < n->n_in; k++) fprintf(f, "  n%d -> n%d;\n", n->in[k].node, i);
      continue;
    }
    fprintf(f, "%s", label);
    if (n->kind == GRAPH_OP) {
      print_attrs(f, kiln_op_get(n->op), n->attrs);
      fprintf(f, " (");
      for (int k = 0; k < n->n_in; k++) fprintf(f, "%s#%d.%d", k ? ", " : "", n->in[k].node, n->in[k].index);
      fprintf(f, ")");
    }
    for (int k = 0; k < n->n_out; k++) {
      fprintf(f, k ? ", " : " -> ");
      if (n->kind == GRAPH_INPUT && n->unknown) {
        char buf[KILN_SHAPE_STR_MAX];
        input_shape_str(n, &n->out[0], buf, sizeof buf);
        fprintf(f, "%s %s", kiln_dtype_name(n->out[0].dtype), buf);
        continue;
      }
      print_desc(f, n->out[k].dtype, n->out[k].ndim, n->out[k].shape);
    }
    fputc('\n', f);
  }
  if (dot) fprintf(f, "}\n");
  return ferror(f) ? kiln_errorf(KILN_ERR_IO, "kiln_graph_dump: write failed") : KILN_OK;
}

static const char *value_kind_name(const plan_value *v) {
  static const char *names[] = {"input", "bound", "arena", "view", "output"};
  return names[v->kind];
}

kiln_status kiln_plan_dump(const kiln_plan *p, FILE *f, bool dot) {
  if (!p || !f) return kiln_errorf(KILN_ERR_INVALID_ARGUMENT, "kiln_plan_dump: plan or file is NULL");
  if (dot) fprintf(f, "digraph plan {\n  node [shape=box, fontname=monospace];\n");
  else
    fprintf(f, "plan: %d steps, %d values, arena %zu bytes (%lld without reuse), %d segment%s\n", p->n_steps,
            p->n_values, p->arena_bytes, (long long)p->stats.unplanned_bytes, p->n_segments, p->n_segments == 1 ? "" : "s");
  for (int s = 0; s < p->n_steps; s++) {
    const plan_step *st = &p->steps[s];
    const kiln_op_def *def = kiln_op_get(st->op);
    if (dot) {
      fprintf(f, "  s%d [label=\"%s\"];\n", s, st->fused ? "fused" : def->name);
      for (int k = 0; k < st->n_in; k++)
        for (int t = 0; t < s; t++)
          for (int o = 0; o < p->steps[t].n_out; o++)
            if (p->steps[t].out[o] == root_of(p, st->in[k])) fprintf(f, "  s%d -> s%d;\n", t, s);
      continue;
    }
    if (p->n_segments > 1) fprintf(f, "[%d] ", p->segment_of[s]);
    fprintf(f, "%3d %s", s, st->fused ? "fused" : def->name);
    for (int k = 0; st->fused && k < st->fused->n_instr; k++)
      fprintf(f, "%s%s", k ? ", " : " [", kiln_op_get((kiln_op_id)st->fused->instr[k].tag)->name);
    if (st->fused) fputc(']', f);
    else print_attrs(f, def, st->attrs);
    fprintf(f, " (");
    for (int k = 0; k < st->n_in; k++)
      fprintf(f, "%s%%%d %s", k ? ", " : "", st->in[k], value_kind_name(&p->values[st->in[k]]));
    fprintf(f, ") ->");
    for (int k = 0; k < st->n_out; k++) {
      const plan_value *v = &p->values[st->out[k]];
      fprintf(f, " %%%d %s", st->out[k], value_kind_name(v));
      if (v->kind == VAL_ARENA) fprintf(f, "@%lld", (long long)v->offset);
      fputc(' ', f);
      print_desc(f, v->dtype, v->ndim, v->shape);
    }
    fputc('\n', f);
  }
  if (dot) fprintf(f, "}\n");
  return ferror(f) ? kiln_errorf(KILN_ERR_IO, "kiln_plan_dump: write failed") : KILN_OK;
}

/* ------------------------------------------------------------ check mode */

/* A contiguous value as float64 numbers (kiln_alloc'd), or NULL. */
static double *as_doubles(kiln_tensor *t, int64_t *n) {
  *n = kiln_tensor_numel(t);
  double *v = kiln_alloc(sizeof(double) * (size_t)(*n ? *n : 1));
  kiln_attr_value a[KILN_MAX_ATTRS];
  kiln_attrs_default(KILN_OP_CAST, a);
  a[0].i = KILN_F64;
  kiln_tensor *c = NULL;
  bool ok = v && kiln_dispatch_owned(KILN_OP_CAST, 1, &t, a, 1, &c) == KILN_OK &&
            kiln_tensor_copy_to(c, v, sizeof(double) * (size_t)*n) == KILN_OK;
  kiln_tensor_release(c);
  if (ok) return v;
  kiln_free(v);
  return NULL;
}

/* The first element where got and want differ beyond the tolerance (NaN
 * equals NaN), or -1. */
static int64_t first_difference(const double *got, const double *want, int64_t n, double rtol, double atol) {
  for (int64_t i = 0; i < n; i++) {
    if (isnan(got[i]) && isnan(want[i])) continue;
    if (!(fabs(got[i] - want[i]) <= atol + rtol * fabs(want[i]))) return i;
  }
  return -1;
}

kiln_status kiln_plan_check(kiln_plan *p, int n_in, kiln_tensor *const *inputs, double rtol, double atol) {
  if (!p || (n_in && !inputs) || n_in != p->n_inputs)
    return kiln_errorf(KILN_ERR_INVALID_ARGUMENT, "kiln_plan_check: the plan takes %d inputs, got %d", p ? p->n_inputs : 0,
                       n_in);
  for (int i = 0; p->polymorphic && i < n_in; i++) {
    const kiln_out_desc *want = &p->graph->nodes[p->input_refs[i].node].out[0];
    if (!inputs[i] || inputs[i]->ndim != want->ndim) continue; /* the run below says what is wrong */
    if (memcmp(inputs[i]->shape, want->shape, sizeof(int64_t) * (size_t)want->ndim)) {
      kiln_plan *v = plan_variant_for(p, inputs);
      if (!v) return kiln_errorf(kiln_last_status(), "kiln_plan_check: %s", kiln_last_error());
      kiln_status st = kiln_plan_check(v, n_in, inputs, rtol, atol);
      kiln_plan_free(v);
      return st;
    }
  }
  const kiln_graph *g = p->graph;
  /* The graph as traced, node by node, eagerly: the reference. */
  kiln_tensor **eager = kiln_calloc((size_t)p->n_nodes * 64 + 1, sizeof(kiln_tensor *));
  plan_run r = {.plan = p};
  r.inputs = kiln_calloc((size_t)(n_in + p->n_outputs + 1), sizeof(kiln_tensor *));
  if (!eager || !r.inputs) {
    kiln_free(eager), kiln_free(r.inputs);
    return kiln_errorf(KILN_ERR_OUT_OF_MEMORY, "kiln_plan_check: out of memory");
  }
  r.outputs = r.inputs + n_in;
  kiln_status st = KILN_OK;
  for (int i = 0; i < n_in && st == KILN_OK; i++) {
    kiln_tensor *c = inputs[i];
    st = kiln_dispatch_owned(KILN_OP_COPY, 1, &c, NULL, 1, &r.inputs[i]); /* contiguous, as runs make them */
    eager[p->input_refs[i].node * 64 + p->input_refs[i].index] = kiln_tensor_retain(r.inputs[i]);
  }
  for (int i = 0; i < p->n_nodes && st == KILN_OK; i++) {
    const graph_node *n = &g->nodes[i];
    if (n->kind == GRAPH_BOUND) eager[i * 64] = kiln_tensor_retain(n->bound);
    bool given = false; /* a cut value came in with the inputs */
    for (int k = 0; k < n->n_out && k < 64; k++) given = given || eager[i * 64 + k];
    if (n->kind != GRAPH_OP || given) continue;
    kiln_tensor *in[64];
    for (int k = 0; k < n->n_in && k < 64; k++) in[k] = eager[n->in[k].node * 64 + n->in[k].index];
    st = kiln_dispatch_owned(n->op, n->n_in, in, n->attrs, n->n_out, &eager[i * 64]);
    if (st != KILN_OK) {
      char label[96];
      graph_node_label(g, i, label, sizeof label);
      st = kiln_errorf(st, "kiln_plan_check: node %s failed eagerly: %s", label, kiln_last_error());
    }
  }
  for (int k = 0; k < p->n_outputs && st == KILN_OK; k++) {
    const plan_value *v = &p->values[p->outputs[k]];
    r.outputs[k] = tensor_new(v->dtype, v->ndim, v->shape);
    if (tensor_failed(r.outputs[k])) st = kiln_errorf(r.outputs[k]->status, "kiln_plan_check: %s", r.outputs[k]->error);
  }
  /* The plan, one step at a time in this thread, after its earlier runs. */
  if (st == KILN_OK) st = kiln_waitall();
  if (st == KILN_OK) kiln_engine_wait_var(p->engine, p->arena_var);
  kk_view vin[64], vout[64];
  for (int s = 0; s < p->n_steps && st == KILN_OK; s++) {
    const plan_step *ps = &p->steps[s];
    if ((st = run_step(&r, s, p->opts.reference_kernels, vin, vout)) != KILN_OK) break;
    /* An output copy stands for the value it copies: compare with that. */
    const graph_node *n = &g->nodes[ps->node];
    for (int k = 0; k < ps->n_out && st == KILN_OK; k++) {
      int index = ps->op == KILN_OP_COPY && n->op != KILN_OP_COPY ? 0 : k;
      kiln_tensor *want = eager[ps->node * 64 + index];
      kiln_scope_begin(); /* kiln_from_data's result, whatever the caller has open */
      kiln_tensor *got = kiln_from_data(vout[k].dtype, vout[k].ndim, vout[k].shape, vout[k].data);
      int64_t ng = 0, nw = 0;
      double *gv = as_doubles(got, &ng), *wv = want ? as_doubles(want, &nw) : NULL;
      kiln_scope_end();
      if (!gv || !wv || ng != nw) {
        st = kiln_errorf(gv && wv ? KILN_ERR_SHAPE : KILN_ERR_OUT_OF_MEMORY,
                         "kiln_plan_check: step %d: %s", s, gv && wv ? "the plan and the graph disagree on a shape" : "out of memory");
      } else {
        int64_t at = first_difference(gv, wv, ng, rtol, atol);
        if (at >= 0) {
          char label[96];
          graph_node_label(g, ps->node, label, sizeof label);
          st = kiln_errorf(KILN_ERR_CORRUPT,
                           "kiln_plan_check: step %d (%s, node %s) output %d differs from the eager value at element "
                           "%lld: compiled %.9g, eager %.9g (rtol %g, atol %g)",
                           s, ps->fused ? "fused" : kiln_op_get(ps->op)->name, label, k, (long long)at, gv[at], wv[at],
                           rtol, atol);
        }
      }
      kiln_free(gv), kiln_free(wv);
    }
  }
  for (int i = 0; i < p->n_nodes * 64; i++) kiln_tensor_release(eager[i]);
  for (int i = 0; i < n_in + p->n_outputs; i++) kiln_tensor_release(r.inputs[i]);
  kiln_free(eager), kiln_free(r.inputs);
  return st;
}
