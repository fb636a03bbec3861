"""`ModelSpec`: a model flag parsed once, checked, then built or loaded.

What `--student`, `--teacher` and `--teacher_weights` accept, and how each
model is built to take standardized images behind the dataset's normalization,
is written once, in README.md ("Experiment scripts"). `ModelSpec.check` needs
no TensorFlow; `check_name` reads the zoo and `keras.applications`; `build`
and `load` return a `keras.Model` of standardized images checked against the
dataset; `files` names the files a run reads (hashed into its checkpoint).
"""

import dataclasses
import difflib
import inspect
import os
import pathlib
import zipfile

from experiments.errors import UsageError

ZOO = "zoo"
APPLICATION = "keras.applications"
FILE = "file"
APPLICATIONS_PREFIX = "keras.applications."
KERAS_SUFFIX = ".keras"
ACCEPTED = "a zoo name, keras.applications.<Name> or a path to a .keras file"
TEACHER_FILES = (
    ".keras (a saved model), .weights.h5 (zoo or keras.applications weights) or .pth (a "
    "RepDistiller checkpoint, or a torchvision / mdistiller one for the ImageNet models)"
)
# Applications with a [0, 255] -> [0, 1] Rescaling built in and no switch to leave it out.
_ALWAYS_RESCALING = tuple(f"EfficientNetB{i}" for i in range(8))


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """A model flag: what it names and, for a teacher, the file holding its weights.

    Attributes:
        flag: The flag naming the model: `student`, or `teacher`.
        value: The flag's value: a zoo name, `keras.applications.<Name>`, a
            `.keras` path, or (a teacher of any architecture) empty.
        weights: `--teacher_weights` for the teacher of distill mode (a
            `.keras`, `.weights.h5` or `.pth` file), else None: the model is
            built from `value`.
    """

    flag: str
    value: str
    weights: str = None

    @property
    def kind(self):
        """`ZOO`, `APPLICATION`, `FILE`, or None for an empty value."""
        if not self.value:
            return None
        if self.value.startswith(APPLICATIONS_PREFIX):
            return APPLICATION
        if self.value.endswith(KERAS_SUFFIX):
            return FILE
        return ZOO

    @property
    def architecture(self):
        """The zoo or application name the model must be, or None (a `.keras` file's own)."""
        return self.value if self.kind in (ZOO, APPLICATION) else None

    def named(self):
        """`--flag='value'`: how errors name the model (by its weights file, if any)."""
        if self.weights is not None:
            return f"--teacher_weights={self.weights!r}"
        return f"--{self.flag}={self.value!r}"

    def check(self):
        """Checks the paths and their kinds; needs no TensorFlow.

        Raises:
            UsageError: For a `.keras` path that is no file, a path to another
                kind of file, and for a teacher: a missing weights file, a
                `--teacher` file other than it, or a weights file its
                `--teacher` cannot tell the architecture of.
        """
        if self.kind == FILE and not pathlib.Path(self.value).is_file():
            raise UsageError(f"--{self.flag}={self.value!r}: no such file; expected {ACCEPTED}.")
        if self.kind == ZOO and ("/" in self.value or pathlib.Path(self.value).is_file()):
            raise UsageError(
                f"--{self.flag}={self.value!r} is not a .keras model file; expected {ACCEPTED} "
                "(re-save an HDF5 or SavedModel model with model.save('model.keras'))."
            )
        if self.weights is not None:
            self._check_weights()

    def _check_weights(self):
        weights = self.weights
        if not weights:
            raise UsageError("--mode=distill needs --teacher_weights (a trained teacher file).")
        if not pathlib.Path(weights).is_file():
            raise UsageError(f"--teacher_weights={weights!r}: no such file.")
        if self.kind == FILE and not os.path.samefile(self.value, weights):
            raise UsageError(
                f"--teacher={self.value!r} is another file than --teacher_weights={weights!r}; "
                "the teacher is --teacher_weights: pass --teacher= (empty) or the same file."
            )
        if weights.endswith(".pth") and self.kind != ZOO:
            raise UsageError(
                f"--teacher_weights={weights!r} is a PyTorch checkpoint; name its zoo model with "
                f"--teacher (got --teacher={self.value!r})."
            )
        if weights.endswith(".weights.h5") and self.architecture is None:
            raise UsageError(
                f"--teacher_weights={weights!r} holds weights only; name their architecture with "
                "--teacher=<zoo name or keras.applications.Name>."
            )
        if not weights.endswith((KERAS_SUFFIX, ".weights.h5", ".pth")):
            raise UsageError(
                f"--teacher_weights={weights!r} has an unknown extension; expected "
                f"{TEACHER_FILES}."
            )

    def check_name(self):
        """Checks a zoo or `keras.applications` name against what exists.

        Raises:
            UsageError: For an unknown name, with the closest accepted ones.
        """
        if self.architecture is None:
            return
        from kerasdistill import models

        applications = application_names()
        if self.kind == APPLICATION:
            name = self.value[len(APPLICATIONS_PREFIX):]
            if name in applications:
                return
            close = difflib.get_close_matches(name, applications, n=3)
            hint = " or ".join(repr(APPLICATIONS_PREFIX + match) for match in close)
            raise UsageError(
                f"Unknown {self.flag} model {self.value!r}."
                f"{f' Did you mean {hint}?' if close else ''} "
                f"Accepted keras.applications names: {', '.join(applications)}."
            )
        if self.value not in models.available():
            # A bare application name gets its keras.applications spelling suggested.
            suggestions = {name: APPLICATIONS_PREFIX + name for name in applications}
            suggestions.update({name: name for name in models.available()})
            close = difflib.get_close_matches(self.value, suggestions, n=1)
            hint = f" Did you mean {suggestions[close[0]]!r}?" if close else ""
            raise UsageError(
                f"Unknown {self.flag} model {self.value!r}.{hint} Accepted: a zoo name "
                f"({', '.join(models.available())}), keras.applications.<Name> or a path to a "
                ".keras file."
            )

    def files(self):
        """`{flag: path}` of the model files this model is read from (hashed by a run)."""
        if self.weights is not None:
            return {"teacher_weights": self.weights}
        return {self.flag: self.value} if self.kind == FILE else {}

    def build(self, num_classes, image_shape):
        """Builds (zoo, `keras.applications`) or loads (`.keras` value) the model to train.

        Args:
            num_classes: The dataset's number of classes.
            image_shape: `(height, width, channels)` of the input pipeline's images.

        Returns:
            A functional `keras.Model` from standardized images to logits, in
            the global dtype policy.

        Raises:
            UsageError: When the model cannot be built or loaded, does not fit
                the dataset, or (a file) ends in a softmax.
        """
        from kerasdistill import models

        if self.kind == ZOO:
            model = models.get(self.value, num_classes=num_classes)
        elif self.kind == APPLICATION:
            model = self._build_application(num_classes, image_shape)
        else:
            model = _with_global_dtype_policy(_load_keras_file(self.named(), self.value))
        _check_classifier(model, self.named(), num_classes, image_shape)
        softmax = self.kind == FILE and _final_softmax(model)  # The others are built as logits.
        if softmax:
            raise UsageError(
                f"{self.named()} ends in a softmax (layer {softmax!r}) but is trained and "
                "exported as a logits model; save it without the final softmax (a linear last "
                "layer; keras.applications: classifier_activation=None)."
            )
        return model

    def load(self, num_classes, image_shape):
        """Loads the trained teacher from `weights`.

        With an architecture named (`value` a zoo or application name) the
        teacher is that model, built once, with the file's weights; otherwise
        the `.keras` file's own model.

        Args:
            num_classes: The dataset's number of classes.
            image_shape: `(height, width, channels)` of the input pipeline's images.

        Returns:
            The teacher `keras.Model` of standardized images.

        Raises:
            UsageError: When the file is not a model, not the architecture
                `value` names, or does not fit the dataset.
        """
        named = self.named()
        try:
            if self.weights.endswith(".pth"):
                model = _from_torch(self.value, self.weights, num_classes)
            elif self.weights.endswith(".weights.h5"):
                model = self.build(num_classes, image_shape)
                model.load_weights(self.weights)
            elif self.architecture is None:
                model = _load_keras_file(named, self.weights)
            else:
                saved = _load_keras_file(named, self.weights)
                _check_classifier(saved, named, num_classes, image_shape)
                model = self.build(num_classes, image_shape)
                try:
                    model.set_weights(saved.get_weights())
                except ValueError as error:
                    raise UsageError(
                        f"{named} holds a {saved.name!r} model, not --teacher={self.value!r} "
                        f"({error}); pass the matching --teacher, or --teacher= (empty) to take "
                        "the .keras file's architecture as it is."
                    ) from error
        except UsageError:
            raise
        except Exception as error:  # noqa: BLE001 - any failure to read the file is the user's.
            raise UsageError(
                f"{named} cannot be read as a {self.value} teacher with {num_classes} classes "
                f"({type(error).__name__}: {error}); expected {TEACHER_FILES} of that model."
            ) from error
        _check_classifier(model, named, num_classes, image_shape)
        return model

    def _build_application(self, num_classes, image_shape):
        import keras

        name = self.value[len(APPLICATIONS_PREFIX):]
        constructor = getattr(keras.applications, name)
        kwargs = dict(
            weights=None, classes=num_classes, input_shape=image_shape, classifier_activation=None
        )
        if "include_preprocessing" in inspect.signature(constructor).parameters:
            kwargs["include_preprocessing"] = False
        images = keras.Input(image_shape, name="images")
        kwargs["input_tensor"] = images
        if name in _ALWAYS_RESCALING:
            kwargs["input_tensor"] = keras.layers.Rescaling(255.0, name="to_pixel_range")(images)
        try:
            model = constructor(**kwargs)
        except ValueError as error:  # keras.applications' own check, e.g. a minimum input size.
            raise UsageError(
                f"{self.named()} cannot be built for the dataset's {_size(image_shape)} images: "
                f"{error}"
            ) from error
        # Built on an input tensor the application returns its inputs as a list; one input.
        return keras.Model(images, model.outputs[0], name=model.name)


