"""The defaults study's grid, commands, cost estimate and report; nothing is trained."""

import json

import pytest
from absl import flags
from absl.testing import flagsaver

from experiments import config as run_config
from experiments import defaults_study as study
from experiments import errors, seeded_runs, trainer
from kerasdistill import methods


def _parse(*argv):
    flags.FLAGS(["defaults_study", *argv])


def _args(command):
    return dict(arg[2:].split("=", 1) for arg in command if arg.startswith("--"))


def test_every_setting_but_the_base_changes_one_axis_and_every_value_is_covered():
    assert study.SETTINGS["base"] == study.BASE and len(study.SETTINGS) == 11
    assert study.SETTINGS["tutorial"] == {"data": "fashion_mnist", "pair": "sequential",
                                          "optimizer": "adam", "budget": "short",
                                          "temperature": 10.0}
    covered = set()
    for name, setting in study.SETTINGS.items():
        if name in ("tutorial", "pair_vit_budget_long"):
            continue
        changed = [axis for axis in study.BASE if setting[axis] != study.BASE[axis]]
        assert len(changed) == (name != "base")
        covered.update((axis, setting[axis]) for axis in changed)
    assert covered == {(axis, value) for axis, values in study.AXES.items() for value in values}
    assert study.SETTINGS["pair_vit_budget_long"] == {**study.BASE, "pair": "vit",
                                                      "budget": "long"}


def test_plan_trains_each_teacher_once_and_shares_runs_a_setting_does_not_change(tmp_path):
    with flagsaver.flagsaver():
        _parse(f"--output_dir={tmp_path}")
        teachers, rows = study.plan(list(study.SETTINGS), list(study.CANDIDATES), [0, 1])
    # CIFAR-10's resnet20 is the committed teacher (--teacher_file's default): not trained.
    assert sorted(path.name for path in teachers) == [
        "fashion_mnist_resnet20", "fashion_mnist_sequential", "tin32_resnet20",
        "tin32_sequential"]
    assert teachers[tmp_path / "teachers" / "tin32_resnet20"]["lr"] == 0.1
    assert teachers[tmp_path / "teachers" / "tin32_sequential"]["optimizer"] == "adamw"
    assert len(rows) == 2 * 11 * 11
    # T = 10 changes the rows with a temperature only.
    for candidate in study.CANDIDATES:
        same = rows[("temperature_10", candidate, 1)][1] == rows[("base", candidate, 1)][1]
        assert same == (candidate in ("student", "kd_ls", "msdcrd", "kd_ls_msdcrd",
                                      "kd_ls_msdcrd_clip", "kd_ls9_msdcrd"))
    assert len(study.distinct_runs(rows)) == 2 * (121 - 6)
    clipped = rows[("pair_sequential", "kd_ls_msdcrd_clip", 0)][0]
    assert clipped["clipnorm"] == 1.0 and "clipnorm" not in rows[("base", "kd_ls_msdcrd", 0)][0]
    assert rows[("base", "kd", 1)][1] == tmp_path / "runs" / "base" / "kd" / "seed_1"


def test_row_commands_carry_each_axis(tmp_path):
    with flagsaver.flagsaver():
        _parse(f"--output_dir={tmp_path}", "--data_root=/data", "--long_epochs=7")
        args = {name: study.row_args(setting, "kd", 0, tmp_path / "out")
                for name, setting in study.SETTINGS.items()}
    base = args["base"]
    assert (base["dataset"], base["epochs"], base["student"], base["teacher"]) == (
        "/data/tin-dev-100-32.tar.gz", 1, "resnet8", "resnet20")
    assert base["teacher_weights"] == str(tmp_path / "teachers" / "tin32_resnet20" / "model.keras")
    assert args["data_cifar10"]["teacher_weights"] == str(
        seeded_runs.REPO / "data" / "cifar10_resnet20_teacher.keras")
    assert base["ce_weight"] == 0.1 and "optimizer" not in base
    assert json.loads(base["method_kwargs"]) == {"kd": {"weight": 0.9, "temperature": 4.0}}
    assert json.loads(args["temperature_10"]["method_kwargs"])["kd"]["temperature"] == 10.0
    assert args["budget_long"]["epochs"] == 7
    assert args["data_cifar10"]["dataset"] == "/data/cifar10-jpeg.tar.gz"
    assert args["data_fashion_mnist"]["dataset"] == str(tmp_path / "data" / "fashion_mnist-32")
    assert {k: args["optimizer_adam"][k] for k in ("optimizer", "lr", "weight_decay")} == {
        "optimizer": "adamw", "lr": 1e-3, "weight_decay": 0.0}
    assert args["optimizer_adamw"]["weight_decay"] == 0.004
    vit = args["pair_vit"]
    assert vit["student"] == "vit_mini_p4"
    assert {k: vit[k] for k in seeded_runs.TRANSFORMER_RECIPE} == seeded_runs.TRANSFORMER_RECIPE
    sequential = args["pair_sequential"]
    assert sequential["teacher"] == "" and sequential["student"] == str(
        tmp_path / "models" / "sequential_student_tin32.keras")
    assert sequential["teacher_weights"].endswith("tin32_sequential/model.keras")


