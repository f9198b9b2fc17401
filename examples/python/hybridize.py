"""d2l 13.1 (Compilers and Interpreters), against kiln: the same MLP run
imperatively and hybridized, a forward whose print shows when Python runs,
and the export that runs with no Python at all.

    PYTHONPATH=build/python /usr/bin/python3 examples/python/hybridize.py
"""
import os
import sys
import tempfile
import time

import kiln
from kiln import nd, nn


class Benchmark:
    """d2l's timer: wall-clock time of a block of code."""

    def __init__(self, description="Done"):
        self.description = description

    def __enter__(self):
        self.start = time.perf_counter()
        return self

    def __exit__(self, *args):
        self.seconds = time.perf_counter() - self.start
        print(f"{self.description}: {self.seconds:.4f} sec")


def get_net():
    net = nn.HybridSequential()
    net.add(nn.Dense(256, activation="relu"), nn.Dense(128, activation="relu"), nn.Dense(2))
    net.initialize()
    return net


class HybridNet(nn.HybridBlock):
    def __init__(self):
        super().__init__()
        self.hidden = nn.Dense(4)
        self.output = nn.Dense(2)

    def forward(self, x):
        print("  forward: x", x.shape)
        x = nd.relu(self.hidden(x))
        print("  forward: hidden", x.shape)
        return self.output(x)


def main():
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    x = nd.random.normal(shape=(1, 512))
    net = get_net()
    eager = net(x)
    with Benchmark("Without hybridization") as t_eager:
        for _ in range(runs):
            net(x)
        kiln.waitall()
    net.hybridize()
    hybrid = net(x)
    with Benchmark("With hybridization") as t_hybrid:
        for _ in range(runs):
            net(x)
        kiln.waitall()
    same = eager.tolist() == hybrid.tolist()
    print(f"per call: {t_eager.seconds / runs * 1e6:.1f} us eager, {t_hybrid.seconds / runs * 1e6:.1f} us hybridized "
          f"({t_eager.seconds / t_hybrid.seconds:.2f}x); outputs identical: {same}")

    print("\nThe print in forward, imperatively (every call):")
    hnet = HybridNet()
    hnet.initialize()
    y = nd.random.normal(shape=(1, 3))
    hnet(y)
    hnet(y)
    print("...hybridized: it prints while the first call traces, then never:")
    hnet.hybridize()
    hnet(y)
    hnet(y)
    hnet(y)
    print("trace log:", hnet.trace_log.strip())

    with tempfile.TemporaryDirectory() as d:
        prefix = os.path.join(d, "my_mlp")
        net.export(prefix)
        print("\nexported:", sorted(os.listdir(d)))
        model = kiln.load(prefix)
        print("kiln.load(...)(x) equals the hybridized net:", model(x).tolist() == hybrid.tolist())


if __name__ == "__main__":
    main()
