/* Fill kernels. Each writes a contiguous output of any dtype; the value of
 * element i depends only on i and the attributes. The random kernel has no
 * reference twin: its definition is the Philox stream, which the tests check
 * against an independent implementation of Philox. */
#include "kernels/fill.h"

#include <math.h>
#include <string.h>

#include "kernels/random.h"

void kk_fill(const kk_view *out, double value) {
  int64_t n = kk_numel(out);
  size_t es = kiln_dtype_size(out->dtype);
  if (n == 0) return;
  kk_set_f64(out->dtype, out->data, value);
  if (out->dtype == KILN_F32) {
    float v = (float)value, *p = (float *)out->data;
    for (int64_t i = 0; i < n; i++) p[i] = v;
    return;
  }
  for (int64_t i = 1; i < n; i++) memcpy(out->data + i * (int64_t)es, out->data, es);
}

void kk_arange(const kk_view *out, double start, double step) {
  int64_t n = kk_numel(out);
  size_t es = kiln_dtype_size(out->dtype);
  for (int64_t i = 0; i < n; i++) kk_set_f64(out->dtype, out->data + i * (int64_t)es, start + (double)i * step);
}

void kk_linspace(const kk_view *out, double start, double stop) {
  int64_t n = kk_numel(out);
  size_t es = kiln_dtype_size(out->dtype);
  double step = n > 1 ? (stop - start) / (double)(n - 1) : 0;
  for (int64_t i = 0; i < n; i++) {
    /* The last point is stop exactly, as numpy guarantees. */
    double v = i == n - 1 && n > 1 ? stop : start + (double)i * step;
    kk_set_f64(out->dtype, out->data + i * (int64_t)es, v);
  }
}

void kk_eye(const kk_view *out) {
  kk_fill(out, 0);
  int64_t rows = out->shape[0], cols = out->shape[1];
  size_t es = kiln_dtype_size(out->dtype);
  for (int64_t i = 0; i < rows && i < cols; i++) kk_set_f64(out->dtype, out->data + (i * cols + i) * (int64_t)es, 1);
}

void kk_random(const kk_view *out, kk_random_kind kind, uint64_t seed, uint64_t offset, double a, double b) {
  int64_t n = kk_numel(out);
  size_t es = kiln_dtype_size(out->dtype);
  for (int64_t i = 0; i < n; i++) {
    uint32_t r[4];
    kk_philox4x32(seed, offset + (uint64_t)i, r);
    double v;
    switch (kind) {
    case KK_RANDOM_UNIFORM: v = a + (b - a) * kk_u01_53(r[0], r[1]); break;
    case KK_RANDOM_NORMAL: {
      /* Box-Muller; 1 - u keeps the logarithm's argument in (0, 1]. */
      double u1 = 1.0 - kk_u01_53(r[0], r[1]), u2 = kk_u01_53(r[2], r[3]);
      v = a + b * sqrt(-2.0 * log(u1)) * cos(6.283185307179586476925 * u2);
      break;
    }
    default: v = kk_u01_53(r[0], r[1]) < a ? 1.0 : 0.0; break;
    }
    if (kind == KK_RANDOM_UNIFORM && out->dtype == KILN_F32 && (float)v >= (float)b && b > a)
      v = nextafterf((float)b, (float)a); /* rounding to float must not reach the open bound */
    kk_set_f64(out->dtype, out->data + i * (int64_t)es, v);
  }
}

void kk_fill_ref(const kk_view *out, double value) {
  int64_t n = kk_numel(out);
  for (int64_t i = 0; i < n; i++) kk_set_f64(out->dtype, kk_element(out, i), value);
}

void kk_arange_ref(const kk_view *out, double start, double step) {
  int64_t n = kk_numel(out);
  for (int64_t i = 0; i < n; i++) kk_set_f64(out->dtype, kk_element(out, i), (double)(start + (long double)i * step));
}

void kk_linspace_ref(const kk_view *out, double start, double stop) {
  int64_t n = kk_numel(out);
  for (int64_t i = 0; i < n; i++) {
    long double t = n > 1 ? (long double)i / (long double)(n - 1) : 0;
    kk_set_f64(out->dtype, kk_element(out, i), (double)(start + (stop - (long double)start) * t));
  }
}

void kk_eye_ref(const kk_view *out) {
  int64_t n = kk_numel(out), cols = out->shape[1];
  for (int64_t i = 0; i < n; i++) kk_set_f64(out->dtype, kk_element(out, i), i / cols == i % cols ? 1 : 0);
}
