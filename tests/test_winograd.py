"""Winograd F(m x m, 3x3) convolution, m = 2 to 5, against im2col's."""

import numpy as np
import pytest
import test_network
from numpy.testing import assert_allclose, assert_array_equal
from threadpoolctl import threadpool_info, threadpool_limits

from skcnn import (
    CNNClassifier,
    _blocks,
    _engine,
    _layers,
    _parallel,
    _winograd,
    _winograd_tiles,
)
from skcnn._layers import conv2d_backward, conv2d_forward
from skcnn._winograd import (
    WinogradCache,
    winograd_backward,
    winograd_conv3x3,
    winograd_forward,
    winograd_wins,
)

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
def test_float64_matches_im2col(case, winograd_tiles):
    n, height, width, channels, filters, pads, out_hw = case
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, height, width, channels))
    W = rng.standard_normal((3, 3, channels, filters))
    expected, _ = conv2d_forward(x, W, 1, pads, out_hw)
    assert _winograd.tile_size(expected.shape[1:3]) == winograd_tiles
    got = winograd_conv3x3(x, W, pads, out_hw)
    assert got.shape == expected.shape
    assert got.dtype == np.float64
    assert_allclose(got, expected, rtol=0, atol=1e-10)


@pytest.mark.parametrize("n, sizes", [(1, [1]), (4, [2, 2]), (7, [2, 2, 3])])
def test_chunks_of_unequal_sizes(monkeypatch, n, sizes):
    # at most 3 images per chunk here: as few chunks as that allows, as
    # equal as can be (not 3, 3 and a last chunk of 1)
    tiles, channels, filters = 4 * 4, 3, 4
    monkeypatch.setattr(_winograd, "_CHUNK_BYTES", 3 * 36 * tiles * filters * 8)
    assert _winograd.images_per_chunk(tiles, channels, filters, 8, 6) == 3
    step, chunks = _winograd._chunks(n, tiles, channels, filters, 8, 6)
    assert step == min(n, 3) and [count for _, count in chunks] == sizes
    assert [start for start, _ in chunks] == list(np.cumsum([0] + sizes[:-1]))
    rng = np.random.default_rng(1)
    x = rng.standard_normal((n, 7, 8, channels))
    W = rng.standard_normal((3, 3, channels, filters))
    expected, _ = conv2d_forward(x, W, 1, SAME)
    assert_allclose(winograd_conv3x3(x, W, SAME), expected, rtol=0, atol=1e-10)


@pytest.mark.parametrize("case", [CASES[2], CASES[9], CASES[10]])
def test_float32_stays_float32_and_close(case, winograd_tiles):
    n, height, width, channels, filters, pads, out_hw = case
    rng = np.random.default_rng(2)
    x = rng.random((n, height, width, channels))
    W = rng.standard_normal((3, 3, channels, filters)) / np.sqrt(9 * channels)
    expected, _ = conv2d_forward(x, W, 1, pads, out_hw)
    got = winograd_conv3x3(x.astype(np.float32), W.astype(np.float32), pads, out_hw)
    assert got.dtype == np.float32
    # measured: about 3e-7 of the largest output with 2x2 tiles, 2e-6 to
    # 4e-6 with 4x4 ones (their transforms hold 1/6 and 1/24)
    scale = np.abs(expected).max()
    assert np.abs(got - expected).max() <= 1e-5 * scale


def test_tile_size_rule():
    # the least area covered, weighted by each tile size's cost per pixel
    assert _winograd.tile_size((16, 16)) == 4
    assert _winograd.tile_size((32, 32)) == 4
    assert _winograd.tile_size((14, 14)) == 2  # 15x15 at 0.9, 16x16 at 0.78
    assert _winograd.tile_size((10, 10)) == 5  # 10x10 at 0.9
    assert _winograd.tile_size((5, 5)) == 5
    assert _winograd.tile_size((9, 9)) == 3
    assert _winograd.tile_size((6, 6)) == 3
    assert _winograd.tile_size((2, 2)) == 2
    assert _winograd.tile_size((2, 8)) == 2  # 2x8 against 3x9 or 4x8


