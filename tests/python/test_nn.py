"""kiln.nn and kiln.gluon: layers, Python HybridBlocks (eager, traced once
per signature, the print rule), training, checkpoints, export, and equality
with the C API (the kiln command) on one model."""
import contextlib
import io
import os
import subprocess
import tempfile
import unittest

import kiln
from kiln import nd, nn, gluon, autograd

from kilntest import np, needs_numpy, assert_close


class PrintingNet(nn.HybridBlock):
    """d2l 13.1's demonstration: forward prints, so we see when it runs."""

    def __init__(self):
        super().__init__()
        self.hidden = nn.Dense(8, activation="relu")
        self.output = nn.Dense(2)

    def forward(self, x):
        print("forward ran on", x.shape)
        return self.output(self.hidden(x) * 2 + 1)


def run_quietly(fn, *args):
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        y = fn(*args)
    return y, out.getvalue().count("forward ran")


class HybridBlocks(unittest.TestCase):
    def setUp(self):
        nd.random.seed(0)
        self.net = PrintingNet()
        self.net.initialize()
        self.x = nd.random.normal(0, 1, shape=(4, 5))

    def test_eager_runs_python_every_call(self):
        y1, n1 = run_quietly(self.net, self.x)
        y2, n2 = run_quietly(self.net, self.x)
        self.assertEqual((n1, n2), (1, 1))
        self.assertEqual(y1.tolist(), y2.tolist())

    def test_print_runs_only_while_tracing(self):
        eager, _ = run_quietly(self.net, self.x)
        self.net.hybridize()
        counts = [run_quietly(self.net, self.x)[1] for _ in range(5)]
        self.assertEqual(counts, [1, 0, 0, 0, 0])
        hybrid, _ = run_quietly(self.net, self.x)
        assert_close(self, hybrid.tolist(), eager.tolist(), rtol=1e-6, atol=1e-6)

    def test_new_shape_retraces_once(self):
        self.net.hybridize()
        _, n = run_quietly(self.net, self.x)
        self.assertEqual(n, 1)
        y7, n = run_quietly(self.net, nd.ones((7, 5)))
        self.assertEqual((n, y7.shape), (1, (7, 2)))
        _, n = run_quietly(self.net, nd.ones((7, 5)))
        self.assertEqual(n, 0)
        _, n = run_quietly(self.net, self.x)  # the first signature's plan is still cached
        self.assertEqual(n, 0)
        log = self.net.trace_log.splitlines()
        self.assertEqual(len(log), 2)
        self.assertIn("[7, 5]", log[1])
        self.net.hybridize(active=False)
        _, n = run_quietly(self.net, self.x)
        self.assertEqual(n, 1)

    def test_hybridized_equals_manual_computation(self):
        self.net.hybridize()
        y, _ = run_quietly(self.net, self.x)
        p = {k: v.data() for k, v in self.net.collect_params().items()}
        self.assertEqual(sorted(p), ["hidden.bias", "hidden.weight", "output.bias", "output.weight"])
        h = nd.relu(self.x @ p["hidden.weight"].T + p["hidden.bias"]) * 2 + 1
        want = h @ p["output.weight"].T + p["output.bias"]
        assert_close(self, y.tolist(), want.tolist(), rtol=1e-5, atol=1e-6)

    def test_python_exception_in_forward_propagates(self):
        class Bad(nn.HybridBlock):
            def forward(self, x):
                raise RuntimeError("my forward failed")

        b = Bad()
        with self.assertRaisesRegex(RuntimeError, "my forward failed"):
            b(self.x)
        b.hybridize()
        with self.assertRaisesRegex(RuntimeError, "my forward failed"):
            b(self.x)

    def test_reading_a_value_while_tracing_raises(self):
        class Reads(nn.HybridBlock):
            def forward(self, x):
                if x.sum().item() > 0:  # needs a value: cannot be traced
                    return x
                return -x

        r = Reads()
        self.assertEqual(r(nd.ones(2)).tolist(), [1.0, 1.0])  # eagerly fine
        r.hybridize()
        with self.assertRaises(kiln.KilnError) as cm:
            r(nd.ones(2))
        self.assertIn("symbolic", str(cm.exception))

    def test_shape_error_inside_forward_names_the_op(self):
        class Mismatch(nn.HybridBlock):
            def forward(self, x):
                return x + nd.ones((3, 3))

        with self.assertRaises(kiln.ShapeError) as cm:
            Mismatch()(self.x)
        self.assertIn("add", str(cm.exception))

    def test_custom_parameters(self):
        class Scale(nn.HybridBlock):
            def __init__(self):
                super().__init__()
                self.add_param("gamma", (0,), init=kiln.init.Constant(3.0))

            def forward(self, x):
                return x * self.params("gamma", (x.shape[-1],))

        s = Scale()
        s.initialize()
        s.hybridize()
        self.assertEqual(s(nd.ones((2, 4))).tolist(), [[3.0] * 4] * 2)
        self.assertEqual(s.collect_params()["gamma"].shape, (4,))


