"""kiln from Python against PyTorch 1.13 and numpy, in one process, 1 thread:

- d2l 13.1's MLP (Dense(256, relu), Dense(128, relu), Dense(2)) at batch 1:
  kiln eager, kiln hybridized (Python calls one compiled plan), PyTorch eager
  under no_grad, torch.jit.trace + freeze; 1 000 calls a round, one wait at
  the end, median of 7 rounds;
- the cost of one small op, `y = x + 1` on 10 float32 elements: kiln, numpy,
  PyTorch; best of 5 repeats of 100 000 calls;
- d2l 13.2's loop, 10 000 iterations of `y = x + 1` on a [100] array, with
  one wait at the end and with a wait after each (numpy and PyTorch are
  synchronous: one figure each).

Run by build/bench/bench_python (bench/CMakeLists.txt sets PYTHONPATH);
ends with `metric` lines. PyTorch and numpy are skipped, saying so, when
the interpreter lacks them.
"""
import os
import statistics
import time
import timeit

os.environ.setdefault("KILN_NUM_THREADS", "1")  # before kiln starts its engine

import kiln  # noqa: E402
from kiln import nd, nn  # noqa: E402

ROUNDS, CALLS = 7, 1000


def metric(name, value, unit):
    print(f"metric {name} {value:.6g} {unit}")


def per_call(fn, wait):
    times = []
    for _ in range(ROUNDS):
        wait()
        t0 = time.perf_counter()
        for _ in range(CALLS):
            fn()
        wait()
        times.append((time.perf_counter() - t0) / CALLS)
    return statistics.median(times)


def mlp_kiln():
    net = nn.HybridSequential()
    net.add(nn.Dense(256, activation="relu"), nn.Dense(128, activation="relu"), nn.Dense(2))
    net.initialize()
    x = nd.random.normal(0, 1, (1, 512))
    net(x)
    eager = per_call(lambda: net(x), kiln.waitall)
    net.hybridize()
    net(x)
    hybrid = per_call(lambda: net(x), kiln.waitall)
    return eager, hybrid


def mlp_torch(torch):
    torch.set_num_threads(1)
    net = torch.nn.Sequential(torch.nn.Linear(512, 256), torch.nn.ReLU(), torch.nn.Linear(256, 128),
                              torch.nn.ReLU(), torch.nn.Linear(128, 2)).eval()
    x = torch.randn(1, 512)
    with torch.no_grad():
        eager = per_call(lambda: net(x), lambda: None)
        frozen = torch.jit.freeze(torch.jit.trace(net, x))
        for _ in range(10):
            frozen(x)
        script = per_call(lambda: frozen(x), lambda: None)
    return eager, script


def op_cost(stmt, env):
    return min(timeit.repeat(stmt, globals=env, number=100000, repeat=5)) / 100000


def loop_13_2(add, wait_each, wait_end):
    times = []
    for _ in range(5):
        t0 = time.perf_counter()
        for _ in range(10000):
            y = add()
            wait_each(y)
        wait_end()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main():
    try:
        import torch
    except ImportError:
        torch = None
        print("bench_python: no torch for this interpreter; PyTorch figures skipped")
    try:
        import numpy as np
    except ImportError:
        np = None
        print("bench_python: no numpy for this interpreter; numpy figures skipped")

    eager, hybrid = mlp_kiln()
    metric("python_mlp_b1_kiln_eager", eager * 1e6, "us")
    metric("python_mlp_b1_kiln_hybridized", hybrid * 1e6, "us")
    if torch:
        t_eager, t_frozen = mlp_torch(torch)
        metric("python_mlp_b1_torch_eager", t_eager * 1e6, "us")
        metric("python_mlp_b1_torch_frozen", t_frozen * 1e6, "us")
        metric("python_mlp_b1_torch_eager_over_kiln_eager", t_eager / eager, "x")
        metric("python_mlp_b1_torch_frozen_over_kiln_hybridized", t_frozen / hybrid, "x")

    x = nd.ones((10,))
    metric("python_op_add_kiln", op_cost("y = x + 1", {"x": x}) * 1e9, "ns")
    kiln.waitall()
    if np is not None:
        metric("python_op_add_numpy", op_cost("y = x + 1", {"x": np.ones(10, np.float32)}) * 1e9, "ns")
    if torch:
        metric("python_op_add_torch", op_cost("y = x + 1", {"x": torch.ones(10)}) * 1e9, "ns")

    a = nd.ones((100,))
    once = loop_13_2(lambda: a + 1, lambda y: None, kiln.waitall)
    each = loop_13_2(lambda: a + 1, lambda y: y.wait_to_read(), kiln.waitall)
    metric("python_13_2_kiln_wait_once", once * 1e3, "ms")
    metric("python_13_2_kiln_wait_each", each * 1e3, "ms")
    if np is not None:
        b = np.ones(100, np.float32)
        metric("python_13_2_numpy", loop_13_2(lambda: b + 1, lambda y: None, lambda: None) * 1e3, "ms")
    if torch:
        c = torch.ones(100)
        metric("python_13_2_torch", loop_13_2(lambda: c + 1, lambda y: None, lambda: None) * 1e3, "ms")


if __name__ == "__main__":
    main()
