"""est.summary(): the Keras-style table of layers, parameters and memory (#12)."""

import re

import numpy as np
import pytest
from sklearn.exceptions import NotFittedError

import skcnn
from skcnn import CNNClassifier, CNNRegressor
from skcnn._engine import PREDICT_CHUNK_VALUES
from skcnn._layers import conv2d_forward
from skcnn._network import forward
from skcnn._summary import table_rows

# the classic networks of the hand counts: valid padding
FAST = dict(max_iter=1, batch_size=16, random_state=0, padding="valid")

# (estimator class, parameters, per-sample image shape, number of outputs)
ARCHITECTURES = {
    "reference": (CNNClassifier, {}, (28, 28, 1), 10),
    "batch_norm": (CNNClassifier, dict(batch_norm=True), (12, 11, 2), 3),
    "global_pooling": (
        CNNClassifier,
        dict(conv_filters=(4, 6), global_pooling=True, pooling="avg"),
        (10, 10, 3),
        2,
    ),
    "mlp": (CNNClassifier, dict(conv_filters=(), hidden_layer_sizes=(7, 5)), None, 3),
    "dropout": (
        CNNClassifier,
        dict(conv_filters=(4,), hidden_layer_sizes=(9, 6), dropout=0.3),
        (8, 8, 1),
        4,
    ),
    "strides_same": (
        CNNClassifier,
        dict(conv_filters=(4, 5), strides=(2, 1), padding="same", pool_size=(1, 2)),
        (9, 7, 3),
        3,
    ),
    "regressor": (
        CNNRegressor,
        dict(conv_filters=(3,), kernel_size=5, batch_norm=True),
        (9, 9, 1),
        2,
    ),
}


def _data(shape, n_outputs, regression, n=24):
    rng = np.random.default_rng(0)
    X = rng.uniform(0, 1, (n,) + shape) if shape else rng.uniform(0, 1, (n, 11))
    if regression:
        return X, rng.normal(size=(n, n_outputs))
    return X, np.arange(n) % n_outputs


def _fitted(name):
    cls, params, shape, n_outputs = ARCHITECTURES[name]
    X, y = _data(shape, n_outputs, cls is CNNRegressor)
    return cls(**{**FAST, **params}).fit(X, y), X


def _count(text, label):
    """The number after ``label`` in the summary (thousands separators out)."""
    match = re.search(rf"^{label}: ([\d,]+)", text, re.MULTILINE)
    return int(match.group(1).replace(",", ""))


def _fixed_arrays(est):
    """What the model holds that no gradient updates."""
    arrays = (est.batch_norm_means_ or []) + (est.batch_norm_vars_ or [])
    for name in ("input_offset_", "input_scale_"):  # the input scaling, if any
        if getattr(est, name, None) is not None:
            arrays.append(getattr(est, name))
    return arrays


@pytest.mark.parametrize("name", ARCHITECTURES)
def test_totals_are_the_fitted_arrays(name):
    est, _ = _fitted(name)
    text = est.summary()
    trainable = est.coefs_ + est.intercepts_ + (est.batch_norm_scales_ or [])
    n_trainable = sum(a.size for a in trainable)
    n_fixed = sum(a.size for a in _fixed_arrays(est))
    assert _count(text, "Trainable params") == n_trainable
    assert _count(text, "Non-trainable params") == n_fixed
    assert _count(text, "Total params") == n_trainable + n_fixed
    # the rows add up to the totals
    rows = table_rows(est)
    assert sum(r.trainable for r in rows) == n_trainable
    assert sum(r.fixed for r in rows) == n_fixed


@pytest.mark.parametrize("name", ARCHITECTURES)
def test_shapes_are_the_forward_pass_shapes(name):
    est, X = _fitted(name)
    x = X[:3].reshape((3,) + est.image_shape_).astype(est.coefs_[0].dtype)
    weights = est._weights()
    rows = table_rows(est)
    checked = 0
    for row in rows:
        if row.stop is not None:
            out, _ = forward(est._net, weights, x, stop=row.stop)
            assert row.shape == out.shape[1:], row
            checked += 1
    assert checked == len(est._net.layers) + 1  # every layer and the input
    # a conv row shows the full convolution, before pooling trims it
    conv_rows = [r for r in rows if r.name.startswith("conv ")]
    blocks = [(i, b) for i, b in enumerate(est._net.layers) if hasattr(b, "pads")]
    assert len(conv_rows) == len(blocks)
    for row, (i, block) in zip(conv_rows, blocks):
        block_input, _ = forward(est._net, weights, x, stop=i)
        full, _ = conv2d_forward(
            block_input, weights.coefs[block.index], block.stride, block.pads
        )
        assert row.shape == full.shape[1:], row


