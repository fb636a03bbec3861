"""benchmarks/gpu_throughput.py runs under JAX with TensorFlow unimportable (tiny CPU run)."""

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import REPO

# Integration tier: each test runs the benchmark script in a subprocess.
pytestmark = pytest.mark.integration

SCRIPT = REPO / "benchmarks" / "gpu_throughput.py"
# Runs the script with every import of TensorFlow (or tfds) failing loudly.
RUN_WITHOUT_TENSORFLOW = """
import runpy, sys

class BlockTensorFlow:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("tensorflow", "tensorflow_datasets", "tf_keras"):
            sys.stderr.write(f"BLOCKED IMPORT {name}\\n")
            raise ImportError(f"{name} is blocked in this test")
        return None

sys.meta_path.insert(0, BlockTensorFlow())
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def _run(*flags):
    env = {**os.environ, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu"}
    return subprocess.run(
        [sys.executable, "-c", RUN_WITHOUT_TENSORFLOW, str(SCRIPT), *flags],
        env=env, capture_output=True, text=True, timeout=600, cwd=REPO,
    )


def test_tiny_run_reports_throughput_table_and_json_without_tensorflow(tmp_path):
    rng = np.random.default_rng(0)
    data = tmp_path / "train.npz"
    np.savez(
        data,
        x_train=rng.integers(0, 256, (40, 32, 32, 3), dtype="uint8"),
        y_train=rng.integers(0, 100, (40, 1)),
    )
    out = tmp_path / "out"

    proc = _run("--tiny", "--methods=kd,kd+msdcrd", f"--data={data}", f"--output_dir={out}")

    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "BLOCKED IMPORT" not in proc.stderr
    record = json.loads((out / "gpu_throughput.json").read_text())
    assert record["machine"]["backend"] == "jax"
    assert record["machine"]["tensorflow_imported"] is False
    assert record["config"]["entries"] == ["kd", "kd+msdcrd"]
    assert (record["config"]["teacher"], record["config"]["student"]) == ("resnet8", "resnet8")
    assert (record["config"]["steps"], record["config"]["batch_sizes"]) == (2, [8])
    assert "(40 images)" in record["config"]["data"]
    rows = record["results"]
    assert [(r["method"], r["batch_size"]) for r in rows] == [("kd", 8), ("kd+msdcrd", 8)]
    for row in rows:
        assert row["images_per_s"] > 0 and math.isfinite(row["mean_loss"])
        assert math.isclose(row["ms_per_step"], 8 * 1000 / row["images_per_s"], rel_tol=1e-9)
        minutes = 240 * 50_000 / row["images_per_s"] / 60
        assert math.isclose(row["run_minutes"], minutes, rel_tol=1e-9)
        assert row["first_step_s"] > 0 and row["student_compute_dtype"] == "float32"
        assert row["peak_memory_gib"] is None  # JAX reports no memory statistics on CPU

    table = (out / "gpu_throughput.md").read_text()
    assert table in proc.stdout
    assert "| method | batch | images/s | ms/step | 240 epochs x 50,000 images (min) |" in table
    kd_row = next(line for line in table.splitlines() if line.startswith("| kd | 8 |"))
    assert kd_row.endswith("| n/a |")
    assert f"{rows[0]['images_per_s']:,.0f}" in kd_row
    assert "TensorFlow imported: False" in table


def test_unknown_method_fails_before_building_models():
    proc = _run("--tiny", "--methods=kd+bogus")

    assert proc.returncode != 0
    assert "Unknown method 'bogus' in --methods entry 'kd+bogus'" in proc.stderr
    assert "BLOCKED IMPORT" not in proc.stderr
