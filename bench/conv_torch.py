"""PyTorch peer for bench_conv: median seconds per call (samples of back-to-back calls) at the thread count given.
Prints `name seconds`.

    conv_torch.py THREADS REPS CALLS         forward conv2d on LeNet's shapes at batch 256
    conv_torch.py THREADS REPS CALLS pool    max and average pooling 2x2, forward and backward, on LeNet's two
                                             pooled activations at batch 256

The pool forwards are the plain functional calls without autograd (max_pool2d then keeps no indices, its fastest
road); the backwards are the aten ops autograd runs, max pooling's with the indices its training forward saved."""
import statistics
import sys
import time

import torch

threads, reps, calls = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
what = sys.argv[4] if len(sys.argv) > 4 else "conv"
torch.set_num_threads(threads)
torch.manual_seed(0)


def median_seconds(fn):
    for _ in range(3):
        fn()
    times = []
    for _ in range(reps):  # samples of `calls` back-to-back calls, as bench_conv
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        times.append((time.perf_counter() - t0) / calls)
    return statistics.median(times)


def conv_cases():
    cases = {
        "conv1": (torch.randn(256, 1, 28, 28), torch.randn(6, 1, 5, 5), torch.randn(6), 2),
        "conv2": (torch.randn(256, 6, 14, 14), torch.randn(16, 6, 5, 5), torch.randn(16), 0),
    }
    for name, (x, w, b, pad) in cases.items():
        yield name, lambda x=x, w=w, b=b, pad=pad: torch.nn.functional.conv2d(x, w, b, padding=pad)


def pool_cases():
    F, aten = torch.nn.functional, torch.ops.aten
    k, s, p, d = [2, 2], [2, 2], [0, 0], [1, 1]
    for name, shape in (("pool1", (256, 6, 28, 28)), ("pool2", (256, 16, 10, 10))):
        x = torch.randn(*shape)
        _, idx = aten.max_pool2d_with_indices(x, k, s, p, d, False)
        gy = torch.randn(shape[0], shape[1], shape[2] // 2, shape[3] // 2)
        yield name + "_max_fwd", lambda x=x: F.max_pool2d(x, 2)
        yield name + "_max_bwd", lambda x=x, gy=gy, idx=idx: aten.max_pool2d_with_indices_backward(
            gy, x, k, s, p, d, False, idx)
        yield name + "_avg_fwd", lambda x=x: F.avg_pool2d(x, 2)
        yield name + "_avg_bwd", lambda x=x, gy=gy: aten.avg_pool2d_backward(gy, x, k, s, p, False, True, None)


with torch.no_grad():
    for name, fn in (pool_cases() if what == "pool" else conv_cases()):
        print(name, median_seconds(fn), flush=True)
