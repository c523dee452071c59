"""Image-shape handling: how the rows of X map onto (height, width, channels).

X reaches the estimator as 2-D ``(n_samples, n_features)`` rows -- each a
flattened image in (height, width, channels) row-major order -- or as 3-D
``(n, height, width)`` / 4-D ``(n, height, width, channels)`` arrays. The
estimator validates everything in the 2-D form (so scikit-learn's
``validate_data`` records ``n_features_in_`` and feature names as usual) and
remembers the per-sample shape the images came in.
"""

from math import isqrt

import numpy as np
import scipy.sparse as sp
from sklearn.utils.validation import check_is_fitted, validate_data

from ._params import check_image_shape


def split_images(X):
    """Return ``(X_2d, sample_shape)``.

    ``sample_shape`` is ``(height, width, channels)`` when X came as 3-D or
    4-D images, else None (X is passed through untouched for validation).
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
    """X for a fitted estimator: its image shape, its dtype, sane values."""
    check_is_fitted(est)
    X, sample_shape = split_images(X)
    check_sample_shape(sample_shape, est.image_shape_)
    X = validate_data(est, X, dtype=est.coefs_[0].dtype, reset=False)
    check_magnitude(X)
    return X
