"""kiln.load: a model exported by Block.export (PATH.kiln.json and
PATH.safetensors) or an ONNX file (PATH ending in .onnx), run with no block
code."""
from . import _kiln


class Model:
    def __init__(self, path):
        self._h = _kiln.model_load(path)

    def __call__(self, *inputs):
        """The model's outputs: one array, or a tuple when it has several."""
        out = _kiln.model_run(self._h, *inputs)
        return out[0] if len(out) == 1 else out


def load(path):
    return Model(path)
