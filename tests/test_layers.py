"""Finite-difference checks of every layer's backward pass, in float64.

Each layer output ``out`` is reduced to the scalar ``sum(G * out)`` for a
fixed random ``G``, so the backward pass receives ``G`` as its upstream
gradient and must return the exact derivative of that scalar.
"""

import numpy as np
import pytest
from gradcheck import assert_gradient
from numpy.testing import assert_array_equal
from reference import direct_correlation
from scipy.special import expit

from skcnn._batchnorm import batchnorm_backward, batchnorm_folded, batchnorm_forward
from skcnn._layers import (
    ACTIVATION_GRADS,
    ACTIVATIONS,
    conv2d_backward,
    conv2d_forward,
    per_channel,
)
from skcnn._losses import logistic_cross_entropy, softmax_cross_entropy
from skcnn._network import _conv_geometry
from skcnn._pooling import (
    avgpool_backward,
    avgpool_forward,
    maxpool_backward,
    maxpool_forward,
)


def _pads(h, w, kh, kw, stride, padding):
    _, top, bottom, out_h = _conv_geometry(h, kh, stride, padding)
    _, left, right, out_w = _conv_geometry(w, kw, stride, padding)
    return ((top, bottom), (left, right)), (out_h, out_w)


@pytest.mark.parametrize(
    "shape, kernel, stride, padding",
    [
        ((2, 5, 5, 1), (3, 3), 1, "valid"),
        ((2, 6, 7, 3), (3, 3), 2, "valid"),  # stride 2, non-square, channels
        ((2, 5, 4, 2), (3, 3), 1, "same"),
        ((1, 6, 5, 2), (2, 2), 1, "same"),  # even kernel: extra pad bottom/right
        ((1, 7, 6, 2), (4, 3), 2, "same"),  # stride 2 with "same"
        ((2, 4, 6, 2), (4, 2), 1, "valid"),  # non-square kernel
        # kw * C >= 16: im2col copies channels-last runs, not channels-first
        ((2, 5, 4, 6), (3, 3), 2, "same"),
        ((1, 6, 5, 8), (2, 2), 1, "same"),
    ],
)
def test_conv2d_gradients(shape, kernel, stride, padding):
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape)
    W = rng.standard_normal(kernel + (shape[3], 3))
    pads, out_hw = _pads(shape[1], shape[2], *kernel, stride, padding)
    out, cache = conv2d_forward(x, W, stride, pads)
    assert out.shape[1:3] == out_hw
    G = rng.standard_normal(out.shape)
    dx, dW = conv2d_backward(G, cache, W, stride, pads)

    def f():
        return np.sum(G * conv2d_forward(x, W, stride, pads)[0])

    assert_gradient(dx, f, x)
    assert_gradient(dW, f, W)


@pytest.mark.parametrize("channels", [2, 8])  # both im2col layouts
def test_conv2d_matches_direct_correlation(channels):
    # an independent oracle for the forward pass: the textbook 6-loop sum
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 6, 5, channels))
    W = rng.standard_normal((3, 2, channels, 4))
    stride, pads = 2, ((1, 1), (0, 1))
    out, _ = conv2d_forward(x, W, stride, pads)
    expected = direct_correlation(x, W, stride, pads)
    np.testing.assert_allclose(out, expected, rtol=1e-12)


def test_conv2d_partial_output_and_no_input_gradient():
    # computing only the rows a floor-mode pool reads gives the same values,
    # and the dropped rows receive a zero gradient
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 6, 6, 2))
    W = rng.standard_normal((3, 3, 2, 3))
    full, _ = conv2d_forward(x, W)
    part, cache = conv2d_forward(x, W, out_hw=(3, 2))
    assert_array_equal(part, full[:, :3, :2])
    G = rng.standard_normal(part.shape)
    dx, dW = conv2d_backward(G, cache, W)

    def f():
        return np.sum(G * conv2d_forward(x, W, out_hw=(3, 2))[0])

    assert_gradient(dx, f, x)
    assert_gradient(dW, f, W)
    none, dW2 = conv2d_backward(G, cache, W, need_dx=False)
    assert none is None
    assert_array_equal(dW2, dW)


def _distinct(rng, shape):
    """Values at least 1e-3 apart: no pooling ties, even after a 1e-5 step."""
    return rng.permutation(np.arange(np.prod(shape))).reshape(shape) * 1e-3


@pytest.mark.parametrize(
    "shape, window",
    [
        ((2, 4, 4, 2), (2, 2)),
        ((2, 5, 7, 3), (2, 2)),  # odd sizes: trailing row/column dropped
        ((1, 7, 5, 2), (3, 2)),
        ((1, 3, 3, 1), (3, 3)),  # window covering the whole map
    ],
)
@pytest.mark.parametrize("kind", ["max", "avg"])
def test_pool_gradients(shape, window, kind):
    rng = np.random.default_rng(3)
    x = _distinct(rng, shape)
    fwd = maxpool_forward if kind == "max" else avgpool_forward
    out, cache = fwd(x, *window)
    assert out.shape == (
        shape[0],
        shape[1] // window[0],
        shape[2] // window[1],
        shape[3],
    )
    G = rng.standard_normal(out.shape)
    if kind == "max":
        dx = maxpool_backward(G, cache, *window)
    else:
        dx = avgpool_backward(G, cache, *window)
    assert_gradient(dx, lambda: np.sum(G * fwd(x, *window)[0]), x)


