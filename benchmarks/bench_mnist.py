"""skcnn against PyTorch on the reference network and MNIST, side by side.

    python benchmarks/bench_mnist.py            # full run (several minutes)
    python benchmarks/bench_mnist.py --quick    # under a minute, no time-to-99%
    python benchmarks/bench_mnist.py --profile  # time per layer/op of one step

Figures (float32, both frameworks limited to the same thread count):
training images/s in steady state (median of repeats, interleaved between
the frameworks), inference images/s on the 10k test images, peak extra RSS
over a training epoch (each framework in a fresh subprocess), and the time
to reach 99% test accuracy. PyTorch is optional: without it only skcnn's
figures are printed. Output: a table, then one JSON line.
"""

import argparse
import json
import os
import sys

# Must be set before PyTorch (or its OpenMP runtime) is imported: idle
# OpenMP workers otherwise spin and steal the other framework's cores.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import subprocess  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from functools import partial  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
from _allocator import (  # noqa: E402  (beside this script)
    cpu_model,
    malloc_line,
    pin_malloc,
    unpinned_env,
)
from _pytorch import (  # noqa: E402  (beside this script)
    TORCH_FORMATS,
    faster_format,
    torch_candidates,
    torch_inference,
)
from sklearn.exceptions import ConvergenceWarning  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402

from skcnn import CNNClassifier  # noqa: E402

warnings.simplefilter("ignore", ConvergenceWarning)

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "mnist.npz"
MFLOP_PER_TRAINING_IMAGE = 14.8  # forward + backward of the reference network
ALPHA = 1e-4


def load_mnist():
    """Flat float32 pixels in [0, 1]: the data users would pass to fit."""
    if DATA.exists():
        d = np.load(DATA)
        X_train, y_train = d["x_train"], d["y_train"]
        X_test, y_test = d["x_test"], d["y_test"]
    else:
        from sklearn.datasets import fetch_openml

        X, y = fetch_openml("mnist_784", return_X_y=True, as_frame=False)
        y = y.astype(np.uint8)
        X_train, X_test, y_train, y_test = X[:60000], X[60000:], y[:60000], y[60000:]
    scale = np.float32(1 / 255)
    return (
        X_train.reshape(len(X_train), -1).astype(np.float32) * scale,
        y_train.astype(np.int64),
        X_test.reshape(len(X_test), -1).astype(np.float32) * scale,
        y_test.astype(np.int64),
    )


# ----------------------------------------------------------------- skcnn


# The reference network, as PyTorch runs it: "valid" padding, no input
# scaling, no dropout (the estimator's defaults since issue #12 are "auto",
# "minmax" and 0.25).
REFERENCE = dict(padding="valid", input_scaling=None, dropout=0.0)


def skcnn_model(batch_size):
    return CNNClassifier(
        **REFERENCE, batch_size=batch_size, alpha=ALPHA, random_state=0
    )


def skcnn_train_rate(X, y, batch_size, n_images):
    clf = skcnn_model(batch_size)
    clf.partial_fit(X[:batch_size], y[:batch_size], classes=np.arange(10))  # warm-up
    start = time.perf_counter()
    clf.partial_fit(X[:n_images], y[:n_images])
    return n_images / (time.perf_counter() - start)


def skcnn_infer_rate(X, y, X_test):
    clf = skcnn_model(128)
    clf.partial_fit(X[:1000], y[:1000], classes=np.arange(10))
    clf.predict_proba(X_test[:500])
    start = time.perf_counter()
    clf.predict_proba(X_test)
    return len(X_test) / (time.perf_counter() - start)


def skcnn_epochs(X, y, X_test, y_test, max_epochs):
    """Yield (seconds of training so far, test accuracy) after each epoch."""
    clf = CNNClassifier(**REFERENCE, random_state=0)  # the rest: defaults
    seconds = 0.0
    for _ in range(max_epochs):
        start = time.perf_counter()
        clf.partial_fit(X, y, classes=np.arange(10))
        seconds += time.perf_counter() - start
        yield seconds, clf.score(X_test, y_test)


# --------------------------------------------------------------- PyTorch