class Layers(unittest.TestCase):
    def test_lenet_shapes_and_blocks(self):
        net = nn.Sequential()
        net.add(nn.Conv2D(6, kernel_size=5, padding=2, activation="sigmoid"), nn.AvgPool2D(pool_size=2, strides=2),
                nn.Conv2D(16, kernel_size=5, activation="sigmoid"), nn.MaxPool2D(pool_size=2, strides=2),
                nn.Flatten(), nn.Dense(120, activation="sigmoid"), nn.BatchNorm(), nn.Dropout(0.5), nn.Dense(10))
        net.initialize()
        x = nd.random.uniform(0, 1, shape=(2, 1, 28, 28))
        y = net(x)
        self.assertEqual(y.shape, (2, 10))
        self.assertEqual(len(net), 9)
        shapes = {k: p.shape for k, p in net.collect_params().items()}
        self.assertEqual(shapes["0.weight"], (6, 1, 5, 5))
        self.assertEqual(shapes["5.weight"], (120, 400))
        self.assertIn("6.running_mean", shapes)
        net.hybridize()
        assert_close(self, net(x).tolist(), y.tolist(), rtol=1e-5, atol=1e-6)

    def test_dense_against_plain_python(self):
        d = nn.Dense(2, in_units=3)
        d.initialize(kiln.init.Constant(0.5))
        x = [[1.0, 2.0, 3.0]]
        self.assertEqual(d(nd.array(x)).tolist(), [[3.0, 3.0]])  # bias initialised to zero

    def test_layer_error_names_the_layer(self):
        net = nn.Sequential()
        net.add(nn.Dense(4, in_units=3))
        net.initialize()
        with self.assertRaises(kiln.ShapeError) as cm:
            net(nd.ones((2, 5)))
        self.assertIn("Dense", str(cm.exception))


def make_task(n, seed):
    nd.random.seed(seed)
    x = nd.random.normal(0, 1, shape=(n, 2))
    y = (x[:, 0] * x[:, 1] > 0).astype("int64")  # XOR of the signs: needs the hidden layer
    return x, y


class PyMLP(nn.HybridBlock):
    def __init__(self):
        super().__init__()
        self.hidden = nn.Dense(32)
        self.out = nn.Dense(2)

    def forward(self, x):
        return self.out(nd.relu(self.hidden(x)))


