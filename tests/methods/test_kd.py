import json

import numpy as np
import pytest
import tensorflow as tf

from kerasdistill import methods
from kerasdistill.ops import kl_divergence_with_temperature
from tests.conftest import FIXTURES, require


def test_kd_value_and_gradient_match_repdistiller_golden():
    z = np.load(require(FIXTURES / "kd_golden.npz"), allow_pickle=False)
    y_s = tf.Variable(z["y_s"])
    y_t = tf.Variable(z["y_t"])
    with tf.GradientTape() as tape:
        loss = kl_divergence_with_temperature(y_s, y_t, float(z["T"]))
    grad_s, grad_t = tape.gradient(loss, [y_s, y_t])
    np.testing.assert_allclose(loss.numpy(), z["loss"], rtol=1e-6)
    np.testing.assert_allclose(grad_s.numpy(), z["grad_y_s"], rtol=1e-5, atol=1e-8)
    np.testing.assert_allclose(grad_t.numpy(), z["grad_y_t"], rtol=1e-5, atol=1e-8)


def test_kd_method_weights_the_term_and_round_trips_config():
    z = np.load(require(FIXTURES / "kd_golden.npz"), allow_pickle=False)
    method = methods.get("kd", temperature=4.0, weight=0.5)
    out = method({"logits": z["y_t"]}, {"logits": z["y_s"]}, labels=np.zeros(5, "int32"))
    np.testing.assert_allclose(float(out["loss_kd"]), 0.5 * float(z["loss"]), rtol=1e-6)
    clone = methods.KD.from_config(method.get_config())
    assert (clone.temperature, clone.weight) == (4.0, 0.5)


def test_kd_is_finite_for_float16_logits():
    logits = np.array([[6e4, -6e4, 0.0]], "float16")
    value = kl_divergence_with_temperature(logits, logits[:, ::-1], 0.5)
    assert np.isfinite(float(value))


def test_kd_rejects_nonpositive_temperature():
    with pytest.raises(ValueError, match="temperature must be > 0, got 0"):
        methods.KD(temperature=0)


def test_unknown_method_lists_available():
    with pytest.raises(ValueError, match="Available methods: .*kd"):
        methods.get("nope")


def _numpy_standardized_kd(student, teacher, temperature):
    """Sun et al. (CVPR 2024): z-score per sample (sample std, 1e-7 added), then Hinton's KD."""

    def z_score(logits):
        logits = logits.astype("float64")
        mean = logits.mean(axis=1, keepdims=True)
        return (logits - mean) / (1e-7 + logits.std(axis=1, ddof=1, keepdims=True))

    def log_softmax(x):
        x = x - x.max(axis=1, keepdims=True)
        return x - np.log(np.exp(x).sum(axis=1, keepdims=True))

    log_p_s = log_softmax(z_score(student) / temperature)
    log_p_t = log_softmax(z_score(teacher) / temperature)
    kl = np.sum(np.exp(log_p_t) * (log_p_t - log_p_s), axis=1)
    return kl.mean() * temperature**2


def _random_logits(seed, shape=(4, 7), scale=3.0):
    return (scale * np.random.default_rng(seed).normal(size=shape)).astype("float32")


@pytest.mark.parametrize("temperature", [1.0, 2.0, 4.0])
def test_standardized_kd_matches_numpy_and_its_gradient(temperature):
    student, teacher = _random_logits(0), _random_logits(1, scale=8.0)
    method = methods.KD(temperature=temperature, weight=1.0, standardize=True)
    variable = tf.Variable(student)
    with tf.GradientTape() as tape:
        loss = method({"logits": teacher}, {"logits": variable})["loss_kd"]
    expected = _numpy_standardized_kd(student, teacher, temperature)
    np.testing.assert_allclose(float(loss), expected, rtol=1e-5)
    x, h = student.astype("float64"), 1e-5
    numeric = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        up, down = x.copy(), x.copy()
        up[i] += h
        down[i] -= h
        numeric[i] = (_numpy_standardized_kd(up, teacher, temperature)
                      - _numpy_standardized_kd(down, teacher, temperature)) / (2 * h)
    np.testing.assert_allclose(tape.gradient(loss, variable).numpy(), numeric, rtol=1e-3,
                               atol=1e-5)


def test_standardized_kd_ignores_each_samples_shift_and_scale_plain_kd_does_not():
    student, teacher = _random_logits(2), _random_logits(3)
    rows = student.shape[0]
    shift = np.random.default_rng(4).normal(size=(rows, 1)).astype("float32") * 50
    scale = np.random.default_rng(5).uniform(0.1, 10, size=(rows, 1)).astype("float32")
    moved = {"logits": student * scale + shift}
    for standardize in (True, False):
        method = methods.KD(weight=1.0, standardize=standardize)
        base = float(method({"logits": teacher}, {"logits": student})["loss_kd"])
        moved_loss = float(method({"logits": teacher * scale[::-1] - shift}, moved)["loss_kd"])
        if standardize:
            np.testing.assert_allclose(moved_loss, base, rtol=1e-4)
        else:
            assert abs(moved_loss - base) > 0.1 * base


def test_standardized_kd_is_exact_for_huge_logits_and_finite_for_constant_ones():
    huge = np.array([[1e30, -1e30, 0.0, 5e29], [6e4, -6e4, 1.0, 2.0]], "float32")
    teacher = _random_logits(6, shape=(2, 4))
    method = methods.KD(temperature=0.5, weight=1.0, standardize=True)
    value = float(method({"logits": teacher}, {"logits": huge})["loss_kd"])
    np.testing.assert_allclose(value, _numpy_standardized_kd(huge, teacher, 0.5), rtol=1e-5)
    half = huge[1:].astype("float16")  # 6e4: near float16's largest value.
    value = float(method({"logits": teacher[1:]}, {"logits": half})["loss_kd"])
    np.testing.assert_allclose(value, _numpy_standardized_kd(half, teacher[1:], 0.5), rtol=1e-4)
    # Constant logits standardize to zeros (a uniform distribution), not NaN.
    constant = np.full((2, 4), 7.0, "float32")
    np.testing.assert_array_equal(methods.kd.standardize_logits(constant).numpy(), 0.0)


def test_standardize_is_off_by_default_round_trips_and_is_read_from_json():
    assert methods.KD().standardize is False
    method = methods.get("kd", **json.loads('{"standardize": true, "temperature": 2}'))
    clone = methods.KD.from_config(method.get_config())
    assert (clone.standardize, clone.temperature) == (True, 2.0)
    with pytest.raises(TypeError, match=r"KD standardize must be True or False, got 'yes'"):
        methods.KD(standardize="yes")
