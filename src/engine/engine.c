/* The dependency engine: MXNet's threaded engine in C.
 *
 * Every variable keeps a FIFO of the dependencies (op, read or write) not yet
 * granted, a count of granted reads in flight and whether a granted write is
 * in flight. A read is granted when no write is in flight or queued before
 * it; a write when nothing is in flight or queued before it. An op becomes
 * ready when all its dependencies are granted, and ready ops go to a queue
 * that the workers drain. When an op completes, its reads and writes are
 * released, which grants the next dependencies in each FIFO.
 *
 * One mutex guards the engine (variables, queues, pools, error records). It
 * is held only to move dependencies and ops between lists, never while user
 * work runs, so a pushed function may itself push (a release that deletes a
 * variable does). Ops, dependencies and variables come from free lists that
 * are never shrunk while the engine lives: no allocation per push at steady
 * state. Those pools use malloc directly rather than kiln's allocation hook:
 * they are bounded by the peak of work in flight and never shrink while the
 * engine lives, so through the hook they would make a counting allocator's
 * totals depend on scheduling.
 *
 * Failures: an op that fails creates an error record (status and "op: message")
 * and points the variables it writes at it; an op that reads a failed
 * variable is skipped and points its writes at the same record. A record is
 * reported once: by the first wait_var that finds it or, if none does, by
 * the next wait_all. */
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* Engine bookkeeping bypasses the allocation hook (see the top). */
#define pool_alloc(size) malloc(size)
#define pool_free(ptr) free(ptr)

#include "base/parallel.h"
#include "engine/engine.h"
#include "engine/profiler.h"

typedef struct engine_op engine_op;

typedef struct err_record {
  int refs;
  kiln_status status;
  bool reported;
  struct err_record *next_unreported;
  char msg[KILN_ERROR_MAX];
} err_record;

typedef struct dep {
  engine_op *op;
  struct dep *next;
  bool write;
} dep;

struct kiln_engine_var {
  dep *head, *tail; /* dependencies not yet granted, in push order */
  int running_reads;
  bool running_write;
  bool deleting;
  int queue; /* of its device: where waits and deletes on it are run */
  err_record *failure;
  kiln_engine_var *prev, *next; /* all live variables, or the free list (next) */
};

enum { INLINE_DEPS = 8 };

struct engine_op {
  kiln_engine_fn fn;
  void (*done)(void *);
  void *data;
  const char *name;
  int priority;
  int n_reads, n_writes; /* vars[0..n_reads) are read, the rest written */
  int n_read_writes;     /* the first of the writes are also read */
  kiln_engine_var **vars;
  dep *deps;
  kiln_engine_var *inline_vars[INLINE_DEPS];
  dep inline_deps[INLINE_DEPS];
  int capacity; /* of vars and deps */
  int wait;     /* dependencies not yet granted */
  kiln_engine_var *deletes; /* a delete op: the variable it frees */
  int64_t push_ns;
  kiln_profiler *profiler; /* taken when the op leaves the ready queue */
  int queue;               /* the ready queue (device) whose workers run it */
  engine_op *next; /* ready queue or free list */
};

/* One ready queue per device (engine_add_queue), each drained by workers of
 * its own: dependencies are tracked across devices by the one engine, so a
 * copy from one device to another is an ordinary op that reads a variable
 * of the first and writes one of the second, and the devices' work runs in
 * parallel (MXNet's ThreadedEnginePerDevice). */
typedef struct {
  engine_op *head, *tail; /* priority > 0 ops go to the front */
  atomic_int count;       /* its length, for workers spinning unlocked */
  int idle_workers;
  pthread_cond_t work_cv;
} ready_queue;

enum { MAX_QUEUES = 64 };

struct kiln_engine {
  kiln_engine_mode mode;
  pthread_mutex_t lock;
  pthread_cond_t done_cv;
  pthread_cond_t room_cv; /* pending fell back to MAX_AHEAD / 2 */
  int throttled;          /* pushers waiting for room */
  ready_queue queues[MAX_QUEUES];
  int n_queues;
  atomic_bool stopping; /* shutting down: stop spinning */
  int n_workers, workers_capacity;
  int waiters; /* threads in wait_var or wait_all */
  atomic_llong pending; /* pushed, not yet completed; changed under lock, read by spinning waiters */
  bool shutdown;
  pthread_t *threads;
  engine_op *free_ops;
  kiln_engine_var *free_vars, *live_vars;
  err_record *unreported_head, *unreported_tail;
  kiln_profiler *profiler; /* the recording one, or NULL; read and set under lock */
  kiln_profiler *retired;  /* stopped ones: in-flight ops may still record into them */
};

/* ------------------------------------------------------------ time */

