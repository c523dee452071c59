"""Plots of a fitted CNNClassifier or CNNRegressor, following scikit-learn's
Display API.

Needs matplotlib (``pip install "skcnn[plot]"``), imported only when a
display is drawn. Each display has ``from_estimator`` and ``plot(ax=...)``
and keeps what it drew in ``figure_`` and ``ax_`` (``axes_`` for grids).
``from_estimator`` takes a fitted skcnn estimator or a fitted
:class:`~sklearn.pipeline.Pipeline` ending in one.
"""

import numpy as np
from sklearn.base import is_classifier
from sklearn.pipeline import Pipeline
from sklearn.utils.validation import check_is_fitted

from ._base import BaseCNN
from ._image import validate_images


def _pyplot():
    try:
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise ImportError(
            "skcnn's plots need matplotlib: pip install 'skcnn[plot]'"
        ) from exc
    return plt


def _skcnn_estimator(estimator, display):
    """The fitted skcnn estimator of ``estimator`` (itself, or the last step
    of a Pipeline); TypeError for anything else, NotFittedError if unfitted.
    """
    final = estimator[-1] if isinstance(estimator, Pipeline) else estimator
    if not isinstance(final, BaseCNN):
        what = (
            f"a Pipeline ending in {type(final).__name__}"
            if final is not estimator
            else type(estimator).__name__
        )
        raise TypeError(
            f"{display}.from_estimator needs a fitted skcnn CNNClassifier or "
            f"CNNRegressor, or a fitted Pipeline ending in one; got {what}."
        )
    check_is_fitted(estimator)
    check_is_fitted(final)  # a Pipeline's own check may be looser
    return final


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


def _displayable(image):
    """An (H, W, C) image as imshow draws it: grayscale (H, W) for one
    channel, RGB scaled to [0, 1] for three, the channel mean otherwise."""
    if image.shape[-1] == 1:
        return image[..., 0]
    if image.shape[-1] == 3:
        low, high = image.min(), image.max()
        return (image - low) / (high - low or 1)
    return image.mean(axis=-1)


