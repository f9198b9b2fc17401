"""d2l 13.2 (Asynchronous Computation), against kiln: ops return at once and
run on kiln's engine; waits are the barriers.

    PYTHONPATH=build/python /usr/bin/python3 examples/python/async.py
"""
import time

import kiln
from kiln import nd

try:
    import numpy as np
except ImportError:
    np = None
try:
    import torch
except ImportError:
    torch = None


class Benchmark:
    def __init__(self, description):
        self.description = description

    def __enter__(self):
        self.start = time.perf_counter()
        return self

    def __exit__(self, *args):
        self.seconds = time.perf_counter() - self.start
        print(f"{self.description}: {self.seconds:.4f} sec")


def main():
    # Warm-up as in the book, then ten 1000x1000 products.
    a = nd.random.normal(shape=(1000, 1000))
    if np is not None:
        with Benchmark("numpy"):
            for _ in range(10):
                an = np.random.normal(size=(1000, 1000)).astype(np.float32)
                bn = an @ an
    with Benchmark("kiln"):
        for _ in range(10):
            a = nd.random.normal(shape=(1000, 1000))
            b = a @ a
        kiln.waitall()

    # The call returns before the work is done: only the wait takes the time.
    with Benchmark("kiln, the calls alone"):
        for _ in range(10):
            a = nd.random.normal(shape=(1000, 1000))
            b = a @ a
    with Benchmark("kiln, then the wait"):
        kiln.waitall()

    # Barriers: wait_to_read, asnumpy and item wait; waitall waits for everything.
    x = nd.ones((1, 2))
    y = nd.ones((1, 2))
    z = x * y + 2
    z.wait_to_read()
    print("z =", z.tolist())

    # 13.2.3: many small ops, one wait at the end versus a wait per step.
    n = 10000
    x = nd.ones((1, 2))
    with Benchmark(f"kiln, {n} steps, wait each"):
        for _ in range(n):
            y = x + 1
            y.wait_to_read()
    with Benchmark(f"kiln, {n} steps, wait once"):
        for _ in range(n):
            y = x + 1
        kiln.waitall()
    if np is not None:
        xn = np.ones((1, 2), np.float32)
        with Benchmark(f"numpy, {n} steps"):
            for _ in range(n):
                yn = xn + 1
    if torch is not None:
        xt = torch.ones((1, 2))
        with Benchmark(f"torch, {n} steps"):
            for _ in range(n):
                yt = xt + 1


if __name__ == "__main__":
    main()
