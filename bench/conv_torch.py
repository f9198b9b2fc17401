"""PyTorch peer for bench_conv: median seconds per forward conv2d (samples of back-to-back calls) on LeNet's
shapes at batch 256, at the thread count given. Prints `name seconds`."""
import statistics
import sys
import time

import torch

threads, reps, calls = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
torch.set_num_threads(threads)
torch.manual_seed(0)
cases = {
    "conv1": (torch.randn(256, 1, 28, 28), torch.randn(6, 1, 5, 5), torch.randn(6), 2),
    "conv2": (torch.randn(256, 6, 14, 14), torch.randn(16, 6, 5, 5), torch.randn(16), 0),
}
with torch.no_grad():
    for name, (x, w, b, pad) in cases.items():
        for _ in range(3):
            torch.nn.functional.conv2d(x, w, b, padding=pad)
        times = []
        for _ in range(reps):  # samples of `calls` back-to-back calls, as bench_conv
            t0 = time.perf_counter()
            for _ in range(calls):
                torch.nn.functional.conv2d(x, w, b, padding=pad)
            times.append((time.perf_counter() - t0) / calls)
        print(name, statistics.median(times))
