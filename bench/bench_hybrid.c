/* d2l 13.1's hybridize benchmark with its peers, on one thread: the MLP
 * Dense(256, relu), Dense(128, relu), Dense(2) on a [1, 512] input (1 000
 * calls a round) and on [256, 512] (100 calls), median of 9 rounds, as
 *
 *   eager        kiln_block_call, op by op through dispatch and the engine;
 *   hybridized   the same block after kiln_block_hybridize: one plan run per
 *                call (one engine op over a planned arena);
 *   floor        the same work as a hand-written C loop over kiln's own
 *                kernels (kk_linear with its ReLU epilogue) on preallocated
 *                buffers in the calling thread: no dispatch, engine or
 *                allocation, the least a plan of these kernels could cost;
 *   openblas     three cblas_sgemv (batch 1) or cblas_sgemm (batch 256)
 *                calls with bias and ReLU in plain C loops;
 *   torch        PyTorch 1.13 eager and torch.jit.trace + torch.jit.freeze,
 *                bench/hybrid_torch.py in a child process (skipped, saying
 *                so, without /usr/bin/python3 and torch).
 *
 * The kiln contenders take turns round by round, so a slow spell of this
 * shared machine falls on all of them. Every contender's output is checked
 * against eager's before anything is timed.
 *
 * Then memory, in a child process (this program run with --memory) whose
 * every allocation goes through a counting allocator: a 16-layer MLP,
 * Dense(1024, relu) x 15 and Dense(1024), at batch 256, peak bytes of
 * hybridized inference (against eager's, and in activation buffers of
 * 256 x 1024 floats) and of one training step, forward under
 * kiln_record_begin and backward, eager against hybridized.
 *
 * KILN_NUM_THREADS is set to 1 here, before kiln's first call (the engine
 * and the pool read it when they start): one engine worker and a pool of
 * one; OpenBLAS is single-threaded inside kiln anyway. */
#include <cblas.h>
#include <errno.h>
#include <math.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bench_common.h"
#include "kernels/elementwise.h"
#include "kernels/gemm.h"
#include "kiln.h"

enum { ROUNDS = 9, LAYERS = 3 };
static const int64_t WIDTH[LAYERS + 1] = {512, 256, 128, 2};
static const char *const PYTHON = "/usr/bin/python3"; /* Debian's, which has torch; the one on PATH may not */

static void check(kiln_status st, const char *what) {
  if (st != KILN_OK) {
    fprintf(stderr, "bench_hybrid: %s: %s\n", what, kiln_last_error());
    exit(1);
  }
}

static void die(const char *what, const char *detail) {
  fprintf(stderr, "bench_hybrid: %s: %s\n", what, detail);
  exit(1);
}

static kiln_block *chapter_mlp(void) {
  kiln_block *net = kiln_nn_sequential();
  kiln_block_add_child(net, NULL, kiln_nn_dense(256, KILN_ACT_RELU));
  kiln_block_add_child(net, NULL, kiln_nn_dense(128, KILN_ACT_RELU));
  check(kiln_block_add_child(net, NULL, kiln_nn_dense(2, KILN_ACT_NONE)), "model");
  return net;
}

/* ------------------------------------------------------------ the floor and OpenBLAS */

/* The MLP's weights and buffers as plain arrays, shared by the two
 * hand-written contenders. */
typedef struct {
  int64_t batch;
  float *x, *w[LAYERS], *b[LAYERS], *h[LAYERS];
} plain_mlp;

static kk_view view2(float *data, int64_t rows, int64_t cols) {
  return (kk_view){.data = (char *)data, .dtype = KILN_F32, .ndim = 2, .shape = {rows, cols}, .strides = {cols, 1}};
}

static kk_view view1(float *data, int64_t n) {
  return (kk_view){.data = (char *)data, .dtype = KILN_F32, .ndim = 1, .shape = {n}, .strides = {1}};
}

/* kiln's kernels called directly, as a plan's steps run them minus the
 * plan: kk_linear with ReLU as its epilogue (the bias written into the
 * output, the product accumulated onto it, ReLU applied while the block is
 * in cache; kiln's own AVX2 loops at batch 1, OpenBLAS's sgemm at 256). */
static void floor_forward(const plain_mlp *m) {
  for (int l = 0; l < LAYERS; l++) {
    kk_view in = view2(l ? m->h[l - 1] : m->x, m->batch, WIDTH[l]), w = view2(m->w[l], WIDTH[l + 1], WIDTH[l]);
    kk_view b = view1(m->b[l], WIDTH[l + 1]), out = view2(m->h[l], m->batch, WIDTH[l + 1]);
    kk_linear(&in, &w, &b, l < LAYERS - 1 ? KK_RELU : KK_UNARY_COUNT, &out);
  }
}

