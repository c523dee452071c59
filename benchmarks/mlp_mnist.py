"""MLPClassifier with its defaults on the same MNIST data as examples/mnist.py.

The README's comparison row for scikit-learn's own neural network.
"""

import runpy
import time
from pathlib import Path

from sklearn.neural_network import MLPClassifier

load_mnist = runpy.run_path(
    str(Path(__file__).resolve().parents[1] / "examples" / "mnist.py")
)["load_mnist"]

X_train, y_train, X_test, y_test = load_mnist()
clf = MLPClassifier(random_state=0)
start = time.perf_counter()
clf.fit(X_train, y_train)
seconds = time.perf_counter() - start
accuracy = clf.score(X_test, y_test)
print(f"MLPClassifier(): test accuracy {accuracy:.4f}", end=", ")
print(f"{clf.n_iter_} epochs, {seconds:.0f} s")
