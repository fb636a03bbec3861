"""Taps found in a model's graph: zoo names, stage maps, pre_pool, the classifier, errors."""

import keras
import numpy as np
import pytest

from kerasdistill import models
from kerasdistill.taps import classifier_layer, resolve_taps, tap_model


def test_tap_model_with_unknown_layer_lists_valid_names():
    model = models.get("wrn_16_1")
    with pytest.raises(ValueError, match=r"Tap 'feat_9' not found in model 'wrn_16_1'.*"
                       r"feature maps found: feat_0 \(32x32x16\).*preact_3.*pooled \(64\)"):
        tap_model(model, ["feat_0", "feat_9"])


def test_tap_model_returns_features_and_preact_taps_in_one_pass():
    model = models.get("wrn_16_1")
    tapped = tap_model(model, ["feat_3", "preact_3", "pooled"])
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
    found = classifier_layer(model)
    assert found is model.get_layer(layer)
    pooled = np.random.default_rng(0).normal(size=(2, found.kernel.shape[0])).astype("float32")
    kernel, bias = (np.asarray(w) for w in found.weights)
    np.testing.assert_allclose(np.asarray(found(pooled)), pooled @ kernel + bias, rtol=1e-5, atol=1e-6)


def test_classifier_layer_is_found_before_a_softmax_and_refused_without_dense():
    inputs = keras.Input((4,))
    dense = keras.layers.Dense(3)
    softmaxed = keras.Model(inputs, keras.layers.Softmax()(dense(inputs)), name="softmaxed")
    assert classifier_layer(softmaxed) is dense
    images = keras.Input((8, 8, 3))
    conv_head = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(3, 1)(images))
    with pytest.raises(ValueError, match="does not end in a Dense classifier layer"):
        classifier_layer(keras.Model(images, conv_head, name="conv_head"))


@pytest.mark.parametrize("name", ["MobileNetV2", "ShuffleV2", "wrn_16_2", "resnet8x4", "vit_mini_p4"])
def test_pre_pool_tap_is_the_map_that_feeds_the_classifier(name):
    model = models.get(name, num_classes=10)
    tapped = tap_model(model, ["pre_pool", "pooled", "feat_last"])
    images = np.random.default_rng(1).normal(size=(2, 32, 32, 3)).astype("float32")
    out = {k: keras.ops.convert_to_numpy(v) for k, v in tapped(images, training=False).items()}
    assert out["pre_pool"].shape[-1] == classifier_layer(model).kernel.shape[0]
    np.testing.assert_allclose(out["pre_pool"].mean(axis=(1, 2)), out["pooled"], rtol=1e-4, atol=1e-5)
    widened = name in ("MobileNetV2", "ShuffleV2")  # a 1x1 conv widens the last stage map
    assert (out["pre_pool"].shape != out["feat_last"].shape) == widened


def test_pre_pool_tap_needs_a_map_to_pool():
    inputs = keras.Input((8,))
    model = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.Dense(4)(inputs)), name="mlp")
    with pytest.raises(ValueError, match="Tap 'pre_pool' not found in model 'mlp'.*feature maps "
                                         "found: none"):
        resolve_taps(model, ["pre_pool"])
