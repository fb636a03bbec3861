"""The Distiller on models the project did not write: keras.applications, KerasHub,
Sequential and subclassed models (random weights, small inputs)."""

import keras
import keras_hub
import numpy as np
import pytest

import kerasdistill
from kerasdistill import methods, models, taps

NUM_CLASSES = 10


def _data(size, n=8, seed=0):
    rng = np.random.default_rng(seed)
    images = rng.uniform(0, 255, size=(n, size, size, 3)).astype("float32")
    return images, rng.integers(0, NUM_CLASSES, n)


def _train_and_check(distiller, size, steps=2):
    """Fits a few steps; the student's weights change and stay finite, the teacher's do not."""
    student, teacher = distiller.student, distiller.teacher
    before = [keras.ops.convert_to_numpy(w).copy() for w in student.trainable_weights]
    teacher_before = [keras.ops.convert_to_numpy(w).copy() for w in teacher.weights]
    x, y = _data(size, n=4 * steps)
    distiller.compile(optimizer=keras.optimizers.SGD(0.01))
    history = distiller.fit(x, y, batch_size=4, epochs=1, verbose=0).history
    after = [keras.ops.convert_to_numpy(w) for w in student.trainable_weights]
    assert all(np.isfinite(w).all() for w in after)
    assert any(not np.array_equal(b, a) for b, a in zip(before, after))
    for b, w in zip(teacher_before, teacher.weights):
        np.testing.assert_array_equal(b, keras.ops.convert_to_numpy(w))
    assert all(np.isfinite(v[-1]) for v in history.values())
    return history


def _resnet50(size=64):
    return keras.applications.ResNet50(weights=None, input_shape=(size, size, 3), classes=NUM_CLASSES)


def _mobilenet_v3(size=64, **kwargs):
    return keras.applications.MobileNetV3Small(
        weights=None, input_shape=(size, size, 3), classes=NUM_CLASSES, **kwargs
    )


def _hub_resnet(size=32):
    backbone = keras_hub.models.ResNetBackbone(
        input_conv_filters=[64], input_conv_kernel_sizes=[3], stackwise_num_filters=[64, 64],
        stackwise_num_blocks=[1, 1], stackwise_num_strides=[1, 2], block_type="basic_block",
        use_pre_activation=False, image_shape=(size, size, 3),
    )
    return keras_hub.models.ResNetImageClassifier(backbone=backbone, num_classes=NUM_CLASSES)


def _hub_vit(size=32):
    backbone = keras_hub.models.ViTBackbone(
        image_shape=(size, size, 3), patch_size=8, num_layers=2, num_heads=2, hidden_dim=32,
        mlp_dim=64,
    )
    return keras_hub.models.ViTImageClassifier(backbone=backbone, num_classes=NUM_CLASSES)


def _sequential():
    return keras.Sequential([
        keras.layers.Rescaling(1 / 255),
        keras.layers.Conv2D(8, 3, padding="same", activation="relu"),
        keras.layers.MaxPooling2D(),
        keras.layers.Conv2D(16, 3, padding="same", activation="relu"),
        keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(NUM_CLASSES),
    ])


class _Subclassed(keras.Model):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.conv = keras.layers.Conv2D(8, 3, strides=2, activation="relu")
        self.pool = keras.layers.GlobalAveragePooling2D()
        self.head = keras.layers.Dense(NUM_CLASSES)

    def call(self, x):
        return self.head(self.pool(self.conv(x / 255.0)))


def test_applications_taps_are_the_maps_a_person_would_pick():
    resnet = taps.resolve_taps(_resnet50(), ["feat_0", "feat_1", "feat_last", "pre_pool", "pooled"])
    assert resnet == {
        "feat_0": "conv1_relu", "feat_1": "conv2_block3_out", "feat_last": "conv5_block3_out",
        "pre_pool": "conv5_block3_out", "pooled": "avg_pool",
    }


