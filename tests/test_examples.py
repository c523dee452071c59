"""The examples run and reach what the README promises."""

import runpy
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def test_digits_example_reaches_97_percent(capsys):
    main = runpy.run_path(str(EXAMPLES / "digits.py"))["main"]
    assert main() >= 0.97
    assert "test accuracy" in capsys.readouterr().out
