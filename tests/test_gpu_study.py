"""benchmarks/gpu_study.py: tiny CPU runs on JAX and PyTorch with TensorFlow unimportable.

The study makes TensorFlow unimportable in its own processes, as on the
device; independently of that, the test blocks it in every Python process of
the run (the study runs each part in a subprocess) through a `sitecustomize`
module on `PYTHONPATH`, and fails on any import attempt that reaches it but
Keras's optional probe.
"""

import io
import json
import math
import os
import subprocess
import sys
import tarfile
import time

import numpy as np
import pytest

from tests.conftest import REPO

sys.path.insert(0, str(REPO / "benchmarks"))

import gpu_study  # noqa: E402  (defines no flags when imported)
from experiments import report  # noqa: E402

SCRIPT = REPO / "benchmarks" / "gpu_study.py"
CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
           "truck")
# Every import of TensorFlow fails with ImportError, as where it is not installed, and each
# attempt is reported with the file that made it; `importlib.util.find_spec` probes (torch's
# trace rules) get a spec without origin, which they skip.
SITECUSTOMIZE = """
import importlib.abc
import importlib.machinery
import sys

class Refuse(importlib.abc.Loader):
    def create_module(self, spec):
        frame = sys._getframe(1)
        while frame and "importlib" in frame.f_code.co_filename:
            frame = frame.f_back
        where = frame.f_code.co_filename if frame else "?"
        sys.stderr.write(f"BLOCKED IMPORT {spec.name} FROM {where}\\n")
        raise ImportError(f"{spec.name} is blocked in this test")

    def exec_module(self, module):
        pass

class BlockTensorFlow(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("tensorflow", "tensorflow_datasets", "tf_keras"):
            return importlib.machinery.ModuleSpec(name, Refuse())
        return None

sys.meta_path.insert(0, BlockTensorFlow())
"""
# Keras's optional probe: `keras.utils.set_random_seed` imports TensorFlow if it can, and goes
# on without it.
ALLOWED_PROBES = (os.path.join("keras", "src", "utils", "module_utils.py"),)
# Faster XLA compilation on the CPU (the tests check the flow, not the speed).
FAST_XLA = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"

# Subprocesses of minutes on 2 cores: the integration tier (CI runs it).
pytestmark = pytest.mark.integration


def _archive(path, train_per_class=20, test_per_class=8):
    """A CIFAR-10-shaped JPEG archive: train/<class>/NNNN.jpg and test/<class>/NNNN.jpg."""
    from PIL import Image

    rng = np.random.default_rng(0)
    with tarfile.open(path, "w:gz") as tar:
        for split, count in (("train", train_per_class), ("test", test_per_class)):
            for label, name in enumerate(CLASSES):
                for i in range(count):
                    image = rng.integers(0, 256, (32, 32, 3)).astype("uint8")
                    image[..., label % 3] = 25 * label  # Learnable: one channel names the class.
                    buffer = io.BytesIO()
                    Image.fromarray(image).save(buffer, "JPEG", quality=75)
                    info = tarfile.TarInfo(f"cifar10/{split}/{name}/{i:04d}.jpg")
                    info.size = buffer.tell()
                    buffer.seek(0)
                    tar.addfile(info, buffer)
    return path


def _run(tmp_path, *flags, backend=None):
    site = tmp_path / "site"
    site.mkdir(exist_ok=True)
    (site / "sitecustomize.py").write_text(SITECUSTOMIZE)
    # One PyTorch thread: on a shared CPU more are many times slower.
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": FAST_XLA, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": str(site)}
    env.pop("KERAS_BACKEND", None)
    if backend:
        env["KERAS_BACKEND"] = backend
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), *flags, f"--cache_dir={tmp_path / 'cache'}"],
        env=env, capture_output=True, text=True, timeout=600, cwd=REPO,
    )
    blocked = [line for line in proc.stderr.splitlines() if line.startswith("BLOCKED IMPORT")]
    unexpected = [line for line in blocked if not line.endswith(ALLOWED_PROBES)]
    assert not unexpected, unexpected
    return proc


