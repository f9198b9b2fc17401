"""Devices and the key-value store from Python (kiln.cpu, x.context,
as_in_context, kiln.kvstore, gluon.utils.split_and_load), against values
computed here."""
import unittest

import kiln
from kiln import nd, gluon, autograd
from kilntest import assert_close


class Devices(unittest.TestCase):
    def test_placement_and_copies(self):
        x = nd.array([[1.0, -2.0], [3.0, 4.0]])
        self.assertEqual(x.context, kiln.cpu(0))
        with kiln.cpu(1):
            self.assertEqual(kiln.current_device(), kiln.cpu(1))
            z = nd.zeros((2, 2))
        self.assertEqual(kiln.current_device(), kiln.cpu(0))
        self.assertEqual(z.context, kiln.cpu(1))
        y = x.as_in_context(kiln.cpu(1))
        self.assertEqual(y.context, kiln.cpu(1))
        self.assertIs(x.as_in_context(kiln.cpu(0)), x)
        w = (y * 2 + z).copyto(kiln.cpu(0))  # computed on cpu(1), copied back
        self.assertEqual(w.context, kiln.cpu(0))
        assert_close(self, w.tolist(), [[2.0, -4.0], [6.0, 8.0]])
        self.assertEqual(repr(kiln.cpu(3)), "cpu(3)")

    def test_mixed_devices_raise_with_kilns_message(self):
        x = nd.ones((3,))
        y = x.as_in_context(kiln.cpu(1))
        with self.assertRaises(kiln.InvalidArgumentError) as cm:
            (x + y).wait_to_read()
        self.assertIn("cpu(1)", str(cm.exception))
        with self.assertRaises(ValueError):
            x.copyto(kiln.cpu(99))
        with self.assertRaises(ValueError):
            with kiln.cpu(-1):
                pass

    def test_memory_is_counted_per_device(self):
        kiln.waitall()
        before = kiln.cpu(4).memory()[0]
        with kiln.cpu(4):
            big = nd.zeros((1 << 18,))
        big.wait_to_read()
        self.assertGreaterEqual(kiln.cpu(4).memory()[0] - before, 4 << 18)
        del big
        kiln.waitall()
        self.assertEqual(kiln.cpu(4).memory()[0], before)

    def test_split_and_load(self):
        x = nd.arange(0, 10).reshape(5, 2)
        parts = gluon.utils.split_and_load(x, [kiln.cpu(0), kiln.cpu(1)], even_split=False)
        self.assertEqual([p.shape for p in parts], [(3, 2), (2, 2)])
        self.assertEqual([p.context for p in parts], [kiln.cpu(0), kiln.cpu(1)])
        assert_close(self, parts[1].tolist(), [[6.0, 7.0], [8.0, 9.0]])
        with self.assertRaises(ValueError):
            gluon.utils.split_and_load(x, [kiln.cpu(0), kiln.cpu(1)])


class KVStore(unittest.TestCase):
    def test_push_sums_across_devices_and_pull_copies_back(self):
        kv = kiln.kvstore.create("local")
        self.assertEqual((kv.rank, kv.num_workers), (0, 1))
        kv.init(3, nd.zeros((2, 2)))
        grads = [nd.full((2, 2), float(d + 1)).as_in_context(kiln.cpu(d)) for d in range(3)]
        kv.push(3, grads)
        outs = [nd.zeros((2, 2)).as_in_context(kiln.cpu(d)) for d in range(2)]
        kv.pull(3, out=outs)
        for o in outs:
            assert_close(self, o.tolist(), [[6.0, 6.0], [6.0, 6.0]])
        # Several keys at once.
        kv.init([5, 6], [nd.zeros((1,)), nd.zeros((2,))])
        kv.push([5, 6], [[nd.ones((1,))], [nd.full((2,), 2.0)]], priority=1)
        a, b = nd.zeros((1,)), nd.zeros((2,))
        kv.pull([5, 6], out=[a, b])
        assert_close(self, a.tolist() + b.tolist(), [1.0, 2.0, 2.0])

    def test_errors_carry_kilns_message(self):
        kv = kiln.kvstore.create("local")
        with self.assertRaises(kiln.InvalidArgumentError) as cm:
            kv.push(9, nd.ones((2,)))
        self.assertIn("key 9", str(cm.exception))
        kv.init(1, nd.ones((2,)))
        with self.assertRaises(kiln.ShapeError):
            kv.push(1, nd.ones((3,)))
        with self.assertRaises(kiln.InvalidArgumentError):
            kiln.kvstore.create("dist_sync")

    def test_data_parallel_step_equals_one_device(self):
        """Two replicas, each fed half the batch, gradients summed through
        the store: the step one device takes with the whole batch."""
        nd.random.seed(4)
        x = nd.random.uniform(-1, 1, (8, 5))
        w0 = nd.random.uniform(-1, 1, (3, 5))
        target = nd.random.uniform(-1, 1, (8, 3))

        def grad_of(w, xs, ts):
            w.attach_grad()
            with autograd.record():
                loss = ((nd.linear(xs, w) - ts) ** 2).sum()
            loss.backward()
            return w.grad

        want = grad_of(w0.copy(), x, target)
        ctx = [kiln.cpu(0), kiln.cpu(1)]
        xs = gluon.utils.split_and_load(x, ctx)
        ts = gluon.utils.split_and_load(target, ctx)
        grads = [grad_of(w0.as_in_context(c).copy(), xi, ti) for c, xi, ti in zip(ctx, xs, ts)]
        kv = kiln.kvstore.create("local")
        kv.init(0, nd.zeros_like(w0))
        kv.push(0, grads)
        kv.pull(0, out=grads)
        for g in grads:
            assert_close(self, g.as_in_context(kiln.cpu(0)).tolist(), want.tolist(), rtol=1e-5, atol=1e-5)


if __name__ == "__main__":
    unittest.main()
