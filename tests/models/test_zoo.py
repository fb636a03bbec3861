"""The model zoo against the RepDistiller reference: sizes, feature map shapes, errors."""

import json

import keras
import numpy as np
import pytest

from kerasdistill import models
from tests.conftest import FIXTURES, require

ZOO = [
    "resnet8", "resnet14", "resnet20", "resnet32", "resnet44", "resnet56", "resnet110",
    "resnet8x4", "resnet32x4", "ResNet50",
    "wrn_16_1", "wrn_16_2", "wrn_40_1", "wrn_40_2",
    "vgg8", "vgg11", "vgg13", "vgg16", "vgg19",
    "MobileNetV2", "ShuffleV1", "ShuffleV2",
]  # fmt: skip


def _reference():
    path = require(FIXTURES / "repdistiller_models.json")
    return json.loads(path.read_text())["models"]


def _size(variables):
    return sum(int(np.prod(v.shape)) for v in variables)


def _nhwc(shape):
    return tuple(shape[1:] + shape[:1]) if len(shape) == 3 else tuple(shape)


def _output_shape(model, layer_name):
    return tuple(model.get_layer(layer_name).output.shape[1:])


def test_registry_holds_every_reference_model():
    assert sorted(_reference()) == sorted(ZOO)
    assert set(ZOO) <= set(models.available())


@pytest.mark.parametrize("name", ZOO)
def test_model_matches_reference_sizes_and_feature_shapes(name):
    ref = _reference()[name]
    model = models.get(name, num_classes=100)
    bn_layers = [
        layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)
    ]

    assert _size(model.trainable_weights) == ref["trainable_params"]
    assert len(bn_layers) == ref["bn_layers"]
    moving = [v for layer in bn_layers for v in (layer.moving_mean, layer.moving_variance)]
    assert _size(moving) == ref["bn_running_stat_elements"]
    assert _size(model.non_trainable_weights) == ref["bn_running_stat_elements"]

    expected = [_nhwc(shape) for shape in ref["feat_shapes"]]
    taps = [f"feat_{k}" for k in range(len(expected) - 1)] + ["pooled"]
    assert [_output_shape(model, tap) for tap in taps] == expected
    assert tuple(model.output.shape) == (None, 100)

    differs = ref["preact_feat_differs_from_feat"]
    preact = {layer.name for layer in model.layers if layer.name.startswith("preact_")}
    assert preact == {f"preact_{k}" for k, flag in enumerate(differs) if flag}
    for k in sorted(int(tap.split("_")[1]) for tap in preact):
        assert _output_shape(model, f"preact_{k}") == expected[k]


def test_unknown_model_name_lists_available_models():
    with pytest.raises(ValueError, match=r"Unknown model 'wrn_28_10'.*ShuffleV2.*wrn_40_2"):
        models.get("wrn_28_10")
