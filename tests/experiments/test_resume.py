"""Crashes and interruptions: atomic checkpoints, exact resumption, SIGTERM, divergence.

The complete runs (resumed, interrupted, diverging) are in the integration tier; the
checkpoint's names and the refusal of another run's checkpoint are unit tests.
"""

import os
import signal
import subprocess
import sys

import keras
import numpy as np
import pytest

from experiments import runner
from experiments.errors import RunInterrupted, UsageError
from kerasdistill.training import checkpointing
from kerasdistill.training.callbacks import TrainingDiverged
from tests.conftest import REPO
from tests.experiments.conftest import tiny_config

# 2 epochs of 3 steps; checkpoints at steps 2 and 4 (every 2) and 3 and 6 (epoch ends).
RESUMABLE = dict(deterministic=True, checkpoint_every_steps=2)


def _weights(output_dir):
    return keras.saving.load_model(output_dir / "model.keras").get_weights()


def _assert_same_weights(a, b):
    assert len(a) == len(b)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))


class _SignalAtStep(keras.callbacks.Callback):
    """Sends `signum` to this process at the end of global step `step` of this session."""

    def __init__(self, step, signum):
        super().__init__()
        self.step, self.signum, self.seen = step, signum, 0

    def on_train_batch_end(self, batch, logs=None):
        self.seen += 1
        if self.seen == self.step:
            os.kill(os.getpid(), self.signum)


@pytest.fixture(scope="module")
def uninterrupted(tiny_folder, tmp_path_factory):
    out = tmp_path_factory.mktemp("uninterrupted")
    runner.run(tiny_config(tiny_folder, out, **RESUMABLE))
    return _weights(out)


@pytest.mark.integration  # Complete runs.
def test_deterministic_runs_give_identical_weights(tiny_folder, tmp_path, uninterrupted):
    runner.run(tiny_config(tiny_folder, tmp_path, **RESUMABLE))
    _assert_same_weights(_weights(tmp_path), uninterrupted)


@pytest.mark.integration  # A run killed in a subprocess.
def test_sigkill_mid_epoch_then_restart_ends_with_the_same_weights(
    tiny_folder, tmp_path, uninterrupted
):
    config = tiny_config(tiny_folder, tmp_path, **RESUMABLE)
    code = (
        "import signal, sys; sys.path.insert(0, {repo!r});"
        "from experiments import runner; from tests.experiments import test_resume as t;"
        "runner.run(runner.RunConfig(**{fields!r}), [t._SignalAtStep(5, signal.SIGKILL)])"
    ).format(repo=str(REPO), fields=config.__dict__)
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, timeout=600)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]
    assert checkpointing.read_metadata(tmp_path / "checkpoint.npz")["step"] == 4
    # A kill while writing the next checkpoint leaves a partial temporary file only.
    (tmp_path / "checkpoint.npz.tmp").write_bytes(b"partial")
    metrics = runner.run(config)
    assert metrics["epochs_trained_this_session"] == 1
    _assert_same_weights(_weights(tmp_path), uninterrupted)
    rows = (tmp_path / "history.csv").read_text().splitlines()
    assert [row.split(",")[0] for row in rows[1:]] == ["0", "1"]


@pytest.mark.integration  # Complete runs.
def test_sigterm_saves_a_checkpoint_and_stops_then_resumes_exactly(
    tiny_folder, tmp_path, uninterrupted
):
    config = tiny_config(tiny_folder, tmp_path, **RESUMABLE)
    # The signal arrives after the checkpointer saw step 1: it saves after step 2.
    with pytest.raises(RunInterrupted, match=r"Stopped by SIGTERM at step 2; the checkpoint"):
        runner.run(config, [_SignalAtStep(1, signal.SIGTERM)])
    assert checkpointing.read_metadata(tmp_path / "checkpoint.npz")["step"] == 2
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
    assert not (tmp_path / "model.keras").exists()
    assert runner.run(config)["epochs_trained_this_session"] == 2
    _assert_same_weights(_weights(tmp_path), uninterrupted)


@pytest.mark.integration  # Complete runs.
def test_a_distill_run_resumes_exactly(tiny_folder, teacher_file, tmp_path):
    # The Distiller's optimizer is wrapped (non-finite steps are skipped): the wrapped
    # optimizer's slots and CRD's memory banks restore by name into a fresh process's objects.
    distill = dict(mode="distill", method="kd,crd", teacher_weights=str(teacher_file),
                   method_kwargs={"crd": {"num_negatives": 8}}, **RESUMABLE)
    runner.run(tiny_config(tiny_folder, tmp_path / "whole", **distill))
    config = tiny_config(tiny_folder, tmp_path / "resumed", **distill)
    with pytest.raises(RunInterrupted, match=r"Stopped by SIGTERM at step 3"):
        runner.run(config, [_SignalAtStep(3, signal.SIGTERM)])
    assert runner.run(config)["epochs_trained_this_session"] == 1
    _assert_same_weights(_weights(tmp_path / "resumed"), _weights(tmp_path / "whole"))