/* How long an idle worker spins before sleeping, and a waiter. A waiter
 * spins less: it spins on a core that a long op's kernel threads want (a
 * 0.2 ms spin made a 6 ms op 3% slower than in naive mode), while the
 * waits it should catch, after small ops, last a few microseconds. */
#define SPIN_NS 200000
#define WAITER_SPIN_NS 20000

/* Back-pressure: a thread that pushes while MAX_AHEAD ops are pending
 * waits until half of them are done. Without it a training loop, which
 * waits once per epoch, ran the whole epoch ahead of the workers and held
 * every batch's tensors at once (the MLP example: no storage freed during
 * an epoch, a page fault per page of every output, RSS growing with the
 * epoch count). 256 ops are a few batches of a model: enough to keep the
 * workers fed. Engine workers never wait (they are what makes room). */
enum { MAX_AHEAD = 256 };

static _Thread_local const kiln_engine *worker_of; /* the engine whose worker this thread is */

static inline void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#endif
}

static int64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* ------------------------------------------------------------ error records (lock held) */

static void record_release(err_record *r) {
  if (r && --r->refs == 0) pool_free(r);
}

static void record_unlink(kiln_engine *e, err_record *r) {
  err_record **p = &e->unreported_head, *prev = NULL;
  while (*p && *p != r) prev = *p, p = &(*p)->next_unreported;
  if (!*p) return;
  *p = r->next_unreported;
  if (e->unreported_tail == r) e->unreported_tail = prev;
  r->next_unreported = NULL;
}

static void mark_reported(kiln_engine *e, err_record *r) {
  if (r->reported) return;
  r->reported = true;
  record_unlink(e, r);
  record_release(r); /* the unreported list's reference */
}

static void set_failure(kiln_engine_var *v, err_record *r) {
  if (r) r->refs++;
  record_release(v->failure);
  v->failure = r;
}

/* ------------------------------------------------------------ dependency bookkeeping (lock held) */

/* The ready queue is ordered by priority, highest first, and in push order
 * among equals. Most ops share one priority, so the tail is checked first. */
static void make_ready(kiln_engine *e, engine_op *op) {
  ready_queue *q = &e->queues[op->queue];
  op->next = NULL;
  atomic_fetch_add_explicit(&q->count, 1, memory_order_relaxed);
  if (!q->tail) {
    q->head = q->tail = op;
  } else if (q->tail->priority >= op->priority) {
    q->tail->next = op;
    q->tail = op;
  } else if (q->head->priority < op->priority) {
    op->next = q->head;
    q->head = op;
  } else {
    engine_op *at = q->head;
    while (at->next->priority >= op->priority) at = at->next;
    op->next = at->next;
    at->next = op;
  }
  if (q->idle_workers > 0) pthread_cond_signal(&q->work_cv);
}

static void grant(kiln_engine *e, engine_op *op) {
  if (--op->wait == 0) make_ready(e, op);
}

static void enqueue(kiln_engine_var *v, dep *d) {
  d->next = NULL;
  if (v->tail) v->tail->next = d;
  else v->head = d;
  v->tail = d;
}

static dep *dequeue(kiln_engine_var *v) {
  dep *d = v->head;
  v->head = d->next;
  if (!v->head) v->tail = NULL;
  return d;
}

static void append_read(kiln_engine *e, kiln_engine_var *v, dep *d) {
  if (!v->running_write && !v->head) {
    v->running_reads++;
    grant(e, d->op);
  } else {
    enqueue(v, d);
  }
}

static void append_write(kiln_engine *e, kiln_engine_var *v, dep *d) {
  if (!v->running_write && v->running_reads == 0 && !v->head) {
    v->running_write = true;
    grant(e, d->op);
  } else {
    enqueue(v, d);
  }
}

/* Grants what the head of v's queue allows now. */
static void advance(kiln_engine *e, kiln_engine_var *v) {
  if (v->running_write) return;
  while (v->head && !v->head->write) {
    v->running_reads++;
    grant(e, dequeue(v)->op);
  }
  if (v->head && v->running_reads == 0) {
    v->running_write = true;
    grant(e, dequeue(v)->op);
  }
}

/* ------------------------------------------------------------ pools (lock held) */

static engine_op *op_alloc(kiln_engine *e, int n_vars) {
  engine_op *op = e->free_ops;
  if (op && op->capacity >= n_vars) {
    e->free_ops = op->next;
  } else {
    op = pool_alloc(sizeof *op);
    if (!op) return NULL;
    op->capacity = INLINE_DEPS;
    op->vars = op->inline_vars;
    op->deps = op->inline_deps;
    if (n_vars > INLINE_DEPS) {
      op->vars = pool_alloc(sizeof(kiln_engine_var *) * (size_t)n_vars);
      op->deps = pool_alloc(sizeof(dep) * (size_t)n_vars);
      if (!op->vars || !op->deps) {
        if (op->vars != op->inline_vars) pool_free(op->vars);
        if (op->deps != op->inline_deps) pool_free(op->deps);
        pool_free(op);
        return NULL;
      }
      op->capacity = n_vars;
    }
  }
  return op;
}

