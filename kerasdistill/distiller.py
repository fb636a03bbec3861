"""The Distiller: a `keras.Model` training a student against a frozen teacher."""

import logging

import keras
from keras import ops

from kerasdistill import batches
from kerasdistill.methods import defaults, registry
from kerasdistill.methods.base import build_for_taps
from kerasdistill.ops import distributed
from kerasdistill.ops.losses import class_ids, cross_entropy
from kerasdistill.taps import LOGITS, FeaturePair
from kerasdistill.training.callbacks import StopOnNonFiniteLoss, WarnOnTermsOutOfProportion
from kerasdistill.training.losses import logits_loss


logger = logging.getLogger("kerasdistill")
# Layers that keep a student's features at a fixed scale (see `_clip_if_features_may_grow`).
_NORMALIZATION_LAYERS = (
    keras.layers.BatchNormalization, keras.layers.LayerNormalization,
    keras.layers.GroupNormalization, keras.layers.RMSNormalization,
)
# The optimizer arguments that clip gradients, and the clipnorm `compile` sets on an
# optimizer with none of them when a method may grow an unnormalized student's features.
_CLIPPING = ("clipnorm", "global_clipnorm", "clipvalue")
_UNNORMALIZED_CLIPNORM = 1.0
# Constructor arguments that `get_config` stores as they are.
_PLAIN_ARGUMENTS = ("ce_weight", "label_smoothing", "teacher_layers", "student_layers")