@pytest.mark.integration  # Complete runs.
def test_non_finite_loss_stops_naming_step_and_term_and_keeps_last_good_checkpoint(
    tiny_folder, teacher_file, tmp_path
):
    config = tiny_config(
        tiny_folder, tmp_path, mode="distill", method="kd", teacher_weights=str(teacher_file),
        lr=1e30, checkpoint_every_steps=1,
    )
    with pytest.raises(TrainingDiverged, match=r"Loss term loss_\w+ is (nan|inf|-inf) at training "
                       r"step (\d+).*last good checkpoint") as error:
        runner.run(config)
    step = int(error.value.args[0].split("at training step ")[1].split()[0].rstrip(".("))
    saved = checkpointing.read_metadata(tmp_path / "checkpoint.npz")
    assert saved["step"] == step - 1
    with np.load(tmp_path / "checkpoint.npz") as archive:
        assert all(np.isfinite(archive[k]).all() for k in archive.files if k != "__meta__")


def _distill_models(config):
    """The compiled Distiller a run of `config` trains, on a 2-class dataset of 12 samples."""
    import types

    from experiments import pipelines, trainer

    dataset = types.SimpleNamespace(
        num_classes=2, mean=(0.5,) * 3, std=(0.25,) * 3, train_labels=lambda: np.arange(12) % 2
    )
    models = trainer.build_models(config, config.validate(), dataset,
                                  pipelines.for_config(config), steps=3)
    trainer.compile_model(config, models, steps=3)
    return models


def test_clipnorm_reaches_the_optimizer_of_either_kind(small_cnn_file, tmp_path):
    for optimizer, clipnorm in (("sgd", 1.0), ("adamw", 0.5), ("sgd", 0.0)):
        config = tiny_config(
            "unused", tmp_path, mode="distill", method="kd", teacher="", optimizer=optimizer,
            teacher_weights=str(small_cnn_file), student=str(small_cnn_file), clipnorm=clipnorm)
        inner = _distill_models(config).fitted.optimizer.inner_optimizer
        assert inner.clipnorm == (clipnorm or None)


def test_checkpoint_names_the_run_state_by_role_and_restores_into_a_fresh_run(
    small_cnn_file, tmp_path
):
    config = tiny_config(
        "unused", tmp_path, mode="distill", method="kd,crd", teacher="",
        teacher_weights=str(small_cnn_file), student=str(small_cnn_file),
        method_kwargs={"crd": {"num_negatives": 4, "feat_dim": 4}},
    )
    saved = _distill_models(config).fitted
    saved.optimizer.build(saved.trainable_variables)  # As after a first step.
    teacher = {id(v) for v in saved.teacher.variables}  # Frozen: reloaded from its file.
    rng = np.random.default_rng(0)
    for variable in saved.variables + saved.optimizer.variables:
        if id(variable) not in teacher and variable.dtype.startswith("float"):
            variable.assign(rng.normal(size=variable.shape).astype(variable.dtype))
    checkpointing.save(tmp_path / "checkpoint.npz", saved, {"step": 2, "epoch": 0, "batch": 2})
    with np.load(tmp_path / "checkpoint.npz") as archive:
        names = set(archive.files)
    assert {"model/training_steps", "methods/1/memory_v1", "methods/1/memory_v2",
            "methods/1/z_v1", "methods/1/sample_labels"} <= names, sorted(names)
    assert any(name.startswith("optimizer/inner/") for name in names)
    assert not any("teacher" in name for name in names)  # Reloaded from its own file.
    fresh = _distill_models(config).fitted
    assert checkpointing.restore(tmp_path / "checkpoint.npz", fresh)["step"] == 2
    _assert_same_weights(fresh.get_weights(), saved.get_weights())
    _assert_same_weights([np.asarray(v) for v in fresh.optimizer.variables],
                         [np.asarray(v) for v in saved.optimizer.variables])


def test_checkpoint_of_another_configuration_or_model_file_is_refused(tmp_path):
    import dataclasses

    from experiments import artifacts

    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    model.optimizer.build(model.trainable_variables)
    config = tiny_config("data", tmp_path, mode="distill", teacher_weights="t.keras")
    checkpointing.save(tmp_path / artifacts.CHECKPOINT, model, {"step": 1, "epoch": 0, "batch": 1},
                       {"config": dataclasses.asdict(config),
                        "model_files": {"teacher_weights": "0" * 64}})
    artifacts.check_checkpoint(config, tmp_path, {"teacher_weights": "0" * 64})
    with pytest.raises(UsageError, match=r"^--output_dir='.*' holds the checkpoint of another "
                       r"configuration \(lr=0.01 \(now 0.5\)\); use another --output_dir or "
                       r"the same flags to resume.$"):
        artifacts.check_checkpoint(dataclasses.replace(config, lr=0.5), tmp_path, {})
    with pytest.raises(UsageError, match=r"^--output_dir='.*' holds the checkpoint of a run that "
                       r"read other contents from --teacher_weights='t.keras' \(the file changed "
                       r"since\); use another --output_dir, or restore the file to resume.$"):
        artifacts.check_checkpoint(config, tmp_path, {"teacher_weights": "1" * 64})
    # What changes only where and how a run runs may change on resumption.
    artifacts.check_checkpoint(dataclasses.replace(config, verbose=2, export="saved_model"),
                               tmp_path, {"teacher_weights": "0" * 64})


