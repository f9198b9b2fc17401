/* Intra-op parallelism: a loop split across a small pool of threads, the
 * caller working too. 2/8 puts this pool under the engine's thread budget;
 * until then it is the one place kiln starts threads of its own. */
#ifndef KILN_PARALLEL_H
#define KILN_PARALLEL_H

#include <stdint.h>

/* fn runs on [begin, end) as participant `worker` (0 <= worker <
 * kiln_parallel_workers()), so per-worker scratch can be indexed by it. */
typedef void (*kiln_parallel_fn)(void *ctx, int64_t begin, int64_t end, int worker);

/* Participants a parallel loop uses: what kiln_parallel_set_threads asked
 * for, else KILN_NUM_THREADS if set (>= 1), else the number of online CPUs. */
int kiln_parallel_workers(void);
/* Sets the participants (the calling thread plus helpers) before the pool
 * starts; the default engine gives it the thread budget its workers leave.
 * No effect once the pool has started. Not thread-safe: call it first. */
void kiln_parallel_set_threads(int participants);

/* Runs fn over [0, n) in contiguous chunks, one per participant, when n is
 * at least 2 * grain; otherwise, or nested inside another loop, runs
 * fn(ctx, 0, n, 0) in the caller. While another thread's loop has the pool,
 * the caller runs the same chunks itself, in order, with their worker
 * numbers. Chunk boundaries depend only on n and the worker count, so a
 * kernel gives the same bits however it is scheduled, also one that keeps
 * partials per worker and combines them in worker order. Returns when every
 * chunk is done. */
void kiln_parallel_for(int64_t n, int64_t grain, kiln_parallel_fn fn, void *ctx);

#endif
