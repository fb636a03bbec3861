"""CRD on real images: the memory banks fill with unit rows and the loss falls."""

import dataclasses

import keras
import numpy as np
import pytest

import kerasdistill
from kerasdistill import data, methods, models
from kerasdistill.training import TorchSGD
from tests.conftest import CIFAR10_ARCHIVE, require

pytestmark = pytest.mark.integration

NUM_TRAIN = 1000  # every 50th training image: 100 of each class
BATCH = 50


def test_crd_memory_fills_and_loss_falls_on_real_cifar10():
    full = data.load(str(require(CIFAR10_ARCHIVE)))
    subset = dataclasses.replace(
        full, train=full.train.shard(full.num_train // NUM_TRAIN, 0), num_train=NUM_TRAIN
    )
    labels = subset.train_labels()
    assert np.bincount(labels).tolist() == [100] * 10
    crd = methods.CRD(train_labels=labels, num_negatives=1024)
    distiller = kerasdistill.Distiller(
        models.get("resnet20", num_classes=10), models.get("resnet8", num_classes=10), crd
    )
    distiller.compile(optimizer=TorchSGD(0.05))
    initial_bank = keras.ops.convert_to_numpy(crd.memory_v1).copy()
    steps = NUM_TRAIN // BATCH
    history = distiller.fit(
        data.train_pipeline(subset, BATCH, with_index=True, seed=0).repeat(),
        epochs=4, steps_per_epoch=steps, verbose=0,
    ).history

    for bank in (crd.memory_v1, crd.memory_v2):
        rows = keras.ops.convert_to_numpy(bank)
        # Every sample was a positive at least once: its row was updated and re-normalized.
        np.testing.assert_allclose(np.linalg.norm(rows, axis=1), 1.0, rtol=1e-4)
    assert not np.allclose(keras.ops.convert_to_numpy(crd.memory_v1), initial_bank)
    assert float(keras.ops.convert_to_numpy(crd.z_v1)) > 0
    losses = history["loss_crd"]
    assert np.all(np.isfinite(losses))
    # The first pass fills the banks (the loss moves from random rows to real
    # embeddings); from then on training lowers it.
    assert losses[-1] < losses[1], losses
