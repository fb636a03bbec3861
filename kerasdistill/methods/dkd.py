"""Decoupled Knowledge Distillation (Zhao et al., CVPR 2022), as mdistiller's `DKD`.

With `p = softmax(z / T)` over the classes and `y` the label:

- TCKD, target-class KD: the KL divergence between the teacher's and the
  student's binary distributions `[p_y, 1 - p_y]`.
- NCKD, non-target KD: the KL divergence between the teacher's and the
  student's distributions over the non-target classes (softmax of the logits
  with the target logit lowered by 1000 after the division by `T`, as the
  reference does).

Both are summed over the batch, divided by the batch size and multiplied by
`T^2`; the loss is `weight * warmup * (tckd_weight * TCKD + nckd_weight * NCKD)`.

With `standardize=True` both models' logits are first z-scored per sample
(`kd.standardize_logits`; Sun et al., "Logit Standardization in Knowledge
Distillation", CVPR 2024).
"""

import keras
from keras import ops

from kerasdistill.methods.base import DistillationMethod
from kerasdistill.methods.kd import standardize_logits
from kerasdistill.methods.registry import register
from kerasdistill.taps import LOGITS

# mdistiller lowers the target logit by this much (after dividing by T) to drop it.
_TARGET_MASK_OFFSET = 1000.0


def _log_probabilities(logits, target_mask, temperature):
    """Returns `(log p_y, log(1 - p_y), non-target log-probabilities)`, all float32.

    `log(1 - p_y)` is computed as a log-sum-exp over the non-target logits
    rather than as `log(1 - p_y)`, so it stays finite when `p_y` rounds to 1.
    """
    z = ops.cast(logits, "float32") / temperature
    lse_all = ops.logsumexp(z, axis=-1)
    z_other = z - _TARGET_MASK_OFFSET * target_mask
    lse_other = ops.logsumexp(z_other, axis=-1)
    z_target = ops.sum(z * target_mask, axis=-1)
    log_target = z_target - lse_all
    log_rest = lse_other - lse_all
    log_non_target = z_other - ops.expand_dims(lse_other, -1)
    return log_target, log_rest, log_non_target


def dkd_terms(student_logits, teacher_logits, labels, temperature):
    """Unweighted TCKD and NCKD of DKD.

    Args:
        student_logits: `(batch, classes)` tensor.
        teacher_logits: `(batch, classes)` tensor.
        labels: Integer labels, shape `(batch,)` or `(batch, 1)`.
        temperature: Softening temperature `T > 0`.

    Returns:
        A tuple `(tckd, nckd)` of float32 scalars, each already multiplied by
        `T^2` and averaged over the batch (summed over classes).
    """
    num_classes = student_logits.shape[-1]
    if num_classes is None or num_classes < 2:
        raise ValueError(f"DKD needs logits with a static class axis of >= 2, got {num_classes}.")
    if teacher_logits.shape[-1] != num_classes:
        raise ValueError(
            f"DKD student and teacher logits differ in classes: {student_logits.shape} vs "
            f"{teacher_logits.shape}."
        )
    labels = ops.convert_to_tensor(labels)
    if len(labels.shape) > 2 or (len(labels.shape) == 2 and labels.shape[-1] != 1):
        raise ValueError(
            "DKD needs integer class labels of shape (batch,) or (batch, 1), not one-hot "
            f"targets; got shape {tuple(labels.shape)}."
        )
    labels = ops.reshape(ops.cast(labels, "int32"), (-1,))
    mask = ops.one_hot(labels, num_classes, dtype="float32")
    s_target, s_rest, s_non_target = _log_probabilities(student_logits, mask, temperature)
    t_target, t_rest, t_non_target = _log_probabilities(teacher_logits, mask, temperature)
    tckd = ops.exp(t_target) * (t_target - s_target) + ops.exp(t_rest) * (t_rest - s_rest)
    nckd = ops.sum(ops.exp(t_non_target) * (t_non_target - s_non_target), axis=-1)
    scale = temperature**2
    return ops.mean(tckd) * scale, ops.mean(nckd) * scale


