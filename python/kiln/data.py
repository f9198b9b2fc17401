"""kiln.data: Fashion-MNIST and a batch loader (kiln_loader): batches are
gathered by engine work, so the next one is prepared while a step computes."""
from . import _kiln


def fashion_mnist(train=True, root=None):
    """(images uint8 [N, 28, 28], labels uint8 [N]) from Debian's
    dataset-fashion-mnist (or root)."""
    return _kiln.fashion_mnist(root, train)


class DataLoader:
    """Iterates (x float32 [B, 1, 28, 28] scaled to [0, 1], y int64 [B])."""

    def __init__(self, images, labels, batch_size, shuffle=False, seed=0, last_batch="keep"):
        if last_batch not in ("keep", "discard"):
            raise ValueError("last_batch is 'keep' or 'discard'")
        self._h = _kiln.loader_new(images, labels, batch_size, shuffle, seed, last_batch == "discard")
        self._started = False

    def __len__(self):
        return _kiln.loader_len(self._h)

    def __iter__(self):
        if self._started:
            _kiln.loader_reset(self._h)
        self._started = True
        while True:
            b = _kiln.loader_next(self._h)
            if b is None:
                return
            yield b
