"""The examples run and reach what the README promises."""

import runpy
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def test_digits_example_reaches_97_percent(capsys):
    main = runpy.run_path(str(EXAMPLES / "digits.py"))["main"]
    assert main() >= 0.97
    assert "test accuracy" in capsys.readouterr().out


@pytest.mark.slow
def test_grid_search_example(capsys):
    search = runpy.run_path(str(EXAMPLES / "grid_search.py"))["main"]()
    assert len(search.cv_results_["params"]) == 8
    assert set(search.best_params_) == {"dropout", "batch_norm", "learning_rate_init"}
    assert search.best_score_ > 0.95
    assert "best:" in capsys.readouterr().out
