"""--export writes each requested format under its fixed name in the run directory."""

import json
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from experiments import runner
from experiments.errors import UsageError
from kerasdistill import data, models
from tests.experiments.conftest import tiny_config


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


@pytest.mark.integration  # A complete run (1 epoch x 2 steps) and an ONNX conversion: 1.7 s.
def test_onnx_entry_writes_model_onnx_and_records_it(tiny_folder, small_cnn_file, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    out = tmp_path / "run"
    config = tiny_config(tiny_folder, out, student=str(small_cnn_file), epochs=1,
                         steps_per_epoch=2, export="keras,onnx")
    runner.run(config)
    assert json.loads((out / "metrics.json").read_text())["exported"] == {
        "keras": str(out / "model.keras"), "onnx": str(out / "model.onnx")
    }
    # [0, 255] pixels in, the trained model's logits out: its normalization is inside.
    pixels = np.random.default_rng(0).uniform(0, 255, (4, 32, 32, 3)).astype("float32")
    expected = keras.saving.load_model(out / "model.keras").predict(pixels, verbose=0)
    session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    logits = session.run(["logits"], {"images": pixels})[0]
    assert np.abs(logits - expected).max() <= 1e-4


def test_onnx_without_its_converter_is_refused_before_any_data_is_read(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "tf2onnx", None)  # As if not installed.
    config = tiny_config(tmp_path / "no_such_folder", tmp_path / "run", export="keras,onnx")
    with pytest.raises(UsageError, match=r"--export='keras,onnx' needs .* tf2onnx .*pip install"):
        config.validate()
    assert not (tmp_path / "run").exists()
