"""Issue #10, fault 9: a step larger than memory raises MemoryError.

Before, such a fit allocated until the kernel's OOM killer ended the process
(in a notebook: the kernel died). Now the memory of the model, of one
training step and of one prediction chunk is estimated before anything is
allocated, and a MemoryError says how much is needed and what to change.
"""

import os
import re
import subprocess
import sys
import textwrap
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from numpy.testing import assert_array_equal

import skcnn
from skcnn import CNNClassifier, _base, _memory, _sysmem
from skcnn import _workspace as ws
from skcnn._layers import conv2d_forward
from skcnn._network import Design, build_network

ROOT = Path(skcnn.__file__).resolve().parents[1]
MB = 10**6


@pytest.fixture
def pretend_available(monkeypatch):
    """Make the machine report ``n`` bytes available, and always ask it."""
    monkeypatch.delenv("SKCNN_CHECK_MEMORY", raising=False)
    monkeypatch.setattr(_memory, "_QUERY_ABOVE", 0)

    def set_available(n):
        monkeypatch.setattr(_memory, "available_memory", lambda: n)

    return set_available


def _estimate_in(message):
    """The estimated bytes a MemoryError message states."""
    number, unit = re.search(
        r"needs an estimated ([\d.]+) ([kMGT]?B)", message
    ).groups()
    return float(number) * {"B": 1, "kB": 1e3, "MB": 1e6, "GB": 1e9, "TB": 1e12}[unit]


