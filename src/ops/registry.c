/* The registry table and the helpers every op's inference shares. */
#include <stdio.h>
#include <string.h>

#include "ops/op.h"

static const kiln_op_def *const op_table[] = {
#define ENTRY_(id, name, family) &kiln_opdef_##name,
    KILN_OP_LIST(ENTRY_)
#undef ENTRY_
};
_Static_assert(sizeof(op_table) / sizeof(op_table[0]) == KILN_OP_COUNT, "op table and op list disagree");

const kiln_op_def *kiln_op_get(kiln_op_id id) { return (unsigned)id < KILN_OP_COUNT ? op_table[id] : NULL; }

const kiln_op_def *kiln_op_find(const char *name) {
  if (!name) return NULL;
  for (int i = 0; i < KILN_OP_COUNT; i++)
    if (strcmp(op_table[i]->name, name) == 0) return op_table[i];
  return NULL;
}

kiln_status kiln_op_fail(const kiln_op_call *c, kiln_status status, const char *fmt, ...) {
  char msg[KILN_ERROR_MAX];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  return kiln_errorf(status, "%s: %s", c->def->name, msg);
}

kiln_status kiln_op_axis(const kiln_op_call *c, int64_t axis, int ndim, int *out) {
  /* A 0-d tensor answers to axis 0 and -1, as in torch. */
  int bound = ndim > 0 ? ndim : 1;
  int64_t a = axis < 0 ? axis + bound : axis;
  if (a < 0 || a >= bound)
    return kiln_op_fail(c, KILN_ERR_OUT_OF_RANGE, "axis %lld is out of range for %d dims", (long long)axis, ndim);
  *out = (int)a;
  return KILN_OK;
}

kiln_status kiln_op_broadcast(const kiln_op_call *c, int n, const kk_view *const *views, kiln_out_desc *out) {
  int nd = 0;
  for (int k = 0; k < n; k++)
    if (views[k]->ndim > nd) nd = views[k]->ndim;
  out->ndim = nd;
  for (int i = 0; i < nd; i++) {
    int64_t d = 1;
    for (int k = 0; k < n; k++) {
      int j = i - (nd - views[k]->ndim);
      if (j < 0) continue;
      int64_t e = views[k]->shape[j];
      if (e == d || e == 1) continue;
      if (d == 1) {
        d = e;
        continue;
      }
      char msg[KILN_ERROR_MAX];
      size_t used = (size_t)snprintf(msg, sizeof msg, "shapes");
      for (int q = 0; q < n && used < sizeof msg; q++) {
        char buf[KILN_SHAPE_STR_MAX];
        used += (size_t)snprintf(msg + used, sizeof msg - used, "%s %s", q ? " and" : "",
                                 kiln_shape_str(buf, sizeof buf, views[q]->ndim, views[q]->shape));
      }
      return kiln_op_fail(c, KILN_ERR_SHAPE, "%s cannot broadcast (dim %d: %lld vs %lld)", msg, i, (long long)d,
                          (long long)e);
    }
    out->shape[i] = d;
  }
  return KILN_OK;
}
