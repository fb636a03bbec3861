"""kerasdistill: knowledge distillation for Keras 3."""

from kerasdistill import methods, models, ops, taps
from kerasdistill.distiller import Distiller

__version__ = "0.1.0"

__all__ = ["Distiller", "methods", "models", "ops", "taps", "__version__"]

# Modules gone in the third plan (2026-12-06) -> where their names live now.
_MOVED = {
    "tap_names": "kerasdistill.taps (LOGITS, FEAT_LAST, PRE_POOL, POOLED)",
    "batch_keys": "kerasdistill.batches (IMAGE_KEY, INDEX_KEY)",
    "input_checks": "kerasdistill.batches (batch checks) and kerasdistill.taps.pair (model checks)",
    "initializers": "kerasdistill.models.initializers",
}


def __getattr__(name):
    if name in _MOVED:
        raise ImportError(f"kerasdistill.{name} is gone; use {_MOVED[name]}.")
    raise AttributeError(f"module 'kerasdistill' has no attribute {name!r}")