static void op_free(kiln_engine *e, engine_op *op) {
  if (op->capacity > INLINE_DEPS) {
    /* Large ops are rare: return their arrays rather than pool them. */
    pool_free(op->vars);
    pool_free(op->deps);
    pool_free(op);
    return;
  }
  op->next = e->free_ops;
  e->free_ops = op;
}

/* ------------------------------------------------------------ running */

/* Runs op's function, or skips it when a variable it reads failed; then, under
 * the lock, points its writes at the outcome and releases its dependencies. */
static void run_op(kiln_engine *e, engine_op *op, int worker) {
  err_record *outcome = NULL;
  /* The read variables' failures cannot change while this op holds them. */
  for (int i = 0; i < op->n_reads + op->n_read_writes && !outcome; i++) outcome = op->vars[i]->failure;
  bool created = false;
  int64_t start = op->profiler ? now_ns() : 0;
  if (!outcome && op->fn) {
    kiln_error_clear();
    kiln_status st = op->fn(op->data);
    if (st != KILN_OK) {
      outcome = pool_alloc(sizeof *outcome);
      if (outcome) {
        outcome->refs = 1; /* the unreported list's */
        outcome->status = st;
        outcome->reported = false;
        outcome->next_unreported = NULL;
        /* "op: message", unless the message names the op already (the
         * kernels' messages do). */
        const char *m = kiln_last_error()[0] ? kiln_last_error() : kiln_status_str(st);
        size_t n = strlen(op->name);
        if (strncmp(m, op->name, n) == 0 && m[n] == ':')
          snprintf(outcome->msg, sizeof outcome->msg, "%s", m);
        else
          snprintf(outcome->msg, sizeof outcome->msg, "%s: %s", op->name, m);
        created = true;
      }
    }
  }
  /* Waits and deletes (no function) are bookkeeping, not work to show. */
  if (op->profiler && op->fn) engine_profile_record(op->profiler, op->name, worker, op->push_ns, start, now_ns());
  if (op->deletes && op->done) op->done(op->data);

  pthread_mutex_lock(&e->lock);
  if (created) {
    if (e->unreported_tail) e->unreported_tail->next_unreported = outcome;
    else e->unreported_head = outcome;
    e->unreported_tail = outcome;
  }
  for (int i = 0; i < op->n_reads; i++) {
    kiln_engine_var *v = op->vars[i];
    v->running_reads--;
    advance(e, v);
  }
  for (int i = op->n_reads; i < op->n_reads + op->n_writes; i++) {
    kiln_engine_var *v = op->vars[i];
    set_failure(v, outcome);
    v->running_write = false;
    if (v == op->deletes) {
      /* Nothing can be queued behind a delete: give the variable back. */
      set_failure(v, NULL);
      if (v->prev) v->prev->next = v->next;
      else e->live_vars = v->next;
      if (v->next) v->next->prev = v->prev;
      v->next = e->free_vars;
      e->free_vars = v;
      continue;
    }
    advance(e, v);
  }
  pthread_mutex_unlock(&e->lock);

  /* done may push (a release that deletes a variable does), so it runs
   * unlocked; the op counts as pending until it has returned. */
  if (!op->deletes && op->done) op->done(op->data);
}

/* The end of an op, under the lock the caller takes anyway to find its
 * next one. */
static void retire_op(kiln_engine *e, engine_op *op) {
  op_free(e, op);
  long long left = atomic_fetch_sub_explicit(&e->pending, 1, memory_order_release) - 1;
  if (e->waiters > 0) pthread_cond_broadcast(&e->done_cv);
  if (e->throttled > 0 && left <= MAX_AHEAD / 2) pthread_cond_broadcast(&e->room_cv);
}

static engine_op *pop_ready(kiln_engine *e, ready_queue *q) {
  engine_op *op = q->head;
  q->head = op->next;
  if (!q->head) q->tail = NULL;
  atomic_fetch_sub_explicit(&q->count, 1, memory_order_relaxed);
  op->profiler = e->profiler;
  return op;
}

/* A queue with ready work, or NULL. Lock held. */
static ready_queue *any_ready(kiln_engine *e) {
  for (int i = 0; i < e->n_queues; i++)
    if (e->queues[i].head) return &e->queues[i];
  return NULL;
}

/* Naive mode, and any thread that finds ready work while it waits in naive
 * mode: run what is ready, in the calling thread. */
