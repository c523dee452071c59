"""Training features of issue #5: layers, optimisers, weights, history."""

import os
import signal

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal
from sklearn.utils.class_weight import compute_sample_weight

import skcnn._loop as training
from skcnn import CNNClassifier
from skcnn._augment import augment_batch

BASE = dict(
    conv_filters=(4,),
    hidden_layer_sizes=(8,),
    max_iter=4,
    random_state=0,
    padding="valid",
)


def test_dropout_is_reproducible_and_off_at_predict(images):
    X, y = images
    a = CNNClassifier(**BASE, dropout=0.5).fit(X, y)
    b = CNNClassifier(**BASE, dropout=0.5).fit(X, y)
    plain = CNNClassifier(**BASE).fit(X, y)
    assert_array_equal(a.coefs_[0], b.coefs_[0])
    assert not np.array_equal(a.coefs_[-1], plain.coefs_[-1])
    # prediction is deterministic: no masks outside training
    assert_array_equal(a.predict_proba(X), a.predict_proba(X))
    assert_array_equal(a.predict_proba(X), b.predict_proba(X))


def test_dropout_zeroes_about_p_of_the_hidden_units(monkeypatch, images):
    X, y = images
    seen = []
    real = training.loss_and_gradients

    def spy(*args):
        seen.append(list(args[2].masks.values()))  # the dropout masks
        return real(*args)

    monkeypatch.setattr(training, "loss_and_gradients", spy)
    CNNClassifier(
        **dict(BASE, hidden_layer_sizes=(50, 40), max_iter=1), dropout=0.3
    ).fit(X, y)
    masks = seen[0]
    assert [m.shape[1] for m in masks] == [50, 40]
    values = np.concatenate([m.ravel() for m in masks])
    assert set(np.unique(values)) <= {0.0, np.float32(1 / 0.7)} | {1 / 0.7}
    assert abs((values == 0).mean() - 0.3) < 0.05


@pytest.mark.parametrize(
    "options, first_dense_inputs",
    [
        (dict(strides=2), 4 * 1 * 1),  # 8x8 -> conv s2 3x3 -> pool 1x1
        (dict(strides=1), 4 * 3 * 3),  # 8x8 -> conv 6x6 -> pool 3x3
        (dict(global_pooling=True), 4),
        (dict(kernel_size=(5,), pool_size=(1,)), 4 * 4 * 4),
    ],
)
def test_architecture_options(options, first_dense_inputs):
    X = np.random.default_rng(0).uniform(size=(12, 8, 8, 1))
    clf = CNNClassifier(**BASE, **options).fit(X, np.arange(12) % 2)
    assert clf.coefs_[1].shape[0] == first_dense_inputs


def test_per_block_sizes():
    X = np.random.default_rng(0).uniform(size=(12, 12, 12, 1))
    clf = CNNClassifier(
        conv_filters=(3, 5),
        kernel_size=(5, 2),
        pool_size=(2, 1),
        max_iter=1,
        padding="valid",
    ).fit(X, np.arange(12) % 2)
    assert clf.coefs_[0].shape == (5, 5, 1, 3)
    assert clf.coefs_[1].shape == (2, 2, 3, 5)
    assert clf.coefs_[2].shape[0] == 3 * 3 * 5  # 12 -> 8 -> 4 -> 3 (no pool)
    with pytest.raises(ValueError, match="kernel_size has 3 entries"):
        clf.set_params(kernel_size=(3, 3, 3)).fit(X, np.arange(12) % 2)


def test_adamw_is_adam_plus_decoupled_decay(images):
    X, y = images
    adam = CNNClassifier(**BASE, solver="adam", alpha=0.0).fit(X, y)
    adamw = CNNClassifier(**BASE, solver="adamw", alpha=0.0).fit(X, y)
    for a, b in zip(adam.coefs_, adamw.coefs_):
        assert_array_equal(a, b)
    decayed = CNNClassifier(**dict(BASE, learning_rate_init=0.01), solver="adamw")
    decayed.set_params(alpha=20.0).fit(X, y)
    l2 = CNNClassifier(**dict(BASE, learning_rate_init=0.01), solver="adam")
    l2.set_params(alpha=20.0).fit(X, y)
    # decay shrinks the weights, not the intercepts, and is not an L2 term
    # of the loss: adamw's reported loss is the plain cross-entropy
    assert np.abs(decayed.coefs_[-1]).mean() < np.abs(adamw.coefs_[-1]).mean()
    assert decayed.loss_ < l2.loss_


