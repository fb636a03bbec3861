"""--export writes each requested format under its fixed name in the run directory."""

import types

from experiments import runner
from kerasdistill import models


def test_tflite_entries_write_float_and_dynamic_int8_files(tmp_path):
    model = models.get("resnet8", num_classes=2)
    stats = types.SimpleNamespace(mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    written = runner.export(model, tmp_path, ["keras", "tflite", "tflite_int8"], stats)
    assert written == {
        "keras": str(tmp_path / "model.keras"),
        "tflite": str(tmp_path / "model.tflite"),
        "tflite_int8": str(tmp_path / "model_int8.tflite"),
    }
    float_size = (tmp_path / "model.tflite").stat().st_size
    assert (tmp_path / "model_int8.tflite").stat().st_size < float_size / 2
    assert not (tmp_path / "saved_model").exists()
