"""Image-shape handling: how the rows of X map onto (height, width, channels).

X reaches the estimator as 2-D ``(n_samples, n_features)`` rows -- each a
flattened image in (height, width, channels) row-major order, or (channels,
height, width) with ``data_format="channels_first"`` -- or as 3-D
``(n, height, width)`` / 4-D ``(n, height, width, channels)`` arrays
(``(n, channels, height, width)`` when channels-first). The estimator
validates everything in the 2-D form (so scikit-learn's ``validate_data``
records ``n_features_in_`` and feature names as usual), remembers the
per-sample shape the images came in, and computes on channels-last rows.
"""

from math import isqrt

import numpy as np
import scipy.sparse as sp
from sklearn.utils.validation import check_is_fitted, validate_data

from ._params import check_image_shape
from ._warn import warn


def split_images(X, data_format="channels_last"):
    """Return ``(X_2d, sample_shape)``.

    ``sample_shape`` is ``(height, width, channels)`` when X came as 3-D or
    4-D images, else None (X is passed through untouched for validation).
    With ``data_format="channels_first"`` 4-D images are ``(n, channels,
    height, width)`` and become channels-last rows (a copy).
    """
    if sp.issparse(X) or hasattr(X, "columns") or hasattr(X, "iloc"):
        return X, None  # scipy sparse and pandas objects are 2-D already
    if not hasattr(X, "ndim"):
        if not isinstance(X, (list, tuple)):
            return X, None
        try:
            X = np.asarray(X)
        except ValueError as exc:
            raise ValueError(
                "X could not be converted to an array; nested lists must all "
                f"have the same shape (ragged input?): {exc}"
            ) from None
    if X.ndim in (0, 1, 2):
        return X, None  # validate_data gives its standard errors for 0-D / 1-D
    if X.ndim > 4:
        raise ValueError(
            "X must be 2-D (n_samples, n_features), 3-D (n_samples, height, width) "
            f"or 4-D (n_samples, height, width, channels); got a {X.ndim}-D array "
            f"of shape {X.shape}."
        )
    if X.ndim == 4:
        if data_format == "channels_first":
            X = np.moveaxis(np.asarray(X), 1, -1)
        elif X.shape[1] in (1, 3, 4) and min(X.shape[2:]) > 4:
            warn(
                f"X has shape {X.shape}: it looks like channels-first images "
                f"({X.shape[1]} channels of {X.shape[2]}x{X.shape[3]}, PyTorch's "
                "layout), but they are read as channels-last "
                f"({X.shape[1]}x{X.shape[2]} images with {X.shape[3]} channels). "
                "Pass data_format='channels_first' if the channels come first."
            )
    shape = tuple(int(s) for s in X.shape[1:]) + ((1,) if X.ndim == 3 else ())
    if min(shape, default=0) < 1 or X.shape[0] < 1:
        # leave empty arrays to validate_data's standard error message
        return np.asarray(X).reshape(X.shape[0], int(np.prod(shape))), None
    # reshape is a view for C-ordered input and a private copy otherwise: the
    # caller's array is never written to
    return np.asarray(X).reshape(X.shape[0], -1), shape


def resolve_image_shape(n_features, image_shape=None, sample_shape=None):
    """The ``(height, width, channels)`` of one sample.

    Rules, in order: images given as 3-D/4-D arrays define the shape (an
    ``image_shape`` parameter must then agree with it); an explicit
    ``image_shape`` is used as given, with ``channels = n_features /
    (height * width)`` when only ``(height, width)`` is given; otherwise a
    perfect-square ``n_features`` is a square grayscale image and any other
    ``n_features`` is one pixel with ``n_features`` channels.
    """
    image_shape = check_image_shape(image_shape)
    if sample_shape is not None:
        if image_shape is not None and (
            image_shape[:2] != sample_shape[:2]
            or (len(image_shape) == 3 and image_shape[2] != sample_shape[2])
        ):
            raise ValueError(
                f"image_shape={image_shape} does not match the shape of the "
                f"images in X, {sample_shape} (height, width, channels)."
            )
        return sample_shape
    if image_shape is not None:
        height, width = image_shape[:2]
        if len(image_shape) == 3:
            if height * width * image_shape[2] != n_features:
                raise ValueError(
                    f"image_shape={image_shape} holds "
                    f"{height * width * image_shape[2]} values but X has "
                    f"{n_features} features."
                )
            return image_shape
        channels, rest = divmod(n_features, height * width)
        if rest or channels < 1:
            raise ValueError(
                f"X has {n_features} features, which is not a whole number of "
                f"channels of {height}x{width} images (image_shape={image_shape})."
            )
        return (height, width, channels)
    side = isqrt(n_features)
    if side * side == n_features:
        return (side, side, 1)
    return (1, 1, n_features)


def check_sample_shape(sample_shape, image_shape_):
    """At predict time, 3-D/4-D X must have the fitted per-sample shape."""
    if sample_shape is not None and sample_shape != tuple(image_shape_):
        raise ValueError(
            f"X holds images of shape {sample_shape} (height, width, channels) "
            f"but the model was fitted on images of shape {tuple(image_shape_)}. "
            "Pass images of the fitted shape or their flattened rows."
        )


def compute_dtype(X):
    """float64 input computes in float64; everything else in float32.

    float32 halves memory and doubles GEMM speed, which is what images
    (uint8, bool, float32) want; float64 data asks for float64 explicitly.
    """
    dtypes = getattr(X, "dtypes", None)  # a pandas DataFrame
    if dtypes is not None and not isinstance(dtypes, np.dtype):
        is_float64 = [isinstance(d, np.dtype) and d == np.float64 for d in dtypes]
        return np.float64 if is_float64 and all(is_float64) else np.float32
    dtype = getattr(X, "dtype", None)
    return np.float64 if dtype == np.float64 else np.float32


