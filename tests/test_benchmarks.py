"""benchmarks/: the harness's entries, data, timing and table; the scripts on a tiny pair."""

import json
import os
import subprocess
import sys
import tarfile

import keras
import numpy as np
import pytest

from tests.conftest import FIXTURES, REPO, require

sys.path.insert(0, str(REPO / "benchmarks"))

import harness

METHODS = ("kd", "msdcrd", "crd")


def test_table_row_gives_rate_ratios_and_times_of_the_medians():
    samples = {
        ("tensorflow", "none"): {"wall": [0.1, 0.3, 0.2], "cpu": [0.4, 0.4, 0.5], "overhead": [2.0]},
        ("tensorflow", "kd"): {"wall": [0.4, 0.5, 0.4], "cpu": [0.8, 0.9, 0.8], "overhead": []},
    }
    table = harness.format_table(
        samples, 64, ("backend", "entry"),
        relative_to=[("relative to none", lambda key: (key[0], "none")),
                     ("relative to jax", lambda key: ("jax", key[1]))],
    )
    header, rule, none, kd = [line.strip("| ").split("|") for line in table.splitlines()]
    assert [cell.strip() for cell in header] == [
        "backend", "entry", "images/s (median)", "relative to none", "relative to jax",
        "ms/step (median)", "CPU ms/step (median)", "per-fit overhead, s (median)",
    ]
    assert [cell.strip() for cell in rule] == ["---"] * 2 + ["---:"] * 6
    # Medians: wall 0.2 s and 0.4 s, CPU 0.4 s and 0.8 s; 64 / 0.2 = 320 images/s.
    assert [cell.strip() for cell in none] == [
        "tensorflow", "none", "320.0", "1.00x", "n/a", "200.0", "400.0", "2.0"]
    assert [cell.strip() for cell in kd] == [
        "tensorflow", "kd", "160.0", "0.50x", "n/a", "400.0", "800.0", "n/a"]
    cpu_table = harness.format_table(samples, 64, ("backend", "entry"), clock="cpu")
    assert "images per CPU-second (median)" in cpu_table
    assert "| tensorflow | kd | 80.0 |" in cpu_table


@pytest.mark.parametrize("entry, parsed", [
    ("none", ("kerasdistill", [])),
    ("kd+msdcrd", ("kerasdistill", ["kd", "msdcrd"])),
    ("keras:kd", ("keras", ["kd"])),
    ("reference:kd", ("reference", ["kd"])),
    ("reference:forward", ("reference", [])),
    ("forward", ("forward", [])),
])
def test_entries_name_library_and_methods(entry, parsed):
    assert harness.parse_entry(entry, METHODS) == parsed


@pytest.mark.parametrize("entry, message", [
    ("kd+fitnets", "Unknown method 'fitnets' in entry 'kd\\+fitnets'"),
    ("tf:kd", "Unknown library 'tf'"),
    ("reference:msdcrd", "Unknown method 'msdcrd'"),
])
def test_bad_entries_are_named(entry, message):
    with pytest.raises(ValueError, match=message):
        harness.parse_entry(entry, METHODS)


def test_repeated_list_items_are_refused():
    assert harness.parse_list("64, 256", "batch_sizes", int) == [64, 256]
    with pytest.raises(ValueError, match="--methods must list distinct values"):
        harness.parse_list("kd,kd", "methods")


def test_synthetic_batches_carry_distinct_indices_and_their_labels():
    data = harness.SyntheticData(num_train=1000, num_classes=7, batch_size=16, image_size=8)
    x, y = data.batch(3, with_index=True)
    assert x["image"].shape == (16, 8, 8, 3) and x["image"].dtype == np.float32
    np.testing.assert_array_equal(y, data.train_labels[x["index"]])
    assert len(np.unique(data.indices)) == len(data.indices) == harness.POOL_BATCHES * 16
    # The pool is cycled.
    np.testing.assert_array_equal(data.batch(3 + harness.POOL_BATCHES)[1], y)
    with pytest.raises(ValueError, match="num_train=8 must be at least the batch size 16"):
        harness.SyntheticData(num_train=8, num_classes=7, batch_size=16)


def test_rounds_interleave_entries_reversing_every_other_round():
    calls = []

    def run(name):
        def timed(steps):
            calls.append(name)
            return {"wall": [1.0] * steps, "cpu": [0.5] * steps, "overhead": [0.1]}
        return timed

    samples = harness.time_interleaved({"a": run("a"), "b": run("b")}, 2, 3, log=lambda _: None)
    assert calls == ["a", "b", "b", "a", "a", "b"]
    assert samples["a"] == {"wall": [1.0] * 6, "cpu": [0.5] * 6, "overhead": [0.1] * 3}


