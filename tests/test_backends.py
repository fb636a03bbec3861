"""The library on the JAX and PyTorch backends, in one subprocess per backend.

tests/backends/backend_check.py trains every method through the Distiller,
saves and loads `.keras` files and converts reference checkpoints under the
backend; these tests hold its report to the method terms the README
documents, to the RepDistiller fixtures and, on PyTorch, to the whole zoo.
The PyTorch run also builds and runs every zoo model (PyTorch refuses
parameter names with dots, which no other backend checks); the JAX run leaves
that out, as building each model's initializers op by op takes minutes there.
"""

import importlib
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from kerasdistill import models
from tests.backends import backend_check
from tests.conftest import FIXTURES, REPO, require

# Subprocesses of minutes each: the integration tier.
pytestmark = pytest.mark.integration

BACKENDS = ["jax", "torch"]
# Each run's logged terms besides `loss`, `loss_ce` and `accuracy` (README, "Methods").
TERMS = {
    "kd": {"loss_kd"},
    "fitnet": {"loss_fitnet"},
    "at": {"loss_at"},
    "crd": {"loss_crd"},
    "dkd": {"loss_tckd", "loss_nckd"},
    "msdcrd": {"loss_msd_sw", "loss_msd_fw"},
    "kd+msdcrd": {"loss_kd", "loss_msd_sw", "loss_msd_fw"},
}
# Relative logit error of a correct conversion (fixtures README, 4.6).
PARITY = 1e-5


def _run(backend, *flags):
    importlib.import_module(backend)  # A missing backend must fail here, not skip.
    env = {**os.environ, "KERAS_BACKEND": backend, "JAX_DEFAULT_MATMUL_PRECISION": "highest"}
    proc = subprocess.run(
        [sys.executable, "-m", "tests.backends.backend_check", str(require(FIXTURES)), *flags],
        env=env, capture_output=True, text=True, timeout=600, cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["backend"] == backend
    return result


@pytest.fixture(scope="module")
def jax_report():
    return _run("jax")


@pytest.fixture(scope="module")
def torch_report():
    return _run("torch", "--zoo")


@pytest.fixture(params=BACKENDS)
def report(request):
    return request.getfixturevalue(f"{request.param}_report")


def test_every_method_trains_the_student_and_leaves_the_teacher_unchanged(report):
    assert set(report["methods"]) == set(TERMS)
    for name, run in report["methods"].items():
        assert set(run["terms"]) == {"loss", "loss_ce", "accuracy"} | TERMS[name], name
        assert all(np.isfinite(v) for v in run["terms"].values()), (name, run["terms"])
        assert run["teacher_unchanged"], name
        assert run["student_changed"], name


def test_evaluate_and_predict_run_the_student(report):
    assert np.isfinite(report["evaluate_loss"])
    assert report["evaluate_keys"] == ["accuracy", "loss"]
    assert report["predict_vs_student"] == 0.0


def test_an_applications_teacher_and_a_sequential_student(report):
    run = report["your_models"]
    assert run["softmax_layer"] == "predictions"
    assert run["taps"]["teacher"] == {"logits": "logits", "feat_last": "block_16_project_BN"}
    assert run["taps"]["student"] == {"logits": "logits", "feat_last": "conv2d_1"}
    assert set(run["terms"]) == {"loss", "loss_ce", "loss_kd", "loss_msd_sw", "loss_msd_fw"}
    assert all(np.isfinite(v) for v in run["terms"].values()), run["terms"]
    assert run["student_changed"] and run["student_finite"]


def test_converted_checkpoints_reproduce_the_reference_logits(report):
    assert set(report["converter"]) == {"resnet8x4", "ShuffleV1"}
    for name, error in report["converter"].items():
        assert error <= PARITY, (name, error)


def test_keras_file_round_trip_keeps_the_logits(report):
    # The same weights, bit for bit, and the same operations on the same input.
    assert report["keras_file"] == {"student": 0.0, "ShuffleV1": 0.0}


def test_every_zoo_model_runs_under_torch(torch_report):
    zoo = torch_report["zoo"]
    assert sorted(zoo) == models.available()
    for name, run in zoo.items():
        assert run == {"shape": [1, backend_check.NUM_CLASSES], "finite": True}, name
