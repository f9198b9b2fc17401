/* Generators for the random ops. A generator is a seed and a counter; each
 * random op reserves a block of counters when it is called (not when its
 * kernel runs), so the numbers an op gets depend only on the generator's
 * history of calls, never on threads or scheduling. */
#include "tensor/tensor.h"

struct kiln_generator {
  uint64_t seed;
  _Atomic uint64_t counter;
};

static _Thread_local struct kiln_generator thread_default;

kiln_generator *kiln_generator_new(uint64_t seed) {
  kiln_generator *g = kiln_alloc(sizeof *g);
  if (!g) {
    kiln_errorf(KILN_ERR_OUT_OF_MEMORY, "kiln_generator_new: out of memory");
    return NULL;
  }
  g->seed = seed;
  atomic_init(&g->counter, 0);
  return g;
}

void kiln_generator_free(kiln_generator *g) { kiln_free(g); }

void kiln_seed(uint64_t seed) {
  thread_default.seed = seed;
  atomic_store(&thread_default.counter, 0);
}

uint64_t generator_seed(kiln_generator *g) { return (g ? g : &thread_default)->seed; }

uint64_t generator_reserve(kiln_generator *g, uint64_t blocks) {
  return atomic_fetch_add(&(g ? g : &thread_default)->counter, blocks);
}
