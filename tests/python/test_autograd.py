"""kiln.autograd: record, attach_grad, backward, grad, against hand-derived
gradients and finite differences."""
import math
import unittest

import kiln
from kiln import nd, autograd

from kilntest import assert_close


class Autograd(unittest.TestCase):
    def test_d2l_example(self):
        # d2l 2.5: y = 2 x.x, dy/dx = 4x.
        x = nd.arange(4.0)
        x.attach_grad()
        with autograd.record():
            y = 2 * nd.sum(x * x)
        y.backward()
        self.assertEqual(x.grad.tolist(), [0.0, 4.0, 8.0, 12.0])

    def test_grad_buffer_is_written_in_place(self):
        x = nd.array([1.0, 2.0])
        x.attach_grad()
        g = x.grad
        with autograd.record():
            y = (x * x * x).sum()
        y.backward()
        self.assertEqual(g.tolist(), [3.0, 12.0])  # the handle taken before backward sees it
        with autograd.record():
            y = (x * 5).sum()
        y.backward()  # grad_req 'write' overwrites
        self.assertEqual(x.grad.tolist(), [5.0, 5.0])

    def test_vector_head_sums_and_out_grad_weighs(self):
        x = nd.array([1.0, -1.0, 3.0])
        x.attach_grad()
        with autograd.record():
            y = nd.exp(x)
        y.backward()
        assert_close(self, x.grad.tolist(), [math.exp(1), math.exp(-1), math.exp(3)], rtol=1e-6)
        with autograd.record():
            y = x * x
        y.backward(nd.array([1.0, 10.0, 100.0]))
        self.assertEqual(x.grad.tolist(), [2.0, -20.0, 600.0])

    def test_finite_differences_through_a_small_network(self):
        nd.random.seed(3)
        w = nd.random.normal(0, 1, shape=(4, 3), dtype="float64")
        xv = nd.random.normal(0, 1, shape=(5, 3), dtype="float64")
        w.attach_grad()

        def f(wt):
            return nd.sum(nd.softmax(nd.tanh(xv @ wt.T), axis=1) * nd.arange(4, dtype="float64"))

        with autograd.record():
            y = f(w)
        y.backward()
        wl = w.tolist()
        eps = 1e-6
        for i in range(4):
            for j in range(3):
                plus = [row[:] for row in wl]
                minus = [row[:] for row in wl]
                plus[i][j] += eps
                minus[i][j] -= eps
                num = (f(nd.array(plus, dtype="float64")).item() - f(nd.array(minus, dtype="float64")).item()) / (2 * eps)
                assert_close(self, w.grad[i, j].item(), num, rtol=1e-5, atol=1e-8)

    def test_recording_state_and_pause(self):
        self.assertFalse(autograd.is_recording())
        x = nd.ones(2)
        x.attach_grad()
        with autograd.record():
            self.assertTrue(autograd.is_recording())
            self.assertTrue(autograd.is_training())
            with autograd.pause():
                self.assertFalse(autograd.is_recording())
                c = x * 100  # not on the tape
            y = (x * 3 + c).sum()
        self.assertFalse(autograd.is_recording())
        y.backward()
        self.assertEqual(x.grad.tolist(), [3.0, 3.0])
        with autograd.record(train_mode=False):
            self.assertFalse(autograd.is_training())

    def test_second_backward_fails_with_kilns_message(self):
        x = nd.ones(2)
        x.attach_grad()
        with autograd.record():
            y = (x * x).sum()
        y.backward()
        with self.assertRaises(kiln.KilnError) as cm:
            y.backward()
        self.assertTrue(str(cm.exception))


if __name__ == "__main__":
    unittest.main()
