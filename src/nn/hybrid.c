/* Hybridization: a block's forward traced once per input signature
 * (shapes, dtypes, training flag) into a graph, compiled, cached, and run
 * as a plan on later calls. The cache is bounded (least recently used
 * goes); every trace is logged with its reason. A block whose subtree
 * cannot be traced (kiln_block_set_traceable) runs its own forward
 * imperatively, its hybridized children still running their plans. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "graph/graph.h"
#include "imperative/autograd.h"
#include "imperative/dispatch.h"
#include "nn/nn.h"

typedef struct {
  int n;
  bool training, recording;
  /* Recording: which inputs autograd tracks (backward computes their
   * gradients; the others', a third of an MLP's backward, are skipped). */
  bool input_grad[8];
  kiln_dtype dtype[8];
  int ndim[8];
  int64_t shape[8][KILN_MAX_DIMS];
} signature;

typedef struct {
  signature sig;
  kiln_plan *plan;
  /* Recording signatures: the backward plan, run by backward on the
   * inputs, the head gradient and the values the forward run saved (plan's
   * outputs after the first, n_saved of them); it gives the gradients of
   * the float inputs, then of the parameters. NULL when recorded calls of
   * this signature run imperatively. */
  kiln_plan *train;
  int n_saved;
  int n_params;
  kiln_tensor **params; /* retained, in the train plan's order */
  bool input_grad[8];
  uint64_t last_use;
} cache_entry;

struct hybrid_state {
  kiln_hybridize_options opts;
  cache_entry *cache;
  int n_cached;
  uint64_t clock;
  int traces;
  bool imperative; /* a child cannot be traced */
  signature last;  /* the previous call's, for the log */
  bool has_last;
  char *log;
  size_t log_len;
};

static _Thread_local int untraceable_hits;

void hybrid_note_untraceable(void) { untraceable_hits++; }

kiln_hybridize_options kiln_hybridize_options_default(void) {
  const char *check = getenv("KILN_CHECK_HYBRID");
  return (kiln_hybridize_options){true, 8, kiln_compile_options_default(), check && !strcmp(check, "1")};
}

static void entry_clear(cache_entry *e) {
  kiln_plan_free(e->plan);
  kiln_plan_free(e->train);
  for (int i = 0; i < e->n_params; i++) kiln_tensor_release(e->params[i]);
  kiln_free(e->params);
  memset(e, 0, sizeof *e);
}

void hybrid_free(struct hybrid_state *h) {
  if (!h) return;
  for (int i = 0; i < h->n_cached; i++) entry_clear(&h->cache[i]);
  kiln_free(h->cache);
  kiln_free(h->log);
  kiln_free(h);
}

static kiln_status hybridize_one(kiln_block *b, const kiln_hybridize_options *o) {
  if (!o->active) {
    hybrid_free(b->hybrid);
    b->hybrid = NULL;
    return KILN_OK;
  }
  if (o->cache_capacity < 1)
    return kiln_errorf(KILN_ERR_INVALID_ARGUMENT, "kiln_block_hybridize: cache capacity %d must be >= 1", o->cache_capacity);
  struct hybrid_state *h = kiln_calloc(1, sizeof *h);
  if (h) h->cache = kiln_calloc((size_t)o->cache_capacity, sizeof(cache_entry));
  if (!h || !h->cache) {
    if (h) kiln_free(h);
    return kiln_errorf(KILN_ERR_OUT_OF_MEMORY, "kiln_block_hybridize: out of memory");
  }
  h->opts = *o;
  hybrid_free(b->hybrid); /* new options: traces start afresh */
  b->hybrid = h;
  return KILN_OK;
}

kiln_status kiln_block_hybridize(kiln_block *b, const kiln_hybridize_options *o) {
  if (!b) return kiln_errorf(KILN_ERR_INVALID_ARGUMENT, "kiln_block_hybridize: block is NULL");
  kiln_hybridize_options opts = o ? *o : kiln_hybridize_options_default();
  kiln_status st = hybridize_one(b, &opts);
  for (int i = 0; st == KILN_OK && i < b->n_children; i++) st = kiln_block_hybridize(b->children[i].block, &opts);
  return st;
}

kiln_status kiln_block_set_traceable(kiln_block *b, bool traceable) {
  if (!b) return kiln_errorf(KILN_ERR_INVALID_ARGUMENT, "kiln_block_set_traceable: block is NULL");
  b->untraceable = !traceable;
  return KILN_OK;
}

