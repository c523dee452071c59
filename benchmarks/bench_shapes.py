"""skcnn against PyTorch eager on several network shapes, side by side.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/bench_shapes.py
    ... --quick                 # under 2 minutes on an idle 2-core machine
    ... --shapes ref,bn         # a selection (names: see SHAPES)
    ... --profile rgb32         # time per layer and op of one skcnn step

For each shape, on random float32 images and labels, with the same thread
count for both frameworks: training images/s in steady state (skcnn's
partial_fit; PyTorch: the same network, Adam, cross-entropy), inference
images/s (predict_proba; PyTorch under inference_mode in NCHW and
channels_last, the faster reported), the peak RSS increase over the loaded
data of building the model and 11 training steps (each framework in a
fresh subprocess, measured alike), and the share of the GEMM ceiling
reached: training FLOPs per image x images/s over the measured float32 GEMM
peak. Repeats are interleaved between the frameworks; medians reported.
PyTorch is optional. Output: tables, then one JSON line.
"""

import argparse
import json
import os
import sys

# Must be set before PyTorch (or its OpenMP runtime) is imported: idle
# OpenMP workers otherwise spin and steal the other framework's cores.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import platform  # noqa: E402
import resource  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from dataclasses import dataclass, fields  # noqa: E402

import numpy as np  # noqa: E402
from sklearn.exceptions import ConvergenceWarning  # noqa: E402
from threadpoolctl import threadpool_info, threadpool_limits  # noqa: E402

from skcnn import CNNClassifier  # noqa: E402
from skcnn._network import Design, build_network, initialize  # noqa: E402

warnings.simplefilter("ignore", ConvergenceWarning)

ALPHA = 1e-4
MEMORY_STEPS = 11

# glibc hands a freed block above its (adaptive) mmap threshold straight
# back to the system, and trims the heap's top past the trim threshold;
# the next block of that size is then faulted in page by page. PyTorch
# allocates every activation anew, so its speed came to depend on what the
# process had allocated before -- on which shapes ran earlier: measured on
# this project's 2-core VM, its inference on 64x64x3 images at 3,900 or
# 8,600 img/s, its batch-256 training at 5,900 or 10,200. With both
# thresholds pinned, neither varies, and both reach the faster figure.
# skcnn's workspace reuses its buffers, so its figures barely move (within
# the noise). The timing process runs so (``--default-malloc``: not); the
# memory workers run with the caller's allocator settings, as a user's.
PINNED_MALLOC = (
    "glibc.malloc.mmap_threshold=33554432:glibc.malloc.trim_threshold=1073741824"
)


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


def torch_model(torch, shape):
    """skcnn's network in PyTorch: same layers, sizes and flatten order."""
    nn = torch.nn

    class FlattenHWC(nn.Module):
        # skcnn flattens (height, width, channels); so must the dense input
        def forward(self, x):
            return x.permute(0, 2, 3, 1).flatten(1)

    torch.manual_seed(0)
    layers, channels = [], shape.image[2]
    pad = 1 if shape.padding == "same" else 0  # Keras "same" for 3x3 kernels
    for filters in shape.conv_filters:
        bias = not shape.batch_norm  # batch norm's shift is the bias
        layers.append(nn.Conv2d(channels, filters, 3, padding=pad, bias=bias))
        if shape.batch_norm:
            layers.append(nn.BatchNorm2d(filters, eps=1e-5))
        pool = nn.MaxPool2d(2) if shape.pooling == "max" else nn.AvgPool2d(2)
        layers += [nn.ReLU(), pool]  # floor mode, as skcnn
        channels = filters
    layers.append(FlattenHWC())
    with torch.no_grad():  # the flat size, worked out by PyTorch itself
        h, w, c = shape.image
        n_in = nn.Sequential(*layers)(torch.zeros(1, c, h, w)).shape[1]
    for n_out in shape.hidden_layer_sizes:
        layers += [nn.Linear(n_in, n_out), nn.ReLU()]
        n_in = n_out
    layers.append(nn.Linear(n_in, shape.n_classes))
    return nn.Sequential(*layers)


