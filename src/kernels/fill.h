/* Kernels that fill an output from attributes alone: constants, ranges, the
 * identity and random draws. */
#ifndef KILN_KERNELS_FILL_H
#define KILN_KERNELS_FILL_H

#include "kernels/view.h"

void kk_fill(const kk_view *out, double value);
/* out[i] = start + i * step */
void kk_arange(const kk_view *out, double start, double step);
void kk_linspace(const kk_view *out, double start, double stop);
void kk_eye(const kk_view *out);

/* The references: one element at a time through kk_element, in long
 * double where it matters. */
void kk_fill_ref(const kk_view *out, double value);
void kk_arange_ref(const kk_view *out, double start, double step);
void kk_linspace_ref(const kk_view *out, double start, double stop);
void kk_eye_ref(const kk_view *out);

typedef enum { KK_RANDOM_UNIFORM, KK_RANDOM_NORMAL, KK_RANDOM_BERNOULLI } kk_random_kind;
/* Element i uses Philox block (offset + i) under key seed: uniform in
 * [a, b), normal with mean a and deviation b, or bernoulli with p = a. */
void kk_random(const kk_view *out, kk_random_kind kind, uint64_t seed, uint64_t offset, double a, double b);

#endif