@pytest.mark.parametrize("ph, pw", [(2, 2), (3, 2), (3, 3)])
def test_maxpool_matches_reference_and_ties_go_to_first_element(ph, pw):
    rng = np.random.default_rng(4)
    x = rng.integers(0, 3, size=(3, 7, 8, 2)).astype(np.float64)  # many ties
    out, cache = maxpool_forward(x, ph, pw)
    oh, ow = 7 // ph, 8 // pw
    windows = x[:, : oh * ph, : ow * pw].reshape(3, oh, ph, ow, pw, 2)
    windows = windows.transpose(0, 1, 3, 5, 2, 4).reshape(3, oh, ow, 2, ph * pw)
    assert_array_equal(out, windows.max(axis=-1))
    # the whole upstream gradient lands on the first maximal element (argmax)
    G = rng.standard_normal(out.shape)
    dx = maxpool_backward(G, cache, ph, pw)
    first = windows.argmax(axis=-1)
    expected = np.zeros((3, oh, ow, 2, ph * pw))
    np.put_along_axis(expected, first[..., None], G[..., None], axis=-1)
    expected = expected.reshape(3, oh, ow, 2, ph, pw).transpose(0, 1, 4, 2, 5, 3)
    assert_array_equal(
        dx[:, : oh * ph, : ow * pw], expected.reshape(x[:, : oh * ph, : ow * pw].shape)
    )
    assert_array_equal(dx[:, oh * ph :], 0)
    assert_array_equal(dx[:, :, ow * pw :], 0)
    out_fast, none = maxpool_forward(x, ph, pw, need_cache=False)
    assert none is None
    assert_array_equal(out_fast, out)


@pytest.mark.parametrize("name", ["identity", "relu", "tanh", "logistic"])
def test_activation_gradients(name):
    rng = np.random.default_rng(5)
    z = rng.standard_normal((4, 6))
    z[np.abs(z) < 1e-3] = 0.5  # away from the ReLU kink
    G = rng.standard_normal(z.shape)

    def f():
        return np.sum(G * ACTIVATIONS[name](z.copy()))

    a = ACTIVATIONS[name](z.copy())
    dz = ACTIVATION_GRADS[name](a, G.copy())
    assert_gradient(dz, f, z)


def test_activation_values():
    z = np.array([-800.0, -1.0, 0.0, 2.0, 800.0])
    np.testing.assert_allclose(ACTIVATIONS["logistic"](z.copy()), expit(z))
    np.testing.assert_allclose(ACTIVATIONS["relu"](z.copy()), np.maximum(z, 0))
    np.testing.assert_allclose(ACTIVATIONS["tanh"](z.copy()), np.tanh(z))


@pytest.mark.parametrize("weighted", [False, True])
def test_softmax_cross_entropy(weighted):
    rng = np.random.default_rng(6)
    z = rng.standard_normal((5, 4))
    Y = np.eye(4)[rng.integers(0, 4, 5)]
    sw = rng.uniform(0.5, 2, 5) if weighted else None
    loss, grad = softmax_cross_entropy(z, Y, sw)
    p = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    w = np.ones(5) if sw is None else sw
    np.testing.assert_allclose(loss, -np.sum(w * np.log(p[Y == 1])) / w.sum())
    assert_gradient(grad, lambda: softmax_cross_entropy(z, Y, sw)[0], z)


@pytest.mark.parametrize("weighted", [False, True])
def test_logistic_cross_entropy(weighted):
    rng = np.random.default_rng(7)
    z = rng.standard_normal((6, 1)) * 3
    Y = rng.integers(0, 2, (6, 1)).astype(float)
    sw = rng.uniform(0.5, 2, 6) if weighted else None
    loss, grad = logistic_cross_entropy(z, Y, sw)
    p = 1 / (1 + np.exp(-z))
    w = np.ones(6) if sw is None else sw
    expected = -np.sum(w * (Y * np.log(p) + (1 - Y) * np.log(1 - p)).ravel())
    np.testing.assert_allclose(loss, expected / w.sum())
    assert_gradient(grad, lambda: logistic_cross_entropy(z, Y, sw)[0], z)


def test_losses_stay_finite_for_extreme_logits():
    z = np.array([[1000.0, -1000.0], [-1000.0, 1000.0]])
    loss, grad = softmax_cross_entropy(z, np.array([[0.0, 1.0], [0.0, 1.0]]))
    assert np.isfinite(loss) and np.isfinite(grad).all()
    loss, grad = logistic_cross_entropy(z[:, :1], np.array([[0.0], [1.0]]))
    assert np.isfinite(loss) and np.isfinite(grad).all()