static void drain_inline(kiln_engine *e) {
  pthread_mutex_lock(&e->lock);
  for (ready_queue *q; (q = any_ready(e));) {
    engine_op *op = pop_ready(e, q);
    pthread_mutex_unlock(&e->lock);
    run_op(e, op, 0);
    pthread_mutex_lock(&e->lock);
    retire_op(e, op);
  }
  pthread_mutex_unlock(&e->lock);
}

typedef struct {
  kiln_engine *engine;
  int index, queue;
} worker_arg;

static void *worker_main(void *arg) {
  kiln_engine *e = ((worker_arg *)arg)->engine;
  int index = ((worker_arg *)arg)->index;
  ready_queue *q = &e->queues[((worker_arg *)arg)->queue];
  pool_free(arg);
  engine_op *finished = NULL;
  worker_of = e;
  pthread_mutex_lock(&e->lock);
  for (;;) {
    if (finished) retire_op(e, finished);
    finished = NULL;
    if (!q->head && !e->shutdown) {
      /* Spin a while before sleeping: eager code pushes ops back to back,
       * and waking a sleeping worker costs microseconds of system calls
       * per op (measured: a small op took 2 us through a sleeping worker). */
      pthread_mutex_unlock(&e->lock);
      int64_t start = now_ns();
      for (int i = 1; atomic_load_explicit(&q->count, memory_order_relaxed) == 0; i++) {
        if (i % 64 == 0) {
          if (now_ns() - start > SPIN_NS || atomic_load_explicit(&e->stopping, memory_order_relaxed)) break;
          /* When the pushing thread shares this core (another process
           * holds the other), a pure spin holds it off until the scheduler
           * preempts us: a 35 us MLP call took 0.9 ms. Yielding costs
           * nothing when no one else is runnable here. */
          sched_yield();
        }
        cpu_relax();
      }
      pthread_mutex_lock(&e->lock);
    }
    while (!q->head && !e->shutdown) {
      q->idle_workers++;
      pthread_cond_wait(&q->work_cv, &e->lock);
      q->idle_workers--;
    }
    if (!q->head) break; /* shut down, and nothing left */
    engine_op *op = pop_ready(e, q);
    pthread_mutex_unlock(&e->lock);
    run_op(e, op, index + 1);
    finished = op;
    pthread_mutex_lock(&e->lock);
  }
  pthread_mutex_unlock(&e->lock);
  return NULL;
}

/* ------------------------------------------------------------ public API */

static int cpu_count(void) {
  long n = sysconf(_SC_NPROCESSORS_ONLN);
  return n > 0 ? (int)n : 1;
}

static int env_int(const char *name, int fallback) {
  const char *v = getenv(name);
  if (!v || !*v) return fallback;
  char *end;
  long x = strtol(v, &end, 10);
  return *end == '\0' && x > 0 && x <= 1024 ? (int)x : fallback;
}

kiln_engine_params kiln_engine_params_default(void) {
  kiln_engine_params p = {KILN_ENGINE_THREADED, 0, 0};
  const char *mode = getenv("KILN_ENGINE");
  if (mode && strcmp(mode, "naive") == 0) p.mode = KILN_ENGINE_NAIVE;
  p.threads = env_int("KILN_NUM_THREADS", 0);
  p.workers = env_int("KILN_ENGINE_WORKERS", 0);
  return p;
}

/* The default split of the thread budget between engine workers and
 * intra-op helpers (measured: see docs/performance.md). */
static int default_workers(int threads) { return threads >= 4 ? 2 : 1; }

kiln_engine *kiln_engine_new(const kiln_engine_params *params) {
  kiln_engine_params p = params ? *params : kiln_engine_params_default();
  if (p.mode != KILN_ENGINE_THREADED && p.mode != KILN_ENGINE_NAIVE) {
    kiln_errorf(KILN_ERR_INVALID_ARGUMENT, "kiln_engine_new: mode %d is not a kiln_engine_mode", (int)p.mode);
    return NULL;
  }
  if (p.workers < 0 || p.threads < 0 || p.workers > 1024 || p.threads > 1024) {
    kiln_errorf(KILN_ERR_INVALID_ARGUMENT, "kiln_engine_new: workers %d and threads %d must be in [0, 1024]", p.workers,
                p.threads);
    return NULL;
  }
  int threads = p.threads ? p.threads : cpu_count();
  int workers = p.mode == KILN_ENGINE_NAIVE ? 0 : p.workers ? p.workers : default_workers(threads);
  kiln_engine *e = calloc(1, sizeof *e);
  if (!e) {
    kiln_errorf(KILN_ERR_OUT_OF_MEMORY, "kiln_engine_new: out of memory");
    return NULL;
  }
  e->mode = p.mode;
  pthread_mutex_init(&e->lock, NULL);
  pthread_cond_init(&e->done_cv, NULL);
  pthread_cond_init(&e->room_cv, NULL);
  if (engine_add_queue(e, workers) < 0) {
    kiln_engine_free(e);
    return NULL;
  }
  return e;
}

