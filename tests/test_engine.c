/* The dependency engine (src/engine/engine.c) against what kiln.h promises,
 * with MXNet's ThreadedEngine semantics: work on one variable runs in push
 * order, reads together and a write alone; independent work runs in
 * parallel; a failure marks the written variables, is passed on by readers
 * and is reported once; deletes and engine_free wait for pending work; bad
 * arguments return a status. Every test runs on explicit engines (threaded
 * with 1, 2 and 4 workers, and naive) and computes its expectations without
 * the engine: a sequential replay of the same ops, or facts the ops record
 * themselves.
 *
 * Checks inside a test are soft (CHECK prints both values and counts), so an
 * engine is always freed before the test fails and LSan stays meaningful.
 * Nothing may hang: every wait of ours is timed, a watchdog alarm ends the
 * program naming the test, and the misuse cases that hang a buggy engine run
 * in a child process.
 *
 * KILN_TEST_ENGINE_OPS overrides the stress size (default 100 000 ops, 50 000
 * under a sanitizer). */
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "base/base.h"
#include "testutil.h"

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define ENGINE_TEST_SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define ENGINE_TEST_SANITIZED 1
#endif
#endif
#ifndef ENGINE_TEST_SANITIZED
#define ENGINE_TEST_SANITIZED 0
#endif

/* ------------------------------------------------------------ soft checks and the watchdog */

static int g_failures;
static const char *volatile g_test = "?";

#define CHECK(cond, ...)                                                                \
  do {                                                                                  \
    if (!(cond)) {                                                                      \
      g_failures++;                                                                     \
      fprintf(stderr, "%s:%d: [%s] check failed: %s: ", __FILE__, __LINE__, g_test, #cond); \
      fprintf(stderr, __VA_ARGS__);                                                     \
      fputc('\n', stderr);                                                              \
    }                                                                                   \
  } while (0)

#define CHECK_STATUS(got, want, label)                                                          \
  do {                                                                                          \
    kiln_status got_ = (got), want_ = (want);                                                   \
    CHECK(got_ == want_, "%s: got %s, want %s (last error \"%s\")", (label), kiln_status_name(got_), \
          kiln_status_name(want_), kiln_last_error());                                          \
  } while (0)

#define CHECK_CONTAINS(hay, needle, label)                                                        \
  do {                                                                                            \
    const char *hay_ = (hay), *needle_ = (needle);                                                \
    CHECK(hay_ && strstr(hay_, needle_), "%s: message \"%s\" does not contain \"%s\"", (label),   \
          hay_ ? hay_ : "(null)", needle_);                                                       \
  } while (0)

static void on_alarm(int sig) {
  (void)sig;
  static const char a[] = "\ntest_engine: watchdog: test ";
  static const char b[] = " did not finish in time (a hang)\n";
  const char *t = g_test;
  ssize_t r = write(2, a, sizeof a - 1);
  r = write(2, t, strlen(t));
  r = write(2, b, sizeof b - 1);
  (void)r;
  _exit(1);
}

static unsigned test_seconds(void) { return ENGINE_TEST_SANITIZED ? 200 : 60; }

static void begin(const char *name) {
  g_test = name;
  g_failures = 0;
  alarm(test_seconds());
}

static void finish(void) {
  alarm(0);
  if (g_failures) fprintf(stderr, "[%s] %d check(s) failed\n", g_test, g_failures);
  assert_int_equal(g_failures, 0);
}

/* ------------------------------------------------------------ time, gates and rendezvous */

static void sleep_us(long us) {
  struct timespec ts = {us / 1000000, (us % 1000000) * 1000};
  while (nanosleep(&ts, &ts) != 0) {
  }
}

static struct timespec deadline_ms(long ms) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  ts.tv_sec += ms / 1000;
  ts.tv_nsec += (ms % 1000) * 1000000;
  if (ts.tv_nsec >= 1000000000) ts.tv_sec++, ts.tv_nsec -= 1000000000;
  return ts;
}

/* A gate: ops enter and block until it opens (or a timeout passes); the
 * test waits until a number of ops have entered. Also used as a
 * rendezvous of `need` parties. */
typedef struct {
  pthread_mutex_t m;
  pthread_cond_t c;
  int entered;
  bool open;
} gate;

static void gate_init(gate *g) {
  pthread_condattr_t a;
  pthread_condattr_init(&a);
  pthread_condattr_setclock(&a, CLOCK_MONOTONIC);
  pthread_mutex_init(&g->m, NULL);
  pthread_cond_init(&g->c, &a);
  pthread_condattr_destroy(&a);
  g->entered = 0;
  g->open = false;
}

static void gate_destroy(gate *g) {
  pthread_cond_destroy(&g->c);
  pthread_mutex_destroy(&g->m);
}

/* Enters g and waits for it to open; false on timeout. */
static bool gate_pass(gate *g, long timeout_ms) {
  struct timespec dl = deadline_ms(timeout_ms);
  pthread_mutex_lock(&g->m);
  g->entered++;
  pthread_cond_broadcast(&g->c);
  int rc = 0;
  while (!g->open && rc == 0) rc = pthread_cond_timedwait(&g->c, &g->m, &dl);
  bool ok = g->open;
  pthread_mutex_unlock(&g->m);
  return ok;
}

static void gate_open(gate *g) {
  pthread_mutex_lock(&g->m);
  g->open = true;
  pthread_cond_broadcast(&g->c);
  pthread_mutex_unlock(&g->m);
}

/* Waits until n parties have entered g; false on timeout. */
static bool gate_wait_entered(gate *g, int n, long timeout_ms) {
  struct timespec dl = deadline_ms(timeout_ms);
  pthread_mutex_lock(&g->m);
  int rc = 0;
  while (g->entered < n && rc == 0) rc = pthread_cond_timedwait(&g->c, &g->m, &dl);
  bool ok = g->entered >= n;
  pthread_mutex_unlock(&g->m);
  return ok;
}

/* A rendezvous of need parties: each arrives and waits for the others;
 * false when they do not all arrive within the timeout (they were run one
 * after the other). */
static bool rendezvous(gate *g, int need, long timeout_ms) {
  struct timespec dl = deadline_ms(timeout_ms);
  pthread_mutex_lock(&g->m);
  g->entered++;
  pthread_cond_broadcast(&g->c);
  int rc = 0;
  while (g->entered < need && rc == 0) rc = pthread_cond_timedwait(&g->c, &g->m, &dl);
  bool ok = g->entered >= need;
  pthread_mutex_unlock(&g->m);
  return ok;
}

/* ------------------------------------------------------------ engines */

typedef struct {
  kiln_engine_mode mode;
  int workers;
  const char *label;
} config;

static const config configs[] = {
    {KILN_ENGINE_THREADED, 1, "threaded/1"},
    {KILN_ENGINE_THREADED, 2, "threaded/2"},
    {KILN_ENGINE_THREADED, 4, "threaded/4"},
    {KILN_ENGINE_NAIVE, 0, "naive"},
};
enum { N_CONFIGS = sizeof configs / sizeof configs[0] };

static kiln_engine *engine_new(kiln_engine_mode mode, int workers) {
  kiln_engine_params p = {mode, workers, 0};
  kiln_engine *e = kiln_engine_new(&p);
  if (!e) fprintf(stderr, "kiln_engine_new(%d, %d) failed: %s\n", (int)mode, workers, kiln_last_error());
  assert_non_null(e); /* nothing to clean up yet */
  return e;
}

static kiln_engine_var *var_new(kiln_engine *e) {
  kiln_engine_var *v = kiln_engine_new_var(e);
  CHECK(v != NULL, "kiln_engine_new_var: %s", kiln_last_error());
  return v;
}

/* Pushes and checks the push itself succeeded. */
#define PUSH(e, fn, done, data, reads, nr, writes, nw, name, prio) \
  CHECK_STATUS(kiln_engine_push((e), (fn), (done), (data), (reads), (nr), (writes), (nw), (name), (prio)), KILN_OK, "push " name)

/* A probe op: fails with st and msg when st is not KILN_OK, counts its runs
 * and its done calls. */
typedef struct {
  kiln_status st;
  const char *msg;
  atomic_int ran, dones;
} probe;

static kiln_status probe_fn(void *data) {
  probe *p = data;
  atomic_fetch_add(&p->ran, 1);
  if (p->st != KILN_OK) return p->msg ? kiln_errorf(p->st, "%s", p->msg) : p->st;
  return KILN_OK;
}

static void probe_done(void *data) { atomic_fetch_add(&((probe *)data)->dones, 1); }

static void probe_init(probe *p, kiln_status st, const char *msg) {
  p->st = st;
  p->msg = msg;
  atomic_init(&p->ran, 0);
  atomic_init(&p->dones, 0);
}

/* ------------------------------------------------------------ 1, 6. the stress workload */

/* Variables: [0, SHARED) are shared and read-only once initialised; pusher t
 * owns [SHARED + t * OWN, SHARED + (t + 1) * OWN) and writes only those, so
 * the final state is each pusher's ops replayed in its push order. Each var
 * is an int64 cell; an op sets every written cell to cell * 31 + sum(read
 * cells) + id (wrapping), the sum taken before any write. */
enum { SHARED = 64, OWN = 1024, HOT = 16, MAX_PUSHERS = 4, CHECK_EVERY = 997 };

typedef struct workload workload;

typedef struct {
  uint64_t id;
  int nr, nw;
  int r[4], w[2];
  workload *wl;
  atomic_int runs;
} sop;

struct workload {
  kiln_engine *e;
  int pushers, n_vars;
  int64_t per_pusher;
  sop *init_ops; /* SHARED of them, pushed by the main thread first */
  sop *ops;      /* pusher t: [t * per_pusher, (t + 1) * per_pusher) */
  uint64_t *cells;
  kiln_engine_var **vars;
  atomic_int *rd, *wr; /* ops in flight reading and writing each var */
  atomic_long violations, dones, push_failures, wait_failures, wait_mismatches;
};

