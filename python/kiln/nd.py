"""kiln.nd: n-dimensional arrays and the op library (MXNet's mx.nd).

Arrays are ``NDArray`` objects, each owning one reference to a kiln tensor.
Binary ops broadcast as numpy does; both operands have one dtype (a Python
number takes the array's dtype). Ops return at once and compute on kiln's
engine; ``wait_to_read()``, ``waitall()`` and any read of values wait.
``numpy.asarray(x)`` shares x's memory; ``x.asnumpy()`` copies. ``from_numpy``,
``array(a, copy=False)`` and ``from_dlpack`` share memory the other way, and
kiln arrays implement ``__dlpack__`` (torch.from_dlpack(x) shares x). Memory
shared with kiln may be read at once; before writing it from outside kiln,
wait for the kiln ops that use it (``waitall()``).
"""
import array as _pyarray

from . import _kiln
from ._kiln import (NDArray, zeros as _zeros, ones as _ones, full as _full, arange as _arange, from_buffer,
                    neg, abs, exp, log, sqrt, rsqrt, square, sin, cos, tanh, sigmoid, relu, gelu, softplus, erf,
                    sign, floor, ceil, round, logical_not, contiguous, copy, add, sub as subtract, mul as multiply,
                    div as divide, pow as power, maximum, minimum, equal, not_equal, less, less_equal, greater,
                    greater_equal, logical_and, logical_or, matmul, sum, mean, max, min, prod, logsumexp, argmax,
                    argmin, var, softmax, log_softmax, expand_dims, squeeze, leaky_relu, take, one_hot, concat, stack,
                    clip, cast, where, linear, gather, softmax_cross_entropy, dropout, waitall, from_dlpack,
                    share as _share)

try:
    import numpy as _np
except ImportError:  # numpy is optional
    _np = None


def _dtype(dtype):
    return None if dtype is None else str(_np.dtype(dtype)) if _np is not None and not isinstance(dtype, str) else dtype


def _flatten(obj, shape, out, depth=0):
    if isinstance(obj, (list, tuple)):
        if len(shape) == depth:
            shape.append(len(obj))
        elif shape[depth] != len(obj):
            raise ValueError("ragged nested sequence: cannot make an array of it")
        for e in obj:
            _flatten(e, shape, out, depth + 1)
    else:
        if len(shape) != depth:
            raise ValueError("ragged nested sequence: cannot make an array of it")
        out.append(float(obj))


_SHARED_DTYPES = ("float32", "float64", "int32", "int64", "uint8", "bool")


def from_numpy(a):
    """A kiln array sharing a's memory (no copy): a writable numpy array (any
    strides) of float32, float64, int32, int64, uint8 or bool, or anything
    else exporting such a writable buffer. The kiln array keeps a alive;
    writes through either are seen by the other once kiln's pending ops on
    it are done (``waitall()``). Raises TypeError (kiln.DtypeError) for
    other dtypes and ValueError for read-only or misaligned memory."""
    return _share(a)


def to_dlpack_for_read(x):
    """A DLPack capsule of x's memory, after x's pending writes (MXNet's
    name; the same as ``x.__dlpack__()``)."""
    return x.__dlpack__()


def to_dlpack_for_write(x):
    """A DLPack capsule of x's memory after every pending kiln op, so the
    consumer may write it at once."""
    waitall()
    return x.__dlpack__()


