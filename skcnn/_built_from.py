"""The parameters a model is built from, kept with the fitted model.

Parameters take effect at ``fit``, as in scikit-learn. ``fit`` keeps the
values of those a network is built from -- the architecture, and how the
input rows are read -- with the model (the estimator's ``_fitted_params``):
a warm start or ``partial_fit`` continues that network and refuses changed
ones (:func:`check_unchanged`), ``save`` writes them, and prediction reads
its rows in the fitted ``data_format`` whatever ``set_params`` did since.
"""

import copy
from dataclasses import fields

import numpy as np

from ._network import Design
from ._params import check_image_shape

_DESIGN = tuple(f.name for f in fields(Design))
BUILT_FROM = _DESIGN + ("data_format", "image_shape")


def record(est):
    """The values of ``est``'s parameters a model is built from."""
    return {k: copy.deepcopy(getattr(est, k)) for k in BUILT_FROM}


def _same(a, b):
    """Whether two parameter values are equal (tuples, lists and arrays
    compare by their elements)."""
    try:
        return bool(
            np.array_equal(np.asarray(a, dtype=object), np.asarray(b, dtype=object))
        )
    except ValueError:  # shapes NumPy cannot hold in one array
        return a == b


def check_unchanged(est):
    """Raise ValueError where a parameter ``est``'s fitted network was built
    from has changed: a continued fit trains that network, which the new
    value would not describe."""
    fitted = est._fitted_params
    changed = [k for k in BUILT_FROM if not _same(getattr(est, k), fitted[k])]
    if "image_shape" in changed and _describes(est.image_shape, est.image_shape_):
        changed.remove("image_shape")  # (6, 6) for the (6, 6, 1) it inferred
    if not changed:
        return
    # the same network from values written differently (3 and (3,))
    if set(changed) <= set(_DESIGN) and est._build_network() == est._net:
        return
    k = changed[0]
    raise ValueError(
        f"{k}={getattr(est, k)!r}, but this model was fitted with "
        f"{k}={fitted[k]!r}: warm_start=True and partial_fit continue "
        "training the fitted network, which the new value does not "
        f"describe. Set {k} back, or call fit with warm_start=False to "
        "build a new network."
    )


def _describes(image_shape, fitted_shape):
    """Whether an ``image_shape`` parameter describes the fitted image shape
    (None does: it takes whatever the data holds, and a continued fit reads
    the fitted ``image_shape_``)."""
    try:
        shape = check_image_shape(image_shape)
    except ValueError:
        return False
    return shape is None or shape == tuple(fitted_shape)[: len(shape)]
