"""MobileNetV1 of mdistiller's ImageNet table (the ResNet-50 -> MobileNetV1 pair).

The architecture of mdistiller's `models/imagenet/mobilenetv1.py`, which is
Howard et al. (2017) at width 1.0: a 3x3 stride-2 convolution to 32 channels
(`conv_bn`), then 13 depthwise-separable blocks (`conv_dw`: 3x3 depthwise
conv-BN-ReLU, 1x1 conv-BN-ReLU) with output widths and strides

    64/1, 128/2, 128/1, 256/2, 256/1, 512/2, 5 x 512/1, 1024/2, 1024/1,

7x7 average pooling and a linear classifier. No convolution has a bias. A
224x224 input ends at 1024x7x7; the average pool is global here, which is the
same at 224 (mdistiller only runs 224).

Layer names are mdistiller's module paths with `.` replaced by `_`: the blocks
are the entries of the `model` Sequential (`model_0_0` is the stem conv
`model.0.0`, `model_3_4` the pointwise BN `model.3.4` of block 3) and the
classifier is `fc`, so its checkpoints load by name
(`kerasdistill.models.from_torchvision_checkpoint`).

Feature taps: `feat_0` (stem output, 112x112), `feat_1`..`feat_4` (outputs of
blocks 3, 5, 11 and 13: 56, 28, 14 and 7 pixels, 128, 256, 512 and 1024
channels), `preact_1`..`preact_4` (the same before their last ReLU: the
`feats` and `preact_feats` of mdistiller), `pooled` and the logits.

Initialization is the zoo's (Kaiming fan-out convolutions); mdistiller keeps
PyTorch's default initialization, which only matters when training from
scratch.
"""

import keras

from kerasdistill.models import layers as L
from kerasdistill.models.registry import register

STEM_FILTERS = 32
# (output channels, stride) of the depthwise-separable blocks `model_1` ... `model_13`.
BLOCKS = (
    (64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2),
    (512, 1), (512, 1), (512, 1), (512, 1), (512, 1), (1024, 2), (1024, 1),
)
# Index in `model` of the block ending each stage -> stage number (tap suffix).
STAGE_ENDS = {3: 1, 5: 2, 11: 3, 13: 4}


def _conv_dw(x, filters, stride, name, preact_name=None, out_name=None):
    x = L.conv_bn(x, None, 3, stride, conv_name=f"{name}_0", bn_name=f"{name}_1")
    x = L.conv_bn(
        x, filters, 1, activate=False,
        conv_name=f"{name}_3", bn_name=f"{name}_4", out_name=preact_name,
    )
    return L.relu(x, name=out_name)


def mobilenet_v1(num_classes=1000, input_shape=(224, 224, 3), name="MobileNetV1"):
    """Builds mdistiller's ImageNet MobileNetV1.

    Args:
        num_classes: Number of classes (mdistiller: 1000).
        input_shape: Input shape, NHWC without batch.
        name: Model name.

    Returns:
        A functional `keras.Model` mapping normalized images to logits.
    """
    inputs = keras.Input(input_shape, name="images")
    x = L.conv_bn(
        inputs, STEM_FILTERS, 3, 2, conv_name="model_0_0", bn_name="model_0_1", out_name="feat_0"
    )
    for index, (filters, stride) in enumerate(BLOCKS, start=1):
        stage = STAGE_ENDS.get(index)
        x = _conv_dw(
            x, filters, stride, name=f"model_{index}",
            preact_name=f"preact_{stage}" if stage else None,
            out_name=f"feat_{stage}" if stage else None,
        )
    logits = L.classifier(x, num_classes, name="fc")
    return keras.Model(inputs, logits, name=name)


register("MobileNetV1")(mobilenet_v1)
