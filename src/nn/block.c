/* Blocks: parameters, children, a forward function (see kiln.h). A
 * parameter's data is made when both its shape and its initialiser are
 * known, which for a deferred shape is inside the first forward. */
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

#include "nn/nn.h"
#include "base/base.h"
#include "graph/graph.h"
#include "imperative/dispatch.h"

static char *dup(const char *s) {
  size_t n = strlen(s) + 1;
  char *d = kiln_alloc(n);
  if (d) memcpy(d, s, n);
  return d;
}

kiln_block *kiln_block_new(const char *type, kiln_forward_fn forward, void *user, void (*free_user)(void *)) {
  if (!type || !*type || !forward) {
    kiln_errorf(KILN_ERR_INVALID_ARGUMENT, "kiln_block_new: %s", !forward ? "forward is NULL" : "type is empty");
    return NULL;
  }
  kiln_block *b = kiln_calloc(1, sizeof *b);
  if (b) b->type = dup(type);
  if (!b || !b->type) {
    kiln_free(b);
    kiln_errorf(KILN_ERR_OUT_OF_MEMORY, "kiln_block_new: out of memory");
    return NULL;
  }
  atomic_init(&b->refs, 1);
  b->forward = forward;
  b->user = user;
  b->free_user = free_user;
  return b;
}

kiln_block *kiln_block_retain(kiln_block *b) {
  if (b) atomic_fetch_add(&b->refs, 1);
  return b;
}

void kiln_block_release(kiln_block *b) {
  if (!b || atomic_fetch_sub(&b->refs, 1) != 1) return;
  for (int i = 0; i < b->n_params; i++) {
    kiln_free(b->params[i].name);
    kiln_tensor_release(b->params[i].data);
  }
  for (int i = 0; i < b->n_children; i++) {
    kiln_free(b->children[i].name);
    kiln_block_release(b->children[i].block);
  }
  if (b->free_user) b->free_user(b->user);
  hybrid_free(b->hybrid);
  kiln_free(b->params);
  kiln_free(b->children);
  kiln_free(b->type);
  kiln_free(b);
}

void *kiln_block_user(const kiln_block *b) { return b ? b->user : NULL; }
const char *kiln_block_type(const kiln_block *b) { return b ? b->type : NULL; }
int kiln_block_num_children(const kiln_block *b) { return b ? b->n_children : 0; }
kiln_block *kiln_block_child(const kiln_block *b, int i) {
  return b && i >= 0 && i < b->n_children ? b->children[i].block : NULL;
}
kiln_block *kiln_block_child_named(const kiln_block *b, const char *name) {
  for (int i = 0; b && name && i < b->n_children; i++)
    if (!strcmp(b->children[i].name, name)) return b->children[i].block;
  return NULL;
}

static param *find_param(const kiln_block *b, const char *name) {
  for (int i = 0; name && i < b->n_params; i++)
    if (!strcmp(b->params[i].name, name)) return &b->params[i];
  return NULL;
}

/* Names become path components of "a.b.weight", so they must not be empty
 * or hold the separator. */
static kiln_status check_name(const char *fn, const kiln_block *b, const char *what, const char *name) {
  if (!name || !*name || strchr(name, '.'))
    return kiln_errorf(KILN_ERR_INVALID_ARGUMENT, "%s: %s: %s name '%s' must be non-empty and without '.'", fn, b->type,
                       what, name ? name : "(null)");
  if (find_param(b, name) || kiln_block_child_named(b, name))
    return kiln_errorf(KILN_ERR_INVALID_ARGUMENT, "%s: %s: '%s' is already a parameter or child of this block", fn,
                       b->type, name);
  return KILN_OK;
}

static bool contains(const kiln_block *tree, const kiln_block *b) {
  if (tree == b) return true;
  for (int i = 0; i < tree->n_children; i++)
    if (contains(tree->children[i].block, b)) return true;
  return false;
}

static bool grow(void **items, int *cap, int n, size_t size) {
  if (n < *cap) return true;
  int new_cap = *cap ? 2 * *cap : 4;
  void *p = kiln_alloc(size * (size_t)new_cap);
  if (!p) return false;
  if (n) memcpy(p, *items, size * (size_t)n);
  kiln_free(*items);
  *items = p;
  *cap = new_cap;
  return true;
}

