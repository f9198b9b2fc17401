"""Shared helpers of the Python tests: numpy when installed, else the checks
that need it skip; plain-Python references for the rest."""
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
