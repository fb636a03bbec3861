"""The quickstart script and the teacher it ships with."""

import json
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from experiments import model_specs
from experiments.model_specs import ModelSpec
from kerasdistill import data
from tests.conftest import REPO
from tests.experiments.test_script_errors import _noise

TEACHER = REPO / "data" / "cifar10_resnet20_teacher.keras"
MINI = REPO / "data" / "cifar10-mini.tar.gz"
ROWS = ("student alone", "KD", "MSDCRD", "default")
STAGE_DIRS = ("student", "kd", "msdcrd", "default")


@pytest.fixture(scope="module")
def tiny_cifar10_folder(tmp_path_factory):
    """Ten classes of random 32x32 images, as many classes as the shipped teacher has."""
    root = tmp_path_factory.mktemp("tiny10")
    rng = np.random.default_rng(0)
    for split, count in (("train", 2), ("test", 1)):
        for label in range(10):
            folder = root / split / f"class_{label}"
            folder.mkdir(parents=True)
            for i in range(count):
                image = rng.integers(0, 256, (32, 32, 3)).astype(np.uint8)
                tf.io.write_file(str(folder / f"{i}.png"), tf.io.encode_png(image))
    return root


def _quickstart(*args):
    return subprocess.run(
        [sys.executable, str(REPO / "experiments" / "quickstart.py"), *args],
        capture_output=True, text=True, timeout=900, cwd=REPO,
    )


@pytest.mark.integration  # The script in a subprocess: four runs with SavedModel exports.
def test_quickstart_prints_one_row_per_method_and_writes_each_run(tiny_cifar10_folder, tmp_path):
    proc = _quickstart(
        f"--dataset={tiny_cifar10_folder}", "--epochs=1", "--steps_per_epoch=2",
        "--batch_size=8", f"--output_dir={tmp_path}",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    # The table is not lost among TensorFlow's / absl's log lines (SavedModel export included).
    assert _noise(proc.stdout) == [] and _noise(proc.stderr) == [], proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("student resnet8"))
    table = lines[header + 1: header + 1 + len(ROWS)]
    written = [json.loads((tmp_path / d / "metrics.json").read_text()) for d in STAGE_DIRS]
    for row, line, metrics in zip(ROWS, table, written):
        assert line.startswith(row + " "), line
        accuracy, seconds = (float(v) for v in line[len(row):].split()[:2])
        # The table prints what each run measured (10 test images: multiples of 0.1).
        assert accuracy == pytest.approx(metrics["test_accuracy"], abs=5e-5) and seconds > 0
        assert round(accuracy * 10, 3) == round(accuracy * 10)
    assert lines[header + 1 + len(ROWS)].startswith("total")
    assert any(line.startswith("teacher resnet20") for line in lines[:header])
    for subdir in STAGE_DIRS:
        assert (tmp_path / subdir / "saved_model" / "saved_model.pb").exists()
    methods = [metrics["config"] for metrics in written]
    assert [(c["mode"], c["method"]) for c in methods[1:]] == [
        ("distill", "kd"), ("distill", "msdcrd"), ("distill", "default")
    ]
    assert methods[0]["mode"] == "student"


@pytest.mark.integration  # The script in a subprocess.
def test_quickstart_rejects_the_flags_its_stages_set(tmp_path):
    proc = _quickstart("--method=kd", f"--output_dir={tmp_path}")
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert proc.stderr.splitlines()[-1].startswith(
        "error: quickstart.py sets --mode, --method, --method_kwargs, --ce_weight per stage"
    )
    assert "Traceback" not in proc.stderr
    assert not any(tmp_path.iterdir())


def _mini_test_accuracy(model):
    """Top-1 accuracy of `model` on the bundled mini test set (the library's own pipeline)."""
    test = data.eval_pipeline(data.load(str(MINI)), batch_size=500)
    images, labels = (np.concatenate(part) for part in zip(*test.as_numpy_iterator()))
    return np.mean(np.argmax(model.predict_on_batch(images), -1) == labels)


@pytest.mark.integration  # A pass over 1,000 images: 2 to 3.3 s, too close to the unit budget.
def test_shipped_teacher_reaches_its_recorded_accuracy():
    assert TEACHER.stat().st_size < 2 * 1024 * 1024
    record = json.loads(TEACHER.with_suffix(".json").read_text())
    accuracy = _mini_test_accuracy(keras.saving.load_model(TEACHER))
    # The mini test set is 1,000 of the 10,000 CIFAR-10 test images.
    assert accuracy == pytest.approx(record["mini_test_accuracy"], abs=0.005)
    assert accuracy == pytest.approx(record["test_accuracy"], abs=0.04)
    assert record["test_accuracy"] >= 0.5  # chance is 0.1


@pytest.mark.integration  # Two passes over 1,000 images.
def test_shipped_teacher_keeps_its_accuracy_on_pixels_behind_the_runs_normalization():
    """The run feeds [0, 255] pixels and puts the dataset's normalization before the teacher."""
    record = json.loads(TEACHER.with_suffix(".json").read_text())
    dataset = data.load(str(MINI))
    teacher = ModelSpec("teacher", "resnet20", weights=str(TEACHER)).load(
        dataset.num_classes, (32, 32, 3)
    )
    wrapped = model_specs.normalizing(teacher, dataset)
    pixels = data.eval_pipeline(dataset, normalize=False)
    images = np.concatenate([x.numpy() for x, _ in pixels])
    labels = np.concatenate([y.numpy() for _, y in pixels])
    assert images.dtype == np.uint8 and images.max() > 200  # Not normalized.
    predictions = np.argmax(wrapped.predict(pixels, verbose=0), -1)
    assert np.mean(predictions == labels) == pytest.approx(record["mini_test_accuracy"], abs=0.002)
    standardized = np.argmax(teacher.predict(data.eval_pipeline(dataset), verbose=0), -1)
    assert np.mean(predictions == standardized) >= 0.998  # Float rounding flips at most 2 of 1000.


@pytest.mark.integration  # The script in a subprocess.
def test_teacher_script_writes_the_teacher_and_its_accuracies(tiny_cifar10_folder, tmp_path):
    destination = tmp_path / "teacher.keras"
    proc = subprocess.run(
        [sys.executable, str(REPO / "experiments" / "train_quickstart_teacher.py"),
         f"--dataset={tiny_cifar10_folder}", "--teacher=resnet8", "--epochs=1",
         "--steps_per_epoch=2", "--batch_size=8", "--export=keras",
         f"--output_dir={tmp_path / 'run'}", f"--destination={destination}"],
        capture_output=True, text=True, timeout=900, cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    record = json.loads(destination.with_suffix(".json").read_text())
    run_metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert record["test_accuracy"] == run_metrics["test_accuracy"]
    assert (record["model"], record["epochs"], record["steps_per_epoch"]) == ("resnet8", 1, 2)
    teacher = keras.saving.load_model(destination)
    assert getattr(teacher, "optimizer", None) is None  # No optimizer state is shipped.
    assert destination.stat().st_size < (tmp_path / "run" / "model.keras").stat().st_size
    assert record["mini_test_accuracy"] == pytest.approx(_mini_test_accuracy(teacher), abs=1e-6)