class Training(unittest.TestCase):
    def train(self, hybridize, optimizer, params, python_forward=False):
        x, y = make_task(512, 1)
        if python_forward:
            net = PyMLP()
        else:
            net = nn.Sequential()
            net.add(nn.Dense(32, activation="relu"), nn.Dense(2))
        net.initialize()
        if hybridize:
            net.hybridize()
        loss = gluon.loss.SoftmaxCrossEntropyLoss()
        trainer = gluon.Trainer(net.collect_params(), optimizer, params)
        for _ in range(200):
            with autograd.record():
                l = loss(net(x), y)
            l.backward()
            trainer.step(x.shape[0])
        xt, yt = make_task(512, 2)
        acc = (net(xt).argmax(axis=1) == yt).astype("float32").mean().item()
        return acc, l.mean().item()

    def test_mlp_reaches_target_accuracy(self):
        for hybridize in (False, True):
            for opt, p in (("adam", {"learning_rate": 0.02}), ("sgd", {"learning_rate": 0.5, "momentum": 0.9})):
                acc, final = self.train(hybridize, opt, p)
                self.assertGreater(acc, 0.93, "%s hybridize=%s: accuracy %.3f, loss %.3f" % (opt, hybridize, acc, final))
            acc, final = self.train(hybridize, "adam", {"learning_rate": 0.02}, python_forward=True)
            self.assertGreater(acc, 0.93, "Python forward, hybridize=%s: accuracy %.3f" % (hybridize, acc))

    def test_python_forward_trains_as_the_c_layers(self):
        """A Python HybridBlock and kiln's Sequential of the same layers, from
        the same seed, follow the same losses (eager and hybridized)."""
        for hybridize in (False, True):
            a = self.train(hybridize, "sgd", {"learning_rate": 0.1}, python_forward=True)
            b = self.train(hybridize, "sgd", {"learning_rate": 0.1})
            assert_close(self, a[1], b[1], rtol=1e-4, atol=1e-6)

    def test_loss_against_plain_python(self):
        import math
        logits = [[1.0, 2.0, 0.5], [0.0, -1.0, 3.0]]
        labels = [1, 2]
        want = [-(row[k] - math.log(sum(math.exp(v) for v in row))) for row, k in zip(logits, labels)]
        got = gluon.loss.SoftmaxCrossEntropyLoss()(nd.array(logits), nd.array(labels, dtype="int64"))
        assert_close(self, got.tolist(), want, rtol=1e-6)
        l2 = gluon.loss.L2Loss()(nd.array([[1.0, 3.0]]), nd.array([[0.0, 0.0]]))
        self.assertEqual(l2.tolist(), [2.5])

    def test_trainer_rejects_unknown_settings(self):
        net = nn.Dense(1)
        with self.assertRaises(ValueError):
            gluon.Trainer(net.collect_params(), "sgd", {"learning_rat": 0.1})
        with self.assertRaises(ValueError):
            gluon.Trainer(net, "rmsprop")


class Files(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.TemporaryDirectory()
        nd.random.seed(5)
        self.net = PrintingNet()
        self.net.initialize()
        self.x = nd.random.normal(0, 1, shape=(3, 5))

    def tearDown(self):
        self.dir.cleanup()

    def path(self, name):
        return os.path.join(self.dir.name, name)

    def test_save_and_load_parameters(self):
        y, _ = run_quietly(self.net, self.x)
        self.net.save_parameters(self.path("p.safetensors"))
        other = PrintingNet()
        other.load_parameters(self.path("p.safetensors"))  # unknown shapes come from the file
        y2, _ = run_quietly(other, self.x)
        self.assertEqual(y.tolist(), y2.tolist())
        with self.assertRaises(kiln.IoError) as cm:
            other.load_parameters(self.path("missing.safetensors"))
        self.assertIn("missing.safetensors", str(cm.exception))

    def test_export_and_load_give_the_same_bits(self):
        self.net.hybridize()
        y, _ = run_quietly(self.net, self.x)
        self.net.export(self.path("m"))
        model = kiln.load(self.path("m"))
        self.assertEqual(model(self.x).tolist(), y.tolist())
        with self.assertRaises(kiln.ShapeError):
            model(nd.ones((3, 6)))

    def test_export_needs_a_hybridized_call(self):
        with self.assertRaises(kiln.InvalidArgumentError):
            self.net.export(self.path("m"))

    @unittest.skipUnless(os.environ.get("KILN_CLI"), "KILN_CLI (the kiln command) is not set")
    @needs_numpy
    def test_equal_to_the_c_api(self):
        """The model exported from Python, run by the kiln command (C API
        only) on the same input, gives the same bits."""
        self.net.hybridize()
        y, _ = run_quietly(self.net, self.x)
        self.net.export(self.path("m"))
        np.save(self.path("x.npy"), self.x.asnumpy())
        subprocess.run([os.environ["KILN_CLI"], "run", self.path("m"), "--input", self.path("x.npy"), "--output",
                        self.path("y.npy")], check=True, capture_output=True)
        np.testing.assert_array_equal(np.load(self.path("y.npy")), y.asnumpy())


if __name__ == "__main__":
    unittest.main()
