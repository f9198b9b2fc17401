#include "kernels/optim.h"

#include <tgmath.h>

enum { SGD = 0, ADAM = 1, ADAMW = 2 };

/* One loop per dtype; the state buffers are used only by the rules that
 * need them (m: SGD momentum or Adam's first moment, v: Adam's second). */
#define OPTIM_LOOP(T)                                                                                   \
  do {                                                                                                  \
    T *p = pv, *m = mv, *v = vv;                                                                        \
    const T *g = gv;                                                                                    \
    const T lr = (T)a->lr, wd = (T)a->weight_decay, scale = (T)a->grad_scale, mom = (T)a->momentum;    \
    const T b1 = (T)a->beta1, b2 = (T)a->beta2, eps = (T)a->eps;                                       \
    const T c1 = (T)(1 - pow(a->beta1, (double)a->step)), c2 = (T)(1 - pow(a->beta2, (double)a->step)); \
    for (int64_t i = 0; i < n; i++) {                                                                   \
      T grad = g[i] * scale;                                                                            \
      if (a->kind == SGD) {                                                                             \
        grad += wd * p[i];                                                                              \
        if (mom != 0) {                                                                                 \
          m[i] = a->step == 1 ? grad : mom * m[i] + grad;                                               \
          grad = a->nesterov ? grad + mom * m[i] : m[i];                                                \
        }                                                                                               \
        p[i] -= lr * grad;                                                                              \
      } else {                                                                                          \
        if (a->kind == ADAM) grad += wd * p[i];                                                         \
        else p[i] *= 1 - lr * wd;                                                                       \
        m[i] = b1 * m[i] + (1 - b1) * grad;                                                             \
        v[i] = b2 * v[i] + (1 - b2) * grad * grad;                                                      \
        p[i] -= lr * (m[i] / c1) / (sqrt(v[i] / c2) + eps);                                             \
      }                                                                                                 \
    }                                                                                                   \
  } while (0)

void kk_optim_update(kiln_dtype dt, int64_t n, void *pv, const void *gv, void *mv, void *vv, const kk_optim_args *a) {
  if (dt == KILN_F32) OPTIM_LOOP(float);
  else OPTIM_LOOP(double);
}