def array(source, dtype=None, copy=True):
    """A new array holding a copy of source: a kiln array, a numpy array (its
    dtype kept unless dtype says otherwise), anything exporting a buffer, or
    nested lists of numbers (float32 unless dtype says otherwise).

    copy=False shares the memory of a numpy array or buffer instead when it
    can (a kiln dtype, writable, aligned: see ``from_numpy``) and copies when
    it cannot, as numpy.array(copy=False) does; a kiln array is returned as
    it is."""
    dtype = _dtype(dtype)
    if not copy:
        if isinstance(source, NDArray) and (dtype is None or dtype == source.dtype):
            return source
        if _np is not None and isinstance(source, _np.ndarray):
            if (source.dtype.name in _SHARED_DTYPES and (dtype is None or dtype == source.dtype.name)
                    and source.flags.writeable and source.flags.aligned and source.dtype.isnative):
                return _share(source)
        elif not isinstance(source, (list, tuple, int, float, bool, NDArray)):
            try:
                shared = _share(source)
            except (TypeError, ValueError, BufferError):
                shared = None
            if shared is not None and (dtype is None or dtype == shared.dtype):
                return shared
    if isinstance(source, NDArray):
        return source.copy() if dtype is None or dtype == source.dtype else source.astype(dtype)
    if _np is not None and isinstance(source, _np.ndarray):
        src = _np.ascontiguousarray(source)
        if src.dtype.name not in ("float32", "float64", "int32", "int64", "uint8", "bool"):
            if src.dtype.kind not in "fiu":
                raise TypeError("kiln has no dtype for numpy dtype %s" % src.dtype)
            src = src.astype(_np.float32 if src.dtype.kind == "f" else _np.int64)
        return from_buffer(src, dtype)
    if isinstance(source, (list, tuple, int, float, bool)):
        shape, flat = [], _pyarray.array("d")
        _flatten(source, shape, flat)
        return from_buffer(flat, dtype or "float32", shape=shape)
    return from_buffer(source, dtype)


def zeros(shape, dtype=None):
    return _zeros(shape, _dtype(dtype))


def ones(shape, dtype=None):
    return _ones(shape, _dtype(dtype))


def full(shape, val, dtype=None):
    return _full(shape, _dtype(dtype), val)


def zeros_like(x):
    return _zeros(x.shape, x.dtype)


def ones_like(x):
    return _ones(x.shape, x.dtype)


def arange(start, stop=None, step=1.0, dtype=None):
    return _arange(start, stop, step, _dtype(dtype))


def dot(a, b):
    return matmul(a, b)


def reshape(x, shape):
    return x.reshape(shape)


def transpose(x, axes=None):
    return x.transpose() if axes is None else x.transpose(axes)


def pick(x, index, axis=-1):
    """x's element at index along axis (MXNet's pick): index has x's shape
    without that axis."""
    ax = axis % x.ndim
    return squeeze(gather(x, ax, expand_dims(index, ax)), ax)


def _asnumpy(self):
    """A numpy copy of the values (waits for them)."""
    if _np is None:
        raise ImportError("asnumpy() needs numpy; tolist() does without")
    return _np.array(memoryview(self))


def _array(self, dtype=None):
    """numpy's fallback when the buffer export failed: raise its error
    rather than let numpy make an object array."""
    a = _np.asarray(memoryview(self))
    return a if dtype is None else a.astype(dtype)


def _method(fn):
    return lambda self, *args, **kw: fn(self, *args, **kw)


class _Random:
    """kiln.nd.random: uniform and normal draws from this thread's generator
    (kiln.nd.random.seed), counter-based, so independent of thread counts."""

    @staticmethod
    def uniform(low=0.0, high=1.0, shape=(1,), dtype=None):
        return _kiln.uniform(low, high, shape, _dtype(dtype))

    @staticmethod
    def normal(loc=0.0, scale=1.0, shape=(1,), dtype=None):
        return _kiln.normal(loc, scale, shape, _dtype(dtype))

    @staticmethod
    def seed(s):
        _kiln.seed(s)


random = _Random()

# Methods that mirror the functions (x.sum(axis=1), x.exp(), ...).
for _name in ("sum", "mean", "max", "min", "prod", "argmax", "argmin", "var", "logsumexp", "exp", "log", "sqrt",
              "relu", "sigmoid", "tanh", "softmax", "log_softmax", "abs", "square", "expand_dims", "squeeze",
              "clip"):
    _kiln._add_method(_name, _method(globals()[_name]))
_kiln._add_method("asnumpy", _asnumpy)
_kiln._add_method("__array__", _array)
_kiln._add_method("__array_priority__", 100.0)  # numpy defers to kiln's reflected operators

