"""The models the flags name: a zoo name, `keras.applications.<Name>`, or a `.keras` file.

`--student` (and `--teacher` in teacher mode) is one of

- a zoo name (`resnet8x4`; `kerasdistill.models.available()`), built for the
  dataset's classes;
- `keras.applications.<Name>` (`keras.applications.MobileNetV3Small`), built
  untrained (`weights=None`) with `classes` the dataset's, `input_shape` the
  input pipeline's images and `classifier_activation=None` (logits);
- a path ending in `.keras`: a saved model of any architecture, trained from
  its saved weights.

Every model is built to take standardized images (`(pixels / 255 - mean) /
std`), and the run puts it behind the dataset's normalization (`normalizing`),
so that what it trains and writes takes [0, 255] pixels. The applications that
would otherwise rescale [0, 255] pixels inside themselves are built without it:
with `include_preprocessing=False` where they have that switch (ConvNeXt,
EfficientNetV2, MobileNetV3), and EfficientNetB0-B7, which always divide by 255,
behind a `Rescaling(255)` layer that cancels it. A `.keras` file takes
standardized images, or is a run's `model.keras` (its normalization first, then
the model of standardized images, which is taken out); it is moved to the
`--mixed_precision` dtype policy (zoo and application models are built in it).
Each model is checked: one image input that accepts the pipeline's image size,
and one output of `(batch, classes)` with the dataset's classes.

`check_path` needs no TensorFlow: it runs with the other value checks, before
anything is imported.
"""

import difflib
import hashlib
import inspect
import pathlib
import zipfile

from experiments.errors import UsageError

ZOO = "zoo"
APPLICATION = "keras.applications"
FILE = "file"
APPLICATIONS_PREFIX = "keras.applications."
KERAS_SUFFIX = ".keras"
ACCEPTED = "a zoo name, keras.applications.<Name> or a path to a .keras file"
# Applications with a [0, 255] -> [0, 1] Rescaling built in and no switch to leave it out.
_ALWAYS_RESCALING = tuple(f"EfficientNetB{i}" for i in range(8))


def kind(spec):
    """`ZOO`, `APPLICATION` or `FILE`: what kind of model the flag value `spec` names."""
    if spec.startswith(APPLICATIONS_PREFIX):
        return APPLICATION
    if spec.endswith(KERAS_SUFFIX):
        return FILE
    return ZOO


def _looks_like_a_path(spec):
    return "/" in spec or pathlib.Path(spec).is_file()


def check_path(flag, spec):
    """Checks the path part of a model flag without TensorFlow.

    Args:
        flag: The flag's name (`student`).
        spec: Its value.

    Raises:
        UsageError: For a `.keras` path that is no file, or a path to another kind of file.
    """
    if kind(spec) == FILE and not pathlib.Path(spec).is_file():
        raise UsageError(f"--{flag}={spec!r}: no such file; expected {ACCEPTED}.")
    if kind(spec) == ZOO and _looks_like_a_path(spec):
        raise UsageError(
            f"--{flag}={spec!r} is not a .keras model file; expected {ACCEPTED} (re-save an "
            "HDF5 or SavedModel model with model.save('model.keras'))."
        )


def application_names():
    """The model constructors of `keras.applications`, sorted."""
    import keras

    return sorted(name for name in dir(keras.applications) if name[:1].isupper())


def check_name(role, spec):
    """Checks a zoo or `keras.applications` name against what exists.

    Args:
        role: `teacher` or `student` (the flag).
        spec: The flag's value (a `.keras` path passes: `check_path` checks it).

    Raises:
        UsageError: For an unknown name, with the closest accepted ones.
    """
    from kerasdistill import models

    applications = application_names()
    if kind(spec) == APPLICATION:
        name = spec[len(APPLICATIONS_PREFIX):]
        if name in applications:
            return
        close = difflib.get_close_matches(name, applications, n=3)
        hint = " or ".join(repr(APPLICATIONS_PREFIX + match) for match in close)
        raise UsageError(
            f"Unknown {role} model {spec!r}.{f' Did you mean {hint}?' if close else ''} "
            f"Accepted keras.applications names: {', '.join(applications)}."
        )
    if kind(spec) == ZOO and spec not in models.available():
        # A bare application name gets its keras.applications spelling suggested.
        suggestions = {name: APPLICATIONS_PREFIX + name for name in applications}
        suggestions.update({name: name for name in models.available()})
        close = difflib.get_close_matches(spec, suggestions, n=1)
        hint = f" Did you mean {suggestions[close[0]]!r}?" if close else ""
        raise UsageError(
            f"Unknown {role} model {spec!r}.{hint} Accepted: a zoo name "
            f"({', '.join(models.available())}), keras.applications.<Name> or a path to a "
            ".keras file."
        )


