"""Hyperparameter search on a Dask cluster through joblib (extra: dask)."""

import numpy as np
import pytest
from sklearn.datasets import load_digits
from sklearn.model_selection import GridSearchCV

from skcnn import CNNClassifier

distributed = pytest.importorskip("distributed")
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