def torch_model(torch):
    nn = torch.nn
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 32, 3),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(1600, 64),
        nn.ReLU(),
        nn.Linear(64, 10),
    )


def torch_epoch(torch, model, opt, X, y, batch_size):
    loss_fn = torch.nn.functional.cross_entropy
    order = torch.randperm(len(X))
    for start in range(0, len(X), batch_size):
        idx = order[start : start + batch_size]
        opt.zero_grad(set_to_none=True)
        loss_fn(model(X[idx]), y[idx]).backward()
        opt.step()


def torch_tensors(torch, X, y, fmt="nchw"):
    memory_format = getattr(torch, TORCH_FORMATS[fmt])
    Xt = torch.from_numpy(X.reshape(-1, 1, 28, 28).copy())
    return Xt.contiguous(memory_format=memory_format), torch.from_numpy(y)


def torch_train_rate(torch, X, y, batch_size, n_images, fmt="nchw"):
    """``(images/s, None)`` in memory format ``fmt``: the benchmark times
    both and keeps the faster (``faster_format``), as bench_shapes.py does."""
    model = torch_model(torch).to(memory_format=getattr(torch, TORCH_FORMATS[fmt]))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    Xt, yt = torch_tensors(torch, X[:n_images], y[:n_images], fmt)
    torch_epoch(torch, model, opt, Xt[:batch_size], yt[:batch_size], batch_size)
    start = time.perf_counter()
    torch_epoch(torch, model, opt, Xt, yt, batch_size)
    return n_images / (time.perf_counter() - start), None


def torch_infer_rate(torch, X_test):
    """In PyTorch's two fastest settings of memory format and pass size
    (tried on a quarter of the images), the faster: one 10k-image pass in
    NCHW ran at a sixth of the best speed."""
    model = torch_model(torch)
    images = X_test.reshape(-1, 28, 28, 1)
    candidates = torch_candidates(torch, model, images)
    return torch_inference(torch, model, images, candidates)[0]


def torch_epochs(torch, X, y, X_test, y_test, max_epochs, fmt="nchw"):
    model = torch_model(torch).to(memory_format=getattr(torch, TORCH_FORMATS[fmt]))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    Xt, yt = torch_tensors(torch, X, y, fmt)
    Xv = torch_tensors(torch, X_test, y_test, fmt)[0]
    seconds = 0.0
    for _ in range(max_epochs):
        start = time.perf_counter()
        model.train()
        torch_epoch(torch, model, opt, Xt, yt, 200)  # 200: skcnn's "auto"
        seconds += time.perf_counter() - start
        model.eval()
        with torch.no_grad():
            pred = model(Xv).argmax(dim=1).numpy()
        yield seconds, float((pred == y_test).mean())


# ---------------------------------------------------------------- memory


def _rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def measure_peak_extra_rss(run):
    """Peak RSS above the level just before ``run()``, sampled every ms."""
    base = _rss()
    peak = [base]
    done = threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], _rss())
            time.sleep(0.001)

    thread = threading.Thread(target=sample)
    thread.start()
    try:
        run()
    finally:
        done.set()
        thread.join()
    return max(peak[0], _rss()) - base


def memory_worker(framework, batch_size, n_threads):
    """Runs in a fresh subprocess: peak extra RSS of one training epoch.

    The baseline is taken with the data loaded and the model built, before
    the first step, so the figure includes every buffer training allocates.
    """
    X, y, _, _ = load_mnist()
    n = 10240
    X, y = X[:n], y[:n]
    if framework == "skcnn":
        with threadpool_limits(n_threads):
            clf = skcnn_model(batch_size)
            extra = measure_peak_extra_rss(
                lambda: clf.partial_fit(X, y, classes=np.arange(10))
            )
    else:
        import torch

        torch.set_num_threads(n_threads)
        model = torch_model(torch)
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        Xt, yt = torch_tensors(torch, X, y)
        extra = measure_peak_extra_rss(
            lambda: torch_epoch(torch, model, opt, Xt, yt, batch_size)
        )
    print(extra)