def test_rule():
    big = (16, 16)  # 4x4 tiles
    assert winograd_wins((3, 3, 32, 32), 1, (14, 14))
    assert winograd_wins((3, 3, 64, 128), 1, (14, 14))
    assert not winograd_wins((3, 3, 16, 32), 1, (14, 14))  # measured slower
    assert not winograd_wins((3, 3, 32, 16), 1, (10, 10))
    assert winograd_wins((3, 3, 16, 32), 1, big)  # 4x4 tiles: from 16
    assert winograd_wins((3, 3, 32, 16), 1, big)
    assert not winograd_wins((3, 3, 8, 16), 1, big)
    assert not winograd_wins((3, 3, 1, 64), 1, big)  # a first layer
    assert not winograd_wins((3, 3, 64, 64), 2, big)
    assert not winograd_wins((5, 5, 64, 64), 1, big)
    assert not winograd_wins((2, 3, 64, 64), 1, big)  # a kernel clipped to the map


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("chunk_bytes", [None, 1])
@pytest.mark.parametrize("kron_columns", [None, 7])
def test_gradients_match_im2col(
    monkeypatch, case, chunk_bytes, kron_columns, winograd_tiles
):
    if chunk_bytes:  # one image per chunk
        monkeypatch.setattr(_winograd, "_CHUNK_BYTES", chunk_bytes)
    if kron_columns:  # 2x2 tiles' transforms in pieces, the last one shorter
        monkeypatch.setattr(_winograd_tiles, "_KRON_COLUMNS", kron_columns)
    n, height, width, channels, filters, pads, out_hw = case
    rng = np.random.default_rng(5)
    x = rng.standard_normal((n, height, width, channels))
    W = rng.standard_normal((3, 3, channels, filters))
    expected, im2col_cache = conv2d_forward(x, W, 1, pads, out_hw)
    out, cache = winograd_forward(x, W, pads, out_hw, need_cache=True)
    assert_allclose(out, expected, rtol=0, atol=1e-10)
    dout = rng.standard_normal(out.shape)
    dx_expected, dW_expected = conv2d_backward(dout, im2col_cache, W, 1, pads)
    dx, dW = winograd_backward(dout, cache, W)
    assert dx.shape == x.shape and dW.shape == W.shape
    assert_allclose(dx, dx_expected, rtol=0, atol=1e-10)
    assert_allclose(dW, dW_expected, rtol=0, atol=1e-10)
    dx, dW_alone = winograd_backward(dout, cache, W, need_dx=False)
    assert dx is None
    assert_allclose(dW_alone, dW_expected, rtol=0, atol=1e-10)


def test_float32_gradients_stay_float32_and_close(winograd_tiles):
    rng = np.random.default_rng(6)
    x = rng.random((3, 9, 9, 33))
    W = rng.standard_normal((3, 3, 33, 32)) / np.sqrt(9 * 33)
    dout = rng.standard_normal((3, 8, 8, 32))
    _, cache = conv2d_forward(x, W, 1, SAME, (8, 8))
    dx_expected, dW_expected = conv2d_backward(dout, cache, W, 1, SAME)
    _, cache = winograd_forward(
        *(a.astype(np.float32) for a in (x, W)), SAME, (8, 8), True
    )
    dx, dW = winograd_backward(dout.astype(np.float32), cache, W.astype(np.float32))
    assert dx.dtype == dW.dtype == np.float32
    for got, expected in ((dx, dx_expected), (dW, dW_expected)):
        assert np.abs(got - expected).max() <= 1e-5 * np.abs(expected).max()