class LossCurveDisplay:
    """Training loss (and validation score) per epoch.

    Parameters
    ----------
    loss_curve : list of float
        The training loss of each epoch (``loss_curve_``).
    validation_scores : list of float or None, default=None
        The validation score of each epoch (``validation_scores_``); they
        belong to the last ``len(validation_scores)`` epochs.
    estimator_name : str or None, default=None
        Title of the plot.
    best_epoch : int or None, default=None
        The (1-based) epoch whose weights early stopping restored, marked
        on the validation curve.
    validation_label : str, default="validation score"
        Name of the validation score, e.g. "validation accuracy".

    Attributes
    ----------
    line_ : matplotlib Line2D
        The loss curve.
    validation_line_ : matplotlib Line2D or None
        The validation curve, on a second y axis.
    best_marker_ : matplotlib Line2D or None
        The marker of the restored best epoch.
    validation_ax_ : matplotlib Axes or None
        The second y axis, of the validation score.
    legend_ : matplotlib Legend
    ax_, figure_ : matplotlib Axes and Figure
    """

    def __init__(
        self,
        loss_curve,
        validation_scores=None,
        estimator_name=None,
        *,
        best_epoch=None,
        validation_label="validation score",
    ):
        self.loss_curve = loss_curve
        self.validation_scores = validation_scores
        self.estimator_name = estimator_name
        self.best_epoch = best_epoch
        self.validation_label = validation_label

    @classmethod
    def from_estimator(cls, estimator, *, ax=None):
        """Plot a fitted estimator's ``loss_curve_`` and ``validation_scores_``.

        Parameters
        ----------
        estimator : CNNClassifier, CNNRegressor or Pipeline
            Fitted; a Pipeline must end in one of the two.
        ax : matplotlib Axes, default=None
            Where to draw; a new figure when None.

        Returns
        -------
        display : LossCurveDisplay
        """
        est = _skcnn_estimator(estimator, cls.__name__)
        scores = est.validation_scores_
        best_epoch = None
        if scores and est.best_validation_score_ in scores:
            # early stopping ended the fit on this epoch's weights
            first = len(est.loss_curve_) - len(scores)
            best_epoch = first + scores.index(est.best_validation_score_) + 1
        score = "accuracy" if is_classifier(est) else "R^2"
        return cls(
            est.loss_curve_,
            scores,
            type(est).__name__,
            best_epoch=best_epoch,
            validation_label=f"validation {score}",
        ).plot(ax=ax)

    def plot(self, ax=None):
        """Draw on ``ax`` (a new figure when None); returns the display.

        The legend sits below the axes, clear of both curves: a figure of
        your own wants room for it there (``layout="constrained"``, or
        ``savefig(..., bbox_inches="tight")``).
        """
        plt = _pyplot()
        from matplotlib.ticker import MaxNLocator

        if ax is None:
            # constrained layout makes room for the legend below the axes
            _, ax = plt.subplots(layout="constrained")
        n_epochs = len(self.loss_curve)
        epochs = np.arange(1, n_epochs + 1)
        (self.line_,) = ax.plot(epochs, self.loss_curve, label="training loss")
        ax.set_xlabel("epoch")
        ax.set_ylabel("loss")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # no epoch 1.5
        handles = [self.line_]
        self.validation_line_ = self.best_marker_ = self.validation_ax_ = None
        if self.validation_scores:
            twin = ax.twinx()
            # a warm start that turned early stopping on scores only the
            # last epochs: align the scores on them
            first = max(n_epochs - len(self.validation_scores), 0)
            val_epochs = np.arange(first + 1, first + len(self.validation_scores) + 1)
            (self.validation_line_,) = twin.plot(
                val_epochs,
                self.validation_scores,
                color="C1",
                label=self.validation_label,
            )
            twin.set_ylabel(self.validation_label)
            handles.append(self.validation_line_)
            if self.best_epoch is not None:
                if self.best_epoch not in val_epochs:
                    raise ValueError(
                        f"best_epoch={self.best_epoch} is not an epoch with a "
                        f"validation score ({val_epochs[0]} to {val_epochs[-1]})."
                    )
                (self.best_marker_,) = twin.plot(
                    [self.best_epoch],
                    [self.validation_scores[self.best_epoch - first - 1]],
                    linestyle="none",
                    marker="o",
                    markersize=8,
                    markerfacecolor="none",
                    color="C3",
                    label=f"restored best epoch ({self.best_epoch})",
                )
                handles.append(self.best_marker_)
            self.validation_ax_ = twin
        # below the axes: inside, the twin's curves would run under it (or
        # hide the marker), and "best" placement only sees ax's own lines
        self.legend_ = ax.legend(
            handles=handles,
            loc="upper center",
            bbox_to_anchor=(0.5, -0.12),
            ncol=len(handles),
            fontsize="small",
            frameon=False,
        )
        if self.estimator_name:
            ax.set_title(self.estimator_name)
        self.ax_, self.figure_ = ax, ax.figure
        return self


class _ImageGridDisplay:
    """Shared drawing of a stack of 2-D images as a grid."""

    def __init__(self, images, title=None):
        self.images = images
        self.title = title

    def _draw_grid(self, axes, figure, cmap, **scale):
        self.images_ = []
        for a, image in zip(axes, self.images):
            self.images_.append(a.imshow(image, cmap=cmap, **scale))
            a.set_axis_off()
        if self.title:
            figure.suptitle(self.title)

    def plot(self, ax=None, cmap="gray"):
        """Draw one image per axis of ``ax`` (a new grid when None)."""
        axes, figure = _grid_axes(len(self.images), ax)
        self._draw_grid(axes, figure, cmap)
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
        """Plot ``coefs_[0]`` of a fitted estimator with convolutions.

        ``estimator`` is a fitted CNNClassifier, CNNRegressor or Pipeline
        ending in one; ``ax`` holds at least one axis per filter.
        """
        est = _skcnn_estimator(estimator, cls.__name__)
        if not est._net.conv_blocks:
            raise ValueError("The estimator has no convolution layer.")
        kernels = np.moveaxis(est.coefs_[0], -1, 0)  # (filters, kh, kw, c)
        if kernels.shape[-1] == 3:
            # one scale for all kernels keeps their strengths comparable
            low, high = kernels.min(), kernels.max()
            images = (kernels - low) / (high - low or 1)
        else:
            images = kernels.mean(axis=-1)
        return cls(images, "first-layer filters").plot(ax=ax)


