"""Docstring sections shared by CNNClassifier and CNNRegressor.

Both estimators take the same architecture and training parameters and
have the same fitted attributes; their docstrings are assembled from these
sections so the two cannot drift apart. ``{score}`` stands for what early
stopping measures ("accuracy" or "R^2").
"""

SHARED_INTRO = """\
The default network is conv 3x3x32 -> ReLU -> max-pool 2 -> conv 3x3x64
-> ReLU -> max-pool 2 -> flatten -> dense 64 -> ReLU -> output layer,
with "valid" convolutions (the classic MNIST network) on images of 16
pixels or more a side and "same" ones on smaller images, which "valid"
convolutions would shrink to a pixel (``padding="auto"``).

**Input shapes.** ``X`` may be 2-D ``(n_samples, n_features)``, each row
a flattened image in (height, width, channels) row-major order; 3-D
``(n_samples, height, width)`` grayscale images; or 4-D ``(n_samples,
height, width, channels)`` channels-last images. With
``data_format="channels_first"`` (PyTorch's layout) 4-D images are
``(n_samples, channels, height, width)`` and 2-D rows are flattened in
(channels, height, width) order. The shape of one image is resolved at
fit time, in this order:

- 3-D / 4-D ``X`` carries it (``image_shape``, if given, must agree);
- ``image_shape=(height, width, channels)`` is used as given;
  ``image_shape=(height, width)`` takes ``channels = n_features /
  (height * width)``, which must be a whole number;
- with ``image_shape=None``, a perfect-square ``n_features`` is a square
  grayscale image (784 -> 28x28x1), and any other ``n_features`` is a
  single pixel with ``n_features`` channels (1x1xn_features), which makes
  the network an MLP over the features.

Prediction accepts the fitted per-sample shape or its flattened rows.

Any image size works with any architecture: a "valid" convolution
kernel or a pooling window larger than its input map is clipped to the
map's size, so no feature map ever vanishes.

**Input scaling.** The network starts by scaling each channel of the
input with statistics of the training images, learned at the first
``fit`` / ``partial_fit`` of a model and stored in ``input_offset_`` and
``input_scale_``: it computes on ``(X - input_offset_) / input_scale_``.
The default "minmax" maps each channel's range to [0, 1] (a black
background stays 0, which the zero padding matches); "standard" uses the
mean and standard deviation (weighted by ``sample_weight``). Raw pixels
(uint8 0-255, digits' 0-16) then train exactly as pixels scaled to
[0, 1]. ``predict``, ``transform``, ONNX, saved models and plots apply the
scaling.

**Training.** Ctrl-C during ``fit`` or ``partial_fit`` stops after the
current minibatch and then raises ``KeyboardInterrupt``, so that a
search or script around the fit stops too; the estimator keeps the
weights of the last completed minibatch and stays usable (a second
Ctrl-C interrupts at once and restores the model as it was before the
call). With scikit-learn >= 1.9,
``set_callbacks`` attaches callbacks such as ``ProgressBar``: each epoch
is a task, each minibatch a sub-task.

**Compute dtype.** A model fitted on float64 input computes in float64;
on float32, integer or boolean input (such as uint8 images) it computes
in float32, which halves memory and roughly doubles speed. Once fitted,
a model keeps its dtype: ``predict``, ``partial_fit`` and warm-started
fits convert new input to it, whatever that input's dtype."""

