"""Training recipes: optimizer, schedules and export."""

from kerasdistill.training.export import (
    export_onnx,
    export_saved_model,
    export_tflite,
    missing_onnx_packages,
    serving_model,
)
from kerasdistill.training.losses import SparseCrossEntropy
from kerasdistill.training.optimizers import TorchSGD
from kerasdistill.training.schedules import cosine_with_warmup, step_decay

__all__ = [
    "SparseCrossEntropy",
    "TorchSGD",
    "cosine_with_warmup",
    "export_onnx",
    "export_saved_model",
    "export_tflite",
    "missing_onnx_packages",
    "serving_model",
    "step_decay",
]
