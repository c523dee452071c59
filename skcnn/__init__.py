"""skcnn: a convolutional neural network classifier for scikit-learn, in NumPy."""

from ._classifier import CNNClassifier

__version__ = "0.1.0"
__all__ = ["CNNClassifier", "__version__"]