int engine_add_queue(kiln_engine *e, int workers) {
  pthread_mutex_lock(&e->lock);
  if (e->n_queues == MAX_QUEUES) {
    pthread_mutex_unlock(&e->lock);
    kiln_errorf(KILN_ERR_INVALID_ARGUMENT, "engine: at most %d devices", MAX_QUEUES);
    return -1;
  }
  int queue = e->n_queues;
  ready_queue *q = &e->queues[queue];
  pthread_cond_init(&q->work_cv, NULL);
  e->n_queues++;
  if (e->mode == KILN_ENGINE_NAIVE) workers = 0;
  if (e->n_workers + workers > e->workers_capacity) {
    int cap = e->n_workers + workers + 4;
    pthread_t *threads = realloc(e->threads, sizeof(pthread_t) * (size_t)cap);
    if (!threads) {
      pthread_mutex_unlock(&e->lock);
      kiln_errorf(KILN_ERR_OUT_OF_MEMORY, "engine: out of memory starting %d workers", workers);
      return -1;
    }
    e->threads = threads;
    e->workers_capacity = cap;
  }
  for (int i = 0; i < workers; i++) {
    int index = e->n_workers;
    worker_arg *arg = pool_alloc(sizeof *arg);
    if (!arg || pthread_create(&e->threads[index], NULL, worker_main,
                               arg ? (*arg = (worker_arg){e, index, queue}, arg) : NULL) != 0) {
      pool_free(arg);
      pthread_mutex_unlock(&e->lock);
      /* The queue keeps the workers that did start; with none, nothing
       * would ever run its ops, so it is not handed out. */
      kiln_errorf(KILN_ERR_INTERNAL, "engine: cannot start worker %d", index);
      return -1;
    }
    e->n_workers++;
  }
  pthread_mutex_unlock(&e->lock);
  return queue;
}

void kiln_engine_free(kiln_engine *e) {
  if (!e) return;
  kiln_engine_wait_all(e);
  pthread_mutex_lock(&e->lock);
  e->shutdown = true;
  atomic_store(&e->stopping, true);
  for (int i = 0; i < e->n_queues; i++) pthread_cond_broadcast(&e->queues[i].work_cv);
  pthread_mutex_unlock(&e->lock);
  for (int i = 0; i < e->n_workers; i++) pthread_join(e->threads[i], NULL);
  pool_free(e->threads);
  while (e->free_ops) {
    engine_op *op = e->free_ops;
    e->free_ops = op->next;
    pool_free(op);
  }
  for (kiln_engine_var *v = e->live_vars, *next; v; v = next) {
    next = v->next;
    record_release(v->failure);
    pool_free(v);
  }
  for (kiln_engine_var *v = e->free_vars, *next; v; v = next) {
    next = v->next;
    pool_free(v);
  }
  for (err_record *r = e->unreported_head, *next; r; r = next) {
    next = r->next_unreported;
    record_release(r);
  }
  engine_profiler_free(e->profiler);
  while (e->retired) {
    kiln_profiler *p = e->retired;
    e->retired = engine_profiler_next(p);
    engine_profiler_free_quietly(p);
  }
  for (int i = 0; i < e->n_queues; i++) pthread_cond_destroy(&e->queues[i].work_cv);
  pthread_cond_destroy(&e->done_cv);
  pthread_cond_destroy(&e->room_cv);
  pthread_mutex_destroy(&e->lock);
  pool_free(e);
}

bool engine_is_naive(const kiln_engine *e) { return e->mode == KILN_ENGINE_NAIVE; }

kiln_engine_var *kiln_engine_new_var(kiln_engine *e) { return engine_new_var_on(e, 0); }

kiln_engine_var *engine_new_var_on(kiln_engine *e, int queue) {
  if (!e) {
    kiln_errorf(KILN_ERR_INVALID_ARGUMENT, "kiln_engine_new_var: engine is NULL");
    return NULL;
  }
  pthread_mutex_lock(&e->lock);
  kiln_engine_var *v = e->free_vars;
  if (v) e->free_vars = v->next;
  else v = pool_alloc(sizeof *v);
  if (v) {
    memset(v, 0, sizeof *v);
    v->queue = queue;
    v->next = e->live_vars;
    if (e->live_vars) e->live_vars->prev = v;
    e->live_vars = v;
  }
  pthread_mutex_unlock(&e->lock);
  if (!v) kiln_errorf(KILN_ERR_OUT_OF_MEMORY, "kiln_engine_new_var: out of memory");
  return v;
}