def _check_throughput(record, backend, methods):
    assert record["machine"]["backend"] == backend
    assert record["machine"]["tensorflow_imported"] is False
    rows = record["results"]
    assert [(r["method"], r["batch_size"]) for r in rows] == [(m, 8) for m in methods]
    for row in rows:
        assert row["backend"] == backend and row["images_per_s"] > 0
        assert math.isfinite(row["mean_loss"]) and row["first_step_s"] > 0
        assert math.isclose(row["ms_per_step"], 8 * 1000 / row["images_per_s"], rel_tol=1e-9)
        minutes = 240 * 50_000 / row["images_per_s"] / 60
        assert math.isclose(row["run_minutes"], minutes, rel_tol=1e-9)
        assert row["peak_memory_gib"] is None  # Neither backend reports memory on the CPU.


def _accuracy_table(record):
    order = {"teacher": -1, **{name: i for i, name in enumerate(gpu_study.TABLE_ORDER)}}
    runs = sorted(record["runs"], key=lambda run: order[run["entry"]])
    return report.markdown_table(gpu_study.table_runs({"runs": runs}), {})


def test_tiny_study_throughput_on_jax_and_torch_then_accuracy_on_jax(tmp_path):
    archive = _archive(tmp_path / "cifar10-jpeg.tar.gz")
    out = tmp_path / "out"

    proc = _run(
        tmp_path, "--tiny", f"--archive={archive}", f"--output_dir={out}",
        "--methods=kd,crd", "--runs=kd,student,dkd",
    )

    assert proc.returncode == 0, proc.stderr[-4000:]
    study = json.loads((out / "gpu_study.json").read_text())
    assert [(s["name"], s["status"]) for s in study["stages"]] == [
        ("throughput_jax", "ok"), ("throughput_torch", "ok"), ("accuracy", "ok"),
    ]
    for backend in ("jax", "torch"):
        record = json.loads((out / f"throughput_{backend}.json").read_text())
        _check_throughput(record, backend, ["kd", "crd"])
        assert record["skipped"] == []

    record = json.loads((out / "accuracy.json").read_text())
    assert record["machine"]["backend"] == "jax"
    assert record["machine"]["tensorflow_imported"] is False
    # The whole archive (fewer images than --tiny's caps), classes in CIFAR-10's order.
    assert (record["data"]["num_train"], record["data"]["num_test"]) == (200, 80)
    assert record["plan"]["steps_per_epoch"] == 200 // 16
    assert (record["plan"]["teacher_epochs"], record["plan"]["student_epochs"]) == (2, 1)
    runs = {run["entry"]: run for run in record["runs"]}
    assert list(runs) == ["teacher", "kd", "student", "dkd"]
    for run in runs.values():
        # Every one of the 80 test images is scored once: a whole number of them is right.
        assert run["test_accuracy"] * 80 == pytest.approx(round(run["test_accuracy"] * 80))
        assert not run["cut_short"]
        assert run["steps"] == run["epochs"] * (200 // 16)
        assert len(run["epoch_losses"]) == run["epochs"]
        assert all(math.isfinite(loss) for loss in run["epoch_losses"])
        # The host-fed step decay reached the optimizer: past the last milestone, LR / 1000.
        assert run["final_learning_rate"] == pytest.approx(0.05e-3)
    assert runs["teacher"]["epochs"] == 2 and runs["kd"]["epochs"] == 1
    # The recipe of experiments/flags/resnet56_resnet20_*.cfg, DKD's warm-up scaled to 1 epoch.
    assert runs["kd"]["ce_weight"] == 0.1
    assert runs["kd"]["method_kwargs"] == {"kd": {"weight": 0.9, "temperature": 4.0}}
    assert runs["dkd"]["method_kwargs"]["dkd"]["warmup_epochs"] == pytest.approx(20 / 240)
    assert runs["dkd"]["method_kwargs"]["dkd"]["nckd_weight"] == 2.0
    assert runs["student"]["mode"] == "student" and runs["student"]["method_kwargs"] == {}
    # The learnable archive: the teacher beats chance after two epochs.
    assert runs["teacher"]["test_accuracy"] > 0.2

    table = _accuracy_table(record)
    assert "| resnet8_kd | resnet8 -> resnet8 | kd |" in table
    markdown = (out / "gpu_study.md").read_text()
    assert table in markdown and markdown in proc.stdout
    assert "| kd | 8 |" in markdown and "of the 13,333 images/s goal" in markdown


def test_tiny_accuracy_on_torch_alone(tmp_path):
    archive = _archive(tmp_path / "cifar10-jpeg.tar.gz", train_per_class=10, test_per_class=4)
    out = tmp_path / "out"

    proc = _run(
        tmp_path, "--tiny", "--stages=accuracy", "--accuracy_backend=torch",
        f"--archive={archive}", f"--output_dir={out}", "--runs=kd+msdcrd,student,msdcrd",
    )

    assert proc.returncode == 0, proc.stderr[-4000:]
    study = json.loads((out / "gpu_study.json").read_text())
    assert [(s["name"], s["status"]) for s in study["stages"]] == [("accuracy", "ok")]
    assert not list(out.glob("throughput_*.json"))
    record = json.loads((out / "accuracy.json").read_text())
    assert record["machine"]["backend"] == "torch"
    assert record["machine"]["tensorflow_imported"] is False
    # No throughput record to scale by: every student costs as much as the first.
    assert record["plan"]["cost_ratios"] == {"kd+msdcrd": 1.0, "student": 1.0, "msdcrd": 1.0}
    runs = {run["entry"]: run for run in record["runs"]}
    assert list(runs) == ["teacher", "kd+msdcrd", "student", "msdcrd"]
    for run in runs.values():
        assert run["final_learning_rate"] == pytest.approx(0.05e-3)
    assert runs["kd+msdcrd"]["method"] == "kd,msdcrd"
    assert runs["kd+msdcrd"]["method_kwargs"] == {"kd": {"weight": 1.0, "temperature": 4.0},
                                                  "msdcrd": {}}
    assert runs["msdcrd"]["ce_weight"] == 1.0 and runs["msdcrd"]["method_kwargs"] == {
        "msdcrd": {}}
    markdown = (out / "gpu_study.md").read_text()
    assert _accuracy_table(record) in markdown
    assert "## Throughput\n\nNot measured." in markdown


def test_throughput_stage_skips_entries_past_its_deadline(tmp_path):
    out = tmp_path / "out"

    proc = _run(
        tmp_path, "--tiny", "--stage=throughput", f"--deadline={time.time()}",
        f"--output_dir={out}", "--methods=kd,dkd", "--batch_sizes=8,16", backend="torch",
    )

    assert proc.returncode == 0, proc.stderr[-4000:]
    record = json.loads((out / "throughput_torch.json").read_text())
    _check_throughput(record, "torch", ["kd"])  # The first entry always runs.
    assert record["skipped"] == ["dkd at batch 8", "kd at batch 16", "dkd at batch 16"]
    assert "Skipped (out of time): dkd at batch 8, kd at batch 16" in (
        out / "gpu_study.md").read_text()


def test_run_recipes_come_from_the_flagfiles():
    kd = gpu_study.run_recipe("resnet56_resnet20", "kd")
    assert kd["methods"] == [("kd", {"weight": 0.9, "temperature": 4.0})]
    assert (kd["ce_weight"], kd["lr"], kd["momentum"], kd["weight_decay"]) == (
        0.1, 0.05, 0.9, 5e-4)
    assert (kd["batch_size"], kd["epochs"]) == (64, 240)
    crd = gpu_study.run_recipe("resnet56_resnet20", "crd")
    assert crd["methods"][0][1]["num_negatives"] == 16384 and crd["ce_weight"] == 1.0
    both = gpu_study.run_recipe("resnet56_resnet20", "kd+msdcrd")
    assert both["source"] == ["resnet56_resnet20_msdcrd.cfg"] and both["ce_weight"] == 1.0
    alone = gpu_study.run_recipe("resnet56_resnet20", "msdcrd")
    assert alone["methods"] == [("msdcrd", {})] and alone["ce_weight"] == 1.0
    student = gpu_study.run_recipe("resnet56_resnet20", "student")
    assert student["methods"] == [] and student["lr"] == 0.05
    with pytest.raises(ValueError, match="configures method 'bogus'"):
        gpu_study.run_recipe("resnet56_resnet20", "kd+bogus")
    with pytest.raises(ValueError, match="no flagfile"):
        gpu_study.run_recipe("nosuch_pair", "kd")
    assert gpu_study.scale_to_epochs({"warmup_epochs": 20, "nckd_weight": 2.0}, 6, 240) == {
        "warmup_epochs": 0.5, "nckd_weight": 2.0}


def test_epoch_budget_arithmetic():
    # 100 s at 3 s per epoch: 33 epochs, capped, never below 1.
    assert gpu_study.epochs_that_fit(100, 3.0, 50) == 33
    assert gpu_study.epochs_that_fit(100, 3.0, 10) == 10
    assert gpu_study.epochs_that_fit(1, 3.0, 10) == 1
    # Six students, 2 s per epoch for the first, CRD 1.5 times as costly, 10 s of compilation
    # and evaluation for each of the five later ones: (200 - 50) / (2 x 6.5) = 11.5 -> 11.
    ratios = {"kd": 1.0, "student": 1.0, "msdcrd": 1.0, "kd+msdcrd": 1.0, "dkd": 1.0,
              "crd": 1.5}
    assert gpu_study.student_epochs(200, 2.0, ratios, 10, 15) == 11
    assert gpu_study.student_epochs(200, 2.0, ratios, 10, 5) == 5
    assert gpu_study.student_epochs(40, 2.0, ratios, 10, 15) == 1
    record = {"results": [
        {"method": "kd", "batch_size": 64, "ms_per_step": 4.0},
        {"method": "crd", "batch_size": 64, "ms_per_step": 10.0},
        {"method": "crd", "batch_size": 256, "ms_per_step": 30.0},
    ]}
    assert gpu_study.cost_ratios(record, ["kd", "crd", "student", "dkd"], 64) == {
        "kd": 1.0, "crd": 2.5, "student": 1.0, "dkd": 1.0}
    assert gpu_study.cost_ratios(None, ["kd", "crd"], 64) == {"kd": 1.0, "crd": 1.5}


def test_archive_is_read_in_class_folder_order_and_subsampled(tmp_path):
    archive = _archive(tmp_path / "a.tar.gz", train_per_class=3, test_per_class=2)

    data = gpu_study.read_archive(archive)
    assert data["class_names"] == list(CLASSES)
    assert data["x_train"].shape == (30, 32, 32, 3) and data["x_train"].dtype == np.uint8
    assert data["y_train"].tolist() == [c for c in range(10) for _ in range(3)]
    assert data["y_test"].tolist() == [c for c in range(10) for _ in range(2)]
    subset = gpu_study.read_archive(archive, max_train=7, max_test=5, seed=1)
    assert (len(subset["y_train"]), len(subset["y_test"])) == (7, 5)
    assert subset["y_train"].tolist() == sorted(subset["y_train"].tolist())
    mean, std = gpu_study.channel_stats(data["x_train"])
    pixels = data["x_train"].reshape(-1, 3) / 255.0
    np.testing.assert_allclose(mean, pixels.mean(0), rtol=1e-9)
    np.testing.assert_allclose(std, pixels.std(0), rtol=1e-6)


def test_bad_runs_fail_before_any_stage_starts(tmp_path):
    out = tmp_path / "out"

    proc = _run(tmp_path, "--runs=dkd,kd", f"--output_dir={out}")

    assert proc.returncode != 0
    assert "The first of --runs (dkd) sizes the student epochs" in proc.stderr
    assert not out.exists()
    proc = _run(tmp_path, "--runs=kd,bogus", f"--output_dir={out}")
    assert "No flagfile resnet56_resnet20_*.cfg configures method 'bogus'" in proc.stderr
