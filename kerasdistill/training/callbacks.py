"""Callbacks of everyday runs: divergence stop and throughput."""

import math
import time

import keras


class TrainingDiverged(RuntimeError):
    """A loss term became NaN or infinite during training."""


class StopOnNonFiniteLoss(keras.callbacks.Callback):
    """Raises `TrainingDiverged` at the first step whose loss is not finite.

    A Distiller skips that step (every variable is as it was before it). The
    message names the step (1-based, counting the finite steps before it) and
    the first non-finite loss term (`loss_kd`, ...), or `loss` when only the
    total is. Place it before any checkpointing callback so that the diverged
    state is never saved.
    """

    def on_train_batch_end(self, batch, logs=None):
        logs = logs or {}
        bad = {k: v for k, v in logs.items() if k.startswith("loss") and not math.isfinite(v)}
        if bad:
            terms = sorted(k for k in bad if k != "loss") or ["loss"]
            # Neither a Distiller's step counter nor a loss-scaling optimizer counts
            # the skipped step.
            counter = getattr(self.model, "training_steps", self.model.optimizer.iterations)
            step = int(keras.ops.convert_to_numpy(counter)) + 1
            raise TrainingDiverged(
                f"Loss term {terms[0]} is {bad[terms[0]]} at training step {step}"
                + (f" (also non-finite: {', '.join(terms[1:])})" if terms[1:] else "")
                + "."
            )


class ThroughputLogger(keras.callbacks.Callback):
    """Adds `images_per_second` and `learning_rate` to the epoch logs.

    Args:
        batch_size: Global batch size.
    """

    def __init__(self, batch_size):
        super().__init__()
        self.batch_size = int(batch_size)
        self._start = self._end = None
        self._steps = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()
        self._steps = 0

    def on_train_batch_end(self, batch, logs=None):
        self._steps += 1
        self._end = time.perf_counter()  # Validation, after the last batch, is not counted.

    def on_epoch_end(self, epoch, logs=None):
        if logs is None or not self._steps:
            return
        seconds = max(self._end - self._start, 1e-9)
        logs["images_per_second"] = self._steps * self.batch_size / seconds
        logs["learning_rate"] = float(
            keras.ops.convert_to_numpy(self.model.optimizer.learning_rate)
        )


def __getattr__(name):
    if name == "ValidationLogFilter":
        raise ImportError(
            "ValidationLogFilter is gone: a Distiller's evaluation logs only `loss` and the "
            "compiled metrics, so no validation entry needs removing."
        )
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
