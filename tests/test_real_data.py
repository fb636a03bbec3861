"""End to end on real images: the shared CIFAR-10 archive (50k train / 10k test JPEGs)."""

import numpy as np
import pytest
import tensorflow as tf

from experiments import runner
from kerasdistill import data
from tests.conftest import CIFAR10_ARCHIVE, require

pytestmark = pytest.mark.integration


def test_teacher_then_kd_student_on_real_cifar10_beat_chance_and_export(tmp_path):
    archive = str(require(CIFAR10_ARCHIVE))
    common = dict(
        dataset=archive, epochs=2, steps_per_epoch=120, batch_size=64, verbose=0,
        teacher="resnet20", student="resnet8",
    )
    teacher = runner.run(
        runner.RunConfig(mode="teacher", output_dir=str(tmp_path / "teacher"), **common)
    )
    kd = runner.run(
        runner.RunConfig(
            mode="distill", method="kd", ce_weight=0.1,
            method_kwargs={"kd": {"weight": 0.9, "temperature": 4.0}},
            teacher_weights=str(tmp_path / "teacher" / "model.keras"),
            output_dir=str(tmp_path / "kd"), **common,
        )
    )
    assert kd["num_train"] == 50_000
    assert teacher["test_accuracy"] > 0.25, teacher
    assert kd["test_accuracy"] > 0.2, kd

    # The exported SavedModel, reloaded, classifies raw [0, 255] test pixels as well.
    dataset = data.load(archive)
    served = tf.saved_model.load(str(tmp_path / "kd" / "saved_model"))
    correct = total = 0
    for images, labels in dataset.test.batch(1000):
        logits = served.serve(tf.cast(images, tf.float32)).numpy()
        correct += int((logits.argmax(-1) == labels.numpy()).sum())
        total += len(labels)
    assert total == 10_000
    np.testing.assert_allclose(correct / total, kd["test_accuracy"], atol=1e-3)
