"""Warnings attributed to the caller's line, not to skcnn's internals.

``warnings.warn`` needs a fixed ``stacklevel``, which is wrong as soon as
the call path changes (a Pipeline, a search, a warm start). Attributing a
warning to the first frame outside the estimator -- skcnn itself and the
decorators and mixin methods scikit-learn wraps around its methods
(``sklearn.base``, the set_output wrapper) -- points the user at their own
``clf.fit(...)`` line, or at scikit-learn's when a Pipeline or a search
made the call, where filters such as
``warnings.filterwarnings(..., module="sklearn")`` apply as expected.
"""

import os
import sys
import warnings

_PACKAGE = os.path.dirname(os.path.abspath(__file__)) + os.sep
_WRAPPERS = ("sklearn.base", "sklearn.utils._set_output")


def _inside(frame):
    if os.path.abspath(frame.f_code.co_filename).startswith(_PACKAGE):
        return True
    return frame.f_globals.get("__name__", "") in _WRAPPERS


def warn(message, category=UserWarning):
    """Warn as if from the first caller outside the estimator."""
    # stacklevel 2 is the caller of this function
    level, frame = 2, sys._getframe(1)
    while frame.f_back is not None and _inside(frame):
        frame = frame.f_back
        level += 1
    warnings.warn(message, category, stacklevel=level)
