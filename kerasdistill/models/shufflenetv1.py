"""ShuffleNetV1 of the RepDistiller reference, registered as "ShuffleV1" (groups 3).

Stages of 4, 8 and 4 bottlenecks with 240, 480 and 960 output channels after a
1x1 stem (no pooling, so the stem output stays 32x32). A bottleneck is a
grouped 1x1 conv-BN-ReLU, a channel shuffle, a depthwise 3x3 conv-BN-ReLU and
a grouped 1x1 conv-BN. The first block of a stage has stride 2 and
concatenates `[branch, avgpool(x)]`; the others add `x`; a ReLU follows. As in
the reference, a block whose input has 24 channels (the very first one) uses
one group in its first conv and no shuffle. Layer names follow the PyTorch
module paths with `.` replaced by `_` (`layer1_0_conv1`, `layer1_0_shortcut_0`,
`linear`, ...).

Feature taps: `feat_0` (stem), `feat_1`..`feat_3` (stage outputs after the
last ReLU), `preact_1`..`preact_3` (the same before it), `pooled`.
"""

import functools

import keras

from kerasdistill.models import layers as L
from kerasdistill.models.registry import register


def _bottleneck(x, out_planes, stride, groups, name, preact_name=None, out_name=None):
    first_groups = 1 if x.shape[-1] == 24 else groups
    mid_planes = out_planes // 4
    out = L.conv_bn(
        x, mid_planes, 1, groups=first_groups, conv_name=f"{name}_conv1", bn_name=f"{name}_bn1"
    )
    if first_groups > 1:
        out = L.ChannelShuffle(first_groups, name=f"{name}_shuffle1")(out)
    out = L.conv_bn(out, None, 3, stride, conv_name=f"{name}_conv2", bn_name=f"{name}_bn2")
    out = L.conv_bn(
        out, out_planes, 1, groups=groups, activate=False,
        conv_name=f"{name}_conv3", bn_name=f"{name}_bn3",
    )
    if stride == 2:
        shortcut = L.avg_pool2d(x, 3, 2, name=f"{name}_shortcut_0")
        preact = keras.layers.Concatenate(name=preact_name)([out, shortcut])
    else:
        preact = keras.layers.Add(name=preact_name)([out, x])
    return L.relu(preact, name=out_name)


def shufflenet_v1(out_planes=(240, 480, 960), num_blocks=(4, 8, 4), groups=3,
                  num_classes=100, input_shape=(32, 32, 3), name=None):
    """Builds the CIFAR ShuffleNetV1 of the reference.

    Args:
        out_planes: Output channels of the three stages.
        num_blocks: Number of bottlenecks of the three stages.
        groups: Groups of the 1x1 convolutions and of the channel shuffle.
        num_classes: Number of classes.
        input_shape: Input shape, NHWC without batch.
        name: Model name.

    Returns:
        A functional `keras.Model` mapping images to logits.
    """
    inputs = keras.Input(input_shape, name="images")
    x = L.conv_bn(inputs, 24, 1, conv_name="conv1", bn_name="bn1", out_name="feat_0")
    for stage, (planes, blocks) in enumerate(zip(out_planes, num_blocks), start=1):
        for i in range(blocks):
            last = i == blocks - 1
            x = _bottleneck(
                x,
                planes - x.shape[-1] if i == 0 else planes,
                stride=2 if i == 0 else 1,
                groups=groups,
                name=f"layer{stage}_{i}",
                preact_name=f"preact_{stage}" if last else None,
                out_name=f"feat_{stage}" if last else None,
            )
    logits = L.classifier(x, num_classes, name="linear")
    return keras.Model(inputs, logits, name=name)


register("ShuffleV1")(functools.partial(shufflenet_v1, name="ShuffleV1"))
