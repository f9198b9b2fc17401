"""kiln.data: the Fashion-MNIST reader and the batch loader."""
import os
import unittest

import kiln
from kiln import nd, data

HAVE_FASHION = os.path.exists("/usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz")


class Loader(unittest.TestCase):
    def test_batches_cover_the_set_in_order(self):
        images = nd.arange(10 * 4, dtype="uint8").reshape(10, 2, 2)
        labels = nd.arange(10, dtype="int64")
        loader = data.DataLoader(images, labels, batch_size=4)
        self.assertEqual(len(loader), 3)
        batches = list(loader)
        self.assertEqual([b[0].shape for b in batches], [(4, 1, 2, 2), (4, 1, 2, 2), (2, 1, 2, 2)])
        self.assertEqual(sum((b[1].tolist() for b in batches), []), list(range(10)))
        self.assertAlmostEqual(batches[0][0][1, 0, 0, 0].item(), 4 / 255, places=6)  # uint8 scaled into [0, 1]
        again = sum((b[1].tolist() for b in loader), [])  # a second epoch
        self.assertEqual(again, list(range(10)))

    def test_shuffle_is_a_seeded_permutation(self):
        labels = nd.arange(100, dtype="int64")
        images = nd.zeros((100, 3))
        order = lambda seed: sum((y.tolist() for _, y in data.DataLoader(images, labels, 32, shuffle=True, seed=seed)), [])
        a, b = order(4), order(4)
        self.assertEqual(a, b)
        self.assertEqual(sorted(a), list(range(100)))
        self.assertNotEqual(a, list(range(100)))
        dropped = list(data.DataLoader(images, labels, 32, last_batch="discard"))
        self.assertEqual(len(dropped), 3)

    def test_mismatch_is_an_error(self):
        with self.assertRaises(kiln.KilnError):
            data.DataLoader(nd.zeros((5, 2)), nd.zeros((4,), dtype="int64"), 2)

    @unittest.skipUnless(HAVE_FASHION, "Debian's dataset-fashion-mnist is not installed")
    def test_fashion_mnist_test_set(self):
        x, y = data.fashion_mnist(train=False)
        self.assertEqual((x.shape, x.dtype, y.shape, y.dtype), ((10000, 28, 28), "uint8", (10000,), "uint8"))
        counts = nd.one_hot(y.astype("int64"), 10).sum(axis=0).tolist()
        self.assertEqual(counts, [1000.0] * 10)  # the test set is balanced

    def test_missing_directory_says_what_to_install(self):
        with self.assertRaises(kiln.IoError) as cm:
            data.fashion_mnist(train=False, root="/nonexistent")
        self.assertIn("dataset-fashion-mnist", str(cm.exception))


if __name__ == "__main__":
    unittest.main()
