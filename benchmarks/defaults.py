"""The defaults on users' data: scikit-learn's digits gallery drop-in, MNIST.

Run:
    python benchmarks/defaults.py digits          # ~1 min: 3 seeds
    python benchmarks/defaults.py mnist-raw       # 6k MNIST, raw uint8 vs [0, 1]
    python benchmarks/defaults.py mnist           # full MNIST, ~3 min a seed
    python benchmarks/defaults.py mnist --seeds 0 1 2

``digits`` is scikit-learn's "Recognizing hand-written digits" example with
``CNNClassifier(random_state=s)`` in place of ``SVC(gamma=0.001)``: the raw
0-16 features, the first half to train on, no shuffling. Every figure is
``CNNClassifier(random_state=...)`` with the defaults only.
"""

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np
from sklearn.datasets import load_digits
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import train_test_split

from skcnn import CNNClassifier

MNIST = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist.npz"


def fit_score(X, y, X_test, y_test, seed):
    clf = CNNClassifier(random_state=seed)
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(X, y)
    seconds = time.perf_counter() - start
    return {
        "seed": seed,
        "accuracy": float(clf.score(X_test, y_test)),
        "epochs": clf.n_iter_,
        "seconds": round(seconds, 1),
    }


def digits(seeds=(0, 1, 2)):
    """The gallery's split: 50/50, no shuffle, raw 0-16 features."""
    data = load_digits()
    X = data.images.reshape((len(data.images), -1))
    X_train, X_test, y_train, y_test = train_test_split(
        X, data.target, test_size=0.5, shuffle=False
    )
    return [fit_score(X_train, y_train, X_test, y_test, s) for s in seeds]


def load_mnist(n_train=None):
    with np.load(MNIST) as d:
        X, y = d["x_train"], d["y_train"]
        X_test, y_test = d["x_test"], d["y_test"]
    if n_train is not None:
        X, y = X[:n_train], y[:n_train]
    return X, y, X_test, y_test


def mnist_raw(n_train=6000, seed=0):
    """Raw uint8 pixels vs pixels scaled to [0, 1] in float32."""
    X, y, X_test, y_test = load_mnist(n_train)
    raw = fit_score(X, y, X_test, y_test, seed)
    scaled = fit_score(
        (X / 255).astype(np.float32), y, (X_test / 255).astype(np.float32), y_test, seed
    )
    return {"raw uint8": raw, "scaled float32": scaled}


def mnist(seeds=(0,)):
    X, y, X_test, y_test = load_mnist()
    flat = (X.reshape(len(X), -1) / 255).astype(np.float32)
    flat_test = (X_test.reshape(len(X_test), -1) / 255).astype(np.float32)
    return [fit_score(flat, y, flat_test, y_test, s) for s in seeds]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("what", choices=["digits", "mnist-raw", "mnist"])
    parser.add_argument("--seeds", type=int, nargs="+", help="digits, mnist")
    args = parser.parse_args(argv)
    run = {"digits": digits, "mnist-raw": mnist_raw, "mnist": mnist}[args.what]
    seeded = args.seeds and args.what != "mnist-raw"
    result = run(tuple(args.seeds)) if seeded else run()
    if args.what in ("digits", "mnist"):
        for r in result:
            print(
                f"seed {r['seed']}: accuracy {r['accuracy']:.4f}, "
                f"{r['epochs']} epochs, {r['seconds']} s"
            )
        mean = np.mean([r["accuracy"] for r in result])
        reference = " (SVC(gamma=0.001): 0.969)" if args.what == "digits" else ""
        print(f"mean accuracy {mean:.4f}{reference}")
    else:
        print(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    sys.exit(main() and 0)
