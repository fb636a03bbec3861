"""The one interface every distillation method implements."""

import dataclasses
import difflib
import inspect
import math
import numbers

import keras
import numpy as np

# Keyword arguments of `keras.layers.Layer` a method accepts (what its config holds).
_LAYER_KWARGS = ("name", "dtype", "trainable")


@dataclasses.dataclass(frozen=True)
class TrainingData:
    """What a method may need to know of the training set before it is built.

    A method names the fields it needs in its `needs`; the Distiller
    (`Distiller(..., training_data=TrainingData(...))`) passes this to the
    method's `set_up` before `build_from_taps`.

    Attributes:
        train_labels: Integer class label of every training sample, in
            dataset-index order (CRD's memory bank and negatives).
        steps_per_epoch: Optimizer steps in one epoch (schedules given in
            epochs, like DKD's warm-up).
    """

    train_labels: np.ndarray = None
    steps_per_epoch: int = None


class DistillationMethod(keras.layers.Layer):
    """Base class of distillation methods.

    A method is a Keras layer, so it may own trainable layers (projection
    heads) and non-trainable state (memory banks, counters) that are saved with
    the Distiller. It declares the feature taps it reads from each model and
    returns a dict of named, already weighted loss terms; the Distiller adds
    them to the total loss and tracks one metric per term.

    Every method has an overall `weight`, applied here once: calling a method
    multiplies each term its `call` returns by `weight`. Weights of single
    terms are named after their term (DKD's `tckd_weight`, MSDCRD's
    `sw_weight`) and applied in `call`.

    Subclasses set `teacher_taps` and `student_taps` (tuples of tap names, see
    `kerasdistill.taps`), may override `build_from_taps` to create
    weights from the tapped tensor shapes, and implement `call`. A method that
    needs something of the training set (CRD: its labels; DKD with
    `warmup_epochs`: the steps per epoch) names the `TrainingData` fields in
    `needs` and overrides `set_up`, which the Distiller calls once with its
    `training_data`, before `build_from_taps`.

    Args:
        teacher_taps: Tap names read from the teacher.
        student_taps: Tap names read from the student.
        weight: Overall weight, multiplying every term of the method; a
            finite number `>= 0`.
        **kwargs: Passed to `keras.layers.Layer` (`name`; `dtype` defaults to
            float32 whatever the global policy).
    """

    # Fields of `TrainingData` that `set_up` needs (CRD: `("train_labels",)`); a method
    # whose needs depend on its arguments sets its own in `__init__`.
    needs = ()
    # True for methods that need each sample's dataset index (`call`'s `sample_indices`).
    uses_sample_indices = False
    # The fewest samples each replica's batch must hold for the loss to be defined
    # (2 for in-batch contrastive methods: an anchor needs another sample).
    min_batch_per_replica = 1
    # True for methods whose terms read the student's features only through their L2
    # normalization (MSDCRD): their gradients grow the features' scale, which a student
    # without normalization layers passes on to its logits (it diverged under SGD at LR
    # 0.05 in docs/results.md, "Defaults study"); `Distiller.compile` then clips the gradients.
    normalizes_student_features = False
    # True for methods that create weights from the tap shapes (projection heads,
    # memory banks): `build_from_taps` must run before their first call.
    needs_tap_shapes = False
    # Non-trainable variables the method itself keeps unchanged on a non-finite step
    # (constants; CRD's memory banks, written by finite rows only); the Distiller copies
    # every other one before a step and puts it back after a non-finite one.
    self_guarded_variables = ()
    # Former argument names, mapped to the current ones: a former name is refused with
    # an error naming its replacement (difflib cannot guess `lambda_sw` -> `sw_weight`).
    renamed_arguments = {}

    def __init__(self, teacher_taps, student_taps, weight=1.0, **kwargs):
        self._check_keyword_arguments(kwargs)
        number = isinstance(weight, numbers.Real) and not isinstance(weight, bool)
        if not (number and math.isfinite(weight) and weight >= 0):
            raise ValueError(
                f"{type(self).__name__} weight must be a finite number >= 0, got {weight!r}."
            )
        # Losses compute in float32 under any mixed-precision policy: Keras
        # casts the (float16 / bfloat16) inputs up before `call`.
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.teacher_taps = tuple(teacher_taps)
        self.student_taps = tuple(student_taps)
        self.weight = float(weight)
        self._taps_built = False
        self._is_set_up = False

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "bind_models" in vars(cls):
            raise TypeError(
                f"{cls.__name__}.bind_models is no longer called: take the layers a method "
                "needs as constructor arguments (e.g. kerasdistill.taps.classifier_layer(model))."
            )

    @classmethod
    def from_data(cls, data=None, **kwargs):
        """Gone: a method declares its `needs` and takes them in `set_up`.

        Raises:
            AttributeError: Naming what replaces it.
        """
        raise AttributeError(
            f"{cls.__name__}.from_data is gone: build {cls.__name__}(...) and pass "
            "Distiller(..., training_data=TrainingData(...)) (or call set_up(data))."
        )

    def _check_keyword_arguments(self, kwargs):
        """Raises a `TypeError` naming a misspelled argument and the closest accepted one."""
        unknown = [key for key in kwargs if key not in _LAYER_KWARGS]
        if not unknown:
            return
        own = [
            name
            for name, p in inspect.signature(type(self).__init__).parameters.items()
            if name != "self" and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)
        ]
        accepted = own + [name for name in ("weight",) + _LAYER_KWARGS if name not in own]
        renamed = self.renamed_arguments.get(unknown[0])
        close = [renamed] if renamed else difflib.get_close_matches(unknown[0], accepted, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else "."
        raise TypeError(
            f"{type(self).__name__} got an unexpected argument {unknown[0]!r}{hint} "
            f"It accepts: {', '.join(accepted)}."
        )

    def loss_terms(self):
        """Returns the names of the loss terms `call` reports, e.g. `("loss_kd",)`.

        The Distiller creates one metric per name before training starts.
        """
        raise NotImplementedError

    def set_up(self, data):
        """Takes what the method `needs` of the training set; once, before `build_from_taps`.

        The Distiller calls it for every method whose `needs` is not empty,
        with its `training_data`. Subclasses that override it call it first.

        Args:
            data: A `TrainingData`, or None.

        Raises:
            ValueError: Naming the method and the first field of `needs` that
                `data` lacks.
        """
        for field in self.needs:
            if getattr(data, field, None) is None:
                raise ValueError(self._unmet_need(field))
        self._is_set_up = True

    def require_set_up(self):
        """Raises unless `set_up` has given the method what it `needs`.

        Raises:
            ValueError: Naming the method and the first field of `needs`.
        """
        if self.needs and not self._is_set_up:
            raise ValueError(self._unmet_need(self.needs[0]))

    def _unmet_need(self, field):
        return (
            f"{type(self).__name__} needs TrainingData.{field}: pass Distiller(..., "
            f"training_data=TrainingData({field}=...)), or call set_up(TrainingData(...)) first."
        )

    def build_from_taps(self, teacher_shapes, student_shapes):
        """Creates the method's weights from the static shapes of its taps.

        Called once by the Distiller at construction, after `set_up` and
        before any data is seen, so that every variable exists before tracing
        (required on JAX).

        Args:
            teacher_shapes: Dict `{tap: shape}` (batch dimension included).
            student_shapes: Dict `{tap: shape}`.

        Raises:
            ValueError: When the method's `needs` were not given (`set_up`).

        Subclasses that override it call `require_set_up` first and this last,
        to mark the method built.
        """
        del teacher_shapes, student_shapes
        self.require_set_up()
        self._taps_built = True
        self.built = True

    def __call__(self, *args, **kwargs):
        """Runs `call` and returns its terms, each multiplied by the overall `weight`."""
        self.require_set_up()
        self.require_built()
        terms = super().__call__(*args, **kwargs)
        return {name: self.weight * term for name, term in terms.items()}

    def require_built(self):
        """Raises unless a method with `needs_tap_shapes` has been built.

        Raises:
            ValueError: When `build_from_taps` has not run yet.
        """
        if self.needs_tap_shapes and not self._taps_built:
            raise ValueError(
                f"{type(self).__name__}.build_from_taps(teacher_shapes, student_shapes) must "
                "run before the method is called; the Distiller does this at construction."
            )

    def call(self, teacher_outputs, student_outputs, labels=None, sample_indices=None, step=None):
        """Computes the method's loss terms for one batch.

        Args:
            teacher_outputs: Dict `{tap: tensor}` of the frozen teacher.
            student_outputs: Dict `{tap: tensor}` of the student.
            labels: Integer class labels, shape `(batch,)`, or `None` for
                methods that do not use them.
            sample_indices: Dataset indices of the batch samples, shape
                `(batch,)`, or `None` when the input pipeline carries none.
            step: Number of training steps taken before this one (int64
                scalar), for schedules.

        Returns:
            A dict `{"loss_<term>": scalar float32 tensor}`, each term with its
            own weight; `__call__` multiplies them by the overall `weight`.
        """
        raise NotImplementedError

    def get_config(self):
        config = super().get_config()
        config["weight"] = self.weight
        return config


def build_for_taps(methods, teacher_shapes, student_shapes, training_data=None):
    """Sets up and builds each method for the taps it reads, once, before training.

    Args:
        methods: `DistillationMethod`s.
        teacher_shapes: `{tap: shape}` of the teacher's taps (batch axis first).
        student_shapes: Same for the student.
        training_data: A `TrainingData` for the methods that need it, or `None`.

    Returns:
        The names of the methods' loss terms, in order.

    Raises:
        ValueError: For a need that `training_data` does not meet, or two
            terms of the same name (`loss_ce` is the supervised loss's).
    """
    for method in methods:
        if method.needs:
            method.set_up(training_data)
        method.build_from_taps(
            {t: teacher_shapes[t] for t in method.teacher_taps},
            {t: student_shapes[t] for t in method.student_taps},
        )
    terms = [term for method in methods for term in method.loss_terms()]
    if len(set(terms)) < len(terms) or "loss_ce" in terms:
        raise ValueError(f"Two loss terms share a name (loss_ce is the supervised loss): {terms}.")
    return terms
