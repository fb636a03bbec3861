"""experiments/imagenet.py end to end on real ImageNet photos (the shared sample)."""

import json
import shutil
import subprocess
import sys
import tarfile

import numpy as np
import pytest

from tests.conftest import REPO, SHARED

SAMPLES_ARCHIVE = SHARED / "data" / "imagenet-1k-samples.tar.gz"
# Eight classes, so that top-5 can miss.
WNIDS = 8


@pytest.fixture(scope="module")
def ilsvrc_folder(tmp_path_factory):
    """`WNIDS` classes of the shared photos in the ILSVRC layout (train/ and val/ hold the same)."""
    if not SAMPLES_ARCHIVE.exists():
        pytest.fail(f"Required shared file {SAMPLES_ARCHIVE} is missing; set KERASDISTILL_SHARED.")
    root = tmp_path_factory.mktemp("ilsvrc")
    with tarfile.open(SAMPLES_ARCHIVE) as tar:
        tar.extractall(root / "all", filter="data")
    classes = sorted(p for p in (root / "all").glob("*/*") if p.is_dir())[:WNIDS]
    for split in ("train", "val"):
        for folder in classes:
            shutil.copytree(folder, root / split / folder.name)
    return root


@pytest.mark.integration
def test_imagenet_script_distils_exports_and_reports_top5(ilsvrc_folder, tmp_path):
    from kerasdistill import models

    teacher = tmp_path / "teacher.weights.h5"
    models.get("ResNet18", num_classes=WNIDS).save_weights(teacher)
    out = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, str(REPO / "experiments" / "imagenet.py"),
         f"--dataset={ilsvrc_folder}", "--teacher=ResNet18", "--student=ResNet18",
         f"--teacher_weights={teacher}", "--method=kd,msdcrd", "--batch_size=4",
         "--epochs=1", "--steps_per_epoch=1", "--export=saved_model,keras",
         f"--output_dir={out}", "--verbose=0"],
        cwd=REPO, capture_output=True, text=True, timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["num_train"] == WNIDS and metrics["config"]["input_pipeline"] == "imagenet"
    assert "teacher_test_top5" in metrics
    # The scores, recomputed in NumPy from the saved student on the validation photos.
    import keras

    from kerasdistill import data

    student = keras.saving.load_model(out / "model.keras")
    dataset = data.load_imagenet_folder(str(ilsvrc_folder))
    batches = list(data.imagenet_eval_pipeline(dataset, batch_size=4, normalize=False))
    logits = np.concatenate([student.predict(x, verbose=0) for x, _ in batches])
    labels = np.concatenate([y.numpy() for _, y in batches])
    ranks = np.argsort(-logits, axis=1)
    assert len(labels) == WNIDS
    assert metrics["test_accuracy"] == pytest.approx(np.mean(ranks[:, 0] == labels))
    assert metrics["test_top5"] == pytest.approx(np.mean((ranks[:, :5] == labels[:, None]).any(1)))

    import tensorflow as tf

    served = tf.saved_model.load(str(out / "saved_model")).signatures["serving_default"]
    pixels = np.random.default_rng(0).uniform(0, 255, (2, 224, 224, 3)).astype("float32")
    logits = served(images=tf.constant(pixels))["logits"].numpy()
    assert logits.shape == (2, WNIDS) and np.all(np.isfinite(logits))
    assert (out / "model.keras").exists()