static uint64_t cell_init(int i) {
  uint64_t s = (uint64_t)i * 0x2545F4914F6CDD1Dull + 7;
  return tu_rng_next(&s);
}

static bool op_writes(const sop *op, int v) {
  for (int j = 0; j < op->nw; j++)
    if (op->w[j] == v) return true;
  return false;
}

/* The op's function on a cell array: used by the engine's ops and by the
 * sequential replay alike. */
static void sop_apply(uint64_t *cells, const sop *op) {
  uint64_t sum = 0;
  for (int j = 0; j < op->nr; j++) sum += cells[op->r[j]];
  for (int j = 0; j < op->nw; j++) cells[op->w[j]] = cells[op->w[j]] * 31u + sum + op->id;
}

static kiln_status sop_fn(void *data) {
  sop *op = data;
  workload *wl = op->wl;
  atomic_fetch_add(&op->runs, 1);
  /* Exclusivity, seen from inside: no write in flight on a var we read, no
   * other op at all on a var we write. */
  for (int j = 0; j < op->nr; j++) {
    if (op_writes(op, op->r[j])) continue;
    atomic_fetch_add(&wl->rd[op->r[j]], 1);
    if (atomic_load(&wl->wr[op->r[j]]) != 0) atomic_fetch_add(&wl->violations, 1);
  }
  for (int j = 0; j < op->nw; j++) {
    if (atomic_fetch_add(&wl->wr[op->w[j]], 1) != 0 || atomic_load(&wl->rd[op->w[j]]) != 0)
      atomic_fetch_add(&wl->violations, 1);
  }
  sop_apply(wl->cells, op);
  for (int j = 0; j < op->nw; j++) atomic_fetch_sub(&wl->wr[op->w[j]], 1);
  for (int j = 0; j < op->nr; j++)
    if (!op_writes(op, op->r[j])) atomic_fetch_sub(&wl->rd[op->r[j]], 1);
  return KILN_OK;
}

static void sop_done(void *data) { atomic_fetch_add(&((sop *)data)->wl->dones, 1); }

static int pick_own(uint64_t *rng, int t) {
  uint64_t x = tu_rng_next(rng);
  int k = (x & 1) ? (int)((x >> 8) % HOT) : (int)((x >> 8) % OWN);
  return SHARED + t * OWN + k;
}

static void workload_generate(workload *wl, uint64_t seed) {
  for (int i = 0; i < SHARED; i++) {
    sop *op = &wl->init_ops[i];
    *op = (sop){.id = 0xC0FFEEu + (uint64_t)i, .nr = 0, .nw = 1, .w = {i}, .wl = wl};
    atomic_init(&op->runs, 0);
  }
  for (int t = 0; t < wl->pushers; t++) {
    uint64_t rng = seed ^ (0x9E3779B97F4A7C15ull * (uint64_t)(t + 1));
    for (int64_t k = 0; k < wl->per_pusher; k++) {
      sop *op = &wl->ops[t * wl->per_pusher + k];
      *op = (sop){.id = (uint64_t)(t * wl->per_pusher + k) + 1, .wl = wl};
      atomic_init(&op->runs, 0);
      op->nr = 1 + (int)(tu_rng_next(&rng) % 4);
      op->nw = 1 + (int)(tu_rng_next(&rng) % 2);
      for (int j = 0; j < op->nr; j++)
        op->r[j] = tu_rng_next(&rng) % 4 == 0 ? (int)(tu_rng_next(&rng) % SHARED) : pick_own(&rng, t);
      op->w[0] = pick_own(&rng, t);
      if (op->nw == 2)
        do op->w[1] = pick_own(&rng, t);
        while (op->w[1] == op->w[0]);
    }
  }
}

static bool workload_new(workload *wl, int pushers, int64_t total_ops, uint64_t seed) {
  memset(wl, 0, sizeof *wl);
  wl->pushers = pushers;
  wl->n_vars = SHARED + pushers * OWN;
  wl->per_pusher = (total_ops + pushers - 1) / pushers;
  wl->init_ops = calloc(SHARED, sizeof *wl->init_ops);
  wl->ops = calloc((size_t)(wl->per_pusher * pushers), sizeof *wl->ops);
  wl->cells = calloc((size_t)wl->n_vars, sizeof *wl->cells);
  wl->vars = calloc((size_t)wl->n_vars, sizeof *wl->vars);
  wl->rd = calloc((size_t)wl->n_vars, sizeof *wl->rd);
  wl->wr = calloc((size_t)wl->n_vars, sizeof *wl->wr);
  if (!wl->init_ops || !wl->ops || !wl->cells || !wl->vars || !wl->rd || !wl->wr) return false;
  for (int i = 0; i < wl->n_vars; i++) {
    wl->cells[i] = cell_init(i);
    atomic_init(&wl->rd[i], 0);
    atomic_init(&wl->wr[i], 0);
  }
  atomic_init(&wl->violations, 0);
  atomic_init(&wl->dones, 0);
  atomic_init(&wl->push_failures, 0);
  atomic_init(&wl->wait_failures, 0);
  atomic_init(&wl->wait_mismatches, 0);
  workload_generate(wl, seed);
  return true;
}

static void workload_free(workload *wl) {
  free(wl->init_ops);
  free(wl->ops);
  free(wl->cells);
  free(wl->vars);
  free(wl->rd);
  free(wl->wr);
}

/* The sequential replay: initial cells, the init ops, then each pusher's
 * ops in push order. Pushers touch disjoint cells after the init ops, so the
 * order between pushers does not matter. */
static uint64_t *workload_reference(const workload *wl) {
  uint64_t *ref = malloc(sizeof *ref * (size_t)wl->n_vars);
  if (!ref) return NULL;
  for (int i = 0; i < wl->n_vars; i++) ref[i] = cell_init(i);
  for (int i = 0; i < SHARED; i++) sop_apply(ref, &wl->init_ops[i]);
  for (int64_t k = 0; k < wl->per_pusher * wl->pushers; k++) sop_apply(ref, &wl->ops[k]);
  return ref;
}

static kiln_status push_sop(workload *wl, sop *op) {
  kiln_engine_var *r[4], *w[2];
  for (int j = 0; j < op->nr; j++) r[j] = wl->vars[op->r[j]];
  for (int j = 0; j < op->nw; j++) w[j] = wl->vars[op->w[j]];
  return kiln_engine_push(wl->e, sop_fn, sop_done, op, r, op->nr, w, op->nw, "stress", 0);
}

typedef struct {
  workload *wl;
  int t;
} pusher_arg;

/* Pushes pusher t's ops in order, replaying them on its own copy of the
 * cells as it goes; now and then waits for a var it just wrote and checks
 * the engine's cell against the replay at that point. */
static void *pusher_main(void *arg) {
  workload *wl = ((pusher_arg *)arg)->wl;
  int t = ((pusher_arg *)arg)->t;
  uint64_t *mine = malloc(sizeof *mine * (size_t)wl->n_vars);
  if (!mine) {
    atomic_fetch_add(&wl->push_failures, 1);
    return NULL;
  }
  for (int i = 0; i < wl->n_vars; i++) mine[i] = cell_init(i);
  for (int i = 0; i < SHARED; i++) sop_apply(mine, &wl->init_ops[i]);
  for (int64_t k = 0; k < wl->per_pusher; k++) {
    sop *op = &wl->ops[t * wl->per_pusher + k];
    if (push_sop(wl, op) != KILN_OK) atomic_fetch_add(&wl->push_failures, 1);
    sop_apply(mine, op);
    if (k % CHECK_EVERY == CHECK_EVERY - 1) {
      int v = op->w[0];
      if (kiln_engine_wait_var(wl->e, wl->vars[v]) != KILN_OK) atomic_fetch_add(&wl->wait_failures, 1);
      /* Only this pusher writes v, and everything it pushed on v has run. */
      if (wl->cells[v] != mine[v]) atomic_fetch_add(&wl->wait_mismatches, 1);
    }
  }
  free(mine);
  return NULL;
}

static int64_t stress_ops(void) {
  const char *s = getenv("KILN_TEST_ENGINE_OPS");
  if (s && *s) {
    long long n = atoll(s);
    if (n > 0) return n;
  }
  return ENGINE_TEST_SANITIZED ? 50000 : 100000;
}

/* Runs the workload on one engine; returns the final cells (caller frees)
 * or NULL after recording a failure. */
