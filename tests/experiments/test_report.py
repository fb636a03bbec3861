"""experiments/report.py: the comparison table and the per-epoch plots of two tiny runs."""

import json

import pytest

from experiments import report
from experiments.errors import UsageError
from tests.conftest import REPO


def _write_run(folder, config, test_accuracy, history):
    """A run directory as `runner.run` leaves it: metrics.json and history.csv."""
    folder.mkdir(parents=True)
    metrics = {"test_accuracy": test_accuracy, "config": config}
    (folder / "metrics.json").write_text(json.dumps(metrics))
    columns = ["epoch", *history]
    rows = [",".join(columns)] + [
        ",".join([str(epoch), *(str(values[epoch]) for values in history.values())])
        for epoch in range(len(next(iter(history.values()))))
    ]
    (folder / "history.csv").write_text("\n".join(rows) + "\n")


@pytest.fixture
def two_runs(tmp_path):
    root = tmp_path / "runs"
    common = {"teacher": "resnet32x4", "student": "resnet8x4", "teacher_weights": ""}
    _write_run(root / "alone", {**common, "mode": "student", "method": "kd"}, 0.5,
               {"accuracy": [0.4, 0.5], "loss": [2.0, 1.5], "val_accuracy": [0.45, 0.5]})
    _write_run(root / "kd", {**common, "mode": "distill", "method": "kd"}, 0.625,
               {"accuracy": [0.4, 0.6], "loss": [2.5, 1.9], "loss_ce": [2.0, 1.6],
                "loss_kd": [0.5, 0.3], "val_accuracy": [0.5, 0.625]})
    return root


def test_reference_table_is_parsed_from_the_docs():
    reference = report.read_reference(REPO / "docs" / "reference_results.md")
    assert reference[("resnet32x4", "resnet8x4")]["KD"] == 73.33
    assert reference[("wrn_40_2", "wrn_16_2")]["DKD"] == 76.23  # "76.23 (note 1)"
    assert reference[("resnet110", "resnet20")]["DKD"] is None  # "n/a (note 2)"


def test_report_compares_with_published_numbers_and_plots_every_term(two_runs, tmp_path):
    written = report.write_report([two_runs], tmp_path)
    assert sorted(p.name for p in written) == [
        "accuracy.png", "loss.png", "loss_ce.png", "loss_kd.png", "report.md"
    ]
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in written if p.suffix == ".png")
    rows = (tmp_path / "report.md").read_text().splitlines()[2:]
    assert rows == [
        "| alone | resnet8x4 | student | 50.00 | 72.50 | -22.50 |",
        "| kd | resnet32x4 -> resnet8x4 | kd | 62.50 | 73.33 | -10.83 |",
    ]


def test_history_keeps_one_row_per_epoch(two_runs):
    run = report.read_run(two_runs / "kd")
    assert len(run["history"]["loss_kd"]) == 2 and len(run["history"]["val_accuracy"]) == 2


def test_no_run_directory_is_a_usage_error(tmp_path):
    with pytest.raises(UsageError, match=r"holds no run directory"):
        report.write_report([tmp_path], tmp_path / "report")


def test_pair_names_a_teacher_of_any_architecture_by_its_file():
    config = {"mode": "distill", "teacher": "", "teacher_weights": "runs/t/model.keras",
              "student": "keras.applications.MobileNetV3Small", "method": "kd"}
    assert report.describe({"config": config}) == (
        "runs/t/model.keras -> keras.applications.MobileNetV3Small", "kd"
    )
