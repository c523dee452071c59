"""scikit-learn's own estimator checks, on the default estimator."""

import pytest
from sklearn.utils import estimator_checks

from skcnn import CNNClassifier, CNNRegressor


def parametrize_with_checks(estimators, **kwargs):
    """sklearn's ``parametrize_with_checks``, its cases as a list: the
    minimum version (1.6) passes pytest a generator, which pytest deprecates
    (an error from pytest 10 on, in the minimum-versions suite)."""
    mark = estimator_checks.parametrize_with_checks(estimators, **kwargs)
    names, cases = mark.args
    return pytest.mark.parametrize(names, list(cases), **mark.kwargs)


# No expected_failed_checks: every check must pass with the defaults.
@parametrize_with_checks([CNNClassifier(), CNNRegressor()])
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
    # check_regressors_train: R^2 > 0.5 on 200 points of 10 features
    estimator_checks.check_regressors_train("CNNRegressor", CNNRegressor())
    estimator_checks.check_regressor_multioutput("CNNRegressor", CNNRegressor())


# The same checks on the non-default training features: they must not
# break any part of the estimator contract either.
@parametrize_with_checks(
    [
        CNNClassifier(solver="adamw", learning_rate="cosine", global_pooling=True),
        CNNClassifier(strides=2, padding="same", pooling="avg", kernel_size=(2, 3)),
    ]
)
def test_sklearn_compatible_with_features(estimator, check):
    check(estimator)


# Batch normalization uses the batch's unweighted statistics, so for it (as
# in Keras or PyTorch) an integer sample weight is not the same as repeating
# the sample. Every other check must pass. (Dropout passes them all: a
# sample's masks are a hash of its values, so a repeated row gets the same
# ones; the default has dropout.)
STOCHASTIC_WEIGHTING = {
    "check_sample_weight_equivalence_on_dense_data": (
        "batch statistics are per sample, not per weight"
    )
}


@parametrize_with_checks(
    [CNNClassifier(batch_norm=True)],
    expected_failed_checks=lambda est: STOCHASTIC_WEIGHTING,
)
def test_sklearn_compatible_with_batch_norm(estimator, check):
    check(estimator)


@parametrize_with_checks([CNNClassifier(dropout=0.5), CNNRegressor(dropout=0.5)])
def test_sklearn_compatible_with_more_dropout(estimator, check):
    check(estimator)
