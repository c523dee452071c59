"""Constraints on CNNClassifier's parameters, checked by scikit-learn at fit.

MLPClassifier's training parameters keep its constraints exactly.
"""

from numbers import Integral, Real

import numpy as np
from sklearn.utils._param_validation import Interval, Options, StrOptions

PARAMETER_CONSTRAINTS = {
    "image_shape": [None, "array-like"],
    "conv_filters": ["array-like", Interval(Integral, 1, None, closed="left")],
    "kernel_size": [Interval(Integral, 1, None, closed="left"), "array-like"],
    "pool_size": [Interval(Integral, 1, None, closed="left"), "array-like"],
    "strides": [Interval(Integral, 1, None, closed="left"), "array-like"],
    "global_pooling": ["boolean"],
    "batch_norm": ["boolean"],
    "dropout": [Interval(Real, 0, 1, closed="left")],
    "augment": [None, dict],
    "class_weight": [dict, StrOptions({"balanced"}), None],
    "padding": [StrOptions({"valid", "same"})],
    "pooling": [StrOptions({"max", "avg"})],
    "hidden_layer_sizes": [
        "array-like",
        Interval(Integral, 1, None, closed="left"),
    ],
    "activation": [StrOptions({"identity", "logistic", "tanh", "relu"})],
    "solver": [StrOptions({"sgd", "adam", "adamw"})],
    "alpha": [Interval(Real, 0, None, closed="left")],
    "batch_size": [
        StrOptions({"auto"}),
        Interval(Integral, 1, None, closed="left"),
    ],
    "learning_rate": [StrOptions({"constant", "invscaling", "adaptive", "cosine"})],
    "learning_rate_init": [Interval(Real, 0, None, closed="neither")],
    "power_t": [Interval(Real, 0, None, closed="left")],
    "max_iter": [Interval(Integral, 1, None, closed="left")],
    "shuffle": ["boolean"],
    "random_state": ["random_state"],
    "tol": [Interval(Real, 0, None, closed="left")],
    "verbose": ["verbose"],
    "warm_start": ["boolean"],
    "momentum": [Interval(Real, 0, 1, closed="both")],
    "nesterovs_momentum": ["boolean"],
    "early_stopping": ["boolean"],
    "validation_fraction": [Interval(Real, 0, 1, closed="neither")],
    "beta_1": [Interval(Real, 0, 1, closed="left")],
    "beta_2": [Interval(Real, 0, 1, closed="left")],
    "epsilon": [Interval(Real, 0, None, closed="neither")],
    "n_iter_no_change": [
        Interval(Integral, 1, None, closed="left"),
        Options(Real, {np.inf}),
    ],
}
