"""VGG with BatchNorm of the RepDistiller reference (vgg8, vgg11, vgg13, vgg16, vgg19).

These are the reference's `vggN_bn` models: five blocks of 3x3 conv (with
bias) - BN - ReLU, where the last ReLU of each block is applied outside the
block, 2x2 max-pools between blocks and one linear classifier. Layer names
follow the PyTorch module paths with `.` replaced by `_` (`block{b}_{3i}` conv,
`block{b}_{3i+1}` BN, `classifier`).

Feature taps:

- `feat_0`..`feat_4`: each block's output after its last ReLU and *before*
  the following max-pool. As in the reference, `pool3` is applied only for
  64x64 inputs, so with 32x32 inputs `feat_3` and `feat_4` are both 4x4.
- `preact_1`..`preact_4`: the same outputs before that ReLU (the block's last
  BN). Block 0 has none: the reference returns the post-ReLU tensor.
- `pooled`: the globally average-pooled `feat_4`.
"""

import functools

import keras

from kerasdistill.models import layers as L
from kerasdistill.models.registry import register


def vgg(config, num_classes=100, input_shape=(32, 32, 3), name=None):
    """Builds a CIFAR VGG with BatchNorm.

    Args:
        config: Five lists of conv widths, one per block.
        num_classes: Number of classes.
        input_shape: Input shape, NHWC without batch.
        name: Model name.

    Returns:
        A functional `keras.Model` mapping images to logits.
    """
    if len(config) != 5:
        raise ValueError(f"VGG config needs 5 blocks, got {len(config)}.")
    inputs = keras.Input(input_shape, name="images")
    x = inputs
    for b, widths in enumerate(config):
        if b in (1, 2, 3) or (b == 4 and input_shape[0] == 64):
            x = keras.layers.MaxPooling2D(2, name=f"pool{b - 1}")(x)
        for i, width in enumerate(widths):
            x = L.conv_bn(
                x,
                width,
                3,
                use_bias=True,
                activate=i < len(widths) - 1,
                conv_name=f"block{b}_{3 * i}",
                bn_name=f"block{b}_{3 * i + 1}",
            )
        if b > 0:
            x = L.tap(x, f"preact_{b}")
        x = L.relu(x, name=f"feat_{b}")
    logits = L.classifier(x, num_classes, name="classifier")
    return keras.Model(inputs, logits, name=name)


_CONFIGS = {
    "vgg8": [[64], [128], [256], [512], [512]],
    "vgg11": [[64], [128], [256, 256], [512, 512], [512, 512]],
    "vgg13": [[64, 64], [128, 128], [256, 256], [512, 512], [512, 512]],
    "vgg16": [[64, 64], [128, 128], [256] * 3, [512] * 3, [512] * 3],
    "vgg19": [[64, 64], [128, 128], [256] * 4, [512] * 4, [512] * 4],
}

for _name, _config in _CONFIGS.items():
    register(_name)(functools.partial(vgg, _config, name=_name))
