"""Shared helpers of the Python tests: numpy when installed, else the checks
that need it skip; plain-Python references for the rest."""
import gc
import math
import unittest

try:
    import numpy as np
except ImportError:
    np = None

needs_numpy = unittest.skipIf(np is None, "numpy is not installed")


def assert_close(tc, got, want, rtol=1e-6, atol=1e-6):
    """Nested lists (or numbers) equal within atol + rtol |want|, each
    mismatch reported with both values and the tolerance."""
    if isinstance(want, (list, tuple)):
        tc.assertEqual(len(got), len(want), "lengths differ: %r vs %r" % (got, want))
        for g, w in zip(got, want):
            assert_close(tc, g, w, rtol, atol)
        return
    ok = (math.isnan(got) and math.isnan(want)) or abs(got - want) <= atol + rtol * abs(want)
    tc.assertTrue(ok, "got %r, want %r (atol %g, rtol %g)" % (got, want, atol, rtol))


def rss_kib():
    """This process's resident set (Linux's /proc/self/status), in KiB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def rss_growth(body, n, warm=2000):
    """KiB the resident set grew by over n calls of body, after warm calls
    (caches, pools and the allocator's arenas settle first); kiln's work
    and Python's garbage are finished before each reading."""
    import kiln
    for _ in range(warm):
        body()
    kiln.waitall()
    gc.collect()
    before = rss_kib()
    for _ in range(n):
        body()
    kiln.waitall()
    gc.collect()
    return rss_kib() - before
