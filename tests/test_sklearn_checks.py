"""scikit-learn's own estimator checks, on the default estimator."""

import pytest
from sklearn.utils import estimator_checks
from sklearn.utils.estimator_checks import parametrize_with_checks

from skcnn import CNNClassifier


# No expected_failed_checks: every check must pass with the defaults.
@parametrize_with_checks([CNNClassifier()])
def test_sklearn_compatible_estimator(estimator, check):
    check(estimator)


@pytest.mark.parametrize("seed", range(1, 6))
def test_defaults_train_robustly_across_seeds(seed, monkeypatch):
    # check_classifiers_train (> 0.83 training accuracy on 300 two-feature
    # points) pins random_state=0; the defaults must not pass by that luck.
    monkeypatch.setattr(
        estimator_checks,
        "set_random_state",
        lambda est, random_state=0: est.set_params(random_state=seed),
    )
    estimator_checks.check_classifiers_train("CNNClassifier", CNNClassifier())
    estimator_checks.check_classifiers_classes("CNNClassifier", CNNClassifier())
