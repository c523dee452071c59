"""The whole network: architecture resolution and exact loss gradients."""

import numpy as np
import pytest
from gradcheck import assert_gradient

import skcnn._parallel as parallel
from skcnn._engine import Batch, loss_and_gradients
from skcnn._network import Design, Dropout, build_network, initialize


def build_architecture(
    image, filters, kernel_size=3, pool_size=2, padding="valid", pooling="max",
    hidden_layer_sizes=(), n_outputs=2, activation="relu",
    out_activation="softmax", **extra,
):  # fmt: skip
    """The network of these parameters (the estimators' parameter names)."""
    design = Design(
        conv_filters=filters, kernel_size=kernel_size, pool_size=pool_size,
        padding=padding, pooling=pooling, hidden_layer_sizes=hidden_layer_sizes,
        activation=activation, **extra,
    )  # fmt: skip
    return build_network(image, design, n_outputs, out_activation)


ARCHS = {
    # name: (image_shape, conv_filters, kernel, pool, padding, pooling, hidden, act)
    "reference-like": ((8, 8, 1), (3, 4), 3, 2, "valid", "max", (5,), "relu"),
    "same-avg-rect": ((7, 5, 2), (3,), 3, 2, "same", "avg", (4,), "tanh"),
    "clipped": ((3, 2, 3), (2, 3), 5, 4, "valid", "max", (4,), "logistic"),
    "even-kernel": ((6, 6, 1), (2,), 2, 3, "same", "max", (3, 4), "identity"),
    "mlp-only": ((1, 1, 5), (), 3, 2, "valid", "max", (6,), "relu"),
}


def _setup(name, n_outputs, seed=0):
    image, filters, kernel, pool, padding, pooling, hidden, act = ARCHS[name]
    out_act = "softmax" if n_outputs > 1 else "logistic"
    arch = build_architecture(
        image, filters, kernel, pool, padding, pooling, hidden, n_outputs, act, out_act
    )
    rng = np.random.RandomState(seed)
    weights = initialize(arch, rng, np.float64)
    # non-zero intercepts so their gradients are exercised everywhere
    weights.intercepts = [rng.uniform(-0.2, 0.2, b.shape) for b in weights.intercepts]
    x = rng.uniform(0, 1, (4,) + tuple(image))
    return arch, weights, x, rng


@pytest.mark.parametrize("name", list(ARCHS))
@pytest.mark.parametrize("n_outputs", [1, 3])
def test_network_gradients_wrt_every_parameter(name, n_outputs):
    arch, weights, x, rng = _setup(name, n_outputs)
    coefs, intercepts = weights.coefs, weights.intercepts
    if n_outputs == 1:
        Y = rng.randint(0, 2, (4, 1)).astype(float)
    else:
        Y = np.eye(n_outputs)[rng.randint(0, n_outputs, 4)]
    sw = rng.uniform(0.5, 2.0, 4)
    alpha = 0.3

    def loss():
        return loss_and_gradients(arch, weights, Batch(x, Y, sw), alpha).loss

    grads = loss_and_gradients(arch, weights, Batch(x, Y, sw), alpha).grads
    coef_grads, intercept_grads = grads.coefs, grads.intercepts
    assert len(coef_grads) == len(coefs) == len(intercepts)
    for W, g in zip(coefs, coef_grads):
        assert_gradient(g, loss, W)
    for b, g in zip(intercepts, intercept_grads):
        assert_gradient(g, loss, b)


def test_reference_architecture_shapes():
    arch = build_architecture(
        (28, 28, 1), (32, 64), 3, 2, "valid", "max", (64,), 10, "relu", "softmax"
    )
    assert arch.coef_shapes == [(3, 3, 1, 32), (3, 3, 32, 64), (1600, 64), (64, 10)]
    first, second = arch.conv_blocks
    assert first.out_shape == (13, 13, 32)
    assert second.conv_hw == (10, 10)  # the 11th row/column is never pooled
    assert second.out_shape == (5, 5, 64)