/* What a C programmer writes with OpenBLAS alone: the product, then one loop
 * adding the bias and applying ReLU. */
static void openblas_forward(const plain_mlp *m) {
  for (int l = 0; l < LAYERS; l++) {
    const float *in = l ? m->h[l - 1] : m->x;
    float *out = m->h[l];
    int k = (int)WIDTH[l], n = (int)WIDTH[l + 1];
    if (m->batch == 1)
      cblas_sgemv(CblasRowMajor, CblasNoTrans, n, k, 1.0f, m->w[l], k, in, 1, 0.0f, out, 1);
    else
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)m->batch, n, k, 1.0f, in, k, m->w[l], k, 0.0f, out, n);
    const float *bias = m->b[l];
    bool relu = l < LAYERS - 1;
    for (int64_t i = 0; i < m->batch; i++)
      for (int j = 0; j < n; j++) {
        float v = out[i * n + j] + bias[j];
        out[i * n + j] = relu && v < 0 ? 0 : v;
      }
  }
}

static float *copy_out(kiln_tensor *t) {
  size_t bytes = (size_t)kiln_tensor_numel(t) * sizeof(float);
  float *p = aligned_alloc(64, (bytes + 63) / 64 * 64);
  if (!p) die("aligned_alloc", strerror(errno));
  check(kiln_tensor_copy_to(t, p, bytes), "copying a tensor out");
  return p;
}

static plain_mlp plain_from(kiln_block *net, kiln_tensor *x) {
  plain_mlp m = {.batch = kiln_tensor_dim(x, 0), .x = copy_out(x)};
  kiln_param_list p;
  check(kiln_block_collect_params(net, &p), "parameters");
  for (int l = 0; l < LAYERS; l++) {
    char name[32];
    for (int i = 0; i < p.n; i++) {
      snprintf(name, sizeof name, "%d.weight", l);
      if (!strcmp(p.names[i], name)) m.w[l] = copy_out(p.tensors[i]);
      snprintf(name, sizeof name, "%d.bias", l);
      if (!strcmp(p.names[i], name)) m.b[l] = copy_out(p.tensors[i]);
    }
    if (!m.w[l] || !m.b[l]) die("parameters", "a layer's weight or bias is missing");
    m.h[l] = aligned_alloc(64, (size_t)(m.batch * WIDTH[l + 1] * 4 + 63) / 64 * 64);
    if (!m.h[l]) die("aligned_alloc", strerror(errno));
  }
  kiln_param_list_free(&p);
  return m;
}

static void plain_free(plain_mlp *m) {
  free(m->x);
  for (int l = 0; l < LAYERS; l++) free(m->w[l]), free(m->b[l]), free(m->h[l]);
}

/* A contender's output against eager's: the same model, so it must agree
 * to float32 rounding (different summation orders) before its time means
 * anything. */
static void check_output(const char *who, const float *got, const float *want, int64_t n) {
  double scale = 0;
  for (int64_t i = 0; i < n; i++) scale = fmax(scale, fabs(want[i]));
  for (int64_t i = 0; i < n; i++)
    if (!(fabs(got[i] - want[i]) <= 1e-5 * scale + 1e-6)) {
      fprintf(stderr, "bench_hybrid: %s computes something else: element %lld is %.9g, eager gives %.9g\n", who,
              (long long)i, got[i], want[i]);
      exit(1);
    }
}

/* ------------------------------------------------------------ timing */

typedef enum { EAGER, HYBRIDIZED, FLOOR, OPENBLAS, N_KILN_SIDE } contender;
static const char *const CONTENDER[N_KILN_SIDE] = {"eager", "hybridized", "floor", "openblas"};

typedef struct {
  kiln_block *eager, *hybrid;
  kiln_tensor *x;
  plain_mlp plain;
} contenders;

/* Seconds per call over one round of `calls` calls. kiln's calls return
 * before their work is done, so a round waits for all of it at the end. */
static double round_of(const contenders *c, contender who, int calls) {
  check(kiln_waitall(), "wait");
  double t0 = bench_now();
  for (int i = 0; i < calls; i++) {
    switch (who) {
    case EAGER:
    case HYBRIDIZED:
      kiln_scope_begin();
      kiln_block_call(who == EAGER ? c->eager : c->hybrid, c->x);
      kiln_scope_end();
      break;
    case FLOOR: floor_forward(&c->plain); break;
    default: openblas_forward(&c->plain); break;
    }
  }
  check(kiln_waitall(), "run");
  return (bench_now() - t0) / calls;
}

