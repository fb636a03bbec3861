import json
import pathlib
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from experiments import runner
from tests.conftest import REPO


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    rng = np.random.default_rng(0)
    for split, count in (("train", 12), ("test", 4)):
        for label, class_name in enumerate(("a", "b")):
            folder = root / split / class_name
            folder.mkdir(parents=True)
            for i in range(count):
                image = np.full((32, 32, 3), 40 + 150 * label, np.uint8)
                image = np.clip(image + rng.integers(-30, 30, image.shape), 0, 255).astype(np.uint8)
                tf.io.write_file(str(folder / f"{i}.png"), tf.io.encode_png(image))
    return root


def _config(tiny_folder, out, **overrides):
    base = dict(
        mode="teacher", teacher="resnet8", student="resnet8", dataset=str(tiny_folder),
        epochs=2, steps_per_epoch=2, batch_size=8, output_dir=str(out), verbose=0,
    )
    return runner.RunConfig(**{**base, **overrides})


def test_teacher_then_kd_run_write_every_artifact(tiny_folder, tmp_path):
    teacher_metrics = runner.run(_config(tiny_folder, tmp_path / "teacher"))
    assert 0.0 <= teacher_metrics["test_accuracy"] <= 1.0
    config = _config(
        tiny_folder, tmp_path / "kd", mode="distill", method="kd", ce_weight=0.1,
        method_kwargs={"kd": {"weight": 0.9, "temperature": 4.0}},
        teacher_weights=str(tmp_path / "teacher" / "model.keras"),
    )
    metrics = runner.run(config)
    out = tmp_path / "kd"
    written = json.loads((out / "metrics.json").read_text())
    assert written["test_accuracy"] == metrics["test_accuracy"]
    assert written["epochs"] == 2 and written["config"]["method"] == "kd"
    assert written["teacher_test_accuracy"] == pytest.approx(teacher_metrics["test_accuracy"])
    history = (out / "history.csv").read_text().splitlines()
    assert "loss_kd" in history[0] and len(history) == 3
    student = keras.saving.load_model(out / "model.keras")
    served = tf.saved_model.load(str(out / "saved_model"))
    pixels = np.full((2, 32, 32, 3), 100.0, np.float32)
    dataset_stats = runner.data.load(str(tiny_folder))
    normalized = (pixels / 255.0 - np.array(dataset_stats.mean)) / np.array(dataset_stats.std)
    np.testing.assert_allclose(
        served.serve(pixels).numpy(), student(normalized).numpy(), rtol=1e-4, atol=1e-5
    )


def test_quickstart_runs_teacher_student_and_kd_and_prints_accuracies(tiny_folder, tmp_path):
    proc = subprocess.run(
        [sys.executable, str(REPO / "experiments" / "quickstart.py"), f"--dataset={tiny_folder}",
         "--teacher=resnet8", "--student=resnet8", "--epochs=1", "--steps_per_epoch=2",
         "--batch_size=8", f"--output_dir={tmp_path}"],
        capture_output=True, text=True, timeout=600, cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [line for line in proc.stdout.splitlines() if "saved_model" in line]
    assert [row.split()[0:2] for row in rows] == [
        ["teacher", "resnet8"], ["student", "resnet8"], ["student", "resnet8"]
    ]
    for stage in ("teacher", "student", "kd"):
        assert (tmp_path / stage / "saved_model" / "saved_model.pb").exists()
        assert (tmp_path / stage / "metrics.json").exists()


class _CrashAfterFirstEpoch(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        if epoch == 0:
            raise RuntimeError("simulated crash")


def test_interrupted_run_resumes_from_its_last_epoch(tiny_folder, tmp_path):
    config = _config(tiny_folder, tmp_path / "run", epochs=3)
    with pytest.raises(RuntimeError, match="simulated crash"):
        runner.run(config, extra_callbacks=[_CrashAfterFirstEpoch()])
    assert (tmp_path / "run" / "backup").exists()
    metrics = runner.run(config)
    assert metrics["epochs_trained_this_session"] == 2
    assert not (tmp_path / "run" / "backup").exists()
    rows = (tmp_path / "run" / "history.csv").read_text().splitlines()
    assert [row.split(",")[0] for row in rows[1:]] == ["0", "1", "2"]


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"mode": "teach"}, "mode must be one of"),
        ({"teacher": "resnet9"}, "Unknown teacher model 'resnet9'"),
        ({"mode": "distill", "method": "kd", "teacher_weights": ""}, "needs --teacher_weights"),
        ({"mode": "distill", "method": "nope", "teacher_weights": "x"}, "Unknown method 'nope'"),
        ({"epochs": 0}, "epochs must be positive"),
        ({"batch_size": 100}, "fewer than one batch"),
    ],
)
def test_bad_configuration_fails_before_any_work(tiny_folder, tmp_path, overrides, message):
    with pytest.raises(ValueError, match=message):
        runner.run(_config(tiny_folder, tmp_path, **overrides))


def test_every_flagfile_parses_into_a_valid_configuration():
    from absl import flags

    flagfiles = sorted((REPO / "experiments" / "flags").glob("*.cfg"))
    assert flagfiles, "experiments/flags holds no flagfile"
    for path in flagfiles:
        values = flags.FlagValues()
        runner.define_flags(flags_module=_Definer(values))
        values(["prog", f"--flagfile={path}"])
        config = runner.config_from_flags(values)
        config.teacher_weights = config.teacher_weights and __file__
        config.validate()
        assert pathlib.Path(config.output_dir).name, path


class _Definer:
    """Lets runner.define_flags register flags on a private FlagValues."""

    def __init__(self, values):
        self._values = values

    def __getattr__(self, name):
        from absl import flags

        function = getattr(flags, name)
        return lambda *args, **kwargs: function(*args, flag_values=self._values, **kwargs)
