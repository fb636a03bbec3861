import json
import pathlib

import keras
import numpy as np
import pytest
import tensorflow as tf

from experiments import run_flags, runner
from kerasdistill import data, models
from tests.conftest import REPO
from tests.experiments.conftest import write_image_folder
from tests.experiments.private_flags import Definer


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    return write_image_folder(tmp_path_factory.mktemp("tiny"))


def _config(tiny_folder, out, **overrides):
    base = dict(
        mode="teacher", teacher="resnet8", student="resnet8", dataset=str(tiny_folder),
        epochs=2, steps_per_epoch=2, batch_size=8, output_dir=str(out), verbose=0,
    )
    return runner.RunConfig(**{**base, **overrides})


def _test_accuracy(model_path, folder):
    """Top-1 accuracy of a saved model on `folder/test`'s pixels, read in NumPy."""
    model = keras.saving.load_model(model_path)
    images, labels = [], []
    for label, class_dir in enumerate(sorted((folder / "test").iterdir())):
        for path in sorted(class_dir.iterdir()):
            images.append(tf.io.decode_png(tf.io.read_file(str(path))).numpy())
            labels.append(label)
    x = np.stack(images).astype(np.float32)
    return np.mean(np.argmax(model.predict(x, verbose=0), -1) == np.array(labels))


def test_a_distill_run_trains_exports_and_records_itself(tiny_folder, tmp_path):
    """The smoke run: distil 1 epoch x 2 steps between two tiny CNNs, export model.keras."""
    from tests.experiments.conftest import small_cnn

    teacher = tmp_path / "teacher.keras"
    small_cnn().save(teacher)
    out = tmp_path / "run"
    config = _config(tiny_folder, out, mode="distill", teacher="", teacher_weights=str(teacher),
                     student=str(teacher), method="kd", epochs=1, steps_per_epoch=2,
                     batch_size=4, export="keras")
    metrics = runner.run(config)
    assert json.loads((out / "metrics.json").read_text())["test_accuracy"] == (
        metrics["test_accuracy"]
    )
    assert metrics["epochs_trained_this_session"] == 1 and metrics["exported"] == {
        "keras": str(out / "model.keras")
    }
    assert sorted(metrics["model_files"]) == ["student", "teacher_weights"]
    history = (out / "history.csv").read_text().splitlines()
    assert "loss_kd" in history[0] and len(history) == 2
    student = keras.saving.load_model(out / "model.keras")
    assert [layer.name for layer in student.layers] == ["images", "pixel_normalization",
                                                        "small_cnn"]


@pytest.mark.integration  # Two complete runs and a SavedModel.
def test_teacher_then_kd_run_write_every_artifact(tiny_folder, tmp_path):
    teacher_metrics = runner.run(_config(tiny_folder, tmp_path / "teacher"))
    assert teacher_metrics["test_accuracy"] == pytest.approx(
        _test_accuracy(tmp_path / "teacher" / "model.keras", tiny_folder), abs=1e-6
    )
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
    # model.keras and the SavedModel take [0, 255] pixels; the student behind the
    # normalization layer gets them standardized with the dataset's statistics.
    student = keras.saving.load_model(out / "model.keras")
    assert [layer.name for layer in student.layers] == ["images", "pixel_normalization", "resnet8"]
    served = tf.saved_model.load(str(out / "saved_model"))
    pixels = np.random.default_rng(0).uniform(0, 255, (4, 32, 32, 3)).astype(np.float32)
    dataset_stats = data.load(str(tiny_folder))
    normalized = (pixels / 255.0 - np.array(dataset_stats.mean)) / np.array(dataset_stats.std)
    expected = student.get_layer("resnet8")(normalized.astype(np.float32)).numpy()
    np.testing.assert_allclose(student(pixels).numpy(), expected, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(served.serve(pixels).numpy(), expected, rtol=1e-4, atol=1e-5)


class _CrashAfterFirstEpoch(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        if epoch == 0:
            raise RuntimeError("simulated crash")


@pytest.mark.integration  # Complete runs.
def test_interrupted_run_resumes_from_its_last_epoch(tiny_folder, tmp_path):
    config = _config(tiny_folder, tmp_path / "run", epochs=3)
    with pytest.raises(RuntimeError, match="simulated crash"):
        runner.run(config, extra_callbacks=[_CrashAfterFirstEpoch()])
    assert (tmp_path / "run" / "checkpoint.npz").exists()
    metrics = runner.run(config)
    assert metrics["epochs_trained_this_session"] == 2
    rows = (tmp_path / "run" / "history.csv").read_text().splitlines()
    assert [row.split(",")[0] for row in rows[1:]] == ["0", "1", "2"]


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"mode": "teach"}, "--mode='teach' is not accepted"),
        ({"teacher": "resnet9"}, "Unknown teacher model 'resnet9'"),
        ({"mode": "distill", "method": "kd", "teacher_weights": ""}, "needs --teacher_weights"),
    ],
)
def test_bad_configuration_fails_before_any_work(tiny_folder, tmp_path, overrides, message):
    with pytest.raises(ValueError, match=message):
        runner.run(_config(tiny_folder, tmp_path / "out", **overrides))
    assert not (tmp_path / "out").exists()


