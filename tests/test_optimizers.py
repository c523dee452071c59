"""The optimizers: closed-form steps and MLPClassifier's training semantics.

The expected values are written from the formulas with plain NumPy in
float64, never by calling the code under test.
"""

import numpy as np
import pytest
from numpy.testing import assert_allclose
from sklearn.datasets import make_classification, make_regression
from sklearn.neural_network import MLPClassifier, MLPRegressor

from skcnn import CNNClassifier, CNNRegressor
from skcnn._optimizers import SGD, Adam, cosine_factor, make_optimizer

DTYPES = [np.float64, np.float32]


def _tols(dtype):
    return (
        dict(rtol=1e-12, atol=1e-14)
        if dtype == np.float64
        else dict(rtol=1e-5, atol=1e-6)
    )


def _problem(dtype, scale=1.0):
    """A weight matrix and an intercept, and two steps of their gradients."""
    rng = np.random.default_rng(0)
    params = [rng.normal(size=(3, 4)).astype(dtype), rng.normal(size=4).astype(dtype)]
    grads = [
        [scale * rng.normal(size=p.shape).astype(dtype) for p in params]
        for _ in range(2)
    ]
    return params, grads


def _f64(arrays):
    return [a.astype(np.float64) for a in arrays]


def _step_and_check(opt, params, grads, expected):
    """Step ``opt`` in place over the live ``params``, checking each result."""
    live = list(params)
    for step_grads, step_expected in zip(grads, expected):
        assert opt.update_params(params, step_grads) is None
        for p, a, e in zip(params, live, step_expected):
            assert p is a  # the very arrays that were passed are updated
            assert p.dtype == a.dtype
            assert_allclose(p, e, **_tols(p.dtype))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    "momentum, nesterov", [(0.0, False), (0.9, False), (0.9, True)]
)
def test_sgd_steps(dtype, momentum, nesterov):
    params, grads = _problem(dtype)
    lr, mu = 0.1, momentum
    expected, p, v = [], _f64(params), [np.zeros(a.shape) for a in params]
    for g in grads:
        g = _f64(g)
        v = [mu * vi - lr * gi for vi, gi in zip(v, g)]
        if nesterov:  # the look-ahead: one more momentum step from v
            p = [pi + mu * vi - lr * gi for pi, vi, gi in zip(p, v, g)]
        else:
            p = [pi + vi for pi, vi in zip(p, v)]
        expected.append(p)
    opt = SGD(params, lr, "constant", momentum, nesterov, 0.5)
    _step_and_check(opt, params, grads, expected)
    assert all(v.dtype == dtype for v in opt.velocities)
    opt.iteration_ends(1000)  # "constant" keeps its rate
    assert opt.learning_rate == lr


@pytest.mark.parametrize("dtype", DTYPES)
def test_sgd_invscaling_rate_changes_after_the_epoch(dtype):
    params, grads = _problem(dtype)
    opt = SGD(params, 0.1, "invscaling", 0.0, False, 0.25)
    assert opt.learning_rate == 0.1  # the first epoch runs at the initial rate
    opt.iteration_ends(15)  # 16 samples seen: 0.1 / 16 ** 0.25
    assert opt.learning_rate == pytest.approx(0.05, rel=1e-15)
    expected = [[p - 0.05 * g for p, g in zip(_f64(params), _f64(grads[0]))]]
    _step_and_check(opt, params, grads[:1], expected)


@pytest.mark.parametrize("schedule", ["constant", "invscaling"])
def test_sgd_non_adaptive_schedules_stop_at_once(schedule, capsys):
    opt = SGD([np.zeros(2)], 0.1, schedule, 0.9, True, 0.5)
    assert opt.trigger_stopping("No progress.", verbose=True)
    assert opt.learning_rate == 0.1
    assert capsys.readouterr().out == "No progress. Stopping.\n"


