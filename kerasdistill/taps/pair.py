"""A teacher and a student with their taps: the tap wiring of a distiller.

`FeaturePair` checks the two models once (two distinct `keras.Model`s taking
the same images and predicting the same classes), builds a tapped model of
each (see `tap_model`) and runs them: the teacher frozen (inference mode, no
gradient), the student as asked.
"""

import logging

import keras
import numpy as np
from keras import ops

from kerasdistill.taps.feature_maps import LOGITS, tap_model

logger = logging.getLogger("kerasdistill")


def check_models(teacher, student):
    """Checks that `teacher` and `student` are two distinct Keras models.

    Args:
        teacher: The teacher model.
        student: The student model.

    Raises:
        TypeError: If either is not a `keras.Model`.
        ValueError: If they are the same object.
    """
    for role, model in (("teacher", teacher), ("student", student)):
        if not isinstance(model, keras.Model):
            hint = (
                " (load it first: keras.saving.load_model(path), kerasdistill.models.get(name) "
                "or a keras.applications constructor)"
                if isinstance(model, str)
                else ""
            )
            raise TypeError(
                f"The {role} must be a keras.Model (functional, Sequential, subclassed, "
                f"keras.applications or KerasHub); got {type(model).__name__} {model!r}{hint}."
            )
    if teacher is student:
        raise ValueError(
            f"The teacher and the student are the same model {teacher.name!r}; distil into a "
            "separate student (e.g. keras.models.clone_model(teacher) for self-distillation)."
        )


def image_shape(model):
    """The `(height, width, channels)` a model's inputs declare, or `None`.

    Args:
        model: A `keras.Model`.

    Returns:
        The shape of its first input without the batch axis, or `None` for a
        model without inputs (subclassed, or a `Sequential` not built yet).
    """
    try:
        inputs = model.inputs
    except (AttributeError, ValueError):
        return None
    if not inputs:
        return None
    return tuple(inputs[0].shape[1:])


def shared_image_shape(teacher, student):
    """The image shape both models take, from whichever declares it.

    Args:
        teacher: The teacher model.
        student: The student model.

    Returns:
        `(height, width, channels)`, or `None` when neither model has inputs.

    Raises:
        ValueError: Naming both shapes when a known dimension differs.
    """
    teacher_shape, student_shape = image_shape(teacher), image_shape(student)
    if teacher_shape is not None and student_shape is not None and (
        len(teacher_shape) != len(student_shape)
        or any(
            t is not None and s is not None and t != s
            for t, s in zip(teacher_shape, student_shape)
        )
    ):
        raise ValueError(
            f"The teacher takes images of shape {teacher_shape} and the student {student_shape}; "
            "both must take the same images (rebuild one with the other's input_shape)."
        )
    return teacher_shape or student_shape


def check_class_counts(teacher_logits, student_logits):
    """Checks that the two models predict the same number of classes.

    Args:
        teacher_logits: The teacher's (symbolic) logits.
        student_logits: The student's (symbolic) logits.

    Raises:
        ValueError: Naming both class counts.
    """
    teacher_classes, student_classes = teacher_logits.shape[-1], student_logits.shape[-1]
    if teacher_classes != student_classes:
        raise ValueError(
            f"The teacher predicts {teacher_classes} classes and the student {student_classes}; "
            "distillation needs the same classes (build the student with "
            f"num_classes={teacher_classes})."
        )


def check_not_probabilities(role, logits):
    """Checks that a model's logits on real images are not already probabilities.

    Args:
        role: `"teacher"` or `"student"`, for the message.
        logits: The model's outputs on a few images.

    Raises:
        ValueError: If every row is non-negative and sums to 1.
    """
    logits = np.asarray(keras.ops.convert_to_numpy(logits), dtype=np.float64)
    if logits.shape[-1] > 1 and (logits >= 0).all() and np.allclose(logits.sum(-1), 1.0, atol=1e-4):
        raise ValueError(
            f"The {role}'s outputs on the first batch are probabilities (each row sums to 1), "
            "but distillation needs logits; remove its final softmax (e.g. "
            "classifier_activation=None) or end the model in a Dense/Activation('softmax') "
            "layer that the Distiller can read before."
        )


