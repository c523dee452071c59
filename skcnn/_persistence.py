"""Saving and loading models without pickle.

A model file is a NumPy ``.npz`` archive: the parameters and the small
fitted attributes as one JSON document, the weights as plain numeric
arrays. ``load`` reads it with ``allow_pickle=False``, so opening a model
file can never execute code -- unlike ``pickle`` or ``joblib.load``.

``save`` writes exactly the path it is given (whatever its suffix) and
never leaves a half-written file there: the archive goes to a temporary
file in the same folder, is flushed to disk, then renamed over the target.
"""

import contextlib
import json
import os
import secrets
import stat
import struct
import zipfile
import zlib

import numpy as np
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted

from . import _built_from as built_from
from ._optimizers import make_optimizer

FORMAT = "skcnn-model"
FORMAT_VERSION = 2  # 2: input scaling, data_format

# Fitted attributes stored in the JSON document as they are.
_SCALARS = [
    "n_features_in_",
    "image_shape_",
    "loss_",
    "loss_curve_",
    "best_loss_",
    "validation_scores_",
    "best_validation_score_",
    "n_iter_",
    "t_",
    "n_layers_",
    "n_outputs_",
    "out_activation_",
    "history_",
]
_ARRAY_LISTS = [
    "coefs_",
    "intercepts_",
    "batch_norm_scales_",
    "batch_norm_means_",
    "batch_norm_vars_",
]
# Fitted arrays (or None), stored under their own names.
_ARRAYS = ["input_offset_", "input_scale_"]


def _jsonable(value):
    if isinstance(value, (np.generic, np.ndarray)):  # an array parameter too
        return _jsonable(value.tolist())
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"cannot store {type(value).__name__} {value!r} in a model file")


def _estimator_classes():
    from . import CNNClassifier, CNNRegressor

    return {"CNNClassifier": CNNClassifier, "CNNRegressor": CNNRegressor}


def save(estimator, path):
    """Write a fitted skcnn estimator to exactly ``path`` (an ``.npz`` archive)."""
    from . import __version__

    check_is_fitted(estimator)
    # the values the model was built from, whatever set_params did since
    params = {**estimator.get_params(), **estimator._fitted_params}
    if isinstance(params.get("class_weight"), dict):  # JSON keys must be strings
        params["class_weight"] = {"pairs": list(params["class_weight"].items())}
    if not (params["random_state"] is None or isinstance(params["random_state"], int)):
        params["random_state"] = None  # a RandomState object is not data
    target_meta, arrays = estimator._target_state()
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "skcnn_version": __version__,
        "class": type(estimator).__name__,
        "params": _jsonable(params),
        "fitted": {k: _jsonable(getattr(estimator, k)) for k in _SCALARS},
        **target_meta,
        "feature_names_in_": _jsonable(
            list(getattr(estimator, "feature_names_in_", []))
        )
        or None,
        "arrays": {},
    }
    for name in _ARRAY_LISTS:
        values = getattr(estimator, name)
        meta["arrays"][name] = None if values is None else len(values)
        for i, a in enumerate(values or []):
            arrays[f"{name}{i}"] = a
    for name in _ARRAYS:
        if getattr(estimator, name) is not None:
            arrays[name] = getattr(estimator, name)
    _write_atomically(path, __meta__=np.array(json.dumps(meta)), **arrays)


def _write_atomically(path, **arrays):
    # resolve a symlink so that, like open(), the save goes to the file it
    # points at rather than replacing the link
    target = os.path.realpath(path)
    folder, name = os.path.split(target)
    fd, tmp = _create_temporary(folder, name)
    try:
        # a file object, not a name: np.savez appends ".npz" to names
        with os.fdopen(fd, "wb") as file:
            np.savez(file, **arrays)
            file.flush()
            os.fsync(file.fileno())
        with contextlib.suppress(FileNotFoundError):
            # overwriting keeps the file's permissions, as open() does
            os.chmod(tmp, stat.S_IMODE(os.stat(target).st_mode))
        os.replace(tmp, target)
    except BaseException:  # a full disk, Ctrl-C: the old file stays intact
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    if hasattr(os, "O_DIRECTORY"):  # make the rename itself durable (POSIX)
        with contextlib.suppress(OSError):
            dir_fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)


