"""Random image augmentation for training minibatches."""

import numpy as np

from ._params import check_augment


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