def test_sgd_adaptive_divides_by_five_until_one_millionth(capsys):
    opt = SGD([np.zeros(2)], 1e-4, "adaptive", 0.9, True, 0.5)
    rates = []
    while not opt.trigger_stopping("No progress.", verbose=True):
        rates.append(opt.learning_rate)
    # 1e-4 -> 2e-5 -> 4e-6 -> 8e-7, which is <= 1e-6: stop, rate unchanged
    assert_allclose(rates, [2e-5, 4e-6, 8e-7], rtol=1e-15)
    assert opt.learning_rate == rates[-1]
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "No progress. Setting learning rate to 0.000020"
    assert out[-1] == "No progress. Learning rate too small. Stopping."
    opt.iteration_ends(1000)  # the epoch end leaves "adaptive" alone
    assert opt.learning_rate == rates[-1]


def test_sgd_adaptive_stops_at_exactly_one_millionth():
    assert SGD([np.zeros(2)], 1e-6, "adaptive", 0.0, False, 0.5).trigger_stopping(
        "", False
    )
    opt = SGD([np.zeros(2)], 1.000001e-6, "adaptive", 0.0, False, 0.5)
    assert not opt.trigger_stopping("", False)
    assert opt.trigger_stopping("", False)


def _adam_expected(params, grads, lr, b1, b2, eps, decay=0.0, n_decayed=0):
    """MLPClassifier's Adam, after Loshchilov & Hutter's decay when asked."""
    p = _f64(params)
    m = [np.zeros(a.shape) for a in p]
    v = [np.zeros(a.shape) for a in p]
    expected, rates = [], []
    for t, g in enumerate(grads, start=1):
        g = _f64(g)
        p = [pi * (1 - lr * decay) if i < n_decayed else pi for i, pi in enumerate(p)]
        m = [b1 * mi + (1 - b1) * gi for mi, gi in zip(m, g)]
        v = [b2 * vi + (1 - b2) * gi**2 for vi, gi in zip(v, g)]
        lr_t = lr * np.sqrt(1 - b2**t) / (1 - b1**t)
        p = [pi - lr_t * mi / (np.sqrt(vi) + eps) for pi, mi, vi in zip(p, m, v)]
        expected.append(p)
        rates.append(lr_t)
    return expected, rates


@pytest.mark.parametrize("dtype", DTYPES)
def test_adam_bias_corrected_steps(dtype):
    # gradients of the order of epsilon make its place in the formula count
    params, grads = _problem(dtype, scale=1e-2)
    lr, b1, b2, eps = 0.01, 0.8, 0.99, 1e-2
    expected, rates = _adam_expected(params, grads, lr, b1, b2, eps)
    opt = Adam(params, lr, b1, b2, eps)
    _step_and_check(opt, params, grads, expected)
    assert opt.t == 2
    assert opt.learning_rate == pytest.approx(rates[-1], rel=1e-15)
    assert all(a.dtype == dtype for a in opt.ms + opt.vs)
    opt.iteration_ends(1000)
    assert opt.trigger_stopping("", False)  # Adam has no schedule: it stops


@pytest.mark.parametrize("dtype", DTYPES)
def test_adamw_decays_weights_not_intercepts(dtype):
    params, grads = _problem(dtype)
    lr, b1, b2, eps, decay = 0.01, 0.9, 0.999, 1e-8, 0.5
    expected, _ = _adam_expected(params, grads, lr, b1, b2, eps, decay, n_decayed=1)
    opt = Adam(params, lr, b1, b2, eps, weight_decay=decay, n_decayed=1)
    _step_and_check(opt, params, grads, expected)


@pytest.mark.parametrize("dtype", DTYPES)
def test_adam_rate_factor_scales_step_and_decay(dtype):
    # the cosine schedule scales the base rate: the decay and the bias-corrected
    # step both follow it
    params, grads = _problem(dtype)
    expected, _ = _adam_expected(params, grads, 0.01 * 0.25, 0.9, 0.999, 1e-8, 0.5, 1)
    opt = Adam(params, 0.01, 0.9, 0.999, 1e-8, weight_decay=0.5, n_decayed=1)
    opt.scale_learning_rate(0.25)
    _step_and_check(opt, params, grads, expected)


def test_sgd_scale_learning_rate_is_relative_to_the_initial_rate():
    opt = SGD([np.zeros(2)], 0.1, "constant", 0.0, False, 0.5)
    opt.scale_learning_rate(0.5)
    opt.scale_learning_rate(0.5)
    assert opt.learning_rate == pytest.approx(0.05, rel=1e-15)


