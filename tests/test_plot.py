"""The Display classes draw what they claim (rendered headlessly)."""

import subprocess
import sys

import numpy as np
import pytest
from sklearn.exceptions import NotFittedError
from sklearn.linear_model import LogisticRegression
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from skcnn import CNNClassifier, CNNRegressor

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
    return CNNClassifier(
        conv_filters=(5, 3), max_iter=4, random_state=0, padding="valid"
    ).fit(X, y)


def _legend_texts(display):
    return [t.get_text() for t in display.ax_.get_legend().get_texts()]


def _conv_relu_max_pool(x, est):
    """Block 0 of a model with valid padding, stride 1, 2x2 max pooling and
    ReLU, written out independently of skcnn's layers."""
    mean = getattr(est, "input_offset_", None)
    if mean is not None:  # the estimator's own input scaling
        x = (x - mean) / est.input_scale_
    W, b = est.coefs_[0], est.intercepts_[0]
    kh, kw = W.shape[:2]
    conv = np.empty((x.shape[0] - kh + 1, x.shape[1] - kw + 1, W.shape[-1]))
    for i in range(conv.shape[0]):
        for j in range(conv.shape[1]):
            conv[i, j] = np.tensordot(x[i : i + kh, j : j + kw], W, axes=3) + b
    conv = np.maximum(conv, 0)
    ph, pw = min(2, conv.shape[0]), min(2, conv.shape[1])
    h, w = conv.shape[0] // ph, conv.shape[1] // pw
    pooled = conv[: h * ph, : w * pw].reshape(h, ph, w, pw, -1).max(axis=(1, 3))
    return np.moveaxis(pooled, -1, 0)  # (filters, h, w) as the display holds


def test_loss_curve_display(fitted, images, tmp_path):
    display = LossCurveDisplay.from_estimator(fitted)
    assert len(display.ax_.lines) == 1
    np.testing.assert_allclose(display.line_.get_ydata(), fitted.loss_curve_)
    assert display.validation_line_ is None
    assert display.best_marker_ is None
    assert _legend_texts(display) == ["training loss"]
    display.figure_.savefig(tmp_path / "loss.png")
    assert (tmp_path / "loss.png").stat().st_size > 1000
    # 4 epochs: matplotlib's default locator would put ticks at 1.5, 2.5...
    ticks = display.ax_.get_xticks()
    low, high = display.ax_.get_xlim()
    shown = ticks[(ticks >= low) & (ticks <= high)]
    assert len(shown) >= 2
    np.testing.assert_array_equal(shown, np.round(shown))
    _, ax = plt.subplots()
    assert LossCurveDisplay.from_estimator(fitted, ax=ax).ax_ is ax


@pytest.mark.parametrize(
    "Estimator, label", [(CNNClassifier, "accuracy"), (CNNRegressor, "R^2")]
)
def test_loss_curve_marks_the_restored_best_epoch(images, Estimator, label):
    X, y = images
    X2, y2 = np.concatenate([X] * 2), np.concatenate([y] * 2)
    stopped = Estimator(
        conv_filters=(2,),
        max_iter=6,
        early_stopping=True,
        n_iter_no_change=20,
        random_state=2,
    ).fit(X2, y2)
    display = LossCurveDisplay.from_estimator(stopped)
    scores = stopped.validation_scores_
    np.testing.assert_allclose(display.validation_line_.get_ydata(), scores)
    np.testing.assert_array_equal(display.validation_line_.get_xdata(), range(1, 7))
    best = int(np.argmax(scores)) + 1  # the first epoch of the best score
    assert scores[best - 1] == stopped.best_validation_score_
    np.testing.assert_array_equal(display.best_marker_.get_xdata(), [best])
    np.testing.assert_allclose(
        display.best_marker_.get_ydata(), [stopped.best_validation_score_]
    )
    assert _legend_texts(display) == [
        "training loss",
        f"validation {label}",
        f"restored best epoch ({best})",
    ]
    assert display.validation_ax_.get_ylabel() == f"validation {label}"
    assert display.ax_.get_title() == Estimator.__name__


def test_loss_curve_display_aligns_late_validation_scores():
    # scores of the last epochs only (early stopping turned on in a warm
    # start); the best of them is not the last
    display = LossCurveDisplay(
        [1.0, 0.8, 0.6, 0.5, 0.45], [0.5, 0.9, 0.7], best_epoch=4
    ).plot()
    np.testing.assert_array_equal(display.validation_line_.get_xdata(), [3, 4, 5])
    np.testing.assert_array_equal(display.best_marker_.get_xdata(), [4])
    np.testing.assert_array_equal(display.best_marker_.get_ydata(), [0.9])
    assert _legend_texts(display) == [
        "training loss",
        "validation score",
        "restored best epoch (4)",
    ]
    with pytest.raises(ValueError, match="best_epoch=1 is not an epoch"):
        LossCurveDisplay([1.0, 0.8, 0.6], [0.5, 0.9], best_epoch=1).plot()


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
    # the input beside the maps: one more axis, titled, as passed
    assert len(display.axes_) == block.filters + 1
    assert display.axes_[0].get_title() == "input"
    np.testing.assert_allclose(display.input_image_.get_array(), X[0].mean(axis=-1))
    first = FeatureMapDisplay.from_estimator(fitted, X[0].ravel(), block=0)
    np.testing.assert_allclose(
        first.images, _conv_relu_max_pool(X[0], fitted), rtol=1e-5, atol=1e-6
    )
    for image, expected in zip(first.images_, first.images):
        np.testing.assert_array_equal(image.get_array(), expected)
        # one colour scale for all maps, so filters compare
        assert image.get_clim() == (first.images.min(), first.images.max())
    first.figure_.savefig(tmp_path / "maps.png")
    with pytest.raises(ValueError, match="block must be"):
        FeatureMapDisplay.from_estimator(fitted, X[0], block=2)
    with pytest.raises(ValueError, match="holds 3 axes but 6"):
        _, axes = plt.subplots(1, 3)
        FeatureMapDisplay.from_estimator(fitted, X[0], ax=axes)


