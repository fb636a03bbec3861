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
WNIDS = 4


@pytest.fixture(scope="module")
def ilsvrc_folder(tmp_path_factory):
    """4 classes of the shared photos in the ILSVRC layout (train/ and val/ hold the same)."""
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


@pytest.mark.slow
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
    assert 0.0 <= metrics["test_accuracy"] <= 1.0
    assert metrics["test_top5"] == 1.0  # 4 classes: the true one is always among the top 5.
    assert "teacher_test_top5" in metrics

    import tensorflow as tf

    served = tf.saved_model.load(str(out / "saved_model")).signatures["serving_default"]
    pixels = np.random.default_rng(0).uniform(0, 255, (2, 224, 224, 3)).astype("float32")
    logits = served(images=tf.constant(pixels))["logits"].numpy()
    assert logits.shape == (2, WNIDS) and np.all(np.isfinite(logits))
    assert (out / "model.keras").exists()
