"""Winograd F(2x2, 3x3) convolution against the im2col convolution."""

import numpy as np
import pytest
from numpy.testing import assert_allclose

from skcnn import CNNClassifier, _layers, _winograd
from skcnn._layers import conv2d_forward
from skcnn._winograd import winograd_conv3x3, winograd_wins

SAME, VALID = ((1, 1), (1, 1)), ((0, 0), (0, 0))

# (n, H, W, C, F, pads, out_hw): even and odd output sizes, "same",
# "valid" and lopsided padding, out_hw crops (what a floor-mode pool
# reads), one channel and many, maps down to a single output pixel
CASES = [
    (2, 8, 8, 3, 5, VALID, None),
    (3, 7, 9, 2, 4, SAME, None),
    (2, 13, 13, 4, 3, VALID, (10, 10)),
    (1, 13, 11, 4, 3, VALID, None),
    (2, 5, 6, 1, 2, ((1, 1), (0, 1)), (3, 4)),
    (2, 6, 5, 3, 2, ((0, 1), (1, 0)), None),
    (1, 3, 3, 2, 2, VALID, None),
    (2, 1, 1, 2, 3, SAME, None),
    (2, 2, 3, 5, 1, SAME, (1, 3)),
    (4, 14, 14, 32, 40, SAME, None),
    (3, 9, 9, 33, 32, SAME, (8, 8)),
]


@pytest.mark.parametrize("case", CASES)
def test_float64_matches_im2col(case):
    n, height, width, channels, filters, pads, out_hw = case
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, height, width, channels))
    W = rng.standard_normal((3, 3, channels, filters))
    expected, _ = conv2d_forward(x, W, 1, pads, out_hw)
    got = winograd_conv3x3(x, W, pads, out_hw)
    assert got.shape == expected.shape
    assert got.dtype == np.float64
    assert_allclose(got, expected, rtol=0, atol=1e-10)


@pytest.mark.parametrize("n", [1, 4, 7])
def test_chunks_and_a_shorter_last_chunk(monkeypatch, n):
    # 3 images per chunk here: 7 images make chunks of 3, 3 and 1
    tiles, channels, filters = 4 * 4, 3, 4
    monkeypatch.setattr(_winograd, "_CHUNK_BYTES", 3 * tiles * filters * 8)
    assert _winograd.images_per_chunk(tiles, channels, filters, 8) == 3
    rng = np.random.default_rng(1)
    x = rng.standard_normal((n, 7, 8, channels))
    W = rng.standard_normal((3, 3, channels, filters))
    expected, _ = conv2d_forward(x, W, 1, SAME)
    assert_allclose(winograd_conv3x3(x, W, SAME), expected, rtol=0, atol=1e-10)


@pytest.mark.parametrize("case", [CASES[2], CASES[9], CASES[10]])
def test_float32_stays_float32_and_close(case):
    n, height, width, channels, filters, pads, out_hw = case
    rng = np.random.default_rng(2)
    x = rng.random((n, height, width, channels))
    W = rng.standard_normal((3, 3, channels, filters)) / np.sqrt(9 * channels)
    expected, _ = conv2d_forward(x, W, 1, pads, out_hw)
    got = winograd_conv3x3(x.astype(np.float32), W.astype(np.float32), pads, out_hw)
    assert got.dtype == np.float32
    # measured: about 3e-7 of the largest output, less than im2col's error
    scale = np.abs(expected).max()
    assert np.abs(got - expected).max() <= 1e-5 * scale


def test_rule():
    assert winograd_wins((3, 3, 32, 32), 1)
    assert winograd_wins((3, 3, 64, 128), 1)
    assert not winograd_wins((3, 3, 16, 32), 1)  # measured slower
    assert not winograd_wins((3, 3, 32, 16), 1)
    assert not winograd_wins((3, 3, 1, 64), 1)  # a first layer
    assert not winograd_wins((3, 3, 64, 64), 2)
    assert not winograd_wins((5, 5, 64, 64), 1)
    assert not winograd_wins((2, 3, 64, 64), 1)  # a kernel clipped to the map


@pytest.fixture
def spy(monkeypatch):
    calls = []

    def recording(*args, **kwargs):
        calls.append(args[1].shape)
        return winograd_conv3x3(*args, **kwargs)

    monkeypatch.setattr(_layers, "winograd_conv3x3", recording)
    return calls


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_conv2d_forward_takes_winograd_only_without_cache(spy, dtype):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 9, 9, 32)).astype(dtype)
    W = rng.standard_normal((3, 3, 32, 32)).astype(dtype)
    expected, cache = conv2d_forward(x, W, 1, SAME, (8, 8))
    assert cache is not None and spy == []
    got, cache = conv2d_forward(x, W, 1, SAME, (8, 8), need_cache=False)
    assert cache is None and spy == [(3, 3, 32, 32)]
    assert got.dtype == dtype
    tol = 1e-10 if dtype == np.float64 else 1e-4
    assert_allclose(got, expected, rtol=0, atol=tol)
    # a layer the rule leaves to im2col: no cache either
    _, cache = conv2d_forward(x[..., :16], W[:, :, :16], 1, SAME, need_cache=False)
    assert cache is None and len(spy) == 1


def test_prediction_by_winograd_matches_im2col(spy, monkeypatch):
    rng = np.random.default_rng(4)
    X = rng.random((30, 10 * 10 * 2))
    y = np.arange(30) % 3
    clf = CNNClassifier(
        image_shape=(10, 10, 2),
        conv_filters=(32, 32),
        padding="same",
        batch_norm=True,
        max_iter=2,
        random_state=0,
    ).fit(X, y)
    spy.clear()
    proba = clf.predict_proba(X)
    assert (3, 3, 32, 32) in spy
    monkeypatch.setattr(_winograd, "MIN_CHANNELS", 10**9)  # im2col only
    spy.clear()
    expected = clf.predict_proba(X)
    assert spy == []
    assert_allclose(proba, expected, rtol=0, atol=1e-10)
