"""Windowed maps: a conv output in the order of the pooling windows that read it.

Every windowed result is compared with the pixel-order one, windowed here
by NumPy's own reshape and transpose (not by skcnn's strided views).
"""

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal
from reference import direct_correlation

from skcnn import _im2col, _winograd_tiles
from skcnn._blocks import ConvBlock
from skcnn._engine import Batch, loss_and_gradients, predict_rows
from skcnn._layers import (
    conv2d_backward,
    conv2d_forward,
    unwindowed,
)
from skcnn._network import Design, build_network, initialize
from skcnn._pooling import (
    avgpool_backward,
    avgpool_forward,
    maxpool_backward,
    maxpool_forward,
)
from skcnn._strides import window_view

SAME, VALID = ((1, 1), (1, 1)), ((0, 0), (0, 0))


def windowed(a, ph, pw):
    """Reference: the (n, H, W, C) map in (ph * pw, n, H / ph, W / pw, C)."""
    n, height, width, channels = a.shape
    blocks = a.reshape(n, height // ph, ph, width // pw, pw, channels)
    blocks = blocks.transpose(2, 4, 0, 1, 3, 5)
    return blocks.reshape(ph * pw, n, height // ph, width // pw, channels)


def test_window_view_and_unwindowed():
    a = np.arange(2 * 6 * 4 * 3, dtype=float).reshape(2, 6, 4, 3)
    view = window_view(a, 3, 2, 2, 2)
    assert_array_equal(view.reshape(6, 2, 2, 2, 3), windowed(a, 3, 2))
    assert not view.flags.writeable
    assert_array_equal(unwindowed(windowed(a, 3, 2), (3, 2)), a)


# (n, H, W, C, F, kernel, stride, pads, out_hw, windows): im2col with few
# channels (copied channels-first) and many (channels-last), strides,
# padding and crops, square and oblong windows; Winograd (3x3, >= 32
# channels and filters), which has 2x2 windows only, on 2x2 and 4x4 tiles
CASES = [
    (2, 8, 8, 1, 4, 3, 1, VALID, (6, 6), (2, 2)),
    (2, 9, 7, 3, 5, 3, 1, SAME, (9, 6), (3, 2)),
    (3, 11, 11, 2, 3, 3, 2, SAME, (6, 6), (2, 3)),
    (2, 7, 8, 8, 4, 3, 1, VALID, (4, 6), (2, 2)),
    (2, 6, 6, 6, 5, 2, 1, ((0, 1), (0, 1)), (6, 6), (3, 3)),
    (2, 13, 13, 32, 40, 3, 1, VALID, (10, 10), (2, 2)),
    (3, 8, 6, 33, 32, 3, 1, SAME, (8, 6), (2, 2)),
    (2, 16, 16, 32, 33, 3, 1, SAME, (16, 16), (2, 2)),
    (2, 18, 16, 32, 32, 3, 1, SAME, (18, 16), (2, 2)),  # 4x4 tiles overhang
]


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("kron_columns", [None, 7])
def test_conv2d_windows_match_pixel_order(
    monkeypatch, case, kron_columns, winograd_tiles
):
    if kron_columns:  # 2x2 tiles' transforms in pieces, into the blocks too
        monkeypatch.setattr(_winograd_tiles, "_KRON_COLUMNS", kron_columns)
    n, height, width, channels, filters, k, stride, pads, out_hw, windows = case
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, height, width, channels))
    W = rng.standard_normal((k, k, channels, filters))
    out, cache = conv2d_forward(x, W, stride, pads, out_hw)
    got, windowed_cache = conv2d_forward(x, W, stride, pads, out_hw, windows=windows)
    assert got.shape == windowed(out, *windows).shape
    assert_allclose(got, windowed(out, *windows), rtol=0, atol=1e-12)
    G = rng.standard_normal(out.shape)
    dx, dW = conv2d_backward(G, cache, W, stride, pads)
    G_windowed = windowed(G, *windows).copy()
    got_dx, got_dW = conv2d_backward(G_windowed, windowed_cache, W, stride, pads)
    assert_allclose(got_dW, dW, rtol=0, atol=1e-10)
    assert_allclose(got_dx, dx, rtol=0, atol=1e-10)
    none, got_dW = conv2d_backward(G_windowed, windowed_cache, W, stride, pads, False)
    assert none is None
    assert_allclose(got_dW, dW, rtol=0, atol=1e-10)


