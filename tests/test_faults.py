"""Faults users hit (issue #10): Ctrl-C and switching the stopping rule.

The Ctrl-C tests run in a fresh Python process that sends itself SIGINT
while training, as a user pressing Ctrl-C in a terminal would.
"""

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from numpy.testing import assert_array_equal

from skcnn import CNNClassifier

SMALL = dict(conv_filters=(4,), hidden_layer_sizes=(8,), random_state=0)


def _run(script):
    """Run ``script`` in a fresh interpreter; its last stdout line is JSON."""
    preamble = textwrap.dedent(
        """
        import json, os, signal, threading, time
        import numpy as np
        from skcnn import CNNClassifier

        def ctrl_c_in(seconds):
            # a timer thread delivers SIGINT to the process; Python runs
            # the handler in the main thread, as for a real Ctrl-C
            def send():
                time.sleep(seconds)
                os.kill(os.getpid(), signal.SIGINT)
            threading.Thread(target=send, daemon=True).start()

        rng = np.random.default_rng(0)
        X = rng.uniform(0, 1, (600, 8, 8)).astype(np.float32)
        y = (X[:, :4].mean(axis=(1, 2)) > 0.5).astype(int)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", preamble + textwrap.dedent(script)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_ctrl_c_in_fit_raises_and_leaves_a_usable_model():
    result = _run(
        """
        clf = CNNClassifier(conv_filters=(16,), batch_size=8, max_iter=10000,
                            max_steps=None, n_iter_no_change=float("inf"),
                            random_state=0)
        ctrl_c_in(1.0)
        start = time.perf_counter()
        try:
            clf.fit(X, y)
            outcome = "returned"
        except KeyboardInterrupt as exc:
            outcome = "KeyboardInterrupt: " + str(exc)
        seconds = time.perf_counter() - start
        proba = clf.predict_proba(X)
        print(json.dumps({
            "outcome": outcome,
            "seconds": seconds,
            "n_iter": clf.n_iter_,
            "curve": len(clf.loss_curve_),
            "history": len(clf.history_),
            "t": clf.t_,
            "finite": bool(np.isfinite(proba).all()
                           and all(np.isfinite(c).all() for c in clf.coefs_)),
            "rows_sum_to_1": bool(np.allclose(proba.sum(axis=1), 1)),
            "handler_restored":
                signal.getsignal(signal.SIGINT) is signal.default_int_handler,
            "score_after_more_training":
                clf.set_params(max_iter=2).partial_fit(X, y).score(X, y),
        }))
        """
    )
    assert result["outcome"].startswith("KeyboardInterrupt")
    assert "interrupted" in result["outcome"]
    assert result["seconds"] < 20  # stopped after a batch, not 10000 epochs
    assert result["n_iter"] == result["curve"] == result["history"]
    assert result["t"] >= 600 * result["n_iter"]
    assert result["finite"] and result["rows_sum_to_1"]
    assert result["handler_restored"]
    assert 0 <= result["score_after_more_training"] <= 1


@pytest.mark.slow
def test_ctrl_c_stops_a_grid_search():
    result = _run(
        """
        from sklearn.model_selection import GridSearchCV

        fits = []
        class Counting(CNNClassifier):
            def fit(self, X, y, **kw):
                fits.append(1)
                return super().fit(X, y, **kw)

        search = GridSearchCV(
            Counting(conv_filters=(16,), batch_size=8, max_iter=300, max_steps=None,
                     n_iter_no_change=float("inf"),
                     random_state=0),
            {"learning_rate_init": [1e-3, 2e-3, 3e-3, 4e-3]},
            cv=2, n_jobs=1, error_score="raise",
        )
        ctrl_c_in(1.0)
        start = time.perf_counter()
        try:
            search.fit(X, y)
            outcome = "returned"
        except KeyboardInterrupt:
            outcome = "KeyboardInterrupt"
        print(json.dumps({"outcome": outcome, "fits": len(fits),
                          "seconds": time.perf_counter() - start}))
        """
    )
    # 8 fits of 300 epochs would take minutes; Ctrl-C ends the search
    assert result["outcome"] == "KeyboardInterrupt"
    assert result["fits"] == 1
    assert result["seconds"] < 20


def test_a_second_ctrl_c_interrupts_at_once_and_rolls_back(monkeypatch):
    import os
    import signal

    import skcnn._loop as training

    rng = np.random.default_rng(0)
    X = rng.uniform(0, 1, (60, 6, 6))
    y = np.arange(60) % 2
    clf = CNNClassifier(**SMALL, max_iter=3, batch_size=20).fit(X, y)
    before = [c.copy() for c in clf.coefs_]
    real = training.loss_and_gradients

    def slow_batch(*args):
        # a user pressing Ctrl-C twice inside one long batch
        os.kill(os.getpid(), signal.SIGINT)
        os.kill(os.getpid(), signal.SIGINT)
        return real(*args)

    monkeypatch.setattr(training, "loss_and_gradients", slow_batch)
    with pytest.raises(KeyboardInterrupt):
        clf.set_params(warm_start=True).fit(X, y)
    # interrupted at an arbitrary point: the previous model is restored
    for a, b in zip(clf.coefs_, before):
        assert_array_equal(a, b)
    assert clf.n_iter_ == 3
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


@pytest.mark.parametrize("method", ["partial_fit", "warm_start"])
def test_switching_early_stopping_off_after_a_fit(method):
    rng = np.random.default_rng(0)
    X = rng.uniform(0, 1, (80, 6, 6))
    y = np.arange(80) % 2
    clf = CNNClassifier(**SMALL, max_iter=3, early_stopping=True).fit(X, y)
    assert clf.best_loss_ is None and len(clf.validation_scores_) == 3
    clf.set_params(early_stopping=False)
    if method == "partial_fit":
        clf.partial_fit(X, y)
    else:
        clf.set_params(warm_start=True).fit(X, y)
    # the training-loss rule's attributes, coherent with the docs
    assert clf.best_loss_ == min(clf.loss_curve_[3:])
    assert clf.validation_scores_ is None and clf.best_validation_score_ is None
    assert len(clf.loss_curve_) == 3 + clf.n_iter_


def test_switching_early_stopping_on_for_a_warm_start():
    rng = np.random.default_rng(0)
    X = rng.uniform(0, 1, (80, 6, 6))
    y = np.arange(80) % 2
    clf = CNNClassifier(**SMALL, max_iter=3).fit(X, y)
    clf.set_params(early_stopping=True, warm_start=True).fit(X, y)
    assert clf.best_loss_ is None
    assert len(clf.validation_scores_) == clf.n_iter_
    assert clf.best_validation_score_ == max(clf.validation_scores_)