def test_epoch_pipeline_is_a_function_of_seed_and_epoch_and_skips_exactly():
    import tensorflow as tf

    from kerasdistill import data
    from kerasdistill.data.pipeline import epoch_pipeline

    images = np.random.default_rng(0).integers(0, 255, (20, 32, 32, 3)).astype(np.uint8)
    dataset = data.Dataset(
        train=tf.data.Dataset.from_tensor_slices((images, np.arange(20) % 2)), test=None,
        num_classes=2, num_train=20, mean=(0.5,) * 3, std=(0.25,) * 3, name="random",
    )

    def batches(epoch, skip=0, seed=1):
        ds = epoch_pipeline(dataset, 4, 5, epoch, seed, skip_batches=skip, with_index=True)
        return [(x["image"].numpy(), x["index"].numpy()) for x, _ in ds]

    full = batches(epoch=3)
    assert sorted(np.concatenate([i for _, i in full])) == list(range(20))
    resumed = batches(epoch=3, skip=2)
    assert len(resumed) == 3
    assert all(np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
               for a, b in zip(full[2:], resumed))
    assert not np.array_equal(full[0][1], batches(epoch=4)[0][1])
    # A second pass over the same dataset object (fit's symbolic build under a
    # strategy starts one) sees the same order.
    ds = epoch_pipeline(dataset, 4, 5, 3, 1, with_index=True)
    first, second = ([x["index"].numpy() for x, _ in ds] for _ in range(2))
    assert all(np.array_equal(a, b) for a, b in zip(first, second))
    assert not np.array_equal(full[0][0], batches(epoch=3, seed=2)[0][0])
    with pytest.raises(ValueError, match=r"skip_batches must be in \[0, steps_per_epoch=5\)"):
        batches(epoch=0, skip=5)
    # Unnormalized (what the runs train on): the same batches, before normalization.
    pixels = epoch_pipeline(dataset, 4, 5, 3, 1, with_index=True, normalize=False)
    for (x, _), (image, _) in zip(pixels, full):
        assert x["image"].dtype == tf.uint8
        np.testing.assert_allclose((x["image"].numpy() / 255.0 - 0.5) / 0.25, image, atol=1e-5)


def test_checkpoint_of_a_model_without_its_normalization_restores_into_the_runs_model(tmp_path):
    """A checkpoint from before the runs' models normalized their input still fits them.

    The normalization layer has no variables and the model behind it keeps its
    variable paths; it computes what the old model computed on the old inputs.
    """
    import types

    from experiments import model_specs
    from kerasdistill import models
    from kerasdistill.training import TorchSGD

    def compiled(model):
        model.compile(optimizer=TorchSGD(0.1, momentum=0.9), loss="mse")
        model.optimizer.build(model.trainable_variables)
        return model

    keras.utils.set_random_seed(0)
    old = compiled(models.get("resnet8", num_classes=2))
    old.optimizer.momentums[0].assign(old.optimizer.momentums[0] + 1.0)
    checkpointing.save(tmp_path / "old.npz", old, {"step": 7, "epoch": 2, "batch": 1})
    stats = types.SimpleNamespace(mean=(0.5,) * 3, std=(0.25,) * 3)
    new = compiled(model_specs.normalizing(models.get("resnet8", num_classes=2), stats))
    assert checkpointing.restore(tmp_path / "old.npz", new)["step"] == 7
    _assert_same_weights(new.get_weights(), old.get_weights())
    np.testing.assert_array_equal(new.optimizer.momentums[0], old.optimizer.momentums[0])
    pixels = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype(np.float32)
    np.testing.assert_allclose(
        new.predict(pixels, verbose=0), old.predict((pixels / 255 - 0.5) / 0.25, verbose=0),
        rtol=1e-4, atol=1e-5,
    )


@pytest.mark.integration
def test_sigterm_to_the_script_process_saves_and_exits_143(tiny_folder, tmp_path):
    import subprocess
    import sys
    import time

    from tests.conftest import REPO

    out = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, str(REPO / "experiments" / "cifar100.py"), "--mode=student",
         "--student=resnet8", f"--dataset={tiny_folder}", "--epochs=500", "--batch_size=8",
         "--checkpoint_every_steps=1", f"--output_dir={out}", "--verbose=0"],
        cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    try:
        deadline = time.time() + 300
        while not (out / "checkpoint.npz").exists():
            assert proc.poll() is None and time.time() < deadline, "no checkpoint was written"
            time.sleep(0.5)
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 143, stderr[-2000:]
    assert "Stopped by SIGTERM at step" in stderr.strip().splitlines()[-1]
    step = checkpointing.read_metadata(out / "checkpoint.npz")["step"]
    assert 0 < step < 500 * 3
    assert not (out / "model.keras").exists()