const char *kiln_block_trace_log(const kiln_block *b) { return b && b->hybrid && b->hybrid->log ? b->hybrid->log : ""; }

kiln_plan *hybrid_inference_plan(const kiln_block *b) {
  const struct hybrid_state *h = b->hybrid;
  const cache_entry *best = NULL;
  for (int i = 0; h && i < h->n_cached; i++) {
    const cache_entry *e = &h->cache[i];
    if (!e->sig.training && !e->sig.recording && (!best || e->last_use > best->last_use)) best = e;
  }
  return best ? best->plan : NULL;
}

static void log_line(struct hybrid_state *h, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void log_line(struct hybrid_state *h, const char *fmt, ...) {
  char line[512];
  va_list ap;
  va_start(ap, fmt);
  int len = vsnprintf(line, sizeof line, fmt, ap);
  va_end(ap);
  if (len < 0) return;
  if ((size_t)len >= sizeof line) len = (int)sizeof line - 1;
  char *grown = kiln_alloc(h->log_len + (size_t)len + 2);
  if (!grown) return; /* the log is advice; the call goes on */
  if (h->log_len) memcpy(grown, h->log, h->log_len);
  memcpy(grown + h->log_len, line, (size_t)len);
  grown[h->log_len + (size_t)len] = '\n';
  grown[h->log_len + (size_t)len + 1] = '\0';
  kiln_free(h->log);
  h->log = grown;
  h->log_len += (size_t)len + 1;
}

static bool same_signature(const signature *a, const signature *b) {
  if (a->n != b->n || a->training != b->training || a->recording != b->recording ||
      memcmp(a->input_grad, b->input_grad, sizeof a->input_grad))
    return false;
  for (int i = 0; i < a->n; i++)
    if (a->dtype[i] != b->dtype[i] || a->ndim[i] != b->ndim[i] ||
        memcmp(a->shape[i], b->shape[i], sizeof(int64_t) * (size_t)a->ndim[i]))
      return false;
  return true;
}

/* Why this call traces: what changed since the previous call. */
static void trace_reason(const struct hybrid_state *h, const signature *s, char *buf, size_t cap) {
  if (!h->has_last) {
    snprintf(buf, cap, "first call");
    return;
  }
  const signature *p = &h->last;
  if (p->training != s->training || p->recording != s->recording) {
    snprintf(buf, cap, "training %s, recording %s", s->training ? "on" : "off", s->recording ? "on" : "off");
    return;
  }
  if (p->n != s->n) {
    snprintf(buf, cap, "%d inputs, were %d", s->n, p->n);
    return;
  }
  for (int i = 0; i < s->n; i++)
    if (p->input_grad[i] != s->input_grad[i]) {
      snprintf(buf, cap, "input %d %s a gradient", i, s->input_grad[i] ? "now needs" : "no longer needs");
      return;
    }
  for (int i = 0; i < s->n; i++) {
    char was[KILN_SHAPE_STR_MAX], now[KILN_SHAPE_STR_MAX];
    if (p->dtype[i] != s->dtype[i] || p->ndim[i] != s->ndim[i] ||
        memcmp(p->shape[i], s->shape[i], sizeof(int64_t) * (size_t)s->ndim[i])) {
      snprintf(buf, cap, "input %d is %s %s, was %s %s", i, kiln_dtype_name(s->dtype[i]),
               kiln_shape_str(now, sizeof now, s->ndim[i], s->shape[i]), kiln_dtype_name(p->dtype[i]),
               kiln_shape_str(was, sizeof was, p->ndim[i], p->shape[i]));
      return;
    }
  }
  snprintf(buf, cap, "a signature evicted from the cache");
}

/* Differentiates the traced forward (y) in g into e's train plan. False
 * (with the reason in kiln_last_error) when it cannot: recorded calls of
 * the signature then run imperatively. */
static bool build_train_plan(struct hybrid_state *h, kiln_graph *g, kiln_tensor *const *ph, int n, kiln_tensor *y,
                             cache_entry *e) {
  for (int i = 0; i < g->n; i++)
    if (g->nodes[i].kind == GRAPH_OP && (kiln_op_get(g->nodes[i].op)->flags & KILN_OP_RANDOM)) {
      kiln_errorf(KILN_ERR_UNSUPPORTED, "random ops (dropout) in a recorded plan are not supported yet");
      return false;
    }
  enum { MAX_SRC = 8 + 256 };
  int src[MAX_SRC], n_src = 0;
  for (int i = 0; i < n; i++) {
    e->input_grad[i] = e->sig.input_grad[i];
    if (e->input_grad[i]) src[n_src++] = graph_ref_of(ph[i], NULL, NULL);
  }
  int first_param = n_src;
  for (int i = 0; i < g->n; i++) {
    if (g->nodes[i].kind != GRAPH_BOUND || !kiln_grad(g->nodes[i].bound)) continue;
    if (n_src == MAX_SRC) {
      kiln_errorf(KILN_ERR_UNSUPPORTED, "more than %d parameters in one recorded plan", MAX_SRC - 8);
      return false;
    }
    src[n_src++] = i;
  }
  e->n_params = n_src - first_param;
  e->params = kiln_calloc((size_t)e->n_params + 1, sizeof(kiln_tensor *));
  kiln_tensor *grads[MAX_SRC] = {0};
  kiln_tensor *head = kiln_graph_input(g, "head_grad", kiln_tensor_dtype(y), kiln_tensor_ndim(y), kiln_tensor_shape(y));
  if (!e->params || kiln_tensor_status(head) != KILN_OK) return false;
  for (int j = 0; j < e->n_params; j++) e->params[j] = kiln_tensor_retain(g->nodes[src[first_param + j]].bound);
  int first_grad_node = graph_ref_of(head, NULL, NULL) + 1;
  graph_trace_begin(g);
  kiln_status st = graph_gradients(g, y, head, n_src, src, grads);
  graph_trace_end();
  /* The forward values the gradient reads: the forward run saves them, so
   * backward does not compute them again. Views are free to redo, so
   * their bases are saved; inputs and parameters are at hand. */
  graph_ref *saved = kiln_alloc(sizeof(graph_ref) * ((size_t)g->n + 2)), grad_refs[MAX_SRC];
  int n_saved = 0;
  if (!saved) st = kiln_errorf(KILN_ERR_OUT_OF_MEMORY, "out of memory");
  if (st == KILN_OK) saved[n_saved++] = (graph_ref){graph_ref_of(y, NULL, NULL), 0};
  for (int i = first_grad_node; st == KILN_OK && i < g->n; i++)
    for (int k = 0; k < g->nodes[i].n_in; k++) {
      graph_ref r = g->nodes[i].in[k];
      while (r.node < first_grad_node && g->nodes[r.node].kind == GRAPH_OP &&
             (kiln_op_get(g->nodes[r.node].op)->flags & KILN_OP_VIEW))
        r = g->nodes[r.node].in[0];
      if (r.node >= first_grad_node || g->nodes[r.node].kind != GRAPH_OP) continue;
      bool have = false;
      for (int j = 0; j < n_saved && !have; j++) have = saved[j].node == r.node && saved[j].index == r.index;
      if (!have) saved[n_saved++] = r;
    }
  for (int j = 0; st == KILN_OK && j < n_src; j++) grad_refs[j] = ((const graph_value *)grads[j]->sym)->ref;
  if (st == KILN_OK) e->train = graph_compile_refs(g, g->n, n_src, grad_refs, n_saved - 1, saved + 1, &h->opts.compile);
  /* The recorded forward: y and the saved values, from the forward nodes. */
  if (e->train) e->plan = graph_compile_refs(g, first_grad_node - 1, n_saved, saved, 0, NULL, &h->opts.compile);
  if (e->train && !e->plan) {
    kiln_plan_free(e->train);
    e->train = NULL;
  }
  e->n_saved = n_saved - 1;
  kiln_free(saved);
  for (int j = 0; j < n_src; j++) kiln_tensor_release(grads[j]);
  return e->train != NULL;
}

static kiln_plan *trace(kiln_block *b, struct hybrid_state *h, int n, kiln_tensor *const *inputs, kiln_tensor **failure,
                        cache_entry *e, bool recording) {
  kiln_graph *g = kiln_graph_new();
  if (!g) return NULL;
  kiln_tensor *ph[8];
  kiln_scope_begin();
  for (int i = 0; i < n; i++) {
    char name[16];
    snprintf(name, sizeof name, "data%d", i);
    ph[i] = kiln_graph_input(g, name, kiln_tensor_dtype(inputs[i]), kiln_tensor_ndim(inputs[i]), kiln_tensor_shape(inputs[i]));
  }
  int hits = untraceable_hits;
  kiln_pause_begin(); /* a trace builds a graph, not a tape */
  graph_trace_begin(g);
  kiln_tensor *y = b->forward(b, n, ph);
  graph_trace_end();
  kiln_pause_end();
  kiln_plan *plan = NULL;
  if (untraceable_hits != hits) {
    h->imperative = true;
  } else if (!y || kiln_tensor_status(y) != KILN_OK) {
    *failure = kiln_keep(y ? y : kiln_failed(KILN_ERR_INTERNAL, "%s: forward returned NULL", b->type));
  } else if (graph_ref_of(y, NULL, NULL) < 0) {
    h->imperative = true; /* the output does not depend on the graph: nothing to compile */
  } else {
    plan = kiln_graph_compile(g, 1, &y, &h->opts.compile);
    if (!plan) *failure = kiln_keep(kiln_failed(KILN_ERR_INTERNAL, "%s: compiling the trace: %s", b->type, kiln_last_error()));
    if (plan && recording) {
      if (!build_train_plan(h, g, ph, n, y, e)) {
        log_line(h, "recorded calls of this signature run imperatively: %s", kiln_last_error());
      } else {
        kiln_plan_free(plan); /* the recorded forward also saves what backward reads */
        plan = e->plan;
        e->plan = NULL;
      }
    }
  }
  kiln_scope_end();
  kiln_graph_release(g);
  return plan;
}

/* What a recorded call leaves on the tape: the backward plan, the inputs
 * and the values the forward run saved for it. */
typedef struct {
  kiln_plan *train;
  int n, n_saved;
  kiln_tensor **inputs; /* n inputs, a slot for the head gradient, n_saved saved values */
} recorded_call;

static void recorded_free(void *ctx) {
  recorded_call *r = ctx;
  kiln_plan_free(r->train);
  for (int i = 0; r->inputs && i < r->n + 1 + r->n_saved; i++) kiln_tensor_release(r->inputs[i]);
  kiln_free(r->inputs);
  kiln_free(r);
}

/* The tape node's gradient: the train plan on the saved inputs and the
 * head gradient gives the gradients of the node's inputs (the float data
 * inputs, then the parameters), in that order. */
static kiln_status recorded_backward(kiln_grad_call *c) {
  recorded_call *r = c->ctx;
  r->inputs[r->n] = c->out_grad[0]; /* borrowed for the run */
  kiln_tensor **grads = kiln_calloc((size_t)c->n_in + 1, sizeof(kiln_tensor *));
  kiln_status st = grads ? kiln_plan_run(r->train, r->n + 1 + r->n_saved, r->inputs, grads)
                         : kiln_errorf(KILN_ERR_OUT_OF_MEMORY, "hybridized block: out of memory in backward");
  r->inputs[r->n] = NULL;
  for (int k = 0; st == KILN_OK && k < c->n_in; k++)
    if (c->need[k]) c->in_grad[k] = grads[k];
  kiln_free(grads);
  return st;
}

static const kiln_op_def recorded_def = {.name = "hybridized block"};

kiln_tensor *hybrid_call(kiln_block *b, int n, kiln_tensor *const *inputs) {
  struct hybrid_state *h = b->hybrid;
  if (h->imperative || b->untraceable || n > 8) return b->forward(b, n, inputs);
  signature s = {.n = n, .training = kiln_is_training(), .recording = kiln_is_recording()};
  for (int i = 0; i < n; i++) {
    if (kiln_tensor_failed(inputs[i])) return b->forward(b, n, inputs); /* passes the failure on */
    s.dtype[i] = kiln_tensor_dtype(inputs[i]);
    s.input_grad[i] = s.recording && (s.dtype[i] == KILN_F32 || s.dtype[i] == KILN_F64) && autograd_wants(1, &inputs[i]);
    s.ndim[i] = kiln_tensor_ndim(inputs[i]);
    memcpy(s.shape[i], kiln_tensor_shape(inputs[i]), sizeof(int64_t) * (size_t)s.ndim[i]);
  }
  cache_entry *hit = NULL;
  for (int i = 0; i < h->n_cached && !hit; i++)
    if (same_signature(&h->cache[i].sig, &s)) hit = &h->cache[i];
  if (!hit) {
    char reason[256];
    trace_reason(h, &s, reason, sizeof reason);
    if (h->n_cached == h->opts.cache_capacity) {
      int oldest = 0;
      for (int i = 1; i < h->n_cached; i++)
        if (h->cache[i].last_use < h->cache[oldest].last_use) oldest = i;
      entry_clear(&h->cache[oldest]);
      h->cache[oldest] = h->cache[--h->n_cached];
    }
    cache_entry entry = {.sig = s};
    kiln_tensor *failure = NULL;
    entry.plan = trace(b, h, n, inputs, &failure, &entry, s.recording);
    h->traces++;
    if (h->imperative) {
      entry_clear(&entry);
      log_line(h, "trace %d (%s): a child cannot be traced; %s runs imperatively, its hybridized children compiled",
               h->traces, reason, b->type);
      return b->forward(b, n, inputs);
    }
    if (!entry.plan && !s.recording) {
      entry_clear(&entry);
      return failure;
    }
    if (!entry.plan) {
      /* Recorded, a forward that cannot be traced in training mode (it
       * updates state in place, as BatchNorm does) runs eagerly; the
       * signature is cached as such, so later calls do not trace again. */
      log_line(h, "trace %d (%s): recorded calls run imperatively: %s", h->traces, reason, kiln_tensor_error(failure));
    } else {
      kiln_plan_stats st = kiln_plan_get_stats(entry.plan);
      char backward[128] = "";
      if (entry.train) {
        kiln_plan_stats bt = kiln_plan_get_stats(entry.train);
        snprintf(backward, sizeof backward,
                 ", with a forward and backward plan (backward %d steps, %d values saved by forward)", bt.steps,
                 entry.n_saved);
      }
      log_line(h, "trace %d (%s): %d nodes -> %d steps, arena %lld bytes%s", h->traces, reason, st.nodes_before,
               st.steps, (long long)st.arena_bytes, backward);
    }
    hit = &h->cache[h->n_cached++];
    *hit = entry;
  }
  hit->last_use = ++h->clock;
  h->last = s;
  h->has_last = true;
  if (s.recording && !hit->train) return b->forward(b, n, inputs);
  kiln_tensor *outs[1 + 256], *y = NULL;
  if (1 + hit->n_saved > (int)(sizeof outs / sizeof *outs))
    return kiln_failed(KILN_ERR_UNSUPPORTED, "%s: more than %d values saved for backward", b->type, 256);
  kiln_status st = kiln_plan_run(hit->plan, n, inputs, outs);
  if (st == KILN_OK) y = outs[0];
  if (st == KILN_OK && h->opts.check && (st = kiln_plan_check(hit->plan, n, inputs, 1e-5, 1e-6)) != KILN_OK)
    log_line(h, "check: %s", kiln_last_error());
  if (st != KILN_OK) return kiln_failed(st, "%s: %s", b->type, kiln_last_error());
  if (!s.recording) return y;
  /* One tape node for the whole call, over the inputs and parameters. */
  kiln_tensor *tape_in[8 + 256];
  int n_tape = 0;
  for (int i = 0; i < n; i++)
    if (hit->input_grad[i]) tape_in[n_tape++] = inputs[i];
  for (int j = 0; j < hit->n_params && n_tape < (int)(sizeof tape_in / sizeof *tape_in); j++) tape_in[n_tape++] = hit->params[j];
  recorded_call *r = kiln_calloc(1, sizeof *r);
  if (r) r->inputs = kiln_calloc((size_t)(n + 1 + hit->n_saved), sizeof(kiln_tensor *));
  if (!r || !r->inputs) {
    kiln_free(r);
    return kiln_failed(KILN_ERR_OUT_OF_MEMORY, "%s: out of memory recording the call", b->type);
  }
  r->train = graph_plan_retain(hit->train);
  r->n = n;
  r->n_saved = hit->n_saved;
  for (int i = 0; i < n; i++) r->inputs[i] = kiln_tensor_retain(inputs[i]);
  for (int j = 0; j < hit->n_saved; j++) r->inputs[n + 1 + j] = kiln_tensor_retain(outs[1 + j]);
  if (!autograd_record_custom(&recorded_def, recorded_backward, r, recorded_free, n_tape, tape_in, 1, &y)) {
    recorded_free(r);
    return kiln_failed(KILN_ERR_OUT_OF_MEMORY, "%s: out of memory recording the call", b->type);
  }
  return y;
}