static uint64_t *run_stress(kiln_engine_mode mode, int workers, int pushers, int64_t total, uint64_t seed,
                            const char *label) {
  workload wl;
  if (!workload_new(&wl, pushers, total, seed)) {
    workload_free(&wl);
    CHECK(false, "%s: out of memory", label);
    return NULL;
  }
  wl.e = engine_new(mode, workers);
  for (int i = 0; i < wl.n_vars; i++) wl.vars[i] = var_new(wl.e);
  for (int i = 0; i < SHARED; i++) {
    if (!wl.vars[i]) continue;
    CHECK_STATUS(push_sop(&wl, &wl.init_ops[i]), KILN_OK, label);
  }
  pthread_t th[MAX_PUSHERS];
  pusher_arg args[MAX_PUSHERS];
  bool vars_ok = true;
  for (int i = 0; i < wl.n_vars; i++) vars_ok &= wl.vars[i] != NULL;
  int started = 0;
  if (vars_ok) {
    if (pushers == 1) {
      args[0] = (pusher_arg){&wl, 0};
      pusher_main(&args[0]);
    } else {
      for (int t = 0; t < pushers; t++) {
        args[t] = (pusher_arg){&wl, t};
        if (pthread_create(&th[t], NULL, pusher_main, &args[t]) != 0) break;
        started++;
      }
      CHECK(started == pushers, "%s: started %d of %d pushers", label, started, pushers);
      for (int t = 0; t < started; t++) pthread_join(th[t], NULL);
    }
  }
  CHECK_STATUS(kiln_engine_wait_all(wl.e), KILN_OK, label);
  int64_t n = wl.per_pusher * pushers;
  long dones = atomic_load(&wl.dones);
  /* Read after wait_all, which includes every done. */
  int64_t bad_runs = 0, first_bad = -1;
  for (int64_t k = 0; k < n; k++)
    if (atomic_load(&wl.ops[k].runs) != 1) bad_runs++, first_bad = first_bad < 0 ? k : first_bad;
  for (int i = 0; i < SHARED; i++)
    if (atomic_load(&wl.init_ops[i].runs) != 1) bad_runs++;
  uint64_t *cells = malloc(sizeof *cells * (size_t)wl.n_vars);
  if (cells) memcpy(cells, wl.cells, sizeof *cells * (size_t)wl.n_vars);
  /* Delete half the variables explicitly; the engine frees the rest. */
  for (int i = 0; i < wl.n_vars; i += 2)
    if (wl.vars[i]) CHECK_STATUS(kiln_engine_delete_var(wl.e, wl.vars[i], NULL, NULL), KILN_OK, label);
  kiln_engine_free(wl.e);

  CHECK(vars_ok, "%s: could not create the variables", label);
  CHECK(atomic_load(&wl.push_failures) == 0, "%s: %ld pushes failed", label, atomic_load(&wl.push_failures));
  CHECK(atomic_load(&wl.violations) == 0, "%s: %ld exclusivity violations (a write overlapped another op on its var)",
        label, atomic_load(&wl.violations));
  CHECK(bad_runs == 0, "%s: %lld ops did not run exactly once (first: op %lld ran %d times)", label,
        (long long)bad_runs, (long long)first_bad, first_bad >= 0 ? atomic_load(&wl.ops[first_bad].runs) : 1);
  CHECK(dones == n + SHARED, "%s: done ran %ld times, want %lld", label, dones, (long long)(n + SHARED));
  CHECK(atomic_load(&wl.wait_failures) == 0, "%s: %ld wait_var calls failed", label, atomic_load(&wl.wait_failures));
  CHECK(atomic_load(&wl.wait_mismatches) == 0,
        "%s: %ld cells differed from the replay right after wait_var on them", label,
        atomic_load(&wl.wait_mismatches));

  uint64_t *ref = workload_reference(&wl);
  CHECK(ref && cells, "%s: out of memory", label);
  if (ref && cells) {
    int mismatches = 0;
    for (int i = 0; i < wl.n_vars; i++) {
      if (cells[i] != ref[i]) {
        if (mismatches < 5)
          fprintf(stderr, "%s: cell %d: engine %llu, sequential replay %llu\n", label, i,
                  (unsigned long long)cells[i], (unsigned long long)ref[i]);
        mismatches++;
      }
    }
    CHECK(mismatches == 0, "%s: %d of %d cells differ from the sequential replay of %lld ops", label, mismatches,
          wl.n_vars, (long long)n);
  }
  free(ref);
  workload_free(&wl);
  return cells;
}

static void stress_case(const char *name, int config_index, int pushers) {
  begin(name);
  const config *c = &configs[config_index];
  char label[64];
  snprintf(label, sizeof label, "%s, %d pusher%s", c->label, pushers, pushers == 1 ? "" : "s");
  free(run_stress(c->mode, c->workers, pushers, stress_ops(), 1234 + (uint64_t)pushers, label));
  finish();
}

static void stress_threaded1_1pusher(void **s) { (void)s, stress_case(__func__, 0, 1); }
static void stress_threaded2_1pusher(void **s) { (void)s, stress_case(__func__, 1, 1); }
static void stress_threaded4_1pusher(void **s) { (void)s, stress_case(__func__, 2, 1); }
static void stress_naive_1pusher(void **s) { (void)s, stress_case(__func__, 3, 1); }
static void stress_threaded1_4pushers(void **s) { (void)s, stress_case(__func__, 0, 4); }
static void stress_threaded2_4pushers(void **s) { (void)s, stress_case(__func__, 1, 4); }
static void stress_threaded4_4pushers(void **s) { (void)s, stress_case(__func__, 2, 4); }
static void stress_naive_4pushers(void **s) { (void)s, stress_case(__func__, 3, 4); }

/* 6. Naive and threaded engines end with identical cells. */
static void naive_and_threaded_agree(void **s) {
  (void)s;
  begin(__func__);
  int64_t n = stress_ops();
  uint64_t *naive = run_stress(KILN_ENGINE_NAIVE, 0, 1, n, 99, "naive");
  uint64_t *threaded = run_stress(KILN_ENGINE_THREADED, 4, 1, n, 99, "threaded/4");
  CHECK(naive && threaded, "no result to compare");
  if (naive && threaded) {
    int diff = 0, first = -1;
    for (int i = 0; i < SHARED + OWN; i++)
      if (naive[i] != threaded[i]) diff++, first = first < 0 ? i : first;
    CHECK(diff == 0, "%d cells differ; first %d: naive %llu, threaded %llu", diff, first,
          first >= 0 ? (unsigned long long)naive[first] : 0ull,
          first >= 0 ? (unsigned long long)threaded[first] : 0ull);
  }
  free(naive);
  free(threaded);
  finish();
}

/* ------------------------------------------------------------ 2. ordering on one variable */

/* Writers sleep a little, then store their value; readers sleep, then
 * record what they see. Plain (non-atomic) cells: the engine's ordering is
 * the only synchronisation, so TSan also sees a violation. */
typedef struct {
  int64_t *cell;
  int64_t value; /* written by a writer; seen by a reader */
  long sleep;
} rw_op;

static kiln_status rw_write(void *data) {
  rw_op *op = data;
  sleep_us(op->sleep);
  *op->cell = op->value;
  return KILN_OK;
}

static kiln_status rw_read(void *data) {
  rw_op *op = data;
  sleep_us(op->sleep);
  op->value = *op->cell;
  return KILN_OK;
}

enum { CHAIN = 240 };

/* Read after write: each reader sees the last write pushed before it. */
static void read_after_write(void **s) {
  (void)s;
  begin(__func__);
  for (int ci = 0; ci < N_CONFIGS; ci++) {
    const config *c = &configs[ci];
    kiln_engine *e = engine_new(c->mode, c->workers);
    kiln_engine_var *v = var_new(e);
    int64_t cell = 0;
    static rw_op ops[CHAIN];
    static bool is_write[CHAIN];
    static int64_t want[CHAIN];
    uint64_t rng = 42 + (uint64_t)ci;
    int64_t last = 0;
    for (int i = 0; i < CHAIN; i++) {
      is_write[i] = tu_rng_next(&rng) % 3 == 0;
      ops[i] = (rw_op){&cell, is_write[i] ? 1000 + i : -1, (long)(tu_rng_next(&rng) % 300)};
      if (is_write[i]) last = 1000 + i;
      want[i] = last;
      if (!v) continue;
      if (is_write[i]) PUSH(e, rw_write, NULL, &ops[i], NULL, 0, &v, 1, "raw_write", 0);
      else PUSH(e, rw_read, NULL, &ops[i], &v, 1, NULL, 0, "raw_read", 0);
    }
    CHECK_STATUS(kiln_engine_wait_all(e), KILN_OK, c->label);
    for (int i = 0; i < CHAIN && v; i++)
      if (!is_write[i]) CHECK(ops[i].value == want[i], "%s: reader %d saw %lld, want %lld", c->label, i,
                              (long long)ops[i].value, (long long)want[i]);
    CHECK(cell == last, "%s: final cell %lld, want %lld", c->label, (long long)cell, (long long)last);
    kiln_engine_free(e);
  }
  finish();
}

/* A value written by a slow op is visible right after wait_var. */
static void wait_var_waits_for_the_write(void **s) {
  (void)s;
  begin(__func__);
  for (int ci = 0; ci < N_CONFIGS; ci++) {
    const config *c = &configs[ci];
    kiln_engine *e = engine_new(c->mode, c->workers);
    kiln_engine_var *v = var_new(e), *other = var_new(e);
    int64_t cell = 0, cell2 = 0;
    rw_op w1 = {&cell, 5, 20000}, w2 = {&cell, 6, 20000}, slow_other = {&cell2, 1, 200000};
    if (v && other) {
      /* A slow op on another var must not hold up the wait. */
      PUSH(e, rw_write, NULL, &slow_other, NULL, 0, &other, 1, "slow_other", 0);
      PUSH(e, rw_write, NULL, &w1, NULL, 0, &v, 1, "w1", 0);
      PUSH(e, rw_write, NULL, &w2, NULL, 0, &v, 1, "w2", 0);
      CHECK_STATUS(kiln_engine_wait_var(e, v), KILN_OK, c->label);
      CHECK(cell == 6, "%s: after wait_var the cell is %lld, want 6", c->label, (long long)cell);
    }
    CHECK_STATUS(kiln_engine_wait_all(e), KILN_OK, c->label);
    kiln_engine_free(e);
  }
  finish();
}

typedef struct {
  atomic_int finished;
  int seen_by_writer;
  atomic_int readers_running;
  atomic_int overlap;
} war_ctx;

static kiln_status war_reader(void *data) {
  war_ctx *w = data;
  atomic_fetch_add(&w->readers_running, 1);
  sleep_us(20000);
  atomic_fetch_sub(&w->readers_running, 1);
  atomic_fetch_add(&w->finished, 1);
  return KILN_OK;
}

static kiln_status war_writer(void *data) {
  war_ctx *w = data;
  w->seen_by_writer = atomic_load(&w->finished);
  if (atomic_load(&w->readers_running) != 0) atomic_fetch_add(&w->overlap, 1);
  sleep_us(5000);
  if (atomic_load(&w->readers_running) != 0) atomic_fetch_add(&w->overlap, 1);
  return KILN_OK;
}

/* Write after read: a writer pushed after three readers starts after all of
 * them finished, and a reader pushed after the writer waits for it. */
