/* Native models: kiln_block_export writes the graph a hybridized block was
 * compiled from as JSON (PREFIX.kiln.json) and the tensors it binds as
 * safetensors (PREFIX.safetensors); kiln_model_load rebuilds that graph
 * with the registry's ops and compiles it. The layout is in
 * docs/format.md.
 *
 * Rebuilding goes through dispatch with a trace active, exactly as the
 * block's trace did, so each node is checked by its op's own inference
 * (shape and dtype errors in a hostile file come back as that op's
 * status, naming the node) and the graph, and hence the plan, is the one
 * the block ran: the outputs agree bit for bit.
 *
 * A file is data from outside. The loader checks every field before it
 * uses it and never trusts a count or an index: references may only point
 * to earlier nodes (so the graph is acyclic by construction) and to outputs
 * those nodes have; names are unique; the parameters must match the
 * safetensors file exactly. Names go into messages cut to 64 bytes, with
 * control bytes replaced, so a hostile name cannot flood a message. */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "graph/graph.h"
#include "imperative/dispatch.h"
#include "io/json.h"
#include "io/model.h"
#include "io/onnx.h"
#include "io/safetensors.h"
#include "nn/nn.h"
#include "tensor/tensor.h"

#define FORMAT_NAME "kiln.model"
#define FORMAT_VERSION 1
/* A plan step takes at most this many inputs and outputs (compile.c). */
#define MAX_NODE_VALUES 64


static bool dtype_from_name(const char *s, size_t len, kiln_dtype *out) {
  for (int d = 0; d < KILN_DTYPE_COUNT; d++) {
    const char *name = kiln_dtype_name((kiln_dtype)d);
    if (strlen(name) == len && memcmp(name, s, len) == 0) {
      *out = (kiln_dtype)d;
      return true;
    }
  }
  return false;
}

/* ================================================================ export */

/* A growing text buffer; after a failed allocation it only counts. */
typedef struct {
  char *buf;
  size_t len, cap;
  bool failed;
} text;

static void put(text *t, const char *s, size_t n) {
  if (t->failed) return;
  if (t->len + n + 1 > t->cap) {
    size_t cap = t->cap ? t->cap : 4096;
    while (cap < t->len + n + 1) cap *= 2;
    char *grown = kiln_alloc(cap);
    if (!grown) {
      t->failed = true;
      return;
    }
    if (t->len) memcpy(grown, t->buf, t->len);
    kiln_free(t->buf);
    t->buf = grown;
    t->cap = cap;
  }
  memcpy(t->buf + t->len, s, n);
  t->len += n;
  t->buf[t->len] = '\0';
}

static void put_str(text *t, const char *s) { put(t, s, strlen(s)); }
#define PUT_LIT(t, s) put(t, s, sizeof(s) - 1)

static void putf(text *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void putf(text *t, const char *fmt, ...) {
  char tmp[128];
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
  va_end(ap);
  put(t, tmp, n < 0 ? 0 : (size_t)n < sizeof tmp ? (size_t)n : sizeof tmp - 1);
}

static void put_string(text *t, const char *s) {
  char small[128];
  size_t need = json_escape(small, sizeof small, s, strlen(s));
  if (need < sizeof small) {
    put(t, small, need);
    return;
  }
  char *big = kiln_alloc(need + 1);
  if (!big) {
    t->failed = true;
    return;
  }
  json_escape(big, need + 1, s, strlen(s));
  put(t, big, need);
  kiln_free(big);
}

/* JSON has no NaN or infinities: those are written as strings. "%.17g"
 * round-trips every double; a locale whose decimal point is not '.' would
 * put its own there, so anything that is not a digit, sign or exponent
 * becomes '.'. */
static void put_double(text *t, double v) {
  if (isnan(v)) {
    PUT_LIT(t, "\"nan\"");
    return;
  }
  if (isinf(v)) {
    put_str(t, v > 0 ? "\"inf\"" : "\"-inf\"");
    return;
  }
  char num[64];
  int n = snprintf(num, sizeof num, "%.17g", v);
  int w = 0;
  for (int i = 0; i < n; i++) {
    char ch = num[i];
    if ((ch >= '0' && ch <= '9') || ch == '-' || ch == '+' || ch == 'e') {
      num[w++] = ch;
    } else if (w == 0 || num[w - 1] != '.') {
      num[w++] = '.';
    }
  }
  put(t, num, (size_t)w);
}

static void put_shape(text *t, int ndim, const int64_t *shape) {
  PUT_LIT(t, "[");
  for (int d = 0; d < ndim; d++) putf(t, d ? ", %lld" : "%lld", (long long)shape[d]);
  PUT_LIT(t, "]");
}

/* A dim whose bit is set in unknown is written -1. */
static void put_value_decl(text *t, const char *name, const kiln_out_desc *d, unsigned unknown, bool last) {
  PUT_LIT(t, "    {\"name\": ");
  put_string(t, name);
  putf(t, ", \"dtype\": \"%s\", \"shape\": ", kiln_dtype_name(d->dtype));
  int64_t shape[KILN_MAX_DIMS];
  for (int i = 0; i < d->ndim; i++) shape[i] = unknown & (1u << i) ? -1 : d->shape[i];
  put_shape(t, d->ndim, shape);
  put_str(t, last ? "}\n" : "},\n");
}

static void put_attrs(text *t, const kiln_op_def *def, const kiln_attr_value *a) {
  PUT_LIT(t, ", \"attrs\": {");
  for (int k = 0; k < def->n_attrs; k++) {
    if (k) PUT_LIT(t, ", ");
    put_string(t, def->attrs[k].name);
    PUT_LIT(t, ": ");
    switch (def->attrs[k].type) {
    case KILN_ATTR_INT:
      putf(t, "%lld", (long long)a[k].i);
      break;
    case KILN_ATTR_FLOAT:
      put_double(t, a[k].f);
      break;
    case KILN_ATTR_INTS:
      PUT_LIT(t, "[");
      for (int i = 0; i < a[k].n && i < KILN_MAX_ATTR_INTS; i++)
        putf(t, i ? ", %lld" : "%lld", (long long)a[k].ints[i]);
      PUT_LIT(t, "]");
      break;
    }
  }
  PUT_LIT(t, "}");
}

/* What the export takes from the graph: which nodes, their new numbers,
 * and the names of the bound tensors (model.h). */
typedef model_export_state export_state;

void model_export_state_free(export_state *s) {
  for (int i = 0; s->bound_name && i < s->g->n; i++) kiln_free(s->bound_name[i]);
  kiln_free(s->bound_name);
  kiln_free(s->index);
  kiln_free(s->bound);
  kiln_free(s->names);
}

static bool name_taken(const kiln_param_list *params, const export_state *s, const char *name) {
  for (int j = 0; j < params->n; j++)
    if (!strcmp(params->names[j], name)) return true;
  for (int i = 0; i < s->g->n; i++)
    if (s->bound_name[i] && !strcmp(s->bound_name[i], name)) return true;
  return false;
}

/* Numbers the nodes the outputs depend on (and the plan's inputs, which a
 * run takes whether or not they are used) and names the bound tensors:
 * a block parameter by its path, anything else the trace captured as
 * "const.N", N the node's number, made unique against the parameters. */
static kiln_status export_select(const char *fn, kiln_block *b, const kiln_graph *g, int n_inputs, int n_out,
                                 const graph_ref *outs, export_state *s) {
  s->g = g;
  s->n_inputs = n_inputs;
  s->n_out = n_out;
  s->outs = outs;
  bool *live = kiln_calloc((size_t)g->n + 1, sizeof(bool));
  s->index = kiln_alloc(sizeof(int) * ((size_t)g->n + 1));
  s->bound_name = kiln_calloc((size_t)g->n + 1, sizeof(char *));
  s->bound = kiln_alloc(sizeof(kiln_tensor *) * ((size_t)g->n + 1));
  s->names = kiln_alloc(sizeof(char *) * ((size_t)g->n + 1));
  if (!live || !s->index || !s->bound_name || !s->bound || !s->names) {
    kiln_free(live);
    return kiln_errorf(KILN_ERR_OUT_OF_MEMORY, "%s: out of memory", fn);
  }
  for (int k = 0; k < n_out; k++) live[outs[k].node] = true;
  int seen_inputs = 0;
  for (int i = 0; i < g->n; i++)
    if (g->nodes[i].kind == GRAPH_INPUT && seen_inputs++ < n_inputs) live[i] = true;
  /* Nodes are in topological order: one sweep back marks what they read. */
  for (int i = g->n - 1; i >= 0; i--)
    if (live[i])
      for (int k = 0; k < g->nodes[i].n_in; k++) live[g->nodes[i].in[k].node] = true;
  kiln_param_list params = {0};
  kiln_status st = b ? kiln_block_collect_params(b, &params) : KILN_OK;
  if (st != KILN_OK) {
    kiln_free(live);
    return kiln_errorf(st, "%s: %s", fn, kiln_last_error());
  }
  int next = 0;
  for (int i = 0; i < g->n && st == KILN_OK; i++) {
    s->index[i] = live[i] ? next++ : -1;
    const graph_node *n = &g->nodes[i];
    if (!live[i] || n->kind != GRAPH_BOUND) continue;
    const char *pname = NULL;
    for (int j = 0; j < params.n && !pname; j++)
      if (params.tensors[j] == n->bound) pname = params.names[j];
    char generated[48];
    if (!pname) {
      int suffix = s->index[i];
      do snprintf(generated, sizeof generated, "const.%d", suffix++);
      while (name_taken(&params, s, generated));
    }
    s->bound_name[i] = kiln_strdup(pname ? pname : generated);
    if (!s->bound_name[i]) {
      st = kiln_errorf(KILN_ERR_OUT_OF_MEMORY, "%s: out of memory", fn);
      break;
    }
    s->bound[s->n_bound] = n->bound;
    s->names[s->n_bound++] = s->bound_name[i];
  }
  kiln_param_list_free(&params);
  kiln_free(live);
  return st;
}

static void export_json(const export_state *s, int n_out, const graph_ref *outs, text *t) {
  const kiln_graph *g = s->g;
  putf(t, "{\n  \"format\": \"%s\",\n  \"version\": %d,\n  \"inputs\": [\n", FORMAT_NAME, FORMAT_VERSION);
  int seen = 0;
  for (int i = 0; i < g->n; i++)
    if (g->nodes[i].kind == GRAPH_INPUT && seen < s->n_inputs) {
      seen++;
      unsigned unknown = g->nodes[i].unknown | (s->dynamic_batch && g->nodes[i].out[0].ndim ? 1u : 0u);
      put_value_decl(t, g->nodes[i].name, &g->nodes[i].out[0], unknown, seen == s->n_inputs);
    }
  PUT_LIT(t, "  ],\n  \"parameters\": [\n");
  for (int i = 0, k = 0; i < g->n; i++)
    if (s->bound_name[i]) put_value_decl(t, s->bound_name[i], &g->nodes[i].out[0], 0, ++k == s->n_bound);
  PUT_LIT(t, "  ],\n  \"nodes\": [\n");
  int last = -1;
  for (int i = 0; i < g->n; i++)
    if (s->index[i] >= 0) last = i;
  for (int i = 0; i < g->n; i++) {
    const graph_node *n = &g->nodes[i];
    if (s->index[i] < 0) continue;
    if (n->kind == GRAPH_INPUT) {
      PUT_LIT(t, "    {\"input\": ");
      put_string(t, n->name);
    } else if (n->kind == GRAPH_BOUND) {
      PUT_LIT(t, "    {\"parameter\": ");
      put_string(t, s->bound_name[i]);
    } else {
      const kiln_op_def *def = kiln_op_get(n->op);
      putf(t, "    {\"name\": \"%s.%d\", \"op\": \"%s\", \"inputs\": [", def->name, s->index[i], def->name);
      for (int k = 0; k < n->n_in; k++) putf(t, k ? ", [%d, %d]" : "[%d, %d]", s->index[n->in[k].node], n->in[k].index);
      PUT_LIT(t, "]");
      if (def->n_attrs) put_attrs(t, def, n->attrs);
    }
    put_str(t, i == last ? "}\n" : "},\n");
  }
  PUT_LIT(t, "  ],\n  \"outputs\": [\n");
  for (int k = 0; k < n_out; k++)
    putf(t, "    {\"name\": \"output%d\", \"value\": [%d, %d]}%s\n", k, s->index[outs[k].node], outs[k].index,
         k + 1 < n_out ? "," : "");
  PUT_LIT(t, "  ]\n}\n");
}

static atomic_ulong temp_counter;

/* data to path through a temporary file in the same directory, flushed,
 * fsync'd and renamed over path: a reader sees the old file or the new. */
kiln_status model_write_atomic(const char *fn, const char *path, const void *data, size_t len) {
  size_t cap = strlen(path) + 48;
  char *tmp = kiln_alloc(cap);
  if (!tmp) return kiln_errorf(KILN_ERR_OUT_OF_MEMORY, "%s: %s: out of memory", fn, path);
  /* A counter as well as the pid: two threads may export to one path. */
  snprintf(tmp, cap, "%s.tmp.%ld.%lu", path, (long)getpid(), (unsigned long)atomic_fetch_add(&temp_counter, 1));
  kiln_status st = KILN_OK;
  /* O_EXCL: never write through a file or link someone else put there. */
  int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL, 0666);
  FILE *f = fd < 0 ? NULL : fdopen(fd, "wb");
  if (!f) {
    st = kiln_errorf(KILN_ERR_IO, "%s: %s: cannot create %s: %s", fn, path, tmp, strerror(errno));
    if (fd >= 0) {
      close(fd);
      remove(tmp);
    }
    kiln_free(tmp);
    return st;
  }
  bool ok = fwrite(data, 1, len, f) == len && fflush(f) == 0 && fsync(fileno(f)) == 0;
  int err = errno;
  if (fclose(f) != 0 && ok) {
    ok = false;
    err = errno;
  }
  if (!ok) {
    st = kiln_errorf(KILN_ERR_IO, "%s: %s: write to %s failed: %s", fn, path, tmp, strerror(err));
    remove(tmp);
  } else if (rename(tmp, path) != 0) {
    st = kiln_errorf(KILN_ERR_IO, "%s: %s: rename from %s failed: %s", fn, path, tmp, strerror(errno));
    remove(tmp);
  }
  kiln_free(tmp);
  return st;
}

