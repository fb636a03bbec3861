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


# Loss identifiers that name a cross-entropy: given to `compile` as strings, they
# are built to read logits.
_CROSS_ENTROPIES = {
    "sparse_categorical_crossentropy": keras.losses.SparseCategoricalCrossentropy,
    "categorical_crossentropy": keras.losses.CategoricalCrossentropy,
}


def logits_loss(loss, label_smoothing=0.0):
    """The student's supervised loss that `Distiller.compile(loss=...)` names.

    Args:
        loss: `None` (the Distiller's own cross-entropy), a Keras loss
            identifier or instance, or a callable `(y_true, logits)`.
        label_smoothing: The Distiller's `label_smoothing`, which only its
            own cross-entropy applies.

    Returns:
        A loss reading logits, or `None`.

    Raises:
        ValueError: For several losses, label smoothing with a given loss, or
            a loss that reads probabilities.
    """
    if loss is None:
        return None
    if isinstance(loss, (list, tuple, dict)):
        raise ValueError(
            f"Distiller.compile takes one loss for the student's logits; got {loss!r}."
        )
    if label_smoothing:
        raise ValueError(
            f"Distiller(label_smoothing={label_smoothing}) applies to the default cross-entropy; "
            "with compile(loss=...), set label smoothing on that loss instead."
        )
    if isinstance(loss, str) and loss in _CROSS_ENTROPIES:
        return _CROSS_ENTROPIES[loss](from_logits=True)
    loss = keras.losses.get(loss)
    config = loss.get_config() if isinstance(loss, keras.losses.Loss) else {}
    if getattr(loss, "from_logits", None) is False or config.get("from_logits") is False:
        raise ValueError(
            f"compile(loss={loss!r}) reads probabilities, but the Distiller hands the student's "
            "logits to its loss; pass it with from_logits=True."
        )
    return loss
