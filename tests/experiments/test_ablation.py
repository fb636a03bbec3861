"""The ablation table: mean and sample std over seeds, and the 2-std comparison it reports."""

import json

import pytest
from absl import flags
from absl.testing import flagsaver

from experiments import ablation, errors, trainer
from experiments import config as run_config
from kerasdistill import methods


def test_report_only_reads_finished_runs_and_compares_each_row_with_its_own_baseline(
    tmp_path, capsys
):
    accuracies = {
        "msdcrd": [0.650, 0.652, 0.654],
        "sc_positives": [0.610, 0.612, 0.614],
        "vit_linear": [0.470, 0.472],
        "vit_channel_pool": [0.480, 0.482],
    }
    for row, values in accuracies.items():
        for seed, accuracy in enumerate(values):
            folder = tmp_path / row / f"seed_{seed}"
            folder.mkdir(parents=True)
            (folder / "metrics.json").write_text(json.dumps({"test_accuracy": accuracy}))
    teacher = tmp_path / "teacher.keras"
    teacher.write_bytes(b"")
    with flagsaver.flagsaver():
        flags.FLAGS(["ablation", f"--output_dir={tmp_path}", f"--teacher_weights={teacher}",
                     "--report_only", "--baseline=msdcrd",
                     f"--rows={','.join(accuracies)}"])
        ablation.main([])
    table = (tmp_path / "table.md").read_text()
    assert "| msdcrd | MSDCRD, library defaults | 65.20 ± 0.20 | 3 |  |" in table
    assert "| 61.20 ± 0.20 | 3 | worse than msdcrd |" in table
    assert "| 48.10 ± 0.14 | 2 | better than vit_linear |" in table
    assert not list(tmp_path.glob("*/seed_*/log.txt")), "report_only must not run anything"


@pytest.mark.parametrize(
    "row",
    [name for name, (_, spec) in sorted(ablation.ROWS.items()) if "method" in spec],
)
def test_every_row_builds_its_methods_with_the_options_it_names(row, tmp_path):
    _, spec = ablation.ROWS[row]
    teacher = tmp_path / "teacher.keras"
    teacher.write_bytes(b"")
    with flagsaver.flagsaver():
        flags.FLAGS(["ablation", f"--teacher_weights={teacher}"])
        command = ablation.row_command(row, seed=0)
    args = dict(arg[2:].split("=", 1) for arg in command if arg.startswith("--"))
    config = run_config.RunConfig(
        method=args["method"], method_kwargs=json.loads(args["method_kwargs"]),
        teacher_weights=args["teacher_weights"],
    )
    [method] = trainer.build_methods(config.validate().methods)
    assert type(method) is methods.method_class(spec["method"])
    assert float(args["ce_weight"]) == spec.get("ce_weight", 1.0)
    options = dict(spec.get("msdcrd", spec.get("kwargs", {}).get(spec["method"], {})))
    built = json.loads(json.dumps({key: method.get_config()[key] for key in options}))
    assert built == options


def test_a_mistake_in_the_flags_ends_with_one_line_and_status_2(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv(errors.VERBOSE_ENV, raising=False)
    with flagsaver.flagsaver(), pytest.raises(SystemExit) as exit_info:
        errors.run_app(ablation.main, ["ablation", "--rows=kd,nope",
                                       f"--teacher_weights={tmp_path / 'none.keras'}"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == (
        f"error: --rows: unknown rows ['nope']; choose from {', '.join(ablation.ROWS)}.\n"
    )
    with flagsaver.flagsaver(), pytest.raises(SystemExit) as exit_info:
        errors.run_app(ablation.main, ["ablation", f"--teacher_weights={tmp_path / 'none.keras'}"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == (
        f"error: --teacher_weights={str(tmp_path / 'none.keras')!r}: no such file.\n"
    )