def test_cosine_schedule(images):
    X, y = images
    for solver in ("sgd", "adam"):
        clf = CNNClassifier(
            **dict(BASE, max_iter=6), solver=solver, learning_rate="cosine"
        ).fit(X, y)
        rates = [h["learning_rate"] for h in clf.history_]
        expected = 1e-3 * 0.5 * (1 + np.cos(np.pi * np.arange(6) / 6))
        assert_allclose(rates, expected)


def test_anneal_schedule_is_the_default(images):
    # constant for the first two thirds of the planned epochs, then a half
    # cosine over the last third
    X, y = images
    assert CNNClassifier().learning_rate == "anneal"
    clf = CNNClassifier(**dict(BASE, max_iter=9)).fit(X, y)
    rates = [h["learning_rate"] for h in clf.history_]
    epochs = np.arange(9)
    expected = np.where(epochs < 6, 1.0, 0.5 * (1 + np.cos(np.pi * (epochs - 6) / 3)))
    assert_allclose(rates, 1e-3 * expected)
    assert rates[6] == rates[0] > rates[7] > rates[8] > 0


def test_cosine_schedule_restarts_with_each_fit_and_not_in_partial_fit(images):
    # a warm start used to continue the decay past its end: a rate of 0, a
    # second fit that silently trained nothing
    X, y = images
    params = dict(BASE, max_iter=4, learning_rate="cosine", warm_start=True)
    clf = CNNClassifier(**params).fit(X, y)
    before = [W.copy() for W in clf.coefs_]
    clf.fit(X, y)
    rates = [h["learning_rate"] for h in clf.history_]
    expected = 1e-3 * 0.5 * (1 + np.cos(np.pi * np.arange(4) / 4))
    assert_allclose(rates, np.tile(expected, 2))
    assert all(np.abs(W - B).max() > 1e-4 for W, B in zip(clf.coefs_, before))
    # partial_fit has no horizon to decay over: learning_rate_init
    clf.partial_fit(X, y)
    assert clf.history_[-1]["learning_rate"] == pytest.approx(1e-3)


def test_class_weight_is_sample_weight_by_class(images):
    X, y = images
    by_dict = CNNClassifier(**BASE, class_weight={0: 3.0, 1: 1.0, 2: 0.5}).fit(X, y)
    sw = np.choose(y, [3.0, 1.0, 0.5])
    by_sw = CNNClassifier(**BASE).fit(X, y, sample_weight=sw)
    assert_allclose(by_dict.coefs_[0], by_sw.coefs_[0], rtol=1e-12)
    both = CNNClassifier(**BASE, class_weight="balanced").fit(X, y, sample_weight=sw)
    combined = sw * compute_sample_weight("balanced", y)
    manual = CNNClassifier(**BASE).fit(X, y, sample_weight=combined)
    assert_allclose(both.coefs_[0], manual.coefs_[0], rtol=1e-12)
    with pytest.raises(ValueError, match="not supported by partial_fit"):
        CNNClassifier(class_weight="balanced").partial_fit(X, y, classes=[0, 1, 2])


def test_partial_fit_class_weight_on_chunks_without_a_weighted_class(images):
    # a chunk need not hold every class: a dict weighs by the declared
    # classes, where compute_sample_weight asked for every key in the chunk
    X, y = images
    first, later = np.arange(20), np.flatnonzero(y != 0)[-12:]
    by_dict = CNNClassifier(**BASE, class_weight={0: 3.0, 2: 0.5})
    by_sw = CNNClassifier(**BASE)
    for rows in (first, later, later):
        sw = np.choose(y[rows], [3.0, 1.0, 0.5])
        by_dict.partial_fit(X[rows], y[rows], classes=[0, 1, 2])
        by_sw.partial_fit(X[rows], y[rows], classes=[0, 1, 2], sample_weight=sw)
    assert_allclose(by_dict.coefs_[0], by_sw.coefs_[0], rtol=1e-12)
    # an unknown class gets the class check's error, not class_weight's
    with pytest.raises(ValueError, match="not in `classes_`"):
        by_dict.partial_fit(X[:3], [0, 1, 5])
    # a key that is no class at all is still an error
    with pytest.raises(ValueError, match="not in class_weight|class_weight"):
        CNNClassifier(**BASE, class_weight={7: 2.0}).partial_fit(
            X, y, classes=[0, 1, 2]
        )


