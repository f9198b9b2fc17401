"""PyTorch peer for bench_hybrid (d2l 13.1): the MLP Dense(256, relu), Dense(128, relu), Dense(2) on a
(B, 512) input, called N times per round, median of R rounds, one thread, in three forms:

  eager           net(x) under torch.no_grad(), as kiln's eager calls (which build no tape)
  eager_autograd  net(x) as d2l's code calls it, parameters requiring grad (the graph is built and dropped)
  frozen          torch.jit.freeze(torch.jit.trace(net.eval(), x)) under torch.no_grad()

and prints one line per form and batch for bench_hybrid to parse:

  hybrid_torch <form> <batch> <seconds per call>

  hybrid_torch.py [--batches 1,256] [--calls 1000,100] [--rounds 7]"""
import argparse
import os
import statistics
import time

# Debian's torch hands matrix products to OpenBLAS (pthreads), which torch.set_num_threads does not reach
# (bench/train_torch.py measured it): one BLAS thread, read when torch loads it, so before the import.
os.environ["OPENBLAS_NUM_THREADS"] = "1"

import torch  # noqa: E402
from torch import nn  # noqa: E402


def per_call(fn, x, calls, rounds):
    for _ in range(max(calls // 10, 10)):  # warm-up: allocator caches, the frozen graph's optimisation runs
        fn(x)
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        for _ in range(calls):
            fn(x)
        times.append((time.perf_counter() - t0) / calls)
    return statistics.median(times)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--batches", default="1,256")
    ap.add_argument("--calls", default="1000,100")
    ap.add_argument("--rounds", type=int, default=7)
    a = ap.parse_args()
    batches = [int(b) for b in a.batches.split(",")]
    calls = [int(c) for c in a.calls.split(",")]
    if len(calls) != len(batches):
        ap.error("--calls needs one count per batch")
    torch.set_num_threads(1)
    torch.set_num_interop_threads(1)
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(512, 256), nn.ReLU(), nn.Linear(256, 128), nn.ReLU(), nn.Linear(128, 2)).eval()
    print(f"PyTorch {torch.__version__}, {torch.get_num_threads()} thread(s)", flush=True)
    for batch, n in zip(batches, calls):
        x = torch.randn(batch, 512)
        with torch.no_grad():
            eager = per_call(net, x, n, a.rounds)
            frozen_net = torch.jit.freeze(torch.jit.trace(net, x))
            frozen = per_call(frozen_net, x, n, a.rounds)
        autograd = per_call(net, x, n, a.rounds)
        for form, seconds in (("eager", eager), ("eager_autograd", autograd), ("frozen", frozen)):
            print(f"hybrid_torch {form} {batch} {seconds:.9g}", flush=True)


if __name__ == "__main__":
    main()
