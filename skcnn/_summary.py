"""``est.summary()``: the network as a table, in the spirit of Keras's
``model.summary()``.

One row per layer -- a conv block is shown as its parts (conv, batch norm,
activation, pooling) -- with its output shape for one sample and its
parameter counts, then the totals, the input scaling, the compute dtype and
the memory estimates of ``_memory`` for one training step and one
prediction chunk. Everything is read from the resolved network
(``_network.build_network``), never recomputed from the parameters, so the
table shows what a fit builds: clipped kernels, trimmed pools and all.
"""

from dataclasses import dataclass
from math import prod

import numpy as np
from sklearn.base import is_classifier
from sklearn.exceptions import NotFittedError

from . import _engine
from ._blocks import (
    ConvBlock,
    Dense,
    Dropout,
    Flatten,
    GlobalAvgPool,
    Standardize,
)
from ._memory import batch_size_for, fit_estimate, format_bytes, predict_estimate
from ._network import Design, build_network
from ._params import check_image_shape

_HEADER = ("Layer", "Output shape", "Params", "Non-trainable")

_SCALINGS = {
    "minmax": "minmax (per-channel minimum and range)",
    "standard": "standard (per-channel mean/std)",
}


@dataclass(frozen=True)
class Row:
    """One line of the table.

    ``trainable`` is None for the output layer before fit (the number of
    outputs is unknown); ``stop`` is the ``stop`` of ``_network.forward``
    whose output has this row's shape, None for the parts inside a fused
    conv block.
    """

    name: str
    shape: tuple
    trainable: int
    fixed: int = 0  # non-trainable values
    stop: int = None
    per_output: int = None  # the output layer's parameters per output


def summary(est):
    """The summary table of ``est`` (see ``BaseCNN.summary``)."""
    net, image_shape, dtype, fitted = _resolve(est)
    rows = _input_rows(est, image_shape, fitted) + layer_rows(net, fitted)
    lines = [_title(est, image_shape, net, fitted)]
    lines += _table(rows)
    lines += _totals(rows, dtype)
    lines += _settings(est, dtype, fitted)
    lines += _memory_lines(est, net, dtype, fitted)
    return "\n".join(lines)


def table_rows(est):
    """The table's :class:`Row` s, input rows first."""
    net, image_shape, _, fitted = _resolve(est)
    return _input_rows(est, image_shape, fitted) + layer_rows(net, fitted)


# --------------------------------------------------------------------------
# The network
# --------------------------------------------------------------------------


def _resolve(est):
    """(network, image shape, compute dtype, fitted) of ``est``."""
    # the memory estimates read the current parameters: check them first
    est._validate_params()
    if hasattr(est, "coefs_"):
        dtype = np.dtype(est.coefs_[0].dtype)
        return est._net, tuple(est.image_shape_), dtype, True
    image_shape = _unfitted_image_shape(est)
    net = _unfitted_network(est, image_shape)
    return net, image_shape, np.dtype(np.float32), False


def _unfitted_image_shape(est):
    """``image_shape`` if it is (height, width, channels), else an error."""
    image_shape = check_image_shape(est.image_shape)
    if image_shape is None or len(image_shape) != 3:
        raise NotFittedError(
            f"This {type(est).__name__} instance is not fitted yet and "
            f"image_shape={est.image_shape!r} does not fix the shape of its "
            "input images (a (height, width) shape takes its number of channels "
            "from X). Call fit first, or give image_shape=(height, width, "
            "channels) to see the network before fitting."
        )
    return image_shape


def _unfitted_network(est, image_shape):
    """The network ``fit`` would build for images of ``image_shape``.

    The number of outputs comes from ``y``: the network is built with one
    output, and the output layer's parameters are shown per output.
    """
    out_activation = None if is_classifier(est) else est._out_activation()
    return build_network(image_shape, Design.of(est), 1, out_activation)


