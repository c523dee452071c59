"""CNNClassifier's behaviour: input forms, shapes, dtypes, fitting rules."""

import inspect
import pickle

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal
from sklearn.datasets import make_classification, make_multilabel_classification
from sklearn.neural_network import MLPClassifier

import skcnn
import skcnn._engine as engine
from skcnn import CNNClassifier

SMALL = dict(
    conv_filters=(4,),
    hidden_layer_sizes=(8,),
    max_iter=3,
    random_state=0,
    padding="valid",
)
# MLPClassifier.fit takes sample_weight only since scikit-learn 1.7
MLP_TAKES_SAMPLE_WEIGHT = "sample_weight" in (
    inspect.signature(MLPClassifier.fit).parameters
)


def test_reference_network_on_mnist_sized_rows():
    X = np.random.default_rng(0).uniform(0, 1, (30, 784)).astype(np.float32)
    y = np.arange(30) % 10
    clf = CNNClassifier(max_iter=1, random_state=0, padding="valid").fit(X, y)
    assert clf.image_shape_ == (28, 28, 1)
    assert [w.shape for w in clf.coefs_] == [
        (3, 3, 1, 32),
        (3, 3, 32, 64),
        (5 * 5 * 64, 64),
        (64, 10),
    ]
    assert [b.shape for b in clf.intercepts_] == [(32,), (64,), (64,), (10,)]
    assert clf.n_layers_ == 5
    assert clf.n_outputs_ == 10
    assert clf.out_activation_ == "softmax"
    assert clf.n_features_in_ == 784


@pytest.mark.filterwarnings("ignore:X does not have valid feature names")
def test_all_input_forms_give_the_same_model(images):
    pd = pytest.importorskip("pandas")
    X4, y = images
    flat = X4.reshape(len(X4), -1)
    forms = {
        "4d": X4,
        "flat": flat,
        "list": flat.tolist(),
        "fortran": np.asfortranarray(X4),
        "dataframe": pd.DataFrame(flat, columns=[f"p{i}" for i in range(60)]),
    }
    readonly = flat.copy()
    readonly.flags.writeable = False
    forms["readonly"] = readonly
    params = dict(SMALL, image_shape=(6, 5, 2))
    reference = CNNClassifier(**params).fit(X4, y)
    for name, X in forms.items():
        clf = CNNClassifier(**params).fit(X, y)
        for w, w_ref in zip(clf.coefs_, reference.coefs_):
            assert_array_equal(w, w_ref, err_msg=name)
        assert_array_equal(clf.predict_proba(X4), reference.predict_proba(X4))
    assert list(CNNClassifier(**params).fit(forms["dataframe"], y).feature_names_in_)[
        :2
    ] == ["p0", "p1"]


def test_memmap_input(tmp_path, images):
    X4, y = images
    path = tmp_path / "x.npy"
    np.save(path, X4)
    X_mm = np.load(path, mmap_mode="r")
    clf = CNNClassifier(**SMALL).fit(X_mm, y)
    assert_array_equal(clf.predict(X_mm), CNNClassifier(**SMALL).fit(X4, y).predict(X4))


def test_grayscale_3d_input():
    rng = np.random.default_rng(1)
    X = rng.uniform(0, 1, (20, 7, 9))
    y = np.arange(20) % 2
    clf = CNNClassifier(**SMALL).fit(X, y)
    assert clf.image_shape_ == (7, 9, 1)
    assert_array_equal(clf.predict(X), clf.predict(X.reshape(20, -1)))
    assert_array_equal(clf.predict(X), clf.predict(X[..., None]))


@pytest.mark.parametrize(
    "n_features, image_shape, expected",
    [
        (784, None, (28, 28, 1)),
        (49, None, (7, 7, 1)),
        (1, None, (1, 1, 1)),
        (12, None, (1, 1, 12)),
        (48, (4, 4), (4, 4, 3)),
        (48, (4, 4, 3), (4, 4, 3)),
        (48, (2, 8), (2, 8, 3)),
    ],
)
def test_image_shape_rule(n_features, image_shape, expected):
    X = np.random.default_rng(2).uniform(size=(6, n_features))
    clf = CNNClassifier(**dict(SMALL, image_shape=image_shape, max_iter=1))
    clf.fit(X, [0, 1, 0, 1, 0, 1])
    assert clf.image_shape_ == expected
    assert clf.coefs_[0].shape[2] == expected[2]


