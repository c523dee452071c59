import warnings

import numpy as np
import pytest
from sklearn.exceptions import ConvergenceWarning


@pytest.fixture(autouse=True)
def _quiet_convergence():
    # small test fits stop at max_iter on purpose
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        yield


@pytest.fixture
def images():
    """40 random 6x5 two-channel images with a learnable 3-class label."""
    rng = np.random.default_rng(0)
    X = rng.uniform(0, 1, (40, 6, 5, 2))
    score = X[:, :3, :, 0].mean(axis=(1, 2))
    y = np.digitize(score, np.quantile(score, [1 / 3, 2 / 3]))
    return X, y


@pytest.fixture(params=[2, 3, 4, 5], ids=lambda m: f"{m}x{m}-tiles")
def winograd_tiles(request, monkeypatch):
    """Every Winograd convolution computed on ``m x m`` output tiles,
    whatever its output size: the rule picks by size, and every tile size
    must be right on every shape."""
    from skcnn import _winograd

    monkeypatch.setattr(_winograd, "_TILE_COST", {request.param: 1.0})
    return request.param