@pytest.fixture
def spy(monkeypatch):
    """The weight shapes :func:`conv2d_forward` hands to Winograd."""
    calls = []

    def recording(x, W, *args, **kwargs):
        calls.append(W.shape)
        return winograd_forward(x, W, *args, **kwargs)

    monkeypatch.setattr(_layers, "winograd_forward", recording)
    return calls


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_conv2d_takes_winograd_where_it_wins(spy, dtype):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 9, 9, 32)).astype(dtype)
    W = rng.standard_normal((3, 3, 32, 32)).astype(dtype)
    z, cache = conv2d_forward(x, W, 1, SAME, (8, 8))
    assert isinstance(cache, WinogradCache) and spy == [(3, 3, 32, 32)]
    assert z.dtype == dtype
    tol = 1e-10 if dtype == np.float64 else 1e-4
    assert_allclose(z, winograd_conv3x3(x, W, SAME, (8, 8)), rtol=0, atol=tol)
    dx, dW = conv2d_backward(np.ones_like(z), cache, W, 1, SAME)
    assert dx.shape == x.shape and dW.shape == W.shape and dW.dtype == dtype
    _, cache = conv2d_forward(x, W, 1, SAME, (8, 8), need_cache=False)
    assert cache is None and len(spy) == 2
    # a layer the rule leaves to im2col
    _, cache = conv2d_forward(x[..., :16], W[:, :, :16], 1, SAME)
    assert not isinstance(cache, WinogradCache) and len(spy) == 2


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
    assert (3, 3, 32, 32) in spy  # the fit's convolutions too
    spy.clear()
    proba = clf.predict_proba(X)
    assert spy == [(3, 3, 32, 32)]
    monkeypatch.setattr(_winograd, "MIN_CHANNELS", 10**9)  # im2col only
    spy.clear()
    expected = clf.predict_proba(X)
    assert spy == []
    assert_allclose(proba, expected, rtol=0, atol=1e-10)


def test_prediction_prepares_each_kernel_once_under_one_blas_thread(monkeypatch):
    # a predict call in many parts folds each batch norm and transforms each
    # Winograd kernel once, not once per part, under the parts' one-thread
    # BLAS limit: a multi-threaded BLAS would wake threads that spin beside
    # the parts'
    rng = np.random.default_rng(5)
    X = rng.random((12, 10 * 10 * 2)).astype(np.float32)
    y = np.arange(12) % 3
    clf = CNNClassifier(
        image_shape=(10, 10, 2),
        conv_filters=(32, 32),  # im2col (2 channels), then Winograd
        padding="same",
        batch_norm=True,
        max_iter=2,
        random_state=0,
    ).fit(X, y)
    monkeypatch.setattr(_parallel, "_MIN_VALUES_PER_PART", 1)  # 8 parts
    blas_threads = []
    real = _blocks.prepared_kernel

    def recording(W, out_hw):
        info = threadpool_info()
        blas_threads.append({i["num_threads"] for i in info if i["user_api"] == "blas"})
        return real(W, out_hw)

    monkeypatch.setattr(_blocks, "prepared_kernel", recording)
    with threadpool_limits(limits=2, user_api="blas"):
        proba = clf.predict_proba(X)
    assert blas_threads == [{1}]
    # the same bits as each part preparing its own
    monkeypatch.setattr(_engine, "for_inference", lambda net, weights: weights)
    assert_array_equal(clf.predict_proba(X), proba)
    assert len(blas_threads) == 1 + 8  # 8: the parts


# test_network's whole-network gradient checks, every 3x3 convolution at
# stride 1 taken by Winograd: first blocks (no dx), later blocks, "same" and
# "valid" padding, floor-mode crops, batch norm in parts, global pooling
GRADCHECKS = [
    ("wrt_every_parameter", ("reference-like", 3)),
    ("wrt_every_parameter", ("same-avg-rect", 1)),
    ("with_strides_global_pooling_and_dropout", ("per-block", True)),
    ("with_strides_global_pooling_and_dropout", ("global-max", False)),
    ("with_batch_norm", ("max", False, True)),
    ("with_batch_norm", ("avg", True, False)),
]


@pytest.mark.parametrize("name, args", GRADCHECKS)
def test_network_gradients_by_winograd(spy, monkeypatch, name, args, winograd_tiles):
    monkeypatch.setattr(_winograd, "MIN_CHANNELS", 1)
    test = getattr(test_network, f"test_network_gradients_{name}")
    if name == "with_batch_norm":
        test(*args, monkeypatch)
    else:
        test(*args)
    assert spy and all(shape[:2] == (3, 3) for shape in spy)
