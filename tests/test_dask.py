"""Dask (extra: dask): hyperparameter search on a cluster through joblib, and
predicting a dask array block by block with skcnn.dask.predict_blocks."""

import os
import pickle
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal
from sklearn.datasets import load_digits
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import MinMaxScaler

import skcnn
from skcnn import CNNClassifier, CNNRegressor
from skcnn.dask import predict_blocks

distributed = pytest.importorskip("distributed")
da = pytest.importorskip("dask.array")
# joblib.parallel_config, as the README shows it, is new in joblib 1.3
joblib = pytest.importorskip("joblib", minversion="1.3")


@pytest.mark.slow
def test_grid_search_on_a_local_dask_cluster():
    X, y = load_digits(return_X_y=True)
    X, y = X[:300] / 16, y[:300]
    search = GridSearchCV(
        CNNClassifier(conv_filters=(4,), max_iter=3, batch_size=32, random_state=0),
        {"learning_rate_init": [1e-3, 1e-2], "dropout": [0.0, 0.2]},
        cv=2,
        n_jobs=-1,
    )
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        distributed.Client(cluster) as client,
        joblib.parallel_config(backend="dask"),
        distributed.get_task_stream(client) as tasks,
    ):
        search.fit(X, y)
    # the fits ran as tasks on the cluster's worker processes
    assert len({task["worker"] for task in tasks.data}) == 2
    local = GridSearchCV(
        CNNClassifier(conv_filters=(4,), max_iter=3, batch_size=32, random_state=0),
        {"learning_rate_init": [1e-3, 1e-2], "dropout": [0.0, 0.2]},
        cv=2,
    ).fit(X, y)
    # same seeds, same data: the cluster finds exactly the sequential results
    np.testing.assert_allclose(
        search.cv_results_["mean_test_score"], local.cv_results_["mean_test_score"]
    )
    assert search.best_params_ == local.best_params_


# --- predict_blocks ----------------------------------------------------------


@pytest.fixture(scope="module")
def model():
    """A float32 CNN fitted on the digits as (n, 8, 8, 1) images, and them."""
    X, y = load_digits(return_X_y=True)
    X = (X / 16).astype(np.float32).reshape(-1, 8, 8, 1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf = CNNClassifier(conv_filters=(4,), max_iter=3, random_state=0).fit(X, y)
    return clf, X


@pytest.fixture(scope="module")
def client():
    """One cluster for the module: two worker processes, one thread each.

    Not the default scheduler: the tests compute on it explicitly, and the
    grid search above keeps its own cluster.
    """
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        distributed.Client(cluster, set_as_default=False) as client,
    ):
        yield client


def per_block(method, X, rows):
    """``method`` applied in memory to each block of ``rows`` rows of X."""
    bounds = np.cumsum((0, *rows))
    return np.concatenate([method(X[a:b]) for a, b in zip(bounds[:-1], bounds[1:])])


@pytest.mark.slow
def test_cluster_workers_are_other_processes_running_this_skcnn(client):
    # else the tests below would not test what they claim
    pids = client.run(os.getpid)
    assert len(pids) == 2 and os.getpid() not in pids.values()
    files = client.run(lambda: __import__("skcnn").__file__)
    assert set(files.values()) == {skcnn.__file__}


@pytest.mark.slow
@pytest.mark.parametrize("rows", [(1797,), (1000, 1, 600, 196)], ids=["1", "4"])
@pytest.mark.parametrize("layout", ["images", "flat"])
def test_cluster_predicts_each_block_as_in_memory(client, model, rows, layout):
    clf, X = model
    if layout == "flat":
        X = X.reshape(len(X), -1)
    proba = predict_blocks(
        clf, da.from_array(X, chunks=(rows, *X.shape[1:])), method="predict_proba"
    )
    with distributed.get_task_stream(client) as tasks:
        # unoptimized, so that no block's task is fused away under another key
        result = client.compute(proba, optimize_graph=False).result()
    # one task per block, each run by a worker process of the cluster
    ran = [task for task in tasks.data if task["key"][0] == proba.name]
    assert len(ran) == len(rows)
    assert {task["worker"] for task in ran} <= set(client.scheduler_info()["workers"])
    # each block has the very bits predict_proba gives it in memory: one
    # block gives those of the whole array ...
    assert result.dtype == np.float32
    assert_array_equal(result, per_block(clf.predict_proba, X, rows))
    if len(rows) == 1:
        assert_array_equal(result, clf.predict_proba(X))
    # ... and blocks of other sizes the whole array's up to float32 rounding
    # (BLAS rounds a row by its position in the block, see predict_blocks)
    assert_allclose(result, clf.predict_proba(X), rtol=0, atol=1e-6)