/* ------------------------------------------------------------ PyTorch */

enum { TORCH_EAGER, TORCH_AUTOGRAD, TORCH_FROZEN, N_TORCH };
static const char *const TORCH_FORM[N_TORCH] = {"eager", "eager_autograd", "frozen"};

/* Runs bench/hybrid_torch.py; fills seconds[batch index][form] (NAN when
 * missing) and returns false, having said why, when the peer cannot run. */
static bool run_torch(const int64_t *batches, const int *calls, double seconds[2][N_TORCH]) {
  for (int b = 0; b < 2; b++)
    for (int f = 0; f < N_TORCH; f++) seconds[b][f] = NAN;
  if (access(PYTHON, X_OK) != 0) {
    printf("PyTorch peer skipped: %s not found\n", PYTHON);
    return false;
  }
  char cmd[2048];
  snprintf(cmd, sizeof cmd, "'%s' '%s/hybrid_torch.py' --batches %lld,%lld --calls %d,%d --rounds %d 2>&1", PYTHON,
           KILN_BENCH_DIR, (long long)batches[0], (long long)batches[1], calls[0], calls[1], ROUNDS);
  fflush(stdout);
  FILE *p = popen(cmd, "r");
  if (!p) die("popen", strerror(errno));
  char line[1024], last[1024] = "";
  int got = 0;
  while (fgets(line, sizeof line, p)) {
    printf("  torch | %s", line);
    snprintf(last, sizeof last, "%s", line);
    char form[32];
    long long batch;
    double s;
    if (sscanf(line, "hybrid_torch %31s %lld %lf", form, &batch, &s) != 3) continue;
    for (int b = 0; b < 2; b++)
      for (int f = 0; f < N_TORCH; f++)
        if (batch == batches[b] && !strcmp(form, TORCH_FORM[f]) && isnan(seconds[b][f])) seconds[b][f] = s, got++;
  }
  int status = pclose(p);
  if (status != 0 || got != 2 * N_TORCH) {
    last[strcspn(last, "\n")] = '\0';
    printf("PyTorch peer skipped: hybrid_torch.py %s (%s)\n",
           WIFEXITED(status) && WEXITSTATUS(status) == 0 ? "printed too few results" : "failed", last);
    return false;
  }
  return true;
}

/* ------------------------------------------------------------ the chapter's benchmark */

static void metric_us(int64_t batch, const char *what, double seconds) {
  char name[96];
  snprintf(name, sizeof name, "hybrid_mlp_b%lld_%s", (long long)batch, what);
  bench_metric(name, seconds * 1e6, "us");
}

static void metric_x(int64_t batch, const char *what, double ratio) {
  char name[96];
  snprintf(name, sizeof name, "hybrid_mlp_b%lld_%s", (long long)batch, what);
  bench_metric(name, ratio, "x");
}

