"""The README's Python snippets run as written (issue #12).

The blocks run in order in one namespace, as a reader pastes them into one
session. A block that needs what the test machine lacks (a Dask cluster at
an address, rich for the progress bar, an optional extra) is skipped with
the reason; everything else must run.
"""

import importlib.util
import re
import warnings
from pathlib import Path

import pytest
import sklearn
from sklearn.exceptions import ConvergenceWarning

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def _missing(block):
    """Why this block cannot run here, or None."""
    if "Client(" in block:
        return "needs a running Dask scheduler"
    if "set_callbacks" in block and (
        sklearn.__version__ < "1.9" or importlib.util.find_spec("rich") is None
    ):
        return "needs scikit-learn >= 1.9 and rich"
    for module in ("matplotlib", "onnxruntime", "skops", "dask"):
        if module in block and importlib.util.find_spec(module) is None:
            return f"needs {module}"
    return None


@pytest.mark.slow
def test_readme_snippets_run(tmp_path, monkeypatch):
    pytest.importorskip("matplotlib").use("Agg")
    monkeypatch.chdir(tmp_path)  # snippets that save files write here
    namespace = {}
    ran = 0
    for i, block in enumerate(BLOCKS):
        if _missing(block):
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            exec(compile(block, f"README.md python block {i}", "exec"), namespace)
        ran += 1
    assert ran >= 6  # quickstart, regression, features, plots, ONNX, skops...


def test_readme_summary_is_the_summary(monkeypatch):
    # the printed block is the method's output, not a copy that drifts
    import skcnn._memory
    from skcnn import CNNClassifier

    command = (
        ">>> print(CNNClassifier(image_shape=(28, 28, 1), batch_size=32).summary())"
    )
    block = re.search(re.escape(command) + r"\n(.*?)```", README.read_text(), re.S)
    assert block is not None
    monkeypatch.setattr(skcnn._memory, "blas_threads", lambda: 2)  # as stated
    summary = CNNClassifier(image_shape=(28, 28, 1), batch_size=32).summary()
    assert block.group(1).rstrip("\n") == summary
