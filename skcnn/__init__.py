"""skcnn: convolutional neural networks for scikit-learn, in NumPy."""

from ._classifier import CNNClassifier
from ._persistence import load
from ._regressor import CNNRegressor

__version__ = "0.1.0"
__all__ = ["CNNClassifier", "CNNRegressor", "load", "__version__"]
