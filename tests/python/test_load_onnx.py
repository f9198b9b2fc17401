"""kiln.load of ONNX files: the models PyTorch 1.13 exported
(tests/fixtures/onnx_torch, with their dynamic batch) run from Python and
give PyTorch's outputs, saved beside them, at two batch sizes."""
import os
import unittest

import kiln
from kiln import nd
from kilntest import np, needs_numpy

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures", "onnx_torch")


@needs_numpy
class LoadOnnx(unittest.TestCase):
    def test_pytorch_exports_give_pytorchs_outputs(self):
        for name in ("mlp", "lenet", "resnet"):
            model = kiln.load(os.path.join(FIXTURES, name + "_op17.onnx"))
            for batch in (1, 5):
                x = np.load(os.path.join(FIXTURES, "%s_x%d.npy" % (name, batch)))
                want = np.load(os.path.join(FIXTURES, "%s_y%d.npy" % (name, batch)))
                got = model(nd.array(x)).asnumpy()
                self.assertEqual(got.shape, want.shape)
                np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6, err_msg="%s, batch %d" % (name, batch))

    def test_a_bad_file_raises_with_kilns_message(self):
        with self.assertRaises(kiln.IoError) as cm:
            kiln.load(os.path.join(FIXTURES, "missing.onnx"))
        self.assertIn("missing.onnx", str(cm.exception))


if __name__ == "__main__":
    unittest.main()
