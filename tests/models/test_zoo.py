"""The model zoo against the RepDistiller reference: sizes, feature taps, errors."""

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


def test_tap_model_with_unknown_layer_lists_valid_names():
    model = models.get("wrn_16_1")
    with pytest.raises(ValueError, match=r"Tap 'feat_9' not found in model 'wrn_16_1'.*"
                       r"feature maps found: feat_0 \(32x32x16\).*preact_3.*pooled \(64\)"):
        models.tap_model(model, ["feat_0", "feat_9"])


def test_tap_model_returns_features_and_preact_taps_in_one_pass():
    model = models.get("wrn_16_1")
    tapped = models.tap_model(model, ["feat_3", "preact_3", "pooled"])
    images = np.random.default_rng(0).standard_normal((2, 32, 32, 3)).astype("float32")
    out = tapped(images, training=False)
    # WRN preact_3 is the final BN of feat_3; pooled is its ReLU, averaged.
    bn = model.get_layer("bn1")
    np.testing.assert_allclose(out["preact_3"], bn(out["feat_3"], training=False), atol=1e-5)
    np.testing.assert_allclose(
        out["pooled"], np.maximum(out["preact_3"], 0).mean(axis=(1, 2)), atol=1e-5
    )
    np.testing.assert_allclose(out["logits"], model(images, training=False), atol=1e-5)


@pytest.mark.parametrize(
    "name, layer", [("resnet8", "fc"), ("MobileNetV2", "classifier_0"), ("vit_tiny_p4", "head")]
)
def test_classifier_layer_is_the_dense_layer_giving_the_logits(name, layer):
    model = models.get(name, num_classes=10)
    found = models.classifier_layer(model)
    assert found is model.get_layer(layer)
    pooled = np.random.default_rng(0).normal(size=(2, found.kernel.shape[0])).astype("float32")
    kernel, bias = (np.asarray(w) for w in found.weights)
    np.testing.assert_allclose(np.asarray(found(pooled)), pooled @ kernel + bias, rtol=1e-5, atol=1e-6)


def test_classifier_layer_is_found_before_a_softmax_and_refused_without_dense():
    inputs = keras.Input((4,))
    dense = keras.layers.Dense(3)
    softmaxed = keras.Model(inputs, keras.layers.Softmax()(dense(inputs)), name="softmaxed")
    assert models.classifier_layer(softmaxed) is dense
    images = keras.Input((8, 8, 3))
    conv_head = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(3, 1)(images))
    with pytest.raises(ValueError, match="does not end in a Dense classifier layer"):
        models.classifier_layer(keras.Model(images, conv_head, name="conv_head"))


@pytest.mark.parametrize("name", ["MobileNetV2", "ShuffleV2", "wrn_16_2", "resnet8x4", "vit_mini_p4"])
def test_pre_pool_tap_is_the_map_that_feeds_the_classifier(name):
    model = models.get(name, num_classes=10)
    taps = models.tap_model(model, ["pre_pool", "pooled", "feat_last"])
    images = np.random.default_rng(1).normal(size=(2, 32, 32, 3)).astype("float32")
    out = {k: keras.ops.convert_to_numpy(v) for k, v in taps(images, training=False).items()}
    assert out["pre_pool"].shape[-1] == models.classifier_layer(model).kernel.shape[0]
    np.testing.assert_allclose(out["pre_pool"].mean(axis=(1, 2)), out["pooled"], rtol=1e-4, atol=1e-5)
    widened = name in ("MobileNetV2", "ShuffleV2")  # a 1x1 conv widens the last stage map
    assert (out["pre_pool"].shape != out["feat_last"].shape) == widened


def test_pre_pool_tap_needs_a_map_to_pool():
    inputs = keras.Input((8,))
    model = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.Dense(4)(inputs)), name="mlp")
    with pytest.raises(ValueError, match="Tap 'pre_pool' not found in model 'mlp'.*feature maps "
                                         "found: none"):
        models.resolve_taps(model, ["pre_pool"])
