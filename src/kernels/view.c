/* Helpers on kernel views: element counts, contiguity, and dtype-generic
 * element access for the reference kernels. */
#include <math.h>
#include <string.h>

#include "kernels/view.h"

static _Thread_local unsigned thread_options;

unsigned kk_options(void) { return thread_options; }

unsigned kk_set_options(unsigned options) {
  unsigned old = thread_options;
  thread_options = options;
  return old;
}

int64_t kk_numel(const kk_view *v) {
  int64_t n = 1;
  for (int i = 0; i < v->ndim; i++) n *= v->shape[i];
  return n;
}

bool kk_is_contiguous(const kk_view *v) {
  int64_t expect = 1;
  for (int i = v->ndim - 1; i >= 0; i--) {
    if (v->shape[i] == 1) continue;
    if (v->shape[i] == 0) return true;
    if (v->strides[i] != expect) return false;
    expect *= v->shape[i];
  }
  return true;
}

char *kk_element(const kk_view *v, int64_t flat) {
  int64_t off = 0;
  for (int i = v->ndim - 1; i >= 0; i--) {
    int64_t idx = flat % v->shape[i];
    flat /= v->shape[i];
    off += idx * v->strides[i];
  }
  return v->data + off * (int64_t)kiln_dtype_size(v->dtype);
}

double kk_get_f64(kiln_dtype dt, const char *p) {
  switch (dt) {
  case KILN_F32: { float x; memcpy(&x, p, 4); return x; }
  case KILN_F64: { double x; memcpy(&x, p, 8); return x; }
  case KILN_I32: { int32_t x; memcpy(&x, p, 4); return x; }
  case KILN_I64: { int64_t x; memcpy(&x, p, 8); return (double)x; }
  case KILN_U8: return (unsigned char)*p;
  case KILN_BOOL: return *p != 0;
  default: return 0;
  }
}

int64_t kk_get_i64(kiln_dtype dt, const char *p) {
  switch (dt) {
  case KILN_I32: { int32_t x; memcpy(&x, p, 4); return x; }
  case KILN_I64: { int64_t x; memcpy(&x, p, 8); return x; }
  case KILN_U8: return (unsigned char)*p;
  case KILN_BOOL: return *p != 0;
  default: {
    double d = kk_get_f64(dt, p);
    /* Float to integer as C truncates, saturating instead of being UB. */
    if (isnan(d)) return 0;
    if (d >= 9223372036854775807.0) return INT64_MAX;
    if (d <= -9223372036854775808.0) return INT64_MIN;
    return (int64_t)d;
  }
  }
}

/* Doubles outside an integer dtype's range saturate to it and NaN becomes
 * 0, as kiln_cast does; bool is x != 0 (so NaN is true, as in numpy). */
void kk_set_f64(kiln_dtype dt, char *p, double x) {
  double lo, hi;
  switch (dt) {
  case KILN_F32: { float f = (float)x; memcpy(p, &f, 4); return; }
  case KILN_F64: memcpy(p, &x, 8); return;
  case KILN_BOOL: *p = x != 0; return;
  case KILN_I32: lo = -2147483648.0, hi = 2147483647.0; break;
  case KILN_U8: lo = 0, hi = 255; break;
  default: lo = -9223372036854775808.0, hi = 9223372036854775807.0; break;
  }
  int64_t v = isnan(x) ? 0 : x <= lo ? (int64_t)lo : x >= hi ? (dt == KILN_I64 ? INT64_MAX : (int64_t)hi) : (int64_t)x;
  kk_set_i64(dt, p, v);
}

void kk_set_i64(kiln_dtype dt, char *p, int64_t x) {
  switch (dt) {
  case KILN_F32: { float f = (float)x; memcpy(p, &f, 4); break; }
  case KILN_F64: { double d = (double)x; memcpy(p, &d, 8); break; }
  case KILN_I32: { int32_t v = (int32_t)x; memcpy(p, &v, 4); break; }
  case KILN_I64: memcpy(p, &x, 8); break;
  case KILN_U8: *p = (char)(unsigned char)x; break;
  case KILN_BOOL: *p = x != 0; break;
  default: break;
  }
}
