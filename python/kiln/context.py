"""Devices (MXNet's contexts): ``kiln.cpu(i)``, ``with kiln.cpu(1): ...``,
``x.context``, ``x.as_in_context(ctx)`` and ``x.copyto(ctx)``.

An op runs on the device of its inputs, which must all be on one; arrays made
without inputs (zeros, random, array) go to the current device, which a
``with`` block sets for the thread. Each device has engine workers of its own,
and copies between devices run on a queue of their own, so they overlap
computation (docs/devices.md)."""
from . import _kiln


class Device:
    """A CPU device, ``cpu(0)`` to ``cpu(15)``."""

    def __init__(self, device_id=0):
        self.device_id = int(device_id)

    device_type = "cpu"

    def __repr__(self):
        return "cpu(%d)" % self.device_id

    def __eq__(self, other):
        return isinstance(other, Device) and other.device_id == self.device_id

    def __hash__(self):
        return hash(("cpu", self.device_id))

    def __enter__(self):
        self._outer = getattr(self, "_outer", [])
        self._outer.append(_kiln.current_device())
        _kiln.set_device(self.device_id)
        return self

    def __exit__(self, *exc):
        _kiln.set_device(self._outer.pop())
        return False

    def memory(self):
        """(bytes of tensor storage held now, the peak so far)."""
        return _kiln.device_memory(self.device_id)


Context = Device


def cpu(device_id=0):
    return Device(device_id)


def current_device():
    return Device(_kiln.current_device())


current_context = current_device


def _context(self):
    return Device(_kiln.device_of(self))


def _copyto(self, ctx):
    """A copy on ctx (an engine op on the copy queue)."""
    return _kiln.to_device(self, ctx.device_id)


def _as_in_context(self, ctx):
    """self when it is on ctx already, else a copy there."""
    return self if _kiln.device_of(self) == ctx.device_id else _kiln.to_device(self, ctx.device_id)


_kiln._add_method("context", property(_context))
_kiln._add_method("device", property(_context))
_kiln._add_method("copyto", _copyto)
_kiln._add_method("as_in_context", _as_in_context)
_kiln._add_method("to_device", _as_in_context)