def test_feature_map_display_takes_one_image_only(images):
    X, y = images
    gray = CNNClassifier(conv_filters=(3,), max_iter=1, random_state=0)
    gray.fit(X[..., 0], y)  # 6x5 grayscale images
    expected = FeatureMapDisplay.from_estimator(gray, X[0, :, :, 0]).images
    for one in [X[0, :, :, 0].ravel(), X[:1, :, :, 0], X[0, :, :, 0].ravel()[None]]:
        display = FeatureMapDisplay.from_estimator(gray, one)
        np.testing.assert_array_equal(display.images, expected)
        np.testing.assert_array_equal(display.input_image, X[0, :, :, 0])
    for several in [X[:5, :, :, 0], X[:5, :, :, 0].reshape(5, -1)]:
        with pytest.raises(ValueError, match=r"pass one image.*\(5, "):
            FeatureMapDisplay.from_estimator(gray, several)
    fitted = CNNClassifier(conv_filters=(3,), max_iter=1, random_state=0).fit(X, y)
    with pytest.raises(ValueError, match=r"pass one image.*\(5, 6, 5, 2\)"):
        FeatureMapDisplay.from_estimator(fitted, X[:5])


def test_displays_take_a_fitted_pipeline(images):
    X, y = images
    rows = X.reshape(len(X), -1) * 10 + 3  # the scaler changes the values
    cnn = CNNClassifier(
        image_shape=(6, 5), conv_filters=(4,), max_iter=3, padding="valid"
    )
    pipe = make_pipeline(StandardScaler(), cnn.set_params(random_state=0))
    pipe.fit(rows, y)
    cnn = pipe[-1]
    loss = LossCurveDisplay.from_estimator(pipe)
    np.testing.assert_allclose(loss.line_.get_ydata(), cnn.loss_curve_)
    assert loss.ax_.get_title() == "CNNClassifier"
    filters = FilterDisplay.from_estimator(pipe)
    np.testing.assert_allclose(
        filters.images, np.moveaxis(cnn.coefs_[0].mean(axis=2), -1, 0)
    )
    maps = FeatureMapDisplay.from_estimator(pipe, rows[0])
    # the image reaches the network through the scaler
    scaled = pipe[0].transform(rows[:1]).reshape(X.shape[1:])
    np.testing.assert_allclose(
        maps.images, _conv_relu_max_pool(scaled, cnn), rtol=1e-5, atol=1e-6
    )
    # the input panel shows the image as it was passed, not as scaled
    np.testing.assert_allclose(
        maps.input_image, rows[0].reshape(X.shape[1:]).mean(axis=-1)
    )
    with pytest.raises(ValueError, match="pass one image"):
        FeatureMapDisplay.from_estimator(pipe, rows[:2])


def test_displays_work_for_a_regressor(images):
    X, _ = images
    target = X[:, :3, :, 0].mean(axis=(1, 2))
    reg = CNNRegressor(
        conv_filters=(4, 2), max_iter=3, random_state=0, padding="valid"
    ).fit(X, target)
    loss = LossCurveDisplay.from_estimator(reg)
    np.testing.assert_allclose(loss.line_.get_ydata(), reg.loss_curve_)
    assert loss.ax_.get_title() == "CNNRegressor"
    assert len(FilterDisplay.from_estimator(reg).images_) == 4
    maps = FeatureMapDisplay.from_estimator(reg, X[3])
    np.testing.assert_allclose(
        maps.images, _conv_relu_max_pool(X[3], reg), rtol=1e-5, atol=1e-6
    )
    assert len(maps.axes_) == 5


@pytest.mark.parametrize(
    "Display", [LossCurveDisplay, FilterDisplay, FeatureMapDisplay]
)
def test_displays_reject_unfitted_and_foreign_estimators(images, Display):
    X, y = images
    rows = X.reshape(len(X), -1)
    extra = (rows[0],) if Display is FeatureMapDisplay else ()
    for unfitted in [CNNRegressor(), make_pipeline(StandardScaler(), CNNClassifier())]:
        with pytest.raises(NotFittedError):
            Display.from_estimator(unfitted, *extra)
    mlp = MLPClassifier(max_iter=2, random_state=0).fit(rows, y)
    with pytest.raises(TypeError, match="skcnn CNNClassifier or CNNRegressor"):
        Display.from_estimator(mlp, *extra)
    pipe = make_pipeline(StandardScaler(), LogisticRegression()).fit(rows, y)
    with pytest.raises(TypeError, match="Pipeline ending in LogisticRegression"):
        Display.from_estimator(pipe, *extra)


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
