"""Mixed precision: losses stay float32 and finite on large activations, on TF and JAX."""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

import kerasdistill
from kerasdistill import methods, models
from kerasdistill.training import TorchSGD
from tests.backends import mixed_precision_check
from tests.conftest import REPO

TOLERANCE = 1e-2


def _assert_close(errors):
    assert len(errors) == 8, errors  # Every term of the six methods.
    bad = {term: err for term, err in errors.items() if not err <= TOLERANCE}
    assert not bad, bad


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_every_method_matches_float32_under_tensorflow(policy):
    _assert_close(mixed_precision_check.relative_errors(policy))


@pytest.mark.integration  # A JAX subprocess.
def test_every_method_matches_float32_under_jax():
    env = {**os.environ, "KERAS_BACKEND": "jax"}
    proc = subprocess.run(
        [sys.executable, "-m", "tests.backends.mixed_precision_check"],
        env=env, capture_output=True, text=True, timeout=600, cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["backend"] == "jax"
    _assert_close(result["mixed_float16"])
    _assert_close(result["mixed_bfloat16"])


def test_distiller_trains_under_mixed_float16_with_loss_scaling():
    keras.config.set_dtype_policy("mixed_float16")
    try:
        teacher = models.get("resnet8", num_classes=4, input_shape=(16, 16, 3))
        student = models.get("resnet8", num_classes=4, input_shape=(16, 16, 3))
        distiller = kerasdistill.Distiller(
            teacher, student, [methods.KD(), methods.MSDCRD(scales=(1, 2))]
        )
        distiller.compile(optimizer=TorchSGD(0.01), metrics=["accuracy"], run_eagerly=True)
        x = np.random.default_rng(0).normal(size=(8, 16, 16, 3)).astype("float32") * 100
        y = np.arange(8) % 4
        history = distiller.fit(x, y, batch_size=8, epochs=1, verbose=0)
    finally:
        keras.config.set_dtype_policy("float32")
    assert isinstance(distiller.optimizer, keras.optimizers.LossScaleOptimizer)
    assert student.layers[-1].compute_dtype == "float16"
    for name in ("loss", "loss_kd", "loss_msd_sw", "loss_msd_fw"):
        assert np.isfinite(history.history[name][-1]), (name, history.history)