def _size(shape):
    """`32x32x3`; `?` for a dimension the model leaves open."""
    return "x".join("?" if d is None else str(d) for d in shape)


def load_keras_file(flag, path):
    """Loads a `.keras` model file (uncompiled), naming the flag in every failure.

    Returns:
        The model of standardized images: the file's, or, for a run's
        `model.keras` (`normalizing`'s form), the one behind its normalization.

    Raises:
        UsageError: When `path` is not a `.keras` archive or Keras cannot load it.
    """
    import keras

    import kerasdistill.models  # noqa: F401 - registers the zoo's layers for deserialization.

    if not zipfile.is_zipfile(path):
        raise UsageError(
            f"--{flag}={str(path)!r} is not a .keras model file (a zip archive written by "
            "model.save('name.keras'))."
        )
    try:
        model = keras.saving.load_model(path, compile=False)
    except Exception as error:  # noqa: BLE001 - any failure to read the file is the user's file.
        raise UsageError(
            f"--{flag}={str(path)!r} cannot be loaded as a .keras model ({type(error).__name__}: "
            f"{error})."
        ) from error
    return _without_normalization(model)


def normalizing(model, dataset):
    """`model` behind the normalization of `dataset`: a model of [0, 255] pixels.

    Args:
        model: A `keras.Model` of standardized images (`build`, `load_teacher`).
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


def _without_normalization(model):
    """The model behind the normalization of a `normalizing` model, else `model` itself."""
    import keras

    from kerasdistill.data.augment import NORMALIZATION_LAYER

    layers = [layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)]
    if (
        len(layers) == 2
        and layers[0].name == NORMALIZATION_LAYER
        and isinstance(layers[1], keras.Model)
    ):
        return layers[1]
    return model


def check_classifier(model, flag, value, num_classes, image_shape):
    """Checks that `model` maps the pipeline's images to `num_classes` logits.

    Args:
        model: The loaded or built `keras.Model`.
        flag: The flag that named it (`student`, `teacher_weights`).
        value: That flag's value.
        num_classes: The dataset's number of classes.
        image_shape: `(height, width, channels)` of the input pipeline's images.

    Raises:
        UsageError: For another number of inputs or outputs, of classes, or an
            input shape that does not accept `image_shape`.
    """
    named = f"--{flag}={value!r}"
    inputs = getattr(model, "inputs", None) or []  # None for a subclassed model.
    outputs = getattr(model, "outputs", None) or []
    if len(inputs) != 1 or len(outputs) != 1:
        raise UsageError(
            f"{named} has {len(inputs)} inputs and {len(outputs)} outputs; expected one image "
            "input and one (batch, classes) logits output (a functional or Sequential model)."
        )
    output = tuple(model.outputs[0].shape)
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
    accepted = tuple(model.inputs[0].shape[1:])
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
    from kerasdistill.models import tap_model

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


def _build_application(flag, spec, num_classes, image_shape):
    import keras

    name = spec[len(APPLICATIONS_PREFIX):]
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
            f"--{flag}={spec!r} cannot be built for the dataset's {_size(image_shape)} images: "
            f"{error}"
        ) from error
    # Built on an input tensor the application returns its inputs as a list; one input.
    return keras.Model(images, model.outputs[0], name=model.name)


def build(flag, spec, num_classes, image_shape):
    """Builds (zoo, `keras.applications`) or loads (`.keras`) the model `spec` names.

    Args:
        flag: The flag that names it (`student`, or `teacher` in teacher mode).
        spec: Its value.
        num_classes: The dataset's number of classes.
        image_shape: `(height, width, channels)` of the input pipeline's images.

    Returns:
        A functional `keras.Model` from standardized images to logits, checked
        by `check_classifier`.

    Raises:
        UsageError: When the model cannot be built or loaded, does not fit the
            dataset, or (a file) ends in a softmax.
    """
    from kerasdistill import models

    if kind(spec) == ZOO:
        model = models.get(spec, num_classes=num_classes)
    elif kind(spec) == APPLICATION:
        model = _build_application(flag, spec, num_classes, image_shape)
    else:
        model = _with_global_dtype_policy(load_keras_file(flag, spec))
    check_classifier(model, flag, spec, num_classes, image_shape)
    softmax = kind(spec) == FILE and _final_softmax(model)  # The others are built as logits.
    if softmax:
        raise UsageError(
            f"--{flag}={spec!r} ends in a softmax (layer {softmax!r}) but is trained and "
            "exported as a logits model; save it without the final softmax (a linear last "
            "layer; keras.applications: classifier_activation=None)."
        )
    return model


def sha256(path):
    """The hex SHA-256 of the file at `path`."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
