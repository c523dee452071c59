"""Property-based tests: random small architectures and image shapes."""

import numpy as np
import pytest
from gradcheck import central_difference
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from numpy.testing import assert_allclose

from skcnn import CNNClassifier
from skcnn._engine import Batch, loss_and_gradients
from skcnn._network import Design, build_network, initialize

architectures = st.fixed_dictionaries(
    {
        "height": st.integers(1, 12),
        "width": st.integers(1, 12),
        "channels": st.integers(1, 3),
        "conv_filters": st.lists(st.integers(1, 4), max_size=2).map(tuple),
        "kernel_size": st.integers(1, 4),
        "pool_size": st.integers(1, 3),
        "padding": st.sampled_from(["valid", "same"]),
        "pooling": st.sampled_from(["max", "avg"]),
        "hidden_layer_sizes": st.lists(st.integers(1, 5), max_size=2).map(tuple),
        "activation": st.sampled_from(["relu", "tanh", "logistic", "identity"]),
        "n_classes": st.integers(2, 3),
        "seed": st.integers(0, 2**16),
    }
)

SETTINGS = settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


def _split(spec):
    arch_params = {
        k: spec[k]
        for k in (
            "conv_filters",
            "kernel_size",
            "pool_size",
            "padding",
            "pooling",
            "hidden_layer_sizes",
            "activation",
        )
    }
    shape = (spec["height"], spec["width"], spec["channels"])
    return arch_params, shape


@SETTINGS
@given(architectures)
def test_fit_predict_proba_rows_are_finite_and_sum_to_one(spec):
    params, shape = _split(spec)
    rng = np.random.default_rng(spec["seed"])
    X = rng.uniform(size=(8,) + shape)
    y = np.arange(8) % spec["n_classes"]
    clf = CNNClassifier(**params, max_iter=2, random_state=0).fit(X, y)
    proba = clf.predict_proba(X)
    assert proba.shape == (8, spec["n_classes"])
    assert np.isfinite(proba).all()
    assert_allclose(proba.sum(axis=1), 1, rtol=1e-10)
    assert clf.image_shape_ == shape


@SETTINGS
@given(architectures)
def test_network_gradients_match_finite_differences(spec):
    params, shape = _split(spec)
    n_out = spec["n_classes"] if spec["n_classes"] > 2 else 1
    design = Design(
        **{k: params[k] for k in ("conv_filters", "kernel_size", "pool_size")},
        **{k: params[k] for k in ("padding", "pooling", "hidden_layer_sizes")},
        activation=params["activation"],
    )
    arch = build_network(shape, design, n_out, "softmax" if n_out > 1 else "logistic")
    rng = np.random.RandomState(spec["seed"])
    weights = initialize(arch, rng, np.float64)
    weights.intercepts = [rng.uniform(-0.3, 0.3, b.shape) for b in weights.intercepts]
    coefs, intercepts = weights.coefs, weights.intercepts
    x = rng.uniform(size=(3,) + shape)
    Y = np.eye(max(n_out, 2))[rng.randint(0, max(n_out, 2), 3)][:, -n_out:]

    def loss():
        return loss_and_gradients(arch, weights, Batch(x, Y), 0.1).loss

    grads = loss_and_gradients(arch, weights, Batch(x, Y), 0.1).grads
    coef_grads, intercept_grads = grads.coefs, grads.intercepts
    checked = skipped = 0
    for W, g in zip(coefs + intercepts, coef_grads + intercept_grads):
        assert g.shape == W.shape
        for i in rng.choice(W.size, min(W.size, 12), replace=False):
            numeric = central_difference(loss, W, i, 1e-5)
            # Near a ReLU kink or a max-pooling tie the central difference
            # depends on the step: such points have no derivative to check.
            half_step = central_difference(loss, W, i, 5e-6)
            if abs(numeric - half_step) > 1e-7 + 1e-5 * abs(numeric):
                skipped += 1
                continue
            checked += 1
            assert_allclose(g.reshape(-1)[i], numeric, rtol=1e-6, atol=1e-9)
    assume(checked >= 5 * skipped)


@pytest.mark.parametrize("activation", ["relu", "tanh"])
def test_kink_detection_does_not_hide_a_wrong_gradient(activation, monkeypatch):
    # The property above skips non-smooth points; make sure a broken backward
    # pass is still caught at the smooth ones.
    import skcnn._engine as engine

    real = engine.backward

    def broken(*args, **kwargs):
        grads = real(*args, **kwargs)
        grads.coefs[0] = grads.coefs[0] * 1.01
        return grads

    monkeypatch.setattr(engine, "backward", broken)
    spec = dict(
        height=6, width=6, channels=1, conv_filters=(2,), kernel_size=3,
        pool_size=2, padding="valid", pooling="max", hidden_layer_sizes=(3,),
        activation=activation, n_classes=3, seed=1,
    )  # fmt: skip
    with pytest.raises(AssertionError):
        test_network_gradients_match_finite_differences.hypothesis.inner_test(spec)
