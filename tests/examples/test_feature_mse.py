"""examples/feature_mse.py: the regressor-free feature MSE equals Keras's FeatureDistillation("mse")."""

import importlib.util

import keras
import numpy as np

from tests.conftest import REPO


def _example():
    spec = importlib.util.spec_from_file_location("feature_mse", REPO / "examples" / "feature_mse.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_feature_mse_is_the_mean_squared_difference_as_keras_computes_it():
    rng = np.random.default_rng(0)
    teacher = rng.standard_normal((4, 6, 6, 8)).astype("float32")
    student = rng.standard_normal((4, 6, 6, 8)).astype("float32")
    method = _example().FeatureMSE("feat_2", weight=100.0)
    ours = float(method({"feat_2": teacher}, {"feat_2": student})["loss_feature_mse"])
    keras_loss = keras.distillation.FeatureDistillation("mse", "feat_2", "feat_2")
    expected = float(np.mean((student.astype("float64") - teacher) ** 2))
    np.testing.assert_allclose(float(keras_loss.compute_loss(teacher, student)), expected, rtol=1e-5)
    np.testing.assert_allclose(ours, 100.0 * expected, rtol=1e-5)
    assert method.get_config()["tap"] == "feat_2" and method.get_config()["weight"] == 100.0
