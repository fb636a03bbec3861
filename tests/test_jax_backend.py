"""The core (models, methods, Distiller, optimizer) on the JAX backend, in a subprocess."""

import json
import os
import subprocess
import sys

import numpy as np

from tests.conftest import FIXTURES, REPO, require


def test_core_trains_and_matches_reference_under_jax():
    import jax  # noqa: F401  (a missing JAX must fail here, not skip)

    env = {**os.environ, "KERAS_BACKEND": "jax", "JAX_DEFAULT_MATMUL_PRECISION": "highest"}
    proc = subprocess.run(
        [sys.executable, str(REPO / "tests" / "backends" / "jax_check.py"), str(require(FIXTURES))],
        env=env, capture_output=True, text=True, timeout=900, cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["backend"] == "jax"
    for term in ("loss", "loss_ce", "loss_kd", "loss_msd_sw", "loss_msd_fw", "loss_crd",
                 "loss_tckd", "loss_nckd", "loss_fitnet", "loss_at"):
        assert np.isfinite(result["losses"][term]), (term, result["losses"])
    assert result["losses"]["loss_crd"] > 0
    assert result["teacher_unchanged"] and result["student_changed"] and result["crd_z_set"]
    assert result["resnet8x4_relative_logit_error"] <= 1e-5
