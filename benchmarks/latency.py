"""Small-batch latency: one image through predict_proba and predict.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/latency.py
    ... --repeats 2000 --batch 1 --threads 1

The reference network (``conv_filters=(32, 64)``, ``hidden_layer_sizes=(64,)``,
``padding="valid"``) is fitted for one epoch on 300 MNIST images (random
28x28 images when ``shared/data/mnist.npz`` is missing), then the same
float32 image is predicted ``--repeats`` times after a warm-up; the median
of the per-call ``time.perf_counter_ns`` is printed in microseconds, with
scikit-learn's input validation and the memory check included, as a user
sees them. For comparison, the same model exported to ONNX is run in
onnxruntime when it is installed (one intra-op thread with ``--threads 1``).
Medians, because the machine may be shared: rerun and compare alike runs.
Output: one line per measurement, then one JSON line.
"""

import argparse
import json
import time
import warnings
from contextlib import nullcontext
from pathlib import Path

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from threadpoolctl import threadpool_limits

from skcnn import CNNClassifier

MNIST = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist.npz"


def reference_data(n=300):
    """(images (n, 28, 28, 1) float32 in [0, 1], labels)."""
    if MNIST.exists():
        with np.load(MNIST) as data:
            X, y = data["x_train"][:n], data["y_train"][:n]
        return (X.reshape(n, 28, 28, 1) / np.float32(255)).astype(np.float32), y
    rng = np.random.default_rng(0)
    X = rng.uniform(size=(n, 28, 28, 1)).astype(np.float32)
    return X, np.arange(n) % 10


def median_us(fn, repeats, warmup=200):
    """Median wall time of ``fn()`` in microseconds."""
    for _ in range(warmup):
        fn()
    times = np.empty(repeats)
    for i in range(repeats):
        start = time.perf_counter_ns()
        fn()
        times[i] = time.perf_counter_ns() - start
    return float(np.median(times)) / 1000


def onnx_session(clf, threads):
    """An onnxruntime session of ``clf``, or None without onnx/onnxruntime."""
    try:
        import onnxruntime as ort
    except ImportError:
        return None
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    return ort.InferenceSession(
        clf.to_onnx().SerializeToString(),
        options,
        providers=["CPUExecutionProvider"],
    )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=1, help="images per call")
    parser.add_argument(
        "--threads", type=int, default=None, help="BLAS threads (default: as set)"
    )
    args = parser.parse_args(argv)

    X, y = reference_data()
    clf = CNNClassifier(
        conv_filters=(32, 64),
        hidden_layer_sizes=(64,),
        padding="valid",
        max_iter=1,
        random_state=0,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(X, y)
    images = X[: args.batch]
    rows = images.reshape(len(images), -1)
    session = onnx_session(clf, args.threads)

    timings = {}
    limit = threadpool_limits(args.threads) if args.threads else nullcontext()
    with limit:
        timings["predict_proba"] = median_us(
            lambda: clf.predict_proba(images), args.repeats
        )
        timings["predict"] = median_us(lambda: clf.predict(images), args.repeats)
        if session is not None:
            timings["onnxruntime"] = median_us(
                lambda: session.run(None, {"X": rows}), args.repeats
            )

    what = f"{args.batch} image(s), threads={args.threads or 'default'}"
    for name, us in timings.items():
        print(f"{name:>14}: {us:8.1f} us median ({what}, {args.repeats} calls)")
    print(json.dumps({"batch": args.batch, "threads": args.threads, **timings}))


if __name__ == "__main__":
    main()
