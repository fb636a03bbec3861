import keras
import numpy as np
import pytest
import tensorflow as tf

from kerasdistill import Distiller, methods
from kerasdistill.methods import DKD


def _logits(seed, shape=(4, 6), scale=3.0, dtype="float32"):
    return (scale * np.random.default_rng(seed).normal(size=shape)).astype(dtype)


def _softmax(x):
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _numpy_dkd(student, teacher, labels, tckd_weight=1.0, nckd_weight=8.0, temperature=4.0):
    """mdistiller's dkd_loss, written with explicit target / non-target probabilities."""
    s = student.astype("float64") / temperature
    t = teacher.astype("float64") / temperature
    rows = np.arange(len(labels))
    p_s, p_t = _softmax(s), _softmax(t)
    b_s = np.stack([p_s[rows, labels], 1.0 - p_s[rows, labels]], axis=1)
    b_t = np.stack([p_t[rows, labels], 1.0 - p_t[rows, labels]], axis=1)
    tckd = np.sum(b_t * (np.log(b_t) - np.log(b_s))) / len(labels) * temperature**2
    keep = np.ones_like(s, dtype=bool)
    keep[rows, labels] = False
    q_s = _softmax(s[keep].reshape(len(labels), -1))
    q_t = _softmax(t[keep].reshape(len(labels), -1))
    nckd = np.sum(q_t * (np.log(q_t) - np.log(q_s))) / len(labels) * temperature**2
    return tckd_weight * tckd, nckd_weight * nckd


LABELS = np.array([0, 5, 2, 2])


def test_terms_match_numpy():
    student, teacher = _logits(0), _logits(1, scale=5.0)
    out = DKD()({"logits": teacher}, {"logits": student}, LABELS)
    assert set(out) == {"loss_tckd", "loss_nckd"}
    tckd, nckd = _numpy_dkd(student, teacher, LABELS)
    np.testing.assert_allclose(float(out["loss_tckd"]), tckd, rtol=1e-5)
    np.testing.assert_allclose(float(out["loss_nckd"]), nckd, rtol=1e-5)


def test_term_weights_overall_weight_temperature_and_column_labels():
    student, teacher = _logits(2), _logits(3)
    method = DKD(tckd_weight=0.5, nckd_weight=2.0, temperature=2.0, weight=3.0)
    out = method({"logits": teacher}, {"logits": student}, LABELS.reshape(-1, 1))
    tckd, nckd = _numpy_dkd(student, teacher, LABELS, 0.5, 2.0, 2.0)
    np.testing.assert_allclose(float(out["loss_tckd"]), 3.0 * tckd, rtol=1e-5)
    np.testing.assert_allclose(float(out["loss_nckd"]), 3.0 * nckd, rtol=1e-5)


def test_former_argument_names_are_refused_naming_the_new_ones():
    with pytest.raises(TypeError, match="unexpected argument 'alpha'; did you mean 'tckd_weight'"):
        DKD(alpha=1.0)
    with pytest.raises(TypeError, match="unexpected argument 'beta'; did you mean 'nckd_weight'"):
        methods.get("dkd", beta=8.0)


@pytest.mark.parametrize("step, factor", [(0, 0.0), (25, 0.25), (100, 1.0), (1000, 1.0)])
def test_linear_warmup(step, factor):
    student, teacher = _logits(4), _logits(5)
    full = DKD()({"logits": teacher}, {"logits": student}, LABELS)
    warm = DKD(warmup_steps=100)(
        {"logits": teacher}, {"logits": student}, LABELS, step=tf.constant(step, tf.int64)
    )
    for term in ("loss_tckd", "loss_nckd"):
        np.testing.assert_allclose(float(warm[term]), factor * float(full[term]), rtol=1e-6)


def test_no_warmup_ignores_step():
    student, teacher = _logits(6), _logits(7)
    a = DKD()({"logits": teacher}, {"logits": student}, LABELS)
    b = DKD(warmup_steps=0)({"logits": teacher}, {"logits": student}, LABELS, step=0)
    assert float(a["loss_nckd"]) == float(b["loss_nckd"]) > 0


def test_gradients_reach_the_student_not_the_teacher():
    student, teacher = tf.Variable(_logits(8)), tf.Variable(_logits(9))
    with tf.GradientTape() as tape:
        out = DKD()({"logits": teacher}, {"logits": student}, LABELS)
        loss = out["loss_tckd"] + out["loss_nckd"]
    grad_s, grad_t = tape.gradient(loss, [student, teacher])
    assert grad_t is None and np.all(np.isfinite(grad_s)) and np.any(np.asarray(grad_s) != 0)
    # Matches a central finite difference of the NumPy reference.
    x, h = _logits(8).astype("float64"), 1e-5
    num = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        up, down = x.copy(), x.copy()
        up[i] += h
        down[i] -= h
        diff = sum(_numpy_dkd(up, _logits(9), LABELS)) - sum(_numpy_dkd(down, _logits(9), LABELS))
        num[i] = diff / (2 * h)
    np.testing.assert_allclose(np.asarray(grad_s), num, rtol=1e-3, atol=1e-6)


def test_float16_and_confident_logits_give_finite_float32_terms():
    student = _logits(10, dtype="float16")
    teacher = _logits(11, dtype="float16")
    out = DKD()({"logits": teacher}, {"logits": student}, LABELS)
    assert all(v.dtype == "float32" and np.isfinite(float(v)) for v in out.values())
    # p_target rounds to 1 in float32: log(1 - p) would be -inf; the terms stay finite.
    confident = np.zeros((1, 5), "float32")
    confident[0, 0] = 400.0
    out = DKD()({"logits": confident}, {"logits": confident * 0.5}, np.array([0]))
    assert all(np.isfinite(float(v)) for v in out.values())


