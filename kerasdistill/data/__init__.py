"""Data sources and tf.data pipelines (TensorFlow is required here)."""

from kerasdistill.data.augment import normalization_layer
from kerasdistill.data.datasets import Dataset, load_cifar, load_image_folder
from kerasdistill.data.folders import DatasetUnavailableError
from kerasdistill.data.imagenet import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    imagenet_eval_pipeline,
    imagenet_train_pipeline,
    load_imagenet,
    load_imagenet_folder,
    top5_accuracy,
)
from kerasdistill.data.pipeline import eval_pipeline, train_pipeline
from kerasdistill.data.sources import load

__all__ = [
    "Dataset",
    "DatasetUnavailableError",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
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