# What each tap reads in keras.applications at 64 px (the release notes' table).
_APPLICATION_TAPS = {
    "ResNet50": {
        "feat_0": "conv1_relu", "feat_1": "conv2_block3_out", "feat_2": "conv3_block4_out",
        "feat_3": "conv4_block6_out", "feat_4": "conv5_block3_out",
        "feat_last": "conv5_block3_out", "pre_pool": "conv5_block3_out",
    },
    # Inverted residuals: the block outputs; pre_pool the widened map the pooling reads.
    "MobileNetV3Small": {
        "feat_2": "expanded_conv_2_add", "feat_last": "expanded_conv_10_add",
    },
    "EfficientNetB0": {
        "feat_0": "block1a_project_bn", "feat_1": "block2b_add", "feat_2": "block3b_add",
        "feat_3": "block5c_add", "feat_4": "block7a_project_bn",
        "feat_last": "block7a_project_bn", "pre_pool": "top_activation",
    },
    "MobileNetV2": {"feat_last": "block_16_project_BN", "pre_pool": "out_relu"},
    "MobileNet": {"feat_last": "conv_pw_13_relu", "pre_pool": "conv_pw_13_relu"},
    "VGG16": {"feat_last": "block5_pool", "pre_pool": "block5_pool", "pooled": "flatten"},
    "DenseNet121": {"feat_last": "relu", "pre_pool": "relu"},
}  # fmt: skip


@pytest.mark.integration
@pytest.mark.parametrize("name", sorted(_APPLICATION_TAPS))
def test_each_tap_of_an_application_reads_the_layer_of_the_release_notes(name):
    model = getattr(keras.applications, name)(
        weights=None, input_shape=(64, 64, 3), classes=NUM_CLASSES
    )
    expected = _APPLICATION_TAPS[name]
    assert taps.resolve_taps(model, list(expected)) == expected
    if name == "MobileNetV3Small":
        # pre_pool: the hard-swish after the 1x1 widening of the last block output.
        tapped = taps.tap_model(model, ["feat_last", "pre_pool"])
        assert tapped.output["feat_last"].shape[1:] == (2, 2, 96)
        assert tapped.output["pre_pool"].shape[1:] == (2, 2, 576)


def test_softmax_head_is_read_before_the_softmax():
    model = _resnet50()
    x, _ = _data(64, n=3)
    tapped = taps.tap_model(model, ["pooled"])
    assert tapped.softmax_layer == "predictions"
    out = tapped(x, training=False)
    dense = model.get_layer("predictions")
    out = {k: keras.ops.convert_to_numpy(v) for k, v in out.items()}
    kernel, bias = (keras.ops.convert_to_numpy(w) for w in (dense.kernel, dense.bias))
    np.testing.assert_allclose(out["logits"], out["pooled"] @ kernel + bias, rtol=1e-4, atol=1e-4)
    probabilities = keras.ops.convert_to_numpy(model(x, training=False))
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(keras.ops.softmax(out["logits"])), probabilities, rtol=1e-4, atol=1e-6
    )
    # MobileNetV3 ends in Activation("softmax") after its 1x1-conv classifier and a flatten.
    assert taps.tap_model(_mobilenet_v3(), []).softmax_layer == "predictions"


@pytest.mark.integration
def test_resnet50_teacher_to_mobilenet_v3_student_with_kd_and_msdcrd(caplog):
    teacher, student = _resnet50(), _mobilenet_v3(classifier_activation=None)
    with caplog.at_level("INFO", logger="kerasdistill"):
        distiller = kerasdistill.Distiller(teacher, student, methods="kd,msdcrd", ce_weight=0.1)
    assert "The teacher ends in a softmax (predictions)" in caplog.text
    assert "Distiller taps:" in caplog.text
    assert distiller.tap_layers["teacher"]["feat_last"] == "conv5_block3_out"
    assert distiller.tap_layers["student"]["feat_last"] == "expanded_conv_10_add"
    msdcrd = distiller.methods[1]
    # 2x2 maps at 64 px: grids 1 and 2.
    assert [w.regions for w in msdcrd._plan[0].student.windows] == [(1, 1), (2, 2)]
    history = _train_and_check(distiller, 64)
    assert {"loss_kd", "loss_msd_sw", "loss_msd_fw"} <= set(history)


def test_keras_hub_classifiers_taps_are_found_in_their_nested_backbones():
    pair = taps.FeaturePair(_hub_resnet(), _hub_vit(), ["feat_last"], ["feat_last"])
    assert pair.tap_layers["teacher"]["feat_last"] == "res_net_backbone/stack1_block0_out"
    # The ViT's patch tokens (16 of 17: the class token dropped) as a 4x4 map.
    assert pair.tap_layers["student"]["feat_last"] == "vi_t_backbone/vit_encoder (tokens as a grid)"
    assert pair.student_shapes["feat_last"] == (None, 4, 4, 32)


