"""save / load without pickle, and skops."""

import errno
import json
import os
import pickle
import sys
import zipfile

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
    with pytest.raises(ValueError, match="format 99.*reads format 2"):
        skcnn.load(saved)


def test_tampered_weights(saved):
    def change(meta, arrays):
        arrays["coefs_1"] = arrays["coefs_1"][:-1]

    _rewrite(saved, change)
    with pytest.raises(ValueError, match="corrupt or tampered"):
        skcnn.load(saved)


@pytest.mark.parametrize(
    "params",
    [dict(batch_norm=True), dict(batch_norm=True, conv_filters=(3,))],
    ids=["batch norm without its arrays", "and its arrays' shapes"],
)
def test_tampered_batch_norm(saved, images, params):
    def change(meta, arrays):
        meta["params"].update(params)
        if "conv_filters" in params:  # all three arrays, but for 2 filters
            for name in ("scales", "means", "vars"):
                meta["arrays"][f"batch_norm_{name}_"] = 1
                arrays[f"batch_norm_{name}_0"] = np.ones(2)

    _rewrite(saved, change)
    # refused at load, not a TypeError deep in the first predict
    with pytest.raises(ValueError, match="corrupt or tampered.*batch_norm"):
        skcnn.load(saved)


def test_save_writes_the_fitted_architecture(images, tmp_path):
    # set_params takes effect at the next fit: a model saved before it is
    # the fitted one, and loads as such
    X, y = images
    est = CNNClassifier(**BASE).fit(X, y)
    est.set_params(conv_filters=(5,), batch_norm=True, learning_rate_init=0.5)
    est.save(tmp_path / "model.npz")
    loaded = skcnn.load(tmp_path / "model.npz")
    assert loaded.conv_filters == (3,) and loaded.batch_norm is False
    assert loaded.learning_rate_init == 0.5  # not part of the model: as set
    assert_array_equal(loaded.predict_proba(X), est.predict_proba(X))
    # and it continues as the fitted network
    loaded.partial_fit(X, y)


def test_a_model_pickled_before_it_kept_its_parameters(images, tmp_path):
    # pickles made before the model kept the parameters it was built from
    # (no _fitted_params): those parameters built it
    X, y = images
    est = CNNClassifier(**BASE).fit(X, y)
    expected = est.predict_proba(X)
    del est._fitted_params
    old = pickle.loads(pickle.dumps(est))
    assert old._fitted_params["conv_filters"] == (3,)
    assert_array_equal(old.predict_proba(X), expected)
    old.save(tmp_path / "model.npz")
    old.partial_fit(X, y)


def test_truncated_file(saved):
    data = saved.read_bytes()
    saved.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="not a readable skcnn model"):
        skcnn.load(saved)


def _write_other_npz(path):
    np.savez(path, weights=np.ones(3))


def _write_object_npz(path):
    np.savez(path, a=np.array([{"x": 1}], dtype=object))  # pickled inside


def _write_zip(path):
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("notes.txt", "not arrays")


def _write_random_bytes(path):
    path.write_bytes(np.random.default_rng(0).bytes(300))


def _write_pickle(path):
    path.write_bytes(pickle.dumps({"coefs_": [1.0]}))


@pytest.mark.parametrize(
    "write",
    [
        _write_other_npz,
        _write_object_npz,
        _write_zip,
        _write_random_bytes,
        _write_pickle,
        lambda path: path.write_bytes(b""),
    ],
    ids=["other npz", "object npz", "zip", "random bytes", "pickle", "empty"],
)
def test_other_file_is_not_a_model(write, tmp_path):
    path = tmp_path / "other.npz"
    write(path)
    with pytest.raises(ValueError, match="is not an skcnn model file") as info:
        skcnn.load(path)
    assert str(path) in str(info.value)
    # never an invitation to turn pickle on for a file of unknown origin
    assert "allow_pickle" not in str(info.value)


def test_missing_file(tmp_path):
    path = tmp_path / "missing.npz"
    with pytest.raises(FileNotFoundError, match="missing.npz"):
        skcnn.load(path)
    with pytest.raises(FileNotFoundError):
        skcnn.load(str(path))


