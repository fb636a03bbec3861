"""Every experiment script ends on a missing or bad dataset with one `error:` line and status 2."""

import os
import subprocess
import sys

import pytest

from tests.conftest import REPO

# Integration tier: each test runs a script in a subprocess.
pytestmark = pytest.mark.integration


def _run(script, *args):
    return subprocess.run(
        [sys.executable, str(REPO / "experiments" / script), *args], capture_output=True,
        text=True, timeout=300, cwd=REPO, env={**os.environ, "KERASDISTILL_VERBOSE": "0"},
    )


@pytest.mark.parametrize(
    "script, args",
    [
        ("cifar100.py", ["--mode=student", "--student=resnet8"]),
        ("imagenet.py", ["--mode=student", "--student=ResNet18"]),
        ("quickstart.py", []),
        ("train_quickstart_teacher.py", ["--teacher=resnet8"]),
    ],
)
def test_bad_dataset_path_gives_one_error_line_and_exit_2(script, args, tmp_path):
    proc = _run(script, *args, f"--dataset={tmp_path / 'typo'}", f"--output_dir={tmp_path / 'o'}")
    assert proc.returncode == 2, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "typo" in errors[0], proc.stderr[-3000:]
    assert proc.stderr.splitlines()[-1] == errors[0] and "Traceback" not in proc.stderr


NOISE = ("I0000", "W0000", "E0000", "WARNING:absl", "WARNING: All log messages before absl")


def _noise(text):
    return [line for line in text.splitlines() if line.startswith(NOISE) or line[:1] in "IWE"
            and line[1:5].isdigit() and " " in line[:30]]


def test_a_run_with_a_saved_model_export_prints_no_tensorflow_or_absl_log_lines(
    tiny_folder, tmp_path
):
    proc = _run("cifar100.py", "--mode=student", "--student=resnet8", f"--dataset={tiny_folder}",
                "--epochs=1", "--steps_per_epoch=1", "--batch_size=4", "--export=saved_model",
                f"--output_dir={tmp_path}", "--verbose=0")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "saved_model" / "saved_model.pb").exists()
    assert _noise(proc.stdout) == [] and _noise(proc.stderr) == [], proc.stderr[-3000:]
    assert proc.stdout.lstrip().startswith("{") and '"test_accuracy"' in proc.stdout



def test_a_misspelled_method_argument_is_the_methods_one_line_error(tiny_folder, teacher_file,
                                                                     tmp_path):
    proc = _run("cifar100.py", "--mode=distill", "--teacher=resnet8", "--student=resnet8",
                f"--teacher_weights={teacher_file}", "--method=kd",
                '--method_kwargs={"kd": {"temprature": 4.0}}', f"--dataset={tiny_folder}",
                "--batch_size=4", f"--output_dir={tmp_path}")
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert proc.stderr.splitlines() == [
        'error: --method_kwargs kd {"temprature": 4.0}: KD got an unexpected argument '
        "'temprature'; did you mean 'temperature'? It accepts: temperature, weight, standardize, "
        "name, dtype, trainable."
    ]


def test_installed_commands_run_the_scripts_without_path_tricks():
    import pathlib

    scripts = ("cifar100", "imagenet", "quickstart", "train_quickstart_teacher", "report")
    for name in scripts:
        assert "sys.path" not in (REPO / "experiments" / f"{name}.py").read_text(), name
    command = pathlib.Path(sys.executable).parent / "kerasdistill-cifar100"
    assert command.exists(), "pip install --no-deps -e . installs the commands"
    proc = subprocess.run([str(command), "--epochs=0"], capture_output=True, text=True,
                          timeout=300, cwd="/")
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [
        "error: --epochs=0 is not accepted; it must be a finite number > 0."
    ]