/* PREFIX + suffix, kiln_alloc'd; NULL when out of memory. */
static char *with_suffix(const char *prefix, const char *suffix) {
  size_t a = strlen(prefix), b = strlen(suffix);
  char *s = kiln_alloc(a + b + 1);
  if (s) {
    memcpy(s, prefix, a);
    memcpy(s + a, suffix, b + 1);
  }
  return s;
}

/* A batch left unknown must be one: the graph built again at two other
 * batch sizes (every op's checks and inference) holds, and every output
 * has that batch as its dim 0. A shape an op fixed when it was traced
 * (reshape to [B, -1]) fails here, named, instead of computing something
 * else at another size. */
static kiln_status check_dynamic_batch(const char *fn, kiln_graph *g, int n_inputs, int n_out, const graph_ref *outs) {
  kiln_tensor *probe[64] = {0};
  int *map = kiln_alloc(sizeof(int) * ((size_t)g->n + 1));
  if (!map || n_inputs > 64) {
    kiln_free(map);
    return kiln_errorf(map ? KILN_ERR_UNSUPPORTED : KILN_ERR_OUT_OF_MEMORY, "%s: %s", fn,
                       map ? "more than 64 inputs with a dynamic batch" : "out of memory");
  }
  int64_t traced = -1;
  for (int i = 0; i < g->n && traced < 0; i++)
    if (g->nodes[i].kind == GRAPH_INPUT && g->nodes[i].out[0].ndim) traced = g->nodes[i].out[0].shape[0];
  kiln_status st = KILN_OK;
  for (int round = 0; round < 2 && st == KILN_OK; round++) {
    int64_t batch = round == 0 ? traced + 1 : 2 * traced + 1;
    kiln_scope_begin();
    for (int i = 0, k = 0; i < g->n && k < n_inputs && st == KILN_OK; i++) {
      const kiln_out_desc *d = &g->nodes[i].out[0];
      if (g->nodes[i].kind != GRAPH_INPUT) continue;
      int64_t shape[KILN_MAX_DIMS];
      memcpy(shape, d->shape, sizeof shape);
      if (d->ndim) shape[0] = batch;
      probe[k] = kiln_zeros(d->dtype, d->ndim, shape);
      st = kiln_tensor_failed(probe[k]) ? kiln_tensor_status(probe[k]) : KILN_OK;
      k++;
    }
    kiln_graph *h = st == KILN_OK ? graph_specialize(g, g->n, probe, n_out, outs, map) : NULL;
    if (st == KILN_OK && !h)
      st = kiln_errorf(kiln_last_status(), "%s: with a dynamic batch, the graph does not hold for batch %lld: %s", fn,
                       (long long)batch, kiln_last_error());
    for (int k = 0; h && k < n_out && st == KILN_OK; k++) {
      const kiln_out_desc *o = &h->nodes[map[outs[k].node]].out[outs[k].index];
      if (o->ndim == 0 || o->shape[0] != batch)
        st = kiln_errorf(KILN_ERR_SHAPE, "%s: with a dynamic batch, output %d does not follow the batch: at batch %lld "
                         "its dim 0 is %lld", fn, k, (long long)batch, o->ndim ? (long long)o->shape[0] : 0LL);
    }
    kiln_graph_release(h);
    kiln_scope_end();
  }
  kiln_free(map);
  return st;
}

kiln_status kiln_block_export(kiln_block *b, const char *path_prefix) {
  return kiln_block_export_ex(b, path_prefix, NULL);
}

static kiln_plan *model_plan(const kiln_model *m);

kiln_status model_export_select(const char *fn, kiln_block *b, const kiln_model *m, const kiln_export_options *options,
                                export_state *s) {
  *s = (export_state){.dynamic_batch = b && options && options->dynamic_batch};
  kiln_plan *plan = b ? hybrid_inference_plan(b) : model_plan(m);
  if (!plan)
    return kiln_errorf(KILN_ERR_INVALID_ARGUMENT,
                       "%s: %s %s: call kiln_block_hybridize, then call the block once outside autograd recording and "
                       "training, and export after that",
                       fn, b->type, b->hybrid ? "has no compiled inference call yet" : "is not hybridized");
  int n_out;
  const graph_ref *outs;
  kiln_graph *g = graph_plan_source(plan, &n_out, &outs);
  kiln_status st = s->dynamic_batch ? check_dynamic_batch(fn, g, kiln_plan_num_inputs(plan), n_out, outs) : KILN_OK;
  if (st == KILN_OK) st = export_select(fn, b, g, kiln_plan_num_inputs(plan), n_out, outs, s);
  return st;
}