@pytest.mark.parametrize("weight", [-1.0, np.nan, np.inf, "heavy"])
def test_class_weight_values_must_be_sample_weights(images, weight):
    # as sample_weight: a negative weight would train away from its class,
    # a NaN or inf one diverge with a misleading message
    X, y = images
    for step in (
        lambda m: m.fit(X, y),
        lambda m: m.partial_fit(X, y, classes=[0, 1, 2]),
    ):
        with pytest.raises(ValueError, match="finite, non-negative numbers"):
            step(CNNClassifier(**BASE, class_weight={0: weight}))


def test_explicit_validation_set_and_best_weights(images):
    X, y = images
    X_val, y_val = X[::-1][:15], y[::-1][:15]
    clf = CNNClassifier(**dict(BASE, max_iter=10), early_stopping=True)
    clf.fit(X, y, X_val=X_val, y_val=y_val)
    assert len(clf.validation_scores_) == clf.n_iter_
    # the best epoch's weights are restored, so the model scores its best
    assert clf.score(X_val, y_val) == clf.best_validation_score_
    with pytest.raises(ValueError, match="both X_val and y_val"):
        clf.fit(X, y, X_val=X_val)
    with pytest.raises(ValueError, match="early_stopping=True only"):
        CNNClassifier().fit(X, y, X_val=X_val, y_val=y_val)
    with pytest.raises(ValueError, match="not in the training data"):
        clf.fit(X, y, X_val=X_val, y_val=y_val + 7)


def test_history_and_verbose(images, capsys):
    X, y = images
    clf = CNNClassifier(**BASE, verbose=True).fit(X, y)
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == len(clf.history_) == clf.n_iter_ == 4
    assert all("loss = " in line and "img/s" in line for line in lines)
    assert [h["epoch"] for h in clf.history_] == [1, 2, 3, 4]
    assert [h["loss"] for h in clf.history_] == clf.loss_curve_
    assert all(h["seconds"] > 0 and h["validation_score"] is None for h in clf.history_)
    clf.set_params(verbose=False).partial_fit(X, y)
    assert capsys.readouterr().out == ""
    assert len(clf.history_) == 5 and clf.history_[-1]["epoch"] == 5


@pytest.mark.parametrize("early_stopping", [False, True])
def test_ctrl_c_stops_after_the_current_batch(monkeypatch, images, early_stopping):
    X, y = images
    X, y = np.concatenate([X] * 3), np.concatenate([y] * 3)
    calls = []
    real = training.loss_and_gradients

    def interrupting(*args):
        calls.append(1)
        if len(calls) == 7:  # in the second epoch (4 batches each)
            os.kill(os.getpid(), signal.SIGINT)
        return real(*args)

    monkeypatch.setattr(training, "loss_and_gradients", interrupting)
    clf = CNNClassifier(**dict(BASE, max_iter=50, batch_size=27))
    clf.set_params(early_stopping=early_stopping)
    with pytest.raises(KeyboardInterrupt, match="interrupted"):
        clf.fit(X, y)
    assert len(calls) == 7  # the batch in flight finished, no other started
    assert clf.n_iter_ == 1
    # one epoch, then the batches of the second that completed: 120 samples
    # make 5 batches of 27, or 4 once early stopping holds out 12
    assert clf.t_ == (108 + 3 * 27 if early_stopping else 120 + 2 * 27)
    assert np.isfinite(clf.predict_proba(X)).all()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_batch_norm_running_statistics_and_batch_invariance(images):
    X, y = images
    clf = CNNClassifier(**dict(BASE, conv_filters=(3, 4)), batch_norm=True).fit(X, y)
    assert [s.shape for s in clf.batch_norm_scales_] == [(3,), (4,)]
    assert all(not np.allclose(m, 0) for m in clf.batch_norm_means_)
    assert all(not np.allclose(v, 1) for v in clf.batch_norm_vars_)
    proba = clf.predict_proba(X)
    # running statistics at predict time: a row's output ignores the batch
    for rows in (slice(0, 1), slice(5, 9), slice(10, 40)):
        assert_allclose(clf.predict_proba(X[rows]), proba[rows], rtol=1e-12)
    twin = CNNClassifier(**dict(BASE, conv_filters=(3, 4)), batch_norm=True)
    assert_array_equal(twin.fit(X, y).predict_proba(X), proba)
    assert CNNClassifier(**BASE).fit(X, y).batch_norm_scales_ is None


