"""Random image augmentation for training minibatches."""

from numbers import Integral

import numpy as np


def check_augment(augment):
    """The ``augment`` parameter as (max shift in pixels, flips), or None."""
    if augment is None:
        return None
    unknown = set(augment) - {"shift", "flip"}
    shift, flip = augment.get("shift", 0), augment.get("flip", False)
    if (
        unknown
        or not isinstance(shift, Integral)
        or isinstance(shift, bool)
        or shift < 0
        or not isinstance(flip, bool)
    ):
        raise ValueError(
            "augment must be None or a dict with keys 'shift' (an int >= 0, the "
            "largest shift in pixels) and 'flip' (bool, random horizontal "
            f"flips); got {augment!r}."
        )
    return int(shift), flip


def augment_batch(est, xb):
    """Randomly shifted (zero-filled) and flipped copies of the images xb."""
    settings = check_augment(est.augment)
    if settings is None:
        return xb
    shift, flip = settings
    rng = est._random_state
    n, height, width, _ = xb.shape
    if shift:
        padded = np.pad(xb, ((0, 0), (shift, shift), (shift, shift), (0, 0)))
        dy = rng.randint(0, 2 * shift + 1, n)
        dx = rng.randint(0, 2 * shift + 1, n)
        rows = dy[:, None, None] + np.arange(height)[None, :, None]
        cols = dx[:, None, None] + np.arange(width)[None, None, :]
        xb = padded[np.arange(n)[:, None, None], rows, cols]
    if flip:
        flipped = rng.random_sample(n) < 0.5
        xb = xb.copy() if not shift else xb
        xb[flipped] = xb[flipped, :, ::-1]
    return xb
