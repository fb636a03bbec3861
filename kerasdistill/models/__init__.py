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