def test_reference_network_matches_hand_counts():
    # Keras's counts for the classic MNIST CNN: conv 3x3x32, conv 3x3x64,
    # dense 64 on the flattened 5x5x64 map, 10 softmax outputs
    est, _ = _fitted("reference")
    layers = [(r.name, r.shape, r.trainable) for r in table_rows(est)]
    assert layers == [
        ("input", (28, 28, 1), 0),
        ("input scaling", (28, 28, 1), 0),  # the default: 2 fitted values
        ("conv 3x3, 32 filters, relu", (26, 26, 32), 3 * 3 * 32 + 32),
        ("max pool 2x2", (13, 13, 32), 0),
        ("conv 3x3, 64 filters, relu", (11, 11, 64), 3 * 3 * 32 * 64 + 64),
        ("max pool 2x2", (5, 5, 64), 0),
        ("flatten", (1600,), 0),
        ("dense 64, relu", (64,), 1600 * 64 + 64),
        ("dropout 0.25", (64,), 0),  # the default, in training only
        ("output dense, softmax", (10,), 64 * 10 + 10),
    ]
    text = est.summary()
    assert "Trainable params: 121,930\n" in text
    assert "(1600,)" in text and "(5, 5, 64)" in text


def test_batch_norm_rows_split_the_block():
    est, _ = _fitted("batch_norm")
    names = [r.name for r in table_rows(est)][2:6]  # after input and scaling
    assert names == ["conv 3x3, 32 filters", "batch norm", "relu", "max pool 2x2"]
    norm = [r for r in table_rows(est) if r.name == "batch norm"]
    # scale and shift trainable, running mean and variance fixed
    assert [(r.trainable, r.fixed) for r in norm] == [(64, 64), (128, 128)]
    assert "batch-norm running means and variances 192" in est.summary()


def test_unfitted_summary_from_image_shape_matches_the_fit():
    cls, params, shape, n_outputs = ARCHITECTURES["batch_norm"]
    est = cls(image_shape=shape, **{**FAST, **params})
    before_rows, before = table_rows(est), est.summary()
    assert "not fitted" in before and "n_outputs set at fit" in before
    output = before_rows[-1]
    assert output.shape == ("n_outputs",) and output.trainable is None
    assert "(n_outputs,)" in before and f"{output.per_output}/output" in before

    X, y = _data(shape, n_outputs, regression=False)
    est.fit(X, y)
    after_rows = table_rows(est)
    assert before_rows[:-1] == after_rows[:-1]
    per_output = _count(before, "Trainable params") + output.per_output * n_outputs
    assert per_output == _count(est.summary(), "Trainable params")
    assert re.search(r"\+ [\d,]+ per output", before)
    assert "not fitted" not in est.summary()


def test_unfitted_regressor_names_its_output():
    text = CNNRegressor(image_shape=(6, 6, 2), conv_filters=(3,)).summary()
    assert "output dense, identity" in text


@pytest.mark.parametrize("cls", [CNNClassifier, CNNRegressor])
@pytest.mark.parametrize("image_shape", [None, (8, 8)])
def test_unfitted_without_channels_is_not_fitted_error(cls, image_shape):
    with pytest.raises(
        NotFittedError, match=r"image_shape=\(height, width, channels\)"
    ):
        cls(image_shape=image_shape).summary()


def test_invalid_parameters_are_reported():
    with pytest.raises(ValueError, match="batch_size"):
        CNNClassifier(image_shape=(8, 8, 1), batch_size=0).summary()


def test_fitted_network_survives_set_params():
    est, _ = _fitted("dropout")
    est.set_params(conv_filters=(99,))
    assert "conv 3x3, 4 filters" in est.summary()
    assert "99 filters" not in est.summary()


def test_lines_fit_in_100_columns():
    long = CNNClassifier(
        image_shape=(64, 64, 3),
        conv_filters=(1024,),
        kernel_size=11,
        strides=10,
        padding="same",
        batch_norm=True,
    )
    texts = [long.summary()] + [_fitted(name)[0].summary() for name in ARCHITECTURES]
    for text in texts:
        assert max(len(line) for line in text.splitlines()) <= 100


