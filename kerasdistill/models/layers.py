"""Layer builders shared by the CIFAR model zoo.

Every builder reproduces a PyTorch convention of the RepDistiller reference
(symmetric `k // 2` padding, BatchNorm epsilon 1e-5 and momentum 0.1, Kaiming
fan-out initialization) so that converted checkpoints give the same outputs.
"""

import keras

from kerasdistill.models.initializers import torch_kernel_initializer

BN_EPSILON = 1e-5
BN_MOMENTUM = 0.9  # Keras weight of the old value; PyTorch momentum 0.1.


def conv_initializer():
    """Kaiming-normal, fan-out initializer used by the reference for convs.

    Returns:
        A `keras.initializers.VarianceScaling` instance.
    """
    return keras.initializers.VarianceScaling(
        scale=2.0, mode="fan_out", distribution="untruncated_normal"
    )


def _pytorch_padding(x, kernel_size, stride, name):
    """Pads `x` like PyTorch's `padding=kernel_size // 2`.

    Returns the (possibly zero-padded) tensor and the Keras `padding` argument
    for the layer that follows: `"same"` is symmetric for stride 1 and odd
    kernels; strided layers get an explicit `ZeroPadding2D` and `"valid"`.
    """
    pad = kernel_size // 2
    if pad and stride > 1:
        x = keras.layers.ZeroPadding2D(pad, name=f"{name}_pad" if name else None)(x)
        return x, "valid"
    return x, "same"


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
        name: Layer name (the PyTorch module path with `.` replaced by `_`,
            so weights convert by name; a stride-2 conv's padding layer is
            `{name}_pad`).

    Returns:
        The output tensor.
    """
    x, padding = _pytorch_padding(x, kernel_size, stride, name)
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
    """A named ReLU activation layer.

    Args:
        x: Input tensor.
        name: Layer name, or `None` for an automatic one.

    Returns:
        The activated tensor.
    """
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
        kernel_initializer=torch_kernel_initializer(),
        name=name,
    )(pooled)


def depthwise_conv2d(x, kernel_size, stride=1, name=None):
    """A depthwise convolution (PyTorch `groups == in == out channels`).

    Padded like `conv2d`. The Keras kernel has shape `[kh, kw, C, 1]`.

    Args:
        x: Input tensor, NHWC.
        kernel_size: Square kernel size.
        stride: Convolution stride.
        name: Layer name (the PyTorch module path with `.` replaced by `_`).

    Returns:
        The output tensor, with as many channels as `x`.
    """
    x, padding = _pytorch_padding(x, kernel_size, stride, name)
    return keras.layers.DepthwiseConv2D(
        kernel_size,
        strides=stride,
        padding=padding,
        use_bias=False,
        # PyTorch's fan-out of a [C, 1, kh, kw] kernel is C * kh * kw, which is
        # the Keras fan-in of the [kh, kw, C, 1] kernel.
        depthwise_initializer=keras.initializers.VarianceScaling(
            scale=2.0, mode="fan_in", distribution="untruncated_normal"
        ),
        name=name,
    )(x)


def conv_bn(x, filters, kernel_size, stride=1, groups=1, use_bias=False, activate=True,
            conv_name=None, bn_name=None, out_name=None):
    """Convolution, BatchNorm and (optionally) ReLU.

    Args:
        x: Input tensor, NHWC.
        filters: Number of output channels, or `None` for a depthwise
            convolution (see `depthwise_conv2d`).
        kernel_size: Square kernel size.
        stride: Convolution stride.
        groups: Number of channel groups of a regular convolution.
        use_bias: Whether the convolution has a bias.
        activate: Whether a ReLU follows the BatchNorm.
        conv_name: Name of the convolution layer.
        bn_name: Name of the BatchNorm layer.
        out_name: Name of the output: the ReLU, or, when `activate` is
            false, an identity tap after the BatchNorm (see `tap`).

    Returns:
        The output tensor.
    """
    if filters is None:
        x = depthwise_conv2d(x, kernel_size, stride, name=conv_name)
    else:
        x = conv2d(x, filters, kernel_size, stride, groups, use_bias, name=conv_name)
    x = batch_norm(x, name=bn_name)
    return relu(x, name=out_name) if activate else tap(x, out_name)


def tap(x, name):
    """Names a tensor with an identity layer, for a feature tap.

    Used where the natural layer keeps its PyTorch-derived name for weight conversion.

    Args:
        x: Any tensor.
        name: The tap name (`feat_0`, `preact_2`, ...), or `None` for no tap.

    Returns:
        `x` passed through a named `Identity` layer, or `x` itself if `name`
        is `None`.
    """
    return x if name is None else keras.layers.Identity(name=name)(x)


def avg_pool2d(x, pool_size, stride, name=None):
    """PyTorch `AvgPool2d(k, stride, padding=k // 2)` with `count_include_pad=True`.

    The padded zeros count in every window (each divides by `k * k`), which
    `ZeroPadding2D` followed by a `"valid"` average pool reproduces exactly.

    Args:
        x: Input tensor, NHWC.
        pool_size: Square window size.
        stride: Pooling stride.
        name: Name of the pooling layer (its padding layer is `{name}_pad`).

    Returns:
        The pooled tensor.
    """
    pad = pool_size // 2
    if pad:
        x = keras.layers.ZeroPadding2D(pad, name=f"{name}_pad" if name else None)(x)
    return keras.layers.AveragePooling2D(pool_size, stride, padding="valid", name=name)(x)


@keras.saving.register_keras_serializable(package="kerasdistill")
class ChannelShuffle(keras.layers.Layer):
    """ShuffleNet channel shuffle of an NHWC tensor.

    Output channel `o` takes input channel `(o % g) * (C // g) + o // g`, as
    PyTorch's `view(N, g, C/g, H, W).permute(0, 2, 1, 3, 4)` does.

    Args:
        groups: Number of groups `g`; must divide the channel count.
        **kwargs: Base `Layer` arguments (`name`, ...).
    """

    def __init__(self, groups, **kwargs):
        super().__init__(**kwargs)
        self.groups = groups

    def build(self, input_shape):
        if input_shape[-1] % self.groups:
            raise ValueError(
                f"ChannelShuffle: {input_shape[-1]} channels are not divisible "
                f"by groups={self.groups}."
            )

    def call(self, inputs):
        shape = keras.ops.shape(inputs)
        channels = inputs.shape[-1]
        x = keras.ops.reshape(
            inputs, (-1, shape[1], shape[2], self.groups, channels // self.groups)
        )
        x = keras.ops.transpose(x, (0, 1, 2, 4, 3))
        return keras.ops.reshape(x, (-1, shape[1], shape[2], channels))

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "groups": self.groups}


@keras.saving.register_keras_serializable(package="kerasdistill")
class ChannelSlice(keras.layers.Layer):
    """Channels `[start, stop)` of an NHWC tensor (PyTorch `x[:, start:stop]`).

    Args:
        start: First channel.
        stop: One past the last channel.
        **kwargs: Base `Layer` arguments (`name`, ...).
    """

    def __init__(self, start, stop, **kwargs):
        super().__init__(**kwargs)
        self.start = start
        self.stop = stop

    def call(self, inputs):
        return inputs[..., self.start : self.stop]

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.stop - self.start)

    def get_config(self):
        return {**super().get_config(), "start": self.start, "stop": self.stop}
