"""PyTorch-default initializers, re-exported for the zoo (see `kerasdistill.initializers`)."""

from kerasdistill.initializers import torch_bias_initializer, torch_kernel_initializer

__all__ = ["torch_bias_initializer", "torch_kernel_initializer"]