REPRODUCTION = textwrap.dedent(
    """
    import resource, sys, time
    import numpy as np
    from skcnn import CNNClassifier

    # the safety net: past 6 GB more an allocation fails instead of the OOM
    # killer ending this process (or the CI machine's other work)
    used = int(open("/proc/self/statm").read().split()[0]) * resource.getpagesize()
    resource.setrlimit(resource.RLIMIT_AS, (used + 6 * 2**30, resource.RLIM_INFINITY))
    X = np.zeros((2, 8192, 8192), np.float32)
    start = time.perf_counter()
    try:
        clf = CNNClassifier(conv_filters=(64,), global_pooling=True, batch_size=2)
        clf.fit(X, [0, 1])
    except MemoryError as exc:
        print(f"{time.perf_counter() - start:.3f}")
        print(exc)
        sys.exit(0)
    sys.exit("the fit did not raise")
    """
)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="RLIMIT_AS, /proc")
def test_issue_reproduction_raises_memory_error_quickly():
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    env.pop("SKCNN_CHECK_MEMORY", None)
    proc = subprocess.run(
        [sys.executable, "-c", REPRODUCTION],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr  # not killed (-9)
    seconds, message = proc.stdout.split("\n", 1)
    assert float(seconds) < 5  # checked before allocating, not after failing
    # our message, not NumPy's "Unable to allocate": it says what to change
    assert "batch_size=2" in message and "available" in message, message
    assert "pool_size" in message and "strides" in message, message
    # one sample's 8190x8190x64 convolution output alone is 17 GB
    assert _estimate_in(message) >= 2 * 8190 * 8190 * 64 * 4


def test_fit_larger_than_available_memory_raises(pretend_available):
    rng = np.random.default_rng(0)
    X = rng.uniform(size=(200, 64, 64)).astype(np.float32)
    y = np.arange(200) % 2
    pretend_available(100 * MB)
    # batch norm: a minibatch is not split into parts, so its activations
    # all live at once and the batch size drives the memory
    est = CNNClassifier(
        batch_size=200, max_iter=1, random_state=0, batch_norm=True, padding="valid"
    )
    with pytest.raises(MemoryError, match="batch_size=200") as info:
        est.fit(X, y)
    message = str(info.value)
    assert "100.0 MB is available" in message
    # the first block's 62x62x32 convolution output alone, for 200 images
    conv_output = 200 * 62 * 62 * 32 * 4
    # (batch norm keeps the normalized map and its output for the backward
    # pass too: measured peak 848 MB, 8.6x the conv output)
    assert conv_output <= _estimate_in(message) <= 12 * conv_output
    assert not hasattr(est, "coefs_")  # left unfitted
    # following the advice: the largest batch it names fits in that memory
    largest = int(re.search(r"batch_size \(now 200; at most (\d+) fits\)", message)[1])
    assert 1 < largest < 100
    est.set_params(batch_size=largest).fit(X, y)
    assert est.n_iter_ == 1


def test_even_a_batch_of_one_can_be_too_large(pretend_available):
    pretend_available(20 * MB)
    with pytest.raises(MemoryError, match=r"now 4; even 1 is too large"):
        CNNClassifier(batch_size=4, global_pooling=True).fit(
            np.zeros((4, 1024, 1024), np.float32), [0, 1, 0, 1]
        )


def test_float64_advice(pretend_available):
    X = np.zeros((100, 64, 64))  # float64: the network computes in float64
    pretend_available(50 * MB)
    with pytest.raises(MemoryError, match="float32 input instead of float64"):
        CNNClassifier(batch_size=100).fit(X, np.arange(100) % 2)


def test_huge_flatten_into_dense_raises_before_allocating(
    monkeypatch, pretend_available
):
    # a 4096x4096x32 map flattened into 64 units: 34e9 weights, 137 GB in
    # float32 before Adam's two moment copies
    pretend_available(64 * 10**9)

    def no_weights(*args, **kwargs):
        raise AssertionError("the weights were allocated")

    monkeypatch.setattr(_base, "initialize", no_weights)
    X = np.zeros((2, 4096, 4096), np.float32)  # calloc'd: no page touched
    est = CNNClassifier(conv_filters=(32,), pool_size=1, padding="same")
    tracemalloc.start()
    try:
        with pytest.raises(MemoryError, match="global_pooling=True") as info:
            est.fit(X, [0, 1])
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 10 * MB
    message = str(info.value)
    assert "4096x4096x32 feature map into 64 units" in message
    assert "smaller hidden_layer_sizes" in message
    assert _estimate_in(message) >= 4096 * 4096 * 32 * 64 * 4 * 3
    assert not hasattr(est, "coefs_")


def test_conversion_copy_is_checked_before_it_is_made(pretend_available):
    # uint8 images become a float32 copy four times their size
    X = np.zeros((1000, 100, 100), np.uint8)
    pretend_available(30 * MB)
    tracemalloc.start()
    try:
        with pytest.raises(MemoryError, match=r"copies of X: 40\.0 MB"):
            CNNClassifier(batch_size=4).fit(X, np.arange(1000) % 2)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 5 * MB  # the 40 MB copy was never made


@pytest.mark.parametrize("how", ["partial_fit", "warm_start"])
def test_larger_batch_on_a_fitted_model_raises_and_keeps_it(how, pretend_available):
    rng = np.random.default_rng(0)
    X = rng.uniform(size=(200, 64, 64)).astype(np.float32)
    y = np.arange(200) % 2
    est = CNNClassifier(
        batch_size=10, max_iter=1, random_state=0, warm_start=True, batch_norm=True
    )
    est.partial_fit(X[:10], y[:10], classes=[0, 1])
    before = [a.copy() for a in est.coefs_ + est._optimizer.ms]
    t_before, steps_before = est.t_, est._optimizer.t
    pretend_available(50 * MB)
    est.set_params(batch_size=200)
    with pytest.raises(MemoryError, match="batch_size=200"):
        if how == "partial_fit":
            est.partial_fit(X, y)
        else:
            est.fit(X, y)
    for a, b in zip(est.coefs_ + est._optimizer.ms, before):
        assert_array_equal(a, b)
    assert (est.t_, est._optimizer.t) == (t_before, steps_before)
    pretend_available(100 * MB)
    est.set_params(batch_size=10).partial_fit(X[:20], y[:20])  # still usable
    assert est.t_ == t_before + 20


def test_prediction_chunk_larger_than_memory_raises(pretend_available):
    # 512x512 images: one image's im2col buffer (2.3M values) is already a
    # whole prediction chunk, so a chunk holds a single image
    X = np.random.default_rng(0).uniform(size=(2, 512, 512)).astype(np.float32)
    est = CNNClassifier(conv_filters=(4,), global_pooling=True, max_iter=1)
    est.fit(X, [0, 1])
    expected = est.predict_proba(X)
    pretend_available(MB)
    with pytest.raises(MemoryError, match="predicted 1 at a time") as info:
        est.predict(X)
    assert "1.0 MB is available" in str(info.value)
    # one image's 510x510x4 convolution output and its im2col buffer
    assert _estimate_in(str(info.value)) >= 510 * 510 * (4 + 9) * 4
    pretend_available(None)  # unknown: no check
    assert_array_equal(est.predict_proba(X), expected)


def test_normal_sizes_do_not_query_the_memory(monkeypatch, images):
    def unexpected():
        raise AssertionError("available memory queried for a small fit")

    monkeypatch.setattr(_memory, "available_memory", unexpected)
    X, y = images
    est = CNNClassifier(conv_filters=(4,), max_iter=2, random_state=0).fit(X, y)
    est.partial_fit(X, y)
    assert est.predict(X).shape == (40,)


def test_environment_variable_skips_the_check(pretend_available, monkeypatch, images):
    X, y = images
    pretend_available(1000)
    with pytest.raises(MemoryError):
        CNNClassifier(conv_filters=(4,), max_iter=1).fit(X, y)
    monkeypatch.setenv("SKCNN_CHECK_MEMORY", "0")
    est = CNNClassifier(conv_filters=(4,), max_iter=1).fit(X, y)
    assert est.predict(X).shape == (40,)


# The estimate must cover the real peak of a fit (one step: n == batch) and
# stay within 2x of it, for every kind of block and option.
MEASURED = {
    "default": ((28, 28), 64, np.float32, {}),
    "float64": ((28, 28), 64, np.float64, {}),
    "same-avg-tanh": (
        (32, 32, 3),
        32,
        np.float32,
        dict(padding="same", pooling="avg", activation="tanh"),
    ),
    "batch-norm": ((32, 32, 3), 32, np.float32, dict(batch_norm=True)),
    "strides-global": (
        (64, 64),
        16,
        np.float32,
        dict(strides=2, global_pooling=True, conv_filters=(16, 32, 64)),
    ),
    "mlp": (
        (1, 1, 3000),
        128,
        np.float32,
        dict(conv_filters=(), hidden_layer_sizes=(512, 256)),
    ),
    "dropout-augment": (
        (28, 28),
        64,
        np.float32,
        dict(dropout=0.3, augment={"shift": 2, "flip": True}),
    ),
    "sgd-flatten": (
        (64, 64),
        8,
        np.float32,
        dict(solver="sgd", conv_filters=(8,), pool_size=1),
    ),
    # a network whose time is in a Winograd convolution (14x14x64 -> 128);
    # "default", "float64" and "batch-norm" have one too
    "winograd": (
        (28, 28),
        32,
        np.float32,
        dict(conv_filters=(64, 128), padding="same"),
    ),
    "big-first-block": (
        (256, 256),
        4,
        np.float32,
        dict(conv_filters=(32,), global_pooling=True),
    ),
}


@pytest.mark.parametrize("name", MEASURED)
def test_estimates_cover_the_measured_peak(name):
    shape, n, dtype, params = MEASURED[name]
    X = np.random.default_rng(0).uniform(size=(n,) + shape).astype(dtype)
    y = np.arange(n) % 3
    # first-call imports and thread pools are not the fit's arrays
    CNNClassifier(max_iter=1, **params).fit(X[:3], y[:3]).predict(X[:3])
    est = CNNClassifier(max_iter=1, random_state=0, **params)
    tracemalloc.start()
    try:
        est.fit(X, y)
        fit_peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.reset_peak()
        start = tracemalloc.get_traced_memory()[0]
        est.predict_proba(X)
        predict_peak = tracemalloc.get_traced_memory()[1] - start
    finally:
        tracemalloc.stop()
    itemsize = np.dtype(dtype).itemsize
    fit = _memory.fit_estimate(
        est, est._net, n, itemsize, new_model=True, new_optimizer=True
    ).total
    # an upper bound, and not a loose one -- though a run whose pool thread
    # starts late holds one part at a time and measures near half of it
    assert fit_peak <= fit <= 3 * fit_peak, (fit_peak, fit)
    predict = _memory.predict_estimate(est._net, n, itemsize)
    # (one part per thread alive at once is the bound; a run whose pool
    # thread starts late holds only one part and measures half of it)
    assert predict_peak <= predict <= 4 * predict_peak, (predict_peak, predict)


@pytest.mark.parametrize("padding", ["valid", "same"])
@pytest.mark.parametrize("channels", [1, 3])
def test_block_sizes_cover_the_few_channel_im2col(padding, channels):
    # the im2col of few channels copies the input padded channels-first --
    # with "valid" padding too -- then the rows: what one conv2d_forward
    # allocates must fit the estimate's padded input, im2col and output
    n = 5
    design = Design(conv_filters=(8,), padding=padding)
    block = build_network((64, 64, channels), design, 3, "softmax").conv_blocks[0]
    _, padded, cols, conv, _, _ = _memory._block_sizes(block)
    x = np.random.default_rng(0).uniform(size=(n, 64, 64, channels))
    W = np.ones(block.coef_shape)
    tracemalloc.start()
    try:
        with ws.workspace():
            conv2d_forward(
                x, W, block.stride, block.pads, block.conv_hw, windows=block.windows()
            )
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak <= n * (padded + cols + conv) * x.itemsize * 1.05


def test_available_memory_is_plausible():
    available = _sysmem.available_memory()
    if not sys.platform.startswith("linux"):
        pytest.skip("no /proc/meminfo")
    meminfo = Path("/proc/meminfo").read_text()
    total = int(meminfo.split("MemTotal:")[1].split()[0]) * 1024
    assert 0 < available <= total


def test_cgroup_limits_are_read(tmp_path):
    (tmp_path / "memory.max").write_text("1000000\n")
    (tmp_path / "memory.current").write_text("600000\n")
    (tmp_path / "memory.stat").write_text("anon 1\ninactive_file 100000\nfile 9\n")
    files = ("memory.max", "memory.current", "inactive_file")
    # inactive page cache is reclaimed before an OOM kill: it counts as free
    assert _sysmem._cgroup_room(str(tmp_path), *files) == 500000
    (tmp_path / "memory.max").write_text("max\n")
    assert _sysmem._cgroup_room(str(tmp_path), *files) is None
    (tmp_path / "memory.max").write_text("9223372036854771712\n")  # v1's "none"
    assert _sysmem._cgroup_room(str(tmp_path), *files) is None


def test_unreadable_memory_information_means_no_check(monkeypatch, images):
    def garbage(path):
        return "not:a\nmeminfo"

    monkeypatch.setattr(_sysmem, "_read", garbage)
    monkeypatch.setattr(_sysmem, "_sysconf_available", lambda: None)
    assert _sysmem.available_memory() is None
    monkeypatch.setattr(_memory, "_QUERY_ABOVE", 0)
    X, y = images
    CNNClassifier(conv_filters=(4,), max_iter=1).fit(X, y)
