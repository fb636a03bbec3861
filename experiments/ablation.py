"""Runs a table of student runs at one budget against one teacher, and reports it.

    python experiments/ablation.py \
        --teacher=resnet20 --student=resnet8 \
        --teacher_weights=runs/c10_resnet20_teacher/model.keras \
        --dataset=../shared/data/cifar10-jpeg.tar.gz --epochs=4 --steps_per_epoch=160 \
        --output_dir=runs/ablation --report=runs/ablation/table.md

Every row is one `experiments/cifar100.py` process with the same budget (epochs,
steps, batch, seed) and its own flags; rows run `--parallel` at a time. A row
whose `metrics.json` exists is not run again, so an interrupted table resumes.
"""

import concurrent.futures
import json
import pathlib
import subprocess
import sys

from absl import app, flags

REPO = pathlib.Path(__file__).resolve().parents[1]

KD = {"weight": 0.9, "temperature": 4.0}
# The reading the MSDCRD rows vary one option of (the defaults before this ablation).
BASE = {"projection": "linear", "temperature": 0.1}
# name -> (what the row tests, flags of the row). MSDCRD rows are CE 1.0 + MSDCRD
# unless they say "+ KD"; their "msdcrd" entry is merged over BASE, except in the
# "defaults" rows, which use the library's current defaults.
ROWS = {
    "student": ("student trained alone (CE)", {"mode": "student"}),
    "kd": ("KD (CE 0.1 + KD 0.9, T 4)", {"method": "kd", "ce_weight": 0.1, "kwargs": {"kd": KD}}),
    "fitnet": ("FitNet (hint feat_2, weight 100)", {"method": "fitnet"}),
    "at": ("AT (feat_1..3, weight 1000)", {"method": "at"}),
    "crd": (
        "CRD (weight 0.8, 4096 negatives)",
        {"method": "crd", "kwargs": {"crd": {"num_negatives": 4096}}},
    ),
    "dkd": (
        "DKD (alpha 1, beta 8, T 4, warm-up 1/12 of training)",
        {"method": "dkd", "kwargs": {"dkd": {"warmup_epochs": 0.33}}},
    ),
    "msdcrd": ("MSDCRD base: grids 1,2,4, linear heads, tau 0.1", {"method": "msdcrd", "msdcrd": {}}),
    "msdcrd_kd": (
        "MSDCRD base + KD (CE 1, KD 1)",
        {"method": "kd,msdcrd", "kwargs": {"kd": {"weight": 1.0, "temperature": 4.0}},
         "msdcrd": {}},
    ),
    "defaults": ("MSDCRD library defaults (tau 0.07, no heads here)", {"method": "msdcrd"}),
    "defaults_kd": (
        "MSDCRD library defaults + KD (CE 1, KD 1)",
        {"method": "kd,msdcrd", "kwargs": {"kd": {"weight": 1.0, "temperature": 4.0}}},
    ),
    "scales_1": ("MSDCRD scales {1} (global only)", {"method": "msdcrd", "msdcrd": {"scales": [1]}}),
    "scales_12": ("MSDCRD scales {1,2}", {"method": "msdcrd", "msdcrd": {"scales": [1, 2]}}),
    "overlapping": (
        "MSDCRD overlapping windows (8/8, 4/2, 2/1)",
        {"method": "msdcrd",
         "msdcrd": {"pooling": "overlapping", "scales": [[8, 8], [4, 2], [2, 1]]}},
    ),
    "no_fw": ("MSDCRD without the feature-wise term", {"method": "msdcrd", "msdcrd": {"lambda_fw": 0.0}}),
    "no_sw": ("MSDCRD without the sample-wise term", {"method": "msdcrd", "msdcrd": {"lambda_sw": 0.0}}),
    "tau_007": ("MSDCRD tau 0.07", {"method": "msdcrd", "msdcrd": {"temperature": 0.07}}),
    "tau_02": ("MSDCRD tau 0.2", {"method": "msdcrd", "msdcrd": {"temperature": 0.2}}),
    "tau_05": ("MSDCRD tau 0.5", {"method": "msdcrd", "msdcrd": {"temperature": 0.5}}),
    "param_free": (
        "MSDCRD parameter-free (L2 only, no heads)",
        {"method": "msdcrd", "msdcrd": {"projection": "none"}},
    ),
    "same_class": (
        "MSDCRD, same-class sample-wise negatives dropped",
        {"method": "msdcrd", "msdcrd": {"exclude_same_class_negatives": True}},
    ),
    "symmetric": ("MSDCRD symmetric (teacher-anchored terms too)", {"method": "msdcrd", "msdcrd": {"symmetric": True}}),
}

