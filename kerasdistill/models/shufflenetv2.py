"""ShuffleNetV2 of the RepDistiller reference, registered as "ShuffleV2" (net_size 1).

A 1x1 stem (24 channels, no pooling), three stages of one down-sampling block
and 3, 7 and 3 basic blocks with 116, 232 and 464 channels, a 1x1 conv to 1024
channels, BN-ReLU and the classifier. Layer names follow the PyTorch module
paths with `.` replaced by `_` (`layer1_0_conv4`, `layer2_3_bn2`, `conv2`,
`linear`, ...).

- Down block: `concat[left, right]` then a channel shuffle (2 groups), with
  left = dw3x3/s2-BN, 1x1-BN-ReLU and right = 1x1-BN-ReLU, dw3x3/s2-BN,
  1x1-BN-ReLU, both on the input.
- Basic block: the input is split into halves `x1` (passed through) and `x2`
  (branch 1x1-BN-ReLU, dw3x3-BN, 1x1-BN-ReLU), then `concat[x1, branch]` is
  shuffled.

Feature taps: `feat_0` (stem), `feat_1`..`feat_3` (stage outputs, after the
last block's shuffle), `preact_1`..`preact_3`, `pooled`. The reference's
preact tensor is `concat[x1, branch before its last ReLU]`, before the
shuffle, so its channel order differs from `feat_k`. To keep that tensor on
the model's path, a basic block here computes `relu(concat[x1, branch before
ReLU])` instead of `concat[x1, relu(branch)]`. The two are identical because
`x1` is always a slice of ReLU outputs (every block ends in ReLU and shuffle),
so the extra ReLU leaves it unchanged, and gradients are unchanged too.
"""

import functools

import keras

from kerasdistill.models import layers as L
from kerasdistill.models.registry import register

_SHUFFLE_GROUPS = 2


def _down_block(x, out_channels, name):
    mid = out_channels // 2
    left = L.conv_bn(
        x, None, 3, 2, activate=False, conv_name=f"{name}_conv1", bn_name=f"{name}_bn1"
    )
    left = L.conv_bn(left, mid, 1, conv_name=f"{name}_conv2", bn_name=f"{name}_bn2")
    right = L.conv_bn(x, mid, 1, conv_name=f"{name}_conv3", bn_name=f"{name}_bn3")
    right = L.conv_bn(
        right, None, 3, 2, activate=False, conv_name=f"{name}_conv4", bn_name=f"{name}_bn4"
    )
    right = L.conv_bn(right, mid, 1, conv_name=f"{name}_conv5", bn_name=f"{name}_bn5")
    out = keras.layers.Concatenate(name=f"{name}_concat")([left, right])
    return L.ChannelShuffle(_SHUFFLE_GROUPS, name=f"{name}_shuffle")(out)


def _basic_block(x, name, preact_name=None, out_name=None):
    channels = x.shape[-1]
    half = channels // 2
    x1 = L.ChannelSlice(0, half, name=f"{name}_split_0")(x)
    x2 = L.ChannelSlice(half, channels, name=f"{name}_split_1")(x)
    out = L.conv_bn(x2, half, 1, conv_name=f"{name}_conv1", bn_name=f"{name}_bn1")
    out = L.conv_bn(
        out, None, 3, activate=False, conv_name=f"{name}_conv2", bn_name=f"{name}_bn2"
    )
    out = L.conv_bn(
        out, half, 1, activate=False, conv_name=f"{name}_conv3", bn_name=f"{name}_bn3"
    )
    preact = keras.layers.Concatenate(name=preact_name or f"{name}_concat")([x1, out])
    out = L.relu(preact, name=f"{name}_relu")
    return L.ChannelShuffle(_SHUFFLE_GROUPS, name=out_name or f"{name}_shuffle")(out)


def shufflenet_v2(out_channels=(116, 232, 464, 1024), num_blocks=(3, 7, 3),
                  num_classes=100, input_shape=(32, 32, 3), name=None):
    """Builds the CIFAR ShuffleNetV2 of the reference.

    Args:
        out_channels: Channels of the three stages and of the last 1x1 conv.
        num_blocks: Number of basic blocks of the three stages (each stage
            also has one down-sampling block).
        num_classes: Number of classes.
        input_shape: Input shape, NHWC without batch.
        name: Model name.

    Returns:
        A functional `keras.Model` mapping images to logits.
    """
    inputs = keras.Input(input_shape, name="images")
    x = L.conv_bn(inputs, 24, 1, conv_name="conv1", bn_name="bn1", out_name="feat_0")
    for stage, blocks in enumerate(num_blocks, start=1):
        x = _down_block(x, out_channels[stage - 1], name=f"layer{stage}_0")
        for i in range(1, blocks + 1):
            last = i == blocks
            x = _basic_block(
                x,
                name=f"layer{stage}_{i}",
                preact_name=f"preact_{stage}" if last else None,
                out_name=f"feat_{stage}" if last else None,
            )
    x = L.conv_bn(x, out_channels[3], 1, conv_name="conv2", bn_name="bn2")
    logits = L.classifier(x, num_classes, name="linear")
    return keras.Model(inputs, logits, name=name)


register("ShuffleV2")(functools.partial(shufflenet_v2, name="ShuffleV2"))
