"""Data sources and tf.data pipelines.

The pipelines need TensorFlow; `kerasdistill.data.stats` (the datasets'
channel statistics) and `kerasdistill.data.folders` (image-folder listing) do
not. The names below are imported on first use, so that importing those two
modules does not import TensorFlow.
"""

import importlib

# Public name -> the module of this package that defines it.
_EXPORTS = {
    "normalization_layer": "augment",
    "Dataset": "datasets",
    "load_cifar": "datasets",
    "load_image_folder": "datasets",
    "DatasetUnavailableError": "folders",
    "imagenet_eval_pipeline": "imagenet",
    "imagenet_train_pipeline": "imagenet",
    "load_imagenet": "imagenet",
    "load_imagenet_folder": "imagenet",
    "top5_accuracy": "imagenet",
    "eval_pipeline": "pipeline",
    "train_pipeline": "pipeline",
    "load": "sources",
    "CIFAR_STATS": "stats",
    "IMAGENET_MEAN": "stats",
    "IMAGENET_STD": "stats",
}

_MODULES = (
    "augment", "datasets", "folders", "idx", "imagenet", "imagenet_augment", "pipeline",
    "sources", "stats", "validation",
)

__all__ = [
    "CIFAR_STATS",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "Dataset",
    "DatasetUnavailableError",
    "eval_pipeline",
    "imagenet_eval_pipeline",
    "imagenet_train_pipeline",
    "load",
    "load_cifar",
    "load_image_folder",
    "load_imagenet",
    "load_imagenet_folder",
    "normalization_layer",
    "top5_accuracy",
    "train_pipeline",
]


def __getattr__(name):
    if name in _MODULES:
        value = importlib.import_module(f"{__name__}.{name}")
    elif name in _EXPORTS:
        value = getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS))
