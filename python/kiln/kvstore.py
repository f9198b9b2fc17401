"""kiln.kvstore: the key-value store (d2l 13.7, MXNet's mx.kv).

``kv = kiln.kvstore.create("local")`` sums values pushed from several devices;
``"mpi"`` also sums across the processes of an MPI job (run under mpirun).
``init(key, value)``, ``push(key, values, priority)`` and ``pull(key, out,
priority)`` take a key or a list of keys; for each key, one array or a list of
arrays (one per device). Every push and pull is engine work and returns at
once; reading the pulled arrays waits. Every process must push the same keys
in the same order."""
from . import _kiln
from ._kiln import NDArray


def _lists(key, values, what):
    if isinstance(key, (list, tuple)):
        keys = list(key)
        if len(values) != len(keys):
            raise ValueError("%d keys but %d %s" % (len(keys), len(values), what))
        vals = [list(v) if isinstance(v, (list, tuple)) else [v] for v in values]
    else:
        keys = [key]
        vals = [list(values) if isinstance(values, (list, tuple)) else [values]]
    return keys, vals


class KVStore:
    def __init__(self, kind="local"):
        self.type = kind
        self._h = _kiln.kvstore_new(kind)

    @property
    def rank(self):
        return _kiln.kvstore_rank(self._h)[0]

    @property
    def num_workers(self):
        return _kiln.kvstore_rank(self._h)[1]

    def init(self, key, value):
        keys, vals = _lists(key, value, "values")
        for k, v in zip(keys, vals):
            if len(v) != 1 or not isinstance(v[0], NDArray):
                raise TypeError("init takes one array per key")
            _kiln.kvstore_init(self._h, k, v[0])

    def push(self, key, value, priority=0):
        keys, vals = _lists(key, value, "value lists")
        _kiln.kvstore_push(self._h, keys, vals, priority)

    def pull(self, key, out, priority=0):
        keys, outs = _lists(key, out, "output lists")
        _kiln.kvstore_pull(self._h, keys, outs, priority)


def create(name="local"):
    return KVStore(name)
