"""Refuse a fit or a prediction that cannot fit in memory, before allocating.

A training step's arrays are sized by the resolved architecture and the
batch size alone, so their total is known before the first allocation. A
step larger than the memory left would otherwise be killed by the kernel's
OOM killer (in a notebook: the kernel dies and all work is lost); here it is
a ``MemoryError`` that says how much is needed, how much there is, and what
to change.

The estimates follow what ``_network`` and ``_layers`` allocate and err on
the high side: everything a step keeps for its backward pass (im2col
buffers, convolution outputs, pooled maps), plus the largest set of
temporaries alive at once, plus one set of gradients per thread part, the
model, the optimizer state and the best-weights copy. Set the environment
variable ``SKCNN_CHECK_MEMORY=0`` to skip the check.
"""

import os
from collections import namedtuple
from math import ceil, prod

import numpy as np

from . import _engine
from ._blocks import Standardize
from ._im2col import FEW_CHANNELS
from ._image import resolve_image_shape
from ._network import Design, build_network
from ._parallel import blas_threads, n_parts, training_parts
from ._params import check_augment, resolve_batch_size
from ._sysmem import available_memory
from ._winograd import chunk_share, values_per_image, weight_values

# Below this an estimate is not worth the few file reads of the memory
# query: no machine that runs NumPy lacks it, so normal fits and predictions
# stay pure arithmetic.
_QUERY_ABOVE = 64 * 2**20

# Only this fraction of the available memory is planned for: the rest of
# the process (and of the machine) keeps allocating while we run.
_USABLE_FRACTION = 0.9

# Allowance for what the estimates leave out: small temporaries, Python
# objects, allocator fragmentation.
_HEADROOM = 1.1

# A fit's large arrays come from its workspace (``skcnn._workspace``): one
# pool of buffers per thread, a buffer reused for arrays of up to its size
# and at least half of it, so the workspace holds more than the arrays alive
# at its peak (measured 10-30 % more with 2 threads).
_WORKSPACE_SLACK = 1.5


# --------------------------------------------------------------------------
# Estimates (bytes)
# --------------------------------------------------------------------------

FitEstimate = namedtuple("FitEstimate", "total model step copies batch_size")


def _block_sizes(block):
    """Values per sample: input, padded input, im2col, conv, pooled, one tap."""
    height, width, channels = block.in_shape
    (top, bottom), (left, right) = block.pads
    kh, kw = block.kernel
    padded_h, padded_w = height + top + bottom, width + left + right
    padded = padded_h * padded_w * channels if top or bottom or left or right else 0
    if kw * channels < FEW_CHANNELS:  # padded either way, in column phases
        padded = padded_h * (padded_w + block.stride * block.pool[1]) * channels
    conv_h, conv_w = block.conv_hw
    cols = conv_h * conv_w * kh * kw * channels
    conv = conv_h * conv_w * block.filters
    tap = conv_h * conv_w * channels  # one kernel tap's share of dx
    return height * width * channels, padded, cols, conv, prod(block.out_shape), tap


def _winograd_sizes(block, part_rows, itemsize):
    """:func:`~skcnn._winograd.values_per_image` for a call on
    ``part_rows`` images: the chunk buffers (all but ``kept``) are there
    for one chunk of images at a time."""
    sizes = values_per_image(block.in_shape, block.filters, block.conv_hw)
    share = chunk_share(
        block.in_shape, block.filters, block.conv_hw, part_rows, itemsize
    )
    chunked = [ceil(v * share) for v in sizes[1:]]
    return sizes._replace(**dict(zip(sizes._fields[1:], chunked)))


def _winograd_weights(arch):
    """Values of the weights' transforms one training part's Winograd block
    holds."""
    sizes = [
        weight_values(b.in_shape[2], b.filters, b.conv_hw, train=True)
        for b in arch.conv_blocks
        if b.winograd
    ]
    return max(sizes, default=0)


def _input_values(arch):
    if arch.conv_blocks:
        return prod(arch.conv_blocks[0].in_shape)
    return arch.dense_sizes[0]