static void chapter_benchmark(void) {
  const int64_t batches[2] = {1, 256};
  const int calls[2] = {1000, 100};
  /* PyTorch first, while kiln has started nothing: its threads, idle, sleep
   * anyway after 0.2 ms of spinning. */
  double torch[2][N_TORCH];
  bool have_torch = run_torch(batches, calls, torch);

  kiln_seed(0);
  contenders c = {chapter_mlp(), chapter_mlp(), NULL, {0}};
  check(kiln_block_initialize(c.eager, NULL, false), "initialize");
  check(kiln_block_initialize(c.hybrid, NULL, false), "initialize");
  for (int b = 0; b < 2; b++) {
    c.x = kiln_random_normal(NULL, 0, 1, KILN_F32, 2, (int64_t[]){batches[b], 512});
    if (b == 0) {
      /* The first calls fix the deferred input sizes; then both blocks get
       * the same values and one is hybridized (for both batch sizes: the
       * second traces a plan of its own). */
      kiln_scope_begin();
      kiln_block_call(c.eager, c.x);
      kiln_block_call(c.hybrid, c.x);
      kiln_scope_end();
      kiln_param_list pe, ph;
      check(kiln_block_collect_params(c.eager, &pe), "parameters");
      check(kiln_block_collect_params(c.hybrid, &ph), "parameters");
      for (int i = 0; i < pe.n; i++) check(kiln_assign(ph.tensors[i], pe.tensors[i]), "copying parameters");
      kiln_param_list_free(&pe);
      kiln_param_list_free(&ph);
      check(kiln_block_hybridize(c.hybrid, NULL), "hybridize");
    }
    c.plain = plain_from(c.eager, c.x);

    int64_t n_out = batches[b] * WIDTH[LAYERS];
    kiln_scope_begin();
    float *want = copy_out(kiln_block_call(c.eager, c.x)), *got = copy_out(kiln_block_call(c.hybrid, c.x));
    kiln_scope_end();
    check_output("hybridized", got, want, n_out);
    floor_forward(&c.plain);
    check_output("the floor", c.plain.h[LAYERS - 1], want, n_out);
    openblas_forward(&c.plain);
    check_output("OpenBLAS", c.plain.h[LAYERS - 1], want, n_out);
    free(want);
    free(got);

    double t[N_KILN_SIDE][ROUNDS], med[N_KILN_SIDE];
    for (int who = 0; who < N_KILN_SIDE; who++) round_of(&c, (contender)who, calls[b] / 10 + 1); /* warm */
    for (int r = 0; r < ROUNDS; r++)
      for (int who = 0; who < N_KILN_SIDE; who++) t[who][r] = round_of(&c, (contender)who, calls[b]);
    for (int who = 0; who < N_KILN_SIDE; who++) med[who] = bench_median(t[who], ROUNDS);

    int64_t B = batches[b];
    printf("batch %lld, %d calls a round, median of %d rounds, per call:\n", (long long)B, calls[b], ROUNDS);
    for (int who = 0; who < N_KILN_SIDE; who++) printf("  %-22s %9.2f us\n", CONTENDER[who], med[who] * 1e6);
    if (have_torch)
      for (int f = 0; f < N_TORCH; f++) printf("  torch %-16s %9.2f us\n", TORCH_FORM[f], torch[b][f] * 1e6);
    for (int who = 0; who < N_KILN_SIDE; who++) metric_us(B, CONTENDER[who], med[who]);
    metric_x(B, "speedup", med[EAGER] / med[HYBRIDIZED]);
    metric_x(B, "hybridized_over_floor", med[HYBRIDIZED] / med[FLOOR]);
    metric_x(B, "openblas_over_floor", med[OPENBLAS] / med[FLOOR]);
    if (have_torch) {
      metric_us(B, "torch_eager", torch[b][TORCH_EAGER]);
      metric_us(B, "torch_eager_autograd", torch[b][TORCH_AUTOGRAD]);
      metric_us(B, "torch_frozen", torch[b][TORCH_FROZEN]);
      metric_x(B, "frozen_over_hybridized", torch[b][TORCH_FROZEN] / med[HYBRIDIZED]);
      metric_x(B, "torch_eager_over_kiln_eager", torch[b][TORCH_EAGER] / med[EAGER]);
    }
    plain_free(&c.plain);
    kiln_tensor_release(c.x);
  }
  kiln_block_release(c.eager);
  kiln_block_release(c.hybrid);
}

/* ------------------------------------------------------------ memory */

/* kiln has no allocator statistics yet, so the child counts through
 * kiln_set_allocator: each block is prefixed by a header (one alignment
 * unit, so the block keeps kiln's alignment) holding its size and the
 * header's length. Kernels allocate scratch on the engine's threads: the
 * counters are atomic. The engine's own pooled records bypass the hook and
 * are not counted (they do not grow with the model).
 *
 * kiln's block cache (src/base/alloc.c) keeps freed tensor storage (any
 * size, up to 64 blocks and 512 MiB) for the next tensor of the same
 * rounded size, without returning it through the hook: to this allocator a
 * cached block is still live. So the figures are the bytes kiln holds, in
 * use or cached: the process's footprint, not a lower bound. Within
 * a step a cached block is reused by the next tensor of its size, so for
 * these models (every activation the same size) the count is close to the
 * bytes in use; across size classes it can only overstate. To keep one
 * region's leftovers out of the next, the cache is emptied
 * (kiln_release_cached_memory, which frees through the hook) after a
 * kiln_waitall before each region, and the bytes live then are subtracted. */
static _Atomic int64_t live_bytes, peak_bytes;

