"""Loading torchvision ImageNet weights (and mdistiller's MobileNetV1) into the zoo.

The ImageNet models of the zoo name their layers with the PyTorch module
paths of the reference, `.` replaced by `_` (`kerasdistill.models.imagenet_resnet`,
`kerasdistill.models.imagenet_mobilenet`), so a published state dict, for
instance torchvision's `resnet34-b627a593.pth` or a `student_best` checkpoint
of mdistiller, converts by name with `load_torch_state_dict`.
"""

from collections.abc import Mapping

from kerasdistill.models import registry
from kerasdistill.models.torch_convert import load_torch_state_dict, read_torch_state_dict

# Zoo name -> the reference model whose state dict it loads.
IMAGENET_MODELS = {
    "ResNet18": "torchvision.models.resnet18",
    "ResNet34": "torchvision.models.resnet34",
    "ResNet50_imagenet": "torchvision.models.resnet50",
    "MobileNetV1": "mdistiller.models.imagenet.mobilenetv1.MobileNetV1",
}


def from_torchvision_checkpoint(name, checkpoint, num_classes=1000, weights_only=True):
    """Builds an ImageNet zoo model and loads a torchvision-layout state dict.

    Args:
        name: One of `IMAGENET_MODELS`: `"ResNet18"`, `"ResNet34"`,
            `"ResNet50_imagenet"` or `"MobileNetV1"`.
        checkpoint: Path of a `.pth` file (a bare state dict, or a dict whose
            `"model"` entry is one; reading it needs torch), or the state dict
            itself (a mapping from torch key to tensor or array, for instance
            `torchvision.models.resnet34().state_dict()`).
        num_classes: Number of classes of the checkpoint's classifier.
        weights_only: Passed to `torch.load` when `checkpoint` is a path.

    Returns:
        The built `keras.Model` with the checkpoint's weights.

    Raises:
        ValueError: If `name` is not an ImageNet model of the zoo, or if the
            state dict does not fit the model: the message lists the missing
            and unexpected keys and the shape mismatches.
        ImportError: If `checkpoint` is a path and torch is not installed.
    """
    if name not in IMAGENET_MODELS:
        raise ValueError(
            f"Unknown ImageNet model {name!r}; expected one of {', '.join(IMAGENET_MODELS)}."
        )
    if isinstance(checkpoint, Mapping):
        state_dict = checkpoint
    else:
        state_dict = read_torch_state_dict(checkpoint, weights_only=weights_only)
    model = registry.get(name, num_classes=num_classes)
    return load_torch_state_dict(model, state_dict)