kiln_status kiln_block_add_child(kiln_block *b, const char *name, kiln_block *c) {
  kiln_status st = KILN_OK;
  char index[16];
  if (!c) return kiln_errorf(KILN_ERR_INVALID_ARGUMENT, "kiln_block_add_child: child is NULL: %s", kiln_last_error());
  if (!b) {
    st = kiln_errorf(KILN_ERR_INVALID_ARGUMENT, "kiln_block_add_child: block is NULL");
    goto fail;
  }
  if (!name) {
    snprintf(index, sizeof index, "%d", b->n_children);
    name = index;
  }
  if ((st = check_name("kiln_block_add_child", b, "child", name)) != KILN_OK) goto fail;
  if (contains(c, b)) {
    st = kiln_errorf(KILN_ERR_INVALID_ARGUMENT, "kiln_block_add_child: %s: adding %s '%s' would make a cycle", b->type,
                     c->type, name);
    goto fail;
  }
  char *copy = dup(name);
  if (!copy || !grow((void **)&b->children, &b->cap_children, b->n_children, sizeof(child))) {
    kiln_free(copy);
    st = kiln_errorf(KILN_ERR_OUT_OF_MEMORY, "kiln_block_add_child: out of memory");
    goto fail;
  }
  b->children[b->n_children++] = (child){copy, c};
  return KILN_OK;
fail:
  kiln_block_release(c);
  return st;
}

kiln_status kiln_block_add_param(kiln_block *b, const char *name, kiln_dtype dt, int ndim, const int64_t *shape,
                                 const kiln_init *init, kiln_grad_req req) {
  if (!b) return kiln_errorf(KILN_ERR_INVALID_ARGUMENT, "kiln_block_add_param: block is NULL");
  kiln_status st = check_name("kiln_block_add_param", b, "parameter", name);
  if (st != KILN_OK) return st;
  if (ndim < 0 || ndim > KILN_MAX_DIMS || (ndim && !shape))
    return kiln_errorf(KILN_ERR_INVALID_ARGUMENT, "kiln_block_add_param: %s.%s: %d dims (0 to %d, with a shape)",
                       b->type, name, ndim, KILN_MAX_DIMS);
  for (int d = 0; d < ndim; d++)
    if (shape[d] < 0)
      return kiln_errorf(KILN_ERR_INVALID_ARGUMENT, "kiln_block_add_param: %s.%s: dim %d is %lld", b->type, name, d,
                         (long long)shape[d]);
  if (kiln_dtype_size(dt) == 0 || (req != KILN_GRAD_NULL && dt != KILN_F32 && dt != KILN_F64))
    return kiln_errorf(KILN_ERR_DTYPE, "kiln_block_add_param: %s.%s: a parameter with a gradient is float32 or float64",
                       b->type, name);
  if (req != KILN_GRAD_NULL && req != KILN_GRAD_WRITE && req != KILN_GRAD_ADD)
    return kiln_errorf(KILN_ERR_INVALID_ARGUMENT, "kiln_block_add_param: %s.%s: %d is not a kiln_grad_req", b->type,
                       name, (int)req);
  char *copy = dup(name);
  if (!copy || !grow((void **)&b->params, &b->cap_params, b->n_params, sizeof(param))) {
    kiln_free(copy);
    return kiln_errorf(KILN_ERR_OUT_OF_MEMORY, "kiln_block_add_param: out of memory");
  }
  param *p = &b->params[b->n_params++];
  memset(p, 0, sizeof *p);
  p->name = copy;
  p->dtype = dt;
  p->ndim = ndim;
  if (ndim) memcpy(p->shape, shape, sizeof(int64_t) * (size_t)ndim);
  p->has_own_init = init != NULL;
  if (init) p->own_init = *init;
  p->req = req;
  return KILN_OK;
}

static bool shape_known(const param *p) {
  for (int d = 0; d < p->ndim; d++)
    if (p->shape[d] == 0) return false;
  return true;
}

static void format_shape(char *buf, size_t cap, int ndim, const int64_t *shape) {
  size_t len = (size_t)snprintf(buf, cap, "[");
  for (int d = 0; d < ndim && len < cap; d++) {
    if (shape[d] == 0)
      len += (size_t)snprintf(buf + len, cap - len, "%s?", d ? ", " : "");
    else
      len += (size_t)snprintf(buf + len, cap - len, "%s%lld", d ? ", " : "", (long long)shape[d]);
  }
  if (len < cap) snprintf(buf + len, cap - len, "]");
}

