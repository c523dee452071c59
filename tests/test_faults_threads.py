"""Thread faults (issue #10, faults 6-7): races and thread-dependent results.

The images are large enough that fits and predictions are split into
several parts with the package's own thresholds, so the threaded paths run.
"""

import threading

import joblib
import numpy as np
import pytest
from numpy.testing import assert_array_equal
from sklearn.model_selection import GridSearchCV
from threadpoolctl import threadpool_limits

import skcnn._parallel as parallel
from skcnn import CNNClassifier

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")

SHAPE = (16, 16, 3)
PARAMS = dict(
    image_shape=SHAPE,
    conv_filters=(8,),
    hidden_layer_sizes=(16,),
    batch_size=128,
    max_iter=2,
    random_state=0,
)


def _data(n, seed=0):
    rng = np.random.RandomState(seed)
    X = rng.uniform(size=(n, int(np.prod(SHAPE)))).astype(np.float32)
    y = (X[:, :48].mean(axis=1) > 0.5).astype(int) + (X[:, -48:].mean(axis=1) > 0.5)
    return X, y


X_TRAIN, Y_TRAIN = _data(300)
X_TEST, _ = _data(600, seed=1)


def _assert_same_model(a, b):
    assert a.loss_curve_ == b.loss_curve_
    for u, v in zip(a.coefs_ + a.intercepts_, b.coefs_ + b.intercepts_):
        assert_array_equal(u, v)


@pytest.fixture(scope="module")
def fitted():
    return CNNClassifier(**PARAMS).fit(X_TRAIN, Y_TRAIN)


def test_map_parts_from_many_threads_with_varying_widths(monkeypatch):
    # Fault 6: the shared pool was shut down and replaced when a wider call
    # came, under threads about to submit to it ("cannot schedule new futures
    # after shutdown"). Each round starts from no pool, as a fresh process
    # does, with 12 threads whose widths grow.
    n_threads, n_rows = 12, 100
    data = np.arange(n_rows)
    for _ in range(30):
        monkeypatch.setattr(parallel, "_pool", None)
        barrier = threading.Barrier(n_threads)
        failures = []

        def call(k, barrier=barrier, failures=failures):
            barrier.wait()
            try:
                for step in range(2, 17):
                    width = 2 + (step + k) % 15
                    sums = parallel.map_parts(lambda s: data[s].sum(), n_rows, width)
                    if len(sums) != width or sum(sums) != data.sum():
                        failures.append(("wrong result", width, sums))
            except Exception as exc:  # noqa: BLE001 -- reported below
                failures.append(repr(exc))

        threads = [threading.Thread(target=call, args=(k,)) for k in range(n_threads)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not failures, failures[:3]


def test_predictions_under_concurrent_fits_match_lone_calls(fitted):
    # Fault 7: a concurrent fit pins BLAS to one thread, which changed how
    # many parts a prediction was split into, and so its last bits.
    blas_before = parallel.blas_threads()
    sizes = [1, 7, 300, len(X_TEST)]
    alone = {n: fitted.predict_proba(X_TEST[:n]) for n in sizes}
    fits_alone = [
        CNNClassifier(**{**PARAMS, "random_state": seed}).fit(X_TRAIN, Y_TRAIN)
        for seed in (1, 2, 3)
    ]
    fitting = threading.Event()
    fitting.set()
    barrier = threading.Barrier(11)
    errors, mismatches, fits = [], [], {}

    def predict():
        barrier.wait()
        try:
            rounds = 0
            while fitting.is_set() or rounds < 2:
                for n in sizes:
                    if not np.array_equal(fitted.predict_proba(X_TEST[:n]), alone[n]):
                        mismatches.append(n)
                rounds += 1
        except Exception as exc:  # noqa: BLE001 -- reported below
            errors.append(repr(exc))

    def fit(seed):
        barrier.wait()
        try:
            clf = CNNClassifier(**{**PARAMS, "random_state": seed})
            fits[seed] = clf.fit(X_TRAIN, Y_TRAIN)
        except Exception as exc:  # noqa: BLE001 -- reported below
            errors.append(repr(exc))

    predictors = [threading.Thread(target=predict) for _ in range(8)]
    fitters = [threading.Thread(target=fit, args=(seed,)) for seed in (1, 2, 3)]
    for t in predictors + fitters:
        t.start()
    for t in fitters:
        t.join()
    fitting.clear()
    for t in predictors:
        t.join()
    assert not errors, errors[:3]
    assert not mismatches, sorted(set(mismatches))
    for seed, lone in zip((1, 2, 3), fits_alone):
        _assert_same_model(fits[seed], lone)
    assert parallel.blas_threads() == blas_before  # the BLAS limit was restored


def test_results_do_not_depend_on_the_blas_limit(fitted):
    # Fault 7: the number of parts followed the BLAS thread limit.
    default = fitted.predict_proba(X_TEST)
    with threadpool_limits(1):
        one = fitted.predict_proba(X_TEST)
        fit_one = CNNClassifier(**PARAMS).fit(X_TRAIN, Y_TRAIN)
    with threadpool_limits(2):
        two = fitted.predict_proba(X_TEST)
    assert_array_equal(one, default)
    assert_array_equal(two, default)
    _assert_same_model(fit_one, fitted)


def test_grid_search_scores_do_not_depend_on_the_backend():
    # log-loss, not accuracy: it shows a difference in the last bits
    def scores(n_jobs, backend=None):
        search = GridSearchCV(
            CNNClassifier(**PARAMS),
            {"learning_rate_init": [1e-3, 1e-2]},
            cv=2,
            scoring="neg_log_loss",
            n_jobs=n_jobs,
        )
        if backend is None:
            search.fit(X_TRAIN, Y_TRAIN)
        else:
            with joblib.parallel_backend(backend, n_jobs=n_jobs):
                search.fit(X_TRAIN, Y_TRAIN)
        return search.cv_results_["mean_test_score"]

    sequential = scores(1)
    assert np.isfinite(sequential).all()
    assert_array_equal(scores(4, "threading"), sequential)
    assert_array_equal(scores(2, "loky"), sequential)