def _input_rows(est, shape, fitted):
    """The input and, when the input is standardized, its scaling."""
    rows = [Row("input", shape, 0, stop=0)]
    if fitted:
        mean = getattr(est, "input_offset_", None)
        scale = getattr(est, "input_scale_", None)
        if mean is not None:
            n_stats = np.size(mean) + (0 if scale is None else np.size(scale))
            rows.append(Row("input scaling", shape, 0, n_stats, stop=0))
    elif getattr(est, "input_scaling", None) is not None:
        # a mean and a scale per channel, fitted on X
        rows.append(Row("input scaling", shape, 0, 2 * shape[-1], stop=0))
    return rows


def _conv_shape(block):
    """The full conv output (what Keras shows), before floor-mode pooling
    trims the rows/columns it never reads."""
    (top, bottom), (left, right) = block.pads
    height, width, _ = block.in_shape
    kh, kw = block.kernel
    return (
        (height + top + bottom - kh) // block.stride + 1,
        (width + left + right - kw) // block.stride + 1,
        block.filters,
    )


def _conv_rows(block, stop):
    kh, kw = block.kernel
    name = f"conv {kh}x{kw}, {block.filters} filters"
    if block.stride != 1:
        name += f", stride {block.stride}"
    if any(block.pads[0]) or any(block.pads[1]):
        name += ", same"
    n_coefs = prod(block.coef_shape)
    filters = block.filters
    conv = _conv_shape(block)
    pooled = block.pool != (1, 1)
    last = None if pooled else stop
    if block.batch_norm:
        # the block's intercepts are the normalization's shift: the conv has
        # no bias of its own; the running means and variances are fixed
        rows = [
            Row(name, conv, n_coefs),
            Row("batch norm", conv, 2 * filters, 2 * filters),
            Row(block.activation, conv, 0, stop=last),
        ]
    else:
        rows = [Row(f"{name}, {block.activation}", conv, n_coefs + filters, stop=last)]
    if pooled:
        ph, pw = block.pool
        rows.append(
            Row(f"{block.pooling} pool {ph}x{pw}", block.out_shape, 0, stop=stop)
        )
    return rows


def layer_rows(net, fitted=True):
    """The rows of the network's layers (without the input rows)."""
    rows = []
    last = len(net.layers) - 1
    for i, layer in enumerate(net.layers):
        stop = i + 1
        if isinstance(layer, Standardize):
            continue  # the "input scaling" row, from the fitted statistics
        if isinstance(layer, ConvBlock):
            rows += _conv_rows(layer, stop)
        elif isinstance(layer, Flatten):
            rows.append(Row("flatten", (layer.out_size,), 0, stop=stop))
        elif isinstance(layer, GlobalAvgPool):
            rows.append(Row("global avg pool", (layer.out_size,), 0, stop=stop))
        elif isinstance(layer, Dropout):
            rows.append(Row(f"dropout {layer.rate:g}", (layer.units,), 0, stop=stop))
        elif isinstance(layer, Dense) and i == last:
            activation = net.out_activation or "softmax/logistic"
            name = f"output dense, {activation}"
            if fitted:
                n_params = prod(layer.coef_shape) + layer.n_out
                rows.append(Row(name, (layer.n_out,), n_params, stop=stop))
            else:
                per_output = layer.n_in + 1  # its weights and bias
                row = Row(name, ("n_outputs",), None, stop=stop, per_output=per_output)
                rows.append(row)
        elif isinstance(layer, Dense):
            n_params = prod(layer.coef_shape) + layer.n_out
            name = f"dense {layer.n_out}, {layer.activation}"
            rows.append(Row(name, (layer.n_out,), n_params, stop=stop))
        else:  # a layer kind this table does not know yet: shape and weights
            shape = getattr(layer, "out_shape", None) or (layer.out_size,)
            coef_shape = getattr(layer, "coef_shape", None)
            n_params = prod(coef_shape) + coef_shape[-1] if coef_shape else 0
            rows.append(Row(type(layer).__name__, tuple(shape), n_params, stop=stop))
    return rows


# --------------------------------------------------------------------------
# Text
# --------------------------------------------------------------------------


def _shape_text(shape):
    return "(" + ", ".join(map(str, shape)) + ("," if len(shape) == 1 else "") + ")"


