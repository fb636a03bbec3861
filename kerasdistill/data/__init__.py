"""Data sources and tf.data pipelines (TensorFlow is required here)."""

from kerasdistill.data.datasets import (
    Dataset,
    DatasetUnavailableError,
    load,
    load_cifar,
    load_image_folder,
)
from kerasdistill.data.pipeline import eval_pipeline, train_pipeline

__all__ = [
    "Dataset",
    "DatasetUnavailableError",
    "eval_pipeline",
    "load",
    "load_cifar",
    "load_image_folder",
    "train_pipeline",
]
