"""Predict a Dask array block by block (``pip install "skcnn[dask]"``).

Inference is row-wise: each sample's prediction needs only that sample, so
an array chunked along the sample axis can be predicted one block at a time,
in parallel, on any Dask scheduler -- the threads of one machine or the
workers of a ``dask.distributed`` cluster -- with nothing in memory but the
blocks being predicted. :func:`predict_blocks` is a thin wrapper over
``dask.array.map_blocks`` that gets right what a hand-written call easily
gets wrong; dask is imported only when it is called.
"""

import numpy as np

# Methods that map each row of X to one row of output, and nothing else:
# the only ones that may be applied to the blocks separately.
_ROW_METHODS = (
    "predict",
    "predict_proba",
    "predict_log_proba",
    "decision_function",
    "transform",
    "score_samples",
)


def _dask():
    try:
        import dask
        import dask.array as da
    except ImportError as exc:
        raise ImportError(
            "predict_blocks needs dask: pip install 'skcnn[dask]'"
        ) from exc
    return dask, da


def _apply(block, estimator, method, empty):
    # Filtering a dask array (X[mask]) can leave blocks without rows, which
    # scikit-learn's input checks reject: they map to no rows of output.
    if block.shape[0] == 0:
        return empty
    return getattr(estimator, method)(block)


def predict_blocks(estimator, X, method="predict"):
    """Apply a fitted estimator's method to a Dask array, block by block.

    Each block of rows goes through ``getattr(estimator, method)`` as an
    ordinary NumPy array, on whichever worker the scheduler picks, and the
    results form a lazy Dask array with the same row chunks: call
    ``.compute()`` (or ``client.compute``, ``.to_zarr``...) to run it.

    Parameters
    ----------
    estimator : fitted estimator
        A fitted skcnn estimator, or any fitted scikit-learn estimator or
        pipeline whose ``method`` maps each row of X to one output row.
    X : dask.array.Array of shape (n_samples, n_features) or (n_samples, *image)
        The samples, e.g. ``(n, height, width, channels)`` images or
        flattened rows. Chunks along the other axes are merged first
        (``X.rechunk({axis: -1, ...})``) so that every block holds whole
        samples; choose the row chunks so that a block fits a worker's
        memory (the prediction itself then runs in bounded chunks).
    method : {"predict", "predict_proba", "predict_log_proba", \
"decision_function", "transform", "score_samples"}, default="predict"
        The method applied to each block.

    Returns
    -------
    result : dask.array.Array of shape (n_samples,) or (n_samples, n_outputs)
        Lazy: ``result.compute()`` equals ``getattr(estimator, method)``
        applied to each block of X in turn, their results concatenated.
        The output's trailing shape and dtype are read from the method's
        output on one zero sample, computed here.

    Notes
    -----
    The estimator enters the task graph once, as a single key (a
    ``dask.delayed`` object) that every block's task depends on: a
    ``dask.distributed`` cluster sends it to each worker once, where a
    bound method such as ``X.map_blocks(estimator.predict)`` would be
    serialized into every block's task -- a model's size times the number
    of blocks. Workers must be able to import skcnn.

    Each block gets the very bits the method gives it in memory, but a
    row's last bits may depend on the block around it, as BLAS kernels
    round a row by its position within a matrix: with several blocks the
    result can differ from the method applied to the whole array by float
    rounding; with a single block the two are the same bits.

    Examples
    --------
    >>> import dask.array as da  # doctest: +SKIP
    >>> from sklearn.datasets import load_digits
    >>> from skcnn import CNNClassifier
    >>> from skcnn.dask import predict_blocks
    >>> X, y = load_digits(return_X_y=True)
    >>> images = X.reshape(-1, 8, 8, 1) / 16
    >>> clf = CNNClassifier(max_iter=5).fit(images, y)  # doctest: +SKIP
    >>> blocks = da.from_array(images, chunks=(500, 8, 8, 1))  # doctest: +SKIP
    >>> proba = predict_blocks(clf, blocks, "predict_proba")  # doctest: +SKIP
    >>> proba.chunks  # doctest: +SKIP
    ((500, 500, 500, 297), (10,))
    >>> proba.compute().shape  # doctest: +SKIP
    (1797, 10)
    """
    dask, da = _dask()
    if method not in _ROW_METHODS:
        raise ValueError(
            f"method must be one of {', '.join(_ROW_METHODS)}; got {method!r}."
        )
    if not isinstance(X, da.Array):
        raise TypeError(
            f"X must be a dask array, got {type(X).__name__}; for an array in "
            f"memory call estimator.{method}(X) directly."
        )
    if X.ndim < 2:
        raise ValueError(f"X must have a sample axis and features; got {X.ndim}-D.")
    if any(np.isnan(size) for size in X.shape[1:]):
        raise ValueError("X's sizes past the sample axis must be known.")
    apply = getattr(estimator, method)  # fails here if it has no such method
    # one zero sample gives the output's per-sample shape and dtype, for any
    # estimator, so that nothing is computed from X itself to build the graph
    probe = np.asarray(apply(np.zeros((1, *X.shape[1:]), dtype=X.dtype)))
    empty = probe[:0]
    X = X.rechunk({axis: -1 for axis in range(1, X.ndim)})
    return X.map_blocks(
        _apply,
        dask.delayed(estimator),
        method,
        empty,
        # the sample axis stays; the others become the output's
        drop_axis=list(range(probe.ndim, X.ndim)),
        new_axis=list(range(X.ndim, probe.ndim)) or None,
        chunks=(X.chunks[0], *((size,) for size in probe.shape[1:])),
        dtype=probe.dtype,
        meta=empty,
    )
