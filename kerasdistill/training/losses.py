"""Serializable training losses of the recipes (teacher and student-alone runs)."""

import keras

from kerasdistill.ops.losses import sparse_cross_entropy_per_example


@keras.saving.register_keras_serializable(package="kerasdistill")
class SparseCrossEntropy(keras.losses.Loss):
    """Softmax cross-entropy of integer labels and logits, with label smoothing.

    The same loss as the Distiller's cross-entropy term (computed in float32),
    for models compiled without a Distiller.

    Args:
        label_smoothing: `e` in `[0, 1)`: the target is
            `(1 - e) * one_hot + e / K`.
        name: Loss name.
        **kwargs: Passed to `keras.losses.Loss` (`reduction`, `dtype`).
    """

    def __init__(self, label_smoothing=0.0, name="sparse_cross_entropy", **kwargs):
        super().__init__(name=name, **kwargs)
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing!r}.")
        self.label_smoothing = float(label_smoothing)

    def call(self, y_true, y_pred):
        return sparse_cross_entropy_per_example(y_true, y_pred, self.label_smoothing)

    def get_config(self):
        return {**super().get_config(), "label_smoothing": self.label_smoothing}
