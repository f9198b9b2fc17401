/* The trainer (an optimiser over a block's parameters, made at the first
 * step when deferred shapes are known) and learning-rate schedules. */
#include <math.h>

#include "nn/nn.h"
#include "base/base.h"

double kiln_lr_schedule_at(const kiln_lr_schedule *s, double base_lr, int64_t t) {
  if (!s || t < 0 || s->warmup_steps < 0) return NAN;
  if (t < s->warmup_steps) return s->warmup_begin_lr + (base_lr - s->warmup_begin_lr) * (double)t / (double)s->warmup_steps;
  int64_t after = t - s->warmup_steps;
  switch (s->kind) {
  case KILN_LR_CONSTANT: return base_lr;
  case KILN_LR_STEP:
    if (s->step_size <= 0 || !(s->factor > 0)) return NAN;
    return base_lr * pow(s->factor, (double)(after / s->step_size));
  case KILN_LR_COSINE: {
    int64_t span = s->total_steps - s->warmup_steps;
    if (span <= 0) return NAN;
    if (after >= span) return s->final_lr;
    return s->final_lr + (base_lr - s->final_lr) * (1 + cos(3.14159265358979323846 * (double)after / (double)span)) / 2;
  }
  }
  return NAN;
}

struct kiln_trainer {
  kiln_block *block;
  kiln_optimizer_params params;
  kiln_lr_schedule schedule;
  kiln_optimizer *opt; /* NULL until the first step */
  int64_t updates;
};

kiln_trainer *kiln_trainer_new(kiln_block *b, const kiln_optimizer_params *p) {
  if (!b) {
    kiln_errorf(KILN_ERR_INVALID_ARGUMENT, "kiln_trainer_new: block is NULL");
    return NULL;
  }
  kiln_optimizer_params pp = p ? *p : kiln_optimizer_params_default(KILN_OPT_SGD);
  /* The optimiser checks its settings; check them now, not at step 1. */
  kiln_optimizer *probe = kiln_optimizer_new(&pp, 0, NULL);
  if (!probe) return NULL;
  kiln_optimizer_free(probe);
  kiln_trainer *t = kiln_calloc(1, sizeof *t);
  if (!t) {
    kiln_errorf(KILN_ERR_OUT_OF_MEMORY, "kiln_trainer_new: out of memory");
    return NULL;
  }
  t->block = kiln_block_retain(b);
  t->params = pp;
  t->schedule.kind = KILN_LR_CONSTANT;
  return t;
}

void kiln_trainer_free(kiln_trainer *t) {
  if (!t) return;
  kiln_optimizer_free(t->opt);
  kiln_block_release(t->block);
  kiln_free(t);
}

kiln_status kiln_trainer_set_schedule(kiln_trainer *t, const kiln_lr_schedule *s) {
  if (!t) return kiln_errorf(KILN_ERR_INVALID_ARGUMENT, "kiln_trainer_set_schedule: trainer is NULL");
  kiln_lr_schedule sched = s ? *s : (kiln_lr_schedule){.kind = KILN_LR_CONSTANT};
  for (int64_t probe = 0; probe <= sched.warmup_steps; probe += sched.warmup_steps ? sched.warmup_steps : 1)
    if (isnan(kiln_lr_schedule_at(&sched, t->params.lr, probe)))
      return kiln_errorf(KILN_ERR_INVALID_ARGUMENT,
                         "kiln_trainer_set_schedule: kind %d with step_size %lld, factor %g, total_steps %lld, "
                         "warmup_steps %lld is not a schedule",
                         (int)sched.kind, (long long)sched.step_size, sched.factor, (long long)sched.total_steps,
                         (long long)sched.warmup_steps);
  t->schedule = sched;
  return KILN_OK;
}

double kiln_trainer_lr(const kiln_trainer *t) {
  return t ? kiln_lr_schedule_at(&t->schedule, t->params.lr, t->updates) : NAN;
}

static kiln_status make_optimizer(kiln_trainer *t) {
  kiln_param_list all;
  kiln_status st = kiln_block_collect_params(t->block, &all);
  if (st != KILN_OK) return kiln_errorf(st, "kiln_trainer_step: %s", kiln_last_error());
  /* Parameters without a gradient (running statistics) are state. */
  int n = 0;
  for (int i = 0; i < all.n; i++)
    if (kiln_grad(all.tensors[i])) all.tensors[n++] = all.tensors[i];
  t->opt = kiln_optimizer_new(&t->params, n, all.tensors);
  kiln_param_list_free(&all);
  return t->opt ? KILN_OK : kiln_errorf(KILN_ERR_INVALID_ARGUMENT, "kiln_trainer_step: %s", kiln_last_error());
}

kiln_status kiln_trainer_step(kiln_trainer *t, double batch_size) {
  if (!t) return kiln_errorf(KILN_ERR_INVALID_ARGUMENT, "kiln_trainer_step: trainer is NULL");
  kiln_status st = t->opt ? KILN_OK : make_optimizer(t);
  if (st == KILN_OK) st = kiln_optimizer_set_lr(t->opt, kiln_trainer_lr(t));
  if (st == KILN_OK) st = kiln_optimizer_step(t->opt, batch_size);
  if (st == KILN_OK) t->updates++;
  return st;
}
