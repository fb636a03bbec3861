"""Runs a table of student runs at one budget and several seeds, and reports it.

    python experiments/ablation.py \
        --teacher=resnet20 --student=resnet8 \
        --teacher_weights=data/cifar10_resnet20_teacher.keras \
        --dataset=../shared/data/cifar10-jpeg.tar.gz --epochs=1 --steps_per_epoch=0 \
        --seeds=0,1,2 --output_dir=runs/ablation --report=runs/ablation/table.md

Every (row, seed) is one `experiments/cifar100.py` process with the same budget
(epochs, steps, batch) and the row's own flags; `--parallel` of them run at a
time, seed-major (every row's first seed before any row's second), resumable
(`experiments/seeded_runs.py`, which defines the flags both tables take:
`--seeds`, `--parallel`, `--output_dir` (default `runs/ablation`), ...). The
report gives each row's mean and sample standard deviation of test top-1 over
the seeds that finished, and marks rows whose mean differs from the
`--baseline` row's by more than twice the larger of the two standard
deviations. A mistake in the flags ends it with one line on stderr and exit
status 2, as the other scripts.
"""

import json
import pathlib

from absl import flags

from experiments import errors, seeded_runs

REPO = seeded_runs.REPO

KD = {"weight": 0.9, "temperature": 4.0}
EVERY_STAGE = {"stages": 3}
# name -> (what the row tests, flags of the row). Rows with "msdcrd" options run
# CE 1.0 + MSDCRD (or, for the options measured as noise, MSDCRDVariants) with
# those options over the library's defaults. Rows with a
# "student" entry replace --student (the heterogeneous pair).
ROWS = {
    "student": ("student trained alone (CE)", {"mode": "student"}),
    "kd": ("KD (CE 0.1 + KD 0.9, T 4)", {"method": "kd", "ce_weight": 0.1, "kwargs": {"kd": KD}}),
    "crd": (
        "CRD (weight 0.8, 4096 negatives)",
        {"method": "crd", "kwargs": {"crd": {"num_negatives": 4096}}},
    ),
    "dkd": (
        "DKD (tckd_weight 1, nckd_weight 8, T 4, warm-up 1/12 of training)",
        {"method": "dkd", "kwargs": {"dkd": {"warmup_epochs": 1 / 12}}},
    ),
    "msdcrd": ("MSDCRD, library defaults", {"method": "msdcrd", "msdcrd": {}}),
    "sc_exclude": (
        "MSDCRD, same-class samples removed from the sample-wise negatives",
        {"method": "msdcrd_variants", "msdcrd": {"same_class_pairs": "exclude"}},
    ),
    "sc_positives": (
        "MSDCRD, same-class samples as extra positives (SupCon-style)",
        {"method": "msdcrd_variants", "msdcrd": {"same_class_pairs": "positives"}},
    ),
    "every_stage": (
        "MSDCRD on feat_1..feat_3, grids fitted per map, weights 1/3",
        {"method": "msdcrd", "msdcrd": EVERY_STAGE},
    ),
    "fneg_same_scale": (
        "MSDCRD, feature-wise negatives from the anchor's scale only",
        {"method": "msdcrd_variants", "msdcrd": {"feature_negatives": "same_scale"}},
    ),
    "fneg_non_overlapping": (
        "MSDCRD, feature-wise negatives that do not overlap the anchor",
        {"method": "msdcrd_variants", "msdcrd": {"feature_negatives": "non_overlapping"}},
    ),
    **{
        f"weight_{weight:g}": (f"MSDCRD, overall weight {weight:g}",
                               {"method": "msdcrd", "msdcrd": {"weight": weight}})
        for weight in (0.5, 2.0, 4.0)
    },
    "sw_only": (
        "MSDCRD, sample-wise term only (fw_weight 0)",
        {"method": "msdcrd", "msdcrd": {"fw_weight": 0.0}},
    ),
    "fw_only": (
        "MSDCRD, feature-wise term only (sw_weight 0)",
        {"method": "msdcrd", "msdcrd": {"sw_weight": 0.0}},
    ),
}
# The heterogeneous pair: the CNN teacher's 8x8x64 last map against a resnet20-sized
# ViT's 8x8x96 token map, trained with the transformer recipe scaled to the one-pass budget.
VIT = {"student": "vit_mini_p4", "flags": seeded_runs.TRANSFORMER_RECIPE}
ROWS.update({
    # The ViT's own baseline; no CNN row is its pair.
    "vit_student": ("ViT student trained alone (CE)", {**VIT, "mode": "student", "against": None}),
    "vit_linear": (
        "ViT student, MSDCRD with linear heads (128-d)",
        {**VIT, "method": "msdcrd", "msdcrd": {"projection": "linear"}, "against": "vit_student"},
    ),
    "vit_channel_pool": (
        "ViT student, MSDCRD with the ViT's 96 channels averaged to the CNN's 64",
        {**VIT, "method": "msdcrd", "msdcrd": {"projection": "channel_pool"},
         "against": "vit_linear"},
    ),
})

