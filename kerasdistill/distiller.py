"""The Distiller: a `keras.Model` training a student against a frozen teacher."""

import logging

import keras
from keras import ops

from kerasdistill import input_checks
from kerasdistill.methods import registry
from kerasdistill.models.taps import LOGITS, tap_model
from kerasdistill.ops import distributed
from kerasdistill.ops.losses import class_ids, cross_entropy
from kerasdistill.training.callbacks import StopOnNonFiniteLoss
from kerasdistill.training.losses import logits_loss

# Re-exported: the batch keys the Distiller reads.
from kerasdistill.batch_keys import IMAGE_KEY, INDEX_KEY  # noqa: F401  isort: skip

logger = logging.getLogger("kerasdistill")

@keras.saving.register_keras_serializable(package="kerasdistill")
class Distiller(keras.Model):
    """Trains `student` with a supervised loss plus the loss terms of `methods`.

    One training step runs the frozen teacher once in inference mode (no
    gradient) and the student once in training mode, each through a tapped
    model returning the feature maps the methods need; each method returns
    named weighted loss terms. The total loss `loss` is
    `ce_weight * loss_ce + sum(method terms) + regularization losses`, where
    `loss_ce` is the student's plain cross-entropy (or the loss given to
    `compile`), logged unweighted in training as in evaluation. `predict`,
    `evaluate` and `distiller(x)` run the student alone and see its logits.

    Models may be functional, `keras.Sequential`, `keras.applications` or
    KerasHub classifiers (their feature maps are found in their graphs, see
    `kerasdistill.models.taps`; `tap_layers` says which layer each tap
    reads), or subclassed models for methods that only read logits. A model
    ending in a softmax is read before it. Batches are `(images, labels)`,
    or `({"image": images, "index": idx}, labels)` for methods that need each
    sample's dataset index (CRD); labels are class ids or one-hot rows.

    Args:
        teacher: A trained `keras.Model` mapping images to logits; frozen.
        student: A `keras.Model` mapping the same images to as many classes.
        methods: A method, a name (`"kd"`), comma-separated names
            (`"kd,msdcrd"`), a config dict, a list of these, or `None` (the
            student alone); see `kerasdistill.methods.get`.
        ce_weight: Weight of the supervised loss `loss_ce` in the total loss.
        teacher_layers: Optional dict `{tap: layer_name}` naming the teacher
            layer a tap reads (overrides what is found); each key must be a
            tap some method reads.
        student_layers: Same for the student.
        label_smoothing: Label smoothing `e` in `[0, 1)` of the default
            training cross-entropy (evaluation scores plain cross-entropy).
        **kwargs: Passed to `keras.Model` (`name`).

    Raises:
        TypeError: If a model is not a `keras.Model`, or a method argument
            is misspelled.
        ValueError: For the same model as teacher and student, different
            class counts or image shapes, or a tap that cannot be found.
    """

    def __init__(
        self,
        teacher,
        student,
        methods=None,
        ce_weight=1.0,
        teacher_layers=None,
        student_layers=None,
        label_smoothing=0.0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing!r}.")
        input_checks.check_models(teacher, student)
        methods = registry.get_list(methods)
        self.teacher = teacher
        self.student = student
        self.methods = methods
        self.ce_weight = float(ce_weight)
        self.label_smoothing = float(label_smoothing)
        self.teacher_layers = dict(teacher_layers or {})
        self.student_layers = dict(student_layers or {})
        self.student_loss = None
        self.teacher.trainable = False

        self.image_shape = input_checks.shared_image_shape(teacher, student)
        self._teacher_taps = tap_model(teacher, self._tap_spec("teacher", methods), self.image_shape)
        self._student_taps = tap_model(student, self._tap_spec("student", methods), self.image_shape)
        input_checks.check_class_counts(
            self._teacher_taps.output[LOGITS], self._student_taps.output[LOGITS]
        )
        self.num_classes = int(self._student_taps.output[LOGITS].shape[-1])
        self.tap_layers = {
            "teacher": dict(self._teacher_taps.tap_layers),
            "student": dict(self._student_taps.tap_layers),
        }
        self._log_taps()
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

    def _tap_spec(self, role, methods):
        """`{tap: layer name}` of the taps the methods read from `role`'s model."""
        taps = dict.fromkeys([LOGITS, *(t for m in methods for t in getattr(m, f"{role}_taps"))])
        layers = getattr(self, f"{role}_layers")
        unknown = sorted(set(layers) - set(taps))
        if unknown:
            raise ValueError(
                f"{role}_layers names tap(s) {unknown} that no method reads; the taps read are "
                f"{sorted(taps)}."
            )
        return {tap: layers.get(tap, tap) for tap in taps}

    def _log_taps(self):
        for role, tapped in (("teacher", self._teacher_taps), ("student", self._student_taps)):
            if tapped.softmax_layer:
                logger.warning(
                    "The %s ends in a softmax (%s); it is distilled from the logits before it.",
                    role, tapped.softmax_layer,
                )
        logger.info(
            "Distiller taps: teacher %s; student %s.",
            self.tap_layers["teacher"], self.tap_layers["student"],
        )

    def _uses_sample_indices(self):
        return [type(m).__name__ for m in self.methods if m.uses_sample_indices]

    def _images(self, x):
        needs = self._uses_sample_indices()
        return input_checks.split_images(x, bool(needs), needs)

    def call(self, inputs, training=None):
        """Runs the student.

        Returns:
            The student's logits; in training mode, the dict of its taps that
            the training step reads (`"logits"` and the methods' feature maps).
        """
        images, _ = input_checks.split_images(inputs, False, ())
        outputs = self._student_taps(images, training=training)
        return outputs if training else outputs[LOGITS]

    def compile(self, optimizer="rmsprop", loss=None, metrics=None, **kwargs):
        """Configures training, as `keras.Model.compile`.

        Args:
            optimizer: The student's optimizer. A step whose loss or gradients
                are not finite is skipped (a `LossScaleOptimizer` of fixed
                scale 1 wraps it, unless the dtype policy already has one),
                and `fit` then stops with the step and term named.
            loss: The student's supervised loss on its logits (default:
                softmax cross-entropy of class ids or one-hot labels, with
                `label_smoothing`). Cross-entropy names given as strings are
                built with `from_logits=True`; a loss instance reading
                probabilities is refused.
            metrics: Metrics of the student's logits (`"accuracy"`, ...).
            **kwargs: Other `keras.Model.compile` arguments (`loss_weights`
                is refused: see `ce_weight` and each method's weight).
        """
        if kwargs.get("loss_weights") is not None:
            raise ValueError(
                "Distiller.compile does not take loss_weights: weight the supervised term with "
                "Distiller(ce_weight=...) and each method with its own weight argument."
            )
        self.student_loss = logits_loss(loss, self.label_smoothing)
        super().compile(optimizer=optimizer, metrics=metrics, **kwargs)
        if not isinstance(self.optimizer, keras.optimizers.LossScaleOptimizer):
            # Scale 1 that never grows: on finite steps exactly the inner
            # optimizer; on a non-finite step no variable is written.
            self.optimizer = keras.optimizers.LossScaleOptimizer(
                self.optimizer, initial_scale=1.0, dynamic_growth_steps=2**31 - 1
            )

    def fit(self, x=None, y=None, **kwargs):
        """Trains the student, as `keras.Model.fit`, after checking the first batch.

        The first batch (all of it for arrays, the first of a `PyDataset`;
        not a `tf.data.Dataset` or a generator, which reading ahead would
        advance) is checked before any weight changes: image shape and finite
        values, the image key and sample indices of dict inputs, labels as
        class ids in range or one-hot rows, and logits that are not already
        probabilities. `StopOnNonFiniteLoss` is added to the callbacks.

        Raises:
            ValueError: For `class_weight` or `sample_weight` (distillation
                terms are batch-level: resample the data instead), or a bad
                first batch (the message names the value).
        """
        for name in ("class_weight", "sample_weight"):
            if kwargs.get(name) is not None:
                raise ValueError(
                    f"Distiller.fit does not apply {name}: distillation terms are computed over "
                    "the batch, not per sample; resample or reweight the data instead."
                )
        batch = input_checks.first_batch(x, y)
        if batch is not None:
            self._check_batch(*batch)
        callbacks = list(kwargs.pop("callbacks", None) or [])
        if not any(isinstance(c, StopOnNonFiniteLoss) for c in callbacks):
            callbacks.append(StopOnNonFiniteLoss())
        return super().fit(x, y, callbacks=callbacks, **kwargs)

    def _check_batch(self, x, y, sample_weight):
        self._refuse_sample_weight(sample_weight)
        images, _ = self._images(x)
        input_checks.check_images(images, self.image_shape)
        input_checks.check_labels(y, self.num_classes)
        probe = images[:8]
        input_checks.check_not_probabilities(
            "teacher", self._teacher_taps(probe, training=False)[LOGITS]
        )
        input_checks.check_not_probabilities(
            "student", self._student_taps(probe, training=False)[LOGITS]
        )

    @staticmethod
    def _refuse_sample_weight(sample_weight):
        if sample_weight is not None:
            raise ValueError(
                "Distiller.fit does not apply sample weights: distillation terms are computed "
                "over the batch, not per sample; resample or reweight the data instead."
            )

    def _supervised_loss(self, y, logits, training):
        if self.student_loss is not None:
            return ops.cast(self.student_loss(y, logits), "float32")
        return cross_entropy(y, logits, self.label_smoothing if training else 0.0)

    def _loss_terms(self, x, y, student_outputs):
        """Runs the teacher and the methods; returns `loss_ce` (unweighted) and their terms.

        Each term is this replica's estimate on the global batch (a mean over
        its shard, or a value the method computed from features of all replicas).
        """
        logits = student_outputs[LOGITS]
        terms = {"loss_ce": self._supervised_loss(y, logits, training=True)}
        if not self.methods:
            return terms
        images, sample_indices = self._images(x)
        teacher_outputs = self._teacher_taps(images, training=False)
        teacher_outputs = {k: ops.stop_gradient(v) for k, v in teacher_outputs.items()}
        step = ops.convert_to_tensor(self.training_steps)
        labels = class_ids(y, logits)
        for method in self.methods:
            terms.update(
                method(
                    teacher_outputs,
                    student_outputs,
                    labels=labels,
                    sample_indices=sample_indices,
                    step=step,
                )
            )
        return terms

    def _total_loss(self, terms):
        """`ce_weight * loss_ce` plus the method terms and regularization losses, in float32."""
        total = self.ce_weight * ops.cast(terms["loss_ce"], "float32")
        total += sum(ops.cast(v, "float32") for name, v in terms.items() if name != "loss_ce")
        for loss in self.losses:
            total = total + ops.sum(ops.cast(loss, "float32"))
        return total

    def _record_terms(self, terms):
        for name, value in terms.items():
            self._loss_trackers[name].update_state(value)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        """The loss of Keras's own train and test steps (used on JAX and PyTorch).

        Returns:
            The total loss divided by the number of replicas (the share of a
            replica, as Keras's own losses return it).
        """
        self._refuse_sample_weight(sample_weight)
        if not training:
            # Evaluation scores the student alone: the plain supervised loss.
            loss = self._supervised_loss(y, y_pred, training=False)
            self._loss_trackers["loss_ce"].update_state(loss)
            return distributed.scale_for_replicas(loss)
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
        method state advance once. On JAX and PyTorch, Keras's own step calls
        `compute_loss`, which computes the same terms.
        """
        if keras.backend.backend() != "tensorflow":
            return super().train_step(*args, **kwargs)
        import tensorflow as tf

        (data,) = args
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        self._refuse_sample_weight(sample_weight)
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
            Logs with `loss` and `loss_ce` (the plain supervised loss) and the
            compiled metrics; the distillation terms, which evaluation does
            not compute, are left out (on JAX, with the step's state).
        """
        if keras.backend.backend() == "jax":
            logs, state = super().test_step(*args, **kwargs)
            return self._evaluated(logs), state
        if keras.backend.backend() != "tensorflow":
            return self._evaluated(super().test_step(*args, **kwargs))
        (data,) = args
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        self._refuse_sample_weight(sample_weight)
        logits = self(x, training=False)
        loss = self._supervised_loss(y, logits, training=False)
        batch_size = ops.shape(logits)[0]
        self._loss_tracker.update_state(loss, sample_weight=batch_size)
        self._loss_trackers["loss_ce"].update_state(loss, sample_weight=batch_size)
        return self._evaluated(self.compute_metrics(x, y, logits))

    def _evaluated(self, logs):
        """Drops the distillation terms, which evaluation does not compute."""
        return {k: v for k, v in logs.items() if k == "loss_ce" or k not in self._loss_trackers}

    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        logits = y_pred[LOGITS] if isinstance(y_pred, dict) else y_pred
        return super().compute_metrics(x, y, logits, sample_weight)

    def get_config(self):
        return {
            **super().get_config(),
            "teacher": keras.saving.serialize_keras_object(self.teacher),
            "student": keras.saving.serialize_keras_object(self.student),
            "methods": [keras.saving.serialize_keras_object(m) for m in self.methods],
            "ce_weight": self.ce_weight,
            "label_smoothing": self.label_smoothing,
            "teacher_layers": self.teacher_layers,
            "student_layers": self.student_layers,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        for key in ("teacher", "student"):
            config[key] = keras.saving.deserialize_keras_object(config[key])
        config["methods"] = [keras.saving.deserialize_keras_object(m) for m in config["methods"]]
        return cls(**config)
