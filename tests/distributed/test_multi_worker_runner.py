"""experiments/cifar100.py --strategy=multi_worker: two workers on 127.0.0.1 train as one process.

Both workers run the same command (same `--output_dir`) with their own
`TF_CONFIG`; a third process trains the same configuration on one device.
"""

import csv
import json
import os
import types

import numpy as np
import pytest

from tests.distributed.multi_worker import cluster_config
from tests.distributed.processes import free_ports, run_all
from tests.experiments.conftest import write_image_folder

TIMEOUT_S = 420
WORKERS = 2
# One device vs an all-reduce over two processes differ by float32 summation
# order, and training amplifies that: KD+MSDCRD's gradients move by up to 1e4
# times a 1e-7 change of the weights when the images of a class are
# near-duplicates (the sample-wise InfoNCE then contrasts images that barely
# differ), and by about 10 times on distinct images. So the final weights are
# compared through what training changed: the two runs' updates must agree to
# UPDATE_RTOL of the update's norm (measured: at most 1.8e-4 over four teacher
# seeds). An error of the distributed step (data sharded wrongly, a loss scaled
# by the replica count, BatchNorm statistics not synchronized) changes the
# update by its own size.
UPDATE_RTOL = 1e-2
# Distinct images (uniform noise around two class colours), a fixed teacher.
PIXEL_NOISE = 128
TEACHER_SEED = 0


def flags(tmp_path):
    """Flags of a 2-epoch KD+MSDCRD run (synchronized BatchNorm) shared by every process."""
    import keras

    from kerasdistill import models

    teacher = tmp_path / "teacher.keras"
    keras.utils.set_random_seed(TEACHER_SEED)
    models.get("resnet8", num_classes=2).save(teacher)
    data = write_image_folder(tmp_path / "data", noise=PIXEL_NOISE)
    return [
        "--mode=distill", "--teacher=resnet8", "--student=resnet8", f"--teacher_weights={teacher}",
        "--method=kd,msdcrd", "--sync_batchnorm", f"--dataset={data}", "--epochs=2",
        "--steps_per_epoch=2", "--batch_size=8", "--lr=0.05", "--export=keras", "--verbose=0",
    ]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("multi_worker_runner")
    common = flags(tmp_path)
    ports = free_ports(WORKERS)
    commands = [
        (
            [str(tmp_path / f"worker{i}.npz"), *common, "--strategy=multi_worker",
             f"--output_dir={tmp_path / 'run'}"],
            {"TF_CONFIG": cluster_config(i, ports)},
        )
        for i in range(WORKERS)
    ]
    commands.append((
        [str(tmp_path / "reference.npz"), *common, "--strategy=default",
         f"--output_dir={tmp_path / 'reference'}"],
        {},
    ))
    results = run_all(
        [("tests.distributed.multi_worker_runner", args, env) for args, env in commands], TIMEOUT_S
    )
    for (args, _), (returncode, _, stderr) in zip(commands, results):
        assert returncode == 0, f"{args}: {stderr[-4000:]}"
    printed = [json.loads(stdout[stdout.index("{"):]) for _, stdout, _ in results]
    return tmp_path, printed


@pytest.mark.parametrize(
    "cluster, task, chief",
    [
        ({"worker": ["h:1", "h:2"]}, ("worker", 0), True),
        ({"worker": ["h:1", "h:2"]}, ("worker", 1), False),
        ({"chief": ["h:0"], "worker": ["h:1"]}, ("chief", 0), True),
        ({"chief": ["h:0"], "worker": ["h:1"]}, ("worker", 0), False),
    ],
)
def test_the_chief_is_the_chief_task_else_worker_0(monkeypatch, cluster, task, chief):
    from tensorflow.python.distribute.cluster_resolver import TFConfigClusterResolver

    from kerasdistill.training import distribute

    tf_config = {"cluster": cluster, "task": {"type": task[0], "index": task[1]}}
    monkeypatch.setenv("TF_CONFIG", json.dumps(tf_config))
    strategy = types.SimpleNamespace(cluster_resolver=TFConfigClusterResolver())
    assert distribute.is_chief(strategy) is chief


def test_a_process_outside_a_cluster_is_its_own_chief(monkeypatch):
    import tensorflow as tf

    from kerasdistill.training import distribute

    monkeypatch.delenv("TF_CONFIG", raising=False)
    assert distribute.is_chief(tf.distribute.get_strategy())


def weights(path):
    with np.load(path) as archive:
        return [archive[f"arr_{i}"] for i in range(len(archive.files))]


def history(run_dir):
    with open(run_dir / "history.csv") as file:
        return list(csv.DictReader(file))


@pytest.mark.integration  # Three processes: about 100 s on 2 CPU cores.
def test_only_the_chief_writes_the_run_directory(runs):
    tmp_path, (chief, worker, _) = runs
    run_dir = tmp_path / "run"
    assert {"checkpoint.npz", "history.csv", "metrics.json", "model.keras"} <= {
        p.name for p in run_dir.iterdir()
    }
    written = json.loads((run_dir / "metrics.json").read_text())
    assert written["epochs_trained_this_session"] == 2 and written["steps_per_epoch"] == 2
    assert chief["exported"] == {"keras": str(run_dir / "model.keras")}
    # The other worker exported to a temporary directory, deleted when it ended.
    scratch = os.path.dirname(worker["exported"]["keras"])
    assert scratch != str(run_dir) and not os.path.exists(scratch)
    assert [row["epoch"] for row in history(run_dir)] == ["0", "1"]


@pytest.mark.integration  # Three processes: about 100 s on 2 CPU cores.
def test_workers_end_with_identical_weights_equal_to_the_saved_model(runs):
    import keras

    import kerasdistill  # noqa: F401  (registers the serializable classes)

    tmp_path, _ = runs
    first, second = (weights(tmp_path / f"worker{i}.npz") for i in range(WORKERS))
    assert len(first) == len(second) > 20
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)
    saved = keras.saving.load_model(tmp_path / "run" / "model.keras", compile=False)
    for a, b in zip(first, saved.weights):
        np.testing.assert_array_equal(a, np.asarray(b))


@pytest.mark.integration  # Three processes: about 100 s on 2 CPU cores.
def test_two_workers_train_like_one_device_on_the_global_batch(runs):
    tmp_path, (chief, worker, reference) = runs
    initial = weights(tmp_path / "reference.init.npz")
    assert all(
        np.array_equal(a, b) for a, b in zip(initial, weights(tmp_path / "worker0.init.npz"))
    )
    workers = weights(tmp_path / "worker0.npz")
    single = weights(tmp_path / "reference.npz")
    updates = [(a - w, b - w) for a, b, w in zip(workers, single, initial)]
    assert sum(np.linalg.norm(b) for _, b in updates) > 0
    for index, (a, b) in enumerate(updates):
        error = np.linalg.norm(a - b)
        assert error <= UPDATE_RTOL * np.linalg.norm(b) + 1e-7, (index, error, np.linalg.norm(b))
    rows, reference_rows = history(tmp_path / "run"), history(tmp_path / "reference")
    for row, reference_row in zip(rows, reference_rows):
        for key in ("loss", "loss_kd", "loss_msd_sw", "val_loss", "val_accuracy"):
            np.testing.assert_allclose(
                float(row[key]), float(reference_row[key]), rtol=1e-4, atol=1e-6
            )
    assert chief["test_accuracy"] == worker["test_accuracy"] == reference["test_accuracy"]