/* Gives p data drawn from its initialiser (or replaces the values in
 * place, so optimisers holding the tensor keep seeing it). */
static kiln_status materialize(const kiln_block *b, param *p) {
  /* Inside a trace the first forward fixes shapes; the values themselves
   * are made now, eagerly, not recorded into the graph. */
  kiln_graph *trace = graph_trace_suspend();
  kiln_status st = KILN_OK;
  char what[256];
  snprintf(what, sizeof what, "%s parameter '%s'", b->type, p->name);
  kiln_tensor *t = nn_init_tensor(&p->init, p->dtype, p->ndim, p->shape, what);
  st = kiln_tensor_status(t);
  if (st != KILN_OK) {
    kiln_errorf(st, "%s", kiln_tensor_error(t));
  } else if (p->data) {
    st = kiln_assign(p->data, t);
  } else {
    if (p->req != KILN_GRAD_NULL) st = kiln_attach_grad(t, p->req);
    if (st == KILN_OK) {
      p->data = kiln_tensor_retain(t);
    }
  }
  kiln_tensor_release(t);
  graph_trace_resume(trace);
  return st;
}

/* Visits each block once, depth first, with its path prefix ("" for the
 * root, "features.3." below). */
typedef kiln_status (*visit_fn)(kiln_block *b, const char *prefix, void *ctx);

typedef struct {
  kiln_block **seen;
  int n, cap;
} seen_set;

static kiln_status walk(kiln_block *b, const char *prefix, seen_set *seen, visit_fn fn, void *ctx) {
  for (int i = 0; i < seen->n; i++)
    if (seen->seen[i] == b) return KILN_OK;
  if (!grow((void **)&seen->seen, &seen->cap, seen->n, sizeof(kiln_block *)))
    return kiln_errorf(KILN_ERR_OUT_OF_MEMORY, "out of memory walking the blocks");
  seen->seen[seen->n++] = b;
  kiln_status st = fn(b, prefix, ctx);
  for (int i = 0; st == KILN_OK && i < b->n_children; i++) {
    size_t len = strlen(prefix) + strlen(b->children[i].name) + 2;
    char *sub = kiln_alloc(len);
    if (!sub) return kiln_errorf(KILN_ERR_OUT_OF_MEMORY, "out of memory walking the blocks");
    snprintf(sub, len, "%s%s.", prefix, b->children[i].name);
    st = walk(b->children[i].block, sub, seen, fn, ctx);
    kiln_free(sub);
  }
  return st;
}

static kiln_status walk_tree(kiln_block *b, visit_fn fn, void *ctx) {
  seen_set seen = {0};
  kiln_status st = walk(b, "", &seen, fn, ctx);
  kiln_free(seen.seen);
  return st;
}

typedef struct {
  const kiln_init *init;
  bool force;
} init_ctx;

static kiln_status init_block(kiln_block *b, const char *prefix, void *ctx) {
  const init_ctx *c = ctx;
  for (int i = 0; i < b->n_params; i++) {
    param *p = &b->params[i];
    if (p->initialized && !c->force) continue;
    p->init = p->has_own_init ? p->own_init : c->init ? *c->init : kiln_init_xavier(true, 1);
    p->initialized = true;
    if (shape_known(p)) {
      kiln_status st = materialize(b, p);
      if (st != KILN_OK) return kiln_errorf(st, "kiln_block_initialize: %s%s: %s", prefix, p->name, kiln_last_error());
    }
  }
  return KILN_OK;
}

kiln_status kiln_block_initialize(kiln_block *b, const kiln_init *init, bool force) {
  if (!b) return kiln_errorf(KILN_ERR_INVALID_ARGUMENT, "kiln_block_initialize: block is NULL");
  init_ctx c = {init, force};
  return walk_tree(b, init_block, &c);
}

