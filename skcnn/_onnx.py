"""Export a fitted CNNClassifier to ONNX (``pip install "skcnn[onnx]"``).

The graph takes the rows users pass to ``predict`` -- ``(N, n_features)``
in (height, width, channels) order, as float32 -- and returns ``label``
and ``probabilities`` (as ``predict`` and ``predict_proba``; the
probabilities in float32). The graph is float32 whatever the model's
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

from ._layers import BATCH_NORM_EPSILON

_OPSET = 17
_ACTIVATIONS = {"relu": "Relu", "tanh": "Tanh", "logistic": "Sigmoid"}


def to_onnx(est):
    try:
        import onnx
        from onnx import TensorProto, helper, numpy_helper
    except ImportError as exc:
        raise ImportError(
            "ONNX export needs the onnx package: pip install 'skcnn[onnx]'"
        ) from exc

    arch = est._net
    model_dtype = est.coefs_[0].dtype
    nodes, inits = [], []
    counter = iter(range(10**6))

    def const(value, name=None, dtype_=np.float32):
        name = name or f"c{next(counter)}"
        array = np.asarray(value, dtype=dtype_)
        inits.append(numpy_helper.from_array(array, name))
        return name

    def node(op, inputs, **attrs):
        out = f"{op.lower()}{next(counter)}"
        nodes.append(helper.make_node(op, inputs, [out], **attrs))
        return out

    def activate(x):
        op = _ACTIVATIONS.get(arch.activation)
        return node(op, [x]) if op else x

    height, width, channels = est.image_shape_
    x = "X"
    if arch.conv_blocks:
        shape = const([-1, height, width, channels], dtype_=np.int64)
        x = node("Transpose", [node("Reshape", [x, shape])], perm=[0, 3, 1, 2])
    weights = est._weights()
    for k, block in enumerate(arch.conv_blocks):
        W = np.ascontiguousarray(np.transpose(est.coefs_[k], (3, 2, 0, 1)))
        (top, bottom), (left, right) = block.pads
        conv_inputs = [x, const(W)]
        if not block.batch_norm:
            conv_inputs.append(const(est.intercepts_[k]))
        x = node(
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
            shift = est.intercepts_[k] - mean * factor
            x = node("Mul", [x, const(factor.reshape(-1, 1, 1))])
            x = node("Add", [x, const(shift.reshape(-1, 1, 1))])
        x = activate(x)
        ph, pw = block.pool
        if (ph, pw) != (1, 1):
            op = "MaxPool" if block.pooling == "max" else "AveragePool"
            x = node(op, [x], kernel_shape=[ph, pw], strides=[ph, pw])
    if arch.conv_blocks:
        if arch.global_pooling:
            x = node("GlobalAveragePool", [x])
        x = node("Transpose", [x], perm=[0, 2, 3, 1])  # flatten in H, W, C order
    x = node("Flatten", [x], axis=1)
    n_dense = len(arch.dense_sizes) - 1
    for k in range(n_dense):
        layer = len(arch.conv_blocks) + k
        x = node("MatMul", [x, const(est.coefs_[layer])])
        x = node("Add", [x, const(est.intercepts_[layer])])
        if k < n_dense - 1:
            x = activate(x)

    classes = np.asarray(est.classes_)
    if est.out_activation_ == "softmax":
        proba = node("Softmax", [x], axis=1)
        index = node("ArgMax", [proba], axis=1, keepdims=0)
    else:
        p = node("Sigmoid", [x])
        if est.n_outputs_ == 1:  # binary: [1 - p, p]
            proba = node("Concat", [node("Sub", [const([[1.0]]), p]), p], axis=1)
            index = node("ArgMax", [proba], axis=1, keepdims=0)
        else:  # multilabel: an indicator row per sample
            proba = p
            label = node("Greater", [p, const(0.5)])
            index = None
    if index is not None:
        if classes.dtype.kind in "OUS":
            table = const(classes.astype(str), dtype_=object)
            label_type = TensorProto.STRING
        else:
            table = const(classes.astype(np.int64), dtype_=np.int64)
            label_type = TensorProto.INT64
        label = node("Gather", [table, index], axis=0)
    else:
        label = node("Cast", [label], to=TensorProto.INT64)
        label_type = TensorProto.INT64
    nodes.append(helper.make_node("Identity", [label], ["label"]))
    nodes.append(helper.make_node("Identity", [proba], ["probabilities"]))

    n_features = est.n_features_in_
    label_shape = ["N"] if index is not None else ["N", est.n_outputs_]
    graph = helper.make_graph(
        nodes,
        "skcnn_CNNClassifier",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["N", n_features])],
        [
            helper.make_tensor_value_info("label", label_type, label_shape),
            helper.make_tensor_value_info(
                "probabilities", TensorProto.FLOAT, ["N", None]
            ),
        ],
        inits,
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", _OPSET)],
        producer_name="skcnn",
    )
    onnx.checker.check_model(model)
    return model