static void write_after_read(void **s) {
  (void)s;
  begin(__func__);
  for (int ci = 0; ci < N_CONFIGS; ci++) {
    const config *c = &configs[ci];
    kiln_engine *e = engine_new(c->mode, c->workers);
    kiln_engine_var *v = var_new(e);
    war_ctx w;
    atomic_init(&w.finished, 0);
    atomic_init(&w.readers_running, 0);
    atomic_init(&w.overlap, 0);
    w.seen_by_writer = -1;
    if (v) {
      for (int i = 0; i < 3; i++) PUSH(e, war_reader, NULL, &w, &v, 1, NULL, 0, "war_reader", 0);
      PUSH(e, war_writer, NULL, &w, NULL, 0, &v, 1, "war_writer", 0);
      PUSH(e, war_reader, NULL, &w, &v, 1, NULL, 0, "war_reader_after", 0);
    }
    CHECK_STATUS(kiln_engine_wait_all(e), KILN_OK, c->label);
    CHECK(w.seen_by_writer == 3, "%s: the writer started after %d of 3 readers finished", c->label,
          w.seen_by_writer);
    CHECK(atomic_load(&w.overlap) == 0, "%s: the writer overlapped a reader %d time(s)", c->label,
          atomic_load(&w.overlap));
    CHECK(atomic_load(&w.finished) == 4, "%s: %d readers finished, want 4", c->label, atomic_load(&w.finished));
    kiln_engine_free(e);
  }
  finish();
}

typedef struct {
  int *log;
  int *pos;
  int id;
  long sleep;
} waw_op;

static kiln_status waw_fn(void *data) {
  waw_op *op = data;
  sleep_us(op->sleep);
  op->log[(*op->pos)++] = op->id;
  return KILN_OK;
}

/* Write after write: writes on one var run in push order, including writes
 * that also touch other vars with their own queues. */
static void write_after_write(void **s) {
  (void)s;
  begin(__func__);
  enum { W = 120 };
  for (int ci = 0; ci < N_CONFIGS; ci++) {
    const config *c = &configs[ci];
    kiln_engine *e = engine_new(c->mode, c->workers);
    kiln_engine_var *v = var_new(e), *x = var_new(e), *y = var_new(e);
    int log[W], pos = 0;
    waw_op ops[W];
    uint64_t rng = 7 + (uint64_t)ci;
    for (int i = 0; i < W; i++) log[i] = -1;
    for (int i = 0; i < W && v && x && y; i++) {
      ops[i] = (waw_op){log, &pos, i, (long)(tu_rng_next(&rng) % 400)};
      /* Some writes also write x or read y, to vary when they become ready. */
      kiln_engine_var *ws[2] = {v, x}, *rs[1] = {y};
      int nw = i % 3 == 0 ? 2 : 1, nr = i % 4 == 1 ? 1 : 0;
      PUSH(e, waw_fn, NULL, &ops[i], rs, nr, ws, nw, "waw", i % 5 == 0 ? 3 : 0);
    }
    CHECK_STATUS(kiln_engine_wait_all(e), KILN_OK, c->label);
    CHECK(pos == W, "%s: %d writes ran, want %d", c->label, pos, W);
    for (int i = 0; i < W; i++) CHECK(log[i] == i, "%s: write %d in position %d", c->label, log[i], i);
    kiln_engine_free(e);
  }
  finish();
}

typedef struct {
  gate *g;
  int64_t *cell;
  int64_t seen;
  bool met;
} meet_op;

static kiln_status meet_fn(void *data) {
  meet_op *m = data;
  m->met = rendezvous(m->g, 2, 5000);
  if (m->cell) m->seen = *m->cell;
  return KILN_OK;
}

/* Two readers of one var run at the same time: each waits for the other at
 * a rendezvous, which times out (and fails) if they were serialised. Both
 * when they are granted together after a write and when the var is idle at
 * push time. */
static void concurrent_reads_overlap(void **s) {
  (void)s;
  begin(__func__);
  for (int ci = 1; ci <= 2; ci++) {
    for (int after_write = 0; after_write < 2; after_write++) {
      const config *c = &configs[ci];
      kiln_engine *e = engine_new(c->mode, c->workers);
      kiln_engine_var *v = var_new(e);
      gate g;
      gate_init(&g);
      int64_t cell = 0;
      int64_t want = after_write ? 77 : 0;
      rw_op w = {&cell, 77, 10000};
      meet_op r1 = {&g, &cell, -1, false}, r2 = {&g, &cell, -1, false};
      if (v) {
        if (after_write) PUSH(e, rw_write, NULL, &w, NULL, 0, &v, 1, "write_first", 0);
        PUSH(e, meet_fn, NULL, &r1, &v, 1, NULL, 0, "reader1", 0);
        PUSH(e, meet_fn, NULL, &r2, &v, 1, NULL, 0, "reader2", 0);
      }
      CHECK_STATUS(kiln_engine_wait_all(e), KILN_OK, c->label);
      CHECK(r1.met && r2.met, "%s (%s): the readers did not overlap (met: %d, %d)", c->label,
            after_write ? "after a write" : "idle var", r1.met, r2.met);
      CHECK(r1.seen == want && r2.seen == want, "%s: readers saw %lld and %lld, want %lld", c->label,
            (long long)r1.seen, (long long)r2.seen, (long long)want);
      kiln_engine_free(e);
      gate_destroy(&g);
    }
  }
  finish();
}

/* Ops on more variables than the inline capacity, with repeats and a var
 * both read and written: ordered like any other op against single-var ops
 * before and after them. */
enum { BIG = 12 };

typedef struct {
  int64_t *cells; /* 2 * BIG: [0, BIG) read by the big op, [BIG, 2 BIG) written */
  int round;
  atomic_int bad;
} big_ctx;

typedef struct {
  big_ctx *b;
  int i;
  int64_t seen;
} small_op;

static kiln_status small_write(void *data) {
  small_op *o = data;
  sleep_us(100 * (o->i % 3));
  o->b->cells[o->i] = 1000 * o->b->round + o->i;
  return KILN_OK;
}

static kiln_status small_read(void *data) {
  small_op *o = data;
  o->seen = o->b->cells[o->i];
  return KILN_OK;
}

static kiln_status big_fn(void *data) {
  big_ctx *b = data;
  for (int i = 0; i < 2 * BIG; i++)
    if (b->cells[i] != 1000 * b->round + i) atomic_fetch_add(&b->bad, 1);
  for (int i = BIG; i < 2 * BIG; i++) b->cells[i] = -(1000 * b->round + i);
  return KILN_OK;
}

static void ops_on_many_variables(void **s) {
  (void)s;
  begin(__func__);
  for (int ci = 0; ci < N_CONFIGS; ci++) {
    const config *c = &configs[ci];
    kiln_engine *e = engine_new(c->mode, c->workers);
    kiln_engine_var *v[2 * BIG];
    bool ok = true;
    for (int i = 0; i < 2 * BIG; i++) ok &= (v[i] = var_new(e)) != NULL;
    int64_t cells[2 * BIG] = {0};
    big_ctx b;
    atomic_init(&b.bad, 0);
    b.cells = cells;
    small_op pre[2 * BIG], post[2 * BIG];
    int wrong = 0;
    for (int round = 0; round < 20 && ok; round++) {
      b.round = round;
      for (int i = 0; i < 2 * BIG; i++) {
        pre[i] = (small_op){&b, i, 0};
        PUSH(e, small_write, NULL, &pre[i], NULL, 0, &v[i], 1, "pre", 0);
      }
      /* Reads v[0..BIG) plus a repeat and v[BIG + 1] (also written); writes
       * v[BIG..2 BIG) plus a repeat. */
      kiln_engine_var *reads[BIG + 2], *writes[BIG + 1];
      for (int i = 0; i < BIG; i++) reads[i] = v[i], writes[i] = v[BIG + i];
      reads[BIG] = v[3];
      reads[BIG + 1] = v[BIG + 1];
      writes[BIG] = v[BIG + 5];
      PUSH(e, big_fn, NULL, &b, reads, BIG + 2, writes, BIG + 1, "big", 0);
      for (int i = 0; i < 2 * BIG; i++) {
        post[i] = (small_op){&b, i, 0};
        PUSH(e, small_read, NULL, &post[i], &v[i], 1, NULL, 0, "post", 0);
      }
      CHECK_STATUS(kiln_engine_wait_all(e), KILN_OK, c->label);
      for (int i = 0; i < 2 * BIG; i++) {
        int64_t want = i < BIG ? 1000 * round + i : -(1000 * round + i);
        if (post[i].seen != want && wrong++ < 5)
          fprintf(stderr, "%s round %d: reader of var %d saw %lld, want %lld\n", c->label, round, i,
                  (long long)post[i].seen, (long long)want);
      }
    }
    CHECK(ok, "%s: could not create the variables", c->label);
    CHECK(atomic_load(&b.bad) == 0, "%s: the big op saw %d cells not yet written by the ops pushed before it",
          c->label, atomic_load(&b.bad));
    CHECK(wrong == 0, "%s: %d reads after the big op saw the wrong value", c->label, wrong);
    kiln_engine_free(e);
  }
  finish();
}

/* A pushed function may itself push, and a done may delete a variable
 * (kiln.h and the engine's lock comment say so). */
typedef struct {
  kiln_engine *e;
  kiln_engine_var *x, *y;
  atomic_int parent_ran, child_ran, child_done, deleted;
  int64_t cell;
  int64_t child_saw;
  kiln_status child_push;
} nest_ctx;

static void nest_on_delete(void *data) { atomic_fetch_add(&((nest_ctx *)data)->deleted, 1); }

static kiln_status nest_child(void *data) {
  nest_ctx *n = data;
  n->child_saw = n->cell;
  atomic_fetch_add(&n->child_ran, 1);
  return KILN_OK;
}

static void nest_child_done(void *data) {
  nest_ctx *n = data;
  atomic_fetch_add(&n->child_done, 1);
  kiln_engine_delete_var(n->e, n->y, nest_on_delete, n);
}

