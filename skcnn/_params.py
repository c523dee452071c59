"""Every rule on the estimators' parameters.

``PARAMETER_CONSTRAINTS`` are checked by scikit-learn at fit (MLPClassifier's
training parameters keep its constraints exactly); the functions below
check what those constraints cannot express, when a fit resolves them.
"""

from numbers import Integral, Real

import numpy as np
from sklearn.utils._param_validation import Interval, Options, StrOptions

PARAMETER_CONSTRAINTS = {
    "image_shape": [None, "array-like"],
    "data_format": [StrOptions({"channels_last", "channels_first"})],
    "input_scaling": [StrOptions({"minmax", "standard"}), None],
    "conv_filters": ["array-like", Interval(Integral, 1, None, closed="left")],
    "kernel_size": [Interval(Integral, 1, None, closed="left"), "array-like"],
    "pool_size": [Interval(Integral, 1, None, closed="left"), "array-like"],
    "strides": [Interval(Integral, 1, None, closed="left"), "array-like"],
    "global_pooling": ["boolean"],
    "batch_norm": ["boolean"],
    "dropout": [Interval(Real, 0, 1, closed="left")],
    "augment": [None, dict],
    "padding": [StrOptions({"auto", "valid", "same"})],
    "pooling": [StrOptions({"max", "avg"})],
    "hidden_layer_sizes": [
        "array-like",
        Interval(Integral, 1, None, closed="left"),
    ],
    "activation": [StrOptions({"identity", "logistic", "tanh", "relu"})],
    "solver": [StrOptions({"sgd", "adam", "adamw"})],
    "alpha": [Interval(Real, 0, None, closed="left")],
    "batch_size": [
        StrOptions({"auto"}),
        Interval(Integral, 1, None, closed="left"),
    ],
    "learning_rate": [
        StrOptions({"anneal", "constant", "invscaling", "adaptive", "cosine"})
    ],
    "learning_rate_init": [Interval(Real, 0, None, closed="neither")],
    "power_t": [Interval(Real, 0, None, closed="left")],
    "max_iter": [Interval(Integral, 1, None, closed="left")],
    "max_steps": [Interval(Integral, 1, None, closed="left"), None],
    "shuffle": ["boolean"],
    "random_state": ["random_state"],
    "tol": [Interval(Real, 0, None, closed="left")],
    "verbose": ["verbose"],
    "warm_start": ["boolean"],
    "momentum": [Interval(Real, 0, 1, closed="both")],
    "nesterovs_momentum": ["boolean"],
    "early_stopping": ["boolean"],
    "validation_fraction": [Interval(Real, 0, 1, closed="neither")],
    "beta_1": [Interval(Real, 0, 1, closed="left")],
    "beta_2": [Interval(Real, 0, 1, closed="left")],
    "epsilon": [Interval(Real, 0, None, closed="neither")],
    "n_iter_no_change": [
        Interval(Integral, 1, None, closed="left"),
        Options(Real, {np.inf}),
    ],
}

CLASSIFIER_CONSTRAINTS = {
    **PARAMETER_CONSTRAINTS,
    "class_weight": [dict, StrOptions({"balanced"}), None],
}


# --------------------------------------------------------------------------
# Rules the constraints above cannot express, checked when a fit resolves
# the parameters. Every parameter rule of the package lives in this module.
# --------------------------------------------------------------------------


def _is_int(value):
    return isinstance(value, Integral) and not isinstance(value, bool)


def _positive_ints(values, name, given):
    if not all(_is_int(v) for v in values):
        raise ValueError(f"{name} must hold integers; got {given!r}.")
    if any(v < 1 for v in values):
        raise ValueError(f"{name} must be positive integers; got {given!r}.")
    return tuple(int(v) for v in values)


def _entries(value, name):
    """A sequence parameter's entries (an array's too, even 0-d)."""
    if isinstance(value, np.ndarray) and value.ndim <= 1:
        return tuple(value.ravel().tolist())
    try:
        return tuple(value)
    except TypeError:  # a bool, a float, None...
        raise ValueError(
            f"{name} must be a positive int or a sequence of them; got {value!r}."
        ) from None


def layer_sizes(value, name):
    """A layer-size parameter (an int or a sequence of ints) as a tuple."""
    sizes = (value,) if _is_int(value) else _entries(value, name)
    return _positive_ints(sizes, name, value)


def per_block(value, n_blocks, name):
    """An int for every conv block, or a sequence with one entry per block."""
    if _is_int(value):
        return _positive_ints((value,), name, value) * n_blocks
    values = _entries(value, name)
    if len(values) != n_blocks:
        raise ValueError(
            f"{name} has {len(values)} entries but there are {n_blocks} conv "
            f"blocks (conv_filters); give one per block or a single int."
        )
    return _positive_ints(values, name, value)


def check_image_shape(image_shape):
    """``image_shape``: None, (height, width) or (height, width, channels)."""
    if image_shape is None:
        return None
    if isinstance(image_shape, np.ndarray) and image_shape.ndim == 1:
        image_shape = image_shape.tolist()
    if (
        not isinstance(image_shape, (tuple, list))
        or len(image_shape) not in (2, 3)
        or not all(_is_int(s) and s >= 1 for s in image_shape)
    ):
        raise ValueError(
            "image_shape must be None, (height, width) or (height, width, "
            f"channels) with positive integers; got {image_shape!r}."
        )
    return tuple(int(s) for s in image_shape)


def check_augment(augment):
    """The ``augment`` parameter as (max shift in pixels, flips), or None."""
    if augment is None:
        return None
    unknown = set(augment) - {"shift", "flip"}
    shift, flip = augment.get("shift", 0), augment.get("flip", False)
    flips = isinstance(flip, (bool, np.bool_))
    if unknown or not _is_int(shift) or shift < 0 or not flips:
        raise ValueError(
            "augment must be None or a dict with keys 'shift' (an int >= 0, the "
            "largest shift in pixels) and 'flip' (bool, random horizontal "
            f"flips); got {augment!r}."
        )
    return int(shift), bool(flip)


def resolve_batch_size(batch_size, n_samples):
    """The minibatch size of a fit on ``n_samples`` samples.

    "auto" is ``min(200, max(64, n_samples // 16))``, clipped to the data:
    200 on large sets (as MLPClassifier's ``min(200, n_samples)``), but
    about 16 minibatches an epoch down to batches of 64, so a set of 1,000
    images is not trained in five large steps an epoch; sets of up to 64
    samples are one batch.
    """
    if batch_size == "auto":
        batch_size = min(200, max(64, n_samples // 16))
    return int(min(max(batch_size, 1), n_samples))


# Images smaller than this on a side get "same" padding with padding="auto".
SMALL_IMAGE = 16


def resolve_padding(padding, image_shape):
    """ "auto": "same" for small images, whose maps "valid" convolutions
    would shrink to a pixel or two (8x8 digits), else "valid" (28x28 MNIST:
    the classic network)."""
    if padding != "auto":
        return padding
    return "same" if min(image_shape[:2]) < SMALL_IMAGE else "valid"
