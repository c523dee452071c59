"""Classify scikit-learn's built-in 8x8 digits with a CNN (no download).

Run:  python examples/digits.py
"""

import time

import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from skcnn import CNNClassifier


def main():
    X, y = load_digits(return_X_y=True)  # 1797 flattened 8x8 images, 0..16
    # float32: the model computes in float32 (float64 data: in float64, slower)
    X_train, X_test, y_train, y_test = train_test_split(
        X.astype(np.float32), y, test_size=0.25, random_state=0, stratify=y
    )
    # 64 features -> read as 8x8 grayscale images; the raw 0..16 values are
    # scaled by the model itself (input_scaling="minmax"), and the amount of
    # training follows the data size: the defaults are all it takes
    clf = CNNClassifier(random_state=0)
    start = time.perf_counter()
    clf.fit(X_train, y_train)
    seconds = time.perf_counter() - start
    accuracy = clf.score(X_test, y_test)
    print(f"image shape     : {clf.image_shape_}")
    print(f"test accuracy   : {accuracy:.4f}")
    print(f"fit time        : {seconds:.1f} s ({clf.n_iter_} epochs)")
    return accuracy


if __name__ == "__main__":
    main()
