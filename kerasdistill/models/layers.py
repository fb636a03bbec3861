"""Layer builders shared by the CIFAR model zoo.

Every builder reproduces a PyTorch convention of the RepDistiller reference
(symmetric `k // 2` padding, BatchNorm epsilon 1e-5 and momentum 0.1, Kaiming
fan-out initialization) so that converted checkpoints give the same outputs.
"""

import keras

BN_EPSILON = 1e-5
BN_MOMENTUM = 0.9  # Keras weight of the old value; PyTorch momentum 0.1.


def conv_initializer():
    """Kaiming-normal, fan-out initializer used by the reference for convs."""
    return keras.initializers.VarianceScaling(
        scale=2.0, mode="fan_out", distribution="untruncated_normal"
    )


def conv2d(x, filters, kernel_size, stride=1, groups=1, use_bias=False, name=None):
    """A convolution padded symmetrically by `kernel_size // 2`, as PyTorch pads.

    Keras `padding="same"` pads asymmetrically for strided convolutions, which
    shifts the sampling grid by one pixel relative to PyTorch. An explicit
    `ZeroPadding2D` followed by a `"valid"` convolution reproduces PyTorch.

    Args:
        x: Input tensor, NHWC.
        filters: Number of output channels.
        kernel_size: Square kernel size.
        stride: Convolution stride.
        groups: Number of channel groups.
        use_bias: Whether the convolution has a bias.
        name: Layer name (the PyTorch module path, so weights convert by name).

    Returns:
        The output tensor.
    """
    pad = kernel_size // 2
    if pad and stride > 1:
        x = keras.layers.ZeroPadding2D(pad, name=f"{name}.pad" if name else None)(x)
        padding = "valid"
    else:
        padding = "same"
    return keras.layers.Conv2D(
        filters,
        kernel_size,
        strides=stride,
        padding=padding,
        groups=groups,
        use_bias=use_bias,
        kernel_initializer=conv_initializer(),
        name=name,
    )(x)


def batch_norm(x, name=None):
    """BatchNormalization with PyTorch's epsilon and momentum.

    Args:
        x: Input tensor, NHWC.
        name: Layer name.

    Returns:
        The normalized tensor.
    """
    return keras.layers.BatchNormalization(
        epsilon=BN_EPSILON, momentum=BN_MOMENTUM, name=name
    )(x)


def relu(x, name=None):
    """A named ReLU activation layer."""
    return keras.layers.ReLU(name=name)(x)


def classifier(x, num_classes, name):
    """Global average pooling (tap `pooled`) followed by the linear classifier.

    Args:
        x: The last feature map, NHWC.
        num_classes: Number of output classes.
        name: Name of the Dense layer (the PyTorch module name).

    Returns:
        The logits tensor.
    """
    pooled = keras.layers.GlobalAveragePooling2D(name="pooled")(x)
    return keras.layers.Dense(
        num_classes,
        kernel_initializer=keras.initializers.VarianceScaling(
            scale=1.0 / 3.0, mode="fan_in", distribution="uniform"
        ),
        name=name,
    )(pooled)
