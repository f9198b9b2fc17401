/* Internals shared by the nn files: blocks (block.c), initialisers
 * (init.c), layers (layers.c). */
#ifndef KILN_NN_H
#define KILN_NN_H

#include "kiln.h"

/* A new tensor of the given dtype and shape filled by init, owned by the
 * caller (in no scope); a failed tensor naming what when init does not
 * apply (a fan-based initialiser on a 1-D shape, a random one on integers). */
kiln_tensor *nn_init_tensor(const kiln_init *init, kiln_dtype dt, int ndim, const int64_t *shape, const char *what);

/* A new handle on x in the open scope: what a forward function returns
 * when it passes its input through (an identity layer, a failed input). */
kiln_tensor *nn_pass(kiln_tensor *x);

#endif