static kiln_status nest_parent(void *data) {
  nest_ctx *n = data;
  atomic_fetch_add(&n->parent_ran, 1);
  /* The child reads x, which this op writes: it runs after us. */
  n->child_push = kiln_engine_push(n->e, nest_child, nest_child_done, n, &n->x, 1, &n->y, 1, "child", 0);
  sleep_us(2000);
  n->cell = 99;
  return KILN_OK;
}

static void pushing_from_inside_work(void **s) {
  (void)s;
  begin(__func__);
  for (int ci = 0; ci < N_CONFIGS; ci++) {
    const config *c = &configs[ci];
    kiln_engine *e = engine_new(c->mode, c->workers);
    nest_ctx n = {.e = e, .x = var_new(e), .y = var_new(e), .child_saw = -1, .child_push = KILN_ERR_INTERNAL};
    atomic_init(&n.parent_ran, 0);
    atomic_init(&n.child_ran, 0);
    atomic_init(&n.child_done, 0);
    atomic_init(&n.deleted, 0);
    if (n.x && n.y) PUSH(e, nest_parent, NULL, &n, NULL, 0, &n.x, 1, "parent", 0);
    CHECK_STATUS(kiln_engine_wait_all(e), KILN_OK, c->label);
    CHECK_STATUS(n.child_push, KILN_OK, "push from inside a pushed function");
    CHECK(atomic_load(&n.parent_ran) == 1 && atomic_load(&n.child_ran) == 1 && atomic_load(&n.child_done) == 1 &&
              atomic_load(&n.deleted) == 1,
          "%s: parent ran %d, child %d, child done %d, delete from done %d (want 1 each)", c->label,
          atomic_load(&n.parent_ran), atomic_load(&n.child_ran), atomic_load(&n.child_done),
          atomic_load(&n.deleted));
    CHECK(n.child_saw == 99, "%s: the child saw %lld, want 99 (it reads what its parent wrote)", c->label,
          (long long)n.child_saw);
    kiln_engine_free(e);
  }
  finish();
}

/* ------------------------------------------------------------ 3. independent work in parallel */

static void independent_ops_run_in_parallel(void **s) {
  (void)s;
  begin(__func__);
  for (int ci = 1; ci <= 2; ci++) {
    const config *c = &configs[ci];
    for (int variant = 0; variant < 3; variant++) {
      kiln_engine *e = engine_new(c->mode, c->workers);
      kiln_engine_var *a = var_new(e), *b = var_new(e), *shared = var_new(e);
      gate g;
      gate_init(&g);
      meet_op m1 = {&g, NULL, 0, false}, m2 = {&g, NULL, 0, false};
      if (a && b && shared) {
        if (variant == 0) { /* no variables at all */
          PUSH(e, meet_fn, NULL, &m1, NULL, 0, NULL, 0, "free1", 0);
          PUSH(e, meet_fn, NULL, &m2, NULL, 0, NULL, 0, "free2", 0);
        } else if (variant == 1) { /* writes to different vars */
          PUSH(e, meet_fn, NULL, &m1, NULL, 0, &a, 1, "write_a", 0);
          PUSH(e, meet_fn, NULL, &m2, NULL, 0, &b, 1, "write_b", 0);
        } else { /* both read a shared var and write their own */
          PUSH(e, meet_fn, NULL, &m1, &shared, 1, &a, 1, "shared_to_a", 0);
          PUSH(e, meet_fn, NULL, &m2, &shared, 1, &b, 1, "shared_to_b", 0);
        }
      }
      CHECK_STATUS(kiln_engine_wait_all(e), KILN_OK, c->label);
      CHECK(m1.met && m2.met, "%s, variant %d: independent ops did not run in parallel (met: %d, %d)", c->label,
            variant, m1.met, m2.met);
      kiln_engine_free(e);
      gate_destroy(&g);
    }
  }
  finish();
}

/* ------------------------------------------------------------ 4. failures */

static const char OOR_MSG[] = "index seven is out of range for axis zero of size five";

/* A failure marks the written vars; readers are skipped (done still runs)
 * and pass it on; wait_var returns it; wait_all does not return it again;
 * then wait_all reports the first unreported failure with the count of the
 * others, once; and the engine recovers. */
static void failures_propagate_and_are_reported_once(void **s) {
  (void)s;
  begin(__func__);
  for (int ci = 0; ci < N_CONFIGS; ci++) {
    const config *c = &configs[ci];
    const char *L = c->label;
    kiln_engine *e = engine_new(c->mode, c->workers);
    kiln_engine_var *a = var_new(e), *b = var_new(e), *cc = var_new(e), *d = var_new(e);
    kiln_engine_var *p = var_new(e), *q = var_new(e), *r = var_new(e), *sv = var_new(e);
    if (!(a && b && cc && d && p && q && r && sv)) {
      kiln_engine_free(e);
      continue;
    }

    /* Phase 1: F fails writing a and b; S1 reads a -> c; S2 reads c -> d. */
    probe f, s1, s2;
    probe_init(&f, KILN_ERR_OUT_OF_RANGE, OOR_MSG);
    probe_init(&s1, KILN_OK, NULL);
    probe_init(&s2, KILN_OK, NULL);
    kiln_engine_var *ab[2] = {a, b};
    PUSH(e, probe_fn, probe_done, &f, NULL, 0, ab, 2, "failing_op", 0);
    PUSH(e, probe_fn, probe_done, &s1, &a, 1, &cc, 1, "reads_a", 0);
    PUSH(e, probe_fn, probe_done, &s2, &cc, 1, &d, 1, "reads_c", 0);
    kiln_error_clear();
    CHECK_STATUS(kiln_engine_wait_var(e, d), KILN_ERR_OUT_OF_RANGE, "wait_var(d), two hops from the failure");
    CHECK_CONTAINS(kiln_last_error(), OOR_MSG, "wait_var(d)");
    kiln_error_clear();
    CHECK_STATUS(kiln_engine_wait_var(e, a), KILN_ERR_OUT_OF_RANGE, "wait_var(a)");
    CHECK_CONTAINS(kiln_last_error(), OOR_MSG, "wait_var(a)");
    CHECK_STATUS(kiln_engine_wait_var(e, b), KILN_ERR_OUT_OF_RANGE, "wait_var(b)");
    CHECK_STATUS(kiln_engine_wait_var(e, cc), KILN_ERR_OUT_OF_RANGE, "wait_var(c)");
    CHECK(atomic_load(&f.ran) == 1, "%s: failing op ran %d times", L, atomic_load(&f.ran));
    CHECK(atomic_load(&s1.ran) == 0 && atomic_load(&s2.ran) == 0,
          "%s: ops reading a failed var ran (%d, %d times); they must be skipped", L, atomic_load(&s1.ran),
          atomic_load(&s2.ran));
    CHECK_STATUS(kiln_engine_wait_all(e), KILN_OK, "wait_all after wait_var returned the failure");
    CHECK(atomic_load(&f.dones) == 1 && atomic_load(&s1.dones) == 1 && atomic_load(&s2.dones) == 1,
          "%s: done ran %d, %d, %d times, want 1 each (also for skipped ops)", L, atomic_load(&f.dones),
          atomic_load(&s1.dones), atomic_load(&s2.dones));

    /* Phase 2: three failures in a known order (each writes sv, so they
     * run one after the other), plus a skipped reader that passes the first
     * on and must not count as another failure. */
    probe f1, f2, f3, k;
    probe_init(&f1, KILN_ERR_OUT_OF_RANGE, "first failure alpha");
    probe_init(&f2, KILN_ERR_SHAPE, "second failure beta");
    probe_init(&f3, KILN_ERR_IO, "third failure gamma");
    probe_init(&k, KILN_OK, NULL);
    kiln_engine_var *ps[2] = {p, sv}, *qs[2] = {q, sv};
    PUSH(e, probe_fn, probe_done, &f1, NULL, 0, ps, 2, "f1", 0);
    PUSH(e, probe_fn, probe_done, &k, &p, 1, &r, 1, "reads_p", 0);
    PUSH(e, probe_fn, probe_done, &f2, NULL, 0, qs, 2, "f2", 0);
    PUSH(e, probe_fn, probe_done, &f3, NULL, 0, &sv, 1, "f3", 0);
    kiln_error_clear();
    CHECK_STATUS(kiln_engine_wait_all(e), KILN_ERR_OUT_OF_RANGE, "wait_all: the first of three failures");
    const char *m = kiln_last_error();
    CHECK_CONTAINS(m, "first failure alpha", "wait_all");
    CHECK_CONTAINS(m, "2", "wait_all: the count of the other failures");
    CHECK(!strstr(m, "3"), "%s: wait_all message \"%s\" counts 3 others (a skipped op is not a new failure)", L, m);
    CHECK(atomic_load(&k.ran) == 0 && atomic_load(&k.dones) == 1, "%s: skipped reader ran %d, done %d", L,
          atomic_load(&k.ran), atomic_load(&k.dones));
    CHECK_STATUS(kiln_engine_wait_all(e), KILN_OK, "second wait_all (nothing unreported)");
    /* Still failed, still returned by wait_var; not by wait_all again. */
    kiln_error_clear();
    CHECK_STATUS(kiln_engine_wait_var(e, q), KILN_ERR_SHAPE, "wait_var(q) after wait_all");
    CHECK_CONTAINS(kiln_last_error(), "second failure beta", "wait_var(q)");
    CHECK_STATUS(kiln_engine_wait_var(e, r), KILN_ERR_OUT_OF_RANGE, "wait_var(r), passed on by the skipped reader");
    CHECK_CONTAINS(kiln_last_error(), "first failure alpha", "wait_var(r)");
    CHECK_STATUS(kiln_engine_wait_all(e), KILN_OK, "wait_all after re-reading reported failures");

    /* Phase 3: recovery. Overwriting a clears it; b stays failed until
     * overwritten; new work succeeds. */
    probe ok1, skip_b, ok2, ok3, ok4;
    probe_init(&ok1, KILN_OK, NULL);
    probe_init(&skip_b, KILN_OK, NULL);
    probe_init(&ok2, KILN_OK, NULL);
    probe_init(&ok3, KILN_OK, NULL);
    probe_init(&ok4, KILN_OK, NULL);
    PUSH(e, probe_fn, probe_done, &ok1, NULL, 0, &a, 1, "overwrite_a", 0);
    CHECK_STATUS(kiln_engine_wait_var(e, a), KILN_OK, "wait_var(a) after a successful overwrite");
    PUSH(e, probe_fn, probe_done, &skip_b, &b, 1, &d, 1, "reads_failed_b", 0);
    CHECK_STATUS(kiln_engine_wait_var(e, d), KILN_ERR_OUT_OF_RANGE, "wait_var(d): b is still failed");
    PUSH(e, probe_fn, probe_done, &ok2, NULL, 0, &b, 1, "overwrite_b", 0);
    PUSH(e, probe_fn, probe_done, &ok3, &b, 1, &d, 1, "reads_good_b", 0);
    PUSH(e, probe_fn, probe_done, &ok4, &a, 1, NULL, 0, "reads_good_a", 0);
    CHECK_STATUS(kiln_engine_wait_var(e, d), KILN_OK, "wait_var(d) after b was overwritten");
    CHECK_STATUS(kiln_engine_wait_all(e), KILN_OK, "wait_all after recovery");
    CHECK(atomic_load(&ok1.ran) == 1 && atomic_load(&ok2.ran) == 1 && atomic_load(&ok3.ran) == 1 &&
              atomic_load(&ok4.ran) == 1 && atomic_load(&skip_b.ran) == 0,
          "%s: after recovery ran %d %d %d %d (want 1 each) and the reader of failed b %d (want 0)", L,
          atomic_load(&ok1.ran), atomic_load(&ok2.ran), atomic_load(&ok3.ran), atomic_load(&ok4.ran),
          atomic_load(&skip_b.ran));

    /* Phase 4: a failing op that writes nothing is still reported. */
    probe lone;
    probe_init(&lone, KILN_ERR_UNSUPPORTED, "lone failure delta");
    PUSH(e, probe_fn, probe_done, &lone, NULL, 0, NULL, 0, "lone", 0);
    kiln_error_clear();
    CHECK_STATUS(kiln_engine_wait_all(e), KILN_ERR_UNSUPPORTED, "wait_all: a failure with no variables");
    CHECK_CONTAINS(kiln_last_error(), "lone failure delta", "wait_all");
    CHECK_STATUS(kiln_engine_wait_all(e), KILN_OK, "wait_all again");

    /* Phase 5: a failure without a message still carries one. */
    probe mute;
    probe_init(&mute, KILN_ERR_DTYPE, NULL);
    PUSH(e, probe_fn, probe_done, &mute, NULL, 0, &a, 1, "mute", 0);
    kiln_error_clear();
    CHECK_STATUS(kiln_engine_wait_var(e, a), KILN_ERR_DTYPE, "wait_var: a failure without a message");
    CHECK(kiln_last_error()[0] != '\0', "%s: a failure without a message reports an empty message", L);
    CHECK_STATUS(kiln_engine_wait_all(e), KILN_OK, "wait_all after wait_var reported it");
    kiln_engine_free(e);
  }
  finish();
}

