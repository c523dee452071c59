"""Export a fitted skcnn estimator to ONNX (``pip install "skcnn[onnx]"``).

The graph takes the rows users pass to ``predict`` -- ``(N, n_features)``
in (height, width, channels) order, as float32 -- and returns, for a
classifier, ``label`` and ``probabilities`` (as ``predict`` and
``predict_proba``; the probabilities in float32), for a regressor
``variable`` of shape (N, n_outputs). The graph is float32 whatever the model's
dtype: onnxruntime has no float64 Conv, and float32 is what every runtime
runs (skl2onnx exports the same way), so a float64 model's weights are
cast; its probabilities stay within 1e-5 of ``predict_proba``.

It is built with ``onnx.helper`` only: NHWC rows are reshaped and
transposed to ONNX's NCHW, each conv block becomes Conv (+ batch-norm
affine) + activation + pooling in floor mode, and the maps are transposed
back before the flatten so the dense weights keep their (height, width,
channels) order.
"""

import numpy as np
from sklearn.base import is_classifier

from ._batchnorm import BATCH_NORM_EPSILON

_OPSET = 17
_ACTIVATIONS = {"relu": "Relu", "tanh": "Tanh", "logistic": "Sigmoid"}


def to_onnx(est):
    try:
        import onnx
        from onnx import TensorProto, helper
    except ImportError as exc:
        raise ImportError(
            "ONNX export needs the onnx package: pip install 'skcnn[onnx]'"
        ) from exc

    graph = _Graph()
    x = _network_nodes(graph, est)
    if is_classifier(est):
        outputs = _classifier_outputs(graph, est, x)
    else:  # identity output layer: the logits are the prediction
        graph.nodes.append(helper.make_node("Identity", [x], ["variable"]))
        shape = ["N", est.n_outputs_]
        outputs = [helper.make_tensor_value_info("variable", TensorProto.FLOAT, shape)]
    n_features = est.n_features_in_
    model = helper.make_model(
        helper.make_graph(
            graph.nodes,
            f"skcnn_{type(est).__name__}",
            [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["N", n_features])],
            outputs,
            graph.inits,
        ),
        opset_imports=[helper.make_opsetid("", _OPSET)],
        producer_name="skcnn",
    )
    onnx.checker.check_model(model)
    return model


class _Graph:
    """Nodes and constant initializers, with fresh names."""

    def __init__(self):
        self.nodes, self.inits = [], []
        self._counter = iter(range(10**6))

    def const(self, value, dtype=np.float32):
        from onnx import numpy_helper

        name = f"c{next(self._counter)}"
        self.inits.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
        return name

    def node(self, op, inputs, **attrs):
        from onnx import helper

        out = f"{op.lower()}{next(self._counter)}"
        self.nodes.append(helper.make_node(op, inputs, [out], **attrs))
        return out