def test_cosine_factor():
    s = np.sqrt(0.5)
    for epoch, factor in [(0, 1.0), (2, (1 + s) / 2), (4, 0.5), (6, (1 - s) / 2)]:
        assert cosine_factor(epoch, 8) == pytest.approx(factor, rel=1e-15)
    assert cosine_factor(8, 8) == pytest.approx(0.0, abs=1e-15)
    assert cosine_factor(12, 8) == pytest.approx(0.0, abs=1e-15)  # stays at 0


def _fitted(**params):
    X, y = make_classification(20, 4, n_informative=3, n_redundant=0, random_state=0)
    est = CNNClassifier(conv_filters=(), hidden_layer_sizes=(3,), max_iter=1, **params)
    return est.fit(X, y)


def test_make_optimizer_sgd_takes_the_estimator_settings():
    est = _fitted(
        solver="sgd",
        learning_rate="invscaling",
        learning_rate_init=0.1,
        momentum=0.5,
        nesterovs_momentum=False,
        power_t=0.25,
    )
    params, grads = _problem(np.float64)
    p, g1, g2 = _f64(params), grads[0], grads[1]
    v1 = [-0.1 * g for g in g1]
    p1 = [a + b for a, b in zip(p, v1)]
    # after 15 samples, the rate is 0.1 / 16 ** 0.25 = 0.05
    p2 = [a + 0.5 * v - 0.05 * g for a, v, g in zip(p1, v1, g2)]
    opt = make_optimizer(est, params)
    opt.update_params(params, g1)
    opt.iteration_ends(15)
    opt.update_params(params, g2)
    for got, want in zip(params, p2):
        assert_allclose(got, want, rtol=1e-12)


def test_make_optimizer_adamw_decays_the_coefs_by_alpha():
    # alpha is the L2 penalty of "adam" (in the gradient, not the optimizer)
    # and the decoupled weight decay of "adamw", on coefs_ but not intercepts_
    ests = {
        s: _fitted(solver=s, alpha=0.5, learning_rate_init=0.01)
        for s in ("adam", "adamw")
    }
    start = ests["adam"].coefs_ + ests["adam"].intercepts_
    n_coefs = len(ests["adam"].coefs_)
    steps = {}
    for solver, est in ests.items():
        params = [a.copy() for a in start]
        grads = [np.full_like(a, 0.3) for a in params]
        make_optimizer(est, params).update_params(params, grads)
        steps[solver] = params
    for i, (adam, adamw, p0) in enumerate(zip(steps["adam"], steps["adamw"], start)):
        shrink = 0.01 * 0.5 * p0 if i < n_coefs else 0.0
        assert_allclose(adamw, adam - shrink, rtol=1e-12, atol=1e-15)


def _mlp_twins(max_iter, regression=False, **params):
    """CNNClassifier without convolutions and MLPClassifier (or the
    regressors), trained from the same weights with fresh optimizers and
    stopping state."""
    if regression:  # one output: MLPRegressor's gradient is the loss's
        X, y = make_regression(64, 6, n_informative=4, noise=1.0, random_state=0)
        y = y / y.std()
        ours_class, mlp_class = CNNRegressor, MLPRegressor
    else:
        X, y = make_classification(
            64, 6, n_informative=4, n_redundant=0, n_classes=3, random_state=0
        )
        ours_class, mlp_class = CNNClassifier, MLPClassifier
    common = dict(
        hidden_layer_sizes=(5, 4),
        activation="tanh",
        alpha=1e-3,
        batch_size=16,  # four minibatches an epoch
        shuffle=False,
        random_state=0,
        **params,
    )
    ours = ours_class(
        conv_filters=(),
        input_scaling=None,
        dropout=0.0,
        max_iter=1,
        warm_start=True,
        **common,
    )
    mlp = mlp_class(max_iter=1, warm_start=True, **common)
    ours.fit(X, y)
    mlp.fit(X, y)
    for theirs, mine in zip(
        mlp.coefs_ + mlp.intercepts_, ours.coefs_ + ours.intercepts_
    ):
        theirs[...] = mine
    for est in (ours, mlp):
        # a warm-started fit makes a fresh optimizer; forget the first
        # (different) epoch's loss for the stopping rule
        est.set_params(max_iter=max_iter)
        est.best_loss_ = np.inf
        est.fit(X, y)
    return ours, mlp, X, y