def application_names():
    """The model constructors of `keras.applications`, sorted."""
    import keras

    return sorted(name for name in dir(keras.applications) if name[:1].isupper())


def normalizing(model, dataset):
    """`model` behind the normalization of `dataset`: a model of [0, 255] pixels.

    Args:
        model: A `keras.Model` of standardized images (`ModelSpec.build`, `load`).
        dataset: The run's `kerasdistill.data.Dataset` (its `mean` and `std`).

    Returns:
        A functional `keras.Model` named as `model`, whose layers are
        `kerasdistill.data.normalization_layer(dataset.mean, dataset.std)` and
        `model` (its own layers, names and variables unchanged).
    """
    import keras

    from kerasdistill import data

    images = keras.Input(model.inputs[0].shape[1:], name="images")
    normalized = data.normalization_layer(dataset.mean, dataset.std)(images)
    return keras.Model(images, model(normalized), name=model.name)


def _size(shape):
    """`32x32x3`; `?` for a dimension the model leaves open."""
    return "x".join("?" if d is None else str(d) for d in shape)


def _load_keras_file(named, path):
    """The model of standardized images in a `.keras` file (a run's: behind its normalization)."""
    import keras

    import kerasdistill.models  # noqa: F401 - registers the zoo's layers for deserialization.
    from kerasdistill.data.augment import NORMALIZATION_LAYER

    if not zipfile.is_zipfile(path):
        raise UsageError(
            f"{named} is not a .keras model file (a zip archive written by "
            "model.save('name.keras'))."
        )
    try:
        model = keras.saving.load_model(path, compile=False)
    except Exception as error:  # noqa: BLE001 - any failure to read the file is the user's.
        raise UsageError(
            f"{named} cannot be loaded as a .keras model ({type(error).__name__}: {error})."
        ) from error
    layers = [layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)]
    if (
        len(layers) == 2
        and layers[0].name == NORMALIZATION_LAYER
        and isinstance(layers[1], keras.Model)
    ):
        return layers[1]
    return model