@pytest.mark.parametrize("method", ["predict", "predict_proba", "transform"])
@pytest.mark.parametrize(
    "layout, chunks",
    [("images", (500, 4, 8, 1)), ("flat", (700, 40))],
)
def test_methods_shapes_and_dtypes(model, method, layout, chunks):
    clf, X = model
    if layout == "flat":
        X = X.reshape(len(X), -1)
    # chunks along the pixels too: predict_blocks must merge them into
    # whole samples, or the blocks would be fragments of images
    X_dask = da.from_array(X, chunks=chunks)
    result = predict_blocks(clf, X_dask, method=method)
    expected = per_block(getattr(clf, method), X, X_dask.chunks[0])
    assert result.chunks[0] == X_dask.chunks[0]
    assert result.shape == expected.shape and result.dtype == expected.dtype
    assert_array_equal(result.compute(scheduler="sync"), expected)


def test_multi_output_regressor_and_pipeline(model):
    _, X = model
    rows = X.reshape(len(X), -1)[:400]
    targets = np.column_stack([rows[:, :32].mean(1), rows[:, 32:].mean(1)])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        reg = CNNRegressor(
            image_shape=(8, 8), conv_filters=(2,), max_iter=2, random_state=0
        ).fit(rows, targets)
        pipe = make_pipeline(
            MinMaxScaler(),
            CNNClassifier(image_shape=(8, 8), conv_filters=(2,), max_iter=2),
        ).fit(rows, targets[:, 0] > np.median(targets[:, 0]))
    X_dask = da.from_array(rows, chunks=(150, 64))
    for est, method, shape in [
        (reg, "predict", (400, 2)),
        (pipe, "predict_proba", (400, 2)),
        (pipe, "predict", (400,)),
    ]:
        result = predict_blocks(est, X_dask, method=method).compute(scheduler="sync")
        assert result.shape == shape
        expected = per_block(getattr(est, method), rows, X_dask.chunks[0])
        assert_array_equal(result, expected)


def test_blocks_of_unknown_size_and_empty_blocks(model):
    clf, X = model
    keep = np.arange(len(X)) >= 600  # removes all of the first block
    X_dask = da.from_array(X, chunks=(500, 8, 8, 1))
    filtered = X_dask[da.from_array(keep, chunks=500)]
    assert np.isnan(filtered.shape[0])
    result = predict_blocks(clf, filtered, method="predict_proba")
    assert_array_equal(
        result.compute(scheduler="sync"),
        per_block(clf.predict_proba, X[keep], (400, 500, 297)),
    )


def test_the_estimator_enters_the_graph_once(model):
    clf, X = model
    X_dask = da.from_array(X, chunks=(300, 8, 8, 1))  # 6 blocks
    model_size = len(pickle.dumps(clf))

    def tasks_holding_the_model(result):
        # each task as the scheduler serializes it for a worker
        graph = dict(result.__dask_graph__())
        added = graph.keys() - dict(X_dask.__dask_graph__()).keys()
        return [key for key in added if len(pickle.dumps(graph[key])) > model_size]

    assert len(tasks_holding_the_model(predict_blocks(clf, X_dask))) == 1
    # what it spares: a bound method is serialized into every block's task
    naive = X_dask.map_blocks(clf.predict, drop_axis=[1, 2, 3], dtype=np.int64)
    assert len(tasks_holding_the_model(naive)) == 6


def test_invalid_arguments(model):
    clf, X = model
    with pytest.raises(TypeError, match="dask array"):
        predict_blocks(clf, X)
    X_dask = da.from_array(X, chunks=(500, 8, 8, 1))
    with pytest.raises(ValueError, match="method must be one of"):
        predict_blocks(clf, X_dask, method="fit")
    with pytest.raises(AttributeError, match="decision_function"):
        predict_blocks(clf, X_dask, method="decision_function")
    with pytest.raises(ValueError, match="1-D"):
        predict_blocks(clf, X_dask[:, 0, 0, 0])


def test_missing_dask_is_a_clear_import_error(model, monkeypatch):
    clf, X = model
    monkeypatch.setitem(sys.modules, "dask", None)  # import dask then fails
    with pytest.raises(ImportError, match=r"skcnn\[dask\]"):
        predict_blocks(clf, X)


@pytest.mark.slow  # a fresh interpreter importing scikit-learn: seconds
def test_importing_skcnn_does_not_import_dask():
    code = (
        "import sys, skcnn, skcnn.dask; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'dask'))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=Path(skcnn.__file__).parents[1],  # this skcnn, not an installed one
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert out.strip() == "[]"
