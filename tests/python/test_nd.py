"""kiln.nd: creation, operators and broadcasting, dtype rules, indexing,
reductions, the op library, errors and the buffer protocol."""
import math
import sys
import unittest

import kiln
from kiln import nd

from kilntest import np, needs_numpy, assert_close


class Creation(unittest.TestCase):
    def test_array_from_lists(self):
        x = nd.array([[1, 2, 3], [4, 5, 6]])
        self.assertEqual(x.shape, (2, 3))
        self.assertEqual(x.dtype, "float32")
        self.assertEqual(x.tolist(), [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
        self.assertEqual(nd.array([1, 2], dtype="int64").tolist(), [1, 2])
        self.assertEqual(nd.array(3.5).shape, ())
        self.assertEqual(nd.array([True, False], dtype="bool").tolist(), [True, False])
        with self.assertRaises(ValueError):
            nd.array([[1, 2], [3]])

    def test_filled_and_ranges(self):
        self.assertEqual(nd.zeros((2, 2)).tolist(), [[0.0, 0.0], [0.0, 0.0]])
        self.assertEqual(nd.ones(3, dtype="int32").tolist(), [1, 1, 1])
        self.assertEqual(nd.full((2,), 7.5).tolist(), [7.5, 7.5])
        self.assertEqual(nd.arange(5).tolist(), [0.0, 1.0, 2.0, 3.0, 4.0])
        self.assertEqual(nd.arange(2, 8, 3, dtype="int64").tolist(), [2, 5])

    def test_random_is_seeded(self):
        nd.random.seed(7)
        a = nd.random.uniform(-1, 1, shape=(1000,)).tolist()
        nd.random.seed(7)
        b = nd.random.uniform(-1, 1, shape=(1000,)).tolist()
        self.assertEqual(a, b)
        self.assertTrue(all(-1 <= v < 1 for v in a))
        n = nd.random.normal(2.0, 0.5, shape=(20000,))
        self.assertAlmostEqual(n.mean().item(), 2.0, delta=0.02)

    @needs_numpy
    def test_array_from_numpy_keeps_dtype(self):
        for dt in ("float32", "float64", "int32", "int64", "uint8", "bool"):
            a = (np.arange(6).reshape(2, 3) % 3).astype(dt)
            x = nd.array(a)
            self.assertEqual(x.dtype, dt)
            np.testing.assert_array_equal(x.asnumpy(), a)
        x = nd.array(np.arange(6, dtype=np.float64)[::2], dtype="float32")
        self.assertEqual(x.dtype, "float32")
        self.assertEqual(x.tolist(), [0.0, 2.0, 4.0])


class Operators(unittest.TestCase):
    def setUp(self):
        self.a = [[1.0, -2.0, 3.0], [4.0, 5.0, -6.0]]
        self.x = nd.array(self.a)

    def elementwise(self, f):
        return [[f(v) for v in row] for row in self.a]

    def test_scalar_operands_both_sides(self):
        x = self.x
        assert_close(self, (x + 1).tolist(), self.elementwise(lambda v: v + 1))
        assert_close(self, (1 + x).tolist(), self.elementwise(lambda v: 1 + v))
        assert_close(self, (x - 2).tolist(), self.elementwise(lambda v: v - 2))
        assert_close(self, (2 - x).tolist(), self.elementwise(lambda v: 2 - v))
        assert_close(self, (x * 3).tolist(), self.elementwise(lambda v: v * 3))
        assert_close(self, (x / 4).tolist(), self.elementwise(lambda v: v / 4))
        assert_close(self, (1 / x).tolist(), self.elementwise(lambda v: 1 / v))
        assert_close(self, (x ** 2).tolist(), self.elementwise(lambda v: v ** 2))
        assert_close(self, (2 ** x).tolist(), self.elementwise(lambda v: 2.0 ** v))
        assert_close(self, (-x).tolist(), self.elementwise(lambda v: -v))
        assert_close(self, abs(x).tolist(), self.elementwise(abs))

    def test_broadcasting_against_plain_python(self):
        row = nd.array([10.0, 20.0, 30.0])
        col = nd.array([[1.0], [2.0]])
        self.assertEqual((self.x + row).tolist(), [[11.0, 18.0, 33.0], [14.0, 25.0, 24.0]])
        self.assertEqual((self.x * col).tolist(), [[1.0, -2.0, 3.0], [8.0, 10.0, -12.0]])
        self.assertEqual((row - col).shape, (2, 3))

    def test_comparisons_return_bool(self):
        x = self.x
        self.assertEqual((x > 0).tolist(), self.elementwise(lambda v: v > 0))
        self.assertEqual((x <= 3).tolist(), self.elementwise(lambda v: v <= 3))
        self.assertEqual((x == 4).dtype, "bool")
        self.assertEqual((x == x).tolist(), [[True] * 3] * 2)
        self.assertEqual((x != x).tolist(), [[False] * 3] * 2)
        self.assertEqual((0 < x).tolist(), self.elementwise(lambda v: 0 < v))

    def test_matmul_against_plain_python(self):
        w = [[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]
        want = [[sum(self.a[i][k] * w[k][j] for k in range(3)) for j in range(2)] for i in range(2)]
        self.assertEqual((self.x @ nd.array(w)).tolist(), want)
        self.assertEqual((self.x @ self.x.T).shape, (2, 2))

    def test_dtype_rules(self):
        i = nd.array([7, -7, 9], dtype="int32")
        # A Python number takes the array's dtype; integer division truncates toward zero.
        self.assertEqual((i + 1).dtype, "int32")
        self.assertEqual((i / 2).tolist(), [3, -3, 4])
        self.assertEqual((i * 2.9).tolist(), [14, -14, 18])
        # Two arrays must have one dtype: kiln casts nothing silently.
        with self.assertRaises(kiln.DtypeError) as cm:
            i + nd.array([1.0, 2.0, 3.0])
        self.assertIsInstance(cm.exception, TypeError)
        self.assertIn("int32", str(cm.exception))
        self.assertEqual((i.astype("float64") + nd.array([1.0, 2.0, 3.0], dtype="float64")).dtype, "float64")
        with self.assertRaises(kiln.KilnError) as cm:
            (i / nd.zeros(3, dtype="int32")).wait_to_read()
        self.assertIn("zero", str(cm.exception))

    @needs_numpy
    def test_against_numpy_random_shapes(self):
        rng = np.random.default_rng(1)
        for shape_a, shape_b in [((3, 4), (4,)), ((2, 1, 5), (3, 1)), ((1,), (2, 3)), ((4, 1), (1, 6))]:
            a = rng.standard_normal(shape_a).astype(np.float32)
            b = rng.standard_normal(shape_b).astype(np.float32) + 3
            ka, kb = nd.array(a), nd.array(b)
            for op in ("__add__", "__sub__", "__mul__", "__truediv__", "__lt__", "__ge__"):
                want = getattr(a, op)(b)
                got = getattr(ka, op)(kb).asnumpy()
                np.testing.assert_allclose(got, want, rtol=1e-6, err_msg=op)
            np.testing.assert_allclose(nd.maximum(ka, kb).asnumpy(), np.maximum(a, b))

    def test_number_conversions(self):
        s = nd.array([2.5]).sum()
        self.assertEqual(float(s), 2.5)
        self.assertEqual(int(s), 2)
        self.assertTrue(bool(s))
        self.assertEqual(s.item(), 2.5)
        with self.assertRaises(ValueError):
            float(self.x)


class Indexing(unittest.TestCase):
    def setUp(self):
        self.rows = [[float(4 * i + j) for j in range(4)] for i in range(3)]
        self.x = nd.array(self.rows)

    def test_ints_and_slices_as_python_lists(self):
        x, r = self.x, self.rows
        self.assertEqual(x[1].tolist(), r[1])
        self.assertEqual(x[-1].tolist(), r[-1])
        self.assertEqual(x[1, 2].tolist(), r[1][2])
        self.assertEqual(x[:, 1].tolist(), [row[1] for row in r])
        self.assertEqual(x[::2, ::-1].tolist(), [row[::-1] for row in r[::2]])
        self.assertEqual(x[1:, -3:-1].tolist(), [row[-3:-1] for row in r[1:]])
        self.assertEqual(x[::-2, 3:0:-2].tolist(), [row[3:0:-2] for row in r[::-2]])
        self.assertEqual(x[5:].shape, (0, 4))
        self.assertEqual(x[None, 1].shape, (1, 4))
        self.assertEqual(x[..., 0].tolist(), [row[0] for row in r])
        with self.assertRaises(IndexError):
            x[3]
        with self.assertRaises(IndexError):
            x[0, 0, 0]

    def test_slices_are_views(self):
        v = self.x[1:, 1:3]
        self.assertFalse(v.is_contiguous())
        self.x[1:, 1:3] = 0  # written through the view, in place
        self.assertEqual(self.x[1].tolist(), [4.0, 0.0, 0.0, 7.0])
        self.assertEqual(v.tolist(), [[0.0, 0.0], [0.0, 0.0]])
        self.x[0] = nd.array([9.0, 8.0, 7.0, 6.0])
        self.assertEqual(self.x[0].tolist(), [9.0, 8.0, 7.0, 6.0])

    def test_integer_array_index_takes_rows(self):
        got = self.x[nd.array([2, 0], dtype="int64")]
        self.assertEqual(got.tolist(), [self.rows[2], self.rows[0]])


class Library(unittest.TestCase):
    def test_reductions(self):
        rows = [[1.0, 5.0, 3.0], [4.0, 2.0, 6.0]]
        x = nd.array(rows)
        self.assertEqual(nd.sum(x).item(), 21.0)
        self.assertEqual(x.sum(axis=1).tolist(), [9.0, 12.0])
        self.assertEqual(x.sum(axis=0, keepdims=True).shape, (1, 3))
        self.assertEqual(x.max(axis=0).tolist(), [4.0, 5.0, 6.0])
        self.assertEqual(x.min().item(), 1.0)
        self.assertEqual(x.argmax(axis=1).tolist(), [1, 2])
        assert_close(self, x.mean(axis=(0, 1)).item(), 3.5)
        assert_close(self, nd.var(x, axis=1).tolist(), [8.0 / 3, 8.0 / 3], rtol=1e-6)

    def test_unary_and_nn_ops(self):
        vals = [-2.0, -0.5, 0.0, 0.5, 2.0]
        x = nd.array(vals)
        assert_close(self, nd.relu(x).tolist(), [max(v, 0.0) for v in vals])
        assert_close(self, nd.exp(x).tolist(), [math.exp(v) for v in vals], rtol=1e-6)
        assert_close(self, nd.tanh(x).tolist(), [math.tanh(v) for v in vals], rtol=1e-6)
        assert_close(self, nd.sigmoid(x).tolist(), [1 / (1 + math.exp(-v)) for v in vals], rtol=1e-6)
        e = [math.exp(v) for v in vals]
        assert_close(self, nd.softmax(x).tolist(), [v / sum(e) for v in e], rtol=1e-6)
        assert_close(self, nd.log_softmax(x).tolist(), [math.log(v / sum(e)) for v in e], rtol=1e-5, atol=1e-6)
        assert_close(self, nd.clip(x, -1, 1).tolist(), [min(max(v, -1), 1) for v in vals])
        self.assertEqual(nd.concat([x, x], axis=0).shape, (10,))
        self.assertEqual(nd.stack([x, x], axis=0).shape, (2, 5))
        self.assertEqual(nd.one_hot(nd.array([1, 0], dtype="int64"), 3).tolist(), [[0.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
        self.assertEqual(nd.pick(nd.array([[1.0, 2.0], [3.0, 4.0]]), nd.array([1, 0], dtype="int64")).tolist(), [2.0, 3.0])

    def test_reshape_transpose_views(self):
        x = nd.arange(6)
        self.assertEqual(x.reshape(2, 3).tolist(), [[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]])
        self.assertEqual(x.reshape((3, -1)).shape, (3, 2))
        self.assertEqual(x.reshape(2, 3).T.tolist(), [[0.0, 3.0], [1.0, 4.0], [2.0, 5.0]])
        self.assertEqual(x.reshape(1, 2, 3).transpose(2, 0, 1).shape, (3, 1, 2))


class Errors(unittest.TestCase):
    def test_status_maps_to_exception_with_kilns_message(self):
        with self.assertRaises(kiln.ShapeError) as cm:
            nd.ones((2, 3)) + nd.ones((4, 3))
        e = cm.exception
        self.assertIsInstance(e, ValueError)
        self.assertEqual(e.status, "KILN_ERR_SHAPE")
        self.assertEqual(str(e), "add: shapes [2, 3] and [4, 3] cannot broadcast (dim 0: 2 vs 4)")
        with self.assertRaises(kiln.ShapeError) as cm:
            nd.ones((2, 3)) @ nd.ones((2, 3))
        self.assertIn("matmul", str(cm.exception))

    def test_engine_failure_raises_at_the_read(self):
        idx = nd.array([0, 5], dtype="int64")
        y = nd.take(nd.ones((3,)), idx)  # the index is checked by the kernel, on the engine
        with self.assertRaises(kiln.KilnError) as cm:
            y.asnumpy() if nd._np is not None else y.tolist()
        self.assertIn("take", str(cm.exception))
        kiln.waitall()  # the failure was reported once; the engine goes on
        self.assertEqual((nd.ones((2,)) + 1).tolist(), [2.0, 2.0])

    def test_bad_arguments_are_python_errors(self):
        with self.assertRaises(TypeError):
            nd.relu([1, 2])
        with self.assertRaises(TypeError):
            nd.zeros((2,), dtype="float16")
        with self.assertRaises(TypeError):
            nd.ones(2) + "a"


class BufferProtocol(unittest.TestCase):
    def test_memoryview_without_numpy(self):
        x = nd.array([[1.0, 2.0], [3.0, 4.0]])
        m = memoryview(x)
        self.assertFalse(m.readonly)  # writable: numpy views write into kiln memory
        self.assertEqual((m.format, m.shape, m.strides), ("f", (2, 2), (8, 4)))
        self.assertEqual(m.tolist(), [[1.0, 2.0], [3.0, 4.0]])
        t = memoryview(x.T)
        self.assertEqual(t.strides, (4, 8))
        self.assertEqual(t.tolist(), [[1.0, 3.0], [2.0, 4.0]])

    @needs_numpy
    def test_numpy_shares_memory_and_waits(self):
        x = nd.arange(1 << 16).reshape(256, 256)
        y = x * 2 + 1  # pending on the engine when asarray asks
        a = np.asarray(y)
        self.assertTrue(a.flags.writeable)
        np.testing.assert_array_equal(a, np.arange(1 << 16, dtype=np.float32).reshape(256, 256) * 2 + 1)
        b = np.asarray(y)
        self.assertEqual(a.__array_interface__["data"][0], b.__array_interface__["data"][0])
        v = np.asarray(y[::-1, 3])
        np.testing.assert_array_equal(v, a[::-1, 3])
        self.assertTrue(np.shares_memory(v, a))
        # A write through kiln shows through the shared memory.
        y[0, 0] = -5
        self.assertEqual(np.asarray(y)[0, 0], -5)
        del x, y
        self.assertEqual(a[1, 0], 513.0)  # the buffer keeps the storage alive

    @needs_numpy
    def test_asnumpy_is_a_writable_copy(self):
        x = nd.ones((3,))
        a = x.asnumpy()
        a[0] = 5
        self.assertEqual(x.tolist(), [1.0, 1.0, 1.0])


class Threads(unittest.TestCase):
    def test_threads_share_kiln(self):
        """Waits release the GIL; each thread's ops are its own."""
        import threading
        results, errors = {}, []

        def work(k):
            try:
                x = nd.full((64,), float(k))
                for _ in range(500):
                    x = x + 1
                    x.wait_to_read()
                results[k] = x.tolist()
            except Exception as e:  # reported by the main thread
                errors.append(e)

        threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.assertEqual(errors, [])
        self.assertEqual(results, {k: [k + 500.0] * 64 for k in range(4)})


if __name__ == "__main__":
    unittest.main()
