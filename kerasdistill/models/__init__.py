"""The CIFAR model zoo, its registry and feature taps."""

from kerasdistill.models import resnet_cifar  # noqa: F401  (registers models)
from kerasdistill.models.registry import available, get, register
from kerasdistill.models.taps import LOGITS, resolve_taps, tap_model

__all__ = ["available", "get", "register", "LOGITS", "resolve_taps", "tap_model"]
