"""CNNClassifier inside scikit-learn's tools: pipelines, search, CV, clone."""

import numpy as np
from numpy.testing import assert_array_equal
from sklearn.base import clone
from sklearn.datasets import load_digits
from sklearn.model_selection import GridSearchCV, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import MinMaxScaler

from skcnn import CNNClassifier

FAST = dict(
    conv_filters=(4,),
    hidden_layer_sizes=(16,),
    max_iter=8,
    batch_size=32,
    random_state=0,
)


def _digits(n=300):
    X, y = load_digits(return_X_y=True)
    return X[:n], y[:n]


def test_pipeline_with_scaler():
    X, y = _digits()
    pipe = make_pipeline(MinMaxScaler(), CNNClassifier(**FAST, learning_rate_init=0.01))
    pipe.fit(X, y)
    assert pipe[-1].image_shape_ == (8, 8, 1)
    assert pipe.score(X, y) > 0.8
    assert pipe.predict_proba(X).shape == (300, 10)


def test_grid_search_in_parallel():
    X, y = _digits()
    search = GridSearchCV(
        CNNClassifier(**FAST),
        {"learning_rate_init": [1e-3, 1e-2], "pool_size": [1, 2]},
        cv=2,
        n_jobs=2,
    )
    search.fit(X / 16, y)
    assert len(search.cv_results_["params"]) == 4
    assert search.best_params_["learning_rate_init"] == 1e-2
    assert search.best_estimator_.n_features_in_ == 64


def test_cross_val_score():
    X, y = _digits()
    scores = cross_val_score(CNNClassifier(**FAST, learning_rate_init=0.01), X / 16, y)
    assert scores.shape == (5,)
    assert scores.mean() > 0.7


def test_clone_gives_an_unfitted_equal_estimator():
    X, y = _digits(100)
    clf = CNNClassifier(**FAST).fit(X / 16, y)
    twin = clone(clf)
    assert not hasattr(twin, "coefs_")
    assert twin.get_params() == clf.get_params()
    assert_array_equal(twin.fit(X / 16, y).predict(X / 16), clf.predict(X / 16))
    assert np.array_equal(twin.coefs_[0], clf.coefs_[0])