# Inputs this large overflow float32 activations within a layer or two.
MAX_ABS_VALUE = 1e30


def check_magnitude(X):
    """Reject finite but absurdly large inputs before they become NaNs."""
    if X.size and (X.max() >= MAX_ABS_VALUE or X.min() <= -MAX_ABS_VALUE):
        raise ValueError(
            f"X contains values of magnitude >= {MAX_ABS_VALUE:g}; the network "
            "needs inputs on a sane scale (e.g. pixels in [0, 1]). Rescale X, "
            "for instance with sklearn.preprocessing.MinMaxScaler."
        )


def validate_images(est, X):
    """X for a fitted estimator: its image shape, its dtype, sane values.

    Returns channels-last rows, whatever ``data_format``.
    """
    check_is_fitted(est)
    data_format = est._input_format()
    X, sample_shape = split_images(X, data_format)
    check_sample_shape(sample_shape, est.image_shape_)
    dtype = est.coefs_[0].dtype
    if not _valid_as_is(est, X, dtype):
        X = validate_data(est, X, dtype=dtype, reset=False)
        check_magnitude(X)
    if sample_shape is None:
        X = rows_to_channels_last(X, est.image_shape_, data_format)
    return X


def _valid_as_is(est, X, dtype):
    """Whether ``validate_data(est, X, dtype=dtype, reset=False)`` and
    :func:`check_magnitude` would return X itself, silently.

    The common case at prediction -- a NumPy array of the model's dtype and
    width with sane values -- takes microseconds to recognise, while
    scikit-learn's validation takes tens of them: more than the forward pass
    of a small batch. Anything else (another dtype, a DataFrame, feature
    names to compare, a wrong width, a NaN, an infinity or a huge value)
    goes through the full validation, which gives the usual warnings and
    errors. Values strictly between -MAX_ABS_VALUE and MAX_ABS_VALUE are
    finite, as ``validate_data`` requires (a NaN fails both comparisons).
    """
    return (
        type(X) is np.ndarray
        and X.dtype == dtype
        and X.ndim == 2
        and X.shape[0] >= 1
        and X.shape[1] == getattr(est, "n_features_in_", None)
        and getattr(est, "feature_names_in_", None) is None
        and X.min() > -MAX_ABS_VALUE
        and X.max() < MAX_ABS_VALUE
    )


def rows_to_channels_last(X, image_shape, data_format):
    """Flattened rows in ``data_format`` order as (height, width, channels)
    rows: channels-first rows are flattened (channels, height, width)."""
    height, width, channels = image_shape
    if data_format == "channels_last" or channels == 1:
        return X
    images = X.reshape(len(X), channels, height, width)
    return np.ascontiguousarray(images.transpose(0, 2, 3, 1)).reshape(len(X), -1)


def _pixel_chunks(X, channels, rows=None):
    """X's rows (those selected by the boolean ``rows``) as float64 arrays of
    (samples, pixels, channels), about 1M values at a time.

    In C order whatever X's, so the sums are the same to the last bit for a
    Fortran-ordered array or a DataFrame's, and no copy of the whole X is
    made.
    """
    step = max(1, 2**20 // max(1, X.shape[1]))
    for start in range(0, X.shape[0], step):
        chunk = slice(start, start + step)
        values = X[chunk] if rows is None else X[chunk][rows[chunk]]
        values = np.ascontiguousarray(values, dtype=np.float64)
        yield chunk, values.reshape(len(values), -1, channels)


def _unit_if_constant(scale, offset):
    """A constant channel is scaled by 1 (as in StandardScaler)."""
    scale[scale <= 10 * np.finfo(np.float64).eps * np.maximum(1, np.abs(offset))] = 1
    return scale


def channel_range(X, channels, sample_weight=None):
    """Per-channel (minimum, maximum - minimum) of channels-last rows.

    Over the samples of non-zero weight (so an integer weight counts as
    repeated rows) and every pixel.
    """
    rows = None if sample_weight is None else np.asarray(sample_weight) > 0
    low, high = np.full(channels, np.inf), np.full(channels, -np.inf)
    for _, values in _pixel_chunks(X, channels, rows):
        if len(values):
            np.minimum(low, values.min(axis=(0, 1)), out=low)
            np.maximum(high, values.max(axis=(0, 1)), out=high)
    return low, _unit_if_constant(high - low, low)


def channel_statistics(X, channels, sample_weight=None):
    """Weighted per-channel mean and standard deviation of channels-last rows.

    Over every sample (weighted, so an integer weight counts as repeated
    rows) and pixel; two passes in float64 chunks, so neither a float64
    copy of X nor the cancellation of E[x^2] - E[x]^2 is needed.
    """
    n = X.shape[0]
    w = np.ones(n) if sample_weight is None else np.asarray(sample_weight, float)
    total = w.sum() * (X.shape[1] // channels)

    def weighted_sum(f):
        out = np.zeros(channels)
        for chunk, values in _pixel_chunks(X, channels):
            out += np.einsum("n,npc->c", w[chunk], f(values))
        return out

    mean = weighted_sum(lambda v: v) / total
    var = weighted_sum(lambda v: (v - mean) ** 2) / total
    return mean, _unit_if_constant(np.sqrt(var), mean)