kiln_tensor *kiln_block_param_for(kiln_block *b, const char *name, int ndim, const int64_t *shape) {
  if (!b) return kiln_failed(KILN_ERR_INVALID_ARGUMENT, "kiln_block_param: block is NULL");
  param *p = find_param(b, name);
  if (!p) return kiln_failed(KILN_ERR_INVALID_ARGUMENT, "%s has no parameter '%s'", b->type, name ? name : "(null)");
  if (shape) {
    bool fits = ndim == p->ndim;
    for (int d = 0; fits && d < ndim; d++) fits = shape[d] > 0 && (p->shape[d] == 0 || p->shape[d] == shape[d]);
    if (!fits) {
      char want[160], got[160];
      format_shape(want, sizeof want, p->ndim, p->shape);
      format_shape(got, sizeof got, ndim, shape);
      return kiln_failed(KILN_ERR_SHAPE, "%s parameter '%s' is %s but the input needs %s", b->type, name, want, got);
    }
    if (!p->data) memcpy(p->shape, shape, sizeof(int64_t) * (size_t)ndim);
  }
  if (!p->data) {
    if (!p->initialized)
      return kiln_failed(KILN_ERR_INVALID_ARGUMENT, "%s parameter '%s' is not initialised: call kiln_block_initialize",
                         b->type, name);
    if (!shape_known(p)) {
      char want[160];
      format_shape(want, sizeof want, p->ndim, p->shape);
      return kiln_failed(KILN_ERR_SHAPE, "%s parameter '%s' has the unknown shape %s (a forward fixes it)", b->type,
                         name, want);
    }
    kiln_status st = materialize(b, p);
    if (st != KILN_OK) return kiln_failed(st, "%s", kiln_last_error());
  }
  return p->data;
}

kiln_tensor *kiln_block_param(kiln_block *b, const char *name) { return kiln_block_param_for(b, name, 0, NULL); }

kiln_tensor *kiln_block_call_n(kiln_block *b, int n, kiln_tensor *const *inputs) {
  if (!b) return kiln_failed(KILN_ERR_INVALID_ARGUMENT, "kiln_block_call: block is NULL");
  if (n < 0 || (n && !inputs)) return kiln_failed(KILN_ERR_INVALID_ARGUMENT, "kiln_block_call: %s: %d inputs", b->type, n);
  for (int i = 0; i < n; i++)
    if (!inputs[i]) return kiln_failed(KILN_ERR_INVALID_ARGUMENT, "kiln_block_call: %s: input %d is NULL", b->type, i);
  bool symbolic = graph_tracing();
  for (int i = 0; i < n && !symbolic; i++) symbolic = graph_ref_of(inputs[i], NULL, NULL) >= 0;
  if (symbolic && b->untraceable) {
    hybrid_note_untraceable();
    return kiln_failed(KILN_ERR_UNSUPPORTED, "%s cannot be traced (kiln_block_set_traceable): it runs imperatively",
                       b->type);
  }
  if (b->hybrid && !symbolic) return hybrid_call(b, n, inputs);
  kiln_tensor *y = b->forward(b, n, inputs);
  return y ? y : kiln_failed(KILN_ERR_INTERNAL, "%s: forward returned NULL", b->type);
}

kiln_tensor *kiln_block_call(kiln_block *b, kiln_tensor *x) { return kiln_block_call_n(b, 1, &x); }

/* ------------------------------------------------------------ collecting, saving, loading */

void kiln_param_list_free(kiln_param_list *l) {
  if (!l) return;
  for (int i = 0; i < l->n; i++) kiln_free(l->names[i]);
  kiln_free(l->names);
  kiln_free(l->tensors);
  *l = (kiln_param_list){0};
}

/* Every parameter with its path, data or not. */
typedef struct {
  char *name;
  param *p;
} found;

typedef struct {
  found *items;
  int n, cap;
} found_params;

static kiln_status find_all(kiln_block *b, const char *prefix, void *ctx) {
  found_params *f = ctx;
  for (int i = 0; i < b->n_params; i++) {
    size_t len = strlen(prefix) + strlen(b->params[i].name) + 1;
    char *name = kiln_alloc(len);
    if (!name || !grow((void **)&f->items, &f->cap, f->n, sizeof(found))) {
      kiln_free(name);
      return kiln_errorf(KILN_ERR_OUT_OF_MEMORY, "out of memory collecting parameters");
    }
    snprintf(name, len, "%s%s", prefix, b->params[i].name);
    f->items[f->n++] = (found){name, &b->params[i]};
  }
  return KILN_OK;
}

