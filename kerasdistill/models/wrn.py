"""Wide ResNets of the RepDistiller reference (wrn_16_1, wrn_16_2, wrn_40_1, wrn_40_2).

The network is pre-activation: each block starts with BN-ReLU and the stage
outputs are raw residual sums. Layer names follow the PyTorch module paths
with `.` replaced by `_` (`block2_layer_0_conv1`, `bn1`, `fc`, ...) so that
checkpoints convert by name.

Feature taps:

- `feat_0`: the raw stem convolution output (no BN, no ReLU).
- `feat_1`..`feat_3`: the raw residual sum of each stage.
- `preact_1`..`preact_3`: in preact mode the reference passes f1, f2 and f3
  through the *next* BatchNorm (`block2_layer_0_bn1`, `block3_layer_0_bn1`,
  the final `bn1`). That BatchNorm is already applied to the same tensor on
  the main path, so these taps are identity layers on its output, before the
  ReLU. The values equal the reference in inference and in training (same
  input, same batch statistics), but the moving statistics are updated once
  per step; the reference updates them a second time when it is asked for
  preact features in training mode. That double update is deliberately not
  reproduced.
- `pooled`: after the final BN-ReLU, globally average pooled.
"""

import functools

import keras

from kerasdistill.models import layers as L
from kerasdistill.models.registry import register


def _basic_block(x, out_planes, stride, name, bn1_tap=None, out_name=None):
    # The first block of a stage (in != out) feeds relu(bn1(x)) to both conv1
    # and the 1x1 shortcut; other blocks add the raw input.
    act = L.relu(L.tap(L.batch_norm(x, name=f"{name}_bn1"), bn1_tap))
    out = L.conv2d(act, out_planes, 3, stride, name=f"{name}_conv1")
    out = L.relu(L.batch_norm(out, name=f"{name}_bn2"))
    out = L.conv2d(out, out_planes, 3, 1, name=f"{name}_conv2")
    if x.shape[-1] == out_planes:
        shortcut = x
    else:
        shortcut = L.conv2d(act, out_planes, 1, stride, name=f"{name}_convShortcut")
    return keras.layers.Add(name=out_name)([shortcut, out])


def wide_resnet(depth, widen_factor, num_classes=100, input_shape=(32, 32, 3), name=None):
    """Builds a CIFAR Wide ResNet (no dropout, as in the reference).

    Args:
        depth: Network depth; `(depth - 4) % 6 == 0`.
        widen_factor: Channel multiplier `k` (stages have 16k, 32k, 64k channels).
        num_classes: Number of classes.
        input_shape: Input shape, NHWC without batch.
        name: Model name.

    Returns:
        A functional `keras.Model` mapping images to logits.
    """
    if (depth - 4) % 6 != 0:
        raise ValueError(f"WRN depth must be 6n+4 (16, 22, 28, 40, ...), got {depth}.")
    blocks = (depth - 4) // 6
    widths = (16 * widen_factor, 32 * widen_factor, 64 * widen_factor)
    inputs = keras.Input(input_shape, name="images")
    x = L.tap(L.conv2d(inputs, 16, 3, 1, name="conv1"), "feat_0")
    for stage in range(1, 4):
        for i in range(blocks):
            first, last = i == 0, i == blocks - 1
            x = _basic_block(
                x,
                widths[stage - 1],
                stride=2 if first and stage > 1 else 1,
                name=f"block{stage}_layer_{i}",
                bn1_tap=f"preact_{stage - 1}" if first and stage > 1 else None,
                out_name=f"feat_{stage}" if last else None,
            )
    x = L.relu(L.tap(L.batch_norm(x, name="bn1"), "preact_3"))
    logits = L.classifier(x, num_classes, name="fc")
    return keras.Model(inputs, logits, name=name)


_SPECS = {
    "wrn_16_1": (16, 1),
    "wrn_16_2": (16, 2),
    "wrn_40_1": (40, 1),
    "wrn_40_2": (40, 2),
}

for _name, (_depth, _k) in _SPECS.items():
    register(_name)(functools.partial(wide_resnet, _depth, _k, name=_name))
