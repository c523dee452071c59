"""Stochastic optimizers with MLPClassifier's semantics, updating in place.

The parameters are updated in place (``coefs_`` and ``intercepts_`` are the
live arrays) and all state keeps the parameters' dtype. The optimizer is
part of the fitted model, so ``partial_fit`` and warm starts resume it.
"""

import numpy as np

from . import _workspace as ws


class SGD:
    """SGD with (Nesterov) momentum and MLPClassifier's learning-rate schedules."""

    def __init__(
        self, params, learning_rate_init, schedule, momentum, nesterov, power_t
    ):
        self.learning_rate_init = learning_rate_init
        self.learning_rate = float(learning_rate_init)
        self.schedule = schedule
        self.momentum = momentum
        self.nesterov = nesterov
        self.power_t = power_t
        self.velocities = [np.zeros_like(p) for p in params]

    def update_params(self, params, grads):
        lr, mu = self.learning_rate, self.momentum
        for p, g, v in zip(params, grads, self.velocities):
            dtype = p.dtype.type
            # v <- mu * v - lr * g ; Nesterov steps with mu * v - lr * g again
            # (temporaries from the fit's workspace, see Adam)
            scaled_g = np.multiply(g, dtype(lr), out=ws.empty(g.shape, g.dtype))
            v *= dtype(mu)
            v -= scaled_g
            if self.nesterov:
                step = np.multiply(v, dtype(mu), out=ws.empty(v.shape, v.dtype))
                step -= scaled_g
                p += step
            else:
                p += v

    def scale_learning_rate(self, factor):
        self.learning_rate = self.learning_rate_init * factor

    def iteration_ends(self, time_step):
        if self.schedule == "invscaling":
            self.learning_rate = (
                self.learning_rate_init / (time_step + 1) ** self.power_t
            )

    def trigger_stopping(self, msg, verbose):
        """Whether to stop; the adaptive schedule divides the rate by 5 first."""
        if self.schedule != "adaptive":
            if verbose:
                print(msg + " Stopping.")
            return True
        if self.learning_rate <= 1e-6:
            if verbose:
                print(msg + " Learning rate too small. Stopping.")
            return True
        self.learning_rate /= 5.0
        if verbose:
            print(msg + " Setting learning rate to %f" % self.learning_rate)
        return False


class Adam:
    """Adam (Kingma & Ba, 2014) with MLPClassifier's bias correction.

    With ``weight_decay > 0`` it is AdamW (Loshchilov & Hutter, 2019): the
    first ``n_decayed`` parameters (the weights, not the intercepts) shrink
    by ``rate * weight_decay`` of themselves each step, decoupled from the
    gradient.
    """

    def __init__(
        self,
        params,
        learning_rate_init,
        beta_1,
        beta_2,
        epsilon,
        weight_decay=0.0,
        n_decayed=0,
    ):
        self.learning_rate_init = learning_rate_init
        self.learning_rate = float(learning_rate_init)
        self.rate_factor = 1.0  # set by the "cosine" and "anneal" schedules
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon
        self.weight_decay = weight_decay
        self.n_decayed = n_decayed
        self.t = 0
        self.ms = [np.zeros_like(p) for p in params]
        self.vs = [np.zeros_like(p) for p in params]

    def scale_learning_rate(self, factor):
        self.rate_factor = factor

    def update_params(self, params, grads):
        self.t += 1
        b1, b2 = self.beta_1, self.beta_2
        rate = self.learning_rate_init * self.rate_factor
        if self.weight_decay:
            shrink = params[0].dtype.type(1 - rate * self.weight_decay)
            for p in params[: self.n_decayed]:
                p *= shrink
        self.learning_rate = rate * np.sqrt(1 - b2**self.t) / (1 - b1**self.t)
        for p, g, m, v in zip(params, grads, self.ms, self.vs):
            dtype = p.dtype.type
            # one temporary, from the fit's workspace (a dense layer's is
            # megabytes: see skcnn._workspace)
            step = ws.empty(p.shape, p.dtype)
            m *= dtype(b1)
            m += np.multiply(g, dtype(1 - b1), out=step)
            v *= dtype(b2)
            np.multiply(g, g, out=step)
            step *= dtype(1 - b2)
            v += step
            np.sqrt(v, out=step)
            step += dtype(self.epsilon)
            np.divide(m, step, out=step)
            step *= dtype(self.learning_rate)
            p -= step

    def iteration_ends(self, time_step):
        pass

    def trigger_stopping(self, msg, verbose):
        if verbose:
            print(msg + " Stopping.")
        return True


def make_optimizer(estimator, params):
    """The estimator's optimizer over ``params``: coefs_ first, then the rest."""
    if estimator.solver == "sgd":
        return SGD(
            params,
            estimator.learning_rate_init,
            estimator.learning_rate,
            estimator.momentum,
            estimator.nesterovs_momentum,
            estimator.power_t,
        )
    decoupled = estimator.solver == "adamw"
    return Adam(
        params,
        estimator.learning_rate_init,
        estimator.beta_1,
        estimator.beta_2,
        estimator.epsilon,
        weight_decay=estimator.alpha if decoupled else 0.0,
        n_decayed=len(estimator.coefs_) if decoupled else 0,
    )


def anneal_factor(epoch, n_epochs):
    """1 over the first two thirds of ``n_epochs`` epochs, then a half
    cosine to 0 over the last third (``learning_rate="anneal"``).

    A constant rate learns fastest; annealing it at the end settles the
    weights in the minimum they reached rather than leaving them wherever
    the last noisy steps put them (on full MNIST it beat both a constant
    rate and a cosine over all the epochs, see the README). A fit stopped
    earlier by the ``tol`` rule (small sets train for fewer epochs than
    planned) never reaches the decay: there it is the constant rate.
    """
    start = n_epochs - n_epochs / 3
    if epoch < start:
        return 1.0
    return cosine_factor(epoch - start, n_epochs / 3)


def cosine_factor(epoch, max_iter):
    """Cosine decay of the learning rate over ``max_iter`` epochs (1 -> 0)."""
    return 0.5 * (1 + np.cos(np.pi * min(epoch, max_iter) / max_iter))