static void found_free(found_params *f) {
  for (int i = 0; i < f->n; i++) kiln_free(f->items[i].name);
  kiln_free(f->items);
}

kiln_status kiln_block_collect_params(kiln_block *b, kiln_param_list *out) {
  if (!out) return kiln_errorf(KILN_ERR_INVALID_ARGUMENT, "kiln_block_collect_params: out is NULL");
  *out = (kiln_param_list){0};
  if (!b) return kiln_errorf(KILN_ERR_INVALID_ARGUMENT, "kiln_block_collect_params: block is NULL");
  found_params f = {0};
  kiln_status st = walk_tree(b, find_all, &f);
  for (int i = 0; st == KILN_OK && i < f.n; i++)
    if (!f.items[i].p->data)
      st = kiln_errorf(KILN_ERR_INVALID_ARGUMENT, "kiln_block_collect_params: parameter '%s' has no data yet (%s)",
                       f.items[i].name,
                       f.items[i].p->initialized ? "its shape is fixed by the first forward" : "not initialised");
  size_t slots = (size_t)(f.n ? f.n : 1);
  char **names = st == KILN_OK ? kiln_alloc(sizeof(char *) * slots) : NULL;
  kiln_tensor **tensors = st == KILN_OK ? kiln_alloc(sizeof(kiln_tensor *) * slots) : NULL;
  if (st == KILN_OK && (!names || !tensors)) st = kiln_errorf(KILN_ERR_OUT_OF_MEMORY, "kiln_block_collect_params: out of memory");
  if (st != KILN_OK) {
    kiln_free(names);
    kiln_free(tensors);
    found_free(&f);
    return st;
  }
  for (int i = 0; i < f.n; i++) {
    names[i] = f.items[i].name; /* moved to the list */
    tensors[i] = f.items[i].p->data;
  }
  kiln_free(f.items);
  *out = (kiln_param_list){f.n, names, tensors};
  return KILN_OK;
}

kiln_status kiln_block_save_parameters(kiln_block *b, const char *path) {
  kiln_param_list l;
  kiln_status st = kiln_block_collect_params(b, &l);
  if (st != KILN_OK) return kiln_errorf(st, "kiln_block_save_parameters: %s", kiln_last_error());
  st = kiln_save_safetensors(path, l.n, (const char *const *)l.names, l.tensors);
  kiln_param_list_free(&l);
  return st;
}

static int file_index(int n, char **names, const char *name) {
  for (int i = 0; i < n; i++)
    if (!strcmp(names[i], name)) return i;
  return -1;
}

kiln_status kiln_block_load_parameters(kiln_block *b, const char *path) {
  if (!b) return kiln_errorf(KILN_ERR_INVALID_ARGUMENT, "kiln_block_load_parameters: block is NULL");
  int n = 0;
  char **names = NULL;
  kiln_tensor **tensors = NULL;
  kiln_status st = kiln_load_safetensors(path, &n, &names, &tensors);
  if (st != KILN_OK) return st;
  found_params f = {0};
  st = walk_tree(b, find_all, &f);
  int *match = st == KILN_OK ? kiln_calloc((size_t)(f.n ? f.n : 1), sizeof(int)) : NULL;
  if (st == KILN_OK && !match) st = kiln_errorf(KILN_ERR_OUT_OF_MEMORY, "kiln_block_load_parameters: out of memory");
  /* Everything is checked before anything is written. */
  for (int i = 0; st == KILN_OK && i < f.n; i++) {
    const param *p = f.items[i].p;
    int k = match[i] = file_index(n, names, f.items[i].name);
    if (k < 0) {
      st = kiln_errorf(KILN_ERR_CORRUPT, "kiln_block_load_parameters: %s: no parameter '%s' in the file", path, f.items[i].name);
      break;
    }
    const kiln_tensor *t = tensors[k];
    bool fits = kiln_tensor_dtype(t) == p->dtype && kiln_tensor_ndim(t) == p->ndim;
    for (int d = 0; fits && d < p->ndim; d++) fits = p->shape[d] == 0 || p->shape[d] == kiln_tensor_dim(t, d);
    if (!fits) {
      char want[160], got[160];
      format_shape(want, sizeof want, p->ndim, p->shape);
      format_shape(got, sizeof got, kiln_tensor_ndim(t), kiln_tensor_shape(t));
      st = kiln_errorf(KILN_ERR_SHAPE, "kiln_block_load_parameters: %s: parameter '%s' is %s %s, the file has %s %s", path,
                       f.items[i].name, kiln_dtype_name(p->dtype), want, kiln_dtype_name(kiln_tensor_dtype(t)), got);
    }
  }
  if (st == KILN_OK && n > f.n) {
    for (int k = 0; k < n; k++) {
      bool used = false;
      for (int i = 0; i < f.n && !used; i++) used = match[i] == k;
      if (!used) {
        st = kiln_errorf(KILN_ERR_CORRUPT, "kiln_block_load_parameters: %s: the file has '%s', which %s does not", path,
                         names[k], b->type);
        break;
      }
    }
  }
  for (int i = 0; st == KILN_OK && i < f.n; i++) {
    param *p = f.items[i].p;
    kiln_tensor *t = tensors[match[i]];
    if (p->data) {
      st = kiln_assign(p->data, t);
      continue;
    }
    for (int d = 0; d < p->ndim; d++) p->shape[d] = kiln_tensor_dim(t, d);
    if (p->req != KILN_GRAD_NULL) st = kiln_attach_grad(t, p->req);
    if (st == KILN_OK) {
      p->data = kiln_tensor_retain(t);
      if (!p->initialized) p->init = p->has_own_init ? p->own_init : kiln_init_xavier(true, 1);
      p->initialized = true;
    }
  }
  kiln_free(match);
  found_free(&f);
  kiln_named_tensors_free(n, names, tensors);
  return st;
}