def test_timed_fit_times_every_step_but_the_first():
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4, 4, 3)), keras.layers.Flatten(), keras.layers.Dense(3)])
    model.compile(optimizer="sgd",
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    data = harness.SyntheticData(num_train=64, num_classes=3, batch_size=8, image_size=4)
    timed = harness.timed_fit(model, data.dataset(), steps=3)
    assert len(timed["wall"]) == len(timed["cpu"]) == 3 and len(timed["overhead"]) == 1
    assert all(seconds > 0 for seconds in timed["wall"])
    assert int(model.optimizer.iterations) == 1 + 3


@pytest.fixture(scope="module")
def torch_reference():
    """The module, imported once (importing PyTorch takes seconds)."""
    import torch_reference

    return torch_reference


@pytest.mark.parametrize("name", ["resnet8x4", "resnet32x4"])
def test_torch_reference_models_have_repdistillers_parameter_counts(torch_reference, name):
    fixture = json.loads(require(FIXTURES / "repdistiller_models.json").read_text())
    model = torch_reference.build(name, num_classes=100)
    assert torch_reference.num_params(model) == fixture["models"][name]["trainable_params"]


def _tiny_image_folder(tmp_path):
    """A `.tar.gz` of train/ and test/ JPEG folders: 2 classes of flat colours, 24 + 8 images."""
    from PIL import Image

    root = tmp_path / "folder"
    rng = np.random.default_rng(0)
    for split, count in (("train", 12), ("test", 4)):
        for label, name in enumerate(("dark", "light")):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(count):
                pixels = rng.integers(0, 80, (32, 32, 3)) + 150 * label
                Image.fromarray(pixels.astype("uint8")).save(folder / f"{i}.jpg")
    archive = tmp_path / "tiny-folder.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(root, arcname="tiny-folder")
    return archive


# Runs a script with every import of TensorFlow failing, as on the GPU machine.
WITHOUT_TENSORFLOW = """
import runpy, sys

class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("tensorflow", "tensorflow_datasets"):
            raise ImportError(f"{name} is blocked")

sys.meta_path.insert(0, Block())
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


@pytest.mark.integration
def test_gpu_procedure_runs_on_jax_without_tensorflow(tmp_path):
    archive = _tiny_image_folder(tmp_path)
    out = tmp_path / "out"
    env = {**os.environ, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu", "HOME": str(tmp_path)}
    proc = subprocess.run(
        [sys.executable, "-c", WITHOUT_TENSORFLOW, str(REPO / "benchmarks" / "gpu_throughput.py"),
         "--tiny", "--methods=kd,crd", f"--archive={archive}", "--max_train_images=0",
         "--max_test_images=0", "--teacher_epochs=3", f"--output_dir={out}"],
        check=False, env=env, capture_output=True, text=True, timeout=900, cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    record = json.loads((out / "gpu_throughput.json").read_text())
    assert [(row["method"], row["batch_size"]) for row in record["throughput"]] == [
        ("kd", 8), ("crd", 8)]
    assert all(row["images_per_s"] > 0 for row in record["throughput"])
    assert [row["run"] for row in record["accuracy"]] == [
        "teacher resnet8", "resnet8 none", "resnet8 kd"]
    # The classes are a dark and a light flat colour: the teacher separates them.
    assert record["accuracy"][0]["top1"] == 1.0
    assert "TensorFlow imported: False" in (out / "gpu_throughput.md").read_text()


@pytest.mark.integration
def test_step_time_table_over_two_backends(tmp_path):
    out = tmp_path / "table.md"
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "step_time.py"), "--teacher=resnet8",
         "--student=resnet8", "--methods=none,kd,keras:kd+feature,forward", "--ce_weight=0.1",
         "--backends=tensorflow,jax", "--variants=baseline,jit_compile=true", "--steps=1",
         "--warmup=1", "--repeats=1", "--batch_size=8", "--num_train=64", f"--output={out}"],
        check=False, capture_output=True, text=True, timeout=900, cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    rows = [line for line in out.read_text().splitlines() if line.startswith("| ")][1:]
    keys = [tuple(cell.strip() for cell in row.strip("|").split(" | ")[:3]) for row in rows]
    assert len(keys) == 2 * 4 * 2
    assert ("jax", "none", "baseline") in keys and ("tensorflow", "forward", "jit_compile=true") in keys
    none = rows[keys.index(("tensorflow", "none", "baseline"))]
    assert none.split(" | ")[4].strip() == "1.00x"
