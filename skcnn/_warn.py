"""Warnings attributed to the caller's line, not to skcnn's internals.

``warnings.warn`` needs a fixed ``stacklevel``, which is wrong as soon as
the call path changes (a Pipeline, a search, a warm start). Attributing a
warning to the first frame outside this package points the user at their
own line (or at scikit-learn's, inside a Pipeline), where filters such as
``warnings.filterwarnings(..., module="sklearn")`` apply as expected.
"""

import os
import sys
import warnings

_PACKAGE = os.path.dirname(os.path.abspath(__file__))


def warn(message, category=UserWarning):
    """Warn as if from the first caller outside the skcnn package."""
    level, frame = 1, sys._getframe(1)
    while frame is not None and os.path.dirname(
        os.path.abspath(frame.f_code.co_filename)
    ).startswith(_PACKAGE):
        frame = frame.f_back
        level += 1
    warnings.warn(message, category, stacklevel=level)
