"""Time per layer and op of one skcnn training step and of prediction, for
any bench_shapes shape.

Used by ``python benchmarks/bench_shapes.py --profile SHAPE``.
"""

import time
from contextlib import ExitStack, contextmanager
from unittest import mock

import numpy as np
from bench_shapes import ALPHA, random_data  # noqa: E402  (beside this file)
from threadpoolctl import threadpool_limits

from skcnn._network import initialize
from skcnn._workspace import workspace


@contextmanager
def _timed_ops():
    """Wrap the ``_blocks`` primitives, activations and layer specs with
    timers; yields the dict of seconds by op and layer it fills.

    The layer specs' forward/backward set which layer is running (the
    engine may split a batch into parts, each meeting every layer). Times
    are exclusive: a layer's "rest" (its GEMMs for a dense layer, bias and
    batch-norm folding for a conv block at inference) excludes the timed
    ops inside it.
    """
    import skcnn._blocks as blocks
    import skcnn._engine as engine
    from skcnn._layers import ACTIVATION_GRADS, ACTIVATIONS

    totals, stack, layer = {}, [], [None]

    def run(key, fn, args, kwargs):
        stack.append(0.0)  # time spent in timed ops nested inside this one
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            elapsed = time.perf_counter() - start
            totals[key] = totals.get(key, 0.0) + elapsed - stack.pop()
            if stack:
                stack[-1] += elapsed

    def op_timer(label, fn):
        def timed(*a, **k):
            where = "engine" if layer[0] is None else f"layer {layer[0]}"
            return run(f"{label} ({where})", fn, a, k)

        return timed

    def layer_timer(label, fn):
        def wrapper(spec, *args, **kwargs):
            outer, layer[0] = layer[0], spec.index + 1
            try:
                key = f"{label} rest (layer {layer[0]})"
                return run(key, fn, (spec, *args), kwargs)
            finally:
                layer[0] = outer

        return wrapper

    ways = ("forward", "backward")
    ops = [
        *(f"{kind}_{way}" for kind in ("conv2d", "maxpool", "avgpool") for way in ways),
        "batch_moments",
        "batchnorm_normalize",
        "batchnorm_param_grads",
        "batchnorm_input_grad",
    ]
    # the engine computes a batch-normalized part's moments itself
    patched = [
        (m, op, op_timer(op, getattr(m, op)))
        for m in (blocks, engine)
        for op in ops
        if hasattr(m, op)
    ]
    # a batch-normalized block's halves are called by the engine directly
    halves = ("convolve", "normalize", "backward_to_norm", "backward_from_norm")
    for cls, kind, methods in (
        (blocks.ConvBlock, "conv block", ways + halves),
        (blocks.Dense, "dense", ways),
    ):
        patched += [
            (cls, w, layer_timer(f"{kind} {w}", getattr(cls, w))) for w in methods
        ]
    with ExitStack() as patches:
        for owner, attribute, fn in patched:
            patches.enter_context(mock.patch.object(owner, attribute, fn))
        for table, way in zip((ACTIVATIONS, ACTIVATION_GRADS), ways):
            relu = op_timer(f"relu_{way}", table["relu"])
            patches.enter_context(mock.patch.dict(table, relu=relu))
        yield totals


def _timed_runs(run, count, totals):
    """Seconds of ``count`` calls of ``run(k)`` after two warm-up calls,
    whose op times are dropped from ``totals`` too."""
    total = 0.0
    for k in range(count + 2):
        if k == 2:
            totals.clear()
            total = 0.0
        start = time.perf_counter()
        run(k)
        total += time.perf_counter() - start
    return total


def _print_table(title, totals, total, count, rest):
    print(title)
    print(f"{'op':44s} {'ms':>8s} {'share':>7s}")
    rows = sorted(totals.items(), key=lambda kv: -kv[1])
    rows.append((rest, total - sum(totals.values())))
    for key, seconds in rows:
        print(f"{key:44s} {1000 * seconds / count:8.2f} {seconds / total:7.1%}")
    print(f"{'total':44s} {1000 * total / count:8.2f}")


def profile_step(shape, name, steps=20):
    """Time per layer and op of one skcnn training step, then of predicting
    one chunk of images (``predict_proba``'s inner loop), on one thread."""
    from skcnn._engine import (
        PREDICT_CHUNK_VALUES,
        Batch,
        loss_and_gradients,
        predict_rows,
    )
    from skcnn._parallel import n_parts, training_parts

    network = shape.network()
    weights = initialize(network, np.random.RandomState(0), np.float32)
    X, y = random_data(shape, 4 * shape.batch)
    Y = np.eye(shape.n_classes, dtype=np.float32)[y]
    n_conv = len(shape.conv_filters)
    print(f"\n{name}: {shape.label()}")

    def step(k):
        rows = slice((k % 4) * shape.batch, (k % 4 + 1) * shape.batch)
        loss_and_gradients(network, weights, Batch(X[rows], Y[rows]), ALPHA)

    # in a workspace, as in a fit: without it the steps' page faults count
    with _timed_ops() as totals, threadpool_limits(1), workspace():
        step_total = _timed_runs(step, steps, totals)
    parts = training_parts(shape.batch, network.max_values_per_sample())
    _print_table(
        f"One training step, batch {shape.batch} ({parts} part(s)), one thread, "
        f"mean of {steps}; conv blocks are layers 1-{n_conv}, dense {n_conv + 1}+",
        totals,
        step_total,
        steps,
        "loss, L2, part sums, glue",
    )
    # prediction: one chunk as predict_proba computes it (no workspace)
    values = network.max_values_per_sample()
    chunk = min(len(X), max(1, PREDICT_CHUNK_VALUES // values))
    flat = X[:chunk].reshape(chunk, -1)
    image_shape = X.shape[1:]
    passes = 5 * steps
    with _timed_ops() as totals, threadpool_limits(1):
        predict_total = _timed_runs(
            lambda k: predict_rows(network, weights, flat, image_shape),
            passes,
            totals,
        )
    _print_table(
        f"\nPredicting {chunk} images (one chunk, "
        f"{n_parts(chunk, values)} part(s)), one thread, mean of {passes}",
        totals,
        predict_total,
        passes,
        "kernels, chunks, softmax, glue",
    )