/* An op that reads and writes the same failed var (an in-place update such
 * as w -= lr * g) reads a failed var: it must be skipped and the var stays
 * failed with the original message. */
static void in_place_update_of_failed_var_is_skipped(void **s) {
  (void)s;
  begin(__func__);
  for (int ci = 0; ci < N_CONFIGS; ci++) {
    const config *c = &configs[ci];
    kiln_engine *e = engine_new(c->mode, c->workers);
    kiln_engine_var *v = var_new(e);
    probe f, inplace;
    probe_init(&f, KILN_ERR_OUT_OF_RANGE, OOR_MSG);
    probe_init(&inplace, KILN_OK, NULL);
    if (v) {
      PUSH(e, probe_fn, probe_done, &f, NULL, 0, &v, 1, "failing_op", 0);
      PUSH(e, probe_fn, probe_done, &inplace, &v, 1, &v, 1, "in_place", 0);
      kiln_error_clear();
      CHECK_STATUS(kiln_engine_wait_var(e, v), KILN_ERR_OUT_OF_RANGE, c->label);
      CHECK_CONTAINS(kiln_last_error(), OOR_MSG, c->label);
    }
    kiln_engine_wait_all(e);
    CHECK(atomic_load(&inplace.ran) == 0, "%s: an op reading (and writing) a failed var ran %d time(s)", c->label,
          atomic_load(&inplace.ran));
    CHECK(atomic_load(&inplace.dones) == 1, "%s: its done ran %d times", c->label, atomic_load(&inplace.dones));
    kiln_engine_free(e);
  }
  finish();
}

/* kiln.h: "name (static storage) names the work in errors"; the style
 * guide: the message names the op and what was wrong. */
static void failure_message_names_the_op(void **s) {
  (void)s;
  begin(__func__);
  for (int ci = 0; ci < N_CONFIGS; ci++) {
    const config *c = &configs[ci];
    kiln_engine *e = engine_new(c->mode, c->workers);
    kiln_engine_var *v = var_new(e);
    probe f;
    probe_init(&f, KILN_ERR_OUT_OF_RANGE, OOR_MSG);
    if (v) {
      PUSH(e, probe_fn, NULL, &f, NULL, 0, &v, 1, "gather_rows", 0);
      kiln_error_clear();
      CHECK_STATUS(kiln_engine_wait_var(e, v), KILN_ERR_OUT_OF_RANGE, c->label);
      CHECK_CONTAINS(kiln_last_error(), OOR_MSG, c->label);
      CHECK_CONTAINS(kiln_last_error(), "gather_rows", c->label);
    }
    kiln_engine_free(e);
  }
  finish();
}

/* ------------------------------------------------------------ 5. deletion and engine_free */

typedef struct {
  atomic_int finished; /* ops on the var whose fn has returned */
  atomic_int deletes;
  int finished_at_delete;
} del_ctx;

static kiln_status del_slow_op(void *data) {
  sleep_us(3000);
  atomic_fetch_add(&((del_ctx *)data)->finished, 1);
  return KILN_OK;
}

static void del_on_delete(void *data) {
  del_ctx *d = data;
  d->finished_at_delete = atomic_load(&d->finished);
  atomic_fetch_add(&d->deletes, 1);
}

/* on_delete runs once, after every op pushed on the var before it. */
static void delete_waits_for_pending_ops(void **s) {
  (void)s;
  begin(__func__);
  for (int ci = 0; ci < N_CONFIGS; ci++) {
    const config *c = &configs[ci];
    kiln_engine *e = engine_new(c->mode, c->workers);
    kiln_engine_var *v = var_new(e), *other = var_new(e);
    del_ctx d;
    atomic_init(&d.finished, 0);
    atomic_init(&d.deletes, 0);
    d.finished_at_delete = -1;
    probe after;
    probe_init(&after, KILN_OK, NULL);
    if (v && other) {
      for (int i = 0; i < 4; i++) PUSH(e, del_slow_op, NULL, &d, NULL, 0, &v, 1, "w", 0);
      for (int i = 0; i < 3; i++) PUSH(e, del_slow_op, NULL, &d, &v, 1, &other, 1, "r", 0);
      for (int i = 0; i < 3; i++) PUSH(e, del_slow_op, NULL, &d, &v, 1, NULL, 0, "r2", 0);
      CHECK_STATUS(kiln_engine_delete_var(e, v, del_on_delete, &d), KILN_OK, c->label);
      /* The engine goes on working after the delete. */
      PUSH(e, probe_fn, probe_done, &after, &other, 1, NULL, 0, "after_delete", 0);
    }
    CHECK_STATUS(kiln_engine_wait_all(e), KILN_OK, c->label);
    CHECK(atomic_load(&d.deletes) == 1, "%s: on_delete ran %d times", c->label, atomic_load(&d.deletes));
    CHECK(d.finished_at_delete == 10, "%s: on_delete ran after %d of the 10 earlier ops", c->label,
          d.finished_at_delete);
    CHECK(atomic_load(&after.ran) == 1, "%s: op after the delete ran %d times", c->label, atomic_load(&after.ran));
    /* A fresh var after deletes (the free list) works. */
    kiln_engine_var *fresh = var_new(e);
    probe pf;
    probe_init(&pf, KILN_OK, NULL);
    if (fresh) {
      PUSH(e, probe_fn, probe_done, &pf, NULL, 0, &fresh, 1, "fresh", 0);
      CHECK_STATUS(kiln_engine_wait_var(e, fresh), KILN_OK, c->label);
      CHECK(atomic_load(&pf.ran) == 1, "%s: op on a fresh var ran %d times", c->label, atomic_load(&pf.ran));
    }
    kiln_engine_free(e);
  }
  finish();
}

typedef struct {
  atomic_int ran, dones;
} counter;

static kiln_status slow_count(void *data) {
  sleep_us(300);
  atomic_fetch_add(&((counter *)data)->ran, 1);
  return KILN_OK;
}

static void count_done(void *data) { atomic_fetch_add(&((counter *)data)->dones, 1); }

/* kiln_engine_free with work pending waits for all of it (fn and done),
 * runs pending on_delete, and frees live vars and unreported failures. */