def _assert_same_training(ours, mlp):
    assert ours.n_iter_ == mlp.n_iter_
    # the first epoch ran from different initial weights
    assert_allclose(ours.loss_curve_[1:], mlp.loss_curve_[1:], rtol=1e-10)
    for theirs, mine in zip(
        mlp.coefs_ + mlp.intercepts_, ours.coefs_ + ours.intercepts_
    ):
        assert_allclose(mine, theirs, rtol=1e-10, atol=1e-12)


SETTINGS = {
    "momentum": dict(
        solver="sgd",
        nesterovs_momentum=False,
        learning_rate="constant",
        learning_rate_init=0.05,
    ),
    "nesterov": dict(
        solver="sgd",
        nesterovs_momentum=True,
        learning_rate="constant",
        learning_rate_init=0.05,
    ),
    "invscaling": dict(
        solver="sgd",
        learning_rate="invscaling",
        learning_rate_init=0.5,
        power_t=0.25,
        momentum=0.5,
    ),
    # MLPClassifier's default schedule ("anneal" is skcnn's)
    "adam": dict(
        solver="adam", learning_rate="constant", learning_rate_init=0.02, epsilon=1e-4
    ),
}


@pytest.mark.parametrize("name", SETTINGS)
def test_epochs_match_mlpclassifier(name):
    ours, mlp, X, y = _mlp_twins(10, **SETTINGS[name])
    _assert_same_training(ours, mlp)
    rates = [h["learning_rate"] for h in ours.history_[1:]]
    if name == "invscaling":  # the rate fell after each epoch
        assert rates[0] == 0.5 and rates[1] == pytest.approx(0.5 / (2 * 64 + 1) ** 0.25)
    # partial_fit resumes the optimizer (velocities, Adam's moments and t)
    for _ in range(3):
        ours.partial_fit(X, y)
        mlp.partial_fit(X, y)
    _assert_same_training(ours, mlp)


@pytest.mark.parametrize("name", SETTINGS)
def test_epochs_match_mlpregressor(name):
    ours, mlp, X, y = _mlp_twins(10, regression=True, **SETTINGS[name])
    _assert_same_training(ours, mlp)
    for _ in range(3):
        ours.partial_fit(X, y)
        mlp.partial_fit(X, y)
    _assert_same_training(ours, mlp)
    assert_allclose(ours.predict(X), mlp.predict(X), rtol=1e-10)


def test_adaptive_rate_matches_mlpclassifier():
    # the loss first falls by more than tol=0.03 an epoch, then stalls: each
    # two epochs without such a gain (more than n_iter_no_change=1) divide
    # the rate by 5, three times in 15 epochs
    ours, mlp, _, _ = _mlp_twins(
        15,
        solver="sgd",
        learning_rate="adaptive",
        learning_rate_init=0.1,
        tol=0.03,
        n_iter_no_change=1,
    )
    _assert_same_training(ours, mlp)
    assert ours.n_iter_ == 15
    rates = [h["learning_rate"] for h in ours.history_[1:]]
    assert rates[:9] == [0.1] * 9
    assert_allclose(sorted(set(rates)), [0.1 / 125, 0.1 / 25, 0.1 / 5, 0.1])


def test_adaptive_stop_matches_mlpclassifier():
    # no epoch gains tol=1: the rate is divided after epochs 3 and 5
    # (1e-5 -> 2e-6 -> 4e-7) and training stops after epoch 7
    ours, mlp, _, _ = _mlp_twins(
        20,
        solver="sgd",
        learning_rate="adaptive",
        learning_rate_init=1e-5,
        tol=1.0,
        n_iter_no_change=1,
    )
    _assert_same_training(ours, mlp)
    assert ours.n_iter_ == 7
    rates = [h["learning_rate"] for h in ours.history_[1:]]
    assert_allclose(rates, [1e-5] * 3 + [2e-6] * 2 + [4e-7] * 2, rtol=1e-12)