static void *counting_alloc(size_t size, size_t align, void *user) {
  (void)user;
  size_t head = align < 2 * sizeof(size_t) ? 2 * sizeof(size_t) : align;
  char *base = NULL;
  if (posix_memalign((void **)&base, head, head + size) != 0) return NULL;
  size_t *p = (size_t *)(base + head);
  p[-1] = size;
  p[-2] = head;
  int64_t now = atomic_fetch_add(&live_bytes, (int64_t)size) + (int64_t)size;
  int64_t peak = atomic_load(&peak_bytes);
  while (now > peak && !atomic_compare_exchange_weak(&peak_bytes, &peak, now)) {
  }
  return p;
}

static void counting_free(void *ptr, void *user) {
  (void)user;
  size_t *p = ptr;
  atomic_fetch_sub(&live_bytes, (int64_t)p[-1]);
  free((char *)ptr - p[-2]);
}

/* Starts a region: nothing in flight, the cache empty, the peak at the
 * bytes live now, which are returned. */
static int64_t region_begin(void) {
  check(kiln_waitall(), "wait");
  kiln_release_cached_memory();
  int64_t now = atomic_load(&live_bytes);
  atomic_store(&peak_bytes, now);
  return now;
}

static int64_t region_peak(void) {
  check(kiln_waitall(), "wait");
  return atomic_load(&peak_bytes);
}

enum { DEEP_LAYERS = 16, DEEP_WIDTH = 1024, DEEP_BATCH = 256 };

static kiln_block *deep_mlp(void) {
  kiln_block *net = kiln_nn_sequential();
  for (int l = 0; l < DEEP_LAYERS; l++) {
    kiln_dense_params p = kiln_dense_params_default(DEEP_WIDTH);
    p.in_units = DEEP_WIDTH; /* parameters exist at initialize, before any region */
    p.activation = l < DEEP_LAYERS - 1 ? KILN_ACT_RELU : KILN_ACT_NONE;
    check(kiln_block_add_child(net, NULL, kiln_nn_dense_ex(&p)), "deep model");
  }
  check(kiln_block_initialize(net, NULL, false), "initialize");
  return net;
}

static void inference(kiln_block *net, kiln_tensor *x) {
  kiln_scope_begin();
  kiln_tensor *y = kiln_block_call(net, x);
  check(kiln_wait_to_read(y), "inference");
  kiln_scope_end();
}

static void training_step(kiln_block *net, kiln_tensor *x, kiln_tensor *labels) {
  kiln_scope_begin();
  kiln_record_begin(true);
  kiln_tensor *loss = kiln_softmax_cross_entropy(kiln_block_call(net, x), labels);
  kiln_record_end();
  check(kiln_backward(loss, NULL, false), "backward");
  kiln_scope_end();
}

/* Peak bytes over a first call (tracing and compiling when hybridized) and
 * over a second one, each counted from the bytes live before the first, so
 * the second includes what the first left behind for later calls (the
 * plans and their arenas), which is `kept`. */
typedef struct {
  int64_t first, kept, steady;
} peaks;

static peaks measure(kiln_block *net, kiln_tensor *x, kiln_tensor *labels) {
  peaks r;
  int64_t base = region_begin();
  labels ? training_step(net, x, labels) : inference(net, x);
  r.first = region_peak() - base;
  r.kept = region_begin() - base;
  labels ? training_step(net, x, labels) : inference(net, x);
  r.steady = region_peak() - base;
  return r;
}

/* The arena of the last trace in a block's log ("arena N bytes"), or -1:
 * what the plan keeps between calls, for comparison with the peaks. */
static int64_t last_arena(const char *log) {
  int64_t bytes = -1;
  for (const char *s = strstr(log, "arena "); s; s = strstr(s + 1, "arena ")) {
    long long v;
    if (sscanf(s, "arena %lld bytes", &v) == 1) bytes = v;
  }
  return bytes;
}

