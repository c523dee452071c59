"""The Display classes draw what they claim (rendered headlessly)."""

import subprocess
import sys

import numpy as np
import pytest

from skcnn import CNNClassifier

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from skcnn.plot import FeatureMapDisplay, FilterDisplay, LossCurveDisplay  # noqa: E402


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


@pytest.fixture
def fitted(images):
    X, y = images
    return CNNClassifier(conv_filters=(5, 3), max_iter=4, random_state=0).fit(X, y)


def test_loss_curve_display(fitted, images, tmp_path):
    display = LossCurveDisplay.from_estimator(fitted)
    assert len(display.ax_.lines) == 1
    np.testing.assert_allclose(display.line_.get_ydata(), fitted.loss_curve_)
    assert display.validation_line_ is None
    display.figure_.savefig(tmp_path / "loss.png")
    assert (tmp_path / "loss.png").stat().st_size > 1000
    X, y = images
    X3, y3 = np.concatenate([X] * 2), np.concatenate([y] * 2)
    stopped = CNNClassifier(conv_filters=(2,), max_iter=5, early_stopping=True)
    stopped.fit(X3, y3)
    display = LossCurveDisplay.from_estimator(stopped)
    np.testing.assert_allclose(
        display.validation_line_.get_ydata(), stopped.validation_scores_
    )
    _, ax = plt.subplots()
    assert LossCurveDisplay.from_estimator(fitted, ax=ax).ax_ is ax


def test_filter_display(fitted, tmp_path):
    display = FilterDisplay.from_estimator(fitted)
    assert len(display.images_) == 5  # one image per first-layer filter
    for image, k in zip(display.images_, range(5)):
        expected = fitted.coefs_[0][..., k].mean(axis=-1)  # 2 input channels
        np.testing.assert_allclose(image.get_array(), expected)
    display.figure_.savefig(tmp_path / "filters.png")
    _, axes = plt.subplots(2, 4)
    shown = FilterDisplay.from_estimator(fitted, ax=axes)
    assert shown.figure_ is axes[0, 0].figure
    with pytest.raises(ValueError, match="holds 2 axes but 5"):
        FilterDisplay.from_estimator(fitted, ax=axes[0, :2])


def test_feature_map_display(fitted, images, tmp_path):
    X, _ = images
    display = FeatureMapDisplay.from_estimator(fitted, X[0], block=1)
    block = fitted._net.conv_blocks[1]
    assert len(display.images_) == block.filters
    assert display.images_[0].get_array().shape == block.out_shape[:2]
    first = FeatureMapDisplay.from_estimator(fitted, X[0].ravel(), block=0)
    assert len(first.images_) == 5
    assert (first.images[0] >= 0).all()  # after ReLU
    first.figure_.savefig(tmp_path / "maps.png")
    with pytest.raises(ValueError, match="block must be"):
        FeatureMapDisplay.from_estimator(fitted, X[0], block=2)


def test_missing_matplotlib_names_the_extra():
    code = """
import sys
sys.modules["matplotlib"] = None
sys.modules["matplotlib.pyplot"] = None
import numpy as np
from skcnn import CNNClassifier
from skcnn.plot import LossCurveDisplay
X = np.random.rand(10, 16)
clf = CNNClassifier(conv_filters=(2,), max_iter=1).fit(X, [0, 1] * 5)
try:
    LossCurveDisplay.from_estimator(clf)
except ImportError as exc:
    print(exc)
"""
    out = subprocess.run(
        [sys.executable, "-W", "ignore", "-c", code], capture_output=True, text=True
    )
    assert "pip install 'skcnn[plot]'" in out.stdout, out.stderr


def test_plots_example_writes_three_pngs(tmp_path):
    import runpy
    from pathlib import Path

    example = Path(__file__).resolve().parents[1] / "examples" / "plots.py"
    paths = runpy.run_path(str(example))["main"](str(tmp_path))
    assert len(paths) == 3
    assert all(Path(p).stat().st_size > 1000 for p in paths)
