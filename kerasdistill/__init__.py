"""kerasdistill: knowledge distillation for Keras 3."""

from kerasdistill import methods, models, ops, taps
from kerasdistill.distiller import Distiller

__version__ = "0.1.0"

__all__ = ["Distiller", "methods", "models", "ops", "taps", "__version__"]