def _create_temporary(folder, name):
    """A new file next to ``name``, created with the mode open() would use.

    tempfile.mkstemp creates 0600 files, and reading the umask to widen
    that means setting it, process-wide; opening with 0o666 lets the
    kernel apply the umask as it does for any new file.
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    for _ in range(100):
        tmp = os.path.join(folder, f".{name}.{secrets.token_hex(4)}.tmp")
        try:
            return os.open(tmp, flags, 0o666), tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temporary file name next to {name!r}")


def load(path):
    """Read a model written by :meth:`CNNClassifier.save` or
    :meth:`CNNRegressor.save`.

    Parameters
    ----------
    path : str or path-like
        The model file.

    Returns
    -------
    estimator : CNNClassifier or CNNRegressor
        The fitted model, of the type that was saved: its predictions are
        identical to the saved one's. Further ``partial_fit`` calls start a
        fresh optimizer.

    Raises
    ------
    FileNotFoundError
        If there is no file at ``path``.
    ValueError
        If the file is not a skcnn model, comes from an incompatible format
        version, or is truncated or tampered with.
    """
    # opened here so that a missing file or a folder is reported as such
    with open(path, "rb") as file:
        meta, arrays = _read(path, file)
    if meta.get("format_version") != FORMAT_VERSION:
        raise ValueError(
            f"{path} was written in model format {meta.get('format_version')} "
            f"(skcnn {meta.get('skcnn_version')}); this skcnn "
            f"reads format {FORMAT_VERSION}. Re-save it with a matching version."
        )
    try:
        params = meta["params"]
        if isinstance(params.get("class_weight"), dict):
            params["class_weight"] = dict(map(tuple, params["class_weight"]["pairs"]))
        for name, value in params.items():  # JSON turned tuples into lists
            if isinstance(value, list):
                params[name] = tuple(value)
        est = _estimator_classes()[meta["class"]](**params)
        for key, value in meta["fitted"].items():
            setattr(est, key, value)
        est.image_shape_ = tuple(est.image_shape_)
        est._fitted_params = built_from.record(est)
        est._restore_target_state(meta, arrays)
        if meta["feature_names_in_"]:
            est.feature_names_in_ = np.asarray(meta["feature_names_in_"], dtype=object)
        for name, count in meta["arrays"].items():
            setattr(
                est,
                name,
                None if count is None else [arrays[f"{name}{i}"] for i in range(count)],
            )
        for name in _ARRAYS:
            setattr(est, name, arrays.get(name))
            value = getattr(est, name)
            if (est.input_scaling is None) != (value is None) or (
                value is not None and value.shape != est.image_shape_[2:]
            ):
                raise ValueError(f"{name} does not match the input scaling")
        est._net = est._build_network()
        expected = est._net.coef_shapes
        if [c.shape for c in est.coefs_] != [tuple(s) for s in expected] or any(
            b.shape != (s[-1],) for b, s in zip(est.intercepts_, expected)
        ):
            raise ValueError("weight shapes do not match the architecture")
        filters = [(s[-1],) for s in expected[: len(est._net.conv_blocks)]]
        for name in _ARRAY_LISTS[2:]:  # the batch norm's, one per conv block
            values = getattr(est, name)
            shapes = None if values is None else [a.shape for a in values]
            if shapes != (filters if est.batch_norm else None):
                raise ValueError(f"{name} does not match the architecture")
        if not all(np.isfinite(a).all() for a in est.coefs_ + est.intercepts_):
            raise ValueError("non-finite weights")
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(
            f"{path} is a corrupt or tampered skcnn model file: {exc}"
        ) from None
    est._random_state = check_random_state(est.random_state)
    est._optimizer = make_optimizer(est, est._weights().trainable())
    est._no_improvement_count = 0
    est._best_state = [a.copy() for a in est._weights().state()]
    return est


def _read(path, file):
    """The JSON document and the arrays of an open model file."""
    not_a_model = f"{path} is not an skcnn model file"
    if file.read(4) != b"PK\x03\x04":  # every non-empty .npz is a zip
        raise ValueError(f"{not_a_model} (not an .npz archive).")
    file.seek(0)
    # what zipfile, zlib and struct raise on a truncated or damaged archive
    # (garbled flags read as an unknown compression or an encrypted entry)
    damaged = (
        zipfile.BadZipFile,
        zlib.error,
        struct.error,
        EOFError,
        OSError,
        NotImplementedError,
        RuntimeError,
    )
    try:
        with np.load(file, allow_pickle=False) as data:
            meta = None
            if "__meta__" in data.files:
                try:
                    meta = json.loads(str(data["__meta__"]))
                except damaged:
                    raise
                except Exception:  # pickled, garbled or not JSON: not ours
                    pass
            if not (
                isinstance(meta, dict)
                and meta.get("format") == FORMAT
                and meta.get("class") in _estimator_classes()
            ):
                raise ValueError(f"{not_a_model} (no skcnn estimator header).")
            arrays = {}
            for key in data.files:
                if key == "__meta__":
                    continue
                try:
                    arrays[key] = data[key]
                # bytes from anywhere: a garbled .npy header fails in numpy's
                # parser (even its tokenizer), an object array is refused by
                # allow_pickle=False -- whose message must not invite the
                # user to turn pickle on
                except Exception:
                    raise ValueError(
                        f"{path} is not a readable skcnn model file (truncated "
                        f"or tampered?): entry {key!r} cannot be read as a plain "
                        "numeric array."
                    ) from None
    except damaged as exc:
        raise ValueError(
            f"{path} is not a readable skcnn model file (truncated or damaged?): {exc}"
        ) from None
    return meta, arrays
