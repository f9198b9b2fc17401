"""x += y and friends write into x's memory, as MXNet's do: views of x and
other names for it see the result; inside autograd.record() they raise."""
import unittest

import kiln
from kiln import nd, autograd
from kilntest import assert_close


class InPlace(unittest.TestCase):
    def test_writes_into_the_array_and_its_views(self):
        x = nd.array([[1.0, 2.0], [3.0, 4.0]])
        alias, row = x, x[1]
        x += 1
        self.assertIs(x, alias)
        assert_close(self, row.tolist(), [4.0, 5.0])
        x -= nd.array([1.0, 1.0])  # broadcast
        x *= 2
        x /= 4
        assert_close(self, alias.tolist(), [[0.5, 1.0], [1.5, 2.0]])

    def test_dtype_and_shape_stay(self):
        i = nd.array([1, 2, 3], dtype="int32")
        i += 2.7  # a Python number takes the array's dtype
        self.assertEqual(i.dtype, "int32")
        self.assertEqual(i.tolist(), [3, 4, 5])
        x = nd.ones((2,))
        with self.assertRaises(ValueError):
            x += nd.ones((3,))

    def test_refused_while_recording(self):
        w = nd.ones((2,))
        w.attach_grad()
        with autograd.record():
            with self.assertRaises(kiln.UnsupportedError):
                w += 1
        assert_close(self, w.tolist(), [1.0, 1.0])


if __name__ == "__main__":
    unittest.main()
