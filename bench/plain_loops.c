/* The peer loops: what a user writes by hand, built -O3 -march=native. */
#include <stdint.h>

void plain_add(int64_t n, const float *a, const float *b, float *out);
void plain_mul(int64_t n, const float *a, const float *b, float *out);
void plain_relu(int64_t n, const float *a, float *out);

void plain_add(int64_t n, const float *a, const float *b, float *out) {
  for (int64_t i = 0; i < n; i++) out[i] = a[i] + b[i];
}
void plain_mul(int64_t n, const float *a, const float *b, float *out) {
  for (int64_t i = 0; i < n; i++) out[i] = a[i] * b[i];
}
void plain_relu(int64_t n, const float *a, float *out) {
  for (int64_t i = 0; i < n; i++) out[i] = a[i] > 0 ? a[i] : 0;
}