/* Pushes op (filled but for its dependencies) on its variables. Lock held. */
static void attach(kiln_engine *e, engine_op *op) {
  op->wait = op->n_reads + op->n_writes + 1;
  atomic_fetch_add_explicit(&e->pending, 1, memory_order_relaxed);
  for (int i = 0; i < op->n_reads + op->n_writes; i++) {
    dep *d = &op->deps[i];
    d->op = op;
    d->write = i >= op->n_reads;
    if (d->write) append_write(e, op->vars[i], d);
    else append_read(e, op->vars[i], d);
  }
  grant(e, op); /* the +1 that kept the op from running while it was attached */
}

static bool listed(kiln_engine_var *const *vars, int n, const kiln_engine_var *v) {
  for (int i = 0; i < n; i++)
    if (vars[i] == v) return true;
  return false;
}

kiln_status kiln_engine_push(kiln_engine *e, kiln_engine_fn fn, void (*done)(void *data), void *data,
                             kiln_engine_var *const *reads, int n_reads, kiln_engine_var *const *writes, int n_writes,
                             const char *name, int priority) {
  return engine_push_on(e, 0, fn, done, data, reads, n_reads, writes, n_writes, name, priority);
}

kiln_status engine_push_on(kiln_engine *e, int queue, kiln_engine_fn fn, void (*done)(void *data), void *data,
                           kiln_engine_var *const *reads, int n_reads, kiln_engine_var *const *writes, int n_writes,
                           const char *name, int priority) {
  if (!e) return kiln_errorf(KILN_ERR_INVALID_ARGUMENT, "kiln_engine_push: engine is NULL");

  if (n_reads < 0 || n_writes < 0 || (n_reads && !reads) || (n_writes && !writes))
    return kiln_errorf(KILN_ERR_INVALID_ARGUMENT, "kiln_engine_push(%s): bad variable lists (%d reads, %d writes)",
                       name ? name : "?", n_reads, n_writes);
  for (int i = 0; i < n_reads; i++)
    if (!reads[i]) return kiln_errorf(KILN_ERR_INVALID_ARGUMENT, "kiln_engine_push(%s): read %d is NULL", name ? name : "?", i);
  for (int i = 0; i < n_writes; i++)
    if (!writes[i])
      return kiln_errorf(KILN_ERR_INVALID_ARGUMENT, "kiln_engine_push(%s): write %d is NULL", name ? name : "?", i);
  pthread_mutex_lock(&e->lock);
  if (queue < 0 || queue >= e->n_queues) {
    pthread_mutex_unlock(&e->lock);
    return kiln_errorf(KILN_ERR_INVALID_ARGUMENT, "kiln_engine_push(%s): no queue %d", name ? name : "?", queue);
  }
  for (int i = 0; i < n_reads + n_writes; i++) {
    kiln_engine_var *v = i < n_reads ? reads[i] : writes[i - n_reads];
    if (v->deleting) {
      pthread_mutex_unlock(&e->lock);
      return kiln_errorf(KILN_ERR_INVALID_ARGUMENT, "kiln_engine_push(%s): a variable it uses was deleted",
                         name ? name : "?");
    }
  }
  engine_op *op = op_alloc(e, n_reads + n_writes);
  if (!op) {
    pthread_mutex_unlock(&e->lock);
    return kiln_errorf(KILN_ERR_OUT_OF_MEMORY, "kiln_engine_push(%s): out of memory", name ? name : "?");
  }
  op->fn = fn;
  op->done = done;
  op->data = data;
  op->name = name ? name : "op";
  op->priority = priority;
  op->queue = queue;
  op->deletes = NULL;
  op->push_ns = e->profiler ? now_ns() : 0;
  op->profiler = NULL;
  /* A variable both read and written is written, and listed first among
   * the writes so that its failure still stops the op; a repeat counts
   * once. */
  op->n_reads = op->n_writes = op->n_read_writes = 0;
  for (int pass = 0; pass < 2; pass++)
    for (int i = 0; i < n_writes; i++) {
      bool also_read = listed(reads, n_reads, writes[i]);
      if (also_read == (pass == 0) && !listed(writes, i, writes[i])) {
        op->vars[op->n_writes++] = writes[i];
        op->n_read_writes += also_read;
      }
    }
  int nw = op->n_writes;
  kiln_engine_var *w_tmp[INLINE_DEPS];
  kiln_engine_var **wv = nw <= INLINE_DEPS ? w_tmp : NULL;
  if (!wv) {
    /* Reads go first in vars: move the writes to the end afterwards. */
    wv = pool_alloc(sizeof(kiln_engine_var *) * (size_t)nw);
    if (!wv) {
      op_free(e, op);
      pthread_mutex_unlock(&e->lock);
      return kiln_errorf(KILN_ERR_OUT_OF_MEMORY, "kiln_engine_push(%s): out of memory", op->name);
    }
  }
  memcpy(wv, op->vars, sizeof(kiln_engine_var *) * (size_t)nw);
  for (int i = 0; i < n_reads; i++)
    if (!listed(reads, i, reads[i]) && !listed(wv, nw, reads[i])) op->vars[op->n_reads++] = reads[i];
  memcpy(op->vars + op->n_reads, wv, sizeof(kiln_engine_var *) * (size_t)nw);
  if (wv != w_tmp) pool_free(wv);
  attach(e, op);
  if (e->mode == KILN_ENGINE_THREADED && worker_of != e && atomic_load(&e->pending) > MAX_AHEAD) {
    e->throttled++;
    while (atomic_load(&e->pending) > MAX_AHEAD / 2 && !e->shutdown) pthread_cond_wait(&e->room_cv, &e->lock);
    e->throttled--;
  }
  pthread_mutex_unlock(&e->lock);
  if (e->mode == KILN_ENGINE_NAIVE) drain_inline(e);
  return KILN_OK;
}

