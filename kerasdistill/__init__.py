"""kerasdistill: knowledge distillation for Keras 3."""

from kerasdistill import methods, models, ops
from kerasdistill.distiller import Distiller

__version__ = "0.1.0"

__all__ = ["Distiller", "methods", "models", "ops", "__version__"]