@pytest.mark.integration
def test_keras_hub_classifiers_as_teacher_and_student():
    distiller = kerasdistill.Distiller(_hub_resnet(), _hub_vit(), ["kd", "msdcrd"])
    _train_and_check(distiller, 32)


def test_sequential_student_without_input_is_built_from_the_teacher():
    teacher = models.get("resnet8", num_classes=NUM_CLASSES)
    distiller = kerasdistill.Distiller(teacher, _sequential(), [methods.KD(), methods.MSDCRD()])
    assert distiller.tap_layers["student"]["feat_last"] == "conv2d_1"
    _train_and_check(distiller, 32)


def test_subclassed_student_trains_with_kd_and_says_how_to_expose_maps():
    teacher = models.get("resnet8", num_classes=NUM_CLASSES)
    distiller = kerasdistill.Distiller(teacher, _Subclassed(), "kd")
    _train_and_check(distiller, 32)
    with pytest.raises(ValueError, match="needs a feature map, but model .* is a subclassed keras"
                                         r".Model .* build it as a functional model"):
        kerasdistill.Distiller(teacher, _Subclassed(), "msdcrd")
    with pytest.raises(ValueError, match=r"is a subclassed keras.Model .*\(The default methods "
                                         r"read feature maps \(MSDCRD\); for models without them "
                                         r"pass methods='kd'.\)$"):
        kerasdistill.Distiller(teacher, _Subclassed())


def test_predict_call_and_evaluate_see_the_students_logits():
    teacher, student = models.get("resnet8", num_classes=NUM_CLASSES), _sequential()
    distiller = kerasdistill.Distiller(teacher, student, "kd")
    distiller.compile(optimizer="sgd", metrics=["accuracy"])
    x, y = _data(32)
    predicted = distiller.predict(x, verbose=0)
    assert isinstance(predicted, np.ndarray) and predicted.shape == (8, NUM_CLASSES)
    np.testing.assert_allclose(predicted, student.predict(x, verbose=0), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(distiller(x)), predicted, rtol=1e-5, atol=1e-5
    )
    logs = distiller.evaluate(x, y, verbose=0, return_dict=True)
    log_p = predicted - np.log(np.exp(predicted).sum(-1, keepdims=True))
    np.testing.assert_allclose(logs["loss"], -log_p[np.arange(8), y].mean(), rtol=1e-4)


# Inputs the smallest applications accept; the Inception family needs 75 px.
_APPLICATION_SIZE = {"InceptionV3": 75, "InceptionResNetV2": 75, "Xception": 75}


@pytest.mark.integration
@pytest.mark.parametrize(
    "name", sorted(n for n in dir(keras.applications) if n[0].isupper())
)
def test_every_application_has_logits_before_its_softmax_and_its_maps_found(name):
    size = _APPLICATION_SIZE.get(name, 64)
    model = getattr(keras.applications, name)(
        weights=None, input_shape=(size, size, 3), classes=NUM_CLASSES
    )
    tapped = taps.tap_model(model, ["pre_pool", "pooled", "feat_last", "feat_0"])
    assert tapped.softmax_layer is not None
    x = np.random.default_rng(0).uniform(0, 255, (2, size, size, 3)).astype("float32")
    out = {k: keras.ops.convert_to_numpy(v) for k, v in tapped(x, training=False).items()}
    probabilities = keras.ops.convert_to_numpy(model(x, training=False))
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(keras.ops.softmax(out["logits"])), probabilities, atol=1e-5
    )
    # pre_pool is the map the pooling (VGG: the flatten) reduces; stage maps shrink.
    pre_pool = out["pre_pool"]
    assert pre_pool.ndim == 4
    assert out["pooled"].shape[1] == (pre_pool[0].size if name.startswith("VGG") else pre_pool.shape[-1])
    assert out["feat_0"].shape[1] > out["feat_last"].shape[1] >= 1
    assert out["feat_last"].shape[1:3] == out["pre_pool"].shape[1:3]
    keras.backend.clear_session()