def test_folder_is_not_a_file(tmp_path):
    (tmp_path / "model.npz").mkdir()
    # IsADirectoryError on POSIX, PermissionError on Windows
    with pytest.raises(OSError, match="model.npz"):
        skcnn.load(tmp_path / "model.npz")


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
    with pytest.raises(ValueError, match="not a readable skcnn model") as info:
        skcnn.load(saved)
    assert "coefs_0" in str(info.value)
    assert "allow_pickle" not in str(info.value)


def test_save_requires_a_fitted_model(tmp_path):
    from sklearn.exceptions import NotFittedError

    with pytest.raises(NotFittedError):
        CNNClassifier().save(tmp_path / "x.npz")
    existing = tmp_path / "model.npz"
    existing.write_bytes(b"the previous model")
    with pytest.raises(NotFittedError):
        CNNClassifier().save(existing)
    assert existing.read_bytes() == b"the previous model"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.npz"]


@pytest.mark.parametrize(
    "name", ["model", "model.skcnn", "model.npz", "model.npz.bak", ".model"]
)
@pytest.mark.parametrize("kind", [str, os.fspath, lambda p: p])
def test_save_writes_exactly_the_path(name, kind, images, tmp_path):
    X, y = images
    est = CNNClassifier(**BASE).fit(X, y)
    path = kind(tmp_path / name)
    est.save(path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]
    assert_array_equal(skcnn.load(path).predict_proba(X), est.predict_proba(X))


def test_save_overwrites(saved, images):
    X, y = images
    est = CNNClassifier(**{**BASE, "conv_filters": (2,)}).fit(X, y)
    est.save(saved)
    assert skcnn.load(saved).coefs_[0].shape == est.coefs_[0].shape
    assert [p.name for p in saved.parent.iterdir()] == [saved.name]


def _fail_on_second_array(error):
    write_array = np.lib.format.write_array
    calls = []

    def failing(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:  # the archive is half written
            raise error
        return write_array(*args, **kwargs)

    return failing


def _raise(error):
    def fail(*args, **kwargs):
        raise error

    return fail


@pytest.mark.parametrize(
    "error",
    [OSError(errno.ENOSPC, "No space left on device"), KeyboardInterrupt()],
    ids=["disk full", "Ctrl-C"],
)
@pytest.mark.parametrize("where", ["mid-archive", "at fsync", "at rename"])
def test_failed_save_keeps_the_old_file(error, where, saved, images, monkeypatch):
    X, y = images
    before = saved.read_bytes()
    est = CNNClassifier(**{**BASE, "conv_filters": (2,)}).fit(X, y)
    if where == "mid-archive":
        monkeypatch.setattr(np.lib.format, "write_array", _fail_on_second_array(error))
    else:
        monkeypatch.setattr(
            os, {"at fsync": "fsync", "at rename": "replace"}[where], _raise(error)
        )
    with pytest.raises(type(error)):
        est.save(saved)
    monkeypatch.undo()
    assert saved.read_bytes() == before
    assert [p.name for p in saved.parent.iterdir()] == [saved.name]  # no temp
    assert skcnn.load(saved).coefs_[0].shape[-1] == 3


@pytest.mark.skipif(os.name != "posix", reason="POSIX permission bits")
@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_new_file_gets_the_default_permissions(umask, images, tmp_path):
    X, y = images
    est = CNNClassifier(**BASE).fit(X, y)
    old = os.umask(umask)
    try:
        est.save(tmp_path / "model.npz")
    finally:
        os.umask(old)
    assert (tmp_path / "model.npz").stat().st_mode & 0o777 == 0o666 & ~umask


@pytest.mark.skipif(os.name != "posix", reason="POSIX permission bits")
def test_overwritten_file_keeps_its_permissions(saved, images):
    X, y = images
    saved.chmod(0o640)
    CNNClassifier(**BASE).fit(X, y).save(saved)
    assert saved.stat().st_mode & 0o777 == 0o640


@pytest.mark.skipif(sys.platform == "win32", reason="symlinks need privileges")
def test_save_through_a_symlink(saved, images, tmp_path):
    X, y = images
    link = tmp_path / "link.npz"
    link.symlink_to(saved)
    est = CNNClassifier(**{**BASE, "conv_filters": (2,)}).fit(X, y)
    est.save(link)
    assert link.is_symlink()  # the link is kept, its target rewritten
    assert skcnn.load(saved).coefs_[0].shape[-1] == 2


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
