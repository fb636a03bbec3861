"""The Distiller: a `keras.Model` training a student against a frozen teacher."""

import keras
from keras import ops

from kerasdistill.batch_keys import IMAGE_KEY, INDEX_KEY
from kerasdistill.methods.base import DistillationMethod
from kerasdistill.models.taps import LOGITS, tap_model
from kerasdistill.ops import distributed, sparse_cross_entropy


def _split_inputs(x):
    """Returns `(images, sample_indices)` from a batch's `x`."""
    if isinstance(x, dict):
        if IMAGE_KEY not in x:
            raise ValueError(
                f"Dict inputs must hold the images under {IMAGE_KEY!r} (and optionally "
                f"dataset indices under {INDEX_KEY!r}); got keys {sorted(x)}."
            )
        return x[IMAGE_KEY], x.get(INDEX_KEY)
    return x, None


@keras.saving.register_keras_serializable(package="kerasdistill")
class Distiller(keras.Model):
    """Trains `student` with cross-entropy plus the loss terms of `methods`.

    One training step runs the frozen teacher once in inference mode (no
    gradient) and the student once in training mode, each through a tapped
    model returning the feature maps the methods need; each method returns
    named weighted loss terms. The total loss is
    `ce_weight * CE + sum(method terms) + regularization losses`. Evaluation
    (`evaluate`, `predict`, `__call__`) runs the student alone.

    Batches are `(images, labels)`, or `({"image": images, "index": idx},
    labels)` for methods that need each sample's dataset index (CRD).

    Args:
        teacher: Functional `keras.Model` mapping images to logits; frozen.
        student: Functional `keras.Model` mapping images to logits.
        methods: A `DistillationMethod`, a list of them, or `None` (the
            student alone, trained with cross-entropy).
        ce_weight: Weight of the cross-entropy term.
        teacher_taps: Optional dict `{tap: layer_name}` renaming taps of the
            teacher (for models outside the zoo).
        student_taps: Same for the student.
        label_smoothing: Label smoothing `e` in `[0, 1)` of the training
            cross-entropy (evaluation scores plain cross-entropy).
        **kwargs: Passed to `keras.Model` (`name`).
    """

    def __init__(
        self,
        teacher,
        student,
        methods=None,
        ce_weight=1.0,
        teacher_taps=None,
        student_taps=None,
        label_smoothing=0.0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing!r}.")
        if methods is None:
            methods = []
        elif isinstance(methods, DistillationMethod):
            methods = [methods]
        for method in methods:
            if not isinstance(method, DistillationMethod):
                raise TypeError(
                    f"Each method must be a kerasdistill DistillationMethod; got {method!r}."
                )
        self.teacher = teacher
        self.student = student
        self.methods = list(methods)
        self.ce_weight = float(ce_weight)
        self.label_smoothing = float(label_smoothing)
        self.teacher_tap_renames = dict(teacher_taps or {})
        self.student_tap_renames = dict(student_taps or {})
        self.teacher.trainable = False

        self._teacher_taps = tap_model(
            teacher, self._tap_spec(teacher_taps, [t for m in methods for t in m.teacher_taps])
        )
        self._student_taps = tap_model(
            student, self._tap_spec(student_taps, [t for m in methods for t in m.student_taps])
        )
        teacher_shapes = {k: v.shape for k, v in self._teacher_taps.output.items()}
        student_shapes = {k: v.shape for k, v in self._student_taps.output.items()}
        for method in self.methods:
            method.bind_models(teacher, student)
            method.build_from_taps(
                {t: teacher_shapes[t] for t in method.teacher_taps},
                {t: student_shapes[t] for t in method.student_taps},
            )

        self._loss_trackers = {"loss_ce": keras.metrics.Mean(name="loss_ce")}
        for method in self.methods:
            for term in method.loss_terms():
                if term in self._loss_trackers:
                    raise ValueError(f"Two methods report the same loss term {term!r}.")
                self._loss_trackers[term] = keras.metrics.Mean(name=term)
        self.loss_trackers = list(self._loss_trackers.values())
        # Steps trained so far, passed to methods for schedules (DKD warm-up). A
        # model variable rather than `optimizer.iterations` so that every backend
        # (JAX's stateless loss included) can read it; saved with the weights.
        # Every replica adds 1; the first replica's update is applied to all.
        self.training_steps = self.add_weight(
            shape=(),
            dtype="int64",
            initializer="zeros",
            trainable=False,
            aggregation="only_first_replica",
            name="training_steps",
        )
        # Every sub-layer was built above from static shapes.
        self.built = True

    @staticmethod
    def _tap_spec(renames, taps):
        renames = renames or {}
        return {tap: renames.get(tap, tap) for tap in dict.fromkeys(taps)}

    def call(self, inputs, training=None):
        images, _ = _split_inputs(inputs)
        return self._student_taps(images, training=training)

    def _loss_terms(self, x, y, student_outputs):
        """Runs the frozen teacher and the methods; returns the weighted terms.

        Each term is this replica's estimate of the term on the global batch
        (a mean over its shard, or a value the method computed from features
        gathered over all replicas).
        """
        ce = sparse_cross_entropy(y, student_outputs[LOGITS], self.label_smoothing)
        terms = {"loss_ce": self.ce_weight * ce}
        if not self.methods:
            return terms
        images, sample_indices = _split_inputs(x)
        teacher_outputs = self._teacher_taps(images, training=False)
        teacher_outputs = {k: ops.stop_gradient(v) for k, v in teacher_outputs.items()}
        step = ops.convert_to_tensor(self.training_steps)
        for method in self.methods:
            terms.update(
                method(
                    teacher_outputs,
                    student_outputs,
                    labels=y,
                    sample_indices=sample_indices,
                    step=step,
                )
            )
        return terms

    def _total_loss(self, terms):
        """Sums the terms and the regularization losses, in float32."""
        total = ops.sum(ops.stack([ops.cast(v, "float32") for v in terms.values()]))
        for loss in self.losses:
            total = total + ops.sum(ops.cast(loss, "float32"))
        return total

    def _record_terms(self, terms):
        for name, value in terms.items():
            self._loss_trackers[name].update_state(value)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        """The loss of Keras's own train step (used on the JAX backend).

        Returns:
            The total loss divided by the number of replicas (the share of a
            replica, as Keras's own losses return it).
        """
        if not training:
            # Evaluation scores the student alone: plain, unweighted cross-entropy.
            ce = sparse_cross_entropy(y, y_pred[LOGITS])
            self._loss_trackers["loss_ce"].update_state(ce)
            return distributed.scale_for_replicas(ce)
        terms = self._loss_terms(x, y, y_pred)
        self._record_terms(terms)
        self.training_steps.assign_add(1)
        return distributed.scale_for_replicas(self._total_loss(terms))

    def train_step(self, *args, **kwargs):
        """One training step; written out for TensorFlow, Keras's own elsewhere.

        On TensorFlow, under any `tf.distribute` strategy: each replica runs
        the student (training mode, once) and the frozen teacher (inference
        mode, no gradient) on its shard, the methods return their terms
        (contrastive ones from features gathered over all replicas), the
        total is divided by the number of replicas before the gradient (the
        optimizer sums gradients over replicas), and the step counter and
        method state advance once. On JAX, Keras's stateless step calls
        `compute_loss`, which computes the same terms.
        """
        if keras.backend.backend() != "tensorflow":
            return super().train_step(*args, **kwargs)
        import tensorflow as tf

        (data,) = args
        x, y, _ = keras.utils.unpack_x_y_sample_weight(data)
        with tf.GradientTape() as tape:
            student_outputs = self(x, training=True)
            terms = self._loss_terms(x, y, student_outputs)
            total = self._total_loss(terms)
            scaled = self.optimizer.scale_loss(distributed.scale_for_replicas(total))
        gradients = tape.gradient(scaled, self.trainable_weights)
        self.optimizer.apply(gradients, self.trainable_weights)
        # Keras's "loss" metric, created by `compile`; each replica reports its
        # estimate of the global value and the logs average the replicas.
        self._loss_tracker.update_state(total)
        self._record_terms(terms)
        self.training_steps.assign_add(1)
        return self.compute_metrics(x, y, student_outputs)

    def test_step(self, *args, **kwargs):
        """Scores the student alone; reports only what evaluation computes.

        Returns:
            Logs with `loss` and `loss_ce` (plain cross-entropy) and the
            compiled metrics. On TensorFlow the distillation terms, which
            evaluation does not compute, are left out.
        """
        if keras.backend.backend() != "tensorflow":
            return super().test_step(*args, **kwargs)
        (data,) = args
        x, y, _ = keras.utils.unpack_x_y_sample_weight(data)
        student_outputs = self(x, training=False)
        ce = sparse_cross_entropy(y, student_outputs[LOGITS])
        batch_size = ops.shape(y)[0]
        self._loss_tracker.update_state(ce, sample_weight=batch_size)
        self._loss_trackers["loss_ce"].update_state(ce, sample_weight=batch_size)
        logs = self.compute_metrics(x, y, student_outputs)
        return {k: v for k, v in logs.items() if k == "loss_ce" or k not in self._loss_trackers}

    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        return super().compute_metrics(x, y, y_pred[LOGITS], sample_weight)

    def get_config(self):
        return {
            **super().get_config(),
            "teacher": keras.saving.serialize_keras_object(self.teacher),
            "student": keras.saving.serialize_keras_object(self.student),
            "methods": [keras.saving.serialize_keras_object(m) for m in self.methods],
            "ce_weight": self.ce_weight,
            "label_smoothing": self.label_smoothing,
            "teacher_taps": self.teacher_tap_renames,
            "student_taps": self.student_tap_renames,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        for key in ("teacher", "student"):
            config[key] = keras.saving.deserialize_keras_object(config[key])
        config["methods"] = [keras.saving.deserialize_keras_object(m) for m in config["methods"]]
        return cls(**config)
