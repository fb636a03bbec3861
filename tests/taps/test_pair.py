"""FeaturePair: the checks of a teacher and a student, their tapped models, shapes and logs."""

import keras
import numpy as np
import pytest

from kerasdistill.taps import LOGITS, FeaturePair

NUM_CLASSES = 4


def _convnet(name, size=16, classes=NUM_CLASSES, softmax=False):
    images = keras.Input((size, size, 3))
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="conv_a")(images)
    x = keras.layers.Conv2D(6, 3, strides=2, padding="same", activation="relu", name="conv_b")(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    logits = keras.layers.Dense(classes, activation="softmax" if softmax else None, name="fc")(x)
    return keras.Model(images, logits, name=name)


def _images(n=2, size=16):
    return np.random.default_rng(0).normal(size=(n, size, size, 3)).astype("float32")


def test_taps_shapes_and_layers_of_both_models():
    pair = FeaturePair(_convnet("t"), _convnet("s"), ["feat_last"], ["feat_last", "pooled"])
    assert pair.image_shape == (16, 16, 3)
    assert pair.num_classes == NUM_CLASSES
    assert pair.teacher_shapes == {"logits": (None, 4), "feat_last": (None, 8, 8, 6)}
    assert pair.student_shapes == {
        "logits": (None, 4), "feat_last": (None, 8, 8, 6), "pooled": (None, 6)
    }
    assert pair.tap_layers == {
        "teacher": {"logits": "logits", "feat_last": "conv_b"},
        "student": {"logits": "logits", "feat_last": "conv_b", "pooled": "pool"},
    }


def test_the_tapped_models_share_the_layers_and_compute_the_models_outputs():
    teacher, student = _convnet("t"), _convnet("s")
    pair = FeaturePair(teacher, student, [], ["feat_last"])
    images = _images()
    out = {k: keras.ops.convert_to_numpy(v) for k, v in pair.student(images).items()}
    np.testing.assert_allclose(out[LOGITS], student(images), rtol=1e-5, atol=1e-6)
    conv_b = keras.Model(student.input, student.get_layer("conv_b").output)
    np.testing.assert_allclose(out["feat_last"], conv_b(images), rtol=1e-5, atol=1e-6)
    teacher_out = pair.teacher(images)
    assert set(teacher_out) == {LOGITS}
    np.testing.assert_allclose(teacher_out[LOGITS], teacher(images), rtol=1e-5, atol=1e-6)
    assert {id(w) for w in pair.student_model.weights} == {id(w) for w in student.weights}


def test_the_teacher_runs_in_inference_mode_and_the_student_as_asked():
    def with_dropout(name):
        images = keras.Input((8,))
        return keras.Model(
            images, keras.layers.Dense(NUM_CLASSES)(keras.layers.Dropout(0.9)(images)), name=name
        )

    pair = FeaturePair(with_dropout("t"), with_dropout("s"), [], [])
    x = np.ones((64, 8), "float32")
    teacher_logits = keras.ops.convert_to_numpy(pair.teacher(x)[LOGITS])
    np.testing.assert_allclose(teacher_logits, teacher_logits[:1].repeat(64, axis=0), atol=1e-6)
    student_logits = keras.ops.convert_to_numpy(pair.student(x, training=True)[LOGITS])
    assert np.ptp(student_logits, axis=0).max() > 1e-3


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="a GradientTape")
def test_no_gradient_reaches_the_teacher_and_the_student_gets_one():
    import tensorflow as tf

    teacher, student = _convnet("t"), _convnet("s")
    pair = FeaturePair(teacher, student, ["feat_last"], ["feat_last"])
    images = tf.constant(_images())
    with tf.GradientTape(persistent=True) as tape:
        teacher_loss = sum(tf.reduce_sum(t) for t in pair.teacher(images).values())
        student_loss = sum(tf.reduce_sum(t) for t in pair.student(images).values())
    assert all(g is None for g in tape.gradient(teacher_loss, teacher.trainable_variables))
    assert all(g is not None for g in tape.gradient(student_loss, student.trainable_variables))


def test_layer_overrides_name_the_layer_a_tap_reads():
    pair = FeaturePair(
        _convnet("t"), _convnet("s"), ["feat_last"], ["feat_last"],
        teacher_layers={"feat_last": "conv_a"},
    )
    assert pair.tap_layers["teacher"]["feat_last"] == "conv_a"
    assert pair.teacher_shapes["feat_last"] == (None, 16, 16, 4)
    assert pair.tap_layers["student"]["feat_last"] == "conv_b"


def test_an_override_of_a_tap_no_method_reads_is_refused():
    with pytest.raises(ValueError, match=r"^student_layers names tap\(s\) \['pre_pool'\] that no "
                                         r"method reads; the taps read are \['feat_last', "
                                         r"'logits'\]\.$"):
        FeaturePair(
            _convnet("t"), _convnet("s"), [], ["feat_last"], student_layers={"pre_pool": "conv_a"}
        )


@pytest.mark.parametrize("bad, hint", [("resnet8", "load it first"), (None, "NoneType None.$")])
def test_a_non_model_is_refused_with_a_type_error(bad, hint):
    with pytest.raises(TypeError, match=f"^The student must be a keras.Model .*; got .*{hint}"):
        FeaturePair(_convnet("t"), bad, [], [])


def test_the_same_model_twice_is_refused():
    model = _convnet("net")
    with pytest.raises(ValueError, match="^The teacher and the student are the same model 'net'; "):
        FeaturePair(model, model, [], [])


def test_images_of_another_shape_are_refused():
    with pytest.raises(ValueError, match=r"^The teacher takes images of shape \(16, 16, 3\) and the "
                                         r"student \(8, 8, 3\); both must take the same images"):
        FeaturePair(_convnet("t"), _convnet("s", size=8), [], [])


def test_class_counts_that_differ_are_refused():
    with pytest.raises(ValueError, match=r"^The teacher predicts 4 classes and the student 3; .*"
                                         r"\(build the student with num_classes=4\)\.$"):
        FeaturePair(_convnet("t"), _convnet("s", classes=3), [], [])


def test_a_student_without_inputs_takes_the_teachers_image_shape():
    student = keras.Sequential([
        keras.layers.Conv2D(4, 3, strides=2, name="conv"),
        keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(NUM_CLASSES),
    ])
    pair = FeaturePair(_convnet("t"), student, [], ["feat_last"])
    assert pair.image_shape == (16, 16, 3)
    assert pair.student_shapes["feat_last"] == (None, 7, 7, 4)


def test_a_softmax_is_logged_as_a_warning_and_the_taps_as_info(caplog):
    with caplog.at_level("INFO", logger="kerasdistill"):
        pair = FeaturePair(_convnet("t", softmax=True), _convnet("s"), [], ["feat_last"])
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert warnings == [
        "The teacher ends in a softmax (fc); it is distilled from the logits before it."
    ]
    info = [r.getMessage() for r in caplog.records if r.levelname == "INFO"]
    assert info == [(
        "Distiller taps: teacher {'logits': 'logits'}; student {'logits': 'logits', "
        "'feat_last': 'conv_b'}."
    )]
    # The logits are the Dense layer's before its softmax.
    logits = keras.ops.convert_to_numpy(pair.teacher(_images())[LOGITS])
    assert not np.allclose(logits.sum(-1), 1.0)
