"""experiments/report.py: the comparison table and the per-epoch plots of two tiny runs."""

import json

import pytest

from experiments import report, runner
from experiments.errors import UsageError
from tests.conftest import REPO
from tests.experiments.conftest import tiny_config


@pytest.fixture(scope="module")
def two_runs(tiny_folder, teacher_file, tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    runner.run(tiny_config(tiny_folder, root / "alone", epochs=2, steps_per_epoch=1))
    runner.run(tiny_config(
        tiny_folder, root / "kd", mode="distill", method="kd", teacher_weights=str(teacher_file),
        epochs=2, steps_per_epoch=1,
    ))
    return root


def test_reference_table_is_parsed_from_the_docs():
    reference = report.read_reference(REPO / "docs" / "reference_results.md")
    assert reference[("resnet32x4", "resnet8x4")]["KD"] == 73.33
    assert reference[("wrn_40_2", "wrn_16_2")]["DKD"] == 76.23  # "76.23 (note 1)"
    assert reference[("resnet110", "resnet20")]["DKD"] is None  # "n/a (note 2)"


def test_report_compares_with_published_numbers_and_plots_every_term(two_runs, tmp_path):
    # The tiny runs use resnet8 -> resnet8; give them a published pair to compare with.
    for name, teacher, student in (("alone", "resnet32x4", "resnet8x4"),
                                   ("kd", "resnet32x4", "resnet8x4")):
        path = two_runs / name / "metrics.json"
        metrics = json.loads(path.read_text())
        metrics["config"].update(teacher=teacher, student=student)
        path.write_text(json.dumps(metrics))
    written = report.write_report([two_runs], tmp_path)
    assert sorted(p.name for p in written) == [
        "accuracy.png", "loss.png", "loss_ce.png", "loss_kd.png", "report.md"
    ]
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in written if p.suffix == ".png")
    rows = (tmp_path / "report.md").read_text().splitlines()[2:]
    kd_accuracy = 100 * json.loads((two_runs / "kd" / "metrics.json").read_text())["test_accuracy"]
    assert rows == [
        f"| alone | resnet8x4 | student | {_alone(two_runs):.2f} | 72.50 | "
        f"{_alone(two_runs) - 72.50:+.2f} |",
        f"| kd | resnet32x4 -> resnet8x4 | kd | {kd_accuracy:.2f} | 73.33 | "
        f"{kd_accuracy - 73.33:+.2f} |",
    ]


def _alone(root):
    return 100 * json.loads((root / "alone" / "metrics.json").read_text())["test_accuracy"]


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
