import keras
import numpy as np
import pytest
import tensorflow as tf

from kerasdistill import methods
from kerasdistill.methods import AT
from kerasdistill.methods.at import attention_map

TAPS = ("feat_1", "feat_2", "feat_3")


def _maps(shapes, seed, dtype="float32"):
    rng = np.random.default_rng(seed)
    return {tap: rng.normal(size=shape).astype(dtype) for tap, shape in zip(TAPS, shapes)}


def _numpy_attention(f, p=2.0):
    a = np.mean(np.abs(f.astype("float64")) ** p, axis=-1).reshape(f.shape[0], -1)
    return a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)


def _numpy_pool(f, size):
    b, h, w, c = f.shape
    return f.reshape(b, size[0], h // size[0], size[1], w // size[1], c).mean(axis=(2, 4))


def _numpy_at_loss(student, teacher, p=2.0, weight=1000.0):
    total = 0.0
    for tap in TAPS:
        f_s, f_t = student[tap].astype("float64"), teacher[tap].astype("float64")
        if f_s.shape[1] > f_t.shape[1]:
            f_s = _numpy_pool(f_s, f_t.shape[1:3])
        elif f_s.shape[1] < f_t.shape[1]:
            f_t = _numpy_pool(f_t, f_s.shape[1:3])
        total += np.mean((_numpy_attention(f_s, p) - _numpy_attention(f_t, p)) ** 2)
    return weight * total


def test_loss_matches_numpy_with_different_channels():
    teacher = _maps([(3, 8, 8, 6), (3, 4, 4, 10), (3, 2, 2, 12)], 0)
    student = _maps([(3, 8, 8, 2), (3, 4, 4, 4), (3, 2, 2, 3)], 1)
    method = AT()
    method.build_from_taps({t: v.shape for t, v in teacher.items()},
                           {t: v.shape for t, v in student.items()})
    out = method(teacher, student, labels=None)
    assert set(out) == {"loss_at"} and out["loss_at"].dtype == "float32"
    np.testing.assert_allclose(float(out["loss_at"]), _numpy_at_loss(student, teacher), rtol=1e-5)


def test_general_p_and_weight():
    teacher = _maps([(2, 4, 4, 3)] * 3, 2)
    student = _maps([(2, 4, 4, 5)] * 3, 3)
    out = AT(p=4.0, weight=2.0)(teacher, student, labels=None)
    np.testing.assert_allclose(
        float(out["loss_at"]), _numpy_at_loss(student, teacher, p=4.0, weight=2.0), rtol=1e-5
    )


def test_attention_map_is_row_major_and_unit_norm():
    f = np.random.default_rng(4).normal(size=(2, 3, 5, 4)).astype("float32")
    a = np.asarray(attention_map(f))
    np.testing.assert_allclose(a, _numpy_attention(f), rtol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, rtol=1e-6)
    # An all-zero map stays finite (the norm is clamped as F.normalize does).
    assert np.all(np.asarray(attention_map(np.zeros((1, 2, 2, 3), "float32"))) == 0.0)


def test_spatial_mismatch_is_average_pooled_as_the_reference():
    # Student larger on one pair, teacher larger on another (integer ratios).
    teacher = _maps([(2, 4, 4, 6), (2, 8, 8, 6), (2, 2, 2, 6)], 5)
    student = _maps([(2, 8, 8, 3), (2, 4, 4, 3), (2, 2, 2, 3)], 6)
    out = AT()(teacher, student, labels=None)
    np.testing.assert_allclose(float(out["loss_at"]), _numpy_at_loss(student, teacher), rtol=1e-5)


def test_gradients_reach_the_student_not_the_teacher():
    teacher = {k: tf.Variable(v) for k, v in _maps([(2, 4, 4, 3)] * 3, 7).items()}
    student = {k: tf.Variable(v) for k, v in _maps([(2, 4, 4, 5)] * 3, 8).items()}
    with tf.GradientTape() as tape:
        loss = AT()(teacher, student, labels=None)["loss_at"]
    grads = tape.gradient(loss, list(student.values()) + list(teacher.values()))
    assert all(g is not None and np.any(np.asarray(g) != 0) for g in grads[:3])
    assert all(g is None for g in grads[3:])


def test_float16_maps_give_float32_loss():
    teacher = _maps([(2, 4, 4, 3)] * 3, 9, "float16")
    student = _maps([(2, 4, 4, 5)] * 3, 10, "float16")
    out = AT()(teacher, student, labels=None)
    assert out["loss_at"].dtype == "float32" and np.isfinite(float(out["loss_at"]))


def test_config_round_trip():
    method = methods.get("at", teacher_taps=["feat_2"], student_taps=["feat_3"], p=3.0, weight=5.0)
    revived = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(method))
    assert isinstance(revived, AT) and revived.get_config() == method.get_config()
    assert (revived.teacher_taps, revived.student_taps) == (("feat_2",), ("feat_3",))


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="same, non-zero number"):
        AT(teacher_taps=("feat_1",), student_taps=("feat_1", "feat_2"))
    with pytest.raises(ValueError, match="p must be > 0"):
        AT(p=0)
    method = AT(teacher_taps=("feat_1",), student_taps=("feat_1",))
    with pytest.raises(ValueError, match="not integer multiples"):
        method.build_from_taps({"feat_1": (None, 3, 3, 4)}, {"feat_1": (None, 4, 4, 4)})
    with pytest.raises(ValueError, match="larger along one axis"):
        method.build_from_taps({"feat_1": (None, 2, 8, 4)}, {"feat_1": (None, 4, 4, 4)})
    with pytest.raises(ValueError, match="NHWC feature maps"):
        method.build_from_taps({"feat_1": (None, 16)}, {"feat_1": (None, 4, 4, 4)})
    with pytest.raises(ValueError, match="not integer multiples"):
        method({"feat_1": np.ones((1, 3, 3, 2), "float32")},
               {"feat_1": np.ones((1, 4, 4, 2), "float32")}, labels=None)
