"""--export writes each requested format under its fixed name in the run directory."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from experiments import runner
from kerasdistill import data, models


@pytest.mark.integration  # Two TFLite conversions.
@pytest.mark.integration  # Two TFLite conversions of a resnet8: about 10 s.
def test_tflite_entries_write_float_and_dynamic_int8_files(tmp_path):
    inputs = keras.Input((32, 32, 3))
    inner = models.get("resnet8", num_classes=2)
    model = keras.Model(inputs, inner(data.normalization_layer((0.5,) * 3, (0.25,) * 3)(inputs)))
    written = runner.export(model, tmp_path, ["keras", "tflite", "tflite_int8"])
    assert written == {
        "keras": str(tmp_path / "model.keras"),
        "tflite": str(tmp_path / "model.tflite"),
        "tflite_int8": str(tmp_path / "model_int8.tflite"),
    }
    float_size = (tmp_path / "model.tflite").stat().st_size
    assert (tmp_path / "model_int8.tflite").stat().st_size < float_size / 2
    assert not (tmp_path / "saved_model").exists()
    # Both take [0, 255] pixels, the model as it is: no normalization is added.
    pixels = np.random.default_rng(0).uniform(0, 255, (3, 32, 32, 3)).astype("float32")
    expected = inner.predict((pixels / 255.0 - 0.5) / 0.25, verbose=0)
    loaded = keras.saving.load_model(tmp_path / "model.keras")
    np.testing.assert_allclose(loaded.predict(pixels, verbose=0), expected, rtol=1e-4, atol=1e-4)
    lite = tf.lite.Interpreter(model_path=str(tmp_path / "model.tflite"))
    logits = lite.get_signature_runner("serving_default")(images=pixels)["logits"]
    np.testing.assert_allclose(logits, expected, rtol=1e-4, atol=1e-4)