@pytest.mark.integration  # A complete run.
def test_logs_hold_every_term_and_only_evaluated_validation_entries(tiny_folder, tmp_path):
    teacher = tmp_path / "teacher.keras"
    models.get("resnet8", num_classes=2).save(teacher)
    config = _config(
        tiny_folder, tmp_path / "kd", mode="distill", method="kd", teacher_weights=str(teacher),
        epochs=1, export="keras",
    )
    runner.run(config)
    header = (tmp_path / "kd" / "history.csv").read_text().splitlines()[0].split(",")
    assert sorted(header) == sorted([
        "epoch", "accuracy", "images_per_second", "learning_rate", "loss", "loss_ce", "loss_kd",
        "val_accuracy", "val_loss",
    ])
    tags = {}
    for split in ("train", "validation"):
        folder = tmp_path / "kd" / "tensorboard" / split
        tags[split] = {
            value.tag
            for path in folder.glob("events.out.tfevents.*")
            for event in tf.compat.v1.train.summary_iterator(str(path))
            for value in event.summary.value
        }
    assert {"epoch_loss", "epoch_loss_ce", "epoch_loss_kd", "epoch_accuracy",
            "epoch_learning_rate", "epoch_images_per_second"} <= tags["train"]
    assert {t for t in tags["validation"] if t.startswith("epoch_")} == {
        "epoch_loss", "epoch_accuracy"
    }


@pytest.mark.integration
def test_transformer_recipe_trains_a_vit_student_with_adamw_and_warmup(tiny_folder, tmp_path):
    teacher = tmp_path / "teacher.keras"
    models.get("resnet8", num_classes=2).save(teacher)
    config = _config(
        tiny_folder, tmp_path / "vit", mode="distill", teacher="resnet8",
        student="vit_mini_p4", method="msdcrd", teacher_weights=str(teacher),
        method_kwargs={"msdcrd": {"projection": "linear", "scales": [1, 2]}},
        optimizer="adamw", lr=1e-3, weight_decay=0.05, lr_schedule="cosine",
        lr_warmup_epochs=1, label_smoothing=0.1, export="keras",
    )
    runner.run(config)
    history = (tmp_path / "vit" / "history.csv").read_text().splitlines()
    rows = [dict(zip(history[0].split(","), line.split(","))) for line in history[1:]]
    # Logged at each epoch end: 2 warm-up steps reach the peak, the cosine then decays.
    learning_rates = [float(row["learning_rate"]) for row in rows]
    assert learning_rates[0] == pytest.approx(1e-3, rel=1e-5)
    assert learning_rates[1] < 1e-3 and "loss_msd_sw" in history[0]
    student = keras.saving.load_model(tmp_path / "vit" / "model.keras")
    assert student.name == "vit_mini_p4"


def test_every_flagfile_parses_into_a_valid_configuration(tmp_path):
    from absl import flags

    flagfiles = sorted((REPO / "experiments" / "flags").glob("*.cfg"))
    assert flagfiles, "experiments/flags holds no flagfile"
    for path in flagfiles:
        values = flags.FlagValues()
        run_flags.define_flags(flags_module=Definer(values))
        values(["prog", f"--flagfile={path}"])
        config = run_flags.config_from_flags(values)
        if config.teacher_weights:  # A file of the same kind, where the run would train it.
            config.teacher_weights = str(tmp_path / pathlib.Path(config.teacher_weights).name)
            pathlib.Path(config.teacher_weights).write_bytes(b"")
        config.validate()
        assert pathlib.Path(config.output_dir).name, path


def test_generated_flagfiles_are_up_to_date_and_token_models_use_the_transformer_recipe():
    import importlib.util

    path = REPO / "experiments" / "flags" / "generate.py"
    spec = importlib.util.spec_from_file_location("generate_flagfiles", path)
    generate = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generate)
    assert generate.main(["generate.py", "--check"]) == 0, "run experiments/flags/generate.py"
    files = generate.flagfiles()
    for name in ("resnet32x4_vit_tiny_p4_msdcrd.cfg", "resnet32x4_mixer_s_p4_kd.cfg",
                 "vit_tiny_p4_teacher.cfg"):
        assert "--optimizer=adamw" in files[name] and "--label_smoothing=0.1" in files[name]
    # A CNN student of a ViT teacher keeps the SGD recipe.
    assert "--optimizer" not in files["vit_tiny_p4_resnet8x4_dkd.cfg"]
    assert "--momentum=0.9" in files["vit_tiny_p4_resnet8x4_dkd.cfg"]
    # MSDCRD on a token student (the paper fixed no such pair) is the library's default
    # methods; CNN students keep KD (T 4) + MSDCRD beside CE 1.
    from kerasdistill.methods import defaults

    for pair in ("resnet32x4_vit_tiny_p4", "resnet32x4_mixer_s_p4"):
        flags = dict(line[2:].split("=", 1) for line in files[f"{pair}_msdcrd.cfg"].splitlines()
                     if line.startswith("--"))
        assert flags["method"] == ",".join(name for name, _ in defaults.DEFAULT_RECIPE)
        assert float(flags["ce_weight"]) == defaults.DEFAULT_CE_WEIGHT
        assert json.loads(flags["method_kwargs"]) == dict(defaults.DEFAULT_RECIPE)
    for name in ("resnet32x4_resnet8x4_msdcrd.cfg", "vit_tiny_p4_resnet8x4_msdcrd.cfg"):
        assert "--ce_weight=1.0" in files[name].splitlines()
