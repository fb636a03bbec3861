"""The CIFAR model zoo, its registry, feature taps and PyTorch weight conversion."""

# Importing a family module registers its models.
from kerasdistill.models import (  # noqa: F401
    mobilenetv2,
    resnet50,
    resnet_cifar,
    shufflenetv1,
    shufflenetv2,
    vgg,
    wrn,
)
from kerasdistill.models.registry import available, get, register
from kerasdistill.models.taps import LOGITS, resolve_taps, tap_model
from kerasdistill.models.torch_convert import from_torch_checkpoint, load_torch_state_dict

__all__ = [
    "available",
    "get",
    "register",
    "LOGITS",
    "resolve_taps",
    "tap_model",
    "from_torch_checkpoint",
    "load_torch_state_dict",
]