@pytest.mark.parametrize(
    "image, kernel, pool, padding, expected_kernel, expected_out",
    [
        ((1, 1, 2), 3, 2, "valid", (1, 1), (1, 1)),
        ((2, 9, 1), 3, 2, "valid", (2, 3), (1, 3)),
        ((5, 5, 1), 3, 2, "same", (3, 3), (2, 2)),
        ((4, 4, 1), 6, 8, "same", (6, 6), (1, 1)),
    ],
)
def test_small_maps_clip_kernels_and_windows(
    image, kernel, pool, padding, expected_kernel, expected_out
):
    arch = build_architecture(
        image, (2, 2), kernel, pool, padding, "max", (3,), 2, "relu", "softmax"
    )
    assert arch.conv_blocks[0].kernel == expected_kernel
    assert arch.conv_blocks[-1].out_shape[:2] == (1, 1) or padding == "same"
    assert arch.conv_blocks[0].out_shape[:2] == expected_out
    for block in arch.conv_blocks:
        assert min(block.out_shape) >= 1


def test_float32_end_to_end_keeps_float32():
    arch, weights, x, rng = _setup("reference-like", 3)
    weights.coefs = [c.astype(np.float32) for c in weights.coefs]
    weights.intercepts = [b.astype(np.float32) for b in weights.intercepts]
    Y = np.eye(3, dtype=np.float32)[rng.randint(0, 3, 4)]
    grads = loss_and_gradients(arch, weights, Batch(x.astype(np.float32), Y), 1e-4)
    cg, ig = grads.grads.coefs, grads.grads.intercepts
    assert all(g.dtype == np.float32 for g in cg + ig)


EXTRAS = {
    # name: (image_shape, build_architecture keyword arguments)
    "strides-2": ((9, 8, 2), dict(conv_filters=(3, 2), strides=2, padding="same")),
    "per-block": (
        (10, 9, 1),
        dict(conv_filters=(2, 3), kernel_size=(3, 2), pool_size=(2, 1), strides=(1, 2)),
    ),
    "global-max": ((7, 6, 2), dict(conv_filters=(3, 4), global_pooling=True)),
    "global-avg": ((5, 5, 1), dict(conv_filters=(3,), global_pooling=True)),
}


@pytest.mark.parametrize("name", list(EXTRAS))
@pytest.mark.parametrize("dropout", [False, True])
def test_network_gradients_with_strides_global_pooling_and_dropout(name, dropout):
    image, options = EXTRAS[name]
    options = {
        "kernel_size": 3,
        "pool_size": 2,
        "padding": "valid",
        "pooling": "avg" if name == "global-avg" else "max",
        **options,
    }
    filters = options.pop("conv_filters")
    arch = build_architecture(
        image,
        filters,
        hidden_layer_sizes=(5, 4),
        n_outputs=3,
        activation="tanh",
        out_activation="softmax",
        dropout=0.5 if dropout else 0.0,
        **options,
    )
    rng = np.random.RandomState(1)
    weights = initialize(arch, rng, np.float64)
    weights.intercepts = [rng.uniform(-0.2, 0.2, b.shape) for b in weights.intercepts]
    coefs, intercepts = weights.coefs, weights.intercepts
    x = rng.uniform(0, 1, (5,) + image)
    Y = np.eye(3)[rng.randint(0, 3, 5)]
    masks = None
    if dropout:
        # fixed inverted-dropout masks (p = 0.5) make the loss deterministic
        at = [i for i, layer in enumerate(arch.layers) if isinstance(layer, Dropout)]
        masks = {i: (rng.uniform(size=(5, k)) > 0.5) * 2.0 for i, k in zip(at, (5, 4))}
    batch = Batch(x, Y, None, masks)

    def loss():
        return loss_and_gradients(arch, weights, batch, 0.1).loss

    grads = loss_and_gradients(arch, weights, batch, 0.1).grads
    coef_grads, intercept_grads = grads.coefs, grads.intercepts
    for W, g in zip(coefs + intercepts, coef_grads + intercept_grads):
        assert_gradient(g, loss, W)
    if name.startswith("global"):
        assert arch.dense_sizes[0] == filters[-1]