def _network_nodes(g, est):
    """The network from the input rows ``X`` to the logits; their name."""
    net = est._net
    weights = est._weights()
    model_dtype = est.coefs_[0].dtype

    def activate(x):
        op = _ACTIVATIONS.get(net.activation)
        return g.node(op, [x]) if op else x

    height, width, channels = est.image_shape_
    first = est._input_format() == "channels_first"
    x = "X"  # rows in data_format order
    if weights.input_offset is not None:  # the input scaling, on the rows
        per_row = np.repeat if first else np.tile
        mean = per_row(weights.input_offset, height * width)
        x = g.node("Sub", [x, g.const(mean)])
        x = g.node("Div", [x, g.const(per_row(weights.input_scale, height * width))])
    if first:  # NCHW already; dense layers read (H, W, C) rows
        x = g.node("Reshape", [x, g.const([-1, channels, height, width], np.int64)])
        if not net.conv_blocks:
            x = g.node("Transpose", [x], perm=[0, 2, 3, 1])
    elif net.conv_blocks:
        shape = g.const([-1, height, width, channels], dtype=np.int64)
        x = g.node("Transpose", [g.node("Reshape", [x, shape])], perm=[0, 3, 1, 2])
    for k, block in enumerate(net.conv_blocks):
        W = np.ascontiguousarray(np.transpose(weights.coefs[k], (3, 2, 0, 1)))
        (top, bottom), (left, right) = block.pads
        conv_inputs = [x, g.const(W)]
        if not block.batch_norm:
            conv_inputs.append(g.const(weights.intercepts[k]))
        x = g.node(
            "Conv",
            conv_inputs,
            kernel_shape=list(block.kernel),
            strides=[block.stride, block.stride],
            pads=[top, left, bottom, right],
        )
        if block.batch_norm:  # batch norm at inference: a per-channel affine
            scale, mean, var = weights.scales[k], weights.means[k], weights.vars[k]
            # folded in the model's dtype, rounded to float32 once
            factor = scale / np.sqrt(var + model_dtype.type(BATCH_NORM_EPSILON))
            shift = weights.intercepts[k] - mean * factor
            x = g.node("Mul", [x, g.const(factor.reshape(-1, 1, 1))])
            x = g.node("Add", [x, g.const(shift.reshape(-1, 1, 1))])
        x = activate(x)
        ph, pw = block.pool
        if (ph, pw) != (1, 1):
            op = "MaxPool" if block.pooling == "max" else "AveragePool"
            x = g.node(op, [x], kernel_shape=[ph, pw], strides=[ph, pw])
    if net.conv_blocks:
        if net.global_pooling:
            x = g.node("GlobalAveragePool", [x])
        x = g.node("Transpose", [x], perm=[0, 2, 3, 1])  # flatten in H, W, C order
    x = g.node("Flatten", [x], axis=1)
    dense = net.dense_layers
    for k, layer in enumerate(dense):
        x = g.node("MatMul", [x, g.const(weights.coefs[layer.index])])
        x = g.node("Add", [x, g.const(weights.intercepts[layer.index])])
        if k < len(dense) - 1:
            x = activate(x)
    return x


def _classifier_outputs(g, est, x):
    """``label`` and ``probabilities`` nodes after the logits ``x``."""
    from onnx import TensorProto, helper

    classes = np.asarray(est.classes_)
    if est.out_activation_ == "softmax":
        proba = g.node("Softmax", [x], axis=1)
        index = g.node("ArgMax", [proba], axis=1, keepdims=0)
    else:
        p = g.node("Sigmoid", [x])
        if len(classes) == 1:  # fitted on one class: certain of it
            zero = g.node("Mul", [p, g.const([[0.0]])])
            proba = g.node("Add", [zero, g.const([[1.0]])])
            index = g.node("ArgMax", [proba], axis=1, keepdims=0)
        elif est.n_outputs_ == 1:  # binary: [1 - p, p]
            proba = g.node("Concat", [g.node("Sub", [g.const([[1.0]]), p]), p], axis=1)
            index = g.node("ArgMax", [proba], axis=1, keepdims=0)
        else:  # multilabel: an indicator row per sample
            proba = p
            label = g.node("Greater", [p, g.const(0.5)])
            index = None
    if index is not None:
        if classes.dtype.kind in "OUS":
            table = g.const(classes.astype(str), dtype=object)
            label_type = TensorProto.STRING
        else:
            table = g.const(classes.astype(np.int64), dtype=np.int64)
            label_type = TensorProto.INT64
        label = g.node("Gather", [table, index], axis=0)
    else:
        label = g.node("Cast", [label], to=TensorProto.INT64)
        label_type = TensorProto.INT64
    g.nodes.append(helper.make_node("Identity", [label], ["label"]))
    g.nodes.append(helper.make_node("Identity", [proba], ["probabilities"]))
    label_shape = ["N"] if index is not None else ["N", est.n_outputs_]
    return [
        helper.make_tensor_value_info("label", label_type, label_shape),
        helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", None]),
    ]