kiln_status kiln_engine_delete_var(kiln_engine *e, kiln_engine_var *v, void (*on_delete)(void *data), void *data) {
  if (!e || !v) return kiln_errorf(KILN_ERR_INVALID_ARGUMENT, "kiln_engine_delete_var: engine or variable is NULL");
  pthread_mutex_lock(&e->lock);
  if (v->deleting) {
    pthread_mutex_unlock(&e->lock);
    return kiln_errorf(KILN_ERR_INVALID_ARGUMENT, "kiln_engine_delete_var: the variable is already deleted");
  }
  engine_op *op = op_alloc(e, 1);
  if (!op) {
    pthread_mutex_unlock(&e->lock);
    return kiln_errorf(KILN_ERR_OUT_OF_MEMORY, "kiln_engine_delete_var: out of memory");
  }
  *op = (engine_op){.done = on_delete, .data = data, .name = "delete", .n_writes = 1, .deletes = v, .queue = v->queue,
                    .capacity = INLINE_DEPS, .push_ns = e->profiler ? now_ns() : 0};
  op->vars = op->inline_vars;
  op->deps = op->inline_deps;
  op->vars[0] = v;
  v->deleting = true;
  attach(e, op);
  pthread_mutex_unlock(&e->lock);
  if (e->mode == KILN_ENGINE_NAIVE) drain_inline(e);
  return KILN_OK;
}

typedef struct {
  kiln_engine *engine;
  atomic_bool done;
} wait_flag;

static void signal_waiter(void *data) {
  wait_flag *w = data;
  pthread_mutex_lock(&w->engine->lock);
  atomic_store_explicit(&w->done, true, memory_order_release);
  if (w->engine->waiters > 0) pthread_cond_broadcast(&w->engine->done_cv);
  pthread_mutex_unlock(&w->engine->lock);
}

/* Waiters spin like workers before sleeping: a wait that follows a small
 * op is over in microseconds, and sleeping on the condition variable cost
 * 16-20 us per wait here (two futex hand-offs on a virtual machine). Called
 * with the lock held; returns with it held. */
static bool spin_for(kiln_engine *e, bool (*ready)(void *), void *arg) {
  pthread_mutex_unlock(&e->lock);
  int64_t start = now_ns();
  bool ok = false;
  for (int i = 1;; i++) {
    if ((ok = ready(arg))) break;
    if (i % 64 == 0) {
      if (now_ns() - start > WAITER_SPIN_NS) break;
      sched_yield(); /* as in worker_main */
    }
    cpu_relax();
  }
  pthread_mutex_lock(&e->lock);
  return ok;
}

static bool flag_set(void *arg) { return atomic_load_explicit(&((wait_flag *)arg)->done, memory_order_acquire); }
static bool nothing_pending(void *arg) {
  return atomic_load_explicit(&((kiln_engine *)arg)->pending, memory_order_acquire) == 0;
}

/* Waits for v, then reports its failure (lock held on return). */
static err_record *wait_locked(kiln_engine *e, kiln_engine_var *v) {
  wait_flag w = {.engine = e};
  atomic_init(&w.done, false);
  pthread_mutex_lock(&e->lock);
  engine_op *op = op_alloc(e, 1);
  if (!op) {
    /* No memory for a wait op: wait for everything instead. */
    e->waiters++;
    while (atomic_load(&e->pending) > 0) pthread_cond_wait(&e->done_cv, &e->lock);
    e->waiters--;
    return v->failure;
  }
  *op = (engine_op){.done = signal_waiter, .data = &w, .name = "wait", .n_reads = 1, .capacity = INLINE_DEPS,
                    .queue = v->queue};
  op->vars = op->inline_vars;
  op->deps = op->inline_deps;
  op->vars[0] = v;
  attach(e, op);
  if (e->mode == KILN_ENGINE_NAIVE) {
    pthread_mutex_unlock(&e->lock);
    drain_inline(e);
    pthread_mutex_lock(&e->lock);
  }
  if (!spin_for(e, flag_set, &w)) {
    e->waiters++;
    while (!atomic_load(&w.done)) pthread_cond_wait(&e->done_cv, &e->lock);
    e->waiters--;
  }
  return v->failure;
}