def test_per_block_sizes_must_match_the_blocks():
    with pytest.raises(ValueError, match="2 entries but there are 3 conv blocks"):
        build_architecture(
            (8, 8, 1), (2, 2, 2), (3, 3), 2, "valid", "max", (4,), 2, "relu", "softmax"
        )


@pytest.mark.parametrize("pooling", ["max", "avg"])
@pytest.mark.parametrize("global_pooling", [False, True])
@pytest.mark.parametrize("split", [False, True])
def test_network_gradients_with_batch_norm(pooling, global_pooling, split, monkeypatch):
    # split: the batch runs in parts that meet at each normalization
    monkeypatch.setattr(parallel, "_MIN_VALUES_PER_PART", 1 if split else 10**9)
    arch = build_architecture(
        (8, 7, 2),
        (3, 4),
        3,
        2,
        "same",
        pooling,
        (5,),
        3,
        "tanh",
        "softmax",
        global_pooling=global_pooling,
        batch_norm=True,
    )
    rng = np.random.RandomState(3)
    weights = initialize(arch, rng, np.float64)
    weights.intercepts = [rng.uniform(-0.2, 0.2, b.shape) for b in weights.intercepts]
    weights.scales = [rng.uniform(-1.5, 1.5, 3), rng.uniform(0.5, 1.5, 4)]
    coefs, intercepts, scales = weights.coefs, weights.intercepts, weights.scales
    x = rng.uniform(0, 1, (6, 8, 7, 2))
    Y = np.eye(3)[rng.randint(0, 3, 6)]
    sw = rng.uniform(0.5, 2, 6)

    def loss():
        return loss_and_gradients(arch, weights, Batch(x, Y, sw), 0.1).loss

    step = loss_and_gradients(arch, weights, Batch(x, Y, sw), 0.1)
    coef_grads, intercept_grads = step.grads.coefs, step.grads.intercepts
    scale_grads, stats = step.grads.scales, step.stats
    for W, g in zip(
        coefs + intercepts + scales, coef_grads + intercept_grads + scale_grads
    ):
        assert_gradient(g, loss, W)
    assert [m.shape for m, v in stats] == [(3,), (4,)]


@pytest.mark.parametrize("name", list(ARCHS))
@pytest.mark.parametrize("n_outputs", [1, 3])
def test_regression_network_gradients(name, n_outputs):
    # identity output with the squared error: CNNRegressor's loss
    image, filters, kernel, pool, padding, pooling, hidden, act = ARCHS[name]
    arch = build_architecture(
        image, filters, kernel, pool, padding, pooling, hidden, n_outputs, act,
        "identity",
    )  # fmt: skip
    rng = np.random.RandomState(2)
    weights = initialize(arch, rng, np.float64)
    weights.intercepts = [rng.uniform(-0.2, 0.2, b.shape) for b in weights.intercepts]
    x = rng.uniform(0, 1, (4,) + tuple(image))
    Y = rng.normal(size=(4, n_outputs))
    batch = Batch(x, Y, rng.uniform(0.5, 2.0, 4))

    def loss():
        return loss_and_gradients(arch, weights, batch, 0.3).loss

    grads = loss_and_gradients(arch, weights, batch, 0.3).grads
    for W, g in zip(weights.trainable(), grads.flat()):
        assert_gradient(g, loss, W)


def test_squared_error_is_mlpregressors_loss():
    from sklearn.neural_network._base import squared_loss

    from skcnn._losses import squared_error

    rng = np.random.RandomState(0)
    pred, Y, sw = rng.normal(size=(6, 3)), rng.normal(size=(6, 3)), rng.rand(6)
    loss, _ = squared_error(pred.copy(), Y)
    assert loss == pytest.approx(squared_loss(Y, pred), rel=1e-12)
    # MLPRegressor's weighted form (scikit-learn >= 1.7 takes sample_weight)
    weighted = 0.5 * np.average((Y - pred) ** 2, weights=sw, axis=0).mean()
    loss, _ = squared_error(pred.copy(), Y, sw)
    assert loss == pytest.approx(weighted, rel=1e-12)
