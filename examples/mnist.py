"""The reference network on MNIST with the default parameters.

Run:  python examples/mnist.py

Data: ../shared/data/mnist.npz next to the project when present, else
scikit-learn's fetch_openml("mnist_784") (a download). Pixels are scaled to
[0, 1] as float32 and passed as flat rows; nothing else is done to them.
"""

import time
from pathlib import Path

import numpy as np

from skcnn import CNNClassifier

LOCAL = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "mnist.npz"


def load_mnist():
    if LOCAL.exists():
        d = np.load(LOCAL)
        X_train, y_train, X_test, y_test = (
            d["x_train"],
            d["y_train"],
            d["x_test"],
            d["y_test"],
        )
    else:
        from sklearn.datasets import fetch_openml

        X, y = fetch_openml("mnist_784", return_X_y=True, as_frame=False)
        X_train, X_test, y_train, y_test = X[:60000], X[60000:], y[:60000], y[60000:]
    flat = [a.reshape(len(a), -1).astype(np.float32) / 255 for a in (X_train, X_test)]
    return flat[0], np.asarray(y_train), flat[1], np.asarray(y_test)


def main():
    X_train, y_train, X_test, y_test = load_mnist()
    clf = CNNClassifier(random_state=0)
    start = time.perf_counter()
    clf.fit(X_train, y_train)
    seconds = time.perf_counter() - start
    accuracy = clf.score(X_test, y_test)
    print(f"test accuracy : {accuracy:.4f}")
    print(f"epochs        : {clf.n_iter_}")
    rate = len(X_train) * clf.n_iter_ / seconds
    print(f"fit time      : {seconds:.0f} s ({rate:.0f} training img/s)")
    return accuracy


if __name__ == "__main__":
    main()