kiln_status kiln_block_export_ex(kiln_block *b, const char *path_prefix, const kiln_export_options *options) {
  static const char fn[] = "kiln_block_export";
  if (!b || !path_prefix || !*path_prefix)
    return kiln_errorf(KILN_ERR_INVALID_ARGUMENT, "%s: %s", fn, !b ? "block is NULL" : "path prefix is NULL or empty");
  export_state s;
  kiln_status st = model_export_select(fn, b, NULL, options, &s);
  int n_out = s.n_out;
  const graph_ref *outs = s.outs;
  text t = {0};
  char *json_path = with_suffix(path_prefix, ".kiln.json"), *st_path = with_suffix(path_prefix, ".safetensors");
  if (st == KILN_OK) {
    export_json(&s, n_out, outs, &t);
    if (t.failed || !json_path || !st_path)
      st = kiln_errorf(KILN_ERR_OUT_OF_MEMORY, "%s: %s: out of memory", fn, path_prefix);
  }
  /* The weights first: when they fail, the old graph stays beside the old
   * weights. */
  if (st == KILN_OK) {
    st = kiln_save_safetensors(st_path, s.n_bound, s.names, s.bound);
    if (st != KILN_OK) st = kiln_errorf(st, "%s: %s", fn, kiln_last_error());
  }
  if (st == KILN_OK) st = model_write_atomic(fn, json_path, t.buf, t.len);
  kiln_free(json_path);
  kiln_free(st_path);
  kiln_free(t.buf);
  model_export_state_free(&s);
  return st;
}

/* ================================================================ load */

typedef struct {
  char *name;
  kiln_dtype dtype;
  int ndim;
  int64_t shape[KILN_MAX_DIMS];
} model_value;

struct kiln_model {
  kiln_plan *plan;
  int n_inputs, n_outputs;
  model_value *inputs, *outputs;
  int n_kinds;
  kiln_op_id kinds[KILN_OP_COUNT]; /* in name order */
  int op_count[KILN_OP_COUNT];
  kiln_model_stats stats;
  int64_t flops; /* of one run at the declared shapes (kiln_model_flops) */
};

/* A declared input or parameter, its name pointing into the JSON tree. */
typedef struct {
  const char *name;
  size_t len;
  kiln_dtype dtype;
  int ndim;
  int64_t shape[KILN_MAX_DIMS];
  bool used;
} decl;

/* A name and where it was declared, for sorting and lookup. */
typedef struct {
  const char *name;
  size_t len;
  int index;
} name_ref;

static int name_ref_order(const void *x, const void *y) {
  const name_ref *a = x, *b = y;
  size_t n = a->len < b->len ? a->len : b->len;
  int c = memcmp(a->name, b->name, n);
  if (c) return c;
  if (a->len != b->len) return a->len < b->len ? -1 : 1;
  return (a->index > b->index) - (a->index < b->index);
}

/* The declaration named (name, len) among n sorted refs, or -1. */
static int name_find(const name_ref *sorted, int n, const char *name, size_t len) {
  int lo = 0, hi = n;
  while (lo < hi) {
    int mid = lo + (hi - lo) / 2;
    name_ref key = {name, len, -1};
    if (name_ref_order(&sorted[mid], &key) < 0)
      lo = mid + 1;
    else
      hi = mid;
  }
  if (lo < n && sorted[lo].len == len && memcmp(sorted[lo].name, name, len) == 0) return sorted[lo].index;
  return -1;
}

typedef struct {
  const char *fn, *path; /* for messages: "kiln_model_load: dir/m.kiln.json: ..." */
  json_doc *doc;
  int n_inputs, n_params;
  decl *inputs, *params;
  name_ref *input_names, *param_names; /* sorted */
  int n_st;
  char **st_names;
  kiln_tensor **st_tensors;
  int *st_of_param; /* per parameter: its tensor in the safetensors file */
  int n_nodes;
  name_ref *node_names; /* of the op nodes, n_named of them */
  int n_named;
  int *n_out;          /* per node */
  kiln_tensor ***outs; /* per node: its values, owned */
  int64_t value_bytes, max_value_bytes;
  kiln_model *m;
} loader;

