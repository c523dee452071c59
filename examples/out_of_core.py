"""Train on a file larger than memory, chunk by chunk, with partial_fit.

Run:  python examples/out_of_core.py

The training images live in a .npy file opened with ``mmap_mode="r"``:
only the chunk being trained on is read into memory, so the peak memory
depends on the chunk size, not on the size of the file. Here the file is
generated from scikit-learn's digits (shifted copies), standing in for a
dataset too large for RAM.
"""

import tempfile
import time
from pathlib import Path

import numpy as np
from sklearn.datasets import load_digits

from skcnn import CNNClassifier


def make_dataset(directory, n_copies=20, seed=0):
    """Write X.npy (float32, n x 64) and y.npy: digits with random shifts."""
    X, y = load_digits(return_X_y=True)
    rng = np.random.default_rng(seed)
    X_file = np.lib.format.open_memmap(
        Path(directory) / "X.npy", mode="w+", dtype=np.float32,
        shape=(n_copies * len(X), 64),
    )  # fmt: skip
    for k in range(n_copies):  # written chunk by chunk too
        shifted = np.roll(X.reshape(-1, 8, 8) / 16, rng.integers(-1, 2, 2), (1, 2))
        X_file[k * len(X) : (k + 1) * len(X)] = shifted.reshape(-1, 64)
    X_file.flush()
    np.save(Path(directory) / "y.npy", np.tile(y, n_copies))
    return Path(directory) / "X.npy", Path(directory) / "y.npy"


def train_out_of_core(X_path, y_path, chunk_size=1000, epochs=1, **params):
    """partial_fit over memory-mapped chunks; returns the fitted model."""
    X = np.load(X_path, mmap_mode="r")  # nothing read yet
    y = np.load(y_path, mmap_mode="r")
    classes = np.unique(y[: min(len(y), 100_000)])
    clf = CNNClassifier(**params)
    for _ in range(epochs):
        for start in range(0, len(X), chunk_size):
            stop = start + chunk_size
            clf.partial_fit(X[start:stop], y[start:stop], classes=classes)
    return clf


def main():
    with tempfile.TemporaryDirectory() as directory:
        X_path, y_path = make_dataset(directory)
        size = X_path.stat().st_size / 2**20
        start = time.perf_counter()
        clf = train_out_of_core(
            X_path, y_path, chunk_size=1024, epochs=2, batch_size=64, random_state=0
        )
        seconds = time.perf_counter() - start
    X_test, y_test = load_digits(return_X_y=True)
    accuracy = clf.score(X_test / 16, y_test)
    print(f"file: {size:.1f} MB, {clf.t_} images seen in {seconds:.0f} s")
    print(f"accuracy on the original digits: {accuracy:.4f}")
    return accuracy


if __name__ == "__main__":
    main()
