"""Per-channel statistics of the datasets the library knows, over [0, 1] pixels.

This module imports nothing (no TensorFlow), so code that runs where only JAX
or PyTorch is installed can normalize as the library's pipelines do.
"""

# CIFAR's training splits, as used by the RepDistiller reference scripts.
CIFAR_STATS = {
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
}
# ImageNet, as in torchvision's recipes.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