@keras.saving.register_keras_serializable(package="kerasdistill")
class Distiller(keras.Model):
    """Trains `student` with a supervised loss plus the loss terms of `methods`.

    Keras's own train and test steps run on every backend with this `call`
    (the student once in training mode, the frozen teacher once without
    gradient, each through a tapped model: `kerasdistill.taps`) and this
    `compute_loss` (`ce_weight * loss_ce + method terms + regularization`,
    each term logged). A step whose loss is not finite changes no variable.
    `predict`, `evaluate` and `distiller(x)` see the student's logits. Batches
    are `(images, labels)` or `({"image": ..., "index": ...}, labels)`.

    Args:
        teacher: A trained `keras.Model` mapping images to logits; frozen.
        student: A `keras.Model` mapping the same images to as many classes.
        methods: A method, a name, names (`"kd,msdcrd"`), a config dict, a
            list of these, or `None` / `[]` (the student alone). Default:
            `"default"`, the methods the defaults study chose
            (`kerasdistill.methods.defaults`: KD on standardized logits at
            temperature 2, weight 9, plus MSDCRD, weight 1).
        ce_weight: Weight of the supervised loss `loss_ce`. Default: 0.1 when
            `methods` names `"default"` (the study's recipe), else 1.
        teacher_layers: Optional `{tap: layer_name}` overriding where a tap
            some method reads is read in the teacher.
        student_layers: Same for the student.
        label_smoothing: In `[0, 1)`, for the default training cross-entropy.
        training_data: A `kerasdistill.methods.TrainingData`, for methods that
            need the training set (CRD's labels, DKD's steps per epoch).
        **kwargs: Passed to `keras.Model` (`name`).

    Raises:
        TypeError: For a model that is not a `keras.Model` or a misspelled
            method argument.
        ValueError: For one model twice, different classes or image shapes,
            a tap not found, or training data a method needs and lacks.
    """

    def __init__(
        self, teacher, student, methods=defaults.DEFAULT, ce_weight=None, teacher_layers=None,
        student_layers=None, label_smoothing=0.0, training_data=None, **kwargs,
    ):
        super().__init__(**kwargs)
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing!r}.")
        named_default = defaults.names_default(methods)
        if ce_weight is None:
            ce_weight = defaults.ce_weight(methods)
        methods = registry.get_list(methods)
        try:
            self.taps = FeaturePair(teacher, student, [t for m in methods for t in m.teacher_taps],
                                    [t for m in methods for t in m.student_taps],
                                    teacher_layers, student_layers)
        except ValueError as error:
            if not named_default:
                raise
            raise ValueError(
                f"{error} (The default methods read feature maps (MSDCRD); for models without "
                "them pass methods='kd'.)"
            ) from error
        self.teacher, self.student, self.methods = teacher, student, methods
        self.teacher.trainable = False
        self.ce_weight, self.label_smoothing = float(ce_weight), float(label_smoothing)
        self.teacher_layers = dict(teacher_layers or {})
        self.student_layers = dict(student_layers or {})
        self.student_loss = None
        self._index_users = tuple(type(m).__name__ for m in methods if m.uses_sample_indices)
        terms = build_for_taps(
            methods, self.taps.teacher_shapes, self.taps.student_shapes, training_data
        )
        self._loss_trackers = {t: keras.metrics.Mean(name=t) for t in ["loss_ce", *terms]}
        # Finite training steps so far, for methods' schedules (DKD's warm-up); a
        # model variable so that JAX's stateless loss reads it.
        self.training_steps = self.add_weight(
            shape=(), dtype="int64", initializer="zeros", trainable=False,
            aggregation="only_first_replica", name="training_steps",
        )
        self.built = True

    @property
    def tap_layers(self):
        """`{"teacher": {tap: layer}, "student": {tap: layer}}`: where each tap is read."""
        return self.taps.tap_layers

    def _guarded_state(self):
        """What a non-finite step puts back: the student's and methods' state but banks."""
        skip = {id(v) for m in self.methods for v in m.self_guarded_variables}
        found = [*self.student.non_trainable_variables]
        found += [v for m in self.methods for v in m.non_trainable_variables]
        return [v for v in found if id(v) not in skip]

    def call(self, inputs, training=None):
        """The student's logits; in training, the taps of both models (the
        teacher's without gradient), the indices and the guarded state."""
        if not training:
            images, _ = batches.split_images(inputs)
            return self.taps.student(images, training=training)[LOGITS]
        images, indices = batches.split_images(inputs, self._index_users)
        outputs = {"state": [ops.copy(v) for v in self._guarded_state()]}
        outputs["student"] = self.taps.student(images, training=True)
        outputs["teacher"] = self.taps.teacher(images) if self.methods else {}
        if indices is not None:
            outputs["indices"] = indices
        return outputs

    def compile(self, optimizer="rmsprop", loss=None, metrics=None, **kwargs):
        """Configures training, as `keras.Model.compile`.

        Args:
            optimizer: The student's optimizer; a `LossScaleOptimizer` of fixed
                scale 1 wraps it (unless it is one) to skip non-finite steps.
                When a method normalizes the student's features (MSDCRD) and the
                student has no BatchNorm, LayerNorm, GroupNorm or RMSNorm layer,
                an optimizer that clips nothing gets `clipnorm=1.0` (logged).
            loss: The supervised loss on the student's logits (default: softmax
                cross-entropy with `label_smoothing`); see `logits_loss`.
            metrics: Metrics of the student's logits (`"accuracy"`, ...).
            **kwargs: Other `keras.Model.compile` arguments but `loss_weights`.
        """
        if kwargs.get("loss_weights") is not None:
            raise ValueError(
                "Distiller.compile does not take loss_weights: weight the supervised term with "
                "Distiller(ce_weight=...) and each method with its own weight argument."
            )
        self.student_loss = logits_loss(loss, self.label_smoothing)
        super().compile(optimizer=optimizer, metrics=metrics, **kwargs)
        self._clip_if_features_may_grow()
        if not isinstance(self.optimizer, keras.optimizers.LossScaleOptimizer):
            # Scale 1, never growing: exactly the inner optimizer on finite steps.
            self.optimizer = keras.optimizers.LossScaleOptimizer(
                self.optimizer, initial_scale=1.0, dynamic_growth_steps=2**31 - 1
            )

    def _clip_if_features_may_grow(self):
        """Sets `clipnorm=1.0` where a method may grow an unnormalized student's features.

        MSDCRD (any method with `normalizes_student_features`) reads the
        student's features only through their L2 normalization: its gradient
        is orthogonal to them and its steps grow their norm. Behind a
        normalization layer that growth is harmless; in a student without one
        it reaches the logits, and under SGD every MSDCRD run of the defaults
        study diverged by step 31 while each gradient clipped to norm 1 trained
        (`docs/results.md`, "Defaults study"). An optimizer that clips anything
        itself is left as it is.
        """
        growing = [type(m).__name__ for m in self.methods if m.normalizes_student_features]
        inner = getattr(self.optimizer, "inner_optimizer", self.optimizer)
        if not growing or any(getattr(inner, name, None) for name in _CLIPPING):
            return
        stack = list(self.student.layers)
        while stack:
            layer = stack.pop()
            if isinstance(layer, _NORMALIZATION_LAYERS):
                return
            stack += getattr(layer, "layers", [])
        inner.clipnorm = _UNNORMALIZED_CLIPNORM
        logger.warning(
            "The student %r has no normalization layer and %s trains on its L2-normalized "
            "features, which diverged on such students unclipped (docs/results.md, \"Defaults "
            "study\"): the optimizer clips each gradient to norm %g; give it a clipnorm, "
            "global_clipnorm or clipvalue of your own to choose otherwise.",
            self.student.name, ", ".join(growing), _UNNORMALIZED_CLIPNORM)

    def fit(self, x=None, y=None, **kwargs):
        """`keras.Model.fit`, the first batch checked first, with two callbacks.

        `StopOnNonFiniteLoss` stops at the first non-finite step, and
        `WarnOnTermsOutOfProportion` logs a WARNING for each term over 30x the
        rest of the loss at the first step; each is
        added unless `callbacks` has one of its kind.

        Raises:
            ValueError: For `class_weight`, `sample_weight` (the terms are
                batch-level) or a bad first batch of arrays or a `PyDataset`.
        """
        for name in ("class_weight", "sample_weight"):
            batches.refuse_sample_weights(name, kwargs.get(name))
        batch = batches.first_batch(x, y)
        if batch is not None:
            batches.check_first_batch(*batch[:2], self.taps, self._index_users)
        callbacks = list(kwargs.pop("callbacks", None) or [])
        for kind in (StopOnNonFiniteLoss, WarnOnTermsOutOfProportion):
            if not any(isinstance(c, kind) for c in callbacks):
                callbacks.append(kind())
        return super().fit(x, y, callbacks=callbacks, **kwargs)

    def _supervised_loss(self, y, logits, training):
        if self.student_loss is not None:
            return ops.cast(self.student_loss(y, logits), "float32")
        return cross_entropy(y, logits, self.label_smoothing if training else 0.0)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        """Keras's steps' loss: a replica's share of the total (or, in evaluation, of CE).

        The terms are each replica's estimates on the global batch, logged; a
        total that is not finite on some replica puts the guarded state back.
        """
        batches.refuse_sample_weights("sample_weight", sample_weight)
        if not training:
            return distributed.scale_for_replicas(self._supervised_loss(y, y_pred, False))
        logits = y_pred["student"][LOGITS]
        terms = {"loss_ce": self._supervised_loss(y, logits, training=True)}
        step = ops.convert_to_tensor(self.training_steps)
        labels, indices = class_ids(y, logits), y_pred.get("indices")
        for method in self.methods:
            terms.update(method(y_pred["teacher"], y_pred["student"], labels, indices, step))
        total = self.ce_weight * terms["loss_ce"]
        total += sum(ops.cast(v, "float32") for name, v in terms.items() if name != "loss_ce")
        total += sum(ops.sum(ops.cast(loss, "float32")) for loss in self.losses)
        finite = ops.all(ops.isfinite(distributed.all_gather(ops.reshape(total, (1,)))))
        for variable, before in zip(self._guarded_state(), y_pred["state"]):
            variable.assign(ops.where(finite, variable.value, before))
        self.training_steps.assign_add(ops.cast(finite, "int64"))
        for name, value in terms.items():
            self._loss_trackers[name].update_state(value)
        return distributed.scale_for_replicas(total)

    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        """The compiled metrics of the student's logits; no terms in evaluation."""
        if isinstance(y_pred, dict):
            return super().compute_metrics(x, y, y_pred["student"][LOGITS], sample_weight)
        logs = super().compute_metrics(x, y, y_pred, sample_weight)
        return {k: v for k, v in logs.items() if k not in self._loss_trackers}

    def get_config(self):
        config = {k: getattr(self, k) for k in _PLAIN_ARGUMENTS}
        for key in ("teacher", "student", "methods"):
            config[key] = keras.saving.serialize_keras_object(getattr(self, key))
        return {**super().get_config(), **config}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        for key in ("teacher", "student", "methods"):
            config[key] = keras.saving.deserialize_keras_object(config[key])
        return cls(**config)

