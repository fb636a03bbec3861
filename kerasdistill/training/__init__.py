"""Training recipes: optimizer, schedules and export."""

from kerasdistill.training.export import export_saved_model, export_tflite, serving_model
from kerasdistill.training.optimizers import TorchSGD
from kerasdistill.training.schedules import step_decay

__all__ = ["TorchSGD", "export_saved_model", "export_tflite", "serving_model", "step_decay"]
