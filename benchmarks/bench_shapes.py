"""skcnn against PyTorch eager on several network shapes, side by side.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/bench_shapes.py
    ... --quick                 # under 2 minutes on an idle 2-core machine
    ... --shapes ref,bn         # a selection (names: see SHAPES)
    ... --profile rgb32         # time per layer and op of one skcnn step

For each shape, on random float32 images and labels, with the same thread
count for both frameworks, each framework at its best: training images/s
in steady state (skcnn's partial_fit; PyTorch: the same network, Adam,
cross-entropy, in NCHW and channels_last each repeat, the faster kept),
inference images/s (predict_proba; PyTorch under inference_mode, its two
fastest memory formats and images per pass, 16 to 512, found once per
shape, timed each repeat, the faster kept), the peak RSS increase over
the loaded data of building the model and 11 training steps (each
framework in a fresh subprocess, measured alike, PyTorch in NCHW), and
the share of the GEMM ceiling reached: training FLOPs per image x
images/s over the measured float32 GEMM peak. Each repeat measures every
shape in turn, skcnn then PyTorch; medians reported. Timing runs with glibc's
allocator thresholds pinned (see _allocator.py).
PyTorch is optional. Output: tables, then one JSON line.
"""

import argparse
import json
import os
import sys

# Must be set before PyTorch (or its OpenMP runtime) is imported: idle
# OpenMP workers otherwise spin and steal the other framework's cores.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import subprocess  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from dataclasses import dataclass, fields  # noqa: E402
from functools import partial  # noqa: E402

import numpy as np  # noqa: E402
from _allocator import (  # noqa: E402  (beside this script)
    cpu_model,
    malloc_line,
    peak_tracker,
    pin_malloc,
    unpinned_env,
)
from _pytorch import (  # noqa: E402  (beside this script)
    faster_format,
    torch_candidates,
    torch_inference,
    torch_model,
    torch_param_count,
    torch_steps,
    torch_tensors,
    torch_train_rate,
)
from sklearn.exceptions import ConvergenceWarning  # noqa: E402
from threadpoolctl import threadpool_info, threadpool_limits  # noqa: E402

from skcnn import CNNClassifier  # noqa: E402
from skcnn._network import Design, build_network, initialize  # noqa: E402

warnings.simplefilter("ignore", ConvergenceWarning)

ALPHA = 1e-4
MEMORY_STEPS = 11


@dataclass(frozen=True)
class Shape:
    image: tuple  # (H, W, C)
    conv_filters: tuple
    padding: str
    hidden_layer_sizes: tuple
    batch: int
    n_classes: int = 10
    batch_norm: bool = False
    pooling: str = "max"
    n_infer: int = 10000  # images per inference measurement (a tenth if quick)
    train_only: bool = False  # a batch-size variant: inference is the same

    def architecture(self):
        """The estimator's architecture parameters (Design's fields)."""
        return {
            f.name: getattr(self, f.name)
            for f in fields(Design)
            if f.name in vars(self)
        }

    def network(self):
        design = Design(**self.architecture())
        return build_network(self.image, design, self.n_classes, "softmax")

    def label(self):
        size = "x".join(map(str, self.image))
        filters, hidden = self.conv_filters, self.hidden_layer_sizes
        layers = ",".join(map(str, filters)) + ") " + self.padding + " ("
        layers += ",".join(map(str, hidden))
        extra = ", bn" * self.batch_norm + ", avg" * (self.pooling == "avg")
        return f"{size} ({layers}){extra} b{self.batch}"


SHAPES = {
    "ref": Shape((28, 28, 1), (32, 64), "valid", (64,), 128),
    "wide": Shape((28, 28, 1), (64, 128), "same", (128,), 128),
    "rgb32": Shape((32, 32, 3), (32, 64, 128), "same", (128,), 128),
    "rgb64": Shape((64, 64, 3), (16, 32, 64), "same", (64,), 64, 5, n_infer=2500),
    "bn": Shape((32, 32, 3), (32, 64), "same", (128,), 128, batch_norm=True),
    "avg": Shape((28, 28, 1), (32, 64), "same", (64,), 128, pooling="avg"),
    "ref-b64": Shape((28, 28, 1), (32, 64), "valid", (64,), 64, train_only=True),
    "ref-b256": Shape((28, 28, 1), (32, 64), "valid", (64,), 256, train_only=True),
}