def test_batch_norm_early_stopping_restores_running_statistics(images):
    X, y = images
    X3, y3 = np.concatenate([X] * 3), np.concatenate([y] * 3)
    clf = CNNClassifier(
        **dict(BASE, max_iter=8), batch_norm=True, early_stopping=True
    ).fit(X3, y3, X_val=X, y_val=y)
    assert clf.score(X, y) == clf.best_validation_score_


def test_augment_shifts_and_flips_reproducibly(monkeypatch):
    X = np.zeros((6, 5, 7, 1))
    X[:, 2, 3, 0] = 1.0  # one lit pixel at the centre
    seen = []
    real = training.loss_and_gradients

    def spy(*args):
        seen.append(args[2].x.copy())
        return real(*args)

    monkeypatch.setattr(training, "loss_and_gradients", spy)
    params = dict(BASE, max_iter=1, shuffle=False, batch_size=6)
    CNNClassifier(**params, augment={"shift": 2, "flip": True}).fit(X, np.arange(6) % 2)
    images = seen[0][..., 0]
    for image in images:  # the pixel moved by at most 2 in each direction
        (row,), (col,) = np.nonzero(image)
        assert abs(row - 2) <= 2 and abs(col - 3) <= 2
    assert len({tuple(np.argwhere(i)[0]) for i in images}) > 1
    assert X.sum() == 6  # the caller's images are untouched
    CNNClassifier(**params, augment={"shift": 2, "flip": True}).fit(X, np.arange(6) % 2)
    assert_array_equal(seen[1], seen[0])  # reproducible through random_state
    CNNClassifier(**params).fit(X, np.arange(6) % 2)
    assert_array_equal(seen[2], X)  # off by default


def test_augment_flip_mirrors_about_half_of_the_images():
    est = CNNClassifier(augment={"flip": True})
    est._random_state = np.random.RandomState(0)
    xb = np.random.default_rng(0).uniform(size=(200, 3, 4, 2))
    out = augment_batch(est, xb)
    mirrored = [np.array_equal(r, o[:, ::-1]) for r, o in zip(out, xb)]
    kept = [np.array_equal(r, o) for r, o in zip(out, xb)]
    assert all(m != k for m, k in zip(mirrored, kept))  # one or the other
    assert 0.35 < np.mean(mirrored) < 0.65


@pytest.mark.parametrize(
    "augment", [{"shift": -1}, {"shift": 1.5}, {"flip": "yes"}, {"rotate": 10}]
)
def test_bad_augment(augment, images):
    X, y = images
    with pytest.raises(ValueError, match="augment must be"):
        CNNClassifier(augment=augment).fit(X, y)


@pytest.mark.parametrize(
    "change",
    [
        dict(conv_filters=(6,)),
        dict(hidden_layer_sizes=(5,)),
        dict(batch_norm=True),
        dict(dropout=0.2),
        dict(data_format="channels_first"),
        dict(image_shape=(4, 16, 1)),
    ],
    ids=lambda change: next(iter(change)),
)
def test_continued_fits_refuse_a_changed_architecture(images, change):
    # warm_start and partial_fit train the fitted network: a parameter it
    # was built from that changed since is refused, not silently ignored
    X, y = images
    name = next(iter(change))
    for options, step in [
        (dict(warm_start=True), lambda m: m.fit(X, y)),
        ({}, lambda m: m.partial_fit(X, y, classes=np.unique(y))),
    ]:
        model = CNNClassifier(**BASE, **options)
        step(model)
        before = model.predict_proba(X)
        model.set_params(**change)
        with pytest.raises(ValueError, match=f"{name}=.*fitted with {name}="):
            step(model)
        # nothing changed; prediction still reads rows as fitted
        assert_array_equal(model.predict_proba(X), before)
        model.set_params(**{name: BASE.get(name, CNNClassifier().get_params()[name])})
        step(model)  # set back: continues


def test_continued_fit_accepts_the_same_values_written_differently(images):
    X, y = images
    model = CNNClassifier(**BASE, warm_start=True).fit(X, y)
    model.set_params(conv_filters=[4], kernel_size=(3,), hidden_layer_sizes=[8])
    model.fit(X, y)
    for shape in [(6, 5), (6, 5, 2)]:  # the image shape it inferred
        model.set_params(image_shape=shape).fit(X, y)
    assert model.coefs_[0].shape == (3, 3, 2, 4)
