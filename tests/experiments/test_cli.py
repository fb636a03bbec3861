"""experiments/cifar100.py ends on a user mistake with one line on stderr and exit status 2."""

import json
import os
import subprocess
import sys
import time

import pytest

from tests.conftest import REPO

# Integration tier: each test runs a script in a subprocess (the messages are checked in
# process by test_config.py, test_model_specs.py and test_errors.py).
pytestmark = pytest.mark.integration

SCRIPT = REPO / "experiments" / "cifar100.py"


def _run(*args, env=None):
    start = time.monotonic()
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=300,
        cwd=REPO, env={**os.environ, "KERASDISTILL_VERBOSE": "0", **(env or {})},
    )
    return proc, time.monotonic() - start


def _error_lines(proc):
    return [line for line in proc.stderr.splitlines() if line.startswith("error:")]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--epochs=0"], "error: --epochs=0 is not accepted; it must be a finite number > 0."),
        (["--batch_size=0"], "error: --batch_size=0 is not accepted"),
        (["--momentum=-0.9"], "error: --momentum=-0.9 is not accepted"),
        (["--method_kwargs={kd"], "error: --method_kwargs is not valid JSON"),
        (["--epochs=ten"], "error: flag --epochs=ten: invalid literal for int() with base 10"),
        (["--mode=teach"], "error: flag --mode=teach: value should be one of"),
    ],
)
def test_usage_errors_print_one_line_and_exit_2_fast(args, message):
    proc, seconds = _run(*args)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.splitlines() == _error_lines(proc)
    assert _error_lines(proc)[0].startswith(message), proc.stderr
    # Before any data or model is touched: well under the minutes a run's setup takes.
    assert "Traceback" not in proc.stderr and seconds < 60


def test_flagfile_with_an_unknown_flag_names_it(tmp_path):
    flagfile = tmp_path / "run.cfg"
    flagfile.write_text("--mode=teacher\n--epoch=3\n")
    proc, _ = _run(f"--flagfile={flagfile}")
    assert proc.returncode == 2
    assert _error_lines(proc) == [
        "error: Unknown command line flag 'epoch'. Did you mean: epochs ?"
    ]


def test_verbose_env_adds_the_traceback():
    proc, _ = _run("--lr=-1", env={"KERASDISTILL_VERBOSE": "1"})
    assert proc.returncode == 2
    assert "Traceback" in proc.stderr
    assert proc.stderr.splitlines()[-1].startswith("error: --lr=-1.0")


def test_unknown_model_fails_with_one_line_before_any_data(tmp_path):
    proc, _ = _run("--mode=student", "--student=resnet9", f"--dataset={tmp_path / 'none'}",
                   f"--output_dir={tmp_path / 'out'}")
    assert proc.returncode == 2
    assert _error_lines(proc) == [_error_lines(proc)[0]]
    assert _error_lines(proc)[0].startswith("error: Unknown student model 'resnet9'. Did you mean")
    assert proc.stderr.splitlines()[-1] == _error_lines(proc)[0] and "Traceback" not in proc.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--student=keras.applications.MobileNetV3Smal"],
         "error: Unknown student model 'keras.applications.MobileNetV3Smal'. Did you mean "
         "'keras.applications.MobileNetV3Small' or "),
        (["--student=MobileNetV3Small"],
         "error: Unknown student model 'MobileNetV3Small'. Did you mean "
         "'keras.applications.MobileNetV3Small'? Accepted: a zoo name ("),
        (["--student=runs/none/model.keras"],
         "error: --student='runs/none/model.keras': no such file; expected a zoo name, "
         "keras.applications.<Name> or a path to a .keras file."),
        (["--student=runs/none/model.h5"],
         "error: --student='runs/none/model.h5' is not a .keras model file; expected a zoo name, "),
    ],
)
def test_bad_student_model_fails_with_one_line_before_any_data(tmp_path, args, message):
    proc, _ = _run("--mode=student", *args, f"--dataset={tmp_path / 'none'}",
                   f"--output_dir={tmp_path / 'out'}")
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert len(_error_lines(proc)) == 1 and _error_lines(proc)[0].startswith(message), proc.stderr
    assert proc.stderr.splitlines()[-1] == _error_lines(proc)[0] and "Traceback" not in proc.stderr
    assert not (tmp_path / "out").exists()


def test_teacher_and_teacher_weights_naming_two_files_are_refused(tmp_path, small_cnn_file):
    other = tmp_path / "other.keras"
    other.write_bytes(small_cnn_file.read_bytes())
    proc, _ = _run("--mode=distill", f"--teacher={other}", f"--teacher_weights={small_cnn_file}",
                   f"--dataset={tmp_path / 'none'}", f"--output_dir={tmp_path / 'out'}")
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert _error_lines(proc) == [
        f"error: --teacher={str(other)!r} is another file than --teacher_weights="
        f"{str(small_cnn_file)!r}; the teacher is --teacher_weights: pass --teacher= (empty) or "
        "the same file."
    ]


def test_script_distils_a_keras_file_student_from_an_application_teacher(tiny_folder, tmp_path):
    from experiments.model_specs import ModelSpec
    from tests.experiments.conftest import small_cnn

    teacher = tmp_path / "teacher.weights.h5"
    ModelSpec("teacher", "keras.applications.MobileNetV2").build(2, (32, 32, 3)).save_weights(
        teacher
    )
    student = tmp_path / "student.keras"
    small_cnn().save(student)
    out = tmp_path / "run"
    proc, _ = _run("--mode=distill", "--method=kd", "--teacher=keras.applications.MobileNetV2",
                   f"--teacher_weights={teacher}", f"--student={student}",
                   f"--dataset={tiny_folder}", "--epochs=1", "--steps_per_epoch=2",
                   "--batch_size=4", "--export=keras", f"--output_dir={out}", "--verbose=0")
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["models"]["teacher"]["name"] == "mobilenetv2_1.00_32"
    assert metrics["models"]["student"]["name"] == "small_cnn"
    assert sorted(metrics["model_files"]) == ["student", "teacher_weights"]
    assert "loss_kd" in (out / "history.csv").read_text().splitlines()[0]


def test_contrastive_method_needs_two_samples_per_replica(tmp_path):
    teacher = tmp_path / "teacher.keras"
    teacher.write_bytes(b"")
    proc, _ = _run("--mode=distill", "--teacher=resnet8", "--student=resnet8", "--method=msdcrd",
                   f"--teacher_weights={teacher}", "--batch_size=2", "--strategy=mirrored",
                   "--logical_devices=2", f"--dataset={tmp_path / 'none'}",
                   f"--output_dir={tmp_path / 'out'}")
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert _error_lines(proc) == [
        "error: --batch_size=2 gives 1 sample(s) per replica, too few for msdcrd; use >= 2 per "
        "replica."
    ]


@pytest.mark.integration
def test_mirrored_run_on_two_logical_cpus_with_synchronized_batchnorm(tiny_folder, tmp_path):
    proc, _ = _run("--mode=student", "--student=resnet8", f"--dataset={tiny_folder}",
                   "--strategy=mirrored", "--logical_devices=2", "--sync_batchnorm", "--epochs=1",
                   "--steps_per_epoch=2", "--batch_size=4", "--export=keras",
                   f"--output_dir={tmp_path}", "--verbose=0")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert '"epochs_trained_this_session": 1' in proc.stdout
    assert (tmp_path / "model.keras").exists()