def peak_memory(framework, batch_size, n_threads):
    out = subprocess.run(
        [sys.executable, __file__, "--memory-worker", framework, str(batch_size)]
        + ["--threads", str(n_threads)],
        capture_output=True,
        text=True,
        check=True,
        env=unpinned_env(os.environ),  # as a user's process allocates
    )
    return int(out.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------- profile


def profile_step(X, y, batch_size, steps=20):
    """Time per layer and op of a training step (single-threaded, no split)."""
    import skcnn._blocks as blocks
    from skcnn._engine import Batch, loss_and_gradients
    from skcnn._layers import ACTIVATION_GRADS, ACTIVATIONS
    from skcnn._network import Design, build_network, initialize

    totals = {}
    calls = {}

    def timed(label, fn, n_layers):
        def wrapper(*args, **kwargs):
            k = calls.setdefault(label, 0)
            calls[label] += 1
            # the backward pass meets the layers in reverse order
            layer = n_layers - k if "backward" in label else k + 1
            key = f"{label} (layer {layer})"
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                totals[key] = totals.get(key, 0.0) + time.perf_counter() - start

        return wrapper

    names = ["conv2d_forward", "conv2d_backward", "maxpool_forward", "maxpool_backward"]
    originals = {name: getattr(blocks, name) for name in names}
    act, grad = dict(ACTIVATIONS), dict(ACTIVATION_GRADS)
    for name in names:
        setattr(blocks, name, timed(name, originals[name], 2))
    ACTIVATIONS["relu"] = timed("relu_forward", act["relu"], 3)
    ACTIVATION_GRADS["relu"] = timed("relu_backward", grad["relu"], 3)
    network = build_network((28, 28, 1), Design(), 10, "softmax")
    weights = initialize(network, np.random.RandomState(0), np.float32)
    Y = np.eye(10, dtype=np.float32)[y]
    step_total = 0.0
    try:
        for step in range(steps + 2):
            calls.clear()
            rows = slice(step * batch_size, (step + 1) * batch_size)
            xb = X[rows].reshape(-1, 28, 28, 1)
            if step == 2:
                totals.clear()  # the first steps warm up
                step_total = 0.0
            start = time.perf_counter()
            loss_and_gradients(network, weights, Batch(xb, Y[rows]), ALPHA)
            step_total += time.perf_counter() - start
    finally:
        for name in names:
            setattr(blocks, name, originals[name])
        ACTIVATIONS.update(act)
        ACTIVATION_GRADS.update(grad)
    print(f"\nOne training step, batch {batch_size}, one thread, mean of {steps}:")
    print(f"{'op (conv blocks are layers 1-2, dense 3)':40s} {'ms':>8s} {'share':>7s}")
    for key, seconds in sorted(totals.items(), key=lambda kv: -kv[1]):
        ms = 1000 * seconds / steps
        print(f"{key:40s} {ms:8.2f} {seconds / step_total:7.1%}")
    other = step_total - sum(totals.values())
    print(
        f"{'dense layers, loss, glue':36s} {1000 * other / steps:8.2f} "
        f"{other / step_total:7.1%}"
    )
    print(f"{'total':40s} {1000 * step_total / steps:8.2f}")


# ------------------------------------------------------------------ main


def gemm_gflops():
    """Peak float32 GEMM rate of this machine with the current threads."""
    a = np.random.default_rng(0).random((2048, 2048), dtype=np.float32)
    a @ a
    start = time.perf_counter()
    for _ in range(5):
        a @ a
    return 5 * 2 * 2048**3 / (time.perf_counter() - start) / 1e9


def median(values):
    return float(np.median(values))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="finish in < 1 min")
    parser.add_argument("--profile", action="store_true", help="per-op step times")
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument(
        "--default-malloc",
        action="store_true",
        help="time with glibc's adaptive thresholds (see _allocator.py)",
    )
    parser.add_argument("--memory-worker", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_worker:
        memory_worker(args.memory_worker[0], int(args.memory_worker[1]), args.threads)
        return
    if not args.default_malloc:
        pin_malloc()  # runs this script again, pinned

    X, y, X_test, y_test = load_mnist()
    if args.profile:
        with threadpool_limits(1):
            profile_step(X, y, 128)
        return
    try:
        import torch

        torch.set_num_threads(args.threads)
    except ImportError:
        torch = None
        print(
            "PyTorch not installed: skcnn figures only "
            "(pip install torch==2.13.0 for the comparison)."
        )

    repeats = args.repeats or 3
    n_images = 2560 if args.quick else 10240
    batches = (64, 128, 256)
    results, won = {}, []  # the formats PyTorch trained faster in at 256
    with threadpool_limits(args.threads):
        peak = gemm_gflops()
        for batch in batches:
            for name in ("skcnn", "torch"):
                results[(f"train img/s, batch {batch}", name)] = []
            for _ in range(repeats):  # interleaved, so drift hits both alike
                results[(f"train img/s, batch {batch}", "skcnn")].append(
                    skcnn_train_rate(X, y, batch, n_images)
                )
                if torch:
                    rate, fmt, _ = faster_format(
                        partial(torch_train_rate, torch, X, y, batch, n_images)
                    )
                    results[(f"train img/s, batch {batch}", "torch")].append(rate)
                    won += [fmt] if batch == 256 else []
        key = "inference img/s, 10k test"
        results[(key, "skcnn")], results[(key, "torch")] = [], []
        for _ in range(repeats):
            results[(key, "skcnn")].append(skcnn_infer_rate(X, y, X_test))
            if torch:
                results[(key, "torch")].append(torch_infer_rate(torch, X_test))

    key = "peak extra RSS MB, epoch at 128"
    results[(key, "skcnn")] = [peak_memory("skcnn", 128, args.threads) / 2**20]
    results[(key, "torch")] = (
        [peak_memory("torch", 128, args.threads) / 2**20] if torch else []
    )

    if not args.quick:
        key = "seconds to 99% test accuracy"
        with threadpool_limits(args.threads):
            for name, runs in (
                ("skcnn", skcnn_epochs(X, y, X_test, y_test, 20)),
                (
                    "torch",
                    # in the format faster at batch 256, the nearest to its 200
                    torch_epochs(
                        torch, X, y, X_test, y_test, 20, max(won, key=won.count)
                    )
                    if torch
                    else (),
                ),
            ):
                results[(key, name)] = []
                for seconds, accuracy in runs:
                    if accuracy >= 0.99:
                        results[(key, name)] = [seconds]
                        break

    report(results, peak, args)


def report(results, peak, args):
    figures = list(dict.fromkeys(figure for figure, _ in results))
    print(
        f"\nskcnn vs PyTorch eager, float32, {args.threads} threads "
        f"(OMP_WAIT_POLICY={os.environ['OMP_WAIT_POLICY']})\n"
        f"CPU: {cpu_model()}; malloc: {malloc_line()}"
    )
    print(f"{'figure (median)':34s} {'skcnn':>10s} {'pytorch':>10s} {'ratio':>8s}")
    summary = {"threads": args.threads, "gemm_gflops": round(peak, 1)}
    summary.update(cpu=cpu_model(), malloc=malloc_line())
    for figure in figures:
        ours = results.get((figure, "skcnn")) or []
        theirs = results.get((figure, "torch")) or []
        a = median(ours) if ours else float("nan")
        b = median(theirs) if theirs else float("nan")
        ratio = a / b if ours and theirs else float("nan")
        print(f"{figure:34s} {a:10.1f} {b:10.1f} {ratio:8.2f}")
        summary[figure] = {"skcnn": a, "pytorch": b, "ratio": ratio}
    ceiling = peak * 1e3 / MFLOP_PER_TRAINING_IMAGE
    best = max(
        median(v) for (f, n), v in results.items() if "train" in f and n == "skcnn"
    )
    print(
        f"\nfloat32 GEMM peak {peak:.0f} GFLOP/s -> ceiling {ceiling:.0f} training "
        f"img/s ({MFLOP_PER_TRAINING_IMAGE} MFLOP/img); skcnn reaches "
        f"{best / ceiling:.0%} of it"
    )
    summary["fraction_of_ceiling"] = best / ceiling
    print(json.dumps(summary, default=lambda v: None if v != v else v))


if __name__ == "__main__":
    main()
