/* Internals shared by the nn files: blocks (block.c), initialisers
 * (init.c), layers (layers.c). */
#ifndef KILN_NN_H
#define KILN_NN_H

#include <stdatomic.h>

#include "kiln.h"

typedef struct {
  char *name;
  kiln_dtype dtype;
  int ndim;
  int64_t shape[KILN_MAX_DIMS]; /* 0: unknown until a forward or a load fixes it */
  bool has_own_init, initialized;
  kiln_init own_init, init; /* init: the one chosen by kiln_block_initialize */
  kiln_grad_req req;
  kiln_tensor *data; /* owned; NULL until shape and init are known */
} param;

typedef struct {
  char *name;
  kiln_block *block;
} child;

struct kiln_block {
  atomic_long refs;
  char *type;
  kiln_forward_fn forward;
  void *user;
  void (*free_user)(void *);
  param *params;
  int n_params, cap_params;
  child *children;
  int n_children, cap_children;
  struct hybrid_state *hybrid; /* NULL: imperative (src/nn/hybrid.c) */
  bool untraceable;
};

/* A hybridized block's call (src/nn/hybrid.c): the cached plan for this
 * input signature, traced and compiled on a miss. */
kiln_tensor *hybrid_call(kiln_block *b, int n, kiln_tensor *const *inputs);
void hybrid_free(struct hybrid_state *h);
/* The plan of b's most recently used inference call (neither training nor
 * recording), borrowed from b's cache; NULL when b is not hybridized or has
 * made no such call. What kiln_block_export writes. */
kiln_plan *hybrid_inference_plan(const kiln_block *b);
/* Called when a trace reaches a block that cannot be traced. */
void hybrid_note_untraceable(void);

/* A new tensor of the given dtype and shape filled by init, owned by the
 * caller (in no scope); a failed tensor naming what when init does not
 * apply (a fan-based initialiser on a 1-D shape, a random one on integers). */
kiln_tensor *nn_init_tensor(const kiln_init *init, kiln_dtype dt, int ndim, const int64_t *shape, const char *what);

/* A new handle on x in the open scope: what a forward function returns
 * when it passes its input through (an identity layer, a failed input). */
kiln_tensor *nn_pass(kiln_tensor *x);

#endif
