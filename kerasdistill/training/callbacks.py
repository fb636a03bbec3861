"""Callbacks of everyday runs: divergence stop, honest validation logs, throughput."""

import math
import time

import keras


class TrainingDiverged(RuntimeError):
    """A loss term became NaN or infinite during training."""


class StopOnNonFiniteLoss(keras.callbacks.Callback):
    """Raises `TrainingDiverged` at the first step whose loss is not finite.

    A Distiller skips that step's update (its weights are those of the step
    before). The message names the global step and the first non-finite loss term
    (`loss_kd`, ...), or `loss` when only the total is. Place it before any
    checkpointing callback so that the diverged state is never saved.
    """

    def on_train_batch_end(self, batch, logs=None):
        logs = logs or {}
        bad = {k: v for k, v in logs.items() if k.startswith("loss") and not math.isfinite(v)}
        if bad:
            terms = sorted(k for k in bad if k != "loss") or ["loss"]
            # A Distiller counts every step it ran, the skipped non-finite one included;
            # its optimizer does not count a skipped step.
            counter = getattr(self.model, "training_steps", self.model.optimizer.iterations)
            step = int(keras.ops.convert_to_numpy(counter))
            raise TrainingDiverged(
                f"Loss term {terms[0]} is {bad[terms[0]]} at training step {step}"
                + (f" (also non-finite: {', '.join(terms[1:])})" if terms[1:] else "")
                + "."
            )


class ValidationLogFilter(keras.callbacks.Callback):
    """Removes validation entries that were not evaluated from the epoch logs.

    Evaluation of a Distiller scores the student alone, so its distillation
    terms read 0 in validation; callbacks placed after this one (CSV,
    TensorBoard, History) only see `val_loss` and the other `keep` entries.

    Args:
        keep: The `val_*` keys to keep.
    """

    def __init__(self, keep=("val_loss", "val_accuracy")):
        super().__init__()
        self.keep = tuple(keep)

    def on_epoch_end(self, epoch, logs=None):
        for key in [k for k in (logs or {}) if k.startswith("val_") and k not in self.keep]:
            del logs[key]


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
