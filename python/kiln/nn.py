"""kiln.nn: blocks and layers (Gluon's nn).

A Block wraps a kiln block. Layers are kiln's own C blocks. A subclass of
HybridBlock writes ``forward`` in Python: kiln calls it with the inputs as
arrays, eagerly until ``hybridize()``; after that, once per input signature
with symbolic arrays while kiln traces it (so a ``print`` in forward runs
only then), and later calls run the compiled plan without entering Python.
Children assigned as attributes (``self.dense = nn.Dense(10)``) are
registered under the attribute's name.
"""
from collections import OrderedDict
from collections.abc import Mapping

from . import _kiln, init as _init
from .nd import NDArray


class Parameter:
    """A parameter of a block: ``data()``, ``grad()``, ``set_data()``."""

    def __init__(self, name, data):
        self.name = name
        self._data = data

    def data(self):
        return self._data

    def grad(self):
        return self._data.grad

    def set_data(self, value):
        self._data[...] = value

    @property
    def shape(self):
        return self._data.shape

    @property
    def dtype(self):
        return self._data.dtype

    def __repr__(self):
        return "Parameter %s (shape=%s, dtype=%s)" % (self.name, self.shape, self.dtype)


class ParameterDict(Mapping):
    """collect_params(): name -> Parameter, in kiln's order. Read when used,
    so it can be made before the first forward fixes deferred shapes (a
    Trainer takes it then, as in Gluon)."""

    def __init__(self, block):
        self._block = block

    def _items(self):
        return OrderedDict((n, Parameter(n, a)) for n, a in _kiln.block_collect_params(self._block._h))

    def __getitem__(self, name):
        return self._items()[name]

    def __iter__(self):
        return iter(self._items())

    def __len__(self):
        return len(self._items())


class Block:
    """A kiln block. Subclasses define forward (Python) or, for kiln's
    layers, wrap a C block (``_h``)."""

    _traceable = False

    def __init__(self, _handle=None):
        object.__setattr__(self, "_children", OrderedDict())
        object.__setattr__(self, "_hybridized", False)
        if _handle is None:
            _handle = _kiln.block_new(self, type(self).__name__, self._traceable)
        object.__setattr__(self, "_h", _handle)

    def __setattr__(self, name, value):
        if isinstance(value, Block) and name not in self._children:
            _kiln.block_add_child(self._h, name, value._h)
            self._children[name] = value
        object.__setattr__(self, name, value)

    def register_child(self, block, name=None):
        _kiln.block_add_child(self._h, name, block._h)
        self._children[name if name is not None else str(len(self._children))] = block
        return block

    def __call__(self, *args):
        return _kiln.block_call(self._h, *args)

    def forward(self, *args):
        raise NotImplementedError("%s.forward is not defined" % type(self).__name__)

    def initialize(self, init=None, force_reinit=False):
        """Initialises every parameter (its own initialiser, else init, else
        Xavier uniform); those of unknown shape at the first forward."""
        _kiln.block_initialize(self._h, _init.spec(init), force_reinit)

    def params(self, name, shape=None):
        """This block's parameter name (inside forward); shape fixes its
        unknown dims (0) the first time."""
        return _kiln.block_param(self._h, name, shape)

    def add_param(self, name, shape, dtype="float32", init=None, grad_req="write"):
        """Declares a parameter; dims of 0 are fixed by the first forward
        through params(name, shape)."""
        _kiln.block_add_param(self._h, name, shape, dtype, _init.spec(init), grad_req)

    def collect_params(self):
        return ParameterDict(self)

    def save_parameters(self, path):
        _kiln.block_save_parameters(self._h, path)

    def load_parameters(self, path):
        _kiln.block_load_parameters(self._h, path)

    def cast(self, dtype):
        _kiln.block_cast(self._h, str(dtype))

    def hybridize(self, active=True, cache_capacity=0, check=False):
        """Gluon's hybridize: trace once per input signature and run plans.
        For a plain Block, only its hybridizable children."""
        _kiln.block_hybridize(self._h, active, cache_capacity, check)
        object.__setattr__(self, "_hybridized", active)

    @property
    def trace_log(self):
        """One line per trace: when, why, and what it compiled to."""
        return _kiln.block_trace_log(self._h)

    def export(self, path, dynamic_batch=False):
        """Writes PATH.kiln.json and PATH.safetensors from the latest
        inference call of this hybridized block (kiln.load reads them)."""
        _kiln.block_export(self._h, path, dynamic_batch)


class HybridBlock(Block):
    _traceable = True


class _Layer(HybridBlock):
    def __init__(self, handle):
        super().__init__(handle)


class Sequential(Block):
    """Calls its children in order (kiln's sequential container)."""

    _traceable = True

    def __init__(self):
        super().__init__(_kiln.nn_sequential())

    def add(self, *blocks):
        for b in blocks:
            self.register_child(b)
        return self

    def __getitem__(self, i):
        return list(self._children.values())[i]

    def __len__(self):
        return len(self._children)


HybridSequential = Sequential


class Dense(_Layer):
    def __init__(self, units, activation=None, use_bias=True, flatten=True, in_units=0):
        super().__init__(_kiln.nn_dense(units, activation, use_bias, flatten, in_units))


class Conv2D(_Layer):
    def __init__(self, channels, kernel_size, strides=1, padding=0, dilation=1, groups=1, activation=None,
                 use_bias=True, in_channels=0):
        super().__init__(_kiln.nn_conv2d(channels, kernel_size, strides, padding, dilation, groups, activation,
                                         use_bias, in_channels))


class MaxPool2D(_Layer):
    def __init__(self, pool_size=2, strides=None, padding=0):
        super().__init__(_kiln.nn_pool2d(False, pool_size, strides, padding, False))


class AvgPool2D(_Layer):
    def __init__(self, pool_size=2, strides=None, padding=0, count_include_pad=True):
        super().__init__(_kiln.nn_pool2d(True, pool_size, strides, padding, count_include_pad))


class GlobalAvgPool2D(_Layer):
    def __init__(self):
        super().__init__(_kiln.nn_global_avg_pool2d())


class Flatten(_Layer):
    def __init__(self):
        super().__init__(_kiln.nn_flatten())


class Dropout(_Layer):
    def __init__(self, rate):
        super().__init__(_kiln.nn_dropout(rate))


class BatchNorm(_Layer):
    def __init__(self, momentum=0.9, epsilon=1e-5, in_channels=0):
        super().__init__(_kiln.nn_batch_norm(in_channels, momentum, epsilon))


class Activation(_Layer):
    def __init__(self, activation):
        super().__init__(_kiln.nn_activation(activation))