def test_kernel_larger_than_map_is_clipped():
    X, y = make_classification(50, 2, n_informative=2, n_redundant=0, random_state=0)
    clf = CNNClassifier(max_iter=2, random_state=0, padding="valid").fit(X, y)
    assert clf.image_shape_ == (1, 1, 2)
    assert clf.coefs_[0].shape == (1, 1, 2, 32)
    assert clf.coefs_[1].shape == (1, 1, 32, 64)
    assert np.isfinite(clf.predict_proba(X)).all()


@pytest.mark.parametrize(
    "image_shape, match",
    [
        ((5, 5), "not a whole number of channels"),
        ((4, 4, 2), "holds 32 values"),
        ((4, 0), "positive integers"),
        ((4,), "image_shape must be"),
        ((2, 2, 2, 2), "image_shape must be"),
    ],
)
def test_bad_image_shape(image_shape, match):
    X = np.ones((4, 48))
    with pytest.raises(ValueError, match=match):
        CNNClassifier(image_shape=image_shape).fit(X, [0, 1, 0, 1])


@pytest.mark.parametrize(
    "name",
    ["conv_filters", "kernel_size", "pool_size", "strides", "hidden_layer_sizes"],
)
@pytest.mark.parametrize("value", [True, None, 2.0])
def test_layer_size_parameters_must_be_ints(name, value, images):
    # a bool is an int to Python: once "'bool' object is not iterable"
    X, y = images
    with pytest.raises(ValueError, match=name):
        CNNClassifier(**{**SMALL, name: value}).fit(X, y)


def test_array_parameters_mean_what_their_lists_do(images, tmp_path):
    X, y = images
    as_arrays = dict(
        conv_filters=np.array(4),
        kernel_size=np.array([3]),
        hidden_layer_sizes=np.array([5]),
        image_shape=np.array([6, 5]),
        augment={"shift": 1, "flip": np.True_},
    )
    as_lists = dict(
        conv_filters=4,
        kernel_size=[3],
        hidden_layer_sizes=[5],
        image_shape=(6, 5),
        augment={"shift": 1, "flip": True},
    )
    a = CNNClassifier(**{**SMALL, **as_arrays}).fit(X, y)
    b = CNNClassifier(**{**SMALL, **as_lists}).fit(X, y)
    assert_array_equal(a.predict_proba(X), b.predict_proba(X))
    a.save(tmp_path / "model.npz")  # arrays are stored as lists
    assert_array_equal(
        skcnn.load(tmp_path / "model.npz").predict_proba(X), a.predict_proba(X)
    )


def test_image_shape_must_match_nd_input(images):
    X4, y = images
    with pytest.raises(ValueError, match="does not match"):
        CNNClassifier(image_shape=(5, 6)).fit(X4, y)
    clf = CNNClassifier(**dict(SMALL, image_shape=(6, 5))).fit(X4, y)
    assert clf.image_shape_ == (6, 5, 2)


def test_predict_rejects_other_image_shapes(images):
    X4, y = images
    clf = CNNClassifier(**SMALL).fit(X4, y)
    with pytest.raises(ValueError, match="fitted on images of shape"):
        clf.predict(X4.reshape(40, 5, 6, 2))  # same size, other shape
    with pytest.raises(ValueError, match="fitted on images of shape"):
        clf.predict(X4[..., 0])  # one channel instead of two
    with pytest.raises(ValueError, match="features"):
        clf.predict(X4.reshape(40, -1)[:, :-1])
    with pytest.raises(ValueError, match="2-D .* 3-D .* 4-D"):
        clf.predict(X4[..., None])


