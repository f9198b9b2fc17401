"""Reference counting across the boundary: an array owns one kiln reference,
so loops of small ops (eager, inside Python forwards kiln calls back, under
autograd) keep memory flat."""
import os
import sys
import unittest

import kiln
from kiln import nd, nn, autograd
from kilntest import rss_growth


class Net(nn.HybridBlock):
    def __init__(self):
        super().__init__()
        self.dense = nn.Dense(4)

    def forward(self, x):
        return nd.relu(self.dense(x) + 1) * 2


@unittest.skipUnless(sys.platform.startswith("linux"), "reads /proc/self/status")
@unittest.skipIf(os.environ.get("KILN_PY_SANITIZED"), "ASan's quarantine keeps freed memory: RSS measures nothing")
class NoLeaks(unittest.TestCase):
    def test_small_ops(self):
        x = nd.ones((4,))

        def body():
            y = x + 1
            z = (y * y - x) / 2
            z[1:3]
            nd.sum(z, axis=0) > 3

        # 170 000 iterations, 6 arrays each: 1e6 ops, where a leaked tensor
        # (header and storage, over 200 bytes) per op would be over 200 MiB.
        grown = rss_growth(body, 170000)
        self.assertLess(grown, 4096, "RSS grew by %d KiB over 1e6 small ops" % grown)

    def test_python_forward_eager_and_hybridized(self):
        net = Net()
        net.initialize()
        x = nd.ones((2, 3))
        grown = rss_growth(lambda: net(x), 20000)
        self.assertLess(grown, 4096, "eager: RSS grew by %d KiB" % grown)
        net.hybridize()
        grown = rss_growth(lambda: net(x), 20000)
        self.assertLess(grown, 4096, "hybridized: RSS grew by %d KiB" % grown)

    def test_autograd_loop(self):
        w = nd.ones((3,))
        w.attach_grad()

        def body():
            with autograd.record():
                y = nd.sum(nd.exp(w * 0.5))
            y.backward()
            w.grad

        grown = rss_growth(body, 20000)
        self.assertLess(grown, 4096, "RSS grew by %d KiB" % grown)


class PythonReferences(unittest.TestCase):
    def test_python_references(self):
        x = nd.ones((2,))
        base = sys.getrefcount(x)
        for _ in range(1000):
            x + 1
            x[0]
            memoryview(x).release()
        self.assertEqual(sys.getrefcount(x), base)
        m = memoryview(x)
        self.assertEqual(sys.getrefcount(x), base + 1)  # the export holds the array
        m.release()
        self.assertEqual(sys.getrefcount(x), base)


if __name__ == "__main__":
    unittest.main()
