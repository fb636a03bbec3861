"""Smoke tests of benchmarks/backend_step_time.py's helpers and the PyTorch reference models.

No timing is asserted: the benchmark itself is run by hand (docs/benchmarks.md).
"""

import math
import pathlib
import sys

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "benchmarks"))

import backend_step_time as bst  # noqa: E402


def test_entries_cover_every_backend_and_the_baselines():
    entries = [e for b in bst.BACKENDS for e in bst.entries_of(b)]
    assert len(set(entries)) == len(entries)
    assert bst.TF_KD in entries and bst.REF_KD in entries
    for backend in bst.BACKENDS:
        configs = {c for b, lib, c in entries if b == backend and lib == "kerasdistill"}
        assert set(bst.KERASDISTILL_CONFIGS) <= configs


def test_synthetic_batches_have_distinct_indices_and_matching_labels():
    batches, train_labels = bst.synthetic_batches(count=2)
    assert train_labels.shape == (bst.NUM_TRAIN,)
    indices = [i for _, _, idx in batches for i in idx]
    assert len(set(indices)) == len(indices)
    for x, y, idx in batches:
        assert x.shape == (bst.BATCH, bst.IMAGE, bst.IMAGE, 3)
        assert (y == train_labels[idx]).all()


def test_table_ratios_are_taken_to_both_baselines():
    cpu = {bst.TF_KD: [2.0, 2.0], bst.REF_KD: [1.0], ("jax", "kerasdistill", "kd"): [4.0]}
    text = bst.table(cpu, cpu)
    jax_row = [line for line in text.splitlines() if line.startswith("| jax")][0]
    assert "| 0.25x | 0.50x |" in jax_row
    assert "| 4000 |" in jax_row


def test_reference_models_match_repdistiller_parameter_counts():
    torch = pytest.importorskip("torch")
    import torch_reference

    for name, count in torch_reference.PARAMS.items():
        assert torch_reference.num_params(torch_reference.build(name)) == count
    step = torch_reference.ReferenceStep(
        torch_reference.build("resnet8x4"), torch_reference.build("resnet8x4")
    )
    loss, accuracy = step(torch.randn(2, 3, 32, 32), torch.tensor([0, 1]))
    # Two images: accuracy is 0, 1/2 or 1; the loss is a finite cross-entropy of random logits.
    assert accuracy in (0.0, 0.5, 1.0) and math.isfinite(loss) and loss > 0