@pytest.mark.parametrize(
    "dtype, expected",
    [
        (np.float64, np.float64),
        (np.float32, np.float32),
        (np.uint8, np.float32),
        (np.int64, np.float32),
        (bool, np.float32),
    ],
)
def test_compute_dtype_rule(dtype, expected):
    rng = np.random.default_rng(3)
    X = (rng.uniform(0, 2, (30, 16))).astype(dtype)
    y = np.arange(30) % 3
    clf = CNNClassifier(**SMALL).fit(X, y)
    assert all(w.dtype == expected for w in clf.coefs_ + clf.intercepts_)
    assert clf.predict_proba(X).dtype == expected
    # once fitted the model keeps its dtype whatever the new input's
    other = np.float32 if expected == np.float64 else np.float64
    assert clf.predict_proba(X.astype(other)).dtype == expected
    clf.partial_fit(X.astype(other), y)
    clf.set_params(warm_start=True).fit(X.astype(other), y)
    assert all(w.dtype == expected for w in clf.coefs_ + clf.intercepts_)
    for opt_state in vars(clf._optimizer).values():
        if isinstance(opt_state, list):
            assert all(s.dtype == expected for s in opt_state)


def test_binary_string_labels():
    rng = np.random.default_rng(4)
    X = rng.uniform(size=(30, 9))
    y = np.where(X[:, 4] > 0.5, "cat", "dog")
    clf = CNNClassifier(**dict(SMALL, max_iter=100, learning_rate_init=0.01))
    clf.fit(X, y)
    assert clf.n_outputs_ == 1
    assert clf.out_activation_ == "logistic"
    assert clf.coefs_[-1].shape[1] == 1
    assert_array_equal(clf.classes_, ["cat", "dog"])
    proba = clf.predict_proba(X)
    assert proba.shape == (30, 2)
    assert_allclose(proba.sum(axis=1), 1)
    assert_array_equal(clf.predict(X), clf.classes_[proba.argmax(axis=1)])
    assert_allclose(clf.predict_log_proba(X), np.log(proba))
    assert clf.score(X, y) > 0.8


def test_partial_fit_rules(images):
    X4, y = images
    clf = CNNClassifier(**SMALL)
    with pytest.raises(ValueError, match="classes must be passed"):
        clf.partial_fit(X4, y)
    assert not hasattr(clf, "coefs_")
    clf.partial_fit(X4[:10], y[:10], classes=[0, 1, 2, 3])
    assert_array_equal(clf.classes_, [0, 1, 2, 3])
    assert clf.n_outputs_ == 4  # all classes, not only those in the first y
    assert (clf.n_iter_, clf.t_, len(clf.loss_curve_)) == (1, 10, 1)
    clf.partial_fit(X4, y)
    assert (clf.n_iter_, clf.t_, len(clf.loss_curve_)) == (1, 50, 2)
    with pytest.raises(ValueError, match="classes not in"):
        clf.partial_fit(X4, y + 10)
    with pytest.raises(ValueError, match="not the same"):
        clf.partial_fit(X4, y, classes=[0, 1])
    with pytest.raises(ValueError, match="early_stopping"):
        CNNClassifier(early_stopping=True).partial_fit(X4, y, classes=[0, 1, 2])


def test_partial_fit_matches_fit_epoch_by_epoch(images):
    X4, y = images
    # (dropout off: each fit / partial_fit call seeds its own masks)
    params = dict(SMALL, dropout=0.0)
    fitted = CNNClassifier(**dict(params, max_iter=3, n_iter_no_change=99)).fit(X4, y)
    inc = CNNClassifier(**params)
    for _ in range(3):
        inc.partial_fit(X4, y, classes=np.unique(y))
    assert_allclose(inc.loss_curve_, fitted.loss_curve_)
    for a, b in zip(inc.coefs_, fitted.coefs_):
        assert_array_equal(a, b)