def test_table_columns_are_aligned():
    lines = _fitted("strides_same")[0].summary().splitlines()
    rules = [i for i, line in enumerate(lines) if set(line) == {"="}]
    header, table = lines[rules[0] + 1], lines[rules[0] + 3 : rules[1]]
    # the counts end under the "Params" header, the shapes start under
    # "Output shape", whatever the width of the layer names
    params_end = header.index("Params") + len("Params")
    shape_start = header.index("Output shape")
    for line in table:
        assert line[shape_start] == "(" and line[shape_start - 1] == " "
        assert line[params_end - 1].isdigit() and line[params_end : params_end + 1] in (
            "",
            " ",
        )


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_compute_dtype_and_bytes(dtype):
    cls, params, shape, n_outputs = ARCHITECTURES["dropout"]
    X, y = _data(shape, n_outputs, regression=False)
    est = cls(**{**FAST, **params}).fit(X.astype(dtype), y)
    text = est.summary()
    assert f"Compute dtype: {np.dtype(dtype)}\n" in text
    n = _count(text, "Total params")
    size = n * np.dtype(dtype).itemsize
    assert f"({skcnn._memory.format_bytes(size)} in {np.dtype(dtype)})" in text


def _memory(text, label):
    match = re.search(rf"^  {re.escape(label)}.*?([\d.]+) (B|kB|MB|GB)$", text, re.M)
    scale = {"B": 1, "kB": 1e3, "MB": 1e6, "GB": 1e9}[match.group(2)]
    return float(match.group(1)) * scale


def test_memory_follows_the_batch_size():
    small = CNNClassifier(
        padding="valid", image_shape=(28, 28, 1), batch_size=8
    ).summary()
    large = CNNClassifier(
        padding="valid", image_shape=(28, 28, 1), batch_size=512
    ).summary()
    assert "one training step (batch_size=8)" in small
    assert "one training step (batch_size=512)" in large
    auto = CNNClassifier(padding="valid", image_shape=(28, 28, 1)).summary()
    assert "(batch_size='auto': 200)" in auto
    step = "one training step"
    # not proportional: the batch is split into parts, one alive per thread
    assert _memory(large, step) > _memory(small, step)
    # the weights do not depend on the batch size: 121,280 + 65 float32
    # weights, their best copy and Adam's two moments
    state = "weights, best weights, optimizer state"
    expected = skcnn._memory.format_bytes(4 * 4 * 121_345)
    for text in (small, large):
        assert re.search(rf"^  {state} +{expected}$", text, re.M)
    assert _memory(large, "peak of a fit, X aside") > _memory(large, step)


def test_prediction_chunk_is_the_engines():
    est, _ = _fitted("reference")
    chunk = PREDICT_CHUNK_VALUES // est._net.max_values_per_sample()
    assert f"one prediction chunk ({chunk:,} images)" in est.summary()
    assert "Estimated memory:" in est.summary()  # no assumption once fitted


def test_input_scaling_row():
    cls, params, shape, n_outputs = ARCHITECTURES["global_pooling"]
    X, y = _data(shape, n_outputs, regression=False)
    for scaling, label in [
        ("standard", "standard (per-channel mean/std)"),
        ("minmax", "minmax (per-channel minimum and range)"),
    ]:
        est = cls(**{**FAST, **params}, input_scaling=scaling).fit(X, y)
        rows = table_rows(est)
        # an offset and a scale per channel, fitted, not trained
        assert (rows[1].name, rows[1].shape, rows[1].fixed) == (
            "input scaling",
            (10, 10, 3),
            6,
        )
        text = est.summary()
        assert f"Input scaling: {label}" in text
        assert "input scaling 6)" in text
        # the fitted one, whatever set_params did since
        other = "minmax" if scaling == "standard" else "standard"
        assert (
            f"Input scaling: {label}" in est.set_params(input_scaling=other).summary()
        )
    est = cls(**{**FAST, **params}, input_scaling=None).fit(X, y)
    assert "Input scaling: none" in est.summary()
    assert "input scaling" not in [r.name for r in table_rows(est)]


def test_input_scaling_before_fit():
    est = CNNClassifier(image_shape=(8, 6, 4), conv_filters=(2,))
    est.input_scaling = "standard"
    assert table_rows(est)[1].fixed == 8  # four means, four scales
    assert "Input scaling: standard (per-channel mean/std)" in est.summary()
    est.input_scaling = None
    assert "Input scaling: none" in est.summary()


def test_loaded_model_has_the_same_summary(tmp_path):
    est, _ = _fitted("batch_norm")
    est.save(tmp_path / "model.npz")
    assert skcnn.load(tmp_path / "model.npz").summary() == est.summary()