class FeatureMapDisplay(_ImageGridDisplay):
    """The feature maps of one input image after a chosen conv block.

    Parameters
    ----------
    images : ndarray of shape (filters, H', W')
        The maps, one per filter of the block.
    title : str or None, default=None
        Title of the figure.
    input_image : ndarray of shape (H, W) or (H, W, 3), default=None
        The input, drawn in the first panel (titled "input") when given.

    Attributes
    ----------
    images_ : list of matplotlib AxesImage
        The maps as drawn, on one colour scale (the maps' min to max).
    input_image_ : matplotlib AxesImage or None
        The input as drawn.
    axes_ : ndarray of matplotlib Axes
        Every panel, the input's first when there is one.
    ax_, figure_ : matplotlib Axes and Figure
        The first panel and the figure.
    """

    def __init__(self, images, title=None, input_image=None):
        super().__init__(images, title)
        self.input_image = input_image

    @classmethod
    def from_estimator(cls, estimator, x, *, block=0, ax=None):
        """Plot the maps of conv block ``block`` (0-based) for one image x.

        Parameters
        ----------
        estimator : CNNClassifier, CNNRegressor or Pipeline
            Fitted; a Pipeline must end in one of the two, and x goes
            through its preceding steps first.
        x : array-like
            One image: a flat row, or an (H, W) or (H, W, C) array.
        block : int, default=0
            The conv block whose (activated, pooled) maps are drawn.
        ax : array of matplotlib Axes, default=None
            At least ``filters + 1`` axes (the input first); a new figure
            when None.

        Returns
        -------
        display : FeatureMapDisplay
        """
        est = _skcnn_estimator(estimator, cls.__name__)
        n_blocks = len(est._net.conv_blocks)
        if not 0 <= block < n_blocks:
            raise ValueError(f"block must be in [0, {n_blocks}); got {block}.")
        x = _one_image(x, estimator, est)
        if est is estimator:
            X = validate_images(est, x)
            shown = X
        else:
            # the steps before the network, as at prediction; they take rows
            X = validate_images(est, estimator[:-1].transform(x.reshape(1, -1)))
            # the image as the user passed it, when it has the network's size
            shown = x if x.size == X.size else X
        # the estimator's own forward (its input scaling included), run up
        # to and including the block
        maps = est._forward(X, stop=est._net.conv_block_end(block))
        maps = maps.reshape(est._net.conv_blocks[block].out_shape)
        input_image = _displayable(np.reshape(shown, est.image_shape_))
        return cls(np.moveaxis(maps, -1, 0), f"conv block {block}", input_image).plot(
            ax=ax
        )

    def plot(self, ax=None, cmap="gray"):
        """Draw the input (if any) and one map per axis of ``ax``, all maps
        on one colour scale."""
        with_input = self.input_image is not None
        axes, figure = _grid_axes(len(self.images) + with_input, ax)
        self.input_image_ = None
        if with_input:
            self.input_image_ = axes[0].imshow(self.input_image, cmap=cmap)
            axes[0].set_title("input", fontsize="small")
            axes[0].set_axis_off()
        # one colour scale for all maps: activations compare across filters,
        # and 1x1 maps (deep blocks) are not all drawn black
        maps = np.asarray(self.images)
        low, high = (maps.min(), maps.max()) if maps.size else (0, 1)
        self._draw_grid(axes[with_input:], figure, cmap, vmin=low, vmax=high)
        self.axes_, self.ax_, self.figure_ = axes, axes[0], figure
        return self


def _one_image(x, estimator, est):
    """x as a batch of one image; ValueError unless it holds one image."""
    x = np.asarray(x)
    shape = tuple(est.image_shape_)
    if shape[2] == 1:
        shape = shape[:2]
    n_values = getattr(estimator, "n_features_in_", est.n_features_in_)
    if not 1 <= x.ndim <= 4 or x.size != n_values:
        image = f" or an array of shape {shape}" if n_values == np.prod(shape) else ""
        raise ValueError(
            "FeatureMapDisplay draws the maps of one image: pass one image "
            f"(a flat row of {n_values} values{image}), not an array of shape "
            f"{x.shape}."
        )
    if x.ndim == 1 or x.shape == shape or x.shape[0] != 1:
        return x[None]
    return x  # already a batch of one