def _from_torch(name, path, num_classes):
    from kerasdistill import models
    from kerasdistill.models.torchvision_convert import IMAGENET_MODELS

    if name in IMAGENET_MODELS:
        return models.from_torchvision_checkpoint(name, path, num_classes=num_classes)
    return models.from_torch_checkpoint(name, path, num_classes=num_classes)


def _check_classifier(model, named, num_classes, image_shape):
    """Checks that `model` maps the pipeline's images to `num_classes` logits.

    Raises:
        UsageError: For another number of inputs or outputs, of classes, or an
            input shape that does not accept `image_shape`.
    """
    inputs = getattr(model, "inputs", None) or []  # None for a subclassed model.
    outputs = getattr(model, "outputs", None) or []
    if len(inputs) != 1 or len(outputs) != 1:
        raise UsageError(
            f"{named} has {len(inputs)} inputs and {len(outputs)} outputs; expected one image "
            "input and one (batch, classes) logits output (a functional or Sequential model)."
        )
    output = tuple(outputs[0].shape)
    if len(output) != 2:
        raise UsageError(
            f"{named} outputs shape {output}, not (batch, classes) logits; expected a classifier "
            f"with {num_classes} outputs."
        )
    if output[-1] != num_classes:
        raise UsageError(
            f"{named} predicts {output[-1]} classes but the dataset has {num_classes}; train or "
            "pick a model for this dataset."
        )
    accepted = tuple(inputs[0].shape[1:])
    if len(accepted) != len(image_shape) or any(
        d is not None and d != want for d, want in zip(accepted, image_shape)
    ):
        raise UsageError(
            f"{named} takes {_size(accepted)} images but the dataset's are {_size(image_shape)}; "
            f"pass a model built for {_size(image_shape)} inputs (or one with an open size, "
            f"{_size((None, None, image_shape[-1]))})."
        )


def _final_softmax(model):
    """The name of the softmax layer `model` ends in, or None (the Distiller's reading)."""
    from kerasdistill.taps import tap_model

    return tap_model(model, []).softmax_layer


def _with_global_dtype_policy(model):
    """`model` with every layer in the global dtype policy (`--mixed_precision`).

    A loaded `.keras` model keeps the policy it was saved with; zoo and
    application models are built in the global one.
    """
    import keras

    policy = keras.config.dtype_policy()
    if all(layer.dtype_policy.name == policy.name for layer in model.layers):
        return model

    def clone_layer(layer):
        config = layer.get_config()
        if "dtype" in config:  # Plain operations (keras.ops in the graph) have no policy.
            config["dtype"] = policy
        return layer.__class__.from_config(config)

    clone = keras.models.clone_model(model, clone_function=clone_layer)
    clone.set_weights(model.get_weights())
    return clone
