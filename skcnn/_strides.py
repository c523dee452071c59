"""Strided views of arrays, cheaper than NumPy's ``as_strided``."""

import numpy as np
from numpy.lib.stride_tricks import as_strided


def strided_view(x, shape, strides):
    """A read-only view of ``x`` with ``shape`` and ``strides`` (bytes).

    NumPy's ``as_strided`` builds the view through a Python-level array
    interface: several microseconds holding the GIL, which the threads
    computing a minibatch's other parts wait for (the im2col copies and
    Winograd's patches make one per chunk). For a C-contiguous ``x`` the
    ``ndarray`` constructor makes the same view over ``x``'s buffer in
    about one. The view must stay within ``x``, as all of skcnn's do.
    """
    if not x.flags.c_contiguous:
        return as_strided(x, shape, strides, writeable=False)
    view = np.ndarray(shape, dtype=x.dtype, buffer=x, strides=strides)
    view.flags.writeable = False
    return view