PARAMETERS = """\
image_shape : tuple of int, default=None
    ``(height, width)`` or ``(height, width, channels)`` of one sample
    when ``X`` is 2-D. See "Input shapes" above for ``None``.

data_format : {"channels_last", "channels_first"}, default="channels_last"
    Where the channels are in 4-D ``X``, ``(n, height, width, channels)``
    or ``(n, channels, height, width)`` (Keras's name), and the order of a
    2-D row's values. With the default, 4-D input that looks channels-first
    (e.g. ``(n, 3, 32, 32)``) gets a warning.

input_scaling : {"minmax", "standard"} or None, default="minmax"
    Per-channel scaling of the input learned when a model is first fitted
    (see "Input scaling" above): "minmax" by the channel's minimum and
    range (over samples of non-zero weight), "standard" by its weighted
    mean and standard deviation; ``coefs_[0]`` then acts on ``(X -
    input_offset_) / input_scale_``. None: ``coefs_[0]`` acts on X as
    given.

conv_filters : array-like of int, default=(32, 64)
    Number of filters of each convolution block; one block
    (convolution -> activation -> pooling) per entry. An empty tuple
    gives a plain multi-layer perceptron.

kernel_size : int or tuple of int, default=3
    Height and width of the convolution kernels, for all blocks or one
    per block.

pool_size : int or tuple of int, default=2
    Height and width of the pooling windows (their stride is the same),
    for all blocks or one per block; 1 means no pooling. Floor mode, as
    in Keras and PyTorch: a trailing row/column that does not fill a
    window is dropped.

padding : {"auto", "valid", "same"}, default="auto"
    "valid" uses no padding; "same" zero-pads so that the output has the
    input's size (as Keras: the extra row/column of an even kernel is
    padded at the bottom/right). "auto" is "same" for images smaller than
    16 pixels on a side, whose maps "valid" would shrink to a pixel (8x8
    digits: 0.962 test accuracy with the defaults against 0.955 with
    "valid"), and "valid" otherwise (MNIST: "same" costs 1.7x the time for
    no better accuracy).

pooling : {"max", "avg"}, default="max"
    Max or average pooling.

strides : int or tuple of int, default=1
    Stride of the convolutions, for all blocks or one per block.

global_pooling : bool, default=False
    Average each feature map of the last block to one value (global
    average pooling) instead of flattening the maps.

batch_norm : bool, default=False
    Batch-normalize each convolution's output before its activation
    (the block's intercept is then the normalization's shift, and
    ``batch_norm_scales_`` its scale). Training uses each minibatch's
    statistics and keeps running averages of them (momentum 0.1), which
    prediction uses, so predictions do not depend on the batch. Such a
    minibatch is not split across threads.

hidden_layer_sizes : array-like of int, default=(64,)
    Sizes of the fully connected hidden layers after the convolutions.

activation : {"identity", "logistic", "tanh", "relu"}, default="relu"
    Activation of the convolution blocks and hidden layers.

dropout : float in [0, 1), default=0.25
    Fraction of each hidden dense layer's outputs dropped during training
    (inverted dropout, off at prediction); 0 switches it off. The default
    keeps the dense layers, which hold most of the weights, from memorizing
    large training sets. A sample's masks are a hash of its values, the
    step and a seed drawn from the random state: fits stay reproducible,
    and a repeated row gets the same masks as the original, so an integer
    ``sample_weight`` still acts as repeated rows.

augment : dict or None, default=None
    ``{"shift": s, "flip": f}`` shifts each training image (never at
    prediction) by up to ``s`` pixels along each axis, zero-filled, and
    with ``f=True`` mirrors half of them; drawn from the random state.

solver : {"sgd", "adam", "adamw"}, default="adam"
    Weight optimizer: "sgd" and "adam" with MLPClassifier's semantics,
    "adamw" is Adam with decoupled weight decay.

alpha : float, default=0.0001
    Strength of the L2 penalty ``0.5 * alpha * sum(W ** 2) / n`` added to
    the loss of each minibatch of ``n`` samples (the sum of their sample
    weights when given); intercepts are not penalised. With
    ``solver="adamw"`` it is instead the decoupled weight decay: each
    step multiplies the weights by ``1 - rate * alpha``, and the loss
    has no L2 term.

batch_size : int or "auto", default="auto"
    Minibatch size; "auto" means ``min(200, max(64, n_samples // 16))``
    (clipped to ``n_samples``): MLPClassifier's 200 on large sets, but
    about 16 minibatches an epoch on small ones, down to 64.

learning_rate : {"anneal", "constant", "invscaling", "adaptive", \
        "cosine"}, default="anneal"
    Learning-rate schedule over the epochs ``E`` planned for the ``fit``
    call (see ``max_steps``), for every solver: "anneal" keeps
    ``learning_rate_init`` for the first two thirds of them, then decays
    it along a half cosine towards 0 over the last third -- a fit that the
    ``tol`` rule ends sooner (small sets) trains at the constant rate;
    "cosine" decays it over all of them, ``0.5 * (1 + cos(pi * epoch /
    E))``; "constant" never changes it. "invscaling" and "adaptive" are
    MLPClassifier's and apply to ``solver="sgd"`` only (the rate of the
    other solvers stays constant). The schedules restart with each
    ``fit`` (also a warm start); ``partial_fit``, which has no horizon,
    trains at ``learning_rate_init``. MLPClassifier's default is
    "constant"; "anneal" reached 99.2 % on MNIST where "constant" did not.

learning_rate_init : float, default=0.001
    Initial learning rate (the step size of Adam).

power_t : float, default=0.5
    Exponent of the "invscaling" schedule.

max_iter : int, default=200
    Maximum number of epochs (MLPClassifier's default and meaning), also
    ended early by the ``tol`` / ``n_iter_no_change`` rule and by
    ``max_steps``. A ConvergenceWarning says when ``max_iter`` ended
    training.

max_steps : int or None, default=9000
    Budget of optimizer steps (minibatches) per ``fit``: training runs
    ``min(max_iter, ceil(max_steps / batches_per_epoch))`` epochs, so the
    amount of training follows the data. With the other defaults that is
    30 epochs of 60,000 MNIST images (99.23-99.38 % test accuracy in
    2.5-3.5 minutes on 2 cores) and up to ``max_iter`` epochs of a small
    set (scikit-learn's 899 training digits: 75-115 epochs of 15 steps
    before the ``tol`` rule stops), where 30 epochs would leave the model
    under-trained. The planned epochs are also the
    horizon of the "anneal" and "cosine" learning-rate schedules. None:
    ``max_iter`` epochs. ``partial_fit`` always runs one epoch.

shuffle : bool, default=True
    Whether to shuffle the samples in each epoch.

random_state : int, RandomState instance or None, default=None
    Seeds the weight initialisation, shuffling and the early-stopping
    split. An int gives bit-identical fits on one machine.

tol : float, default=1e-4
    Tolerance of the stopping criterion, as in MLPClassifier.

verbose : bool, default=False
    Whether to print one line per epoch: loss, validation score (if
    any), epoch time and images per second.

warm_start : bool, default=False
    Reuse the previous solution as the starting point of ``fit``.

momentum : float, default=0.9
    Momentum of ``solver="sgd"``.

nesterovs_momentum : bool, default=True
    Whether ``solver="sgd"`` uses Nesterov's momentum.

early_stopping : bool, default=False
    Hold out ``validation_fraction`` of the training data (stratified for
    classification), or use the ``X_val, y_val`` passed to ``fit``, and
    stop when the validation {score} stops improving; the best weights are
    restored at the end.

validation_fraction : float, default=0.1
    Fraction of the training data held out for early stopping.

beta_1 : float, default=0.9
    Adam's decay rate of the first-moment estimates.

beta_2 : float, default=0.999
    Adam's decay rate of the second-moment estimates.

epsilon : float, default=1e-8
    Adam's numerical-stability constant.

n_iter_no_change : int, default=10
    Number of epochs without an improvement of ``tol`` before stopping."""

