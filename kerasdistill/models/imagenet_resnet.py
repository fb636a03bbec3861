"""ImageNet ResNets of torchvision: ResNet-18, ResNet-34 and ResNet-50.

The architecture of `torchvision.models.resnet18/34/50` (ResNet v1.5: a
bottleneck strides in its 3x3 convolution): a 7x7 stride-2 stem with 64
channels, BatchNorm, ReLU and a 3x3 stride-2 max-pool, then four stages of
basic blocks (ResNet-18: 2, 2, 2, 2; ResNet-34: 3, 4, 6, 3) or bottlenecks
(ResNet-50: 3, 4, 6, 3) with widths 64, 128, 256 and 512 (bottleneck outputs
4x that), global average pooling and a linear classifier. A 224x224 input
gives feature maps of 112 (stem), 56, 28, 14 and 7 pixels. Trainable
parameters with 1000 classes: 11,689,512, 21,797,672 and 25,557,032, as
torchvision's model cards state.

Layer names are torchvision's module paths with `.` replaced by `_`
(`layer1_0_conv1`, `layer2_0_downsample_0`, `fc`, ...), so its published state
dicts load by name (`kerasdistill.models.from_torchvision_checkpoint`). The zoo names are
"ResNet18", "ResNet34" and "ResNet50_imagenet" ("ResNet50" is the CIFAR
ResNet-50 of RepDistiller).

Feature taps: `feat_0` (stem after BN-ReLU, before the max-pool),
`feat_1`..`feat_4` (stage outputs after the last ReLU), `preact_1`..`preact_4`
(the residual sums before it), `pooled` and the logits (model output). These
are the `feats` and `preact_feats` of mdistiller's ImageNet ResNet.
"""

import functools

import keras

from kerasdistill.models import layers as L
from kerasdistill.models.registry import register
from kerasdistill.models.resnet50 import bottleneck
from kerasdistill.models.resnet_cifar import _basic_block

STEM_FILTERS = 64


_BLOCKS = {
    "basic": _basic_block,
    "bottleneck": functools.partial(bottleneck, shortcut_name="downsample"),
}


def _max_pool(x):
    # torchvision's MaxPool2d(3, 2, padding=1) pads with -inf; the input is a
    # ReLU output (>= 0) and every window holds real pixels, so zero padding
    # followed by a "valid" pool gives the same maxima on the same grid (Keras
    # "same" would pad only the bottom/right and shift the grid).
    x = keras.layers.ZeroPadding2D(1, name="maxpool_pad")(x)
    return keras.layers.MaxPooling2D(3, 2, padding="valid", name="maxpool")(x)


def imagenet_resnet(block, num_blocks, num_classes=1000, input_shape=(224, 224, 3), name=None):
    """Builds a torchvision ImageNet ResNet.

    Args:
        block: `"basic"` (ResNet-18/34) or `"bottleneck"` (ResNet-50 and deeper).
        num_blocks: Number of blocks of each of the four stages.
        num_classes: Number of classes.
        input_shape: Input shape, NHWC without batch.
        name: Model name.

    Returns:
        A functional `keras.Model` mapping images (normalized like
        torchvision's: ImageNet mean and std) to logits.

    Raises:
        ValueError: If `block` is unknown or `num_blocks` does not hold four
            positive counts.
    """
    if block not in _BLOCKS:
        raise ValueError(f"Unknown ResNet block {block!r}; expected one of {sorted(_BLOCKS)}.")
    if len(num_blocks) != 4 or min(num_blocks) < 1:
        raise ValueError(
            f"num_blocks must hold four positive block counts, one per stage; got {num_blocks}."
        )
    make_block = _BLOCKS[block]
    inputs = keras.Input(input_shape, name="images")
    x = L.conv_bn(inputs, STEM_FILTERS, 7, 2, conv_name="conv1", bn_name="bn1", out_name="feat_0")
    x = _max_pool(x)
    for stage, blocks in enumerate(num_blocks, start=1):
        for i in range(blocks):
            last = i == blocks - 1
            x = make_block(
                x,
                STEM_FILTERS * 2 ** (stage - 1),
                stride=2 if i == 0 and stage > 1 else 1,
                name=f"layer{stage}_{i}",
                preact_name=f"preact_{stage}" if last else None,
                out_name=f"feat_{stage}" if last else None,
            )
    logits = L.classifier(x, num_classes, name="fc")
    return keras.Model(inputs, logits, name=name)


_SPECS = {
    "ResNet18": ("basic", (2, 2, 2, 2)),
    "ResNet34": ("basic", (3, 4, 6, 3)),
    "ResNet50_imagenet": ("bottleneck", (3, 4, 6, 3)),
}

for _name, (_block, _num_blocks) in _SPECS.items():
    register(_name)(functools.partial(imagenet_resnet, _block, _num_blocks, name=_name))