def test_warm_start_continues(images):
    X4, y = images
    clf = CNNClassifier(**dict(SMALL, warm_start=True)).fit(X4, y)
    first = [w.copy() for w in clf.coefs_]
    clf.fit(X4, y)
    assert len(clf.loss_curve_) == 6 and clf.n_iter_ == 3
    assert clf.t_ == 6 * 40
    assert not np.array_equal(first[0], clf.coefs_[0])
    cold = CNNClassifier(**SMALL).fit(X4, y)
    cold.fit(X4, y)
    assert len(cold.loss_curve_) == 3
    with pytest.raises(ValueError, match="same classes"):
        clf.fit(X4[y < 2], y[y < 2])


def test_early_stopping_fills_validation_scores(images):
    X4, y = images
    X3 = np.concatenate([X4] * 3)
    y3 = np.concatenate([y] * 3)
    clf = CNNClassifier(
        **dict(SMALL, max_iter=8, early_stopping=True, validation_fraction=0.25)
    ).fit(X3, y3)
    assert len(clf.validation_scores_) == clf.n_iter_
    assert clf.best_validation_score_ == max(clf.validation_scores_)
    assert clf.best_loss_ is None
    plain = CNNClassifier(**SMALL).fit(X4, y)
    assert plain.validation_scores_ is None and plain.best_validation_score_ is None
    assert plain.best_loss_ == min(plain.loss_curve_)


def test_training_reduces_loss_and_learns():
    X, y = make_classification(
        200, 16, n_informative=8, n_classes=3, random_state=0, class_sep=2
    )
    clf = CNNClassifier(
        conv_filters=(8,), max_iter=60, learning_rate_init=0.01, random_state=0
    ).fit(X, y)
    assert clf.loss_curve_[-1] < 0.5 * clf.loss_curve_[0]
    assert clf.score(X, y) > 0.9


@pytest.mark.parametrize("n_classes", [2, 3, "multilabel"])
@pytest.mark.parametrize(
    "weighted",
    [
        False,
        pytest.param(
            True,
            marks=pytest.mark.skipif(
                not MLP_TAKES_SAMPLE_WEIGHT,
                reason="MLPClassifier takes sample_weight only since scikit-learn 1.7",
            ),
        ),
    ],
)
def test_sgd_step_matches_mlpclassifier(n_classes, weighted):
    # Without convolutions the network is an MLP: one SGD epoch from the same
    # weights must give MLPClassifier's loss and weights (same loss, L2 and
    # sample-weight conventions).
    if n_classes == "multilabel":
        X, y = make_multilabel_classification(60, 6, n_classes=3, random_state=0)
    else:
        X, y = make_classification(
            60, 6, n_informative=4, n_classes=n_classes, random_state=0
        )
    sw = np.random.default_rng(5).uniform(0.2, 3, 60) if weighted else None
    # unweighted, MLPClassifier is called without the keyword it may not know
    mlp_kw = {"sample_weight": sw} if weighted else {}
    params = dict(
        hidden_layer_sizes=(5, 4),
        activation="tanh",
        solver="sgd",
        momentum=0.0,
        learning_rate_init=0.1,
        alpha=0.3,
        batch_size=60,
        shuffle=False,
        random_state=0,
        max_iter=1,
    )
    # the MLP's network: no input scaling, no dropout
    ours = CNNClassifier(
        conv_filters=(), input_scaling=None, dropout=0.0, **params
    ).fit(X, y, sample_weight=sw)
    mlp = MLPClassifier(**params).fit(X, y, **mlp_kw)
    for theirs, mine in zip(
        mlp.coefs_ + mlp.intercepts_, ours.coefs_ + ours.intercepts_
    ):
        theirs[...] = mine
    ours.partial_fit(X, y, sample_weight=sw)
    mlp.partial_fit(X, y, **mlp_kw)
    assert_allclose(ours.loss_, mlp.loss_, rtol=1e-10)
    for theirs, mine in zip(
        mlp.coefs_ + mlp.intercepts_, ours.coefs_ + ours.intercepts_
    ):
        assert_allclose(mine, theirs, rtol=1e-10, atol=1e-12)