def _line(cells, widths):
    """Left-aligned text columns, right-aligned counts, two spaces apart."""
    name, shape, trainable, fixed = cells
    w = widths
    line = f"{name:<{w[0]}}  {shape:<{w[1]}}  {trainable:>{w[2]}}  {fixed:>{w[3]}}"
    return line.rstrip()


def _title(est, image_shape, net, fitted):
    image = "x".join(map(str, image_shape))
    name = type(est).__name__
    if fitted:
        n = net.n_outputs
        return f"{name}: {image} images (h x w x c) -> {n} output{'s' * (n > 1)}"
    return f"{name}, not fitted: {image} images (image_shape) -> n_outputs set at fit"


def _table(rows):
    cells = []
    for row in rows:
        if row.trainable is None:  # the output layer before fit
            trainable = f"{row.per_output:,}/output"
        else:
            trainable = f"{row.trainable:,}"
        fixed = f"{row.fixed:,}" if row.fixed else ""
        cells.append((row.name, _shape_text(row.shape), trainable, fixed))
    # columns as wide as their widest cell: long conv names stay aligned
    widths = [max(len(c[i]) for c in cells + [_HEADER]) for i in range(4)]
    widths[0] = max(widths[0], 30)
    rule = "=" * (sum(widths) + 2 * (len(widths) - 1))
    lines = [rule, _line(_HEADER, widths), rule.replace("=", "-")]
    lines += [_line(c, widths) for c in cells]
    lines.append(rule)
    return lines


def _totals(rows, dtype):
    trainable = sum(r.trainable for r in rows if r.trainable is not None)
    fixed_parts = []
    norm = sum(r.fixed for r in rows if r.name == "batch norm")
    if norm:
        fixed_parts.append(f"batch-norm running means and variances {norm:,}")
    scaling = sum(r.fixed for r in rows if r.name == "input scaling")
    if scaling:
        fixed_parts.append(f"input scaling {scaling:,}")
    fixed = sum(r.fixed for r in rows)
    size = format_bytes((trainable + fixed) * dtype.itemsize)
    output = rows[-1].per_output
    per_output = "" if output is None else f" + {output:,} per output"
    lines = [f"Trainable params: {trainable:,}{per_output}"]
    lines.append(
        f"Non-trainable params: {fixed:,}"
        + (f" ({', '.join(fixed_parts)})" if fixed_parts else "")
    )
    lines.append(f"Total params: {trainable + fixed:,}{per_output} ({size} in {dtype})")
    return lines


def _settings(est, dtype, fitted):
    if fitted:
        scaled = getattr(est, "input_offset_", None) is not None
        value = est._fitted_params["input_scaling"] if scaled else None
        scaling = "none" if value is None else _SCALINGS.get(value, str(value))
        dtype_text = str(dtype)
    else:
        value = getattr(est, "input_scaling", None)
        scaling = "none" if value is None else _SCALINGS.get(value, str(value))
        dtype_text = "float32 (float64 if X is float64), set at fit"
    return [f"Input scaling: {scaling}", f"Compute dtype: {dtype_text}"]


def _memory_lines(est, net, dtype, fitted):
    itemsize = dtype.itemsize
    # a fit on exactly one batch: the step at the configured batch size
    # ("auto": the size a large data set gets)
    batch = batch_size_for(est, 2**31)
    fit = fit_estimate(
        est, net, batch, itemsize, new_model=True, new_optimizer=True, batch_size=batch
    )
    chunk = max(1, _engine.PREDICT_CHUNK_VALUES // net.max_values_per_sample())
    predict = predict_estimate(net, chunk, itemsize)
    setting = "'auto': " if est.batch_size == "auto" else ""
    items = [
        (f"one training step (batch_size={setting}{fit.batch_size})", fit.step),
        ("weights, best weights, optimizer state", fit.model),
        ("peak of a fit, X aside (+10% headroom)", fit.total),
        (f"one prediction chunk ({chunk:,} images)", predict),
    ]
    width = max(len(label) for label, _ in items)
    assumed = "" if fitted else " (in float32, with one output)"
    lines = [f"Estimated memory{assumed}:"]
    lines += [f"  {label:<{width}}  {format_bytes(n):>8}" for label, n in items]
    return lines
