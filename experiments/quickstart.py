"""Distillation in one command: a student alone against KD, MSDCRD and the default methods.

    python experiments/quickstart.py              # bundled mini CIFAR-10, a few minutes
    python experiments/quickstart.py --seed=1 --output_dir=runs/quickstart_seed1

The default runs offline on `data/cifar10-mini.tar.gz` (5,000 training and 1,000
test images of the real CIFAR-10, shipped with the project) and distils from the
shipped teacher `data/cifar10_resnet20_teacher.keras` (a resnet20 trained on the
full CIFAR-10 training set by experiments/train_quickstart_teacher.py; its
accuracy is in the `.json` file next to it), so no teacher is trained here.
Four resnet8 students are trained with the same data, schedule and seed, and
the script prints their test accuracies and wall-clock times. Each writes its
own run directory (model, SavedModel, history) under --output_dir; see
experiments/runner.py. Every runner.py flag applies except the per-run ones
(--mode, --method, --method_kwargs, --ce_weight), which the stages fix.

What it measured on the 2-core development machine (teacher, students, seconds)
is in README.md, "Two commands".
"""

import dataclasses
import pathlib
import time

from absl import flags

from experiments import errors, quiet, run_flags, runner

REPO = pathlib.Path(__file__).resolve().parents[1]

MINI = REPO / "data" / "cifar10-mini.tar.gz"
TEACHER = REPO / "data" / "cifar10_resnet20_teacher.keras"
# Fixed per stage, so not accepted on the command line.
STAGE_FLAGS = ("mode", "method", "method_kwargs", "ce_weight")
# (row name, output subdirectory, RunConfig fields of the stage). KD alone uses the
# reference weights (CE 0.1, KD 0.9); "default" is the library's default methods (KD 9 on
# standardized logits at T 2 + MSDCRD, CE 0.1), chosen by the defaults study (docs/results.md).
STAGES = (
    ("student alone", "student", {"mode": "student"}),
    ("KD", "kd", {"method": "kd", "ce_weight": 0.1,
                  "method_kwargs": {"kd": {"temperature": 4.0, "weight": 0.9}}}),
    ("MSDCRD", "msdcrd", {"method": "msdcrd", "ce_weight": 1.0}),
    ("default", "default", {"method": "default"}),
)

run_flags.define_flags(
    flags,
    defaults={
        "teacher": "resnet20",
        "student": "resnet8",
        "teacher_weights": str(TEACHER),
        "dataset": str(MINI),
        "epochs": 3,
        "batch_size": 64,
        "output_dir": "runs/quickstart",
        "verbose": 0,
    },
)
FLAGS = flags.FLAGS


def stage_configs(base):
    """One `RunConfig` per stage, from `base` with the stage's fields set.

    Args:
        base: A `RunConfig` holding the shared settings (data, models,
            teacher weights, schedule, seed, output root).

    Returns:
        A list of `(row name, RunConfig)`.
    """
    root = pathlib.Path(base.output_dir)
    return [
        (name, dataclasses.replace(
            base, **{"mode": "distill", **fields, "output_dir": str(root / subdir)}
        ))
        for name, subdir, fields in STAGES
    ]


def run_stages(argv):
    del argv
    given = [name for name in STAGE_FLAGS if FLAGS[name].present]
    if given:
        raise errors.UsageError(
            f"quickstart.py sets --{', --'.join(STAGE_FLAGS)} per stage; got {given}. "
            "Use experiments/cifar100.py for a single run with your own method."
        )
    quiet.quiet_libraries(FLAGS.verbose)
    rows, teacher_accuracy = [], None
    start = time.perf_counter()
    for name, config in stage_configs(run_flags.config_from_flags(FLAGS)):
        stage_start = time.perf_counter()
        metrics = runner.run(config)
        rows.append((name, metrics["test_accuracy"], time.perf_counter() - stage_start, config))
        teacher_accuracy = metrics.get("teacher_test_accuracy", teacher_accuracy)
    total = time.perf_counter() - start

    print(f"\nteacher {FLAGS.teacher} ({FLAGS.teacher_weights}): "
          f"test accuracy {teacher_accuracy:.4f}")
    print(f"\n{'student ' + FLAGS.student:<22}{'test accuracy':>14}{'seconds':>10}   run directory")
    for name, accuracy, seconds, config in rows:
        print(f"{name:<22}{accuracy:>14.4f}{seconds:>10.0f}   {config.output_dir}")
    print(f"{'total':<22}{'':>14}{total:>10.0f}")


def main():
    """The `kerasdistill-quickstart` command (`[project.scripts]` of pyproject.toml)."""
    errors.run_app(run_stages)


if __name__ == "__main__":
    main()
