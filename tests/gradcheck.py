"""Central finite differences, the oracle for every backward pass."""

import numpy as np
from numpy.testing import assert_allclose

STEP = 1e-5


def central_difference(f, x, i, step=STEP):
    """d f() / d x.flat[i], perturbing ``x`` in place (and restoring it)."""
    flat = x.reshape(-1)
    orig = flat[i]
    flat[i] = orig + step
    up = f()
    flat[i] = orig - step
    down = f()
    flat[i] = orig
    return (up - down) / (2 * step)


def numeric_gradient(f, x, step=STEP):
    """d f() / d x by central differences."""
    grad = np.zeros_like(x)
    for i in range(x.size):
        grad.reshape(-1)[i] = central_difference(f, x, i, step)
    return grad


def assert_gradient(analytic, f, x):
    """The issue's tolerance: |analytic - numeric| <= 1e-6 |numeric| + 1e-9."""
    assert analytic.shape == x.shape
    assert analytic.dtype == np.float64
    assert_allclose(analytic, numeric_gradient(f, x), rtol=1e-6, atol=1e-9)
