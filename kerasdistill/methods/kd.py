"""Knowledge distillation (Hinton et al., 2015), optionally on standardized logits.

With `standardize=True` both models' logits are z-scored per sample before the
temperature softmax (logit standardization, Sun et al., "Logit Standardization
in Knowledge Distillation", CVPR 2024), as `standardize_logits` does.
"""

import keras
from keras import ops

from kerasdistill.methods.base import DistillationMethod
from kerasdistill.methods.registry import register
from kerasdistill.ops import kl_divergence_with_temperature
from kerasdistill.taps import LOGITS

# Added to the standard deviation before dividing, as the authors' reference
# (sunshangquan/logit-standardization-KD, `normalize`): `(z - mean) / (1e-7 + std)`.
STANDARDIZE_EPSILON = 1e-7


def standardize_logits(logits):
    """Z-scores each sample's logits over the classes, in float32.

    `(z - mean(z)) / (1e-7 + std(z))` per sample, with the sample (`N - 1`)
    standard deviation, as the reference's `torch.Tensor.std` (Sun et al.,
    CVPR 2024). The result does not change when a sample's logits are shifted
    or multiplied by a positive number.

    Args:
        logits: `(batch, classes)` tensor, `classes >= 2`.

    Returns:
        A float32 tensor of the same shape.
    """
    num_classes = logits.shape[-1]
    if num_classes is None or num_classes < 2:
        raise ValueError(
            f"Logit standardization needs a static class axis of >= 2, got {num_classes}."
        )
    z = ops.cast(logits, "float32")
    centered = z - ops.mean(z, axis=-1, keepdims=True)
    # Dividing by the largest |centered| first keeps the squares finite for logits
    # beyond 1e19; std(c) = m * std(c / m), so the epsilon is divided by m too.
    largest = ops.maximum(ops.max(ops.abs(centered), axis=-1, keepdims=True), 1e-30)
    scaled = centered / largest
    variance = ops.sum(ops.square(scaled), axis=-1, keepdims=True) / (num_classes - 1)
    return scaled / (STANDARDIZE_EPSILON / largest + ops.sqrt(variance))


@register("kd")
@keras.saving.register_keras_serializable(package="kerasdistill")
class KD(DistillationMethod):
    """Soft-target distillation on logits with temperature `T` and `T^2` scaling.

    `loss_kd = weight * T^2 * KL(softmax(t / T) || softmax(s / T))`, summed over
    classes and averaged over the batch; with `standardize=True`, `s` and `t`
    are first z-scored per sample (`standardize_logits`), so the student
    matches the teacher's logit relations rather than their scale.

    Reference defaults (RepDistiller): `T = 4`, weight 0.9 with cross-entropy
    weight 0.1. With standardization the authors' CIFAR-100 recipe is `T = 2`
    (their "base temperature"; 3 for some pairs), weight 9 and cross-entropy
    weight 0.1, keeping the `T^2` factor.

    Args:
        temperature: Softening temperature, `> 0`.
        weight: Weight of the term in the total loss (see `DistillationMethod`).
        standardize: Z-score both models' logits per sample before the softmax.
        **kwargs: Passed to `DistillationMethod`'s Layer base (`name`).
    """

    def __init__(self, temperature=4.0, weight=0.9, standardize=False, **kwargs):
        super().__init__(teacher_taps=(LOGITS,), student_taps=(LOGITS,), weight=weight, **kwargs)
        if temperature <= 0:
            raise ValueError(f"KD temperature must be > 0, got {temperature}.")
        if not isinstance(standardize, bool):
            raise TypeError(f"KD standardize must be True or False, got {standardize!r}.")
        self.temperature = float(temperature)
        self.standardize = standardize

    def loss_terms(self):
        return ("loss_kd",)

    def call(self, teacher_outputs, student_outputs, labels=None, sample_indices=None, step=None):
        student, teacher = student_outputs[LOGITS], teacher_outputs[LOGITS]
        if self.standardize:
            student, teacher = standardize_logits(student), standardize_logits(teacher)
        loss = kl_divergence_with_temperature(student, teacher, self.temperature)
        return {"loss_kd": loss}

    def get_config(self):
        config = super().get_config()
        config.update({"temperature": self.temperature, "standardize": self.standardize})
        return config
