/* Optimiser updates over contiguous parameter, gradient and state buffers,
 * PyTorch's rules. tests/test_optim.c checks them against the rules written
 * out in double. */
#ifndef KILN_KERNELS_OPTIM_H
#define KILN_KERNELS_OPTIM_H

#include "base/base.h"

typedef struct {
  int kind; /* kiln_optimizer_kind */
  double lr, momentum, weight_decay, beta1, beta2, eps;
  bool nesterov;
  double grad_scale; /* 1 / batch size */
  int64_t step;      /* 1 for the first update */
} kk_optim_args;

/* p, g, and the state (m, v: momentum buffer or Adam moments) are n
 * contiguous elements of dtype dt (float32 or float64). */
void kk_optim_update(kiln_dtype dt, int64_t n, void *p, const void *g, void *m, void *v, const kk_optim_args *a);

#endif
