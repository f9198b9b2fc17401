"""numpy peer for bench_elementwise: median seconds per call of add, mul and
relu on the same 16 M floats. Prints `name seconds` lines."""
import statistics
import sys
import time

import numpy as np

n = int(sys.argv[1])
reps = int(sys.argv[2])
rng = np.random.default_rng(0)
a = rng.uniform(-1, 1, n).astype(np.float32)
b = rng.uniform(-1, 1, n).astype(np.float32)
ops = {
    "add": lambda: np.add(a, b),
    "mul": lambda: np.multiply(a, b),
    "relu": lambda: np.maximum(a, 0),
}
for name, fn in ops.items():
    fn()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    print(name, statistics.median(times))
try:
    from threadpoolctl import threadpool_info
    for info in threadpool_info():
        print("# numpy blas:", info.get("internal_api"), info.get("architecture"), file=sys.stderr)
except ImportError:
    pass