kiln_status kiln_engine_wait_var(kiln_engine *e, kiln_engine_var *v) {
  if (!e || !v) return kiln_errorf(KILN_ERR_INVALID_ARGUMENT, "kiln_engine_wait_var: engine or variable is NULL");
  pthread_mutex_lock(&e->lock);
  bool deleting = v->deleting;
  pthread_mutex_unlock(&e->lock);
  if (deleting) return kiln_errorf(KILN_ERR_INVALID_ARGUMENT, "kiln_engine_wait_var: the variable was deleted");
  err_record *r = wait_locked(e, v);
  kiln_status st = KILN_OK;
  if (r) {
    st = r->status;
    kiln_errorf(st, "%s", r->msg);
    mark_reported(e, r);
  }
  pthread_mutex_unlock(&e->lock);
  return st;
}

const char *engine_var_error(kiln_engine *e, kiln_engine_var *v, kiln_status *status) {
  err_record *r = wait_locked(e, v);
  if (r) mark_reported(e, r);
  pthread_mutex_unlock(&e->lock);
  *status = r ? r->status : KILN_OK;
  return r ? r->msg : NULL;
}

kiln_status kiln_engine_wait_all(kiln_engine *e) {
  if (!e) return kiln_errorf(KILN_ERR_INVALID_ARGUMENT, "kiln_engine_wait_all: engine is NULL");
  if (e->mode == KILN_ENGINE_NAIVE) drain_inline(e);
  pthread_mutex_lock(&e->lock);
  if (!spin_for(e, nothing_pending, e)) {
    e->waiters++;
    while (atomic_load(&e->pending) > 0) pthread_cond_wait(&e->done_cv, &e->lock);
    e->waiters--;
  }
  kiln_status st = KILN_OK;
  err_record *first = e->unreported_head;
  if (first) {
    int others = 0;
    for (err_record *r = first->next_unreported; r; r = r->next_unreported) others++;
    st = first->status;
    if (others)
      kiln_errorf(st, "%s (and %d other failure%s since the last wait)", first->msg, others, others == 1 ? "" : "s");
    else
      kiln_errorf(st, "%s", first->msg);
    while (e->unreported_head) mark_reported(e, e->unreported_head);
  }
  pthread_mutex_unlock(&e->lock);
  return st;
}

static pthread_once_t default_once = PTHREAD_ONCE_INIT;
static kiln_engine *default_engine;

kiln_status kiln_engine_profile(kiln_engine *e, const char *path) {
  if (!e) return kiln_errorf(KILN_ERR_INVALID_ARGUMENT, "kiln_engine_profile: engine is NULL");
  kiln_profiler *fresh = NULL;
  if (path) {
    fresh = engine_profiler_new(path);
    if (!fresh) return kiln_errorf(KILN_ERR_OUT_OF_MEMORY, "kiln_engine_profile: cannot record to %s", path);
  }
  pthread_mutex_lock(&e->lock);
  kiln_profiler *old = e->profiler;
  e->profiler = fresh;
  if (old) {
    engine_profiler_set_next(old, e->retired);
    e->retired = old;
  }
  pthread_mutex_unlock(&e->lock);
  /* The stopped recording is written now; ops still running may add to it
   * afterwards, which only the next write would show. */
  return old ? engine_profiler_write(old) : KILN_OK;
}

/* ------------------------------------------------------------ the default engine */

static void write_default_profile(void) {
  kiln_engine *e = default_engine;
  if (!e) return;
  kiln_engine_wait_all(e);
  kiln_engine_profile(e, NULL);
}


static void default_start(void) {
  kiln_engine_params p = kiln_engine_params_default();
  int threads = p.threads ? p.threads : cpu_count();
  int workers = p.mode == KILN_ENGINE_NAIVE ? 1 : p.workers ? p.workers : default_workers(threads);
  /* One budget: the pool gets what the workers leave (at least the worker
   * that calls it). */
  kiln_parallel_set_threads(threads - workers + 1 > 1 ? threads - workers + 1 : 1);
  default_engine = kiln_engine_new(&p);
  /* KILN_PROFILE records the whole process: write when it exits. */
  const char *path = getenv("KILN_PROFILE");
  if (default_engine && path && *path && kiln_engine_profile(default_engine, path) == KILN_OK)
    atexit(write_default_profile);
}

kiln_engine *kiln_default_engine(void) {
  pthread_once(&default_once, default_start);
  return default_engine;
}
