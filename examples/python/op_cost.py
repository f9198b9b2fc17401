"""The cost of one small op from Python, `y = x + 1` on a 10-element
float32 array: kiln (returns once the op is pushed; one wait at the end),
numpy and PyTorch when installed. Best of 5 repeats of 200 000 calls.

    PYTHONPATH=build/python /usr/bin/python3 examples/python/op_cost.py
"""
import timeit

import kiln
from kiln import nd


def cost(stmt, env, number=200000):
    return min(timeit.repeat(stmt, globals=env, number=number, repeat=5)) / number * 1e9


def main():
    rows = [("kiln", cost("y = x + 1", {"x": nd.ones((10,))}))]
    kiln.waitall()
    rows.append(("kiln, x + y", cost("z = x + y", {"x": nd.ones((10,)), "y": nd.ones((10,))})))
    kiln.waitall()
    try:
        import numpy as np
        rows.append(("numpy", cost("y = x + 1", {"x": np.ones(10, np.float32)})))
    except ImportError:
        pass
    try:
        import torch
        torch.set_num_threads(1)
        rows.append(("torch", cost("y = x + 1", {"x": torch.ones(10)})))
    except ImportError:
        pass
    rows.append(("Python float + 1 (the interpreter's floor)", cost("y = x + 1", {"x": 1.0})))
    for name, ns in rows:
        print(f"{name:45s} {ns:8.0f} ns per op")


if __name__ == "__main__":
    main()