def torch_param_count(torch, shape):
    return sum(p.numel() for p in torch_model(torch, shape).parameters())


def check_param_counts(torch, shape):
    """(skcnn's, PyTorch's) trainable parameter counts; they must agree."""
    ours, theirs = skcnn_param_count(shape), torch_param_count(torch, shape)
    if ours != theirs:  # not an assert: it must hold under python -O too
        raise AssertionError(f"{shape.label()}: skcnn {ours} != PyTorch {theirs}")
    return ours, theirs


def torch_tensors(torch, X, y):
    """NCHW copies of (n, H, W, C) images, as a PyTorch user would hold them."""
    Xt = torch.from_numpy(np.ascontiguousarray(X.transpose(0, 3, 1, 2)))
    return Xt, torch.from_numpy(y)


def torch_steps(torch, model, opt, Xt, yt, batch, n_steps):
    loss_fn = torch.nn.functional.cross_entropy
    order = torch.randperm(len(Xt))  # shuffled, as skcnn's epochs are
    for step in range(n_steps):
        idx = order[step * batch : (step + 1) * batch]
        opt.zero_grad(set_to_none=True)
        loss_fn(model(Xt[idx]), yt[idx]).backward()
        opt.step()


def torch_train_rate(torch, shape, Xt, yt, n_steps):
    model = torch_model(torch, shape)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    b = shape.batch
    torch_steps(torch, model, opt, Xt[:b], yt[:b], b, 1)  # warm-up
    start = time.perf_counter()
    torch_steps(torch, model, opt, Xt, yt, b, n_steps)
    return n_steps * b / (time.perf_counter() - start), model