flags.DEFINE_string("teacher", "resnet20", "Teacher model name.")
flags.DEFINE_string("student", "resnet8", "Student model name.")
flags.DEFINE_string("teacher_weights", "", "Trained teacher (.keras, .weights.h5, .pth).")
flags.DEFINE_string("dataset", str(REPO.parent / "shared" / "data" / "cifar10-jpeg.tar.gz"),
                    "Dataset name or folder/archive.")
flags.DEFINE_integer("epochs", 4, "Epochs of every row.")
flags.DEFINE_integer("steps_per_epoch", 160, "Steps per epoch of every row.")
flags.DEFINE_integer("batch_size", 64, "Batch size of every row.")
flags.DEFINE_integer("seed", 0, "Seed of every row.")
flags.DEFINE_list("rows", list(ROWS), f"Rows to run, from: {', '.join(ROWS)}.")
flags.DEFINE_integer("parallel", 2, "Rows run at the same time.")
flags.DEFINE_string("output_dir", "runs/ablation", "One sub-directory per row.")
flags.DEFINE_string("report", "", "Markdown file for the table (default: <output_dir>/table.md).")
FLAGS = flags.FLAGS


def row_command(name):
    """The `experiments/cifar100.py` command line of row `name`."""
    _, spec = ROWS[name]
    kwargs = {**spec.get("kwargs", {})}
    if "msdcrd" in spec:
        kwargs["msdcrd"] = {**BASE, **spec["msdcrd"]}
    args = {
        "mode": spec.get("mode", "distill"),
        "teacher": FLAGS.teacher,
        "student": FLAGS.student,
        "dataset": FLAGS.dataset,
        "epochs": FLAGS.epochs,
        "steps_per_epoch": FLAGS.steps_per_epoch,
        "batch_size": FLAGS.batch_size,
        "seed": FLAGS.seed,
        "output_dir": str(pathlib.Path(FLAGS.output_dir) / name),
        "verbose": 2,
    }
    if args["mode"] == "distill":
        args.update(
            method=spec["method"],
            ce_weight=spec.get("ce_weight", 1.0),
            teacher_weights=FLAGS.teacher_weights,
            method_kwargs=json.dumps(kwargs),
        )
    return [sys.executable, str(REPO / "experiments" / "cifar100.py")] + [
        f"--{key}={value}" for key, value in args.items()
    ]


def run_row(name):
    """Runs row `name` unless its metrics exist; returns its metrics dict."""
    out = pathlib.Path(FLAGS.output_dir) / name
    metrics_path = out / "metrics.json"
    if not metrics_path.exists():
        out.mkdir(parents=True, exist_ok=True)
        with open(out / "log.txt", "a") as log:
            subprocess.run(row_command(name), stdout=log, stderr=subprocess.STDOUT, check=True)
    return json.loads(metrics_path.read_text())


def report(results):
    """A markdown table of the rows' test accuracies and throughputs."""
    lines = [
        f"{FLAGS.teacher} -> {FLAGS.student} on {pathlib.Path(FLAGS.dataset).name}, "
        f"{FLAGS.epochs} epochs x {FLAGS.steps_per_epoch} steps x batch {FLAGS.batch_size}, "
        f"seed {FLAGS.seed}.",
        "",
        "| row | what | test top-1 (%) | train images/s |",
        "|---|---|---:|---:|",
    ]
    for name, metrics in results.items():
        lines.append(
            f"| {name} | {ROWS[name][0]} | {100 * metrics['test_accuracy']:.2f} | "
            f"{metrics['train_images_per_second']:.0f} |"
        )
    teacher = next((m["teacher_test_accuracy"] for m in results.values()
                    if "teacher_test_accuracy" in m), None)
    if teacher is not None:
        lines.append(f"\nTeacher {FLAGS.teacher}: {100 * teacher:.2f}% test top-1.")
    return "\n".join(lines) + "\n"


def main(argv):
    del argv
    unknown = [r for r in FLAGS.rows if r not in ROWS]
    if unknown:
        raise app.UsageError(f"Unknown rows {unknown}; choose from {', '.join(ROWS)}.")
    if not FLAGS.teacher_weights or not pathlib.Path(FLAGS.teacher_weights).exists():
        raise app.UsageError(f"--teacher_weights {FLAGS.teacher_weights!r} does not exist.")
    with concurrent.futures.ThreadPoolExecutor(FLAGS.parallel) as pool:
        futures = {name: pool.submit(run_row, name) for name in FLAGS.rows}
        results = {}
        for name, future in futures.items():
            try:
                results[name] = future.result()
            except subprocess.CalledProcessError as error:
                print(f"row {name} failed ({error}); see its log.txt", file=sys.stderr)
    table = report(results)
    path = pathlib.Path(FLAGS.report or pathlib.Path(FLAGS.output_dir) / "table.md")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(table)
    print(table)


if __name__ == "__main__":
    app.run(main)
