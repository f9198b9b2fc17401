/* d2l 13.1's hybridize benchmark: the MLP Dense(256, relu), Dense(128,
 * relu), Dense(2) on a [1, 512] input (and on [256, 512]), called N times
 * eagerly and hybridized, waiting once at the end; time per call, median
 * of 7 rounds. Hybridized calls skip per-op dispatch and allocation: one
 * engine op per call over a planned arena. */
#include <stdint.h>

#include "bench_common.h"
#include "kiln.h"

static void check(kiln_status st, const char *what) {
  if (st != KILN_OK) {
    fprintf(stderr, "bench_hybrid: %s: %s\n", what, kiln_last_error());
    exit(1);
  }
}

static double per_call(kiln_block *net, kiln_tensor *x, int calls) {
  double t[7];
  for (int r = 0; r < 7; r++) {
    check(kiln_waitall(), "wait");
    double t0 = bench_now();
    for (int i = 0; i < calls; i++) {
      kiln_scope_begin();
      kiln_block_call(net, x);
      kiln_scope_end();
    }
    check(kiln_waitall(), "run");
    t[r] = (bench_now() - t0) / calls;
  }
  return bench_median(t, 7);
}

int main(void) {
  kiln_seed(0);
  kiln_block *net = kiln_nn_sequential();
  kiln_block_add_child(net, NULL, kiln_nn_dense(256, KILN_ACT_RELU));
  kiln_block_add_child(net, NULL, kiln_nn_dense(128, KILN_ACT_RELU));
  check(kiln_block_add_child(net, NULL, kiln_nn_dense(2, KILN_ACT_NONE)), "model");
  check(kiln_block_initialize(net, NULL, false), "initialize");
  const int64_t batches[2] = {1, 256};
  for (int b = 0; b < 2; b++) {
    kiln_tensor *x = kiln_random_normal(NULL, 0, 1, KILN_F32, 2, (int64_t[]){batches[b], 512});
    int calls = batches[b] == 1 ? 2000 : 200;
    check(kiln_block_hybridize(net, &(kiln_hybridize_options){.active = false}), "imperative");
    per_call(net, x, 10); /* shapes fixed, caches warm */
    double eager = per_call(net, x, calls);
    check(kiln_block_hybridize(net, NULL), "hybridize");
    per_call(net, x, 10);
    double hybrid = per_call(net, x, calls);
    char name[96];
    snprintf(name, sizeof name, "hybrid_mlp_b%lld_eager", (long long)batches[b]);
    bench_metric(name, eager * 1e6, "us");
    snprintf(name, sizeof name, "hybrid_mlp_b%lld_hybridized", (long long)batches[b]);
    bench_metric(name, hybrid * 1e6, "us");
    snprintf(name, sizeof name, "hybrid_mlp_b%lld_speedup", (long long)batches[b]);
    bench_metric(name, eager / hybrid, "x");
    kiln_tensor_release(x);
  }
  kiln_block_release(net);
  return 0;
}
