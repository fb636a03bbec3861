"""CIFAR ResNets of the RepDistiller reference (resnet8 ... resnet110, x4 variants).

Layer names follow the PyTorch module paths with `.` replaced by `_`
(`layer1_0_conv1` for `layer1.0.conv1`, `fc`, ...) so that checkpoints convert
by name. Feature taps: `feat_0` (stem), `feat_1`..`feat_3` (stage outputs after
the last ReLU), `preact_1`..`preact_3` (the same before that ReLU), `pooled`
and the logits (model output).
"""

import keras

from kerasdistill.models import layers as L
from kerasdistill.models.registry import register


def _basic_block(x, planes, stride, name, preact_name=None, out_name=None):
    in_planes = x.shape[-1]
    out = L.conv2d(x, planes, 3, stride, name=f"{name}_conv1")
    out = L.relu(L.batch_norm(out, name=f"{name}_bn1"))
    out = L.conv2d(out, planes, 3, 1, name=f"{name}_conv2")
    out = L.batch_norm(out, name=f"{name}_bn2")
    shortcut = x
    if stride != 1 or in_planes != planes:
        shortcut = L.conv2d(x, planes, 1, stride, name=f"{name}_downsample_0")
        shortcut = L.batch_norm(shortcut, name=f"{name}_downsample_1")
    out = keras.layers.Add(name=preact_name)([out, shortcut])
    return L.relu(out, name=out_name)


def cifar_resnet(depth, filters, num_classes=100, input_shape=(32, 32, 3), name=None):
    """Builds a CIFAR ResNet with basic blocks.

    Args:
        depth: Network depth; `(depth - 2) % 6 == 0`.
        filters: Four channel counts: stem, stage 1, stage 2, stage 3.
        num_classes: Number of classes.
        input_shape: Input shape, NHWC without batch.
        name: Model name.

    Returns:
        A functional `keras.Model` mapping images to logits.
    """
    if (depth - 2) % 6 != 0:
        raise ValueError(f"ResNet depth must be 6n+2 (8, 14, 20, ...), got {depth}.")
    blocks = (depth - 2) // 6
    inputs = keras.Input(input_shape, name="images")
    x = L.conv2d(inputs, filters[0], 3, 1, name="conv1")
    x = L.relu(L.batch_norm(x, name="bn1"), name="feat_0")
    for stage in range(1, 4):
        stride = 1 if stage == 1 else 2
        for i in range(blocks):
            last = i == blocks - 1
            x = _basic_block(
                x,
                filters[stage],
                stride if i == 0 else 1,
                name=f"layer{stage}_{i}",
                preact_name=f"preact_{stage}" if last else None,
                out_name=f"feat_{stage}" if last else None,
            )
    logits = L.classifier(x, num_classes, name="fc")
    return keras.Model(inputs, logits, name=name)


_SPECS = {
    "resnet8": (8, (16, 16, 32, 64)),
    "resnet14": (14, (16, 16, 32, 64)),
    "resnet20": (20, (16, 16, 32, 64)),
    "resnet32": (32, (16, 16, 32, 64)),
    "resnet44": (44, (16, 16, 32, 64)),
    "resnet56": (56, (16, 16, 32, 64)),
    "resnet110": (110, (16, 16, 32, 64)),
    "resnet8x4": (8, (32, 64, 128, 256)),
    "resnet32x4": (32, (32, 64, 128, 256)),
}


def _make_builder(model_name, depth, filters):
    def build(num_classes=100, input_shape=(32, 32, 3)):
        return cifar_resnet(depth, filters, num_classes, input_shape, name=model_name)

    build.__doc__ = f"CIFAR {model_name}: depth {depth}, channels {filters}."
    return build


for _name, (_depth, _filters) in _SPECS.items():
    register(_name)(_make_builder(_name, _depth, _filters))
