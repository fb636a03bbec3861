"""ResNet50 of the RepDistiller reference (`resnetv2.py`), registered as "ResNet50".

This is the CIFAR variant of the bottleneck ResNet: a 3x3 stride-1 stem with
64 channels and no max-pool, then four stages of 3, 4, 6 and 3 bottlenecks
(1x1, 3x3 with the stage stride, 1x1 to 4x the width) with widths 64, 128,
256 and 512, so a 32x32 input ends at 2048x4x4. A projection shortcut (1x1
conv-BN) is used when the stride or width changes. Layer names follow the
PyTorch module paths with `.` replaced by `_` (`layer3_0_shortcut_0`,
`linear`, ...).

Feature taps: `feat_0` (stem after BN-ReLU), `feat_1`..`feat_4` (stage
outputs after the last ReLU), `preact_1`..`preact_4` (the residual sums
before it), `pooled`. The reference returns its preact features in a list
instead of a tuple; that has no Keras counterpart.
"""

import functools

import keras

from kerasdistill.models import layers as L
from kerasdistill.models.registry import register

EXPANSION = 4


def bottleneck(x, planes, stride, name, preact_name=None, out_name=None, shortcut_name="shortcut"):
    """A bottleneck residual block (1x1, 3x3, 1x1 convolutions, expansion 4).

    Args:
        x: Input tensor, NHWC.
        planes: Inner width; the output has `4 * planes` channels.
        stride: Stride of the 3x3 convolution and of the projection shortcut.
        name: Layer-name prefix (the PyTorch module path, `.` replaced by `_`).
        preact_name: Name of the addition (the block's pre-activation tap).
        out_name: Name of the final ReLU.
        shortcut_name: Module name of the projection shortcut: `"shortcut"`
            (RepDistiller) or `"downsample"` (torchvision).

    Returns:
        The output tensor.
    """
    out_planes = EXPANSION * planes
    out = L.conv_bn(x, planes, 1, conv_name=f"{name}_conv1", bn_name=f"{name}_bn1")
    out = L.conv_bn(out, planes, 3, stride, conv_name=f"{name}_conv2", bn_name=f"{name}_bn2")
    out = L.conv_bn(
        out, out_planes, 1, activate=False, conv_name=f"{name}_conv3", bn_name=f"{name}_bn3"
    )
    shortcut = x
    if stride != 1 or x.shape[-1] != out_planes:
        shortcut = L.conv_bn(
            x, out_planes, 1, stride, activate=False,
            conv_name=f"{name}_{shortcut_name}_0", bn_name=f"{name}_{shortcut_name}_1",
        )
    preact = keras.layers.Add(name=preact_name)([out, shortcut])
    return L.relu(preact, name=out_name)


def resnet_bottleneck(num_blocks, num_classes=100, input_shape=(32, 32, 3), name=None):
    """Builds a CIFAR bottleneck ResNet (`resnetv2.py` of the reference).

    Args:
        num_blocks: Number of bottlenecks of the four stages.
        num_classes: Number of classes.
        input_shape: Input shape, NHWC without batch.
        name: Model name.

    Returns:
        A functional `keras.Model` mapping images to logits.
    """
    inputs = keras.Input(input_shape, name="images")
    x = L.conv_bn(inputs, 64, 3, conv_name="conv1", bn_name="bn1", out_name="feat_0")
    for stage, blocks in enumerate(num_blocks, start=1):
        for i in range(blocks):
            last = i == blocks - 1
            x = bottleneck(
                x,
                64 * 2 ** (stage - 1),
                stride=2 if i == 0 and stage > 1 else 1,
                name=f"layer{stage}_{i}",
                preact_name=f"preact_{stage}" if last else None,
                out_name=f"feat_{stage}" if last else None,
            )
    logits = L.classifier(x, num_classes, name="linear")
    return keras.Model(inputs, logits, name=name)


register("ResNet50")(functools.partial(resnet_bottleneck, (3, 4, 6, 3), name="ResNet50"))
