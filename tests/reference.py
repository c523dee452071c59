"""Textbook definitions the tests compare skcnn's fast paths with."""

import numpy as np


def direct_correlation(x, W, stride, pads):
    """The convolution layer by its definition: six loops' worth of sums
    over each zero-padded (n, H, W, C) window, no im2col, no Winograd."""
    (top, bottom), (left, right) = pads
    kh, kw, _, filters = W.shape
    xp = np.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)))
    out_h = (xp.shape[1] - kh) // stride + 1
    out_w = (xp.shape[2] - kw) // stride + 1
    out = np.zeros((x.shape[0], out_h, out_w, filters), x.dtype)
    for n in range(x.shape[0]):
        for i in range(out_h):
            for j in range(out_w):
                patch = xp[
                    n, i * stride : i * stride + kh, j * stride : j * stride + kw
                ]
                out[n, i, j] = np.tensordot(patch, W, axes=3)
    return out
