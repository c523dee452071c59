"""Time per layer and op of one skcnn training step, for any bench_shapes shape.

Used by ``python benchmarks/bench_shapes.py --profile SHAPE``.
"""

import time
from contextlib import ExitStack
from unittest import mock

import numpy as np
from bench_shapes import ALPHA, random_data  # noqa: E402  (beside this file)
from threadpoolctl import threadpool_limits

from skcnn._network import initialize
from skcnn._workspace import workspace


def profile_step(shape, name, steps=20):
    """Time per layer and op of one skcnn training step, on one thread.

    The ``_blocks`` primitives and activations are wrapped with timers; the
    layer specs' forward/backward set which layer is running (the engine
    may split a batch into parts, each meeting every layer). Times are
    exclusive: a layer's "rest" (its GEMMs for a dense layer) excludes the
    timed ops inside it.
    """
    import skcnn._blocks as blocks
    import skcnn._engine as engine
    from skcnn._engine import Batch, loss_and_gradients
    from skcnn._layers import ACTIVATION_GRADS, ACTIVATIONS
    from skcnn._parallel import training_parts

    totals, stack, layer = {}, [], [None]
    network = shape.network()

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
    weights = initialize(network, np.random.RandomState(0), np.float32)
    X, y = random_data(shape, 4 * shape.batch)
    Y = np.eye(shape.n_classes, dtype=np.float32)[y]
    step_total = 0.0
    # in a workspace, as in a fit: without it the steps' page faults count
    with ExitStack() as patches, threadpool_limits(1), workspace():
        for owner, attribute, fn in patched:
            patches.enter_context(mock.patch.object(owner, attribute, fn))
        for table, way in zip((ACTIVATIONS, ACTIVATION_GRADS), ways):
            relu = op_timer(f"relu_{way}", table["relu"])
            patches.enter_context(mock.patch.dict(table, relu=relu))
        for step in range(steps + 2):
            rows = slice((step % 4) * shape.batch, (step % 4 + 1) * shape.batch)
            if step == 2:
                totals.clear()  # the first steps warm up
                step_total = 0.0
            start = time.perf_counter()
            loss_and_gradients(network, weights, Batch(X[rows], Y[rows]), ALPHA)
            step_total += time.perf_counter() - start
    parts = training_parts(shape.batch, network.max_values_per_sample())
    n_conv = len(shape.conv_filters)
    print(f"\n{name}: {shape.label()}")
    print(
        f"One training step, batch {shape.batch} ({parts} part(s)), one thread, "
        f"mean of {steps}; conv blocks are layers 1-{n_conv}, dense {n_conv + 1}+"
    )
    print(f"{'op':44s} {'ms':>8s} {'share':>7s}")
    rows = sorted(totals.items(), key=lambda kv: -kv[1])
    rows.append(("loss, L2, part sums, glue", step_total - sum(totals.values())))
    for key, seconds in rows:
        print(f"{key:44s} {1000 * seconds / steps:8.2f} {seconds / step_total:7.1%}")
    print(f"{'total':44s} {1000 * step_total / steps:8.2f}")