def _tap_spec(role, taps, layers):
    """`{tap: layer name}` of the taps read from `role`'s model, `LOGITS` first."""
    taps = dict.fromkeys([LOGITS, *taps])
    layers = dict(layers or {})
    unknown = sorted(set(layers) - set(taps))
    if unknown:
        raise ValueError(
            f"{role}_layers names tap(s) {unknown} that no method reads; the taps read are "
            f"{sorted(taps)}."
        )
    return {tap: layers.get(tap, tap) for tap in taps}


class FeaturePair:
    """A teacher and a student, each with a tapped model returning the taps read.

    Both tapped models share every layer (and weight) with the models given.
    Construction checks the models, finds every tap (see `tap_model`), logs
    (logger `"kerasdistill"`) a WARNING per model ending in a softmax and an
    INFO line of the layer each tap reads.

    Args:
        teacher: A `keras.Model` mapping images to logits.
        student: Another `keras.Model` mapping the same images to as many
            classes.
        teacher_taps: Iterable of the tap names read from the teacher
            (`"logits"` is always added).
        student_taps: Same for the student.
        teacher_layers: Optional dict `{tap: layer_name}` naming the teacher
            layer a tap reads (overrides what is found); each key must be a
            tap in `teacher_taps` or `"logits"`.
        student_layers: Same for the student.

    Attributes:
        image_shape: `(height, width, channels)` both models take, or `None`.
        num_classes: The number of classes both models predict.
        teacher_model: The teacher's tapped `keras.Model`, returning `{tap: tensor}`.
        student_model: The student's.
        teacher_shapes: `{tap: shape}` of the teacher's taps, batch axis first.
        student_shapes: Same for the student.
        tap_layers: `{"teacher": {tap: layer}, "student": {tap: layer}}`, the
            layer (or a description of what was found) each tap reads.

    Raises:
        TypeError: If a model is not a `keras.Model`.
        ValueError: For the same model twice, different image shapes or class
            counts, a `*_layers` key no tap is read under, or a tap that
            cannot be found (the message lists the feature maps found).
    """

    def __init__(
        self, teacher, student, teacher_taps, student_taps, teacher_layers=None,
        student_layers=None,
    ):
        check_models(teacher, student)
        teacher_spec = _tap_spec("teacher", teacher_taps, teacher_layers)
        student_spec = _tap_spec("student", student_taps, student_layers)
        self.image_shape = shared_image_shape(teacher, student)
        self.teacher_model = tap_model(teacher, teacher_spec, self.image_shape)
        self.student_model = tap_model(student, student_spec, self.image_shape)
        teacher_logits = self.teacher_model.output[LOGITS]
        student_logits = self.student_model.output[LOGITS]
        check_class_counts(teacher_logits, student_logits)
        self.num_classes = int(student_logits.shape[-1])
        self.teacher_shapes = {k: tuple(v.shape) for k, v in self.teacher_model.output.items()}
        self.student_shapes = {k: tuple(v.shape) for k, v in self.student_model.output.items()}
        self.tap_layers = {
            "teacher": dict(self.teacher_model.tap_layers),
            "student": dict(self.student_model.tap_layers),
        }
        self._log()

    def _log(self):
        for role, tapped in (("teacher", self.teacher_model), ("student", self.student_model)):
            if tapped.softmax_layer:
                logger.warning(
                    "The %s ends in a softmax (%s); it is distilled from the logits before it.",
                    role, tapped.softmax_layer,
                )
        logger.info(
            "Distiller taps: teacher %s; student %s.",
            self.tap_layers["teacher"], self.tap_layers["student"],
        )

    def teacher(self, images):
        """The teacher's taps on `images`: inference mode, no gradient.

        Args:
            images: A batch of images.

        Returns:
            A dict `{tap: tensor}`, each tensor through `keras.ops.stop_gradient`.
        """
        outputs = self.teacher_model(images, training=False)
        return {tap: ops.stop_gradient(tensor) for tap, tensor in outputs.items()}

    def student(self, images, training=None):
        """The student's taps on `images`.

        Args:
            images: A batch of images.
            training: Passed to the student's layers (`True`: training mode).

        Returns:
            A dict `{tap: tensor}`.
        """
        return self.student_model(images, training=training)

    def check_logits(self, images):
        """Checks that neither model's logits on `images` are already probabilities.

        Args:
            images: A few real images.

        Raises:
            ValueError: Naming the model whose every output row sums to 1.
        """
        check_not_probabilities("teacher", self.teacher(images)[LOGITS])
        check_not_probabilities("student", self.student(images, training=False)[LOGITS])