@register("dkd")
@keras.saving.register_keras_serializable(package="kerasdistill")
class DKD(DistillationMethod):
    """Decoupled KD on logits, reported as two terms `loss_tckd` and `loss_nckd`.

    `loss_tckd = weight * w * tckd_weight * TCKD` and
    `loss_nckd = weight * w * nckd_weight * NCKD` with the
    warm-up factor `w = min(step / warmup_steps, 1)`, `step` the number of
    training steps taken so far (the Distiller passes its `training_steps`,
    so the very first step has `w = 0`); `warmup_steps = 0` disables the
    warm-up. Their sum is mdistiller's `loss_kd`.

    Reference defaults (mdistiller, CIFAR-100): `tckd_weight = 1` (its
    `ALPHA`), `nckd_weight = 8` (its `BETA`), `T = 4`, warm-up over 20 epochs
    (`warmup_epochs=20`), cross-entropy weight 1. mdistiller counts epochs
    from 1, so its factor is already 1/20 in the first epoch; the step-based
    ramp differs from it by at most one epoch.

    A warm-up given in epochs needs the steps per epoch: DKD then `needs`
    `TrainingData.steps_per_epoch`, which `set_up` turns into
    `warmup_steps = int(warmup_epochs * steps_per_epoch)` (the Distiller calls
    it with its `training_data`). The config keeps `warmup_epochs`.

    With `standardize=True` the authors' CIFAR-100 runs (their
    `--logit-stand --kd-weight 9`) used `tckd_weight = 9`, `nckd_weight = 81`
    (their code multiplies `BETA` by the already multiplied `ALPHA`) and kept
    `T = 4` (their `--base-temp` sets KD's temperature, not DKD's).

    Args:
        tckd_weight: Weight of TCKD.
        nckd_weight: Weight of NCKD.
        temperature: Softening temperature, `> 0`.
        warmup_steps: Length of the linear warm-up in optimizer steps, `>= 0`.
        weight: Overall weight of both terms (see `DistillationMethod`).
        warmup_epochs: Length of the warm-up in epochs, `>= 0`, instead of
            `warmup_steps`; or None.
        standardize: Z-score both models' logits per sample before the softmax.
        **kwargs: Passed to `DistillationMethod`'s Layer base (`name`, `dtype`;
            `dtype` defaults to float32 so the loss is computed in float32).
    """

    renamed_arguments = {"alpha": "tckd_weight", "beta": "nckd_weight"}

    def __init__(
        self,
        tckd_weight=1.0,
        nckd_weight=8.0,
        temperature=4.0,
        warmup_steps=0,
        weight=1.0,
        warmup_epochs=None,
        standardize=False,
        **kwargs,
    ):
        super().__init__(teacher_taps=(LOGITS,), student_taps=(LOGITS,), weight=weight, **kwargs)
        if temperature <= 0:
            raise ValueError(f"DKD temperature must be > 0, got {temperature}.")
        if not isinstance(standardize, bool):
            raise TypeError(f"DKD standardize must be True or False, got {standardize!r}.")
        if warmup_steps < 0:
            raise ValueError(f"DKD warmup_steps must be >= 0, got {warmup_steps}.")
        if warmup_epochs is not None:
            if warmup_steps:
                raise ValueError(
                    f"DKD takes warmup_epochs or warmup_steps, not both; got warmup_epochs="
                    f"{warmup_epochs} and warmup_steps={warmup_steps}."
                )
            if warmup_epochs < 0:
                raise ValueError(f"DKD warmup_epochs must be >= 0, got {warmup_epochs}.")
            self.needs = ("steps_per_epoch",)
        self.tckd_weight = float(tckd_weight)
        self.nckd_weight = float(nckd_weight)
        self.temperature = float(temperature)
        self.warmup_epochs = warmup_epochs
        self.standardize = standardize
        # Known from `set_up` when the warm-up is given in epochs.
        self.warmup_steps = None if warmup_epochs is not None else int(warmup_steps)

    def set_up(self, data):
        """Converts `warmup_epochs` to steps with `data.steps_per_epoch`.

        Args:
            data: A `TrainingData`; its `steps_per_epoch` is needed only with
                `warmup_epochs`.
        """
        super().set_up(data)
        if self.warmup_epochs is not None:
            self.warmup_steps = int(self.warmup_epochs * data.steps_per_epoch)

    def loss_terms(self):
        return ("loss_tckd", "loss_nckd")

    def warmup_factor(self, step):
        """Returns `min(step / warmup_steps, 1)` as a float32 scalar (1 without warm-up).

        Args:
            step: The optimizer's iteration counter; may be `None` only when
                `warmup_steps == 0`.
        """
        if self.warmup_steps == 0:
            return ops.convert_to_tensor(1.0, "float32")
        if step is None:
            raise ValueError(
                f"DKD with warmup_steps={self.warmup_steps} needs the training step; call it "
                "with step=the number of steps trained (the Distiller does)."
            )
        ratio = ops.cast(step, "float32") / float(self.warmup_steps)
        return ops.minimum(ratio, 1.0)

    def call(self, teacher_outputs, student_outputs, labels=None, sample_indices=None, step=None):
        if labels is None:
            raise ValueError("DKD needs the integer class labels of the batch.")
        student = student_outputs[LOGITS]
        teacher = ops.stop_gradient(teacher_outputs[LOGITS])
        if self.standardize:
            student, teacher = standardize_logits(student), standardize_logits(teacher)
        tckd, nckd = dkd_terms(student, teacher, labels, self.temperature)
        factor = self.warmup_factor(step)
        return {
            "loss_tckd": factor * self.tckd_weight * tckd,
            "loss_nckd": factor * self.nckd_weight * nckd,
        }

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "tckd_weight": self.tckd_weight,
                "nckd_weight": self.nckd_weight,
                "temperature": self.temperature,
                "warmup_steps": 0 if self.warmup_epochs is not None else self.warmup_steps,
                "warmup_epochs": self.warmup_epochs,
                "standardize": self.standardize,
            }
        )
        return config
