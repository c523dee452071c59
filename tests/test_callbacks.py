"""scikit-learn's callback API (scikit-learn >= 1.9): epochs and batches."""

import subprocess
import sys

import numpy as np
import pytest
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import MinMaxScaler

from skcnn import CNNClassifier

callback = pytest.importorskip("sklearn.callback", reason="scikit-learn < 1.9")

BASE = dict(conv_filters=(4,), hidden_layer_sizes=(8,), random_state=0)


class Recorder:
    """A minimal FitCallback recording the tasks it sees."""

    def __init__(self, stop_after_epoch=None):
        self.events = []
        self.stop_after_epoch = stop_after_epoch

    def setup(self, estimator, context):
        self.events.append(("setup", None))

    def on_fit_task_begin(self, estimator, context):
        self.events.append(("begin", context.task_name))

    def on_fit_task_end(self, estimator, context, *, fitted_estimator=None, X=None):
        self.events.append(("end", context.task_name))
        if context.task_name == "epoch" and fitted_estimator is not None:
            # the estimator rebuilt from this epoch's state can predict
            assert fitted_estimator.predict_proba(X[:2]).shape[0] == 2
        ends = sum(e == ("end", "epoch") for e in self.events)
        return context.task_name == "epoch" and ends == self.stop_after_epoch

    def teardown(self, estimator, context):
        self.events.append(("teardown", None))

    def count(self, event):
        return self.events.count(event)


class AutoRecorder(Recorder):
    max_propagation_depth = None  # reaches estimators inside meta-estimators


def test_epochs_and_batches_are_tasks(images):
    X, y = images
    rec = Recorder()
    clf = CNNClassifier(**BASE, max_iter=3, batch_size=16).set_callbacks(rec)
    clf.fit(X, y)
    assert rec.count(("begin", "fit")) == rec.count(("end", "fit")) == 1
    assert rec.count(("begin", "epoch")) == rec.count(("end", "epoch")) == 3
    assert rec.count(("begin", "batch")) == rec.count(("end", "batch")) == 9
    assert rec.events[0] == ("setup", None) and rec.events[-1] == ("teardown", None)
    clf.partial_fit(X, y)
    assert rec.count(("end", "epoch")) == 4


def test_a_callback_can_stop_training(images):
    X, y = images
    clf = CNNClassifier(**BASE, max_iter=10).set_callbacks(Recorder(stop_after_epoch=2))
    assert clf.fit(X, y).n_iter_ == 2


def test_scoring_monitor_logs_every_epoch(images):
    X, y = images
    monitor = callback.ScoringMonitor(scoring="accuracy")
    clf = CNNClassifier(**BASE, max_iter=4).set_callbacks(monitor).fit(X, y)
    rows = monitor.get_logs().data
    epochs = [r for r in rows if r["task_name"] == "epoch"]
    assert len(epochs) == 4
    assert all(0 <= r["accuracy"] <= 1 for r in rows)
    (fit,) = [r for r in rows if r["task_name"] == "fit"]
    assert fit["accuracy"] == clf.score(X.reshape(len(X), -1), y)


@pytest.mark.filterwarnings("ignore:The estimator MinMaxScaler does not support")
def test_callbacks_reach_the_estimator_in_a_pipeline_and_a_search(images):
    X, y = images
    X2 = X.reshape(len(X), -1)
    rec = AutoRecorder()
    pipe = make_pipeline(MinMaxScaler(), CNNClassifier(**BASE, max_iter=2))
    pipe.set_callbacks(rec).fit(X2, y)
    assert rec.count(("end", "epoch")) == 2
    rec2 = AutoRecorder()
    search = GridSearchCV(
        CNNClassifier(**BASE, max_iter=2), {"dropout": [0.0, 0.5]}, cv=2
    )
    search.set_callbacks(rec2).fit(X2, y)
    assert rec2.count(("end", "epoch")) == 2 * 2 * 2 + 2  # 4 CV fits + refit


def test_no_callbacks_no_overhead(images):
    X, y = images
    clf = CNNClassifier(**BASE, max_iter=2).fit(X, y)
    assert not any(k.startswith("_skl_") for k in vars(clf))
    assert np.isfinite(clf.predict_proba(X)).all()


def test_older_scikit_learn_degrades_gracefully():
    # Simulate scikit-learn < 1.9 (no sklearn.callback) in a fresh process.
    code = """
import numpy as np
import sklearn.callback, sklearn.model_selection, sklearn.preprocessing
del sklearn.callback.CallbackSupportMixin  # as if it did not exist yet
from skcnn import CNNClassifier
assert not hasattr(CNNClassifier, "set_callbacks")
X = np.random.default_rng(0).uniform(size=(20, 16)); y = np.arange(20) % 2
clf = CNNClassifier(conv_filters=(2,), max_iter=2, random_state=0).fit(X, y)
print(clf.n_iter_)
"""
    out = subprocess.run(
        [sys.executable, "-W", "ignore", "-c", code],
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == "2"
