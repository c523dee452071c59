"""Plots of a fitted CNNClassifier, following scikit-learn's Display API.

Needs matplotlib (``pip install "skcnn[plot]"``), imported only when a
display is drawn. Each display has ``from_estimator`` and ``plot(ax=...)``
and keeps what it drew in ``figure_`` and ``ax_`` (``axes_`` for grids).
"""

import numpy as np

from ._image import validate_images
from ._network import forward


def _pyplot():
    try:
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise ImportError(
            "skcnn's plots need matplotlib: pip install 'skcnn[plot]'"
        ) from exc
    return plt


def _grid_axes(n, ax):
    """``ax`` as an array of at least n axes (a new figure when None)."""
    plt = _pyplot()
    if ax is None:
        cols = int(np.ceil(np.sqrt(n)))
        rows = int(np.ceil(n / cols))
        fig, ax = plt.subplots(rows, cols, figsize=(1.2 * cols, 1.2 * rows))
    axes = np.atleast_1d(ax).ravel()
    if axes.size < n:
        raise ValueError(f"ax holds {axes.size} axes but {n} images are drawn.")
    for extra in axes[n:]:
        extra.set_axis_off()
    return axes[:n], axes[0].figure


class LossCurveDisplay:
    """Training loss (and validation score) per epoch.

    Parameters
    ----------
    loss_curve : list of float
        The training loss of each epoch (``loss_curve_``).
    validation_scores : list of float or None, default=None
        The validation accuracy of each epoch (``validation_scores_``).
    estimator_name : str or None, default=None
        Title of the plot.

    Attributes
    ----------
    line_ : matplotlib Line2D
        The loss curve.
    validation_line_ : matplotlib Line2D or None
        The validation curve, on a second y axis.
    ax_, figure_ : matplotlib Axes and Figure
    """

    def __init__(self, loss_curve, validation_scores=None, estimator_name=None):
        self.loss_curve = loss_curve
        self.validation_scores = validation_scores
        self.estimator_name = estimator_name

    @classmethod
    def from_estimator(cls, estimator, *, ax=None):
        """Plot a fitted estimator's ``loss_curve_`` and ``validation_scores_``."""
        display = cls(
            estimator.loss_curve_,
            estimator.validation_scores_,
            type(estimator).__name__,
        )
        return display.plot(ax=ax)

    def plot(self, ax=None):
        """Draw on ``ax`` (a new figure when None); returns the display."""
        plt = _pyplot()
        if ax is None:
            _, ax = plt.subplots()
        epochs = np.arange(1, len(self.loss_curve) + 1)
        (self.line_,) = ax.plot(epochs, self.loss_curve, label="training loss")
        ax.set_xlabel("epoch")
        ax.set_ylabel("loss")
        self.validation_line_ = None
        if self.validation_scores:
            twin = ax.twinx()
            (self.validation_line_,) = twin.plot(
                epochs, self.validation_scores, color="C1", label="validation score"
            )
            twin.set_ylabel("validation score")
        if self.estimator_name:
            ax.set_title(self.estimator_name)
        self.ax_, self.figure_ = ax, ax.figure
        return self


class _ImageGridDisplay:
    """Shared drawing of a stack of 2-D images as a grid."""

    def __init__(self, images, title=None):
        self.images = images
        self.title = title

    def plot(self, ax=None, cmap="gray"):
        """Draw one image per axis of ``ax`` (a new grid when None)."""
        axes, figure = _grid_axes(len(self.images), ax)
        self.images_ = []
        for a, image in zip(axes, self.images):
            self.images_.append(a.imshow(image, cmap=cmap))
            a.set_axis_off()
        if self.title:
            figure.suptitle(self.title)
        self.axes_, self.ax_, self.figure_ = axes, axes[0], figure
        return self


class FilterDisplay(_ImageGridDisplay):
    """The first convolution layer's kernels as a grid of images.

    ``images`` is an (n_filters, kh, kw) array (or (n_filters, kh, kw, 3)
    for RGB inputs); ``from_estimator`` builds it from ``coefs_[0]``,
    averaging over the input channels unless there are three.
    """

    @classmethod
    def from_estimator(cls, estimator, *, ax=None):
        """Plot ``coefs_[0]`` of a fitted estimator with convolutions."""
        if not estimator._net.conv_blocks:
            raise ValueError("The estimator has no convolution layer.")
        kernels = np.moveaxis(estimator.coefs_[0], -1, 0)  # (filters, kh, kw, c)
        if kernels.shape[-1] == 3:
            low, high = kernels.min(), kernels.max()
            images = (kernels - low) / (high - low or 1)
        else:
            images = kernels.mean(axis=-1)
        return cls(images, "first-layer filters").plot(ax=ax)


class FeatureMapDisplay(_ImageGridDisplay):
    """The feature maps of one input image after a chosen conv block.

    ``images`` is a (filters, H', W') array; ``from_estimator`` computes it
    with the fitted weights (as at prediction).
    """

    @classmethod
    def from_estimator(cls, estimator, x, *, block=0, ax=None):
        """Plot the maps of conv block ``block`` (0-based) for one sample x."""
        n_blocks = len(estimator._net.conv_blocks)
        if not 0 <= block < n_blocks:
            raise ValueError(f"block must be in [0, {n_blocks}); got {block}.")
        X = validate_images(estimator, np.asarray(x)[None])
        maps, _ = forward(
            estimator._net,
            estimator._weights(),
            X.reshape((1,) + estimator.image_shape_),
            stop=estimator._net.conv_block_end(block),
        )
        return cls(np.moveaxis(maps[0], -1, 0), f"conv block {block}").plot(ax=ax)
