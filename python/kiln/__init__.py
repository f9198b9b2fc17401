"""kiln: a deep-learning runtime in C11, from Python.

The package is shaped like MXNet Gluon: ``kiln.nd`` arrays and the op
library, ``kiln.autograd``, ``kiln.nn`` blocks and layers (hybridize,
export), ``kiln.gluon`` losses and the Trainer, ``kiln.load`` for exported
models. Every op runs asynchronously on kiln's engine; reading a value
(``asnumpy``, ``item``, printing) or ``wait_to_read``/``waitall`` waits.
Failures raise ``kiln.KilnError`` subclasses carrying kiln's message.
"""
from . import _kiln
from ._kiln import (KilnError, InvalidArgumentError, ShapeError, DtypeError, OutOfRangeError, OverflowError,
                    OutOfMemoryError, UnsupportedError, IoError, CorruptError, InternalError)
from . import nd, autograd, init, nn, gluon, data, kvstore
from .nd import waitall
from .model import load
from .context import Device, Context, cpu, current_device, current_context

__all__ = ["nd", "autograd", "init", "nn", "gluon", "data", "kvstore", "load", "waitall", "KilnError", "cpu",
           "Device", "current_device"]
