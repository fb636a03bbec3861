"""On JAX, DataParallel over 2 host devices gives the 1-device losses and weights."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import REPO

# Integration tier: a JAX subprocess.
pytestmark = pytest.mark.integration


def test_data_parallel_on_two_jax_devices_equals_one_device():
    env = {
        **os.environ,
        "KERAS_BACKEND": "jax",
        "XLA_FLAGS": "--xla_force_host_platform_device_count=2",
    }
    proc = subprocess.run(
        [sys.executable, "-m", "tests.backends.jax_data_parallel_check"],
        env=env, capture_output=True, text=True, timeout=900, cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["devices"] == 2
    assert len(result["one"]) == 3
    np.testing.assert_allclose(result["many"], result["one"], rtol=1e-5)
    assert result["max_weight_change"] > 1e-3  # The runs trained.
    assert result["max_weight_diff"] < 1e-5
