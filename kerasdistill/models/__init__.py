"""The model zoo (CIFAR and ImageNet), its registry and PyTorch weight conversion."""

# Importing a family module registers its models.
from kerasdistill.models import (  # noqa: F401
    imagenet_mobilenet,
    imagenet_resnet,
    mixer,
    mobilenetv2,
    resnet50,
    resnet_cifar,
    shufflenetv1,
    shufflenetv2,
    vgg,
    vit,
    wrn,
)
from kerasdistill.models.inference import fold_batchnorm
from kerasdistill.models.registry import available, get, register
from kerasdistill.models.torch_convert import (
    from_torch_checkpoint,
    load_torch_state_dict,
    read_torch_state_dict,
)
from kerasdistill.models.torchvision_convert import from_torchvision_checkpoint

__all__ = [
    "available",
    "fold_batchnorm",
    "from_torch_checkpoint",
    "from_torchvision_checkpoint",
    "get",
    "load_torch_state_dict",
    "read_torch_state_dict",
    "register",
]

# Names that moved to the taps room in the third plan (2026-12-06).
_MOVED_TO_TAPS = (
    "taps", "graph", "heads", "stage_maps", "tap_model", "resolve_taps", "classifier_layer",
    "LOGITS", "FEAT_LAST", "PRE_POOL", "POOLED",
)


def __getattr__(name):
    if name in _MOVED_TO_TAPS:
        raise ImportError(f"kerasdistill.models.{name} moved to kerasdistill.taps; import it there.")
    raise AttributeError(f"module 'kerasdistill.models' has no attribute {name!r}")