static void free_waits_for_pending_work(void **s) {
  (void)s;
  begin(__func__);
  enum { CHAINS = 4, PER = 50 };
  for (int ci = 0; ci < N_CONFIGS; ci++) {
    const config *c = &configs[ci];
    kiln_engine *e = engine_new(c->mode, c->workers);
    counter cnt;
    atomic_init(&cnt.ran, 0);
    atomic_init(&cnt.dones, 0);
    del_ctx d;
    atomic_init(&d.finished, 0);
    atomic_init(&d.deletes, 0);
    d.finished_at_delete = -1;
    probe f;
    probe_init(&f, KILN_ERR_INTERNAL, "unreported at free");
    kiln_engine_var *vars[CHAINS];
    int pushed = 0;
    bool ok = true;
    for (int i = 0; i < CHAINS; i++) ok &= (vars[i] = var_new(e)) != NULL;
    if (ok) {
      for (int k = 0; k < PER; k++)
        for (int i = 0; i < CHAINS; i++) {
          kiln_engine_var *r = vars[(i + 1) % CHAINS];
          kiln_status st = kiln_engine_push(e, slow_count, count_done, &cnt, k % 2 ? &r : NULL, k % 2, &vars[i], 1,
                                            "chain", 0);
          CHECK_STATUS(st, KILN_OK, c->label);
          pushed += st == KILN_OK;
        }
      PUSH(e, probe_fn, probe_done, &f, NULL, 0, &vars[1], 1, "fails", 0);
      for (int i = 0; i < 3; i++) PUSH(e, del_slow_op, NULL, &d, &vars[0], 1, NULL, 0, "read_v0", 0);
      CHECK_STATUS(kiln_engine_delete_var(e, vars[0], del_on_delete, &d), KILN_OK, c->label);
    }
    kiln_engine_free(e); /* vars[1..3] are still alive; vars[1] carries an unreported failure */
    CHECK(atomic_load(&cnt.ran) == pushed, "%s: %d of %d ops ran before kiln_engine_free returned", c->label,
          atomic_load(&cnt.ran), pushed);
    CHECK(atomic_load(&cnt.dones) == pushed, "%s: %d of %d dones ran before kiln_engine_free returned", c->label,
          atomic_load(&cnt.dones), pushed);
    CHECK(atomic_load(&f.ran) == 1 && atomic_load(&f.dones) == 1, "%s: failing op ran %d, done %d", c->label,
          atomic_load(&f.ran), atomic_load(&f.dones));
    CHECK(atomic_load(&d.deletes) == 1 && d.finished_at_delete == 3, "%s: on_delete ran %d times after %d of 3 reads",
          c->label, atomic_load(&d.deletes), d.finished_at_delete);
  }
  finish();
}

/* ------------------------------------------------------------ 7. bad arguments and priority */

static kiln_status never_fn(void *data) {
  atomic_fetch_add(&((counter *)data)->ran, 1);
  return KILN_OK;
}

#define CHECK_MISUSE(call, label)                                                                   \
  do {                                                                                              \
    kiln_error_clear();                                                                             \
    CHECK_STATUS((call), KILN_ERR_INVALID_ARGUMENT, label);                                         \
    CHECK(kiln_last_error()[0] != '\0', "%s: no message from kiln_last_error", label);              \
  } while (0)

static void bad_arguments_return_a_status(void **s) {
  (void)s;
  begin(__func__);
  kiln_engine *e = engine_new(KILN_ENGINE_THREADED, 2);
  kiln_engine_var *v = var_new(e);
  counter cnt;
  atomic_init(&cnt.ran, 0);
  atomic_init(&cnt.dones, 0);
  kiln_engine_var *null_list[2] = {v, NULL};
  if (v) {
    CHECK_MISUSE(kiln_engine_push(NULL, never_fn, count_done, &cnt, &v, 1, NULL, 0, "x", 0), "push(NULL engine)");
    CHECK_MISUSE(kiln_engine_push(e, never_fn, count_done, &cnt, NULL, 2, NULL, 0, "x", 0), "push(reads NULL, 2)");
    CHECK_MISUSE(kiln_engine_push(e, never_fn, count_done, &cnt, NULL, 0, NULL, 1, "x", 0), "push(writes NULL, 1)");
    CHECK_MISUSE(kiln_engine_push(e, never_fn, count_done, &cnt, null_list, 2, NULL, 0, "x", 0), "push(NULL read)");
    CHECK_MISUSE(kiln_engine_push(e, never_fn, count_done, &cnt, NULL, 0, null_list, 2, "x", 0), "push(NULL write)");
    CHECK_MISUSE(kiln_engine_push(e, never_fn, count_done, &cnt, &v, -1, NULL, 0, "x", 0), "push(n_reads -1)");
    CHECK_MISUSE(kiln_engine_push(e, never_fn, count_done, &cnt, NULL, 0, &v, -3, "x", 0), "push(n_writes -3)");
    CHECK_MISUSE(kiln_engine_push(e, never_fn, count_done, &cnt, null_list, 2, NULL, 0, NULL, 0),
                 "push(NULL read, NULL name)");
    CHECK_MISUSE(kiln_engine_wait_var(NULL, v), "wait_var(NULL engine)");
    CHECK_MISUSE(kiln_engine_wait_var(e, NULL), "wait_var(NULL var)");
    CHECK_MISUSE(kiln_engine_delete_var(NULL, v, NULL, NULL), "delete_var(NULL engine)");
    CHECK_MISUSE(kiln_engine_delete_var(e, NULL, NULL, NULL), "delete_var(NULL var)");
    CHECK_MISUSE(kiln_engine_wait_all(NULL), "wait_all(NULL)");
  }
  kiln_error_clear();
  CHECK(kiln_engine_new_var(NULL) == NULL, "new_var(NULL engine) returned a var");
  CHECK(kiln_last_error()[0] != '\0', "new_var(NULL): no message");
  kiln_engine_free(NULL);
  kiln_engine_params bad[] = {{(kiln_engine_mode)7, 1, 0}, {KILN_ENGINE_THREADED, -1, 0},
                              {KILN_ENGINE_THREADED, 1, -2}, {KILN_ENGINE_THREADED, 100000, 0}};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    kiln_error_clear();
    kiln_engine *x = kiln_engine_new(&bad[i]);
    CHECK(x == NULL, "kiln_engine_new(bad params %zu) returned an engine", i);
    CHECK(kiln_last_error()[0] != '\0', "kiln_engine_new(bad params %zu): no message", i);
    kiln_engine_free(x);
  }
  /* None of the refused pushes may run anything, and the engine still works. */
  probe ok;
  probe_init(&ok, KILN_OK, NULL);
  if (v) PUSH(e, probe_fn, probe_done, &ok, NULL, 0, &v, 1, "ok", 0);
  CHECK_STATUS(kiln_engine_wait_all(e), KILN_OK, "wait_all after refused pushes");
  CHECK(atomic_load(&cnt.ran) == 0 && atomic_load(&cnt.dones) == 0,
        "refused pushes ran fn %d and done %d times", atomic_load(&cnt.ran), atomic_load(&cnt.dones));
  CHECK(atomic_load(&ok.ran) == 1, "a good push after the refused ones ran %d times", atomic_load(&ok.ran));
  kiln_engine_free(e);
  finish();
}

/* Misuse that a buggy engine answers with a hang runs in a child process
 * with its own alarm; the child's exit code says what went wrong. */
static int run_in_child(int (*body)(void), int seconds, const char *what) {
  fflush(NULL);
  pid_t pid = fork();
  if (pid < 0) {
    CHECK(false, "%s: fork failed", what);
    return -1;
  }
  if (pid == 0) {
    signal(SIGALRM, SIG_DFL);
    alarm((unsigned)seconds);
    int code = body();
    fflush(NULL);
    _exit(code);
  }
  int status = 0;
  while (waitpid(pid, &status, 0) < 0) {
  }
  if (WIFSIGNALED(status)) {
    CHECK(false, "%s: the child was killed by signal %d (%s)", what, WTERMSIG(status),
          WTERMSIG(status) == SIGALRM ? "a hang" : "a crash");
    return -1;
  }
  return WEXITSTATUS(status);
}

static kiln_status gate_fn(void *data) { return gate_pass(data, 10000) ? KILN_OK : KILN_ERR_INTERNAL; }

/* Child: while a delete is pending (behind a blocked op), a push on the var
 * must be refused, not queued behind the delete forever. */
static int child_push_after_delete(void) {
  kiln_engine_params p = {KILN_ENGINE_THREADED, 1, 0};
  kiln_engine *e = kiln_engine_new(&p);
  if (!e) return 10;
  kiln_engine_var *v = kiln_engine_new_var(e);
  gate g;
  gate_init(&g);
  counter cnt;
  atomic_init(&cnt.ran, 0);
  atomic_init(&cnt.dones, 0);
  kiln_engine_push(e, gate_fn, NULL, &g, NULL, 0, &v, 1, "gate", 0);
  if (!gate_wait_entered(&g, 1, 5000)) return 11;
  kiln_engine_delete_var(e, v, NULL, NULL);
  kiln_status st = kiln_engine_push(e, never_fn, count_done, &cnt, &v, 1, NULL, 0, "after_delete", 0);
  if (st != KILN_ERR_INVALID_ARGUMENT) {
    fprintf(stderr, "push on a var being deleted: got %s, want KILN_ERR_INVALID_ARGUMENT\n", kiln_status_name(st));
    return 2; /* leave without freeing: the engine would hang */
  }
  gate_open(&g);
  kiln_engine_free(e);
  gate_destroy(&g);
  return atomic_load(&cnt.ran) == 0 && atomic_load(&cnt.dones) == 0 ? 0 : 3;
}

/* Child: a second delete_var of a var being deleted is refused. */
static int child_double_delete(void) {
  kiln_engine_params p = {KILN_ENGINE_THREADED, 1, 0};
  kiln_engine *e = kiln_engine_new(&p);
  if (!e) return 10;
  kiln_engine_var *v = kiln_engine_new_var(e);
  gate g;
  gate_init(&g);
  kiln_engine_push(e, gate_fn, NULL, &g, NULL, 0, &v, 1, "gate", 0);
  if (!gate_wait_entered(&g, 1, 5000)) return 11;
  kiln_engine_delete_var(e, v, NULL, NULL);
  kiln_status st = kiln_engine_delete_var(e, v, NULL, NULL);
  if (st != KILN_ERR_INVALID_ARGUMENT) {
    fprintf(stderr, "second delete_var of a var being deleted: got %s, want KILN_ERR_INVALID_ARGUMENT\n",
            kiln_status_name(st));
    return 2;
  }
  gate_open(&g);
  kiln_engine_free(e);
  gate_destroy(&g);
  return 0;
}