def test_config_round_trip():
    method = methods.get(
        "dkd", tckd_weight=2.0, nckd_weight=4.0, temperature=3.0, warmup_steps=50, weight=0.5
    )
    revived = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(method))
    assert isinstance(revived, DKD) and revived.get_config() == method.get_config()
    assert (revived.tckd_weight, revived.nckd_weight, revived.weight) == (2.0, 4.0, 0.5)


def test_warmup_in_epochs_is_converted_in_set_up_and_kept_in_epochs():
    method = methods.get("dkd", warmup_epochs=2.5, name="dkd")
    assert method.needs == ("steps_per_epoch",) and DKD().needs == ()
    assert method.get_config() == DKD(warmup_epochs=2.5, name="dkd").get_config()
    logits = {"logits": _logits(0)}
    with pytest.raises(ValueError, match=r"^DKD needs TrainingData.steps_per_epoch: pass "
                       r"Distiller\(\.\.\., training_data=TrainingData\(steps_per_epoch="):
        method(logits, logits, LABELS, step=0)
    method.set_up(methods.TrainingData(steps_per_epoch=10))
    assert method.warmup_steps == 25
    config = method.get_config()
    assert (config["warmup_epochs"], config["warmup_steps"]) == (2.5, 0)
    stepped = DKD(warmup_steps=25)
    for step in (0, 5, 30):
        np.testing.assert_allclose(
            float(method.warmup_factor(step)), float(stepped.warmup_factor(step)), rtol=1e-6
        )
    np.testing.assert_allclose(float(method.warmup_factor(5)), 5 / 25, rtol=1e-6)
    revived = DKD.from_config(config)
    assert revived.needs == ("steps_per_epoch",) and revived.get_config() == config


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="temperature must be > 0"):
        DKD(temperature=0)
    with pytest.raises(ValueError, match="warmup_steps must be >= 0"):
        DKD(warmup_steps=-1)
    with pytest.raises(ValueError, match="warmup_epochs must be >= 0"):
        DKD(warmup_epochs=-1)
    with pytest.raises(ValueError, match="takes warmup_epochs or warmup_steps, not both"):
        DKD(warmup_epochs=1, warmup_steps=10)
    logits = {"logits": _logits(0)}
    with pytest.raises(ValueError, match="needs the training step"):
        DKD(warmup_steps=10)(logits, logits, LABELS)
    with pytest.raises(ValueError, match="not one-hot"):
        DKD()(logits, logits, np.eye(6)[LABELS])
    with pytest.raises(ValueError, match="differ in classes"):
        DKD()({"logits": _logits(0, (4, 5))}, logits, LABELS)
    with pytest.raises(ValueError, match="needs the integer class labels"):
        DKD()(logits, logits, None)


def test_distiller_step_uses_the_optimizer_step_for_warmup():
    def tiny(name):
        inputs = keras.Input((4,))
        return keras.Model(inputs, keras.layers.Dense(3, name="fc")(inputs), name=name)

    distiller = Distiller(tiny("teacher"), tiny("student"), methods=DKD(warmup_steps=2))
    distiller.compile(optimizer=keras.optimizers.SGD(0.1))
    x = np.random.default_rng(12).normal(size=(4, 4)).astype("float32")
    y = np.array([0, 1, 2, 0])
    first = distiller.train_on_batch(x, y, return_dict=True)
    assert first["loss_nckd"] == 0.0  # step 0: warm-up factor 0.
    distiller.reset_metrics()
    second = distiller.train_on_batch(x, y, return_dict=True)
    assert second["loss_nckd"] > 0.0


def _z_score(logits):
    """Sun et al. (CVPR 2024): per-sample mean removed, divided by 1e-7 + the sample std."""
    logits = logits.astype("float64")
    centered = logits - logits.mean(axis=1, keepdims=True)
    return centered / (1e-7 + logits.std(axis=1, ddof=1, keepdims=True))


def test_standardized_terms_match_numpy_on_z_scored_logits_and_ignore_shift_and_scale():
    student, teacher = _logits(12), _logits(13, scale=6.0)
    method = DKD(tckd_weight=9.0, nckd_weight=81.0, standardize=True)
    out = method({"logits": teacher}, {"logits": student}, LABELS)
    tckd, nckd = _numpy_dkd(_z_score(student), _z_score(teacher), LABELS, 9.0, 81.0)
    np.testing.assert_allclose(float(out["loss_tckd"]), tckd, rtol=1e-5)
    np.testing.assert_allclose(float(out["loss_nckd"]), nckd, rtol=1e-5)
    scale = np.array([[0.2], [3.0], [10.0], [1.5]], "float32")
    moved = method({"logits": teacher * scale + 40.0}, {"logits": student / scale - 9.0}, LABELS)
    for term in out:
        np.testing.assert_allclose(float(moved[term]), float(out[term]), rtol=1e-4)
    plain = DKD()({"logits": teacher * scale}, {"logits": student}, LABELS)
    assert abs(float(plain["loss_nckd"]) - _numpy_dkd(student, teacher, LABELS)[1]) > 1e-3


def test_standardize_is_off_by_default_and_round_trips():
    assert DKD().standardize is False and DKD().get_config()["standardize"] is False
    method = methods.get("dkd", standardize=True, warmup_epochs=1.0)
    revived = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(method))
    assert revived.standardize is True and revived.get_config() == method.get_config()
    with pytest.raises(TypeError, match=r"DKD standardize must be True or False, got 1"):
        DKD(standardize=1)
