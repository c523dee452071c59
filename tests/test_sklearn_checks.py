"""scikit-learn's own estimator checks, on the default estimator."""

from sklearn.utils.estimator_checks import parametrize_with_checks

from skcnn import CNNClassifier


# No expected_failed_checks: every check must pass with the defaults.
@parametrize_with_checks([CNNClassifier()])
def test_sklearn_compatible_estimator(estimator, check):
    check(estimator)
