/* Initialisers: constant, uniform, normal, and the fan-scaled Xavier
 * (Glorot) and Kaiming (He) families, with PyTorch's fans so a model
 * initialised here matches one initialised there in distribution. */
#include <math.h>

#include "nn/nn.h"
#include "imperative/dispatch.h"

kiln_init kiln_init_constant(double value) { return (kiln_init){KILN_INIT_CONSTANT, value, 0}; }
kiln_init kiln_init_uniform(double low, double high) { return (kiln_init){KILN_INIT_UNIFORM, low, high}; }
kiln_init kiln_init_normal(double mean, double stddev) { return (kiln_init){KILN_INIT_NORMAL, mean, stddev}; }
kiln_init kiln_init_xavier(bool uniform, double gain) {
  return (kiln_init){uniform ? KILN_INIT_XAVIER_UNIFORM : KILN_INIT_XAVIER_NORMAL, gain, 0};
}
kiln_init kiln_init_kaiming(bool uniform, double negative_slope) {
  return (kiln_init){uniform ? KILN_INIT_KAIMING_UNIFORM : KILN_INIT_KAIMING_NORMAL, negative_slope, 0};
}

static kiln_tensor *owned(kiln_tensor *t) {
  kiln_tensor_retain(t);
  return t;
}

kiln_tensor *nn_init_tensor(const kiln_init *init, kiln_dtype dt, int ndim, const int64_t *shape, const char *what) {
  kiln_scope_begin();
  kiln_tensor *t = NULL;
  bool is_float = dt == KILN_F32 || dt == KILN_F64;
  if (init->kind != KILN_INIT_CONSTANT && !is_float) {
    t = kiln_failed(KILN_ERR_DTYPE, "%s: a random initialiser needs float32 or float64, not %s", what,
                    kiln_dtype_name(dt));
    goto out;
  }
  double fan_in = 0, fan_out = 0;
  if (init->kind >= KILN_INIT_XAVIER_UNIFORM && init->kind <= KILN_INIT_KAIMING_NORMAL) {
    if (ndim < 2) {
      t = kiln_failed(KILN_ERR_INVALID_ARGUMENT, "%s: Xavier and Kaiming need fans, so at least 2 dims, not %d", what,
                      ndim);
      goto out;
    }
    double field = 1;
    for (int d = 2; d < ndim; d++) field *= (double)shape[d];
    fan_in = (double)shape[1] * field;
    fan_out = (double)shape[0] * field;
    if (!(fan_in > 0 && fan_out > 0)) {
      t = kiln_failed(KILN_ERR_INVALID_ARGUMENT, "%s: a zero dim leaves no fan for Xavier or Kaiming", what);
      goto out;
    }
  }
  double a = init->a;
  switch (init->kind) {
  case KILN_INIT_CONSTANT: t = kiln_full(dt, ndim, shape, a); break;
  case KILN_INIT_UNIFORM: t = kiln_random_uniform(NULL, a, init->b, dt, ndim, shape); break;
  case KILN_INIT_NORMAL: t = kiln_random_normal(NULL, a, init->b, dt, ndim, shape); break;
  case KILN_INIT_XAVIER_UNIFORM: {
    double r = a * sqrt(6.0 / (fan_in + fan_out));
    t = kiln_random_uniform(NULL, -r, r, dt, ndim, shape);
    break;
  }
  case KILN_INIT_XAVIER_NORMAL: t = kiln_random_normal(NULL, 0, a * sqrt(2.0 / (fan_in + fan_out)), dt, ndim, shape); break;
  case KILN_INIT_KAIMING_UNIFORM: {
    double r = sqrt(6.0 / ((1 + a * a) * fan_in));
    t = kiln_random_uniform(NULL, -r, r, dt, ndim, shape);
    break;
  }
  case KILN_INIT_KAIMING_NORMAL: t = kiln_random_normal(NULL, 0, sqrt(2.0 / ((1 + a * a) * fan_in)), dt, ndim, shape); break;
  default: t = kiln_failed(KILN_ERR_INVALID_ARGUMENT, "%s: %d is not a kiln_init_kind", what, (int)init->kind);
  }
out:
  t = owned(t);
  kiln_scope_end();
  return t;
}