def training_flops(shape):
    """FLOPs of one training image (forward + backward), from the architecture.

    A convolution costs 2*H'*W'*kh*kw*C*F forward over its full output (as
    a framework computes it), a dense layer 2*n_in*n_out; the backward pass
    twice that (weight and input gradients), except that the first layer
    needs no input gradient. Pooling, activations, normalization and the
    loss are not GEMM work and are left out.
    """
    forward = []
    for layer in shape.network().layers:
        if hasattr(layer, "kernel"):
            (kh, kw), s, (h, w, c) = layer.kernel, layer.stride, layer.in_shape
            (top, bottom), (left, right) = layer.pads
            out_h = (h + top + bottom - kh) // s + 1
            out_w = (w + left + right - kw) // s + 1
            forward.append(2 * out_h * out_w * kh * kw * c * layer.filters)
        elif hasattr(layer, "n_in"):
            forward.append(2 * layer.n_in * layer.n_out)
    return 3 * sum(forward) - forward[0]


def random_data(shape, n, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.random((n,) + shape.image, dtype=np.float32)
    return X, rng.integers(0, shape.n_classes, n)


# ----------------------------------------------------------------- skcnn


def skcnn_model(shape):
    arch = shape.architecture()
    # no input scaling and no dropout: the PyTorch networks have neither
    return CNNClassifier(
        **arch,
        input_scaling=None,
        dropout=0.0,
        batch_size=shape.batch,
        alpha=ALPHA,
        random_state=0,
    )


def skcnn_param_count(shape):
    weights = initialize(shape.network(), np.random.RandomState(0), np.float32)
    return sum(a.size for a in weights.trainable())


def skcnn_train_rate(shape, X, y, n_steps):
    """(images/s of ``n_steps`` steps after a warm-up one, the model)."""
    clf = skcnn_model(shape)
    classes = np.arange(shape.n_classes)
    clf.partial_fit(X[: shape.batch], y[: shape.batch], classes=classes)
    n = n_steps * shape.batch
    start = time.perf_counter()
    clf.partial_fit(X[:n], y[:n])
    return n / (time.perf_counter() - start), clf


def skcnn_infer_rate(clf, X_infer):
    clf.predict_proba(X_infer[:200])
    start = time.perf_counter()
    clf.predict_proba(X_infer)
    return len(X_infer) / (time.perf_counter() - start)


# --------------------------------------------------------------- PyTorch


def check_param_counts(torch, shape):
    """(skcnn's, PyTorch's) trainable parameter counts; they must agree."""
    ours, theirs = skcnn_param_count(shape), torch_param_count(torch, shape)
    if ours != theirs:  # not an assert: it must hold under python -O too
        raise AssertionError(f"{shape.label()}: skcnn {ours} != PyTorch {theirs}")
    return ours, theirs


# ---------------------------------------------------------------- memory


def memory_worker(framework, name, n_threads):
    """In a fresh subprocess: peak extra RSS of building + 11 steps."""
    shape = SHAPES[name]
    X, y = random_data(shape, MEMORY_STEPS * shape.batch)
    if framework == "skcnn":
        method, base, peak = peak_tracker()
        with threadpool_limits(n_threads):
            clf = skcnn_model(shape)
            clf.partial_fit(X, y, classes=np.arange(shape.n_classes))
    else:
        import torch

        torch.set_num_threads(n_threads)
        Xt, yt = torch_tensors(torch, X, y)
        del X  # PyTorch's copy is the loaded data
        method, base, peak = peak_tracker()
        model = torch_model(torch, shape)
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        torch_steps(torch, model, opt, Xt, yt, shape.batch, MEMORY_STEPS)
    print(json.dumps({"method": method, "extra": peak() - base}))


def peak_memory(framework, name, n_threads):
    """(MB, method) of ``memory_worker`` run in a fresh interpreter."""
    command = [sys.executable, __file__, "--memory-worker", framework, name]
    command += ["--threads", str(n_threads)]
    env = unpinned_env(os.environ)  # as a user's process allocates
    out = subprocess.run(command, capture_output=True, text=True, check=True, env=env)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    return result["extra"] / 2**20, result["method"]


# ------------------------------------------------------------------ main


def gemm_gflops(tries=3):
    """Peak float32 GEMM rate with the current threads: best of a few."""
    best = 0.0
    for size in (1024, 2048):
        a = np.random.default_rng(0).random((size, size), dtype=np.float32)
        np.matmul(a, a)
        for _ in range(tries):
            start = time.perf_counter()
            np.matmul(a, a)
            best = max(best, 2 * size**3 / (time.perf_counter() - start) / 1e9)
    return best


def blas_line():
    return ", ".join(
        f"{i['internal_api']} {i.get('version')} ({i.get('architecture', '?')})"
        for i in threadpool_info()
        if i["user_api"] == "blas"
    )


def median(values):
    return float(np.median(values)) if values else float("nan")


def ratio(a, b):
    return a / b if b else float("nan")


def measure(names, args, torch):
    """{shape: {figure: {framework: median}}}.

    Each repeat measures every shape in turn, skcnn then PyTorch: this
    shared machine has slow spells of tens of seconds (skcnn's 32x32x3
    prediction at 15,000 img/s for a minute, then 19,000 again, the code
    and process unchanged), which with a shape's repeats back to back could
    sink all of one shape's figures; interleaved, a spell spreads over
    shapes and frameworks, and the medians drop it.
    """
    steps = args.steps or (3 if args.quick else 30)
    repeats = args.repeats or (2 if args.quick else 5)
    shapes = {name: _ShapeRuns(name, steps, args.quick, torch) for name in names}
    for k in range(repeats):
        started = time.perf_counter()
        for runs in shapes.values():
            runs.repeat()
        print(f"repeat {k + 1} of {repeats} in {time.perf_counter() - started:.0f} s")
    results = {}
    for name, runs in shapes.items():
        r = results[name] = runs.medians()
        ours, method = peak_memory("skcnn", name, args.threads)
        theirs = peak_memory("torch", name, args.threads)[0] if torch else float("nan")
        r["peak_mb"] = {"skcnn": ours, "pytorch": theirs, "ratio": ratio(ours, theirs)}
        r["peak_mb"]["method"] = method
    return results


class _ShapeRuns:
    """One shape's data and the rates its repeats measured."""

    def __init__(self, name, steps, quick, torch):
        self.shape, self.steps, self.torch = SHAPES[name], steps, torch
        self.X, self.y = random_data(self.shape, steps * self.shape.batch)
        n_infer = self.shape.n_infer // (10 if quick else 1)
        self.X_infer = random_data(self.shape, n_infer, 1)[0]
        self.Xt, self.yt = (
            torch_tensors(torch, self.X, self.y) if torch else (None, None)
        )
        self.runs = {"train": ([], []), "infer": ([], [])}
        # PyTorch's fastest settings: its inference candidates, found once,
        # and the settings that won each repeat
        self.candidates, self.won = None, {"train": [], "infer": []}

    def repeat(self):
        shape, runs = self.shape, self.runs
        rate, clf = skcnn_train_rate(shape, self.X, self.y, self.steps)
        runs["train"][0].append(rate)
        if not shape.train_only:
            runs["infer"][0].append(skcnn_infer_rate(clf, self.X_infer))
        if self.torch:
            torch = self.torch
            rate, fmt, model = faster_format(
                partial(torch_train_rate, torch, shape, self.Xt, self.yt, self.steps)
            )
            runs["train"][1].append(rate)
            self.won["train"].append(fmt)
            if not shape.train_only:
                self.candidates = self.candidates or torch_candidates(
                    torch, model, self.X_infer
                )
                rate, setting = torch_inference(
                    torch, model, self.X_infer, self.candidates
                )
                runs["infer"][1].append(rate)
                self.won["infer"].append("{}/{}".format(*setting))

    def medians(self):
        r = {}
        for figure, (ours, theirs) in self.runs.items():
            ours, theirs = median(ours), median(theirs)
            r[figure] = {"skcnn": ours, "pytorch": theirs, "ratio": ratio(ours, theirs)}
        for figure, settings in self.won.items():  # the most frequent winner
            most = max(settings, key=settings.count, default=None)
            r[figure]["pytorch_format"] = most
        return r


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="finish in < 2 min")
    parser.add_argument("--shapes", default=",".join(SHAPES), help="comma-separated")
    parser.add_argument("--profile", metavar="SHAPE", choices=list(SHAPES))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--steps", type=int, default=None, help="timed steps")
    parser.add_argument(
        "--default-malloc",
        action="store_true",
        help="time with glibc's adaptive thresholds (see _allocator.py)",
    )
    parser.add_argument("--memory-worker", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_worker:
        memory_worker(*args.memory_worker, args.threads)
        return
    if not args.default_malloc:
        pin_malloc()  # runs this script again, pinned
    for var in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE"):
        if var in os.environ:
            print(
                f"WARNING: {var}={os.environ[var]} is set: figures may not be "
                "representative. Run benchmarks as `env -u OPENBLAS_CORETYPE "
                "-u OPENBLAS_L2_SIZE python benchmarks/bench_shapes.py`."
            )
    if args.profile:
        from profile_shapes import profile_step  # beside this script

        profile_step(SHAPES[args.profile], args.profile, steps=5 if args.quick else 20)
        return
    names = [s.strip() for s in args.shapes.split(",") if s.strip()]
    unknown = sorted(set(names) - set(SHAPES))
    if unknown:
        parser.error(f"unknown shapes {unknown}; choose from {list(SHAPES)}")
    try:
        import torch

        torch.set_num_threads(args.threads)
    except ImportError:
        torch = None
        print("PyTorch not installed: skcnn figures only.")
    params = {  # checked before anything is timed
        name: check_param_counts(torch, SHAPES[name])
        if torch
        else (skcnn_param_count(SHAPES[name]), None)
        for name in names
    }
    with threadpool_limits(args.threads):
        peak = gemm_gflops()
        results = measure(names, args, torch)
    report(names, params, results, peak, args, torch)


def report(names, params, results, peak, args, torch):
    version = torch.__version__ if torch else None
    print(
        f"\nskcnn vs PyTorch eager, float32, {args.threads} threads "
        f"(OMP_WAIT_POLICY={os.environ['OMP_WAIT_POLICY']}); "
        f"PyTorch {version or 'not installed'}\n"
        f"CPU: {cpu_model()}; malloc: {malloc_line()}\n"
        f"BLAS: {blas_line()}; float32 GEMM peak {peak:.0f} GFLOP/s "
        "(np.matmul, best of 1024^3 and 2048^3)"
    )
    print(f"\n{'shape':9s} {'network':44s} {'params':>9s} {'MFLOP/img':>9s}")
    for name in names:
        flops = training_flops(SHAPES[name]) / 1e6
        print(f"{name:9s} {SHAPES[name].label():44s} {params[name][0]:9d} {flops:9.1f}")
    groups = ("train img/s", "infer img/s", "peak train MB", "GEMM ceiling")
    print("\n" + " " * 9 + "".join(f"{g:^25s}" for g in groups))
    trio = f"{'skcnn':>8s}{'pytorch':>9s}{'ratio':>7s} "
    last = f"{'skcnn':>8s}{'pytorch':>9s}  pt train, infer"
    print(f"{'shape':9s}" + trio * 3 + last)
    summary = {"threads": args.threads, "quick": args.quick, "torch": version}
    summary.update(cpu=cpu_model(), malloc=malloc_line())
    summary.update(gemm_gflops=round(peak, 1), blas=blas_line(), shapes={})
    for name in names:
        r, flops = results[name], training_flops(SHAPES[name])
        share = {k: r["train"][k] * flops / (peak * 1e9) for k in ("skcnn", "pytorch")}
        line = "".join(
            f"{r[f]['skcnn']:8.0f}{r[f]['pytorch']:9.0f}{r[f]['ratio']:7.2f} "
            for f in ("train", "infer", "peak_mb")
        )
        fmt = ", ".join(
            r[f]["pytorch_format"] for f in ("train", "infer") if r[f]["pytorch_format"]
        )
        print(f"{name:9s}{line}{share['skcnn']:8.0%}{share['pytorch']:9.0%}  {fmt}")
        summary["shapes"][name] = {
            "network": SHAPES[name].label(),
            "params": {"skcnn": params[name][0], "pytorch": params[name][1]},
            "mflop_per_training_image": flops / 1e6,
            "train_img_s": r["train"],
            "infer_img_s": r["infer"],
            "peak_train_mb": r["peak_mb"],
            "gemm_ceiling_share": share,
        }
    print("ratio = skcnn / PyTorch; nan = not measured")
    print(json.dumps(_no_nan(summary)))


def _no_nan(value):
    """NaN (not measured) as JSON null: json.dumps would write bare NaN."""
    if isinstance(value, dict):
        return {k: _no_nan(v) for k, v in value.items()}
    return None if isinstance(value, float) and value != value else value


if __name__ == "__main__":
    main()