flags.DEFINE_string("teacher", "resnet20", "Teacher model name.")
flags.DEFINE_string("student", "resnet8", "Student model name (rows may name their own).")
flags.DEFINE_string("teacher_weights", "", "Trained teacher (.keras, .weights.h5, .pth).")
flags.DEFINE_string("dataset", str(REPO.parent / "shared" / "data" / "cifar10-jpeg.tar.gz"),
                    "Dataset name or folder/archive.")
flags.DEFINE_integer("epochs", 1, "Epochs of every run.")
flags.DEFINE_list("rows", list(ROWS), f"Rows to run, from: {', '.join(ROWS)}.")
flags.DEFINE_string("baseline", "kd",
                    "Row the others are compared with in the report (unless a row names its own).")
FLAGS = flags.FLAGS


def run_dir(name, seed):
    """Where run (`name`, `seed`) writes its outputs."""
    return seeded_runs.output_dir() / name / f"seed_{seed}"


def row_command(name, seed):
    """The `experiments/cifar100.py` command line of row `name` at `seed`."""
    _, spec = ROWS[name]
    kwargs = {**spec.get("kwargs", {})}
    if "msdcrd" in spec:
        kwargs[spec["method"]] = spec["msdcrd"]
    args = {
        "mode": spec.get("mode", "distill"),
        "teacher": FLAGS.teacher,
        "student": spec.get("student", FLAGS.student),
        "dataset": FLAGS.dataset,
        "epochs": FLAGS.epochs,
        "steps_per_epoch": FLAGS.steps_per_epoch,
        "batch_size": FLAGS.batch_size,
        "seed": seed,
        "output_dir": str(run_dir(name, seed)),
        "verbose": 2,
        **spec.get("flags", {}),
    }
    if args["mode"] == "distill":
        args.update(
            method=spec["method"],
            ce_weight=spec.get("ce_weight", 1.0),
            teacher_weights=FLAGS.teacher_weights,
            method_kwargs=json.dumps(kwargs),
        )
    return seeded_runs.command(args)


def report(results):
    """A markdown table: mean +- std of test top-1 per row, and the comparison."""
    stats = {
        name: seeded_runs.top1_stats(runs.values()) for name, runs in results.items() if runs
    }
    lines = [
        (f"Teacher {FLAGS.teacher}; student {FLAGS.student} unless the row names one; "
         f"dataset {pathlib.Path(FLAGS.dataset).name}; {FLAGS.epochs} epoch(s) x "
         f"{FLAGS.steps_per_epoch or 'all'} steps x batch {FLAGS.batch_size}; "
         f"seeds {', '.join(FLAGS.seeds)}."),
        "",
        "| row | what | test top-1 (%) mean ± std | seeds | against (beyond 2 std?) |",
        "|---|---|---:|---:|---|",
    ]
    for name, row in stats.items():
        other = ROWS[name][1].get("against", FLAGS.baseline)
        against = ""
        if other in stats and other != name:
            against = seeded_runs.compared(row, stats[other], other)
        lines.append(f"| {name} | {ROWS[name][0]} | {seeded_runs.formatted(row)} | {against} |")
    teacher = next((m["teacher_test_accuracy"] for runs in results.values()
                    for m in runs.values() if "teacher_test_accuracy" in m), None)
    if teacher is not None:
        lines.append(f"\nTeacher {FLAGS.teacher}: {100 * teacher:.2f}% test top-1.")
    return "\n".join(lines) + "\n"


def main(argv):
    del argv
    unknown = [r for r in FLAGS.rows if r not in ROWS]
    if unknown:
        raise errors.UsageError(f"--rows: unknown rows {unknown}; choose from {', '.join(ROWS)}.")
    if not pathlib.Path(FLAGS.teacher_weights).is_file():
        raise errors.UsageError(f"--teacher_weights={FLAGS.teacher_weights!r}: no such file.")
    seeds = [int(seed) for seed in FLAGS.seeds]
    keys = [(name, seed) for seed in seeds for name in FLAGS.rows]
    if FLAGS.report_only:
        done = {key: seeded_runs.finished(run_dir(*key)) for key in keys}
    else:
        jobs = {key: (row_command(*key), run_dir(*key)) for key in keys}
        done = seeded_runs.run_all(jobs, FLAGS.parallel, FLAGS.threads)
    results = {name: {} for name in FLAGS.rows}
    for (name, seed), metrics in done.items():
        if metrics is not None:
            results[name][seed] = metrics
    seeded_runs.write_report(report(results))


if __name__ == "__main__":
    errors.run_app(main)
