"""Strided views of arrays, cheaper than NumPy's ``as_strided``."""

import numpy as np
from numpy.lib.stride_tricks import as_strided


def strided_view(x, shape, strides, writeable=False, offset=0):
    """A view of ``x`` with ``shape`` and ``strides`` (bytes), starting
    ``offset`` bytes into a C-contiguous ``x``; read-only unless
    ``writeable`` (then no two of its elements may share memory).

    NumPy's ``as_strided`` builds the view through a Python-level array
    interface: several microseconds holding the GIL, which the threads
    computing a minibatch's other parts wait for (the im2col copies and
    Winograd's patches make one per chunk). For a C-contiguous ``x`` the
    ``ndarray`` constructor makes the same view over ``x``'s buffer in
    about one. The view must stay within ``x``, as all of skcnn's do.
    """
    if not x.flags.c_contiguous:
        if offset:
            raise ValueError("an offset needs a C-contiguous array")
        return as_strided(x, shape, strides, writeable=writeable)
    view = np.ndarray(shape, x.dtype, buffer=x, offset=offset, strides=strides)
    view.flags.writeable = writeable
    return view


def window_view(a, ph, pw, rows, cols, writeable=False):
    """View (ph, pw, n, rows, cols, C) of the (n, H, W, C) map ``a``:
    ``[p, q, :, u, v]`` is pixel ``(ph * u + p, pw * v + q)``.

    Its pixels grouped by their place in a ``(ph, pw)`` window, so that
    moving a whole map between this order and the windowed one (see
    :func:`~skcnn._layers.conv2d_forward`'s ``windows``) is one NumPy call.
    """
    sn, sh, sw, sc = a.strides
    shape = (ph, pw, a.shape[0], rows, cols, a.shape[3])
    strides = (sh, sw, sn, ph * sh, pw * sw, sc)
    return strided_view(a, shape, strides, writeable)
