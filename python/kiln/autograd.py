"""kiln.autograd: recording a tape and differentiating it (mx.autograd)."""
import contextlib

from . import _kiln


@contextlib.contextmanager
def record(train_mode=True):
    """Ops inside record on the tape; train_mode makes layers such as
    Dropout and BatchNorm behave as in training."""
    _kiln.record_begin(train_mode)
    try:
        yield
    finally:
        _kiln.record_end()


@contextlib.contextmanager
def pause():
    """A region inside record() that records nothing."""
    _kiln.pause_begin()
    try:
        yield
    finally:
        _kiln.pause_end()


def is_recording():
    return _kiln.is_recording()


def is_training():
    return _kiln.is_training()


def backward(head, head_grad=None, retain_graph=False):
    head.backward(head_grad, retain_graph)
