"""Dropout masks that are a function of the sample, not of its position.

scikit-learn requires an integer ``sample_weight`` to act as repeated rows
(``check_sample_weight_equivalence``). A mask drawn afresh for every row
breaks that: a row repeated twice gets two masks, the same row with weight
2 one. So a sample's mask is computed from a hash of its values, the step
and a seed drawn once per fit from the estimator's random state: equal rows
get equal masks, the masks of different rows and steps are independent
draws, and a fit is still reproducible with its ``random_state``. The
values are hashed as the network sees them (after the input scaling) on a
coarse grid, so the same images as uint8 or float, raw or pre-scaled, get
the same masks, as they get the same model.

The hash is SplitMix64's finalizer (Steele, Lea and Flood 2014) on uint64
arrays, which NumPy multiplies modulo 2**64.
"""

import numpy as np

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MUL_1 = np.uint64(0xBF58476D1CE4E5B9)
_MUL_2 = np.uint64(0x94D049BB133111EB)
# uint64 values hashed at a time when keying the rows: bounds the temporary
_CHUNK_VALUES = 2**19


def _mix(z):
    """SplitMix64's finalizer, elementwise on a uint64 array (in place)."""
    z ^= z >> np.uint64(30)
    z *= _MUL_1
    z ^= z >> np.uint64(27)
    z *= _MUL_2
    z ^= z >> np.uint64(31)
    return z


# Scaled values are hashed on a grid of this many steps per unit: fine
# enough to tell images apart, coarse enough that the same data in float32
# or float64, or raw and pre-scaled (uint8 and /255: both minmax-scaled to
# the same values up to rounding), lands on the same grid points. (k/255 is
# never within 0.002 steps of a rounding boundary.)
_GRID = 64.0


def row_keys(X, offset=None, scale=None):
    """One uint64 per row (sample) of ``X``: a hash of its values as the
    network sees them, ``(x - offset) / scale`` per channel (the input
    scaling; None: the values as they are), rounded to a grid."""
    rows = X.reshape(len(X), -1)
    width = rows.shape[1]
    # odd multipliers per column: a row's sum of word * multiplier mod 2**64
    coefs = np.arange(1, width + 1, dtype=np.uint64) * _GOLDEN
    coefs = _mix(coefs) | np.uint64(1)
    if offset is not None:
        channels = len(offset)
        offset = np.asarray(offset, dtype=np.float64)
        factor = _GRID / np.asarray(scale, dtype=np.float64)
    keys = np.empty(len(X), dtype=np.uint64)
    step = max(1, _CHUNK_VALUES // max(width, 1))
    for start in range(0, len(X), step):
        values = rows[start : start + step].astype(np.float64)
        if offset is None:
            values *= _GRID
        else:
            pixels = values.reshape(len(values), -1, channels)
            pixels -= offset
            pixels *= factor
        # (huge unscaled values would overflow the integers: clipped)
        np.clip(values, -(2.0**62), 2.0**62, out=values)
        block = np.rint(values).astype(np.int64).view(np.uint64)
        block *= coefs
        keys[start : start + step] = block.sum(axis=1, dtype=np.uint64)
    return _mix(keys)


def dropout_masks(keys, step_seed, layers, keep, dtype):
    """Inverted-dropout masks ``{position: (n, units) array}`` for rows of
    ``keys`` at a step identified by ``step_seed`` (a uint64).

    ``layers`` is ``[(position, units), ...]``; each mask holds 0 or
    ``1 / keep``, each entry kept with probability ``keep``.
    """
    scale = dtype.type(1.0 / keep)
    threshold = np.uint64(min(int(keep * 2.0**64), 2**64 - 1))
    with np.errstate(over="ignore"):
        base = _mix(keys ^ _mix(np.array([step_seed], dtype=np.uint64)))
        masks = {}
        for position, units in layers:
            salt = np.uint64(position + 1) * _GOLDEN
            unit = (np.arange(units, dtype=np.uint64) + np.uint64(1)) * _MUL_2
            bits = _mix((base + salt)[:, None] + unit[None, :])
            masks[position] = (bits < threshold).astype(dtype) * scale
    return masks
