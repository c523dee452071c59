"""Stochastic optimizers with MLPClassifier's semantics, updating in place.

The parameters are updated in place (``coefs_`` and ``intercepts_`` are the
live arrays) and all state keeps the parameters' dtype. The optimizer is
part of the fitted model, so ``partial_fit`` and warm starts resume it.
"""

import numpy as np


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
            v *= dtype(mu)
            v -= dtype(lr) * g
            if self.nesterov:
                p += dtype(mu) * v - dtype(lr) * g
            else:
                p += v

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
    """Adam (Kingma & Ba, 2014) with MLPClassifier's bias correction."""

    def __init__(self, params, learning_rate_init, beta_1, beta_2, epsilon):
        self.learning_rate_init = learning_rate_init
        self.learning_rate = float(learning_rate_init)
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon
        self.t = 0
        self.ms = [np.zeros_like(p) for p in params]
        self.vs = [np.zeros_like(p) for p in params]

    def update_params(self, params, grads):
        self.t += 1
        b1, b2 = self.beta_1, self.beta_2
        self.learning_rate = (
            self.learning_rate_init * np.sqrt(1 - b2**self.t) / (1 - b1**self.t)
        )
        for p, g, m, v in zip(params, grads, self.ms, self.vs):
            dtype = p.dtype.type
            m *= dtype(b1)
            m += dtype(1 - b1) * g
            v *= dtype(b2)
            v += dtype(1 - b2) * (g * g)
            step = np.sqrt(v)
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
    if estimator.solver == "sgd":
        return SGD(
            params,
            estimator.learning_rate_init,
            estimator.learning_rate,
            estimator.momentum,
            estimator.nesterovs_momentum,
            estimator.power_t,
        )
    return Adam(
        params,
        estimator.learning_rate_init,
        estimator.beta_1,
        estimator.beta_2,
        estimator.epsilon,
    )