static int memory_child(void) {
  /* Before kiln's first call, so every block kiln frees came from this
   * allocator (kiln_waitall, which the hook's comment asks for before a
   * switch, has nothing to wait for yet). */
  kiln_set_allocator(counting_alloc, counting_free, NULL);
  kiln_seed(1);
  const double act = (double)DEEP_BATCH * DEEP_WIDTH * sizeof(float);
  kiln_tensor *x = kiln_random_normal(NULL, 0, 1, KILN_F32, 2, (int64_t[]){DEEP_BATCH, DEEP_WIDTH});
  int64_t label_values[DEEP_BATCH];
  for (int i = 0; i < DEEP_BATCH; i++) label_values[i] = (i * 37) % DEEP_WIDTH;
  kiln_tensor *labels = kiln_from_data(KILN_I64, 1, (int64_t[]){DEEP_BATCH}, label_values);

  int64_t before = region_begin();
  kiln_block *nets[2] = {deep_mlp(), deep_mlp()}; /* eager, hybridized */
  int64_t params = (region_begin() - before) / 2;
  check(kiln_block_hybridize(nets[1], NULL), "hybridize");

  peaks infer[2], train[2];
  for (int k = 0; k < 2; k++) infer[k] = measure(nets[k], x, NULL);
  int64_t arena = last_arena(kiln_block_trace_log(nets[1]));
  for (int k = 0; k < 2; k++) train[k] = measure(nets[k], x, labels);

  printf("memory: %d x Dense(%d) at batch %d; one activation buffer %.0f bytes; parameters and their gradients "
         "%.1f MiB a model\n",
         DEEP_LAYERS, DEEP_WIDTH, DEEP_BATCH, act, (double)params / (1 << 20));
  printf("%s", kiln_block_trace_log(nets[1]));
  printf("  %-34s %12s %12s %12s\n", "bytes beyond what was live", "first peak", "kept", "later peak");
  const char *rows[4] = {"inference, eager", "inference, hybridized", "training step, eager", "training step, hybridized"};
  const peaks *vals[4] = {&infer[0], &infer[1], &train[0], &train[1]};
  for (int i = 0; i < 4; i++)
    printf("  %-34s %12lld %12lld %12lld  (%.2f / %.2f / %.2f buffers)\n", rows[i], (long long)vals[i]->first,
           (long long)vals[i]->kept, (long long)vals[i]->steady, (double)vals[i]->first / act,
           (double)vals[i]->kept / act, (double)vals[i]->steady / act);
  bench_metric("hybrid_mem_activation_buffer_bytes", act, "bytes");
  bench_metric("hybrid_mem_params_and_grads_bytes", (double)params, "bytes");
  bench_metric("hybrid_mem_infer_eager_bytes", (double)infer[0].steady, "bytes");
  bench_metric("hybrid_mem_infer_hybridized_bytes", (double)infer[1].steady, "bytes");
  bench_metric("hybrid_mem_infer_hybridized_first_call_bytes", (double)infer[1].first, "bytes");
  bench_metric("hybrid_mem_infer_hybridized_kept_bytes", (double)infer[1].kept, "bytes");
  bench_metric("hybrid_mem_infer_hybridized_buffers", (double)infer[1].steady / act, "buffers");
  if (arena >= 0) bench_metric("hybrid_mem_infer_plan_arena_bytes", (double)arena, "bytes");
  bench_metric("hybrid_mem_train_eager_bytes", (double)train[0].steady, "bytes");
  bench_metric("hybrid_mem_train_hybridized_bytes", (double)train[1].steady, "bytes");
  bench_metric("hybrid_mem_train_hybridized_first_step_bytes", (double)train[1].first, "bytes");
  bench_metric("hybrid_mem_train_hybridized_kept_bytes", (double)train[1].kept, "bytes");
  bench_metric("hybrid_mem_train_hybridized_over_eager", (double)train[1].steady / (double)train[0].steady, "ratio");

  for (int k = 0; k < 2; k++) kiln_block_release(nets[k]);
  kiln_tensor_release(x);
  kiln_tensor_release(labels);
  check(kiln_waitall(), "wait");
  return 0;
}

/* Runs this program again with --memory, its output going where ours goes
 * (run.sh renames the metrics of its second pass as they pass). */
static void run_memory_child(const char *self) {
  fflush(stdout);
  pid_t pid = fork();
  if (pid < 0) die("fork", strerror(errno));
  if (pid == 0) {
    execl(self, self, "--memory", (char *)NULL);
    fprintf(stderr, "bench_hybrid: cannot run %s: %s\n", self, strerror(errno));
    _exit(127);
  }
  int status;
  while (waitpid(pid, &status, 0) < 0)
    if (errno != EINTR) die("waitpid", strerror(errno));
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) die("the memory measurement", "failed");
}

int main(int argc, char **argv) {
  if (setenv("KILN_NUM_THREADS", "1", 1) != 0) die("setenv", strerror(errno));
  if (argc == 2 && !strcmp(argv[1], "--memory")) return memory_child();
  if (argc != 1) {
    fprintf(stderr, "usage: %s\n", argv[0]);
    return 2;
  }
  printf("d2l 13.1's MLP, 1 thread (KILN_NUM_THREADS=1, OpenBLAS and torch single-threaded)\n");
  chapter_benchmark();
  run_memory_child("/proc/self/exe");
  return 0;
}
