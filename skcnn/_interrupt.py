"""Ctrl-C during training: finish the minibatch, then give control back."""

import signal
import threading


class InterruptAfterBatch:
    """Turn Ctrl-C during fit into a request to stop after the current batch.

    A KeyboardInterrupt raised at an arbitrary point could leave the weights
    half-updated; instead the first SIGINT only sets a flag that the batch
    loop reads, and the fit raises KeyboardInterrupt once the model is
    consistent. A second Ctrl-C (a batch that takes too long) raises at once;
    the fit then rolls back to the state before the call. Only the main
    thread can install signal handlers: elsewhere this does nothing and
    Ctrl-C behaves as usual.
    """

    def __init__(self):
        self.requested = False
        self._previous = None

    def _handler(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            try:
                self._previous = signal.signal(signal.SIGINT, self._handler)
            except ValueError:  # e.g. an embedded interpreter
                self._previous = None
        return self

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
        return False
