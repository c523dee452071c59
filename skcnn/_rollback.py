"""A failed ``fit`` or ``partial_fit`` leaves the estimator as it was.

:func:`snapshot` copies the fitted state before a call (small next to the
data); :func:`restore` puts it back -- or leaves the estimator cleanly
unfitted -- when the call raises.
"""

import copy

# Logs that training only appends to (entries are never changed once
# added): a copy of the list restores them. Deep copies cost a stream of
# partial_fit calls, which add an epoch each, time in proportion to the calls
# so far at every call: 18 ms a call after 10,000 of them.
_APPEND_ONLY = ("history_", "loss_curve_", "validation_scores_")


def _is_state(name):
    """Fitted state: public ``*_`` and private ``_*`` attributes, except the
    callbacks' (set by the user or by sklearn around the fit, never copied)
    and ``partial_fit``'s kept workspace (scratch memory, not the model)."""
    if name.startswith(("_skl_", "_callback", "_parent_callback", "_workspace")):
        return False
    return name.endswith("_") or name.startswith("_")


def _copy(name, value):
    if name in _APPEND_ONLY and isinstance(value, list):
        return list(value)
    return copy.deepcopy(value)


def snapshot(est):
    """A copy of ``est``'s fitted state, for :func:`restore`."""
    return {k: _copy(k, v) for k, v in vars(est).items() if _is_state(k)}


def restore(est, saved):
    """Put back the state of :func:`snapshot` (none: unfitted)."""
    for k in [k for k in vars(est) if _is_state(k)]:
        delattr(est, k)
    vars(est).update(saved)
