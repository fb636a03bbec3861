"""The two ImageNet pairs at 224 px: every method trains a step; the student exports."""

import numpy as np
import pytest
import tensorflow as tf

import kerasdistill
from kerasdistill import methods, models
from kerasdistill.data.imagenet import IMAGENET_MEAN, IMAGENET_STD
from kerasdistill.training import TorchSGD, export_saved_model

PAIRS = [("ResNet34", "ResNet18"), ("ResNet50_imagenet", "MobileNetV1")]
BATCH = 4


DATA = methods.TrainingData(train_labels=np.arange(2000) % 1000, steps_per_epoch=10)


def _methods():
    return [
        methods.KD(temperature=1.0, weight=0.5),
        methods.DKD(warmup_epochs=1, temperature=1.0),
        methods.CRD(num_negatives=64),
        # Default grids (1, 2, 4) on the 7x7 last stage: adaptive regions.
        methods.MSDCRD(),
        methods.FitNet(),
        methods.AT(),
    ]


@pytest.mark.integration
@pytest.mark.parametrize("teacher_name, student_name", PAIRS)
def test_every_method_trains_a_step_at_224(teacher_name, student_name, tmp_path):
    teacher = models.get(teacher_name, num_classes=1000)
    student = models.get(student_name, num_classes=1000)
    distiller = kerasdistill.Distiller(teacher, student, _methods(), training_data=DATA)
    distiller.compile(optimizer=TorchSGD(0.1, momentum=0.9, weight_decay=1e-4))
    rng = np.random.default_rng(0)
    images = rng.normal(size=(BATCH, 224, 224, 3)).astype("float32")
    x = {"image": images, "index": np.arange(BATCH, dtype="int32") * 7}
    y = rng.integers(0, 1000, size=BATCH)
    before = [np.array(w) for w in student.trainable_weights]
    logs = distiller.train_on_batch(x, y, return_dict=True)
    for term in ("loss_ce", "loss_kd", "loss_tckd", "loss_nckd", "loss_crd",
                 "loss_msd_sw", "loss_msd_fw", "loss_fitnet", "loss_at"):
        assert np.isfinite(logs[term]), (term, logs)
    for term in ("loss_ce", "loss_kd", "loss_crd", "loss_msd_sw", "loss_fitnet"):
        assert logs[term] > 0, (term, logs)
    moved = sum(not np.array_equal(a, np.asarray(b)) for a, b in zip(before, student.trainable_weights))
    assert moved == len(before)

    pixels = rng.uniform(0, 255, size=(2, 224, 224, 3)).astype("float32")
    export_saved_model(student, tmp_path / "saved_model", IMAGENET_MEAN, IMAGENET_STD)
    served = tf.saved_model.load(str(tmp_path / "saved_model")).signatures["serving_default"]
    logits = served(images=tf.constant(pixels))["logits"].numpy()
    normalized = (pixels / 255.0 - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD)
    expected = np.asarray(student(normalized.astype("float32"), training=False))
    assert logits.shape == (2, 1000)
    np.testing.assert_allclose(logits, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())