@pytest.mark.parametrize("shape", [(4, 3, 5, 2), (6, 1, 1, 3)])
def test_batchnorm_gradients(shape):
    rng = np.random.default_rng(8)
    z = rng.standard_normal(shape) * 2 + 1
    scale = rng.uniform(-1.5, 1.5, shape[-1])  # negative scales too
    shift = rng.standard_normal(shape[-1])
    out, cache, _ = batchnorm_forward(z, scale, shift)
    G = rng.standard_normal(out.shape)
    dz, dscale, dshift = batchnorm_backward(G, cache)

    def f():
        return np.sum(G * batchnorm_forward(z, scale, shift)[0])

    assert_gradient(dz, f, z)
    assert_gradient(dscale, f, scale)
    assert_gradient(dshift, f, shift)


def test_batchnorm_normalizes_and_folded_inference_matches_with_batch_stats():
    rng = np.random.default_rng(9)
    z = rng.standard_normal((5, 4, 3, 2)) * 3 - 2
    out, _, (mean, var) = batchnorm_forward(z, np.ones(2), np.zeros(2))
    np.testing.assert_allclose(out.mean(axis=(0, 1, 2)), 0, atol=1e-12)
    np.testing.assert_allclose(out.std(axis=(0, 1, 2)), 1, rtol=1e-5)
    scale, shift = np.array([0.5, -2.0]), np.array([1.0, 3.0])
    train_out = batchnorm_forward(z, scale, shift)[0]
    # folded into a 1x1 identity convolution: W' and a bias
    W, bias = batchnorm_folded(np.eye(2)[None, None], scale, shift, mean, var)
    infer_out = z @ W[0, 0] + bias
    np.testing.assert_allclose(infer_out, train_out, rtol=1e-12)


def test_per_channel_rows_view_the_map_and_tiles_match_broadcasting():
    rng = np.random.default_rng(10)
    a = rng.standard_normal((2, 32, 16, 5))
    v, w = rng.standard_normal(5), rng.standard_normal(5)
    rows, v_rows, w_rows = per_channel(a, v, w)
    assert rows.shape == (64, 80) and np.shares_memory(rows, a)
    assert_array_equal((rows * v_rows + w_rows).reshape(a.shape), a * v + w)
    # no row view of a strided map: it comes back as it is, so do a
    # one-channel map (its broadcast already runs in one long loop) and a
    # small one
    strided = a[:, :, ::2]
    assert all(x is y for x, y in zip(per_channel(strided, v), (strided, v)))
    single = a[..., :1].copy()
    assert per_channel(single, v[:1])[0] is single
    small = a[:1, :2].copy()
    assert per_channel(small, v)[0] is small


@pytest.mark.parametrize("channels, filters", [(3, 4), (32, 32)])  # im2col, Winograd
@pytest.mark.parametrize("pooling", ["max", "avg"])
@pytest.mark.parametrize("activation", ["relu", "tanh"])
@pytest.mark.parametrize(
    "pool, batch_norm", [(1, False), (2, False), (3, False), (2, True)]
)
def test_block_at_inference_is_the_layer_as_defined(
    channels, filters, pooling, activation, pool, batch_norm
):
    # A prediction takes shortcuts: batch norm folded into the convolution,
    # a max-pool before the bias and activation, ReLU and average pooling
    # before the bias too (relu(z + b) = max(z, -b) + b), no pooling at all
    # in 1x1 windows. The result must be the layer as defined, with
    # negative scales (max does not commute with those before folding) and
    # biases of both signs.
    from skcnn._network import Design, build_network, initialize

    design = Design(
        conv_filters=(filters,),
        pool_size=pool,
        batch_norm=batch_norm,
        pooling=pooling,
        activation=activation,
        padding="same",
        input_scaling=None,
    )
    net = build_network((6, 6, channels), design, 2, "softmax")
    block = net.layers[0]
    assert block.winograd == (channels == 32) and block.pool == (pool, pool)
    rng = np.random.default_rng(12)
    weights = initialize(net, np.random.RandomState(0), np.float64)
    weights.intercepts[0][:] = rng.standard_normal(filters)
    if batch_norm:
        weights.scales[0][:] = rng.uniform(0.5, 2, filters) * rng.choice(
            [-1, 1], filters
        )
        weights.means[0][:] = rng.standard_normal(filters)
        weights.vars[0][:] = rng.uniform(0.1, 3, filters)
    x = rng.standard_normal((3, 6, 6, channels))
    x_before = x.copy()
    out, cache = block.forward(weights, x, train=False)
    assert cache is None
    np.testing.assert_array_equal(x, x_before)
    # by definition, in float64: convolution, normalization, activation, pool
    z = direct_correlation(x, weights.coefs[0], 1, ((1, 1), (1, 1)))
    if batch_norm:
        z = (z - weights.means[0]) / np.sqrt(weights.vars[0] + 1e-5)
        z = z * weights.scales[0]
    z = z + weights.intercepts[0]
    z = np.maximum(z, 0) if activation == "relu" else np.tanh(z)
    side = 6 // pool
    windows = z.reshape(3, side, pool, side, pool, filters)
    expected = windows.max(axis=(2, 4)) if pooling == "max" else windows.mean((2, 4))
    np.testing.assert_allclose(out, expected, rtol=1e-10, atol=1e-12)