def step_values_per_sample(
    arch, part_rows, itemsize, dropout=0.0, augment_shift=None, in_flight=1.0
):
    """Values one sample adds to the peak of a training step in parts of
    ``part_rows`` rows, ``in_flight`` of the rows being computed at once.

    What the forward pass keeps for the backward pass, for every block at
    once (the caches live until the step ends), plus the largest set of
    temporaries alive together in any one block's forward or backward pass
    (a Winograd convolution's chunk buffers only in the parts in flight).
    """
    smooth = arch.activation in ("tanh", "logistic")  # their grads need temps
    kept, transient = 0, 0
    for k, block in enumerate(arch.conv_blocks):
        inp, padded, cols, conv, pooled, tap = _block_sizes(block)
        # the convolution's cache and temporaries: forward, backward (the
        # first block computes no dx)
        if block.winograd:
            sizes = _winograd_sizes(block, part_rows, itemsize)
            conv_kept = sizes.kept
            conv_forward = ceil(in_flight * sizes.forward)
            chunks = sizes.backward + (sizes.dx if k else 0)
            conv_backward = (inp if k else 0) + ceil(in_flight * chunks)
        else:  # im2col; backward: dx and one tap
            conv_kept, conv_forward = cols, padded
            conv_backward = (inp + tap) if k else 0
        # a max-pool keeps its maxima's window positions, one byte each
        positions = -(-pooled // 4) if block.pooling == "max" else 0
        if arch.batch_norm:
            # the normalized map, the output, and the activations the
            # gradient is taken at: with max pooling, the output itself
            kept += conv_kept + conv + pooled + (positions or conv)
        elif block.pools_first:  # the output (the pooled activations)
            kept += conv_kept + pooled + positions
        else:  # the activations and the output
            kept += conv_kept + conv + pooled
        norm = conv if arch.batch_norm else 0  # the normalization's input gradient
        # the convolution's input side, then the conv output (kept only by
        # average pooling without normalization) or the activations before
        # pooling
        forward = conv_forward + (conv if arch.batch_norm or block.pools_first else 0)
        # the incoming delta, the pooling's dx, the activation's and the
        # normalization's temporaries, then the convolution's
        backward = conv + pooled + (2 * conv if smooth else conv // 4) + norm
        transient = max(transient, forward, backward + conv_backward)
    dense = arch.dense_sizes
    hidden = sum(dense[1:-1])
    # per layer its input, output, delta and the delta w.r.t. its input
    kept += 3 * dense[0] + 4 * sum(dense[1:]) + 3 * hidden * bool(dropout)
    kept += 6 * dense[-1]  # logits, probabilities, dlogits, targets
    # the minibatch copy of X (shuffled rows), the input scaling's copy and
    # augmentation's copies
    first = _input_values(arch)
    inputs = first * (2 if _scales_input(arch) else 1)
    if augment_shift is not None and arch.conv_blocks:
        height, width, channels = arch.conv_blocks[0].in_shape
        inputs += (height + 2 * augment_shift) * (width + 2 * augment_shift) * channels
        inputs += 2 * first
    return kept + transient + inputs


def _scales_input(arch):
    return isinstance(arch.layers[0], Standardize)


def predict_values_per_sample(arch, part_rows, itemsize):
    """Values one sample occupies at the peak of an inference pass in
    parts of ``part_rows`` rows."""
    # the input scaling's copy of the input, alive through the first layer
    peak = previous = _input_values(arch) if _scales_input(arch) else 0
    for k, block in enumerate(arch.conv_blocks):
        inp, padded, cols, conv, pooled, _ = _block_sizes(block)
        # alive: the block's input (a view of X for the first block) and,
        # unless the previous block pooled first, that block's conv output,
        # held by forward's ``z`` until this block's conv returns
        inp = inp if k else 0
        if block.winograd:  # no padded copy nor im2col: a chunk's buffers
            padded, cols = 0, _winograd_sizes(block, part_rows, itemsize).predict
        peak = max(peak, inp + previous + padded + cols + conv, inp + conv + pooled)
        previous = 0 if block.pools_first else conv
    last = prod(arch.conv_blocks[-1].out_shape) if arch.conv_blocks else 0
    # each dense layer's output, and the one before it
    return max(peak, previous + last + 2 * max(arch.dense_sizes[1:]))


def _param_sizes(arch):
    """(trainable values, all state values, largest weight array)."""
    shapes = arch.coef_shapes
    coefs = [prod(s) for s in shapes]
    trainable = sum(coefs) + sum(s[-1] for s in shapes)
    state = trainable
    if arch.batch_norm:
        filters = sum(b.filters for b in arch.conv_blocks)
        trainable += filters  # the scales
        state += 3 * filters  # and the running means and variances
    return trainable, state, max(coefs)


def batch_size_for(est, n_samples):
    """The minibatch size a fit on ``n_samples`` uses (no warning here)."""
    return resolve_batch_size(est.batch_size, n_samples)


def fit_estimate(
    est,
    arch,
    n_samples,
    itemsize,
    *,
    new_model,
    new_optimizer,
    copy_bytes=0,
    batch_size=None,
):
    """Peak bytes a fit of ``est`` on ``n_samples`` samples will allocate.

    ``new_model``: the weights, their best copy and the optimizer are
    allocated by this fit (a first fit); ``new_optimizer``: only the
    optimizer is (a warm start). ``copy_bytes``: a copy of X still to be
    made (the conversion to the compute dtype). ``batch_size`` overrides
    the one ``est`` would use.
    """
    batch = batch_size or batch_size_for(est, n_samples)
    trainable, state, largest = _param_sizes(arch)
    solver_copies = 1 if est.solver == "sgd" else 2  # velocities; Adam's m, v
    model = 2 * state if new_model else 0  # the weights and their best copy
    if new_model or new_optimizer:
        model += solver_copies * trainable
    augment = check_augment(est.augment)
    # The minibatch is split into parts, each thread working on one part at
    # a time: the activations of one part per thread are alive at once. Each
    # part computes its own gradients: one per thread in flight and at most
    # two more per thread waiting to be summed into the first. The L2 term
    # and the optimizer's update then make two temporaries of the largest
    # weight array.
    # With batch norm every part's activations live until the backward pass
    # (the parts meet at each normalization), as the whole batch's would.
    parts = training_parts(batch, arch.max_values_per_sample())
    workers = min(parts, blas_threads())
    # an epoch's last, smaller batch may be split into larger parts, and the
    # workspace keeps the buffers of both
    part_rows = max(
        _part_rows(batch, arch, training_parts),
        _part_rows(n_samples % batch, arch, training_parts),
    )
    rows = batch if arch.batch_norm else min(batch, workers * part_rows)
    grads = min(parts, 3 * workers)
    shift = None if augment is None else augment[0]
    in_flight = min(rows, workers * part_rows) / rows
    per_sample = step_values_per_sample(
        arch, part_rows, itemsize, est.dropout, shift, in_flight
    )
    activations = rows * per_sample + workers * _winograd_weights(arch)
    activations *= _WORKSPACE_SLACK
    # A dense layer's weight gradient is not computed per part: its factors
    # (the layer's inputs and output gradients) are collected from every
    # part and multiplied once (OuterSum).
    dense = sum(d.n_in * d.n_out for d in arch.dense_layers)
    factors = batch * sum(d.n_in + d.n_out for d in arch.dense_layers)
    grads = grads * (trainable - dense) + dense + factors
    # the workspace keeps the activations' buffers while the L2 term and the
    # optimizer take theirs: a sum, not the larger of the two
    step = (activations + 2 * largest + grads) * itemsize
    if est.early_stopping:
        # the held-out validation set is scored between epochs, on top of
        # the buffers the fit's workspace keeps
        step += predict_estimate(arch, n_samples, itemsize)
        copy_bytes += n_samples * _input_values(arch) * itemsize  # the split's copy
    peak = model * itemsize + step
    if new_model:  # initialization draws each weight array in float64
        peak = max(peak, state * itemsize + 8 * largest)
    total = int(_HEADROOM * peak) + copy_bytes
    return FitEstimate(total, model * itemsize, step, copy_bytes, batch)


def predict_estimate(arch, n_samples, itemsize):
    """Peak bytes of predicting ``n_samples`` samples (one chunk at a time)."""
    values_per_sample = arch.max_values_per_sample()
    chunk = min(n_samples, max(1, _engine.PREDICT_CHUNK_VALUES // values_per_sample))
    # a chunk is split into parts, one part per thread alive at a time (the
    # threads never outnumber a chunk's parts, see predict_rows); the last,
    # shorter chunk's parts may be larger than a full one's, up to twice
    parts = n_parts(chunk, values_per_sample)
    part_rows = max(_part_rows(chunk, arch), _part_rows(n_samples % chunk, arch))
    workers = min(parts, blas_threads())
    rows = min(n_samples, workers * part_rows)
    return _predict_bytes(arch, n_samples, itemsize, rows, part_rows)


def _part_rows(n_rows, arch, rule=n_parts):
    """Rows in the largest part of ``n_rows`` rows split by ``rule``
    (:func:`~skcnn._parallel.n_parts` or ``training_parts``), 0 for none."""
    if not n_rows:
        return 0
    return -(-n_rows // rule(n_rows, arch.max_values_per_sample()))


def predict_bound(arch, n_samples, itemsize):
    """An upper bound of :func:`predict_estimate` that reads no thread
    count: two chunks' activations alive at once, in one-row parts (the
    most Winograd chunk buffers per row), one thread per part of a chunk."""
    values = arch.max_values_per_sample()
    chunk = max(1, _engine.PREDICT_CHUNK_VALUES // values)
    # twice a chunk: parts of a last, shorter chunk are at most twice a full
    # chunk's, and no more of them run at once than a chunk has
    rows = min(n_samples, 2 * chunk)
    return _predict_bytes(arch, n_samples, itemsize, rows, 1)


def _predict_bytes(arch, n_samples, itemsize, rows, part_rows):
    """Peak bytes of predicting with ``rows`` samples' activations alive, in
    parts of ``part_rows`` rows."""
    # the output and what predict / predict_proba make of it (a binary
    # output is stacked with its complement)
    n_outputs = arch.dense_sizes[-1]
    outputs = n_samples * (4 if n_outputs == 1 else n_outputs + 2)
    values = rows * predict_values_per_sample(arch, part_rows, itemsize) + outputs
    values += _inference_kernels(arch)
    return int(_HEADROOM * values * itemsize)


def _inference_kernels(arch):
    """Values a predict call prepares once for all its parts (see
    :func:`~skcnn._network.for_inference`): each Winograd block's
    transformed kernel, each batch-normalized block's folded one."""
    values = 0
    for block in arch.conv_blocks:
        if block.winograd:
            channels, filters = block.in_shape[2], block.filters
            values += weight_values(channels, filters, block.conv_hw, train=False)
        if block.batch_norm:
            values += prod(block.coef_shape) + block.filters
    return values


# --------------------------------------------------------------------------
# The checks
# --------------------------------------------------------------------------


def _room_for(needed):
    """None if ``needed`` bytes fit (or cannot be known), else the bytes free."""
    if needed < _QUERY_ABOVE:
        return None
    if os.environ.get("SKCNN_CHECK_MEMORY", "1").lower() in ("0", "false", "no"):
        return None
    available = available_memory()
    if available is None or needed <= _USABLE_FRACTION * available:
        return None
    return available


def format_bytes(n):
    """``n`` bytes for people: 512 B, 3.4 MB, 58.3 GB (powers of 1000)."""
    for unit, size in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{int(n)} B"


def check_fit_memory(
    est, arch, n_samples, dtype, *, new_model, new_optimizer, copy_bytes=0, held=0
):
    """Raise MemoryError if the fit's estimated peak exceeds the free memory.

    ``held``: bytes of it held already (``partial_fit``'s kept buffers).
    """
    itemsize = np.dtype(dtype).itemsize
    settings = dict(new_model=new_model, new_optimizer=new_optimizer)
    settings["copy_bytes"] = copy_bytes
    estimate = fit_estimate(est, arch, n_samples, itemsize, **settings)
    held = min(held, estimate.step)  # the kept buffers serve the step alone
    available = _room_for(estimate.total - held)
    if available is None:
        return

    def fits(batch):
        total = fit_estimate(
            est, arch, n_samples, itemsize, batch_size=batch, **settings
        ).total
        return total - held <= _USABLE_FRACTION * available

    # the estimate grows with the batch size: bisect for the largest that fits
    low, high = 0, estimate.batch_size - 1
    while low < high:
        middle = (low + high + 1) // 2
        low, high = (middle, high) if fits(middle) else (low, middle - 1)
    parts = []
    if estimate.model:
        parts.append(f"model and optimizer state: {format_bytes(estimate.model)}")
    parts.append(
        f"one training step of batch_size={estimate.batch_size}: "
        f"{format_bytes(estimate.step)}"
    )
    if estimate.copies:
        parts.append(f"copies of X: {format_bytes(estimate.copies)}")
    raise MemoryError(
        f"This fit needs an estimated {format_bytes(estimate.total)} of memory "
        f"({', '.join(parts)}) but only {format_bytes(available)} is available. "
        + _advice(arch, estimate, itemsize, largest_batch=low)
    )


def _advice(arch, estimate, itemsize, largest_batch):
    hints = []
    weights_dominate = estimate.model > estimate.step
    if estimate.batch_size > 1 and not weights_dominate:
        hints.append(
            f"a smaller batch_size (now {estimate.batch_size}; "
            + (
                f"at most {largest_batch} fits)"
                if largest_batch
                else "even 1 is too large)"
            )
        )
    if arch.conv_blocks:
        hints.append("more pooling (a larger pool_size) or larger strides")
        last = arch.conv_blocks[-1]
        if not arch.global_pooling and last.out_shape[0] * last.out_shape[1] > 1:
            flat = arch.dense_sizes[0] * arch.dense_sizes[1]
            hints.append(
                "global_pooling=True (flattening the last "
                f"{'x'.join(map(str, last.out_shape))} feature map into "
                f"{arch.dense_sizes[1]} units takes {flat:,} weights)"
            )
    if len(arch.dense_sizes) > 2 and weights_dominate:
        hints.append("smaller hidden_layer_sizes")
    if itemsize == 8:
        hints.append("float32 input instead of float64 (halves the memory)")
    advice = "To fit, use " + "; or ".join(hints) + "." if hints else ""
    return advice + " (Set SKCNN_CHECK_MEMORY=0 to skip this check.)"


def check_predict_memory(arch, n_samples, dtype):
    """Raise MemoryError if predicting even one chunk cannot fit in memory."""
    itemsize = np.dtype(dtype).itemsize
    chunk = max(1, _engine.PREDICT_CHUNK_VALUES // arch.max_values_per_sample())
    # Under the size worth querying (any prediction of a few images) the
    # check stops here, without reading the BLAS thread count, which would
    # cost a one-image predict microseconds.
    if predict_bound(arch, n_samples, itemsize) < _QUERY_ABOVE:
        return
    needed = predict_estimate(arch, n_samples, itemsize)
    available = _room_for(needed)
    if available is None:
        return
    raise MemoryError(
        f"Predicting needs an estimated {format_bytes(needed)} of memory "
        f"(images are predicted {min(chunk, n_samples)} at a time) but only "
        f"{format_bytes(available)} is available. Free memory, predict fewer "
        "samples per call, or fit a network with smaller feature maps: more "
        "pooling (a larger pool_size) or larger strides"
        + (", and float32 input instead of float64." if itemsize == 8 else ".")
        + " (Set SKCNN_CHECK_MEMORY=0 to skip this check.)"
    )


def check_memory_before_copy(est, X, sample_shape, dtype, plan):
    """The memory check of a fit, before ``validate_data`` copies X.

    ``plan`` is ``(first_pass, incremental)``: a new model, or an update.

    The conversion of X to the compute dtype (uint8 images to float32,
    say) is a copy of the whole data set: it counts too. A first fit's
    network needs the number of outputs, known only once y is
    validated; 1 is a lower bound here, and the base class's ``_initialize`` checks the
    exact network.
    """
    first_pass, incremental = plan
    shape = getattr(X, "shape", None)
    if shape is None or len(shape) != 2 or min(shape) < 1:
        return  # validate_data reports it
    n_samples, n_features = int(shape[0]), int(shape[1])
    if first_pass:
        try:
            image_shape = resolve_image_shape(n_features, est.image_shape, sample_shape)
            net = build_network(image_shape, Design.of(est), 1, "logistic")
        except ValueError:
            return  # reported below, in the usual order
    else:
        net = est._net
    same = getattr(X, "dtype", None) == dtype
    copy = 0 if same else n_samples * n_features * np.dtype(dtype).itemsize
    kept = getattr(est, "_workspace", None) if incremental else None
    check_fit_memory(
        est,
        net,
        n_samples,
        dtype,
        new_model=first_pass,
        new_optimizer=not incremental,
        copy_bytes=copy,
        held=0 if kept is None else kept.nbytes,
    )