static kiln_status cast_block(kiln_block *b, const char *prefix, void *ctx) {
  kiln_dtype dt = *(const kiln_dtype *)ctx;
  for (int i = 0; i < b->n_params; i++) {
    param *p = &b->params[i];
    if ((p->dtype != KILN_F32 && p->dtype != KILN_F64) || p->dtype == dt) continue;
    if (p->data) {
      kiln_scope_begin();
      kiln_tensor *t = kiln_tensor_retain(kiln_cast(p->data, dt));
      kiln_scope_end();
      kiln_status st = kiln_tensor_status(t);
      if (st == KILN_OK && p->req != KILN_GRAD_NULL) st = kiln_attach_grad(t, p->req);
      if (st != KILN_OK) {
        kiln_errorf(st, "kiln_block_cast: %s%s: %s", prefix, p->name,
                    kiln_tensor_status(t) != KILN_OK ? kiln_tensor_error(t) : kiln_last_error());
        kiln_tensor_release(t);
        return st;
      }
      kiln_tensor_release(p->data);
      p->data = t;
    }
    p->dtype = dt;
  }
  return KILN_OK;
}

kiln_status kiln_block_cast(kiln_block *b, kiln_dtype dt) {
  if (!b) return kiln_errorf(KILN_ERR_INVALID_ARGUMENT, "kiln_block_cast: block is NULL");
  if (dt != KILN_F32 && dt != KILN_F64)
    return kiln_errorf(KILN_ERR_DTYPE, "kiln_block_cast: parameters are float32 or float64, not %s", kiln_dtype_name(dt));
  return walk_tree(b, cast_block, &dt);
}

/* ------------------------------------------------------------ printing */

static void print_tree(const kiln_block *b, const char *name, int depth, FILE *out) {
  fprintf(out, "%*s%s%s%s", 2 * depth, "", name ? name : "", name ? ": " : "", b->type);
  for (int i = 0; i < b->n_params; i++) {
    char shape[160];
    const param *p = &b->params[i];
    format_shape(shape, sizeof shape, p->ndim, p->shape);
    fprintf(out, "  %s %s", p->name, shape);
  }
  fputc('\n', out);
  for (int i = 0; i < b->n_children; i++) print_tree(b->children[i].block, b->children[i].name, depth + 1, out);
}

kiln_status kiln_block_print(kiln_block *b, FILE *out) {
  if (!b || !out) return kiln_errorf(KILN_ERR_INVALID_ARGUMENT, "kiln_block_print: %s is NULL", b ? "out" : "block");
  print_tree(b, NULL, 0, out);
  return ferror(out) ? kiln_errorf(KILN_ERR_IO, "kiln_block_print: write failed") : KILN_OK;
}
