"""Zero-copy exchange with numpy and PyTorch: kiln arrays over their memory
(nd.from_numpy, nd.array(copy=False), nd.from_dlpack) and theirs over kiln's
(the writable buffer protocol, __dlpack__). Checked: both sides see each
other's writes after the documented wait, through any strides; the memory
outlives whichever side is dropped first and is given back when both are
(reference counts, no growth over many round trips); dtypes map one to one;
what cannot be shared is refused with kiln's exceptions."""
import gc
import os
import sys
import unittest

import kiln
from kiln import nd

from kilntest import np, needs_numpy, rss_growth

try:
    import torch
except ImportError:
    torch = None

needs_torch = unittest.skipIf(torch is None, "torch is not installed")
# ASan's quarantine keeps freed memory: RSS measures nothing there, but the
# reference counts still must balance.
SANITIZED = bool(os.environ.get("KILN_PY_SANITIZED"))
ROUND_TRIPS = 2000 if SANITIZED else 20000

DTYPES = ("float32", "float64", "int32", "int64", "uint8", "bool")


def addr(a):
    return a.__array_interface__["data"][0]


@needs_numpy
class FromNumpy(unittest.TestCase):
    def test_shares_memory_both_ways(self):
        a = np.arange(6, dtype=np.float32).reshape(2, 3)
        x = nd.from_numpy(a)
        self.assertEqual((x.shape, x.dtype), ((2, 3), "float32"))
        self.assertEqual(addr(np.asarray(x)), addr(a))
        a[0, 0] = 100  # nothing of kiln's is pending on x: visible to the next op
        np.testing.assert_array_equal((x + 0).asnumpy(), a)
        x[1, :] = -1  # an engine op writing a's memory
        x.wait_to_read()
        np.testing.assert_array_equal(a[1], [-1, -1, -1])

    def test_writes_after_pending_reads_need_waitall(self):
        a = np.ones((512, 512), np.float32)
        x = nd.from_numpy(a)
        y = x * 2  # may still be reading a
        kiln.waitall()  # the documented wait before writing shared memory
        a[:] = 5
        self.assertEqual(float(y.sum()), 2.0 * 512 * 512)
        self.assertEqual(float(x.sum()), 5.0 * 512 * 512)

    def test_array_copy_false(self):
        a = np.arange(4, dtype=np.float64)
        x = nd.array(a, copy=False)
        a[1] = 9
        self.assertEqual(x.tolist(), [0.0, 9.0, 2.0, 3.0])
        c = nd.array(a)  # copy=True, the default, copies
        a[2] = 8
        self.assertEqual(c.tolist(), [0.0, 9.0, 2.0, 3.0])
        # What cannot be shared is copied, as numpy.array(copy=False) does.
        h = nd.array(np.ones(3, np.float16), copy=False)
        self.assertEqual((h.dtype, h.tolist()), ("float32", [1.0, 1.0, 1.0]))
        r = np.ones(3, np.float32)
        r.flags.writeable = False
        self.assertEqual(nd.array(r, copy=False).tolist(), [1.0, 1.0, 1.0])
        self.assertIs(nd.array(x, copy=False), x)

    def test_strides(self):
        base = np.arange(48, dtype=np.int64).reshape(6, 8)
        for view in (base[::2, ::-3], base.T, base[1:5, 2], base[:, None, 3:4], base[4, 5, ...]):
            x = nd.from_numpy(view)
            self.assertEqual(x.shape, view.shape)
            np.testing.assert_array_equal(x.asnumpy(), view)
            np.testing.assert_array_equal((x * 1).asnumpy(), view)
        v = base[::2, ::-3]
        x = nd.from_numpy(v)
        x[0, 0] = -7  # a write through kiln's strides lands in the right place
        kiln.waitall()
        self.assertEqual(base[0, 7], -7)

    def test_every_dtype(self):
        for name in DTYPES:
            a = (np.arange(5) % 2).astype(name)
            x = nd.from_numpy(a)
            self.assertEqual(x.dtype, name)
            self.assertEqual(addr(np.asarray(x)), addr(a))
            self.assertEqual(np.asarray(x).dtype, a.dtype)
            np.testing.assert_array_equal(x.asnumpy(), a)

    def test_refused(self):
        for a in (np.ones(3, np.float16), np.ones(3, np.int16), np.ones(3, np.complex64),
                  np.ones(3, np.dtype(">f4"))):
            with self.assertRaises(kiln.DtypeError) as cm:
                nd.from_numpy(a)
            self.assertIsInstance(cm.exception, TypeError)
        with self.assertRaises(ValueError) as cm:
            nd.from_numpy(np.broadcast_to(np.ones(3, np.float32), (4, 3)))  # read-only
        self.assertIn("read-only", str(cm.exception))
        unaligned = np.frombuffer(bytearray(17), np.float32, count=4, offset=1)
        with self.assertRaises(kiln.InvalidArgumentError) as cm:
            nd.from_numpy(unaligned)
        self.assertIn("not aligned", str(cm.exception))
        field = np.zeros(4, dtype=[("a", "<f4"), ("b", "u1")])["a"]  # 5-byte strides
        with self.assertRaises(ValueError) as cm:
            nd.from_numpy(field)
        self.assertIn("whole number", str(cm.exception))
        with self.assertRaises(TypeError):
            nd.from_numpy([1.0, 2.0])

    def test_lifetime_and_refcount(self):
        a = np.arange(10, dtype=np.float32)
        before = sys.getrefcount(a)
        x = nd.from_numpy(a)
        self.assertEqual(sys.getrefcount(a), before + 1)  # the kiln array holds the exporter
        y = x[2:5]  # a view holds the same storage
        del x
        kiln.waitall()
        self.assertEqual(sys.getrefcount(a), before + 1)
        del y
        kiln.waitall()  # storage freed by the engine; its release runs on the waitall
        self.assertEqual(sys.getrefcount(a), before)

    def test_source_dropped_first(self):
        a = np.arange(1000, dtype=np.float64)
        x = nd.from_numpy(a)
        del a
        gc.collect()
        self.assertEqual(float(x.sum()), 999 * 1000 / 2)
        z = np.zeros(1000)  # reuse of freed memory would show here
        self.assertEqual(float((x * 1).sum()), 999 * 1000 / 2)
        del z

    def test_no_leak_over_round_trips(self):
        a = np.ones(4096, np.float32)
        before = sys.getrefcount(a)

        def body():
            x = nd.from_numpy(a)
            b = np.asarray(x + 1)
            c = nd.from_dlpack(b)
            return nd.from_dlpack(nd.from_dlpack(c))

        grown = rss_growth(body, ROUND_TRIPS)
        self.assertEqual(sys.getrefcount(a), before)
        if not SANITIZED:
            self.assertLess(grown, 8 * 1024, "RSS grew over 20 000 round trips")


