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
