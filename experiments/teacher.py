"""Loading a trained teacher file and checking it is the teacher the flags name."""

import pathlib
import zipfile

import keras

from experiments.errors import UsageError
from kerasdistill import models
from kerasdistill.models.torchvision_convert import IMAGENET_MODELS

ACCEPTED = (
    ".keras (a saved model), .weights.h5 (zoo weights) or .pth (a RepDistiller checkpoint, or "
    "a torchvision / mdistiller one for the ImageNet models)"
)


def _signature(model):
    """The architecture as the list of weight shapes, in order."""
    return [tuple(w.shape) for w in model.weights]


def _load(name, path, num_classes):
    if path.name.endswith(".pth"):
        if name in IMAGENET_MODELS:
            return models.from_torchvision_checkpoint(name, str(path), num_classes=num_classes)
        return models.from_torch_checkpoint(name, str(path), num_classes=num_classes)
    if path.name.endswith(".keras"):
        if not zipfile.is_zipfile(path):
            raise UsageError(
                f"--teacher_weights={str(path)!r} is not a .keras model file (no zip archive)."
            )
        return keras.saving.load_model(path)
    if path.name.endswith(".weights.h5"):
        model = models.get(name, num_classes=num_classes)
        model.load_weights(path)
        return model
    raise UsageError(
        f"--teacher_weights={str(path)!r} has an unknown extension; expected {ACCEPTED}."
    )


def load_teacher(name, weights, num_classes):
    """Loads the teacher file `weights`; checks it is zoo model `name` with `num_classes` outputs.

    Args:
        name: The zoo name the flags give (`--teacher`).
        weights: A `.keras`, `.weights.h5` or PyTorch `.pth` file.
        num_classes: The dataset's number of classes.

    Returns:
        The teacher `keras.Model`.

    Raises:
        UsageError: When the file is not a model, not `name`, or has another
            number of classes; the message says which.
    """
    path = pathlib.Path(weights)
    try:
        teacher = _load(name, path, num_classes)
    except UsageError:
        raise
    except Exception as error:  # noqa: BLE001 - any failure to read the file is the user's file.
        raise UsageError(
            f"--teacher_weights={weights!r} cannot be read as a {name} teacher with {num_classes} "
            f"classes ({type(error).__name__}: {error}); expected {ACCEPTED} of that model."
        ) from error
    classes = teacher.outputs[0].shape[-1]
    if classes != num_classes:
        raise UsageError(
            f"--teacher_weights={weights!r} predicts {classes} classes but the dataset has "
            f"{num_classes}; train or pick a teacher for this dataset."
        )
    if _signature(teacher) != _signature(models.get(name, num_classes=num_classes)):
        raise UsageError(
            f"--teacher_weights={weights!r} holds a {teacher.name!r} model, not --teacher={name!r} "
            "(its layers differ); pass the matching --teacher."
        )
    return teacher