@pytest.mark.parametrize("candidate", [c for c in study.CANDIDATES if c != "student"])
def test_every_candidate_builds_its_methods_from_its_json_flags(candidate, tmp_path):
    teacher = tmp_path / "teacher.keras"
    teacher.write_bytes(b"")
    with flagsaver.flagsaver():
        _parse(f"--output_dir={tmp_path}")
        args = study.row_args(study.SETTINGS["temperature_10"], candidate, 0, tmp_path)
    kwargs = json.loads(args["method_kwargs"])
    config = run_config.RunConfig(method=args["method"], method_kwargs=kwargs,
                                  teacher_weights=str(teacher))
    built = trainer.build_methods(config.validate().methods)
    assert [type(m) for m in built] == [methods.method_class(n) for n in args["method"].split(",")]
    for name, method in zip(args["method"].split(","), built):
        assert {key: method.get_config()[key] for key in kwargs[name]} == kwargs[name]
    if "_ls" in candidate:
        assert built[0].standardize is True


def test_dry_run_prints_the_size_and_the_commands_and_runs_nothing(tmp_path, capsys):
    (tmp_path / "tin-dev-100-32.tar.gz").write_bytes(b"")
    with flagsaver.flagsaver():
        _parse(f"--output_dir={tmp_path / 'out'}", f"--data_root={tmp_path}", "--dry_run",
               "--settings=base,temperature_10", "--candidates=student,kd", "--seeds=0")
        study.main([])
    lines = capsys.readouterr().out.splitlines()
    assert lines[:2] == [
        ("Grid: 2 settings x 2 candidates = 4 rows; 3 distinct runs per seed x 1 seed(s) + "
         "1 teachers = 4 runs."),
        "Cost: not measured yet; run --measure (two tiny runs) first.",
    ]
    commands = [_args(line.split()) for line in lines[2:]]
    assert [c["mode"] for c in commands] == ["teacher", "student", "distill", "distill"]
    assert not (tmp_path / "out").exists()


