"""Knowledge distillation (Hinton et al., 2015)."""

import keras

from kerasdistill.methods.base import DistillationMethod
from kerasdistill.methods.registry import register
from kerasdistill.ops import kl_divergence_with_temperature
from kerasdistill.taps import LOGITS


@register("kd")
@keras.saving.register_keras_serializable(package="kerasdistill")
class KD(DistillationMethod):
    """Soft-target distillation on logits with temperature `T` and `T^2` scaling.

    Reference defaults (RepDistiller): `T = 4`, weight 0.9 with cross-entropy
    weight 0.1.

    Args:
        temperature: Softening temperature, `> 0`.
        weight: Weight of the term in the total loss (see `DistillationMethod`).
        **kwargs: Passed to `DistillationMethod`'s Layer base (`name`).
    """

    def __init__(self, temperature=4.0, weight=0.9, **kwargs):
        super().__init__(teacher_taps=(LOGITS,), student_taps=(LOGITS,), weight=weight, **kwargs)
        if temperature <= 0:
            raise ValueError(f"KD temperature must be > 0, got {temperature}.")
        self.temperature = float(temperature)

    def loss_terms(self):
        return ("loss_kd",)

    def call(self, teacher_outputs, student_outputs, labels=None, sample_indices=None, step=None):
        loss = kl_divergence_with_temperature(
            student_outputs[LOGITS], teacher_outputs[LOGITS], self.temperature
        )
        return {"loss_kd": loss}

    def get_config(self):
        config = super().get_config()
        config["temperature"] = self.temperature
        return config