/* Child: wait_var on a var being deleted returns a status rather than
 * waiting forever. */
static int child_wait_after_delete(void) {
  kiln_engine_params p = {KILN_ENGINE_THREADED, 1, 0};
  kiln_engine *e = kiln_engine_new(&p);
  if (!e) return 10;
  kiln_engine_var *v = kiln_engine_new_var(e);
  gate g;
  gate_init(&g);
  kiln_engine_push(e, gate_fn, NULL, &g, NULL, 0, &v, 1, "gate", 0);
  if (!gate_wait_entered(&g, 1, 5000)) return 11;
  kiln_engine_delete_var(e, v, NULL, NULL);
  /* The gate stays shut: the delete is certainly pending. A buggy engine
   * queues the wait behind the delete, which never grants it. */
  kiln_status st = kiln_engine_wait_var(e, v);
  if (st != KILN_ERR_INVALID_ARGUMENT) {
    fprintf(stderr, "wait_var on a var being deleted: got %s, want KILN_ERR_INVALID_ARGUMENT\n",
            kiln_status_name(st));
    return 2;
  }
  gate_open(&g);
  kiln_engine_free(e);
  gate_destroy(&g);
  return 0;
}

static void misuse_of_a_deleted_var_is_refused(void **s) {
  (void)s;
  begin(__func__);
  struct {
    int (*body)(void);
    const char *what;
  } cases[] = {{child_push_after_delete, "push on a var being deleted"},
               {child_double_delete, "second delete_var"},
               {child_wait_after_delete, "wait_var on a var being deleted"}};
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    int code = run_in_child(cases[i].body, ENGINE_TEST_SANITIZED ? 15 : 5, cases[i].what);
    CHECK(code == 0, "%s: child exit %d (2: accepted, want KILN_ERR_INVALID_ARGUMENT; 1x: setup failed)",
          cases[i].what, code);
  }
  finish();
}

typedef struct {
  pthread_mutex_t m;
  int order[16];
  int n;
} order_log;

typedef struct {
  order_log *log;
  int label;
} order_op;

static kiln_status order_fn(void *data) {
  order_op *o = data;
  pthread_mutex_lock(&o->log->m);
  if (o->log->n < 16) o->log->order[o->log->n++] = o->label;
  pthread_mutex_unlock(&o->log->m);
  return KILN_OK;
}

/* With the only worker blocked on a gate, ready ops with the given
 * priorities are pushed in order; returns how many ran and their order. */
static int run_priorities(const int *prio, int n, int *order) {
  kiln_engine *e = engine_new(KILN_ENGINE_THREADED, 1);
  gate g;
  gate_init(&g);
  order_log log = {.n = 0};
  pthread_mutex_init(&log.m, NULL);
  order_op ops[16];
  PUSH(e, gate_fn, NULL, &g, NULL, 0, NULL, 0, "gate", 0);
  bool entered = gate_wait_entered(&g, 1, 5000);
  CHECK(entered, "the gate op did not start");
  for (int i = 0; i < n; i++) {
    ops[i] = (order_op){&log, i};
    PUSH(e, order_fn, NULL, &ops[i], NULL, 0, NULL, 0, "prio", prio[i]);
  }
  gate_open(&g);
  CHECK_STATUS(kiln_engine_wait_all(e), KILN_OK, "priorities");
  kiln_engine_free(e);
  gate_destroy(&g);
  pthread_mutex_destroy(&log.m);
  memcpy(order, log.order, sizeof(int) * (size_t)log.n);
  return log.n;
}

/* The expected order: by priority, highest first; ties in push order. */
/* ------------------------------------------------------------ back-pressure */

typedef struct {
  kiln_engine *e;
  kiln_engine_var *v;
  atomic_int pushed, ran;
} flood;

static kiln_status gated(void *data) { return gate_pass(data, 10000) ? KILN_OK : kiln_errorf(KILN_ERR_INTERNAL, "gate timed out"); }
static kiln_status flood_op(void *data) {
  atomic_fetch_add(&((flood *)data)->ran, 1);
  return KILN_OK;
}

static void *flood_main(void *arg) {
  flood *f = arg;
  for (int i = 0; i < 1000; i++) {
    if (kiln_engine_push(f->e, flood_op, NULL, f, &f->v, 1, NULL, 0, "flood", 0) != KILN_OK) break;
    atomic_fetch_add(&f->pushed, 1);
  }
  return NULL;
}

/* A thread that pushes far ahead of the workers waits: with the worker held
 * by an op that the 1 000 pushed ops all read after, the pusher stops at
 * the bound (256 pending, engine.c's MAX_AHEAD) instead of queueing all of
 * them; once the work moves, it goes on and every op runs. */
static void pushes_wait_when_far_ahead(void **s) {
  (void)s;
  begin(__func__);
  for (int ci = 0; ci < N_CONFIGS; ci++) {
    const config *c = &configs[ci];
    if (c->mode == KILN_ENGINE_NAIVE) continue; /* the pusher runs each op itself */
    kiln_engine *e = engine_new(c->mode, c->workers);
    gate g;
    gate_init(&g);
    flood f = {.e = e, .v = var_new(e)};
    atomic_init(&f.pushed, 0);
    atomic_init(&f.ran, 0);
    PUSH(e, gated, NULL, &g, NULL, 0, &f.v, 1, "gated", 0);
    CHECK(gate_wait_entered(&g, 1, 5000), "%s: the gated op did not start", c->label);
    pthread_t t;
    pthread_create(&t, NULL, flood_main, &f);
    sleep_us(200000);
    int ahead = atomic_load(&f.pushed);
    CHECK(ahead >= 200 && ahead <= 256, "%s: %d ops pushed while the worker was held, want 200-256", c->label, ahead);
    gate_open(&g);
    pthread_join(t, NULL);
    CHECK_STATUS(kiln_engine_wait_all(e), KILN_OK, c->label);
    CHECK(atomic_load(&f.pushed) == 1000 && atomic_load(&f.ran) == 1000, "%s: %d pushed, %d ran, want 1000", c->label,
          atomic_load(&f.pushed), atomic_load(&f.ran));
    kiln_engine_free(e);
    gate_destroy(&g);
  }
  finish();
}

static void check_priority_order(const int *prio, int n, const char *label) {
  int got[16], want[16];
  int ran = run_priorities(prio, n, got);
  CHECK(ran == n, "%s: %d of %d ops ran", label, ran, n);
  for (int i = 0; i < n; i++) want[i] = i;
  for (int i = 1; i < n; i++) /* stable insertion sort */
    for (int j = i; j > 0 && prio[want[j - 1]] < prio[want[j]]; j--) {
      int t = want[j];
      want[j] = want[j - 1];
      want[j - 1] = t;
    }
  char gs[128] = "", ws[128] = "";
  for (int i = 0; i < ran; i++) snprintf(gs + strlen(gs), sizeof gs - strlen(gs), " %d", prio[got[i]]);
  for (int i = 0; i < n; i++) snprintf(ws + strlen(ws), sizeof ws - strlen(ws), " %d", prio[want[i]]);
  bool same = ran == n;
  for (int i = 0; i < ran && same; i++) same = got[i] == want[i];
  CHECK(same, "%s: ran priorities [%s ], want [%s ]", label, gs, ws);
}

static void higher_priority_runs_first(void **s) {
  (void)s;
  begin(__func__);
  check_priority_order((const int[]){0, 1}, 2, "low (0) then high (1)");
  check_priority_order((const int[]){0, 0, 0, 10}, 4, "three at 0, then 10");
  finish();
}

/* Beyond "positive beats zero": among positive priorities the higher runs
 * first whatever the push order, and negative ones run after zero. */
static void priority_order_is_by_value(void **s) {
  (void)s;
  begin(__func__);
  check_priority_order((const int[]){5, 1}, 2, "5 then 1");
  check_priority_order((const int[]){-1, 0}, 2, "-1 then 0");
  check_priority_order((const int[]){0, -3, 5, 1, 2, -1}, 6, "mixed");
  finish();
}

int main(void) {
  signal(SIGALRM, on_alarm);
  /* KILN_TEST_FILTER=stress_* runs a subset (cmocka's pattern syntax). */
  const char *filter = getenv("KILN_TEST_FILTER");
  if (filter && *filter) cmocka_set_test_filter(filter);
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(read_after_write),
      cmocka_unit_test(pushes_wait_when_far_ahead),
      cmocka_unit_test(wait_var_waits_for_the_write),
      cmocka_unit_test(write_after_read),
      cmocka_unit_test(write_after_write),
      cmocka_unit_test(concurrent_reads_overlap),
      cmocka_unit_test(ops_on_many_variables),
      cmocka_unit_test(pushing_from_inside_work),
      cmocka_unit_test(independent_ops_run_in_parallel),
      cmocka_unit_test(failures_propagate_and_are_reported_once),
      cmocka_unit_test(in_place_update_of_failed_var_is_skipped),
      cmocka_unit_test(failure_message_names_the_op),
      cmocka_unit_test(delete_waits_for_pending_ops),
      cmocka_unit_test(free_waits_for_pending_work),
      cmocka_unit_test(bad_arguments_return_a_status),
      cmocka_unit_test(misuse_of_a_deleted_var_is_refused),
      cmocka_unit_test(higher_priority_runs_first),
      cmocka_unit_test(priority_order_is_by_value),
      cmocka_unit_test(stress_threaded1_1pusher),
      cmocka_unit_test(stress_threaded2_1pusher),
      cmocka_unit_test(stress_threaded4_1pusher),
      cmocka_unit_test(stress_naive_1pusher),
      cmocka_unit_test(stress_threaded1_4pushers),
      cmocka_unit_test(stress_threaded2_4pushers),
      cmocka_unit_test(stress_threaded4_4pushers),
      cmocka_unit_test(stress_naive_4pushers),
      cmocka_unit_test(naive_and_threaded_agree),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
