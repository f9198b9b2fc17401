/* What a kernel sees of a tensor: a pointer to element [0, ..., 0], a dtype,
 * a shape and strides in elements (any sign, 0 for broadcast dims). Kernels
 * know nothing of storage lifetime, engines or graphs. */
#ifndef KILN_KERNELS_VIEW_H
#define KILN_KERNELS_VIEW_H

#include <stdbool.h>
#include <stdint.h>

#include "kiln.h"

/* Hot loops are compiled twice, for the x86-64 baseline and for x86-64-v3
 * (AVX2, FMA), and the loader picks one for the CPU it runs on: kiln stays
 * portable without leaving half the vector width unused. */
#if defined(__x86_64__) && !defined(KILN_NO_MULTIVERSION)
#define KK_MULTIVERSION __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define KK_MULTIVERSION
#endif

typedef struct {
  char *data;
  kiln_dtype dtype;
  int ndim;
  int64_t shape[KILN_MAX_DIMS];
  int64_t strides[KILN_MAX_DIMS];
} kk_view;

/* Per-thread switches of kernel paths, so tests can cover every road.
 * Dispatch captures the calling thread's options with each op and the
 * thread that runs the op applies them, so they follow ops onto engine
 * workers. */
enum { KK_OPT_NO_SIMD = 1u << 0 }; /* skip the hand-written AVX2 paths: direct conv2d, pooling, batch-1 GEMM */
unsigned kk_options(void);
unsigned kk_set_options(unsigned options); /* returns the previous options */

int64_t kk_numel(const kk_view *v);
bool kk_is_contiguous(const kk_view *v);
/* The address of the element at a flat row-major index (slow; for reference
 * kernels and tests). */
char *kk_element(const kk_view *v, int64_t flat);

/* Reads the element at p as double / int64 whatever its dtype; writes likewise. */
double kk_get_f64(kiln_dtype dt, const char *p);
int64_t kk_get_i64(kiln_dtype dt, const char *p);
void kk_set_f64(kiln_dtype dt, char *p, double x);
void kk_set_i64(kiln_dtype dt, char *p, int64_t x);
static inline bool kk_is_float(kiln_dtype dt) { return dt == KILN_F32 || dt == KILN_F64; }

#endif
