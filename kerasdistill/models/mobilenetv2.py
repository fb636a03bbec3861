"""MobileNetV2 of the RepDistiller reference, registered as "MobileNetV2".

This is the reference's `mobile_half`: expansion 6, width multiplier 0.5,
**ReLU instead of ReLU6**, a 1x1 expansion conv even when the expansion is 1,
a stride-2 stem and a last 1x1 conv of 1280 channels (not scaled by a width
below 1). A block adds its input only when its stride is 1 and its input and
output widths match. Layer names follow the PyTorch module paths with `.`
replaced by `_` (`conv1_0`, `blocks_{s}_{b}_conv_{0,1,3,4,6,7}`, `conv2_0`,
`classifier_0`).

Feature taps: `feat_0` (stem, 16x16 for 32x32 inputs), `feat_1`..`feat_4`
(outputs of block groups 1, 2, 4 and 6), `pooled` (after `conv2`-BN-ReLU).
The reference ignores `preact`, so there are no `preact_k` taps.
"""

import functools

import keras

from kerasdistill.models import layers as L
from kerasdistill.models.registry import register

# (expansion or None for "the model's expansion", channels, blocks, stride).
_SETTINGS = (
    (1, 16, 1, 1),
    (None, 24, 2, 1),
    (None, 32, 3, 2),
    (None, 64, 4, 2),
    (None, 96, 3, 1),
    (None, 160, 3, 2),
    (None, 320, 1, 1),
)
# Block group index -> feature tap of its output.
_FEATURES = {1: "feat_1", 2: "feat_2", 4: "feat_3", 6: "feat_4"}


def _inverted_residual(x, out_channels, stride, expansion, name, out_name=None):
    in_channels = x.shape[-1]
    out = L.conv_bn(
        x, in_channels * expansion, 1, conv_name=f"{name}_conv_0", bn_name=f"{name}_conv_1"
    )
    out = L.conv_bn(out, None, 3, stride, conv_name=f"{name}_conv_3", bn_name=f"{name}_conv_4")
    residual = stride == 1 and in_channels == out_channels
    out = L.conv_bn(
        out,
        out_channels,
        1,
        activate=False,
        conv_name=f"{name}_conv_6",
        bn_name=f"{name}_conv_7",
        out_name=None if residual else out_name,
    )
    return keras.layers.Add(name=out_name)([x, out]) if residual else out


def mobilenet_v2(expansion=6, width=0.5, num_classes=100, input_shape=(32, 32, 3), name=None):
    """Builds the CIFAR MobileNetV2 of the reference.

    Args:
        expansion: Expansion factor `T` of all block groups but the first.
        width: Width multiplier of the stem and the blocks.
        num_classes: Number of classes.
        input_shape: Input shape, NHWC without batch.
        name: Model name.

    Returns:
        A functional `keras.Model` mapping images to logits.
    """
    inputs = keras.Input(input_shape, name="images")
    x = L.conv_bn(
        inputs, int(32 * width), 3, 2, conv_name="conv1_0", bn_name="conv1_1", out_name="feat_0"
    )
    for s, (t, channels, blocks, stride) in enumerate(_SETTINGS):
        for b in range(blocks):
            x = _inverted_residual(
                x,
                int(channels * width),
                stride if b == 0 else 1,
                expansion if t is None else t,
                name=f"blocks_{s}_{b}",
                out_name=_FEATURES.get(s) if b == blocks - 1 else None,
            )
    last_channels = int(1280 * width) if width > 1.0 else 1280
    x = L.conv_bn(x, last_channels, 1, conv_name="conv2_0", bn_name="conv2_1")
    logits = L.classifier(x, num_classes, name="classifier_0")
    return keras.Model(inputs, logits, name=name)


register("MobileNetV2")(functools.partial(mobilenet_v2, 6, 0.5, name="MobileNetV2"))