def test_missing_fashion_mnist_stops_with_one_line_naming_the_package(tmp_path, capsys,
                                                                      monkeypatch):
    monkeypatch.delenv(errors.VERBOSE_ENV, raising=False)
    with flagsaver.flagsaver(), pytest.raises(SystemExit) as exit_info:
        errors.run_app(study.main, ["defaults_study", "--settings=data_fashion_mnist",
                                    f"--fashion_mnist_dir={tmp_path}", "--dry_run"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == (
        f"error: Fashion-MNIST: {tmp_path / 'train-images-idx3-ubyte.gz'} is missing; "
        "apt-get install dataset-fashion-mnist (or pass --fashion_mnist_dir).\n"
    )


def test_unknown_names_and_empty_budgets_stop_with_one_line(capsys, monkeypatch):
    monkeypatch.delenv(errors.VERBOSE_ENV, raising=False)
    with flagsaver.flagsaver(), pytest.raises(SystemExit) as exit_info:
        errors.run_app(study.main, ["defaults_study", "--candidates=kd,nope", "--dry_run"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.startswith("error: --candidates: unknown ['nope']; choose from")
    with flagsaver.flagsaver(), pytest.raises(SystemExit) as exit_info:
        errors.run_app(study.main, ["defaults_study", "--teacher_epochs=0", "--dry_run"])
    assert capsys.readouterr().err == "error: --teacher_epochs=0: must be >= 1.\n"
    with flagsaver.flagsaver(), pytest.raises(SystemExit) as exit_info:
        errors.run_app(study.main, ["defaults_study", "--teacher_file=cifar10", "--dry_run"])
    assert capsys.readouterr().err.startswith(
        "error: --teacher_file='cifar10': expected <data>_<teacher>=<.keras file>")


def test_cost_is_the_line_through_the_measured_runs_at_each_runs_steps(tmp_path):
    with flagsaver.flagsaver():
        _parse(f"--output_dir={tmp_path}", "--teacher_epochs=2", "--teacher_steps_per_epoch=0",
               "--batch_size=100")
        for steps, seconds in zip(study.MEASURE_STEPS, (50.0, 80.0)):  # 40 s + 1 s per step
            study.measure_dir(steps).mkdir(parents=True)
            (study.measure_dir(steps) / seeded_runs.TIMING_FILE).write_text(
                json.dumps({"wall_seconds": seconds, "threads": 2}))
        teachers, rows = study.plan(["base"], ["student", "kd"], [0])
        lines = study.size_and_cost(teachers, rows, ["base"], ["student", "kd"], [0])
    # 500 steps per epoch: the teacher 2 epochs, each row 1; 2 threads each.
    cpu_seconds = 2 * ((40 + 1000) + 2 * (40 + 500))
    assert lines[1].startswith(f"Cost: about {cpu_seconds / 3600:.1f} CPU-hours: each run's wall")


def test_report_compares_with_the_student_alone_and_hinton_kd_at_t4(tmp_path):
    accuracies = {("base", "student"): [0.30, 0.31], ("base", "kd"): [0.33, 0.34],
                  ("temperature_10", "student"): [0.30, 0.31], ("temperature_10", "kd"): [0.31],
                  ("tutorial", "kd"): [0.80, 0.81], ("tutorial", "msdcrd"): [0.84, 0.85]}
    results = {key: [{"test_accuracy": a} for a in values] for key, values in accuracies.items()}
    diverged = {("base", "msdcrd"): ["Loss term loss_ce is nan at training step 26."]}
    teacher = tmp_path / "teachers" / "tin32_resnet20"
    teacher.mkdir(parents=True)
    (teacher / "metrics.json").write_text(json.dumps({"test_accuracy": 0.4567}))
    given = tmp_path / "given.keras"
    given.with_suffix(".json").write_text(json.dumps({"test_accuracy": 0.7037}))
    with flagsaver.flagsaver():
        _parse(f"--output_dir={tmp_path}", f"--teacher_file=cifar10_resnet20={given}")
        table = study.report(["base", "temperature_10", "data_cifar10", "tutorial"],
                             ["student", "kd", "msdcrd"], results, diverged)
    assert "| base | kd | 33.50 ± 0.71 | 2 | better than base/student |  |" in table
    assert ("| temperature_10 | kd | 31.00 ± 0.00 | 1 | +0.50 vs temperature_10/student "
            "(one seed) | -2.50 vs base/kd (one seed) |") in table
    assert ("| base | msdcrd | failed in 1 run(s): Loss term loss_ce is nan at training step "
            "26. | | | |") in table
    # The tutorial setting has no T = 4 sibling: its own Hinton KD (T = 10) is the reference.
    assert "| tutorial | msdcrd | 84.50 ± 0.71 | 2 |  | better than tutorial/kd |" in table
    assert "| tin32_resnet20 | 45.67 |" in table and "| cifar10_resnet20 | 70.37 |" in table


def test_measured_cost_sums_wall_time_times_threads_of_the_finished_runs(tmp_path):
    for name, seconds, threads in (("a", 1800.0, 1), ("b", 900.0, 2)):
        (tmp_path / name).mkdir()
        (tmp_path / name / seeded_runs.TIMING_FILE).write_text(
            json.dumps({"wall_seconds": seconds, "threads": threads}))
    line = study.measured_cost([tmp_path / "a", tmp_path / "b", tmp_path / "unfinished"])
    assert line == ("Measured: 2 of 3 runs finished, 1.00 CPU-hours (each run's wall time x "
                    "its threads; 0.75 run-hours).\n")


def test_the_library_default_is_the_candidate_the_study_chose():
    from kerasdistill.methods import defaults

    spec = study.CANDIDATES[study.CHOSEN][1](4.0, 1)
    names = [name for name, _ in defaults.DEFAULT_RECIPE]
    assert spec["method"] == ",".join(names)
    assert spec.get("ce_weight", 1.0) == defaults.DEFAULT_CE_WEIGHT == 0.1
    assert spec["kwargs"] == {name: kwargs for name, kwargs in defaults.DEFAULT_RECIPE}


def test_a_failed_run_is_known_by_the_error_line_its_log_ends_with(tmp_path):
    (tmp_path / "log.txt").write_text("I0000 noise\nerror: Loss term loss_ce is nan at step 3. "
                                      "Training stopped; /tmp/x is kept.\n")
    assert study.run_error(tmp_path) == "Loss term loss_ce is nan at step 3."
    (tmp_path / "metrics.json").write_text(json.dumps({"test_accuracy": 0.5}))
    assert study.run_error(tmp_path) is None
    assert study.run_error(tmp_path / "never_ran") is None
