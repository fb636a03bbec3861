"""Callbacks of everyday runs: divergence stop, terms out of proportion, throughput."""

import logging
import math
import time

import keras

logger = logging.getLogger("kerasdistill")


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


class WarnOnTermsOutOfProportion(keras.callbacks.Callback):
    """Logs one WARNING per distillation term that swamps the others at the first step.

    At the end of the first training batch of a `fit`, each logged term
    `loss_<name>` (already weighted) is compared with the rest of the loss: the
    weighted supervised term `ce_weight * loss_ce` plus every other term. A
    term over `ratio` times the rest gets a one-line WARNING on the
    `"kerasdistill"` logger naming the term, the measured ratio and what to
    change. Training goes on unchanged. Terms under the rest are not reported:
    a warm-up (DKD's) starts them at 0.

    Args:
        ratio: The factor beyond which a term swamps the others, `> 1`.
    """

    def __init__(self, ratio=30.0):
        super().__init__()
        if not ratio > 1:
            raise ValueError(f"ratio must be > 1, got {ratio}.")
        self.ratio = float(ratio)
        self._checked = False

    def on_train_begin(self, logs=None):
        self._checked = False

    def on_train_batch_end(self, batch, logs=None):
        if self._checked:
            return
        self._checked = True
        logs = logs or {}
        supervised = getattr(self.model, "ce_weight", 1.0) * logs.get("loss_ce", math.nan)
        if not (math.isfinite(supervised) and supervised > 0):
            return
        terms = {name: abs(value) for name, value in logs.items()
                 if name.startswith("loss_") and name != "loss_ce" and math.isfinite(value)}
        for name, value in sorted(terms.items()):
            rest = supervised + sum(terms.values()) - value
            if value > self.ratio * rest:
                logger.warning(
                    "%s is %.0fx the weighted cross-entropy and the other terms together (%.3g) "
                    "at the first step: the labels are nearly ignored; lower the term's weight "
                    "or temperature, or use KD(standardize=True).", name, value / rest, rest)


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