# Few channels (kw * C < 16): the im2col copy reads the padded columns
# split into stride * pw phases, or (runs too short) in one strided copy;
# both ways on every case. Odd left pads, widths that no phase count
# divides, oblong windows and kernels, strides 2 and 3, and windows of 1.
PHASE_CASES = [
    (2, 9, 11, 3, (3, 3), 1, ((1, 1), (2, 1)), (2, 2)),
    (2, 12, 17, 2, (3, 3), 2, ((1, 0), (1, 1)), (2, 3)),
    (3, 10, 10, 1, (2, 3), 3, ((0, 0), (1, 2)), (1, 1)),
    (1, 10, 13, 3, (3, 5), 1, ((1, 1), (2, 2)), (3, 3)),
    (2, 8, 9, 1, (3, 3), 2, ((1, 1), (1, 1)), (1, 2)),
    (2, 64, 64, 3, (3, 3), 1, SAME, (2, 2)),
]


@pytest.mark.parametrize("case", PHASE_CASES)
@pytest.mark.parametrize("phase_run", [1, 10**9])
# blocks of one output row, each block's weight-gradient product summed on
# its own; blocks of about 8 pixels, summed in groups of 3 to 41 blocks
# (the last one short); and blocks of the default size, in one group
@pytest.mark.parametrize(
    "block_pixels, product_values", [(1, 1), (8, 500), (256, 2**16)]
)
def test_few_channel_im2col_matches_direct_correlation(
    case, phase_run, block_pixels, product_values, monkeypatch
):
    monkeypatch.setattr(_im2col, "_PHASE_RUN", phase_run)
    monkeypatch.setattr(_im2col, "_BLOCK_PIXELS", block_pixels)
    monkeypatch.setattr(_im2col, "_PRODUCT_VALUES", product_values)
    n, height, width, channels, kernel, stride, pads, windows = case
    rng = np.random.default_rng(3)
    x = rng.standard_normal((n, height, width, channels))
    W = rng.standard_normal(kernel + (channels, 4))
    expected = direct_correlation(x, W, stride, pads)
    ph, pw = windows
    out_hw = (expected.shape[1] // ph * ph, expected.shape[2] // pw * pw)
    expected = expected[:, : out_hw[0], : out_hw[1]]
    got, cache = conv2d_forward(x, W, stride, pads, out_hw, windows=windows)
    assert_allclose(got, windowed(expected, ph, pw), rtol=0, atol=1e-12)
    pixels, _ = conv2d_forward(x, W, stride, pads, out_hw)
    assert_allclose(pixels, expected, rtol=0, atol=1e-12)
    # the backward pass reads the cached rows: the convolution is linear in
    # x and in W, so <dx, V> = <G, conv(V, W)> and <dW, U> = <G, conv(x, U)>
    G = rng.standard_normal(expected.shape)
    dx, dW = conv2d_backward(windowed(G, ph, pw).copy(), cache, W, stride, pads)
    V, U = rng.standard_normal(x.shape), rng.standard_normal(W.shape)
    crop = (slice(None), slice(out_hw[0]), slice(out_hw[1]))
    assert np.isclose(
        np.sum(dx * V), np.sum(G * direct_correlation(V, W, stride, pads)[crop])
    )
    assert np.isclose(
        np.sum(dW * U), np.sum(G * direct_correlation(x, U, stride, pads)[crop])
    )


def test_few_channel_blocks_in_float32():
    # float32 end to end (the GEMMs' dtype), against float64's direct sum
    rng = np.random.default_rng(5)
    x = rng.standard_normal((3, 64, 64, 3))
    W = rng.standard_normal((3, 3, 3, 16))
    expected = windowed(direct_correlation(x, W, 1, SAME), 2, 2)
    got, cache = conv2d_forward(
        x.astype(np.float32), W.astype(np.float32), 1, SAME, windows=(2, 2)
    )
    assert got.dtype == np.float32
    assert_allclose(got, expected, rtol=0, atol=1e-4)
    G = rng.standard_normal(got.shape).astype(np.float32)
    _, dW = conv2d_backward(G, cache, W.astype(np.float32), 1, SAME, need_dx=False)
    # float64's gradient, checked against the direct sum by the test above
    _, cache64 = conv2d_forward(x, W, 1, SAME, windows=(2, 2))
    _, expected_dW = conv2d_backward(G.astype(np.float64), cache64, W, 1, SAME, False)
    assert dW.dtype == np.float32
    assert_allclose(dW, expected_dW, rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize(
    "height, width, rows",
    [
        (32, 32, 8),  # 256 pixels
        (13, 13, 13),  # a whole 13x13 plane: 169
        (14, 14, 14),
        (26, 300, 1),  # one row holds more than 256
        (1009, 1, 1009),  # prime and narrow: no 1-pixel blocks, one plane
        (26, 26, 2),  # 52 pixels, past an eighth of 256
    ],
)
def test_few_channel_blocks_hold_whole_rows(height, width, rows):
    assert _im2col._rows_per_block(height, width) == rows


def test_winograd_windows_are_2x2_only():
    x = np.zeros((1, 8, 8, 32))
    W = np.zeros((3, 3, 32, 32))
    with pytest.raises(ValueError, match="2x2 windows"):
        conv2d_forward(x, W, 1, VALID, (6, 6), windows=(3, 3))


@pytest.mark.parametrize("ph, pw", [(2, 2), (3, 2), (1, 3)])
@pytest.mark.parametrize("kind", ["max", "avg"])
def test_pooling_a_windowed_map(ph, pw, kind):
    rng = np.random.default_rng(4)
    # small integers: many ties, which must go to the same element
    x = rng.integers(0, 3, size=(3, 2 * ph, 3 * pw, 2)).astype(np.float64)
    forward = maxpool_forward if kind == "max" else avgpool_forward
    backward = maxpool_backward if kind == "max" else avgpool_backward
    out, cache = forward(x, ph, pw)
    got, got_cache = forward(windowed(x, ph, pw).copy(), ph, pw)
    assert_array_equal(got, out)
    G = rng.standard_normal(out.shape)
    assert_array_equal(
        backward(G, got_cache, ph, pw), windowed(backward(G, cache, ph, pw), ph, pw)
    )


def _block(image, filters, pool_size, **design):
    design = Design(conv_filters=filters, pool_size=pool_size, **design)
    network = build_network(image, design, 3, "softmax")
    return [layer for layer in network.layers if hasattr(layer, "windows")]


def test_which_convolutions_come_windowed():
    # a first layer's im2col rows and Winograd's tiles: free; a later
    # layer's im2col would cost its input gradient a reordering in
    # training, and costs nothing in prediction
    first, second = _block((28, 28, 1), (32, 64), 2)
    assert not first.winograd and second.winograd
    assert first.windows() == second.windows() == (2, 2)
    blocks = _block((64, 64, 3), (16, 32, 64), 2, padding="same")
    assert [b.winograd for b in blocks] == [False, True, True]  # 4x4 tiles
    assert [b.windows() for b in blocks] == [(2, 2)] * 3
    blocks = _block((36, 36, 3), (16, 32, 64), 2, padding="same")
    assert [b.winograd for b in blocks] == [False, False, True]  # 18x18: 3x3 tiles
    assert [b.windows() for b in blocks] == [(2, 2), None, (2, 2)]
    assert [b.windows(train=False) for b in blocks] == [(2, 2)] * 3
    first, second = _block((27, 27, 1), (32, 64), 3)
    assert first.windows() == (3, 3) and second.windows() is None  # Winograd: 2x2
    assert second.windows(train=False) is None
    (block,) = _block((8, 8, 1), (4,), 1)
    assert block.windows() is None and block.windows(train=False) is None


# (image, filters, pool, padding, pooling, batch norm): windowed first
# layers, Winograd layers (32+ channels) and, in prediction, later im2col
# layers; square and oblong windows (pools clipped to the map), odd maps,
# average pooling, batch norm
NETWORKS = [
    ((12, 12, 1), (4, 32, 32), 2, "same", "max", False),
    ((13, 11, 3), (5, 6), 3, "valid", "max", False),
    ((32, 5, 1), (3, 4, 5), 2, "same", "max", False),  # 8x1 map: 2x1 windows
    ((10, 10, 2), (32, 32), 2, "same", "avg", False),
    ((9, 9, 3), (4, 32), 2, "same", "max", True),
]


@pytest.mark.parametrize("image, filters, pool, padding, pooling, norm", NETWORKS)
def test_networks_compute_the_same_with_and_without_windows(
    monkeypatch, image, filters, pool, padding, pooling, norm
):
    design = Design(
        conv_filters=filters,
        pool_size=pool,
        padding=padding,
        pooling=pooling,
        batch_norm=norm,
        hidden_layer_sizes=(5,),
    )
    network = build_network(image, design, 3, "softmax")
    rng = np.random.RandomState(0)
    weights = initialize(network, rng, np.float64)
    X = rng.uniform(0, 1, (6,) + image)
    Y = np.eye(3)[rng.randint(0, 3, 6)]
    assert any(
        block.windows(train) for block in network.conv_blocks for train in (0, 1)
    )

    def run():
        step = loss_and_gradients(network, weights, Batch(X, Y), 0.1)
        proba = predict_rows(network, weights, X.reshape(6, -1), image)
        return [step.loss, proba, *step.grads.flat()]

    windowed = run()
    monkeypatch.setattr(ConvBlock, "windows", lambda block, train=True: None)
    for got, expected in zip(windowed, run()):
        assert_allclose(got, expected, rtol=1e-10, atol=1e-12)