static kiln_status failf(const loader *l, kiln_status st, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static kiln_status failf(const loader *l, kiln_status st, const char *fmt, ...) {
  char what[KILN_ERROR_MAX];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(what, sizeof what, fmt, ap);
  va_end(ap);
  return kiln_errorf(st, "%s: %s: %s", l->fn, l->path, what);
}

static const char *type_of(const json_value *v) { return json_type_name(json_type_of(v)); }

/* Fails unless obj is an object whose keys are all among allowed (at most
 * once each) and which has the required ones (the first n_required). */
static kiln_status check_keys(const loader *l, const char *where, const json_value *obj, const char *const *allowed,
                              int n_allowed, int n_required) {
  if (json_type_of(obj) != JSON_OBJECT)
    return failf(l, KILN_ERR_CORRUPT, "%s is %s, not an object", where, type_of(obj));
  size_t dup;
  char nm[KILN_PRINTABLE_MAX];
  if (json_object_duplicate(obj, &dup)) {
    size_t len;
    const char *key = json_object_key(obj, dup, &len);
    return failf(l, KILN_ERR_CORRUPT, "%s has the key '%s' twice", where, kiln_printable(nm, key, len));
  }
  for (size_t i = 0; i < json_object_size(obj); i++) {
    size_t len;
    const char *key = json_object_key(obj, i, &len);
    bool known = false;
    for (int k = 0; k < n_allowed && !known; k++)
      known = strlen(allowed[k]) == len && memcmp(allowed[k], key, len) == 0;
    if (!known) return failf(l, KILN_ERR_CORRUPT, "%s has an unknown key '%s'", where, kiln_printable(nm, key, len));
  }
  for (int k = 0; k < n_required; k++)
    if (!json_object_get(obj, allowed[k])) return failf(l, KILN_ERR_CORRUPT, "%s has no '%s'", where, allowed[k]);
  return KILN_OK;
}

/* A name: a non-empty string without NUL bytes. */
static kiln_status get_name(const loader *l, const char *where, const char *key, const json_value *v, const char **out,
                            size_t *len) {
  *out = json_string(v, len);
  if (!*out) return failf(l, KILN_ERR_CORRUPT, "%s: %s is %s, not a string", where, key, type_of(v));
  if (*len == 0) return failf(l, KILN_ERR_CORRUPT, "%s: %s is empty", where, key);
  if (memchr(*out, '\0', *len)) return failf(l, KILN_ERR_CORRUPT, "%s: %s contains a NUL character", where, key);
  return KILN_OK;
}

static kiln_status get_dtype(const loader *l, const char *where, const json_value *v, kiln_dtype *out) {
  size_t len;
  const char *s = json_string(v, &len);
  char nm[KILN_PRINTABLE_MAX];
  if (!s) return failf(l, KILN_ERR_CORRUPT, "%s: dtype is %s, not a string", where, type_of(v));
  if (!dtype_from_name(s, len, out))
    return failf(l, KILN_ERR_UNSUPPORTED,
                 "%s: dtype '%s' is not a kiln dtype (float32, float64, int32, int64, uint8, bool)", where,
                 kiln_printable(nm, s, len));
  return KILN_OK;
}

/* An array of at most max integers, each at least lo. */
static kiln_status get_ints(const loader *l, const char *where, const char *what, const json_value *v, int max,
                            int64_t lo, int *n, int64_t *out) {
  if (json_type_of(v) != JSON_ARRAY)
    return failf(l, KILN_ERR_CORRUPT, "%s: %s is %s, not an array", where, what, type_of(v));
  size_t len = json_array_size(v);
  if (len > (size_t)max)
    return failf(l, KILN_ERR_UNSUPPORTED, "%s: %s has %zu entries (kiln supports at most %d)", where, what, len, max);
  for (size_t i = 0; i < len; i++) {
    const json_value *e = json_array_at(v, i);
    switch (json_get_int64(e, &out[i])) {
    case JSON_INT_OK:
      break;
    case JSON_INT_RANGE:
      return failf(l, KILN_ERR_OVERFLOW, "%s: %s[%zu] does not fit in int64", where, what, i);
    case JSON_INT_NOT_INTEGER:
      return failf(l, KILN_ERR_CORRUPT, "%s: %s[%zu] is not written as an integer", where, what, i);
    case JSON_INT_NOT_NUMBER:
      return failf(l, KILN_ERR_CORRUPT, "%s: %s[%zu] is %s, not an integer", where, what, i, type_of(e));
    }
    if (out[i] < lo)
      return failf(l, KILN_ERR_CORRUPT, "%s: %s[%zu] is %lld, %s", where, what, i, (long long)out[i],
                   lo < 0 ? "neither a size nor -1 (unknown)" : "negative");
  }
  *n = (int)len;
  return KILN_OK;
}

/* Sorts names and fails on the first name two of them share. */
static kiln_status check_unique(const loader *l, const char *what, name_ref *names, int n) {
  qsort(names, (size_t)n, sizeof(name_ref), name_ref_order);
  for (int i = 1; i < n; i++) {
    const name_ref *a = &names[i - 1], *b = &names[i];
    if (a->len == b->len && memcmp(a->name, b->name, a->len) == 0) {
      char nm[KILN_PRINTABLE_MAX];
      return failf(l, KILN_ERR_CORRUPT, "%s[%d] has the name '%s' of %s[%d]", what, b->index,
                   kiln_printable(nm, b->name, b->len), what, a->index);
    }
  }
  return KILN_OK;
}

/* {"name": ..., "dtype": ..., "shape": [...]}: an input (whose dims may be
 * -1, unknown) or a parameter. */
static kiln_status get_decl(const loader *l, const char *where, const json_value *v, bool unknown_dims, decl *d) {
  static const char *const keys[] = {"name", "dtype", "shape"};
  kiln_status st = check_keys(l, where, v, keys, 3, 3);
  if (st == KILN_OK) st = get_name(l, where, "name", json_object_get(v, "name"), &d->name, &d->len);
  char full[192], nm[KILN_PRINTABLE_MAX];
  snprintf(full, sizeof full, "%s ('%s')", where, st == KILN_OK ? kiln_printable(nm, d->name, d->len) : "");
  if (st == KILN_OK) st = get_dtype(l, full, json_object_get(v, "dtype"), &d->dtype);
  if (st == KILN_OK)
    st = get_ints(l, full, "shape", json_object_get(v, "shape"), KILN_MAX_DIMS, unknown_dims ? -1 : 0, &d->ndim,
                  d->shape);
  /* The graph is built with 1 for an unknown dim (kiln_graph_input). */
  int64_t built[KILN_MAX_DIMS], numel;
  for (int i = 0; st == KILN_OK && i < d->ndim; i++) built[i] = d->shape[i] < 0 ? 1 : d->shape[i];
  if (st == KILN_OK && tensor_checked_numel("shape", d->dtype, d->ndim, built, &numel) != KILN_OK) {
    char sh[KILN_SHAPE_STR_MAX];
    st = failf(l, KILN_ERR_OVERFLOW, "%s: the byte size of %s %s overflows int64", full, kiln_dtype_name(d->dtype),
               kiln_shape_str(sh, sizeof sh, d->ndim, d->shape));
  }
  return st;
}

/* The array under key: its declarations, sorted names, no duplicates. */
static kiln_status get_decls(loader *l, const json_value *root, const char *key, int *n_out, decl **out,
                             name_ref **names) {
  const json_value *arr = json_object_get(root, key);
  if (json_type_of(arr) != JSON_ARRAY) return failf(l, KILN_ERR_CORRUPT, "%s is %s, not an array", key, type_of(arr));
  size_t n = json_array_size(arr);
  *out = kiln_calloc(n + 1, sizeof(decl));
  *names = kiln_calloc(n + 1, sizeof(name_ref));
  if (!*out || !*names) return failf(l, KILN_ERR_OUT_OF_MEMORY, "out of memory for %zu %s", n, key);
  for (size_t i = 0; i < n; i++) {
    char where[64];
    snprintf(where, sizeof where, "%s[%zu]", key, i);
    kiln_status st = get_decl(l, where, json_array_at(arr, i), !strcmp(key, "inputs"), &(*out)[i]);
    if (st != KILN_OK) return st;
    (*names)[i] = (name_ref){(*out)[i].name, (*out)[i].len, (int)i};
  }
  *n_out = (int)n;
  return check_unique(l, key, *names, (int)n);
}

static kiln_status check_header(const loader *l, const json_value *root) {
  static const char *const keys[] = {"format", "version", "inputs", "parameters", "nodes", "outputs"};
  kiln_status st = check_keys(l, "the document", root, keys, 6, 6);
  if (st != KILN_OK) return st;
  size_t len;
  const char *format = json_string(json_object_get(root, "format"), &len);
  char nm[KILN_PRINTABLE_MAX];
  if (!format || len != strlen(FORMAT_NAME) || memcmp(format, FORMAT_NAME, len) != 0)
    return failf(l, KILN_ERR_CORRUPT, "format is %s%s%s, not \"" FORMAT_NAME "\": not a kiln model", format ? "'" : "",
                 format ? kiln_printable(nm, format, len) : type_of(json_object_get(root, "format")), format ? "'" : "");
  int64_t version;
  if (json_get_int64(json_object_get(root, "version"), &version) != JSON_INT_OK)
    return failf(l, KILN_ERR_CORRUPT, "version is not an integer");
  if (version != FORMAT_VERSION)
    return failf(l, version > FORMAT_VERSION ? KILN_ERR_UNSUPPORTED : KILN_ERR_CORRUPT,
                 "version %lld is not one this kiln reads (it reads version %d)", (long long)version, FORMAT_VERSION);
  return KILN_OK;
}

/* Every declared parameter is in the safetensors file with its dtype and
 * shape, and the file holds nothing else. */
static kiln_status match_parameters(loader *l, const char *st_path) {
  l->st_of_param = kiln_calloc((size_t)l->n_params + 1, sizeof(int));
  if (!l->st_of_param) return failf(l, KILN_ERR_OUT_OF_MEMORY, "out of memory");
  for (int p = 0; p < l->n_params; p++) l->st_of_param[p] = -1;
  char nm[KILN_PRINTABLE_MAX];
  for (int i = 0; i < l->n_st; i++) {
    const char *name = l->st_names[i];
    int p = name_find(l->param_names, l->n_params, name, strlen(name));
    if (p < 0)
      return failf(l, KILN_ERR_CORRUPT, "%s holds a tensor '%s' that the model does not declare", st_path,
                   kiln_printable(nm, name, strlen(name)));
    l->st_of_param[p] = i;
    const decl *d = &l->params[p];
    const kiln_tensor *t = l->st_tensors[i];
    if (t->dtype != d->dtype || t->ndim != d->ndim || memcmp(t->shape, d->shape, sizeof(int64_t) * (size_t)d->ndim)) {
      char want[KILN_SHAPE_STR_MAX], got[KILN_SHAPE_STR_MAX];
      return failf(l, t->dtype != d->dtype ? KILN_ERR_DTYPE : KILN_ERR_SHAPE,
                   "parameter '%s' is declared %s %s, but %s holds %s %s", kiln_printable(nm, d->name, d->len),
                   kiln_dtype_name(d->dtype), kiln_shape_str(want, sizeof want, d->ndim, d->shape), st_path,
                   kiln_dtype_name(t->dtype), kiln_shape_str(got, sizeof got, t->ndim, t->shape));
    }
  }
  for (int p = 0; p < l->n_params; p++)
    if (l->st_of_param[p] < 0)
      return failf(l, KILN_ERR_CORRUPT, "parameter '%s' is not in %s",
                   kiln_printable(nm, l->params[p].name, l->params[p].len), st_path);
  return KILN_OK;
}

/* [node, output]: a value of an earlier node. */
static kiln_status get_ref(const loader *l, const char *where, const char *what, const json_value *v, int before,
                           graph_ref *out) {
  int64_t x[2];
  if (json_type_of(v) != JSON_ARRAY || json_array_size(v) != 2 ||
      json_get_int64(json_array_at(v, 0), &x[0]) != JSON_INT_OK ||
      json_get_int64(json_array_at(v, 1), &x[1]) != JSON_INT_OK)
    return failf(l, KILN_ERR_CORRUPT, "%s: %s is not a [node, output] pair of integers", where, what);
  if (x[0] < 0 || x[0] >= before)
    return failf(l, KILN_ERR_CORRUPT, "%s: %s refers to node %lld, %s", where, what, (long long)x[0],
                 x[0] < 0               ? "a negative index"
                 : before == l->n_nodes ? "past the last node"
                                        : "not an earlier node");
  if (x[1] < 0 || x[1] >= l->n_out[x[0]])
    return failf(l, KILN_ERR_CORRUPT, "%s: %s refers to output %lld of node %lld, which has %d output%s", where, what,
                 (long long)x[1], (long long)x[0], l->n_out[x[0]], l->n_out[x[0]] == 1 ? "" : "s");
  *out = (graph_ref){(int)x[0], (int)x[1]};
  return KILN_OK;
}

static kiln_status get_attrs(const loader *l, const char *where, const kiln_op_def *def, const json_value *v,
                             kiln_attr_value *attrs) {
  char nm[KILN_PRINTABLE_MAX];
  if (json_type_of(v) != JSON_OBJECT)
    return failf(l, KILN_ERR_CORRUPT, "%s: attrs is %s, not an object", where, type_of(v));
  size_t dup;
  if (json_object_duplicate(v, &dup)) {
    size_t len;
    const char *key = json_object_key(v, dup, &len);
    return failf(l, KILN_ERR_CORRUPT, "%s: attribute '%s' is given twice", where, kiln_printable(nm, key, len));
  }
  for (size_t i = 0; i < json_object_size(v); i++) {
    size_t len;
    const char *key = json_object_key(v, i, &len);
    const json_value *a = json_object_value(v, i);
    int k = 0;
    while (k < def->n_attrs && !(strlen(def->attrs[k].name) == len && memcmp(def->attrs[k].name, key, len) == 0)) k++;
    if (k == def->n_attrs) {
      char known[256] = "";
      size_t used = 0;
      for (int j = 0; j < def->n_attrs && used < sizeof known; j++)
        used += (size_t)snprintf(known + used, sizeof known - used, "%s%s", j ? ", " : "", def->attrs[j].name);
      return failf(l, KILN_ERR_CORRUPT, "%s: %s has no attribute '%s' (%s%s)", where, def->name,
                   kiln_printable(nm, key, len), def->n_attrs ? "it has " : "it has none", known);
    }
    const char *name = def->attrs[k].name;
    switch (def->attrs[k].type) {
    case KILN_ATTR_INT: {
      json_int_result r = json_get_int64(a, &attrs[k].i);
      if (r == JSON_INT_RANGE)
        return failf(l, KILN_ERR_OVERFLOW, "%s: attribute '%s' does not fit in int64", where, name);
      if (r != JSON_INT_OK)
        return failf(l, KILN_ERR_CORRUPT, "%s: attribute '%s' must be an integer, not %s", where, name,
                     r == JSON_INT_NOT_INTEGER ? "a number with a fraction or exponent" : type_of(a));
      break;
    }
    case KILN_ATTR_FLOAT: {
      size_t slen;
      const char *s = json_string(a, &slen);
      if (s && slen == 3 && !memcmp(s, "nan", 3))
        attrs[k].f = NAN;
      else if (s && slen == 3 && !memcmp(s, "inf", 3))
        attrs[k].f = INFINITY;
      else if (s && slen == 4 && !memcmp(s, "-inf", 4))
        attrs[k].f = -INFINITY;
      else if (!json_get_double(a, &attrs[k].f))
        return failf(l, KILN_ERR_CORRUPT, "%s: attribute '%s' must be a number (or \"inf\", \"-inf\", \"nan\"), not %s",
                     where, name, s ? "another string" : type_of(a));
      break;
    }
    case KILN_ATTR_INTS: {
      char what[64];
      snprintf(what, sizeof what, "attribute '%s'", name);
      kiln_status st = get_ints(l, where, what, a, KILN_MAX_ATTR_INTS, INT64_MIN, &attrs[k].n, attrs[k].ints);
      if (st != KILN_OK) return st;
      break;
    }
    }
  }
  return KILN_OK;
}

static kiln_status count_value_bytes(loader *l, const char *where, const kiln_tensor *t) {
  int64_t bytes = kiln_tensor_numel(t) * (int64_t)kiln_dtype_size(t->dtype); /* checked by the op's inference */
  if (!kiln_add_i64(l->value_bytes, bytes, &l->value_bytes) ||
      (l->max_value_bytes > 0 && l->value_bytes > l->max_value_bytes))
    return failf(l, KILN_ERR_UNSUPPORTED, "%s: the model's values take more than the limit of %lld bytes", where,
                 (long long)l->max_value_bytes);
  return KILN_OK;
}

/* FLOPs saturate: an estimate that overflowed is still "too many". */
static int64_t sat_mul(int64_t a, int64_t b) {
  int64_t r;
  return kiln_mul_i64(a, b, &r) ? r : INT64_MAX;
}

static int64_t sat_add(int64_t a, int64_t b) {
  int64_t r;
  return kiln_add_i64(a, b, &r) ? r : INT64_MAX;
}

/* Multiply-adds per element of a convolution's output: C_in/groups*KH*KW,
 * from a weight [C_out, C_in/groups, KH, KW]. */
static int64_t conv_macs(const kiln_tensor *w) {
  return w->shape[0] > 0 ? kiln_tensor_numel(w) / w->shape[0] : 0;
}

static int64_t pool_window(const kiln_attr_value *kernel) {
  return kernel->n == 1 ? sat_mul(kernel->ints[0], kernel->ints[0]) : sat_mul(kernel->ints[0], kernel->ints[1]);
}

/* The rules of kiln_model_flops (docs/cli.md), for a node its op's
 * inference accepted, so shapes and attributes are valid. */
int64_t model_node_flops(kiln_op_id id, int n_in, kiln_tensor *const *in, const kiln_attr_value *attrs,
                         kiln_tensor *const *out) {
  int64_t x = kiln_tensor_numel(in[0]), y = kiln_tensor_numel(out[0]);
  switch (id) {
  case KILN_OP_MATMUL:
    return sat_mul(y, sat_mul(2, in[0]->shape[in[0]->ndim - 1]));
  case KILN_OP_LINEAR:
    return sat_mul(y, sat_add(sat_mul(2, in[0]->shape[in[0]->ndim - 1]),
                              (n_in == 3) + (attrs[0].i != KILN_ACT_NONE)));
  case KILN_OP_CONV2D:
    return sat_mul(y, sat_add(sat_mul(2, conv_macs(in[1])), n_in == 3));
  case KILN_OP_CONV2D_BACKWARD_DATA:
    return sat_mul(x, sat_mul(2, conv_macs(in[1])));
  case KILN_OP_CONV2D_BACKWARD_WEIGHT:
    return sat_mul(x, sat_mul(2, conv_macs(out[0])));
  case KILN_OP_MAX_POOL2D:
  case KILN_OP_AVG_POOL2D:
    return sat_mul(y, pool_window(&attrs[0]));
  case KILN_OP_MAX_POOL2D_BACKWARD:
  case KILN_OP_AVG_POOL2D_BACKWARD:
    return sat_mul(x, pool_window(&attrs[0]));
  case KILN_OP_SUM:
  case KILN_OP_MEAN:
  case KILN_OP_MAX:
  case KILN_OP_MIN:
  case KILN_OP_PROD:
  case KILN_OP_VAR:
  case KILN_OP_LOGSUMEXP:
  case KILN_OP_ARGMAX:
  case KILN_OP_ARGMIN:
    return x;
  case KILN_OP_SOFTMAX:
  case KILN_OP_LOG_SOFTMAX:
  case KILN_OP_SOFTMAX_CROSS_ENTROPY:
    return sat_mul(x, 5);
  case KILN_OP_BATCH_NORM:
    return sat_mul(y, 2);
  case KILN_OP_BATCH_NORM_TRAIN:
    return sat_mul(x, 5);
  case KILN_OP_DROPOUT:
    return y;
  case KILN_OP_COPY:
  case KILN_OP_CAST:
    return 0;
  default:
    return kiln_op_get(id)->flags & KILN_OP_ELEMENTWISE ? y : 0;
  }
}

/* One element of "nodes": its values in l->outs[i]. */
static kiln_status build_node(loader *l, size_t i, const json_value *v, kiln_tensor *const *graph_inputs) {
  char where[192], nm[KILN_PRINTABLE_MAX];
  snprintf(where, sizeof where, "nodes[%zu]", i);
  if (json_type_of(v) != JSON_OBJECT) return failf(l, KILN_ERR_CORRUPT, "%s is %s, not an object", where, type_of(v));
  const json_value *input = json_object_get(v, "input"), *par = json_object_get(v, "parameter");
  if (input || par) {
    static const char *const in_keys[] = {"input"}, *const param_keys[] = {"parameter"};
    kiln_status st = check_keys(l, where, v, input ? in_keys : param_keys, 1, 1);
    const char *name = NULL;
    size_t len = 0;
    if (st == KILN_OK) st = get_name(l, where, input ? "input" : "parameter", input ? input : par, &name, &len);
    if (st != KILN_OK) return st;
    int d = name_find(input ? l->input_names : l->param_names, input ? l->n_inputs : l->n_params, name, len);
    if (d < 0)
      return failf(l, KILN_ERR_CORRUPT, "%s: %s '%s' is not declared in \"%s\"", where, input ? "input" : "parameter",
                   kiln_printable(nm, name, len), input ? "inputs" : "parameters");
    decl *dc = input ? &l->inputs[d] : &l->params[d];
    if (dc->used)
      return failf(l, KILN_ERR_CORRUPT, "%s: %s '%s' has a node already", where, input ? "input" : "parameter",
                   kiln_printable(nm, name, len));
    dc->used = true;
    l->outs[i] = kiln_calloc(1, sizeof(kiln_tensor *));
    if (!l->outs[i]) return failf(l, KILN_ERR_OUT_OF_MEMORY, "%s: out of memory", where);
    l->outs[i][0] = kiln_tensor_retain(input ? graph_inputs[d] : l->st_tensors[l->st_of_param[d]]);
    l->n_out[i] = 1;
    return KILN_OK;
  }
  static const char *const keys[] = {"name", "op", "inputs", "attrs"};
  kiln_status st = check_keys(l, where, v, keys, 4, 3);
  const char *name = NULL, *op = NULL;
  size_t len = 0, op_len = 0;
  if (st == KILN_OK) st = get_name(l, where, "name", json_object_get(v, "name"), &name, &len);
  if (st != KILN_OK) return st;
  snprintf(where, sizeof where, "nodes[%zu] ('%s')", i, kiln_printable(nm, name, len));
  l->node_names[l->n_named++] = (name_ref){name, len, (int)i};
  if ((st = get_name(l, where, "op", json_object_get(v, "op"), &op, &op_len)) != KILN_OK) return st;
  const kiln_op_def *def = NULL;
  kiln_op_id id = 0;
  for (int k = 0; k < KILN_OP_COUNT && !def; k++) {
    const kiln_op_def *d = kiln_op_get((kiln_op_id)k);
    if (strlen(d->name) == op_len && memcmp(d->name, op, op_len) == 0) def = d, id = (kiln_op_id)k;
  }
  if (!def) return failf(l, KILN_ERR_UNSUPPORTED, "%s: op '%s' is not one kiln has", where, kiln_printable(nm, op, op_len));
  const json_value *ins = json_object_get(v, "inputs");
  if (json_type_of(ins) != JSON_ARRAY)
    return failf(l, KILN_ERR_CORRUPT, "%s: inputs is %s, not an array", where, type_of(ins));
  size_t n_in = json_array_size(ins);
  if (n_in < (size_t)def->min_inputs || (def->max_inputs >= 0 && n_in > (size_t)def->max_inputs)) {
    char arity[48];
    if (def->max_inputs < 0)
      snprintf(arity, sizeof arity, "at least %d", def->min_inputs);
    else if (def->max_inputs == def->min_inputs)
      snprintf(arity, sizeof arity, "%d", def->min_inputs);
    else
      snprintf(arity, sizeof arity, "%d to %d", def->min_inputs, def->max_inputs);
    return failf(l, KILN_ERR_CORRUPT, "%s: %s takes %s input%s, the node gives %zu", where, def->name, arity,
                 def->max_inputs == 1 ? "" : "s", n_in);
  }
  if (n_in > MAX_NODE_VALUES)
    return failf(l, KILN_ERR_UNSUPPORTED, "%s: %zu inputs (kiln runs ops of at most %d)", where, n_in, MAX_NODE_VALUES);
  kiln_tensor *in[MAX_NODE_VALUES];
  for (size_t k = 0; k < n_in; k++) {
    char what[32];
    snprintf(what, sizeof what, "input %zu", k);
    graph_ref r;
    if ((st = get_ref(l, where, what, json_array_at(ins, k), (int)i, &r)) != KILN_OK) return st;
    in[k] = l->outs[r.node][r.index];
  }
  kiln_attr_value attrs[KILN_MAX_ATTRS];
  kiln_attrs_default(id, attrs);
  const json_value *a = json_object_get(v, "attrs");
  if (a && (st = get_attrs(l, where, def, a, attrs)) != KILN_OK) return st;
  int n_out = def->n_outputs;
  if (def->count_outputs) {
    kk_view views[MAX_NODE_VALUES];
    for (size_t k = 0; k < n_in; k++) views[k] = tensor_view_of(in[k]);
    kiln_op_call c = {.def = def, .n_in = (int)n_in, .in = views};
    memcpy(c.attrs, attrs, sizeof c.attrs);
    n_out = def->count_outputs(&c);
  }
  if (n_out < 1 || n_out > MAX_NODE_VALUES)
    return failf(l, KILN_ERR_CORRUPT, "%s: %s would give %d outputs (1 to %d supported)", where, def->name, n_out,
                 MAX_NODE_VALUES);
  l->outs[i] = kiln_calloc((size_t)n_out, sizeof(kiln_tensor *));
  if (!l->outs[i]) return failf(l, KILN_ERR_OUT_OF_MEMORY, "%s: out of memory", where);
  l->n_out[i] = n_out;
  st = kiln_dispatch_owned(id, (int)n_in, in, attrs, n_out, l->outs[i]);
  if (st != KILN_OK) return failf(l, st, "%s: %s", where, kiln_last_error());
  for (int k = 0; k < n_out && st == KILN_OK; k++) {
    /* A value the graph could not make (out of memory) fails on its own. */
    const kiln_tensor *t = l->outs[i][k];
    st = tensor_failed(t) ? failf(l, t->status, "%s: %s", where, t->error) : count_value_bytes(l, where, t);
  }
  if (st == KILN_OK) {
    l->m->op_count[id]++;
    l->m->flops = sat_add(l->m->flops, model_node_flops(id, (int)n_in, in, attrs, l->outs[i]));
  }
  return st;
}

/* An output dim that depends on an unknown input dim is unknown too: the
 * graph built again at other sizes of the unknown input dims
 * (graph_specialize, what a run at another size does) tells which. Two
 * sizes, 2 and 61, since a strided op maps 1 and 2 to the same size. When
 * it cannot be built so, the unknown dims only take 1, and the outputs
 * keep their shapes. */
static kiln_status mark_unknown_outputs(loader *l, kiln_graph *g, int n_out, kiln_tensor *const *out) {
  kiln_model *m = l->m;
  bool any = false;
  for (int i = 0; i < m->n_inputs; i++)
    for (int d = 0; d < m->inputs[i].ndim; d++) any = any || m->inputs[i].shape[d] < 0;
  kiln_status st = KILN_OK;
  static const int64_t probe_sizes[] = {2, 61};
  for (size_t p = 0; any && p < sizeof probe_sizes / sizeof probe_sizes[0] && st == KILN_OK; p++) {
    kiln_graph *probe = kiln_graph_new();
    kiln_tensor **shaped = kiln_calloc((size_t)m->n_inputs + 1, sizeof(kiln_tensor *));
    graph_ref *refs = kiln_calloc((size_t)n_out, sizeof(graph_ref));
    int *map = kiln_calloc((size_t)g->n + 1, sizeof(int));
    st = probe && shaped && refs && map ? KILN_OK : failf(l, KILN_ERR_OUT_OF_MEMORY, "out of memory");
    for (int i = 0; i < m->n_inputs && st == KILN_OK; i++) {
      int64_t shape[KILN_MAX_DIMS];
      for (int d = 0; d < m->inputs[i].ndim; d++)
        shape[d] = m->inputs[i].shape[d] < 0 ? probe_sizes[p] : m->inputs[i].shape[d];
      shaped[i] = kiln_graph_input(probe, m->inputs[i].name, m->inputs[i].dtype, m->inputs[i].ndim, shape);
      if (kiln_tensor_failed(shaped[i])) st = failf(l, kiln_tensor_status(shaped[i]), "%s", kiln_tensor_error(shaped[i]));
    }
    for (int k = 0; k < n_out && st == KILN_OK; k++) refs[k].node = graph_ref_of(out[k], NULL, &refs[k].index);
    kiln_graph *h = st == KILN_OK ? graph_specialize(g, g->n, shaped, n_out, refs, map) : NULL;
    if (st == KILN_OK && !h && kiln_last_status() == KILN_ERR_OUT_OF_MEMORY)
      st = failf(l, KILN_ERR_OUT_OF_MEMORY, "%s", kiln_last_error());
    for (int k = 0; h && k < n_out; k++) {
      model_value *v = &m->outputs[k];
      const kiln_out_desc *other = &h->nodes[map[refs[k].node]].out[refs[k].index];
      for (int d = 0; d < v->ndim && other->ndim == v->ndim; d++)
        if (other->shape[d] != v->shape[d]) v->shape[d] = -1;
    }
    kiln_graph_release(h);
    kiln_graph_release(probe);
    kiln_free(shaped), kiln_free(refs), kiln_free(map);
  }
  return st;
}

static int kind_order(const void *x, const void *y) {
  return strcmp(kiln_op_get(*(const kiln_op_id *)x)->name, kiln_op_get(*(const kiln_op_id *)y)->name);
}

static char *dup_n(const char *s, size_t len) {
  char *d = kiln_alloc(len + 1);
  if (d) {
    memcpy(d, s, len);
    d[len] = '\0';
  }
  return d;
}

/* Builds and compiles the graph of the document into l->m. */
static kiln_status build_model(loader *l, const json_value *root) {
  kiln_model *m = l->m;
  const json_value *nodes = json_object_get(root, "nodes"), *outputs = json_object_get(root, "outputs");
  if (json_type_of(nodes) != JSON_ARRAY) return failf(l, KILN_ERR_CORRUPT, "nodes is %s, not an array", type_of(nodes));
  if (json_type_of(outputs) != JSON_ARRAY)
    return failf(l, KILN_ERR_CORRUPT, "outputs is %s, not an array", type_of(outputs));
  size_t n_nodes = json_array_size(nodes), n_outputs = json_array_size(outputs);
  if (n_outputs == 0) return failf(l, KILN_ERR_CORRUPT, "outputs is empty: a model computes something");
  if (n_nodes > INT32_MAX || n_outputs > MAX_NODE_VALUES)
    return failf(l, KILN_ERR_UNSUPPORTED, "%zu nodes and %zu outputs are more than kiln handles", n_nodes, n_outputs);
  l->n_out = kiln_calloc(n_nodes + 1, sizeof(int));
  l->outs = kiln_calloc(n_nodes + 1, sizeof(kiln_tensor **));
  l->node_names = kiln_calloc(n_nodes + 1, sizeof(name_ref));
  m->inputs = kiln_calloc((size_t)l->n_inputs + 1, sizeof(model_value));
  m->outputs = kiln_calloc(n_outputs, sizeof(model_value));
  kiln_tensor **graph_inputs = kiln_calloc((size_t)l->n_inputs + 1, sizeof(kiln_tensor *));
  kiln_graph *g = kiln_graph_new();
  if (!l->n_out || !l->outs || !l->node_names || !m->inputs || !m->outputs || !graph_inputs || !g) {
    kiln_free(graph_inputs);
    kiln_graph_release(g);
    return failf(l, KILN_ERR_OUT_OF_MEMORY, "out of memory for %zu nodes", n_nodes);
  }
  l->n_nodes = (int)n_nodes;
  kiln_status st = kiln_scope_begin();
  if (st != KILN_OK) {
    kiln_free(graph_inputs);
    kiln_graph_release(g);
    return failf(l, st, "%s", kiln_last_error());
  }
  /* The plan takes its inputs in the order they were made. */
  for (int i = 0; i < l->n_inputs && st == KILN_OK; i++) {
    decl *d = &l->inputs[i];
    m->inputs[i].name = dup_n(d->name, d->len);
    if (!m->inputs[i].name) {
      st = failf(l, KILN_ERR_OUT_OF_MEMORY, "out of memory");
      break;
    }
    m->n_inputs = i + 1;
    m->inputs[i].dtype = d->dtype;
    m->inputs[i].ndim = d->ndim;
    memcpy(m->inputs[i].shape, d->shape, sizeof d->shape);
    kiln_tensor *t = kiln_graph_input(g, m->inputs[i].name, d->dtype, d->ndim, d->shape);
    if (kiln_tensor_status(t) != KILN_OK) {
      char nm[KILN_PRINTABLE_MAX];
      st = failf(l, kiln_tensor_status(t), "inputs[%d] ('%s'): %s", i, kiln_printable(nm, d->name, d->len),
                 kiln_tensor_error(t));
      break;
    }
    graph_inputs[i] = kiln_tensor_retain(t);
    st = count_value_bytes(l, "inputs", t);
  }
  if (st == KILN_OK && graph_trace_begin(g) != KILN_OK)
    st = failf(l, KILN_ERR_INVALID_ARGUMENT, "cannot load a model while a trace is active on this thread");
  if (st == KILN_OK) {
    for (size_t i = 0; i < n_nodes && st == KILN_OK; i++) st = build_node(l, i, json_array_at(nodes, i), graph_inputs);
    graph_trace_end();
  }
  if (st == KILN_OK) st = check_unique(l, "nodes", l->node_names, l->n_named);
  for (int p = 0; p < l->n_params && st == KILN_OK; p++)
    if (!l->params[p].used) {
      char nm[KILN_PRINTABLE_MAX];
      st = failf(l, KILN_ERR_CORRUPT, "parameter '%s' is declared but no node uses it",
                 kiln_printable(nm, l->params[p].name, l->params[p].len));
    }
  kiln_tensor *out[MAX_NODE_VALUES];
  name_ref *out_names = st == KILN_OK ? kiln_calloc(n_outputs, sizeof(name_ref)) : NULL;
  if (st == KILN_OK && !out_names) st = failf(l, KILN_ERR_OUT_OF_MEMORY, "out of memory");
  for (size_t k = 0; k < n_outputs && st == KILN_OK; k++) {
    char where[64];
    snprintf(where, sizeof where, "outputs[%zu]", k);
    const json_value *o = json_array_at(outputs, k);
    static const char *const keys[] = {"name", "value"};
    const char *name = NULL;
    size_t len = 0;
    graph_ref r;
    st = check_keys(l, where, o, keys, 2, 2);
    if (st == KILN_OK) st = get_name(l, where, "name", json_object_get(o, "name"), &name, &len);
    if (st == KILN_OK) st = get_ref(l, where, "value", json_object_get(o, "value"), l->n_nodes, &r);
    if (st != KILN_OK) break;
    out_names[k] = (name_ref){name, len, (int)k};
    out[k] = l->outs[r.node][r.index];
    if (graph_ref_of(out[k], NULL, NULL) < 0)
      st = failf(l, KILN_ERR_CORRUPT, "%s: value [%d, %d] is a parameter: an output must be an input or an op's result",
                 where, r.node, r.index);
    model_value *mv = &m->outputs[k];
    mv->name = st == KILN_OK ? dup_n(name, len) : NULL;
    if (st == KILN_OK && !mv->name) st = failf(l, KILN_ERR_OUT_OF_MEMORY, "out of memory");
    if (st != KILN_OK) break;
    m->n_outputs = (int)k + 1;
    mv->dtype = kiln_tensor_dtype(out[k]);
    mv->ndim = kiln_tensor_ndim(out[k]);
    memcpy(mv->shape, kiln_tensor_shape(out[k]), sizeof(int64_t) * (size_t)mv->ndim);
  }
  if (st == KILN_OK) st = check_unique(l, "outputs", out_names, (int)n_outputs);
  kiln_free(out_names);
  if (st == KILN_OK) st = mark_unknown_outputs(l, g, (int)n_outputs, out);
  if (st == KILN_OK) {
    kiln_compile_options o = kiln_compile_options_default();
    m->plan = kiln_graph_compile(g, (int)n_outputs, out, &o);
    if (!m->plan) st = failf(l, kiln_last_status(), "compiling: %s", kiln_last_error());
  }
  for (int i = 0; i < l->n_inputs; i++) kiln_tensor_release(graph_inputs[i]);
  kiln_free(graph_inputs);
  kiln_scope_end();
  kiln_graph_release(g);
  return st;
}

static void loader_free(loader *l) {
  for (int i = 0; l->outs && i < l->n_nodes; i++) {
    for (int k = 0; l->outs[i] && k < l->n_out[i]; k++) kiln_tensor_release(l->outs[i][k]);
    kiln_free(l->outs[i]);
  }
  kiln_free(l->outs);
  kiln_free(l->n_out);
  kiln_free(l->node_names);
  kiln_free(l->inputs);
  kiln_free(l->params);
  kiln_free(l->input_names);
  kiln_free(l->param_names);
  kiln_free(l->st_of_param);
  kiln_named_tensors_free(l->n_st, l->st_names, l->st_tensors);
  json_free(l->doc);
}

/* The shared part of both loaders, once the safetensors file is read. */
static kiln_status load(loader *l, const char *json, size_t json_len, const char *st_path, kiln_model **out) {
  kiln_status st = json_parse(json, json_len, NULL, &l->doc);
  if (st != KILN_OK) return failf(l, st == KILN_ERR_OUT_OF_MEMORY ? st : KILN_ERR_CORRUPT, "%s", kiln_last_error());
  const json_value *root = json_root(l->doc);
  if ((st = check_header(l, root)) != KILN_OK) return st;
  if ((st = get_decls(l, root, "inputs", &l->n_inputs, &l->inputs, &l->input_names)) != KILN_OK) return st;
  if ((st = get_decls(l, root, "parameters", &l->n_params, &l->params, &l->param_names)) != KILN_OK) return st;
  if ((st = match_parameters(l, st_path)) != KILN_OK) return st;
  l->m = kiln_calloc(1, sizeof(kiln_model));
  if (!l->m) return failf(l, KILN_ERR_OUT_OF_MEMORY, "out of memory");
  st = build_model(l, root);
  kiln_model *m = l->m;
  if (st != KILN_OK) {
    kiln_model_free(m);
    return st;
  }
  for (int id = 0; id < KILN_OP_COUNT; id++)
    if (m->op_count[id]) {
      m->kinds[m->n_kinds++] = (kiln_op_id)id;
      m->stats.nodes += m->op_count[id];
    }
  qsort(m->kinds, (size_t)m->n_kinds, sizeof(kiln_op_id), kind_order);
  m->stats.parameters = l->n_st;
  for (int i = 0; i < l->n_st; i++) {
    m->stats.parameter_elements += kiln_tensor_numel(l->st_tensors[i]);
    m->stats.parameter_bytes += kiln_tensor_numel(l->st_tensors[i]) * (int64_t)kiln_dtype_size(l->st_tensors[i]->dtype);
  }
  kiln_plan_stats ps = kiln_plan_get_stats(m->plan);
  m->stats.steps = ps.steps;
  m->stats.arena_bytes = ps.arena_bytes;
  *out = m;
  return KILN_OK;
}

static kiln_status read_file(const char *fn, const char *path, char **data, size_t *len) {
  FILE *f = fopen(path, "rb");
  struct stat sb;
  kiln_status st = KILN_OK;
  *data = NULL;
  if (!f) return kiln_errorf(KILN_ERR_IO, "%s: %s: cannot open: %s", fn, path, strerror(errno));
  if (fstat(fileno(f), &sb) != 0) {
    st = kiln_errorf(KILN_ERR_IO, "%s: %s: cannot stat: %s", fn, path, strerror(errno));
  } else if (!S_ISREG(sb.st_mode)) {
    st = kiln_errorf(KILN_ERR_IO, "%s: %s: not a regular file", fn, path);
  } else {
    *len = (size_t)sb.st_size;
    *data = kiln_alloc(*len + 1);
    if (!*data)
      st = kiln_errorf(KILN_ERR_OUT_OF_MEMORY, "%s: %s: out of memory for %zu bytes", fn, path, *len);
    else if (fread(*data, 1, *len, f) != *len)
      st = kiln_errorf(KILN_ERR_IO, "%s: %s: read error%s", fn, path, ferror(f) ? "" : " (the file shrank)");
  }
  fclose(f);
  if (st != KILN_OK) {
    kiln_free(*data);
    *data = NULL;
  }
  return st;
}

kiln_status model_load_files(const char *path_prefix, kiln_model **out) {
  static const char fn[] = "kiln_model_load";
  if (!out) return kiln_errorf(KILN_ERR_INVALID_ARGUMENT, "%s: out is NULL", fn);
  *out = NULL;
  if (!path_prefix || !*path_prefix)
    return kiln_errorf(KILN_ERR_INVALID_ARGUMENT, "%s: path prefix is NULL or empty", fn);
  char *json_path = with_suffix(path_prefix, ".kiln.json"), *st_path = with_suffix(path_prefix, ".safetensors");
  loader l = {.fn = fn, .path = json_path};
  char *json = NULL;
  size_t json_len = 0;
  kiln_status st =
      json_path && st_path ? KILN_OK : kiln_errorf(KILN_ERR_OUT_OF_MEMORY, "%s: %s: out of memory", fn, path_prefix);
  if (st == KILN_OK) st = read_file(fn, json_path, &json, &json_len);
  if (st == KILN_OK && (st = kiln_load_safetensors(st_path, &l.n_st, &l.st_names, &l.st_tensors)) != KILN_OK)
    kiln_errorf(st, "%s: %s", fn, kiln_last_error());
  if (st == KILN_OK) st = load(&l, json, json_len, st_path, out);
  loader_free(&l);
  kiln_free(json);
  kiln_free(json_path);
  kiln_free(st_path);
  return st;
}

kiln_model *kiln_model_load(const char *path_prefix) {
  kiln_model *m;
  size_t n = path_prefix ? strlen(path_prefix) : 0;
  if (n > 5 && strcmp(path_prefix + n - 5, ".onnx") == 0) /* a file, not a prefix */
    return onnx_load_file(path_prefix, NULL, &m) == KILN_OK ? m : NULL;
  return model_load_files(path_prefix, &m) == KILN_OK ? m : NULL;
}

kiln_status model_load_memory(const char *json, size_t json_len, const void *weights, size_t weights_len,
                              const char *name, int64_t max_value_bytes, kiln_model **out) {
  static const char fn[] = "kiln_model_load";
  if (!out) return kiln_errorf(KILN_ERR_INVALID_ARGUMENT, "%s: out is NULL", fn);
  *out = NULL;
  if ((!json && json_len) || (!weights && weights_len))
    return kiln_errorf(KILN_ERR_INVALID_ARGUMENT, "%s: json or weights is NULL", fn);
  loader l = {.fn = fn, .path = name ? name : "(memory)", .max_value_bytes = max_value_bytes};
  kiln_status st = safetensors_load_memory(weights, weights_len, "weights", &l.n_st, &l.st_names, &l.st_tensors);
  if (st != KILN_OK)
    kiln_errorf(st, "%s: %s", fn, kiln_last_error());
  else
    st = load(&l, json, json_len, "the weights", out);
  loader_free(&l);
  return st;
}

/* ================================================================ imported graphs */

/* The end of build_model and load for a graph another importer built. */
kiln_status model_from_graph(const model_parts *p, kiln_model **out) {
  *out = NULL;
  loader l = {.fn = p->fn, .path = p->path};
  kiln_model *m = l.m = kiln_calloc(1, sizeof(kiln_model));
  if (m) {
    m->inputs = kiln_calloc((size_t)p->n_inputs + 1, sizeof(model_value));
    m->outputs = kiln_calloc((size_t)p->n_outputs + 1, sizeof(model_value));
  }
  kiln_status st = m && m->inputs && m->outputs ? KILN_OK : failf(&l, KILN_ERR_OUT_OF_MEMORY, "out of memory");
  for (int i = 0; i < p->n_inputs && st == KILN_OK; i++) {
    const kiln_model_value *d = &p->inputs[i];
    if (!(m->inputs[i].name = dup_n(d->name, strlen(d->name)))) st = failf(&l, KILN_ERR_OUT_OF_MEMORY, "out of memory");
    m->n_inputs = i + 1;
    m->inputs[i].dtype = d->dtype;
    m->inputs[i].ndim = d->ndim;
    memcpy(m->inputs[i].shape, d->shape, sizeof(int64_t) * (size_t)d->ndim);
  }
  for (int k = 0; k < p->n_outputs && st == KILN_OK; k++) {
    model_value *v = &m->outputs[k];
    if (!(v->name = dup_n(p->output_names[k], strlen(p->output_names[k]))))
      st = failf(&l, KILN_ERR_OUT_OF_MEMORY, "out of memory");
    m->n_outputs = k + 1;
    v->dtype = kiln_tensor_dtype(p->outputs[k]);
    v->ndim = kiln_tensor_ndim(p->outputs[k]);
    memcpy(v->shape, kiln_tensor_shape(p->outputs[k]), sizeof(int64_t) * (size_t)v->ndim);
  }
  if (st == KILN_OK) st = mark_unknown_outputs(&l, p->graph, p->n_outputs, p->outputs);
  if (st == KILN_OK) {
    kiln_compile_options o = kiln_compile_options_default();
    m->plan = kiln_graph_compile(p->graph, p->n_outputs, p->outputs, &o);
    if (!m->plan) st = failf(&l, kiln_last_status(), "compiling: %s", kiln_last_error());
  }
  if (st != KILN_OK) {
    kiln_model_free(m);
    return st;
  }
  for (int id = 0; id < KILN_OP_COUNT; id++)
    if ((m->op_count[id] = p->op_count[id])) {
      m->kinds[m->n_kinds++] = (kiln_op_id)id;
      m->stats.nodes += m->op_count[id];
    }
  qsort(m->kinds, (size_t)m->n_kinds, sizeof(kiln_op_id), kind_order);
  m->flops = p->flops;
  m->stats.parameters = p->parameters;
  m->stats.parameter_elements = p->parameter_elements;
  m->stats.parameter_bytes = p->parameter_bytes;
  kiln_plan_stats ps = kiln_plan_get_stats(m->plan);
  m->stats.steps = ps.steps;
  m->stats.arena_bytes = ps.arena_bytes;
  *out = m;
  return KILN_OK;
}

/* ================================================================ use */

static kiln_plan *model_plan(const kiln_model *m) { return m->plan; }

void kiln_model_free(kiln_model *m) {
  if (!m) return;
  kiln_plan_free(m->plan);
  for (int i = 0; i < m->n_inputs; i++) kiln_free(m->inputs[i].name);
  for (int k = 0; k < m->n_outputs; k++) kiln_free(m->outputs[k].name);
  kiln_free(m->inputs);
  kiln_free(m->outputs);
  kiln_free(m);
}

kiln_status kiln_model_run(kiln_model *m, int n_in, kiln_tensor *const *in, kiln_tensor **out) {
  static const char fn[] = "kiln_model_run";
  if (!m || !out || (n_in && !in))
    return kiln_errorf(KILN_ERR_INVALID_ARGUMENT, "%s: %s is NULL", fn, !m ? "model" : !out ? "out" : "in");
  if (n_in != m->n_inputs)
    return kiln_errorf(KILN_ERR_INVALID_ARGUMENT, "%s: the model takes %d input%s, got %d", fn, m->n_inputs,
                       m->n_inputs == 1 ? "" : "s", n_in);
  for (int i = 0; i < n_in; i++) {
    const model_value *v = &m->inputs[i];
    const kiln_tensor *t = in[i];
    if (!t) return kiln_errorf(KILN_ERR_INVALID_ARGUMENT, "%s: input %d ('%s') is NULL", fn, i, v->name);
    if (tensor_failed(t))
      return kiln_errorf(t->status, "%s: input %d ('%s') carries a failure: %s", fn, i, v->name, t->error);
    bool fits = t->dtype == v->dtype && t->ndim == v->ndim;
    for (int d = 0; fits && d < v->ndim; d++) fits = v->shape[d] < 0 || t->shape[d] == v->shape[d];
    if (!fits) {
      char want[KILN_SHAPE_STR_MAX], got[KILN_SHAPE_STR_MAX];
      return kiln_errorf(KILN_ERR_SHAPE, "%s: input %d ('%s') must be %s %s, got %s %s", fn, i, v->name,
                         kiln_dtype_name(v->dtype), kiln_shape_str(want, sizeof want, v->ndim, v->shape),
                         kiln_dtype_name(t->dtype), kiln_shape_str(got, sizeof got, t->ndim, t->shape));
    }
  }
  kiln_status st = kiln_plan_run(m->plan, n_in, in, out);
  return st == KILN_OK ? st : kiln_errorf(st, "%s: %s", fn, kiln_last_error());
}

int kiln_model_num_inputs(const kiln_model *m) { return m ? m->n_inputs : 0; }
int kiln_model_num_outputs(const kiln_model *m) { return m ? m->n_outputs : 0; }

static kiln_status value_info(const char *fn, const model_value *vs, int n, int i, kiln_model_value *out) {
  if (!out) return kiln_errorf(KILN_ERR_INVALID_ARGUMENT, "%s: out is NULL", fn);
  if (i < 0 || i >= n) return kiln_errorf(KILN_ERR_OUT_OF_RANGE, "%s: %d is not in [0, %d)", fn, i, n);
  *out = (kiln_model_value){vs[i].name, vs[i].dtype, vs[i].ndim, vs[i].shape};
  return KILN_OK;
}

kiln_status kiln_model_input(const kiln_model *m, int i, kiln_model_value *out) {
  return value_info("kiln_model_input", m ? m->inputs : NULL, m ? m->n_inputs : 0, i, out);
}

kiln_status kiln_model_output(const kiln_model *m, int i, kiln_model_value *out) {
  return value_info("kiln_model_output", m ? m->outputs : NULL, m ? m->n_outputs : 0, i, out);
}

int kiln_model_num_op_kinds(const kiln_model *m) { return m ? m->n_kinds : 0; }

kiln_status kiln_model_op_count(const kiln_model *m, int i, const char **name, int *count) {
  if (!name || !count) return kiln_errorf(KILN_ERR_INVALID_ARGUMENT, "kiln_model_op_count: name or count is NULL");
  int n = m ? m->n_kinds : 0;
  if (i < 0 || i >= n) return kiln_errorf(KILN_ERR_OUT_OF_RANGE, "kiln_model_op_count: %d is not in [0, %d)", i, n);
  *name = kiln_op_get(m->kinds[i])->name;
  *count = m->op_count[m->kinds[i]];
  return KILN_OK;
}

kiln_model_stats kiln_model_get_stats(const kiln_model *m) { return m ? m->stats : (kiln_model_stats){0}; }

kiln_status kiln_model_flops(const kiln_model *m, int64_t *flops) {
  if (!m || !flops)
    return kiln_errorf(KILN_ERR_INVALID_ARGUMENT, "kiln_model_flops: %s is NULL", !m ? "model" : "flops");
  *flops = m->flops;
  return KILN_OK;
}