def torch_infer_rates(torch, shape, model, X_infer):
    """{memory format: images/s}, in chunks of at most ~64 MB per activation."""
    widest = max(x.values_per_sample() for x in shape.network().layers[:-1])
    chunk = max(1, min(1000, 2**24 // widest))
    model.eval()
    # the (n, H, W, C) array seen as NCHW is channels_last already: no copy
    nhwc = torch.from_numpy(X_infer).permute(0, 3, 1, 2)
    rates = {}
    for fmt, memory_format in (
        ("nchw", "contiguous_format"),
        ("nhwc", "channels_last"),
    ):
        model = model.to(memory_format=getattr(torch, memory_format))
        Xt = nhwc.contiguous(memory_format=getattr(torch, memory_format))
        with torch.inference_mode():
            model(Xt[:200])
            start = time.perf_counter()
            for i in range(0, len(Xt), chunk):
                torch.softmax(model(Xt[i : i + chunk]), dim=1)
            rates[fmt] = len(Xt) / (time.perf_counter() - start)
    return rates


# ------------------------------------------------------------- allocator


def pinned_env(env):
    """``env`` with ``PINNED_MALLOC`` added to its ``GLIBC_TUNABLES``."""
    tunables = [t for t in env.get("GLIBC_TUNABLES", "").split(":") if t]
    return dict(env, GLIBC_TUNABLES=":".join(tunables + [PINNED_MALLOC]))


def unpinned_env(env):
    """``env`` as it was before :func:`pinned_env`."""
    env = dict(env)
    tunables = env.pop("GLIBC_TUNABLES", "").replace(PINNED_MALLOC, "")
    tunables = ":".join(t for t in tunables.split(":") if t)
    if tunables:
        env["GLIBC_TUNABLES"] = tunables
    return env


def malloc_pinned():
    return PINNED_MALLOC in os.environ.get("GLIBC_TUNABLES", "")


def cpu_model():
    """The CPU's model name: figures from different machines differ."""
    try:
        with open("/proc/cpuinfo") as f:
            lines = [x for x in f if x.startswith("model name")]
        return lines[0].split(":", 1)[1].strip()
    except (OSError, IndexError):
        return platform.processor() or platform.machine()


# ---------------------------------------------------------------- memory


def _status_bytes(field):
    with open("/proc/self/status") as f:
        return 1024 * next(int(x.split()[1]) for x in f if x.startswith(field + ":"))


def _peak_tracker():
    """``(method, baseline bytes, peak() -> bytes)`` from now on.

    Resets the kernel's high-water mark (Linux's clear_refs "5") so a peak
    of the data loading is not mistaken for one of training; without it,
    the ru_maxrss delta (a lower bound when loading peaked higher).
    """
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return "VmHWM", _status_bytes("VmRSS"), lambda: _status_bytes("VmHWM")
    except OSError:
        scale = 1 if sys.platform == "darwin" else 1024  # bytes there, else kB

        def maxrss():
            return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale

        return "ru_maxrss", maxrss(), maxrss


def memory_worker(framework, name, n_threads):
    """In a fresh subprocess: peak extra RSS of building + 11 steps."""
    shape = SHAPES[name]
    X, y = random_data(shape, MEMORY_STEPS * shape.batch)
    if framework == "skcnn":
        method, base, peak = _peak_tracker()
        with threadpool_limits(n_threads):
            clf = skcnn_model(shape)
            clf.partial_fit(X, y, classes=np.arange(shape.n_classes))
    else:
        import torch

        torch.set_num_threads(n_threads)
        Xt, yt = torch_tensors(torch, X, y)
        del X  # PyTorch's copy is the loaded data
        method, base, peak = _peak_tracker()
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


def malloc_line():
    if malloc_pinned():
        return "glibc thresholds pinned for timing (mmap 32 MiB, trim 1 GiB)"
    return "default"


def median(values):
    return float(np.median(values)) if values else float("nan")


def ratio(a, b):
    return a / b if b else float("nan")


def measure(names, args, torch):
    """{shape: {figure: {framework: median}}}; repeats interleaved."""
    steps = args.steps or (3 if args.quick else 30)
    repeats = args.repeats or (2 if args.quick else 5)
    results = {}
    for name in names:
        started, shape = time.perf_counter(), SHAPES[name]
        X, y = random_data(shape, steps * shape.batch)
        X_infer = random_data(shape, shape.n_infer // (10 if args.quick else 1), 1)[0]
        Xt, yt = torch_tensors(torch, X, y) if torch else (None, None)
        runs = {"train": ([], []), "infer": ([], [])}
        formats = []
        for _ in range(repeats):  # interleaved, so drift hits both alike
            rate, clf = skcnn_train_rate(shape, X, y, steps)
            runs["train"][0].append(rate)
            if not shape.train_only:
                runs["infer"][0].append(skcnn_infer_rate(clf, X_infer))
            if torch:
                rate, model = torch_train_rate(torch, shape, Xt, yt, steps)
                runs["train"][1].append(rate)
                if not shape.train_only:
                    rates = torch_infer_rates(torch, shape, model, X_infer)
                    runs["infer"][1].append(max(rates.values()))
                    formats.append(max(rates, key=rates.get))
        r = results[name] = {}
        for figure, (ours, theirs) in runs.items():
            ours, theirs = median(ours), median(theirs)
            r[figure] = {"skcnn": ours, "pytorch": theirs, "ratio": ratio(ours, theirs)}
        r["infer"]["pytorch_format"] = max(formats, key=formats.count, default=None)
        ours, method = peak_memory("skcnn", name, args.threads)
        theirs = peak_memory("torch", name, args.threads)[0] if torch else float("nan")
        r["peak_mb"] = {"skcnn": ours, "pytorch": theirs, "ratio": ratio(ours, theirs)}
        r["peak_mb"]["method"] = method
        print(f"measured {name} in {time.perf_counter() - started:.0f} s", flush=True)
    return results


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
        help="time with glibc's adaptive thresholds (see PINNED_MALLOC)",
    )
    parser.add_argument("--memory-worker", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_worker:
        memory_worker(*args.memory_worker, args.threads)
        return
    glibc = platform.libc_ver()[0] == "glibc"
    if glibc and not args.default_malloc and not malloc_pinned():
        # glibc reads its tunables at start-up only: run again with them
        sys.stdout.flush()
        os.execve(sys.executable, [sys.executable] + sys.argv, pinned_env(os.environ))
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
    print(f"{'shape':9s}" + trio * 3 + f"{'skcnn':>8s}{'pytorch':>9s}  pt infer")
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
        fmt = r["infer"]["pytorch_format"] or ""
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