def test_deterministic_and_picklable(images):
    X4, y = images
    a = CNNClassifier(**SMALL).fit(X4, y)
    b = CNNClassifier(**SMALL).fit(X4, y)
    assert_array_equal(a.predict_proba(X4), b.predict_proba(X4))
    c = pickle.loads(pickle.dumps(a))
    assert_array_equal(a.predict_proba(X4), c.predict_proba(X4))
    other = CNNClassifier(**dict(SMALL, random_state=1)).fit(X4, y)
    assert not np.array_equal(a.coefs_[0], other.coefs_[0])


def test_prediction_in_chunks_is_exact(images, monkeypatch):
    X4, y = images
    clf = CNNClassifier(**SMALL).fit(X4, y)
    whole = clf.predict_proba(X4)
    monkeypatch.setattr(engine, "PREDICT_CHUNK_VALUES", 100)
    assert_allclose(clf.predict_proba(X4), whole, rtol=1e-12)
    # subsets give the rows of the whole (batch invariance)
    assert_allclose(clf.predict_proba(X4[7:9]), whole[7:9], rtol=1e-12)


def test_caller_arrays_are_not_modified(images):
    X4, y = images
    for X in (X4, X4.astype(np.float32), X4.reshape(40, -1)):
        X_before = X.copy()
        y_obj = y.astype(str).astype(object)
        y_before = y_obj.copy()
        sw = np.linspace(0.5, 2, 40)
        sw_before = sw.copy()
        clf = CNNClassifier(**SMALL).fit(X, y_obj, sample_weight=sw)
        clf.partial_fit(X, y_obj, sample_weight=sw)
        clf.predict_proba(X)
        assert_array_equal(X, X_before)
        assert_array_equal(sw, sw_before)
        assert_array_equal(y_obj, y_before)


def test_coefs_are_the_live_parameters(images):
    X4, y = images
    clf = CNNClassifier(**SMALL).fit(X4, y)
    clf.coefs_[-1][...] = 0
    clf.intercepts_[-1][...] = [5.0, 0, 0]
    assert_array_equal(clf.predict(X4), 0)


@pytest.mark.parametrize("label", [3, "cat"])
def test_one_class_gives_one_probability_column(label, images):
    # predict_proba's columns are classes_ (a two-column binary output
    # for one class, as MLPClassifier gives, would not be)
    X, _ = images
    y = np.full(len(X), label, dtype=object if isinstance(label, str) else int)
    clf = CNNClassifier(**SMALL).fit(X, y)
    assert list(clf.classes_) == [label]
    assert_array_equal(clf.predict_proba(X[:4]), np.ones((4, 1)))
    assert_array_equal(clf.predict_log_proba(X[:4]), np.zeros((4, 1)))
    assert list(clf.predict(X[:4])) == [label] * 4
    assert clf.score(X, y) == 1.0


def test_multilabel_targets():
    X, Y = make_multilabel_classification(
        120, 16, n_classes=4, random_state=0, allow_unlabeled=False
    )
    clf = CNNClassifier(
        conv_filters=(4,),
        max_iter=60,
        batch_size=16,
        learning_rate_init=0.01,
        random_state=0,
    ).fit(X / X.max(), Y)
    assert clf.out_activation_ == "logistic" and clf.n_outputs_ == 4
    assert_array_equal(clf.classes_, np.arange(4))
    proba = clf.predict_proba(X / X.max())
    assert proba.shape == (120, 4) and ((proba >= 0) & (proba <= 1)).all()
    pred = clf.predict(X / X.max())
    assert_array_equal(pred, (proba > 0.5).astype(int))
    majority = np.maximum(Y.mean(axis=0), 1 - Y.mean(axis=0)).mean()
    assert (pred == Y).mean() > majority + 0.1  # per-label accuracy
    inc = CNNClassifier(conv_filters=(4,), max_iter=1, random_state=0)
    inc.partial_fit(X, Y, classes=np.arange(4)).partial_fit(X, Y)
    assert inc.n_outputs_ == 4 and len(inc.loss_curve_) == 2