@needs_numpy
class ToNumpy(unittest.TestCase):
    def test_numpy_view_writes_into_kiln(self):
        x = nd.zeros((3, 4))
        v = np.asarray(x)
        self.assertTrue(v.flags.writeable)
        v[1, 2] = 5
        self.assertEqual(float(x.sum()), 5.0)
        w = np.asarray(x[:, ::-2])
        w[0, 0] = 1  # x[0, 3]
        self.assertEqual(x[0, 3].item(), 1.0)

    def test_dlpack_to_numpy(self):
        x = nd.arange(12).reshape(3, 4)
        y = x[1:, ::2]
        n = np.from_dlpack(y)
        np.testing.assert_array_equal(n, np.arange(12, dtype=np.float32).reshape(3, 4)[1:, ::2])
        self.assertTrue(np.shares_memory(n, np.asarray(x)))
        self.assertEqual(x.__dlpack_device__(), (1, 0))


@needs_torch
class Torch(unittest.TestCase):
    def test_torch_kiln_torch_shares_memory(self):
        t = torch.arange(12, dtype=torch.float32).reshape(3, 4)
        x = nd.from_dlpack(t)
        self.assertEqual((x.shape, x.dtype), ((3, 4), "float32"))
        t2 = torch.from_dlpack(x)
        self.assertEqual(t2.data_ptr(), t.data_ptr())
        t[0, 0] = 42  # torch writes; kiln's next op reads it
        self.assertEqual(x[0, 0].item(), 42.0)
        x[2, :] = -1  # kiln writes (an engine op)...
        kiln.waitall()  # ...seen by torch after the wait
        self.assertEqual(t[2].tolist(), [-1.0] * 4)
        self.assertEqual(t2[2].tolist(), [-1.0] * 4)

    def test_capsules(self):
        t = torch.ones(3, dtype=torch.float64)
        cap = torch.utils.dlpack.to_dlpack(t)
        x = nd.from_dlpack(cap)
        self.assertEqual(x.tolist(), [1.0, 1.0, 1.0])
        with self.assertRaises(ValueError):
            nd.from_dlpack(cap)  # consumed
        k = nd.arange(4, dtype="int64")
        back = torch.utils.dlpack.from_dlpack(nd.to_dlpack_for_read(k))
        self.assertEqual(back.tolist(), [0, 1, 2, 3])
        w = torch.utils.dlpack.from_dlpack(nd.to_dlpack_for_write(k * 2))
        w[0] = 9
        self.assertEqual(w.tolist(), [9, 2, 4, 6])
        nd.to_dlpack_for_read(k)  # never consumed: its destructor drops the kiln reference

    def test_kiln_waits_before_export(self):
        x = nd.ones((1024, 1024))
        y = x * 3 + 1  # pending on the engine
        t = torch.from_dlpack(y)
        self.assertEqual(float(t.sum()), 4.0 * 1024 * 1024)

    def test_strides(self):
        t = torch.arange(24, dtype=torch.int32).reshape(4, 6)
        for view in (t.t(), t[::2, 1::3], t[1], t[:, 2:3]):
            x = nd.from_dlpack(view)
            self.assertEqual(x.shape, tuple(view.shape))
            self.assertEqual((x * 1).tolist(), view.tolist())
        k = nd.arange(24).reshape(4, 6)
        for view in (k.T, k[::2, 1::3], k[1], k[:, 2:3]):
            back = torch.from_dlpack(view)
            self.assertEqual(tuple(back.shape), view.shape)
            self.assertEqual(back.tolist(), view.tolist())

    def test_every_dtype(self):
        pairs = {"float32": torch.float32, "float64": torch.float64, "int32": torch.int32, "int64": torch.int64,
                 "uint8": torch.uint8}
        for name, tdt in pairs.items():
            t = torch.arange(5).to(tdt)
            x = nd.from_dlpack(t)
            self.assertEqual(x.dtype, name)
            back = torch.from_dlpack(x)
            self.assertEqual(back.dtype, tdt)
            self.assertEqual(back.data_ptr(), t.data_ptr())
        b = nd.from_dlpack(nd.array([1, 0, 1], dtype="bool"))  # kiln to kiln keeps bool (DLPack 0.8's code)
        self.assertEqual((b.dtype, b.tolist()), ("bool", [True, False, True]))

    def test_refused(self):
        for tdt in (torch.float16, torch.int16, torch.complex64, torch.bfloat16):
            with self.assertRaises(kiln.DtypeError):
                nd.from_dlpack(torch.ones(2, dtype=tdt))

        class OnGpu:
            def __dlpack_device__(self):
                return (2, 0)

            def __dlpack__(self, stream=None):
                raise AssertionError("must not be asked for a capsule")

        with self.assertRaises(kiln.UnsupportedError) as cm:
            nd.from_dlpack(OnGpu())
        self.assertIn("(2, 0)", str(cm.exception))
        with self.assertRaises(TypeError):
            nd.from_dlpack(42)
        with self.assertRaises(BufferError):
            nd.ones(2).__dlpack__(stream=5)
        with self.assertRaises(BufferError) as cm:  # PyTorch 1.13 would abort the process on it
            torch.from_dlpack(nd.arange(6).reshape(2, 3)[:, ::-1])
        self.assertIn("contiguous(x)", str(cm.exception))
        self.assertEqual(torch.from_dlpack(nd.contiguous(nd.arange(6).reshape(2, 3)[:, ::-1])).tolist(),
                         [[2.0, 1.0, 0.0], [5.0, 4.0, 3.0]])

    def test_lifetimes(self):
        t = torch.arange(1000, dtype=torch.float64)
        x = nd.from_dlpack(t)
        del t  # kiln keeps torch's storage
        gc.collect()
        self.assertEqual(float(x.sum()), 999 * 1000 / 2)
        k = nd.arange(1000)
        back = torch.from_dlpack(k)
        del k, x  # torch keeps kiln's storage
        kiln.waitall()
        gc.collect()
        self.assertEqual(float(back.sum()), 999 * 1000 / 2)

    def test_no_leak_over_round_trips(self):
        t = torch.ones(4096)

        def body():
            x = nd.from_dlpack(t)
            return torch.from_dlpack(x + 1)

        grown = rss_growth(body, ROUND_TRIPS)
        if not SANITIZED:
            self.assertLess(grown, 8 * 1024, "RSS grew over 20 000 round trips")
        self.assertEqual(sys.getrefcount(t), 2)


if __name__ == "__main__":
    unittest.main()
