"""skcnn: a convolutional neural network classifier for scikit-learn, in NumPy."""

from ._classifier import CNNClassifier
from ._persistence import load

__version__ = "0.1.0"
__all__ = ["CNNClassifier", "load", "__version__"]
