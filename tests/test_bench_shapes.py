"""The arithmetic of benchmarks/bench_shapes.py, without timing anything."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_shapes.py"

# The reference network (28x28x1, conv 32 and 64 valid, max-pool 2, dense
# 64, 10 classes), counted by hand:
# conv1 26x26 outputs, 3x3x1 -> 32:  2 * 26*26 * 9*1 * 32   =   389_376
# conv2 11x11 outputs, 3x3x32 -> 64: 2 * 11*11 * 9*32 * 64  = 4_460_544
# dense 5*5*64 = 1600 -> 64:         2 * 1600 * 64          =   204_800
# dense 64 -> 10:                    2 * 64 * 10            =     1_280
# forward 5_056_000; backward twice that but conv1's input gradient:
REFERENCE_FLOPS = 3 * 5_056_000 - 389_376  # bench_mnist's "14.8 MFLOP"
# (3*3*1*32 + 32) + (3*3*32*64 + 64) + (1600*64 + 64) + (64*10 + 10)
REFERENCE_PARAMS = 320 + 18_496 + 102_464 + 650


@pytest.fixture
def bench(monkeypatch):
    # the module sets OMP_WAIT_POLICY on import: keep the session's as it was
    monkeypatch.setenv("OMP_WAIT_POLICY", "PASSIVE")
    monkeypatch.syspath_prepend(str(BENCH.parent))  # its modules beside it
    spec = importlib.util.spec_from_file_location("bench_shapes", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_reference_training_flops(bench):
    assert bench.training_flops(bench.SHAPES["ref"]) == REFERENCE_FLOPS
    assert round(REFERENCE_FLOPS / 1e6, 1) == 14.8


def test_training_flops_count_same_padding_over_the_full_map(bench):
    # 28x28 "same": 28x28 conv outputs; 14x14 after the pool; 7x7x64 flat
    forward = (
        2 * 28 * 28 * 9 * 32 + 2 * 14 * 14 * 9 * 32 * 64 + 2 * 3136 * 64 + 2 * 64 * 10
    )
    assert (
        bench.training_flops(bench.SHAPES["avg"]) == 3 * forward - 2 * 28 * 28 * 9 * 32
    )


def test_reference_param_count(bench):
    assert bench.skcnn_param_count(bench.SHAPES["ref"]) == REFERENCE_PARAMS


def test_param_count_mismatch_raises(bench, monkeypatch):
    monkeypatch.setattr(bench, "torch_param_count", lambda torch, shape: 1)
    with pytest.raises(AssertionError, match="skcnn 121930 != PyTorch 1"):
        bench.check_param_counts(None, bench.SHAPES["ref"])


@pytest.mark.skipif(
    importlib.util.find_spec("torch") is None, reason="PyTorch not installed"
)
def test_pytorch_networks_have_skcnn_param_counts():
    # in a subprocess: PyTorch (and its OpenMP runtime) stays out of the
    # test session
    code = (
        "import json, sys, torch; sys.path.insert(0, sys.argv[1]); "
        "import bench_shapes as b; "
        "print(json.dumps({n: b.check_param_counts(torch, s) "
        "for n, s in b.SHAPES.items()}))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(BENCH.parent)],
        capture_output=True,
        text=True,
        check=True,
        cwd=BENCH.parents[1],
    )
    counts = json.loads(out.stdout.strip().splitlines()[-1])
    assert counts["ref"] == [REFERENCE_PARAMS, REFERENCE_PARAMS]
    assert all(ours == theirs for ours, theirs in counts.values())


@pytest.fixture
def allocator(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH.parent))
    return importlib.import_module("_allocator")


def test_pinned_malloc_keeps_and_restores_the_callers_tunables(allocator):
    user = {"GLIBC_TUNABLES": "glibc.malloc.tcache_count=0", "OTHER": "1"}
    pinned = allocator.pinned_env(user)
    assert pinned["GLIBC_TUNABLES"] == (
        "glibc.malloc.tcache_count=0:" + allocator.PINNED_MALLOC
    )
    assert pinned["OTHER"] == "1"
    assert allocator.unpinned_env(pinned) == user
    # none before: none after, not an empty variable
    unpinned = allocator.unpinned_env(allocator.pinned_env({"A": "b"}))
    assert "GLIBC_TUNABLES" not in unpinned


def test_pin_malloc_runs_the_script_again_once(allocator, monkeypatch):
    calls = []
    monkeypatch.setattr(allocator.os, "execve", lambda *a: calls.append(a))
    monkeypatch.setattr(allocator.platform, "libc_ver", lambda: ("glibc", "2.36"))
    monkeypatch.delenv("GLIBC_TUNABLES", raising=False)
    allocator.pin_malloc()
    ((executable, argv, env),) = calls
    assert argv[1:] == allocator.sys.argv
    assert allocator.PINNED_MALLOC in env["GLIBC_TUNABLES"]
    monkeypatch.setenv("GLIBC_TUNABLES", env["GLIBC_TUNABLES"])
    allocator.pin_malloc()  # pinned already: nothing to do
    monkeypatch.setattr(allocator.platform, "libc_ver", lambda: ("", ""))
    monkeypatch.delenv("GLIBC_TUNABLES")
    allocator.pin_malloc()  # not glibc: its tunables mean nothing
    assert len(calls) == 1


def test_memory_workers_allocate_as_a_users_process(bench, allocator, monkeypatch):
    # the timing process's pinned thresholds would change the peak RSS
    monkeypatch.setenv("GLIBC_TUNABLES", allocator.PINNED_MALLOC)
    seen = {}

    def run(command, env, **kwargs):
        seen.update(command=command, env=env)
        return subprocess.CompletedProcess(
            command, 0, '{"extra": 1048576, "method": "m"}'
        )

    monkeypatch.setattr(bench.subprocess, "run", run)
    assert bench.peak_memory("skcnn", "ref", 2) == (1.0, "m")
    assert "--memory-worker" in seen["command"]
    assert allocator.PINNED_MALLOC not in seen["env"].get("GLIBC_TUNABLES", "")


def test_cpu_model_is_named(allocator):
    assert allocator.cpu_model().strip()


@pytest.fixture
def pytorch_side(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH.parent))
    return importlib.import_module("_pytorch")


def test_pytorch_inference_is_timed_at_its_fastest_settings(pytorch_side, monkeypatch):
    # every memory format and pass size is tried twice on a quarter of the
    # images, each setting's better rate counting; the two best are kept
    tried = []
    rates = {("nhwc", 64): [3.0, 1.0], ("nchw", 256): [1.0, 2.5]}

    def rate(torch, model, X, fmt, chunk):
        tried.append((fmt, chunk, len(X)))
        runs = rates.get((fmt, chunk), [1.0, 1.0])
        return runs[sum(1 for t in tried if t[:2] == (fmt, chunk)) - 1]

    monkeypatch.setattr(pytorch_side, "torch_infer_rate", rate)
    X = np.zeros((4000, 2, 2, 1), np.float32)
    candidates = pytorch_side.torch_candidates(None, None, X)
    assert candidates == [("nhwc", 64), ("nchw", 256)]
    settings = {(f, c) for f in ("nchw", "nhwc") for c in pytorch_side.TORCH_CHUNKS}
    assert sorted(t[:2] for t in tried) == sorted(list(settings) * 2)  # twice each
    assert {n for _, _, n in tried} == {1000}
    # then each candidate on all the images, the faster kept
    monkeypatch.setattr(pytorch_side, "torch_infer_rate", lambda t, m, X, f, c: c / 64)
    assert pytorch_side.torch_inference(None, None, X, candidates) == (
        4.0,
        ("nchw", 256),
    )


def test_pytorch_training_is_timed_in_its_faster_format(pytorch_side):
    tried = []

    def train(fmt):
        tried.append(fmt)
        return {"nchw": 2.0, "nhwc": 3.0}[fmt], fmt + " model"

    assert pytorch_side.faster_format(train) == (3.0, "nhwc", "nhwc model")
    assert sorted(tried) == ["nchw", "nhwc"]
