"""save / load without pickle, and skops."""

import json
import pickle

import numpy as np
import pytest
from numpy.testing import assert_array_equal
from sklearn.datasets import make_multilabel_classification

import skcnn
from skcnn import CNNClassifier

BASE = dict(conv_filters=(3,), hidden_layer_sizes=(6,), max_iter=3, random_state=0)


def _configs(images):
    X, y = images
    labels = np.array(["cat", "dog", "owl"])[y]
    Xml, Yml = make_multilabel_classification(30, 16, n_classes=3, random_state=0)
    return {
        "multiclass float64": (CNNClassifier(**BASE), X, y),
        "string labels float32": (CNNClassifier(**BASE), X.astype(np.float32), labels),
        "binary": (CNNClassifier(**BASE), X, y > 0),
        "multilabel": (CNNClassifier(**BASE), Xml / Xml.max(), Yml),
        "batch norm, same, strides": (
            CNNClassifier(**BASE, batch_norm=True, padding="same", strides=(2,)),
            X,
            y,
        ),
        "class weight, global pooling": (
            CNNClassifier(**BASE, class_weight={0: 2.0, 1: 1.0}, global_pooling=True),
            X,
            y,
        ),
    }


@pytest.mark.parametrize(
    "name",
    [
        "multiclass float64",
        "string labels float32",
        "binary",
        "multilabel",
        "batch norm, same, strides",
        "class weight, global pooling",
    ],
)
def test_round_trip_gives_identical_predictions(name, images, tmp_path):
    est, X, y = _configs(images)[name]
    est.fit(X, y)
    path = tmp_path / "model.npz"
    est.save(path)
    loaded = skcnn.load(path)
    assert type(loaded) is CNNClassifier
    assert loaded.get_params() == est.get_params()
    assert_array_equal(loaded.predict_proba(X), est.predict_proba(X))
    assert_array_equal(loaded.predict(X), est.predict(X))
    assert_array_equal(loaded.classes_, est.classes_)
    assert loaded.coefs_[0].dtype == est.coefs_[0].dtype
    for attr in ("image_shape_", "loss_curve_", "n_iter_", "t_", "history_"):
        assert getattr(loaded, attr) == getattr(est, attr)
    loaded.partial_fit(X, y)  # training can go on (a fresh optimizer)
    assert len(loaded.loss_curve_) == len(est.loss_curve_) + 1


def test_feature_names_survive(tmp_path, images):
    pd = pytest.importorskip("pandas")
    X, y = images
    df = pd.DataFrame(X.reshape(40, -1), columns=[f"px{i}" for i in range(60)])
    est = CNNClassifier(**BASE, image_shape=(6, 5, 2)).fit(df, y)
    est.save(tmp_path / "m.npz")
    loaded = skcnn.load(tmp_path / "m.npz")
    assert_array_equal(loaded.feature_names_in_, est.feature_names_in_)
    assert_array_equal(loaded.predict(df), est.predict(df))


def _rewrite(path, change):
    with np.load(path, allow_pickle=False) as data:
        contents = {k: data[k] for k in data.files}
    meta = json.loads(str(contents["__meta__"]))
    change(meta, contents)
    contents["__meta__"] = np.array(json.dumps(meta))
    np.savez(path, **contents)


@pytest.fixture
def saved(images, tmp_path):
    X, y = images
    path = tmp_path / "model.npz"
    CNNClassifier(**BASE).fit(X, y).save(path)
    return path


def test_incompatible_version(saved):
    _rewrite(saved, lambda meta, arrays: meta.update(format_version=99))
    with pytest.raises(ValueError, match="format 99.*reads format 1"):
        skcnn.load(saved)


def test_tampered_weights(saved):
    def change(meta, arrays):
        arrays["coefs_1"] = arrays["coefs_1"][:-1]

    _rewrite(saved, change)
    with pytest.raises(ValueError, match="corrupt or tampered"):
        skcnn.load(saved)


def test_truncated_file(saved):
    data = saved.read_bytes()
    saved.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="not a readable skcnn model"):
        skcnn.load(saved)


def test_other_npz_is_rejected(tmp_path):
    path = tmp_path / "other.npz"
    np.savez(path, weights=np.ones(3))
    with pytest.raises(ValueError, match="not a readable skcnn model"):
        skcnn.load(path)


def test_loading_never_unpickles(saved, tmp_path):
    # an object array needs pickle: load must refuse it, not execute it
    class Boom:
        def __reduce__(self):
            return (exec, ("raise SystemExit('code ran')",))

    def change(meta, arrays):
        arrays["coefs_0"] = np.array([Boom()], dtype=object)

    with np.load(saved, allow_pickle=False) as data:
        contents = {k: data[k] for k in data.files}
    change(None, contents)
    np.savez(saved, **contents)  # np.savez pickles the object array
    with pytest.raises(ValueError, match="not a readable skcnn model"):
        skcnn.load(saved)


def test_save_requires_a_fitted_model(tmp_path):
    from sklearn.exceptions import NotFittedError

    with pytest.raises(NotFittedError):
        CNNClassifier().save(tmp_path / "x.npz")


def test_skops_with_explicit_trusted_types(images, tmp_path):
    sio = pytest.importorskip("skops.io")
    X, y = images
    est = CNNClassifier(**BASE).fit(X, y)
    path = tmp_path / "model.skops"
    sio.dump(est, path)
    untrusted = sio.get_untrusted_types(file=path)
    # everything skops does not know by default is ours (or its helpers):
    # the list is reviewed, not blindly trusted
    assert all(t.startswith(("skcnn.", "sklearn.", "numpy.")) for t in untrusted)
    loaded = sio.load(path, trusted=untrusted)
    assert_array_equal(loaded.predict_proba(X), est.predict_proba(X))
    assert pickle.loads(pickle.dumps(loaded)).n_iter_ == est.n_iter_
