/* The trainer: per parameter, its gradient buffer and its optimiser state
 * (momentum buffer, or Adam's two moments), updated in place by one engine
 * op per parameter that writes the parameter and its state. */
#include <string.h>

#include "imperative/dispatch.h"
#include "kernels/optim.h"

typedef struct {
  kiln_tensor *param, *m, *v; /* m, v: state, or NULL when the rule needs none */
} slot;

struct kiln_optimizer {
  kiln_optimizer_params p;
  int n;
  slot *slots;
  int64_t step;
};

kiln_optimizer_params kiln_optimizer_params_default(kiln_optimizer_kind kind) {
  kiln_optimizer_params p = {kind, kind == KILN_OPT_SGD ? 0.01 : 0.001, 0, false,
                             kind == KILN_OPT_ADAMW ? 0.01 : 0, 0.9, 0.999, 1e-8};
  return p;
}

static kiln_status check_params(const kiln_optimizer_params *p) {
  if ((unsigned)p->kind > KILN_OPT_ADAMW)
    return kiln_errorf(KILN_ERR_INVALID_ARGUMENT, "kiln_optimizer_new: kind %d is not a kiln_optimizer_kind", (int)p->kind);
  if (!(p->lr >= 0) || !(p->momentum >= 0) || !(p->weight_decay >= 0) || !(p->beta1 >= 0 && p->beta1 < 1) ||
      !(p->beta2 >= 0 && p->beta2 < 1) || !(p->eps > 0))
    return kiln_errorf(KILN_ERR_INVALID_ARGUMENT,
                       "kiln_optimizer_new: lr %g, momentum %g, weight decay %g must be >= 0, betas %g and %g in [0, 1), "
                       "eps %g > 0",
                       p->lr, p->momentum, p->weight_decay, p->beta1, p->beta2, p->eps);
  return KILN_OK;
}

void kiln_optimizer_free(kiln_optimizer *o) {
  if (!o) return;
  for (int i = 0; i < o->n; i++) {
    kiln_tensor_release(o->slots[i].param);
    kiln_tensor_release(o->slots[i].m);
    kiln_tensor_release(o->slots[i].v);
  }
  kiln_free(o->slots);
  kiln_free(o);
}

kiln_optimizer *kiln_optimizer_new(const kiln_optimizer_params *p, int n, kiln_tensor *const *params) {
  kiln_optimizer_params pp = p ? *p : kiln_optimizer_params_default(KILN_OPT_SGD);
  if (check_params(&pp) != KILN_OK) return NULL;
  if (n < 0 || (n > 0 && !params)) {
    kiln_errorf(KILN_ERR_INVALID_ARGUMENT, "kiln_optimizer_new: %d parameters%s", n, params ? "" : ", array NULL");
    return NULL;
  }
  for (int i = 0; i < n; i++) {
    const kiln_tensor *t = params[i];
    if (!t || t->status != KILN_OK || !kiln_grad(t) || !kiln_tensor_is_contiguous(t)) {
      kiln_errorf(KILN_ERR_INVALID_ARGUMENT,
                  "kiln_optimizer_new: parameter %d must be a contiguous, valid tensor with a gradient (kiln_attach_grad)",
                  i);
      return NULL;
    }
  }
  kiln_optimizer *o = kiln_calloc(1, sizeof *o);
  if (o) o->slots = kiln_calloc((size_t)(n ? n : 1), sizeof(slot));
  if (!o || !o->slots) {
    kiln_free(o);
    kiln_errorf(KILN_ERR_OUT_OF_MEMORY, "kiln_optimizer_new: out of memory");
    return NULL;
  }
  o->p = pp;
  o->n = n;
  bool needs_m = pp.kind != KILN_OPT_SGD || pp.momentum != 0, needs_v = pp.kind != KILN_OPT_SGD;
  for (int i = 0; i < n; i++) {
    slot *s = &o->slots[i];
    s->param = kiln_tensor_retain(params[i]);
    s->m = needs_m ? kiln_zeros_like_owned(params[i]) : NULL;
    s->v = needs_v ? kiln_zeros_like_owned(params[i]) : NULL;
    if ((s->m && s->m->status != KILN_OK) || (s->v && s->v->status != KILN_OK)) {
      kiln_optimizer_free(o);
      kiln_errorf(KILN_ERR_OUT_OF_MEMORY, "kiln_optimizer_new: out of memory for the state of parameter %d", i);
      return NULL;
    }
  }
  return o;
}

kiln_status kiln_optimizer_set_lr(kiln_optimizer *o, double lr) {
  if (!o || !(lr >= 0)) return kiln_errorf(KILN_ERR_INVALID_ARGUMENT, "kiln_optimizer_set_lr: bad optimizer or lr %g", lr);
  o->p.lr = lr;
  return KILN_OK;
}

typedef struct {
  kiln_dtype dt;
  int64_t n;
  void *p, *m, *v;
  const void *g;
  kk_optim_args args;
} update_call;

static kiln_status run_update(void *data) {
  update_call *u = data;
  kk_optim_update(u->dt, u->n, u->p, u->g, u->m, u->v, &u->args);
  return KILN_OK;
}

static void free_update(void *data) { kiln_free(data); }

kiln_status kiln_optimizer_step(kiln_optimizer *o, double batch_size) {
  if (!o) return kiln_errorf(KILN_ERR_INVALID_ARGUMENT, "kiln_optimizer_step: optimizer is NULL");
  if (!(batch_size > 0)) return kiln_errorf(KILN_ERR_INVALID_ARGUMENT, "kiln_optimizer_step: batch size %g must be > 0", batch_size);
  o->step++;
  for (int i = 0; i < o->n; i++) {
    slot *s = &o->slots[i];
    kiln_tensor *g = kiln_grad(s->param);
    if (!g) return kiln_errorf(KILN_ERR_INVALID_ARGUMENT, "kiln_optimizer_step: parameter %d lost its gradient", i);
    update_call *u = kiln_alloc(sizeof *u);
    if (!u) return kiln_errorf(KILN_ERR_OUT_OF_MEMORY, "kiln_optimizer_step: out of memory");
    u->dt = s->param->dtype;
    u->n = kiln_tensor_numel(s->param);
    u->p = tensor_data(s->param);
    u->g = tensor_data(g);
    u->m = s->m ? tensor_data(s->m) : NULL;
    u->v = s->v ? tensor_data(s->v) : NULL;
    u->args = (kk_optim_args){(int)o->p.kind, o->p.lr,    o->p.momentum, o->p.weight_decay, o->p.beta1,
                              o->p.beta2,      o->p.eps,   o->p.nesterov, 1.0 / batch_size,  o->step};
    kiln_engine_var *reads[1] = {g->storage->var}, *writes[3];
    int nw = 0;
    writes[nw++] = s->param->storage->var;
    if (s->m) writes[nw++] = s->m->storage->var;
    if (s->v) writes[nw++] = s->v->storage->var;
    kiln_status st = tensor_push(s->param, run_update, free_update, u, reads, 1, writes, nw,
                                      "optimizer_update", 0);
    if (st != KILN_OK) {
      kiln_free(u);
      return st;
    }
  }
  return KILN_OK;
}