ATTRIBUTES = """\
n_features_in_ : int
    Number of values in one sample (height * width * channels).

feature_names_in_ : ndarray of shape (n_features_in_,)
    Names of the features seen in fit, when ``X`` has string column names.

image_shape_ : tuple of int
    Resolved ``(height, width, channels)`` of one sample.

input_offset_, input_scale_ : ndarray of shape (channels,) or None
    The input scaling's per-channel offset and scale: the minimum and
    range ("minmax") or the mean and standard deviation ("standard"); a
    constant channel's scale is 1. None with ``input_scaling=None``.

coefs_ : list of ndarray
    The live weights, one per convolution or dense layer in order:
    convolution kernels shaped ``(kernel_h, kernel_w, in_channels,
    filters)`` (the clipped size where the kernel was clipped), dense
    weights ``(n_inputs, n_outputs)``. The flatten before the first dense
    layer is in (height, width, channels) order.

intercepts_ : list of ndarray
    The live biases, one per layer, shaped ``(n_outputs_of_layer,)``.

loss_ : float
    Mean training loss of the last epoch.

loss_curve_ : list of float
    Training loss of every epoch, growing across warm starts and
    ``partial_fit`` calls.

best_loss_ : float or None
    Lowest training loss seen; None with ``early_stopping=True``.

validation_scores_ : list of float or None
    Validation {score} of every epoch with ``early_stopping=True``,
    else None.

best_validation_score_ : float or None
    Best validation {score} with ``early_stopping=True``, else None.

n_iter_ : int
    Number of epochs of the last ``fit`` / ``partial_fit`` call.

t_ : int
    Number of training samples seen by the solver.

batch_norm_scales_, batch_norm_means_, batch_norm_vars_ : list of ndarray
    With ``batch_norm=True``, per convolution block: the learned scales
    and the running mean and variance used at prediction (shape
    ``(filters,)``); None otherwise.

history_ : list of dict
    One dict per epoch, alongside ``loss_curve_``: ``epoch`` (counted
    across calls), ``loss``, ``validation_score`` (None without early
    stopping), ``learning_rate`` (the base rate of the epoch) and
    ``seconds``."""


def _indent(text):
    return "\n".join(("    " + line) if line else "" for line in text.split("\n"))


def build_docstring(head, parameters, attributes, tail, score):
    """A class docstring: ``head`` and ``tail`` are the estimator's own
    text; ``parameters`` / ``attributes`` = (own before, own after) the
    shared entries."""
    parts = [
        head.strip("\n"),
        SHARED_INTRO,
        "Parameters\n----------",
        PARAMETERS + ("\n\n" + parameters.strip("\n") if parameters else ""),
        "Attributes\n----------",
        "\n\n".join(
            p.strip("\n") for p in (attributes[0], ATTRIBUTES, attributes[1]) if p
        ),
        tail.strip("\n"),
    ]
    text = "\n\n".join(parts).replace("{score}", score)
    first, rest = text.split("\n", 1)
    return first + "\n" + _indent(rest) + "\n    "
