/* Elementwise fusion: a chain of seven float ops over 4 M elements
 * (16 MiB, beyond the caches), compiled with fusion off (seven passes over
 * memory, the intermediate buffers reused in place) and on (one loop over
 * L1-sized chunks), and the same chain eagerly; 1 thread, median of 9
 * rounds of 10 runs. Also linear + relu with the activation in the GEMM's
 * epilogue or as a step of its own, at batch 256. */
#include <stdlib.h>

#include "bench_common.h"
#include "kiln.h"

enum { ROUNDS = 9, RUNS = 10 };

static void check(kiln_status st, const char *what) {
  if (st != KILN_OK) {
    fprintf(stderr, "bench_fusion: %s: %s\n", what, kiln_last_error());
    exit(1);
  }
}

/* Cheap arithmetic, so memory traffic is what costs: relu(x * 0.5 + b) * x
 * - 0.25, clipped, squared. (With tanh and sigmoid in the chain, libm's
 * scalar calls dominate and fusion gains 10%.) */
static kiln_tensor *chain(kiln_tensor *x, kiln_tensor *b) {
  kiln_tensor *t = kiln_mul(kiln_relu(kiln_add(kiln_mul_scalar(x, 0.5), b)), x);
  return kiln_square(kiln_clip(kiln_sub_scalar(t, 0.25), -1, 1));
}

static kiln_tensor *dense(kiln_tensor *x, kiln_tensor *w, kiln_tensor *b) { return kiln_relu(kiln_linear(x, w, b)); }

static double time_plan(kiln_plan *p, int n_in, kiln_tensor **in) {
  double t[ROUNDS];
  for (int r = 0; r < ROUNDS; r++) {
    check(kiln_waitall(), "wait");
    double t0 = bench_now();
    for (int i = 0; i < RUNS; i++) {
      kiln_scope_begin();
      kiln_tensor *y;
      check(kiln_plan_run(p, n_in, in, &y), "run");
      kiln_scope_end();
    }
    check(kiln_waitall(), "run");
    t[r] = (bench_now() - t0) / RUNS;
  }
  return bench_median(t, ROUNDS);
}

static kiln_plan *compile(kiln_graph *g, kiln_tensor *y, bool fuse) {
  kiln_compile_options o = kiln_compile_options_default();
  o.fuse = fuse;
  kiln_plan *p = kiln_graph_compile(g, 1, &y, &o);
  if (!p) check(KILN_ERR_INTERNAL, "compile");
  return p;
}

int main(void) {
  setenv("KILN_NUM_THREADS", "1", 1); /* before kiln starts its engine */
  kiln_seed(0);
  const int64_t n = 4 << 20;
  kiln_tensor *x = kiln_random_normal(NULL, 0, 1, KILN_F32, 2, (int64_t[]){n / 1024, 1024});
  kiln_tensor *b = kiln_random_normal(NULL, 0, 1, KILN_F32, 1, (int64_t[]){1024});
  kiln_graph *g = kiln_graph_new();
  kiln_tensor *gx = kiln_graph_input(g, "x", KILN_F32, 2, (int64_t[]){n / 1024, 1024});
  kiln_tensor *gy = chain(gx, b);
  kiln_plan *unfused = compile(g, gy, false), *fused = compile(g, gy, true);
  double t_unfused = time_plan(unfused, 1, &x), t_fused = time_plan(fused, 1, &x);
  double t[ROUNDS];
  for (int r = 0; r < ROUNDS; r++) {
    check(kiln_waitall(), "wait");
    double t0 = bench_now();
    for (int i = 0; i < RUNS; i++) {
      kiln_scope_begin();
      chain(x, b);
      kiln_scope_end();
    }
    check(kiln_waitall(), "eager");
    t[r] = (bench_now() - t0) / RUNS;
  }
  double t_eager = bench_median(t, ROUNDS);
  printf("chain of 7 ops on 4 M floats: eager %.2f ms, plan unfused %.2f ms, fused %.2f ms\n", t_eager * 1e3,
         t_unfused * 1e3, t_fused * 1e3);
  bench_metric("fusion_chain_eager", t_eager * 1e3, "ms");
  bench_metric("fusion_chain_unfused", t_unfused * 1e3, "ms");
  bench_metric("fusion_chain_fused", t_fused * 1e3, "ms");
  bench_metric("fusion_chain_speedup", t_unfused / t_fused, "x");

  kiln_tensor *dx = kiln_random_normal(NULL, 0, 1, KILN_F32, 2, (int64_t[]){256, 1024});
  kiln_tensor *w = kiln_random_normal(NULL, 0, 0.03, KILN_F32, 2, (int64_t[]){1024, 1024});
  kiln_graph *h = kiln_graph_new();
  kiln_tensor *hx = kiln_graph_input(h, "x", KILN_F32, 2, (int64_t[]){256, 1024});
  kiln_tensor *hy = dense(hx, w, b);
  kiln_plan *separate = compile(h, hy, false), *epilogue = compile(h, hy, true);
  double t_separate = time_plan(separate, 1, &dx), t_epilogue = time_plan(epilogue, 1, &dx);
  printf("linear + relu [256, 1024] x [1024, 1024]: relu a step of its own %.3f ms, in the GEMM's epilogue %.3f ms\n",
         t_separate * 1e3, t_epilogue * 1e3);
  bench_metric("fusion_dense_relu_separate", t_separate * 1e3, "ms");
  bench_metric("fusion_dense_relu_epilogue", t_epilogue * 1e3, "ms");
  bench_metric("fusion_dense_relu_speedup", t_separate / t_epilogue, "x");
  kiln_plan_free(unfused), kiln_plan_free(fused), kiln_plan_free(separate), kiln_plan_free(epilogue);
  kiln_graph_release(g), kiln_graph_release(h);
  kiln_tensor_release(x), kiln_tensor_release(b), kiln_tensor_release(dx), kiln_tensor_release(w);
  return 0;
}
