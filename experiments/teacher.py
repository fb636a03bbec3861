"""Loading a trained teacher file and checking it against the flags and the dataset.

`--teacher_weights` is the teacher file; `--teacher` says what it must hold:

- a zoo name or `keras.applications.<Name>`: that architecture (its layers
  are compared), from a `.keras` model, its `.weights.h5` weights, or (zoo
  names only) a PyTorch `.pth` checkpoint;
- empty, or the `.keras` file itself: any architecture the `.keras` file holds.

Either way the teacher must map the input pipeline's images, standardized, to
the dataset's classes (`model_specs.check_classifier`); the run puts it behind
the dataset's normalization (`model_specs.normalizing`), as the trained model.
"""

import pathlib

from experiments import model_specs
from experiments.errors import UsageError
from kerasdistill import models
from kerasdistill.models.torchvision_convert import IMAGENET_MODELS

ACCEPTED = (
    ".keras (a saved model), .weights.h5 (zoo or keras.applications weights) or .pth (a "
    "RepDistiller checkpoint, or a torchvision / mdistiller one for the ImageNet models)"
)


def _signature(model):
    """The architecture as the list of weight shapes, in order."""
    return [tuple(w.shape) for w in model.weights]


def _architecture(spec):
    """The architecture `--teacher=spec` requires of the teacher file; None for any."""
    return None if not spec or model_specs.kind(spec) == model_specs.FILE else spec


def _load(name, path, num_classes, image_shape):
    weights = str(path)
    if path.name.endswith(".pth"):
        if name is None or model_specs.kind(name) != model_specs.ZOO:
            raise UsageError(
                f"--teacher_weights={weights!r} is a PyTorch checkpoint; name its zoo model with "
                f"--teacher (got --teacher={name or ''!r})."
            )
        if name in IMAGENET_MODELS:
            return models.from_torchvision_checkpoint(name, weights, num_classes=num_classes)
        return models.from_torch_checkpoint(name, weights, num_classes=num_classes)
    if path.name.endswith(model_specs.KERAS_SUFFIX):
        return model_specs.load_keras_file("teacher_weights", path)
    if path.name.endswith(".weights.h5"):
        if name is None:
            raise UsageError(
                f"--teacher_weights={weights!r} holds weights only; name their architecture with "
                "--teacher=<zoo name or keras.applications.Name>."
            )
        model = model_specs.build("teacher", name, num_classes, image_shape)
        model.load_weights(path)
        return model
    raise UsageError(
        f"--teacher_weights={weights!r} has an unknown extension; expected {ACCEPTED}."
    )


def load_teacher(spec, weights, num_classes, image_shape):
    """Loads the teacher file `weights`; checks it against `--teacher=spec` and the dataset.

    Args:
        spec: `--teacher`: a zoo name or `keras.applications.<Name>` the file
            must hold, or empty / the `.keras` file itself for any architecture.
        weights: `--teacher_weights`: a `.keras`, `.weights.h5` or PyTorch `.pth` file.
        num_classes: The dataset's number of classes.
        image_shape: `(height, width, channels)` of the input pipeline's images.

    Returns:
        The teacher `keras.Model` of standardized images.

    Raises:
        UsageError: When the file is not a model, not the architecture `spec`
            names, or does not fit the dataset; the message says which.
    """
    name = _architecture(spec)
    try:
        teacher = _load(name, pathlib.Path(weights), num_classes, image_shape)
    except UsageError:
        raise
    except Exception as error:  # noqa: BLE001 - any failure to read the file is the user's file.
        raise UsageError(
            f"--teacher_weights={weights!r} cannot be read as a {name} teacher with {num_classes} "
            f"classes ({type(error).__name__}: {error}); expected {ACCEPTED} of that model."
        ) from error
    model_specs.check_classifier(teacher, "teacher_weights", weights, num_classes, image_shape)
    if name and _signature(teacher) != _signature(
        model_specs.build("teacher", name, num_classes, image_shape)
    ):
        raise UsageError(
            f"--teacher_weights={weights!r} holds a {teacher.name!r} model, not --teacher={name!r} "
            "(its layers differ); pass the matching --teacher, or --teacher= (empty) to take the "
            ".keras file's architecture as it is."
        )
    return teacher
