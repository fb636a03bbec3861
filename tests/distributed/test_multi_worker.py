"""Two workers (processes) on 127.0.0.1 under MultiWorkerMirroredStrategy train as one process."""

import numpy as np
import pytest

from tests.distributed.processes import free_ports, run_all

# Integration tier: three processes.
pytestmark = pytest.mark.integration

TIMEOUT_S = 300
WORKERS = 2
# One device vs an all-reduce over two processes: float32 summation order only
# (the tolerance of the 2-logical-replica test for the same methods).
WEIGHT_ATOL = 2e-6


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    out = tmp_path_factory.mktemp("multi_worker")
    ports = ",".join(str(port) for port in free_ports(WORKERS))
    commands = [
        [str(out / f"worker{i}.npz"), f"--worker={i}", f"--ports={ports}"] for i in range(WORKERS)
    ]
    commands.append([str(out / "reference.npz")])
    results = run_all([("tests.distributed.multi_worker", c, {}) for c in commands], TIMEOUT_S)
    for command, (returncode, _, stderr) in zip(commands, results):
        assert returncode == 0, f"{command}: {stderr[-4000:]}"
    return [np.load(out / f"worker{i}.npz") for i in range(WORKERS)], np.load(out / "reference.npz")


def weight_keys(run):
    """The keys of the final weights in a run's output."""
    return sorted(key for key in run.files if key.startswith("w/"))


def initial(run, key):
    """The initial value of the weight whose final value is `run[key]`."""
    return run["i" + key[1:]]


def test_workers_form_one_two_replica_cluster(runs):
    workers, reference = runs
    assert [int(w["replicas"]) for w in workers] == [2, 2]
    assert int(reference["replicas"]) == 1


def test_workers_end_with_identical_weights(runs):
    (first, second), reference = runs
    keys = weight_keys(first)
    assert keys == weight_keys(second) == weight_keys(reference)
    assert len(keys) > 50  # Student, BN statistics, MSDCRD heads, step counter.
    for key in keys:
        np.testing.assert_array_equal(second[key], first[key], err_msg=key)


def test_workers_train_like_one_process_on_the_global_batch(runs):
    workers, reference = runs
    changed = 0
    for key in weight_keys(reference):
        np.testing.assert_allclose(
            workers[0][key], reference[key], rtol=1e-5, atol=WEIGHT_ATOL, err_msg=key
        )
        changed += reference[key].size > 1
    assert changed > 10
    moved = [k for k in weight_keys(reference) if np.any(reference[k] != initial(reference, k))]
    assert len(moved) > 10  # Training changed the weights.


def test_worker_losses_average_to_the_global_batch_loss(runs):
    # Each worker logs the loss of its half of the last global batch.
    workers, reference = runs
    assert float(workers[0]["loss"]) != float(workers[1]["loss"])
    mean = (float(workers[0]["loss"]) + float(workers[1]["loss"])) / 2
    np.testing.assert_allclose(mean, float(reference["loss"]), rtol=1e-5)
