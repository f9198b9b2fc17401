/* Philox-4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2,
 * 3", SC 2011): a counter-based generator. The output for (key, counter)
 * depends on nothing else, so any thread can compute any element. */
#ifndef KILN_KERNELS_RANDOM_H
#define KILN_KERNELS_RANDOM_H

#include <stdint.h>

void kk_philox4x32(uint64_t key, uint64_t counter, uint32_t out[4]);
/* A uniform float in [0, 1) from 24 random bits. */
static inline double kk_u01(uint32_t bits) { return (double)(bits >> 8) * (1.0 / 16777216.0); }
/* A uniform double in [0, 1) from 53 random bits. */
static inline double kk_u01_53(uint32_t hi, uint32_t lo) {
  return (double)(((uint64_t)hi << 21) ^ (lo >> 11)) * (1.0 / 9007199254740992.0);
}

#endif
