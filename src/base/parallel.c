/* The pool behind kiln_parallel_for. Lock order: `busy` (held by the one
 * caller running a parallel loop) before `lock` (the job hand-off).
 *
 * Workers spin for a short while after each loop before sleeping on a
 * condition variable, as OpenMP runtimes do. Measured here (bench_conv,
 * LeNet conv2 at batch 256): sleeping at once made a single call take 2.0 ms
 * against 1.2 ms back to back, because a virtual CPU that has gone idle takes
 * most of a millisecond to come back. Eager code issues ops back to back, so
 * a worker that waits SPIN_NS before sleeping is usually still awake for the
 * next loop; an idle process stops spinning after that. */
#include "base/parallel.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

enum { MAX_WORKERS = 64 };
#define SPIN_NS 200000 /* 0.2 ms */

static struct {
  pthread_once_t once;
  int workers; /* participants, the caller included */
  pthread_mutex_t busy;
  pthread_mutex_t lock;
  pthread_cond_t wake, done;
  _Atomic uint64_t generation; /* bumped for each loop, under lock */
  atomic_int pending;          /* background chunks not yet finished */
  kiln_parallel_fn fn;
  void *ctx;
  int64_t n;
} pool = {.once = PTHREAD_ONCE_INIT,
          .busy = PTHREAD_MUTEX_INITIALIZER,
          .lock = PTHREAD_MUTEX_INITIALIZER,
          .wake = PTHREAD_COND_INITIALIZER,
          .done = PTHREAD_COND_INITIALIZER};

static _Thread_local bool inside_loop;

static int64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static inline void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#endif
}

/* Spins until pred(arg) holds or SPIN_NS pass; true when it held. */
static bool spin_until(bool (*pred)(uint64_t), uint64_t arg) {
  int64_t start = now_ns();
  for (int i = 1;; i++) {
    if (pred(arg)) return true;
    cpu_relax();
    if (i % 64 == 0) {
      if (now_ns() - start > SPIN_NS) return false;
      sched_yield(); /* a thread we wait for may share this core */
    }
  }
}

static bool new_generation(uint64_t seen) { return atomic_load_explicit(&pool.generation, memory_order_acquire) != seen; }
static bool all_done(uint64_t unused) {
  (void)unused;
  return atomic_load_explicit(&pool.pending, memory_order_acquire) == 0;
}

/* Chunk w of n split into `workers` near-equal parts, without overflow. */
static void chunk(int64_t n, int workers, int w, int64_t *begin, int64_t *end) {
  int64_t base = n / workers, extra = n % workers;
  *begin = base * w + (w < extra ? w : extra);
  *end = *begin + base + (w < extra ? 1 : 0);
}

static void *worker_main(void *arg) {
  int w = (int)(intptr_t)arg;
  uint64_t seen = 0;
  inside_loop = true; /* a kernel on a pool thread never nests a loop */
  for (;;) {
    spin_until(new_generation, seen);
    pthread_mutex_lock(&pool.lock);
    while (pool.generation == seen) pthread_cond_wait(&pool.wake, &pool.lock);
    seen = pool.generation;
    kiln_parallel_fn fn = pool.fn;
    void *ctx = pool.ctx;
    int64_t n = pool.n, begin, end;
    int workers = pool.workers;
    pthread_mutex_unlock(&pool.lock);
    chunk(n, workers, w, &begin, &end);
    if (begin < end) fn(ctx, begin, end, w);
    pthread_mutex_lock(&pool.lock);
    if (atomic_fetch_sub(&pool.pending, 1) == 1) pthread_cond_signal(&pool.done);
    pthread_mutex_unlock(&pool.lock);
  }
  return NULL;
}

static int configured; /* participants asked for by kiln_parallel_set_threads, or 0 */

void kiln_parallel_set_threads(int participants) {
  if (participants >= 1) configured = participants;
}

static void pool_start(void) {
  long cpus = sysconf(_SC_NPROCESSORS_ONLN);
  int workers = cpus > 0 ? (int)cpus : 1;
  const char *env = getenv("KILN_NUM_THREADS");
  if (env && atoi(env) >= 1) workers = atoi(env);
  if (configured) workers = configured;
  if (workers > MAX_WORKERS) workers = MAX_WORKERS;
  pool.workers = 1;
  for (int w = 1; w < workers; w++) {
    pthread_t t;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    int rc = pthread_create(&t, &attr, worker_main, (void *)(intptr_t)w);
    pthread_attr_destroy(&attr);
    if (rc != 0) break; /* fewer threads is still correct */
    pool.workers = w + 1;
  }
}

int kiln_parallel_workers(void) {
  pthread_once(&pool.once, pool_start);
  return pool.workers;
}

void kiln_parallel_for(int64_t n, int64_t grain, kiln_parallel_fn fn, void *ctx) {
  if (n <= 0) return;
  int workers = kiln_parallel_workers();
  if (workers == 1 || n < 2 * (grain > 0 ? grain : 1) || inside_loop) {
    fn(ctx, 0, n, 0);
    return;
  }
  int64_t begin, end;
  if (pthread_mutex_trylock(&pool.busy) != 0) {
    /* Another thread's loop has the pool (another device's worker): run
     * the same chunks here, in order. A kernel that keeps partials per
     * worker (conv2d's weight gradient) then gives the bits it gives with
     * the pool, where one call over [0, n) summed in another order and made
     * data-parallel replicas drift apart. */
    inside_loop = true;
    for (int w = 0; w < workers; w++) {
      chunk(n, workers, w, &begin, &end);
      if (begin < end) fn(ctx, begin, end, w);
    }
    inside_loop = false;
    return;
  }
  pthread_mutex_lock(&pool.lock);
  pool.fn = fn;
  pool.ctx = ctx;
  pool.n = n;
  atomic_store(&pool.pending, workers - 1);
  atomic_fetch_add_explicit(&pool.generation, 1, memory_order_release);
  pthread_cond_broadcast(&pool.wake);
  pthread_mutex_unlock(&pool.lock);

  chunk(n, workers, 0, &begin, &end);
  inside_loop = true;
  if (begin < end) fn(ctx, begin, end, 0);
  inside_loop = false;

  if (!spin_until(all_done, 0)) {
    pthread_mutex_lock(&pool.lock);
    while (atomic_load(&pool.pending) > 0) pthread_cond_wait(&pool.done, &pool.lock);
    pthread_mutex_unlock(&pool.lock);
  }
  pthread_mutex_unlock(&pool.busy);
}
