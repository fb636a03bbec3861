"""The one interface every distillation method implements."""

import keras


class DistillationMethod(keras.layers.Layer):
    """Base class of distillation methods.

    A method is a Keras layer, so it may own trainable layers (projection
    heads) and non-trainable state (memory banks, counters) that are saved with
    the Distiller. It declares the feature taps it reads from each model and
    returns a dict of named, already weighted loss terms; the Distiller adds
    them to the total loss and tracks one metric per term.

    Subclasses set `teacher_taps` and `student_taps` (tuples of tap names, see
    `kerasdistill.models.taps`), may override `build_from_taps` to create
    weights from the tapped tensor shapes, and implement `call`.

    Args:
        teacher_taps: Tap names read from the teacher.
        student_taps: Tap names read from the student.
        **kwargs: Passed to `keras.layers.Layer` (`name`, `dtype`).
    """

    # True for methods that need each sample's dataset index (`sample_indices`)
    # and the training labels (constructor argument `train_labels`), like CRD.
    uses_sample_indices = False

    def __init__(self, teacher_taps, student_taps, **kwargs):
        super().__init__(**kwargs)
        self.teacher_taps = tuple(teacher_taps)
        self.student_taps = tuple(student_taps)

    def loss_terms(self):
        """Returns the names of the loss terms `call` reports, e.g. `("loss_kd",)`.

        The Distiller creates one metric per name before training starts.
        """
        raise NotImplementedError

    def build_from_taps(self, teacher_shapes, student_shapes):
        """Creates the method's weights from the static shapes of its taps.

        Called once by the Distiller at construction, before any data is seen,
        so that every variable exists before tracing (required on JAX).

        Args:
            teacher_shapes: Dict `{tap: shape}` (batch dimension included).
            student_shapes: Dict `{tap: shape}`.
        """
        self.built = True

    def call(self, teacher_outputs, student_outputs, labels, sample_indices=None, step=None):
        """Computes the method's loss terms for one batch.

        Args:
            teacher_outputs: Dict `{tap: tensor}` of the frozen teacher.
            student_outputs: Dict `{tap: tensor}` of the student.
            labels: Integer class labels, shape `(batch,)`.
            sample_indices: Dataset indices of the batch samples, shape
                `(batch,)`, or `None` when the input pipeline carries none.
            step: Number of training steps taken before this one (int64
                scalar), for schedules.

        Returns:
            A dict `{"loss_<term>": scalar float32 tensor}` of weighted terms.
        """
        raise NotImplementedError
