"""The defaults study (issue 21): candidate defaults over settings a user brings.

    python experiments/defaults_study.py --dry_run     # the grid, its size, its commands
    python experiments/defaults_study.py --measure     # times two tiny runs: the cost estimate
    python experiments/defaults_study.py --seeds=0     # screening: every candidate, one seed
    python experiments/defaults_study.py --candidates=student,kd,kd_ls --seeds=0,1,2

One base setting (the 100-class development set tin-dev-100-32, resnet20 ->
resnet8, the SGD reference recipe, the short budget, T = 4) and each axis varied
from it one at a time (`SETTINGS`): data (CIFAR-10, Fashion-MNIST), pair (CNN ->
vit_mini_p4, plain `keras.Sequential` conv nets), optimizer (Adam, AdamW with
Keras's defaults), budget (long) and temperature (10); the setting of the
Keras tutorial (Fashion-MNIST, Sequential nets, Adam, T = 10); and the ViT pair at the
long budget, where its student learns. Every setting trains every
candidate (`CANDIDATES`); a row is (setting, candidate), one
`experiments/cifar100.py` process per (row, seed), `--parallel` at a time,
resumable (`experiments/seeded_runs.py`, which defines `--seeds` (default 0,1,2),
`--parallel`, `--threads`, `--output_dir` (default `runs/defaults_study`), `--steps_per_epoch`,
`--batch_size`, `--report_only` and `--report`). Rows whose command is the same as an
earlier row's (the student alone does not depend on T) share its runs.

The teachers are trained first by the study itself, one per (data, teacher), with
the recipe of the committed CIFAR-10 teacher (`--teacher_epochs` x
`--teacher_steps_per_epoch` steps; SGD at LR 0.1 for the zoo teacher, Adam for the
Sequential one), and cached in `<output_dir>/teachers/`; a `--teacher_file` given
for a (data, teacher) is used instead of training one (by default the committed
`data/cifar10_resnet20_teacher.keras`, trained with that recipe). The report gives
each teacher's test top-1. The Fashion-MNIST
files come from Debian's `dataset-fashion-mnist` package (written once as a 32x32
image folder by `kerasdistill.data.idx`); the study stops with one line naming
`apt-get install dataset-fashion-mnist` when they are missing.

The cost: `--measure` trains the base setting's teacher and its Hinton KD row for
`MEASURE_STEPS` steps each, fits `wall seconds = a + b * steps` to the two KD
runs, and costs every run of the grid as that line at its own steps, times its
threads (CPU seconds). Every step is costed as one of the base KD row (ViT,
Sequential and teacher runs differ), so the estimate is rough (on 2026-12-06 it
put a step at 0.07 s; the runs took about 0.19 s). The report's last line gives
what the finished runs took, measured.
"""

import json
import math
import pathlib
import shlex

from absl import flags

from experiments import errors, quiet, seeded_runs

DATA_ROOT = seeded_runs.REPO.parent / "shared" / "data"
# Data: the archive in --data_root (or the folder the study writes), classes, training images.
DATA = {
    "tin32": ("tin-dev-100-32.tar.gz", 100, 50_000),
    "cifar10": ("cifar10-jpeg.tar.gz", 10, 50_000),
    "fashion_mnist": (None, 10, 60_000),
}
SEQUENTIAL = "sequential"
# Pair -> (teacher, student, flags of the pair's runs). The Sequential pair's models are
# `.keras` files the study writes (`sequential_net`); the ViT student takes the transformer
# recipe, whatever the setting's optimizer. The zoo pair is resnet20 -> resnet8 (the pair of
# the library's other measurements), not resnet56 -> resnet20: a third of the cost per step.
PAIRS = {
    "zoo": ("resnet20", "resnet8", {}),
    "vit": ("resnet20", "vit_mini_p4", seeded_runs.TRANSFORMER_RECIPE),
    SEQUENTIAL: (SEQUENTIAL, SEQUENTIAL, {}),
}
# Teacher -> flags of its training run, beside `--teacher_epochs` x `--teacher_steps_per_epoch`:
# the committed CIFAR-10 teacher's SGD recipe (LR 0.1), Adam with Keras's defaults for the
# Sequential teacher (a net without BatchNorm, as the tutorials train it).
TEACHER_RECIPES = {
    "resnet20": {"lr": 0.1},
    SEQUENTIAL: {"optimizer": "adamw", "lr": 1e-3, "weight_decay": 0.0},
}
# Optimizer -> flags. sgd: the reference recipe (the run's defaults: lr 0.05, momentum 0.9,
# coupled L2 5e-4). adam / adamw: Keras's defaults (lr 1e-3; AdamW decay 0.004; AdamW
# with no decay is Adam). Every optimizer keeps the run's step schedule (LR / 10 at 5/8,
# 3/4 and 7/8 of training): the runs have no constant schedule.
OPTIMIZERS = {
    "sgd": {},
    "adam": {"optimizer": "adamw", "lr": 1e-3, "weight_decay": 0.0},
    "adamw": {"optimizer": "adamw", "lr": 1e-3, "weight_decay": 0.004},
}
BASE = {"data": "tin32", "pair": "zoo", "optimizer": "sgd", "budget": "short", "temperature": 4.0}
AXES = {
    "data": ("cifar10", "fashion_mnist"),
    "pair": ("vit", SEQUENTIAL),
    "optimizer": ("adam", "adamw"),
    "budget": ("long",),
    "temperature": (10.0,),
}
SETTINGS = {"base": BASE} | {
    f"{axis}_{value:g}" if isinstance(value, float) else f"{axis}_{value}": {**BASE, axis: value}
    for axis, values in AXES.items() for value in values
}
# The setting of the most-read Keras distillation tutorial (keras.io, "Knowledge
# Distillation"), where Hinton KD made the student worse than training it alone (issue 21):
# Sequential nets, Adam, T = 10, 28x28 grayscale images; several axes off the base at once.
# It has no T = 4 sibling: its rows are compared with its own Hinton KD (at T = 10).
TUTORIAL = "tutorial"
SETTINGS[TUTORIAL] = {"data": "fashion_mnist", "pair": SEQUENTIAL, "optimizer": "adam",
                      "budget": "short", "temperature": 10.0}
# The ViT pair at the long budget (about 2.6 passes over the data, the "short"
# budget of 1-2 epochs and more): at 200 steps every method left the ViT student within
# 2 points of its untrained accuracy, too early to rank them.
VIT_LONG = "pair_vit_budget_long"
SETTINGS[VIT_LONG] = {**BASE, "pair": "vit", "budget": "long"}
# Candidate -> (what it is, (temperature, epochs) -> its flags). T is the setting's
# temperature; DKD's warm-up is 1/12 of training (20 of mdistiller's 240 epochs).
# The LS rows follow Sun et al. (CVPR 2024): KD weight 9 with CE 0.1 at their base
# temperature 2 (kd_ls) or at the user's T (kd_ls_t); DKD weights 9 and 81.
CANDIDATES = {
    "student": ("student trained alone (CE)", lambda t, epochs: {"mode": "student"}),
    "kd": ("Hinton KD: CE 0.1 + KD 0.9 at T", lambda t, epochs: {
        "method": "kd", "ce_weight": 0.1, "kwargs": {"kd": {"weight": 0.9, "temperature": t}}}),
    "kd_ls": ("KD on standardized logits: CE 0.1 + KD 9 at T 2 (the authors' recipe)",
              lambda t, epochs: {"method": "kd", "ce_weight": 0.1, "kwargs": {"kd": {
                  "weight": 9.0, "temperature": 2.0, "standardize": True}}}),
    "kd_ls_t": ("KD on standardized logits: CE 0.1 + KD 9 at T", lambda t, epochs: {
        "method": "kd", "ce_weight": 0.1,
        "kwargs": {"kd": {"weight": 9.0, "temperature": t, "standardize": True}}}),
    "dkd": ("DKD: CE 1 + TCKD 1 + NCKD 8 at T", lambda t, epochs: {
        "method": "dkd", "kwargs": {"dkd": {"temperature": t, "warmup_epochs": epochs / 12}}}),
    "dkd_ls": ("DKD on standardized logits: CE 1 + TCKD 9 + NCKD 81 at T", lambda t, epochs: {
        "method": "dkd", "kwargs": {"dkd": {
            "tckd_weight": 9.0, "nckd_weight": 81.0, "temperature": t,
            "warmup_epochs": epochs / 12, "standardize": True}}}),
    "msdcrd": ("MSDCRD, library defaults (CE 1)",
               lambda t, epochs: {"method": "msdcrd", "kwargs": {"msdcrd": {}}}),
    "kd_msdcrd": ("CE 1 + KD 1 at T + MSDCRD (the flagfiles' choice)", lambda t, epochs: {
        "method": "kd,msdcrd", "kwargs": {"kd": {"weight": 1.0, "temperature": t}, "msdcrd": {}}}),
    "kd_ls_msdcrd": ("CE 1 + KD 1 on standardized logits at T 2 + MSDCRD", lambda t, epochs: {
        "method": "kd,msdcrd",
        "kwargs": {"kd": {"weight": 1.0, "temperature": 2.0, "standardize": True},
                   "msdcrd": {}}}),
    "kd_ls_msdcrd_clip": ("kd_ls_msdcrd with each gradient clipped to norm 1 (clipnorm)",
                          lambda t, epochs: {
        "method": "kd,msdcrd", "clipnorm": 1.0,
        "kwargs": {"kd": {"weight": 1.0, "temperature": 2.0, "standardize": True},
                   "msdcrd": {}}}),
    "kd_ls9_msdcrd": ("kd_ls with MSDCRD: CE 0.1 + KD 9 on standardized logits at T 2 + MSDCRD",
                      lambda t, epochs: {
        "method": "kd,msdcrd", "ce_weight": 0.1,
        "kwargs": {"kd": {"weight": 9.0, "temperature": 2.0, "standardize": True},
                   "msdcrd": {}}}),
}
STUDENT, HINTON = "student", "kd"
# The candidate the study chose as the library's default (`kerasdistill.methods.defaults`).
CHOSEN = "kd_ls9_msdcrd"
MEASURE_STEPS = (10, 40)

flags.DEFINE_list("settings", list(SETTINGS), f"Settings to run, from: {', '.join(SETTINGS)}.")
flags.DEFINE_list("candidates", list(CANDIDATES),
                  f"Candidates to run, from: {', '.join(CANDIDATES)}.")
flags.DEFINE_integer("short_epochs", 1, "Epochs of the short budget.")
flags.DEFINE_integer("long_epochs", 10, "Epochs of the long budget.")
flags.DEFINE_integer("teacher_epochs", 6, "Epochs of each teacher the study trains.")
flags.DEFINE_integer("teacher_steps_per_epoch", 400, "Steps per epoch of each teacher it trains.")
flags.DEFINE_list("teacher_file", ["cifar10_resnet20=data/cifar10_resnet20_teacher.keras"],
                  "<data>_<teacher>=<.keras file> entries: teachers used instead of trained (a "
                  "relative path is read from the repository; its test top-1 from the .json "
                  "beside it).")
flags.DEFINE_string("data_root", str(DATA_ROOT), "Folder of the tin-dev and CIFAR-10 archives.")
flags.DEFINE_string("fashion_mnist_dir", "/usr/share/datasets/fashion-mnist",
                    "Folder of the Fashion-MNIST IDX files (package dataset-fashion-mnist).")
flags.DEFINE_bool("dry_run", False, "Print the grid's size, cost and commands; run nothing.")
flags.DEFINE_bool("measure", False, "Time two tiny runs for the cost estimate, then stop.")
FLAGS = flags.FLAGS


def epochs_of(setting):
    """The epochs of a setting's budget."""
    return FLAGS.short_epochs if setting["budget"] == "short" else FLAGS.long_epochs


def dataset_path(data):
    """The `--dataset` of `data`: an archive in --data_root, or the folder the study writes."""
    archive = DATA[data][0]
    if archive is None:
        return str(seeded_runs.output_dir() / "data" / f"{data}-32")
    return str(pathlib.Path(FLAGS.data_root) / archive)


def sequential_path(role, data):
    """The `.keras` file of the Sequential pair's `role` ("teacher" / "student") for `data`."""
    return str(seeded_runs.output_dir() / "models" / f"sequential_{role}_{data}.keras")


def model_flag(role, setting):
    """The `--teacher` / `--student` value of a setting's pair."""
    teacher, student, _ = PAIRS[setting["pair"]]
    name = teacher if role == "teacher" else student
    return sequential_path(role, setting["data"]) if name == SEQUENTIAL else name


def common_flags(dataset, epochs, seed, output_dir, steps_per_epoch=None):
    steps = FLAGS.steps_per_epoch if steps_per_epoch is None else steps_per_epoch
    return {"dataset": dataset, "epochs": epochs, "steps_per_epoch": steps,
            "batch_size": FLAGS.batch_size, "seed": seed, "output_dir": output_dir,
            "verbose": 2, "export": "keras"}


def teacher_key(setting):
    """`<data>_<teacher>`: the name of a setting's teacher (shared by its data and pair)."""
    return f"{setting['data']}_{PAIRS[setting['pair']][0]}"


def given_teachers():
    """`{teacher key: pathlib.Path}` of `--teacher_file`, relative paths from the repository.

    Raises:
        UsageError: For an entry that is not `<key>=<path>`.
    """
    given = {}
    for entry in FLAGS.teacher_file:
        key, sep, path = entry.partition("=")
        if not sep or not key or not path:
            raise errors.UsageError(
                f"--teacher_file={entry!r}: expected <data>_<teacher>=<.keras file>, "
                "e.g. cifar10_resnet20=data/cifar10_resnet20_teacher.keras.")
        given[key] = seeded_runs.REPO / path
    return given


def teacher_dir(setting):
    """Where the study trains a setting's teacher."""
    return seeded_runs.output_dir() / "teachers" / teacher_key(setting)


def teacher_weights(setting):
    """The `.keras` file of a setting's teacher: the given one, or the one the study trains."""
    return given_teachers().get(teacher_key(setting), teacher_dir(setting) / "model.keras")


def teacher_args(setting):
    """The flags of the run that trains a setting's teacher (seed 0)."""
    name = PAIRS[setting["pair"]][0]
    return {"mode": "teacher", "teacher": model_flag("teacher", setting),
            **common_flags(dataset_path(setting["data"]), FLAGS.teacher_epochs, 0,
                           str(teacher_dir(setting)), FLAGS.teacher_steps_per_epoch),
            **TEACHER_RECIPES[name]}


def teacher_accuracy(setting):
    """A setting's teacher's test top-1 (a fraction), or None before it is trained."""
    given = given_teachers().get(teacher_key(setting))
    record = given.with_suffix(".json") if given else teacher_dir(setting) / "metrics.json"
    return json.loads(record.read_text())["test_accuracy"] if record.exists() else None


def row_args(setting, candidate, seed, output_dir):
    """The flags of (setting, candidate) at `seed`, writing to `output_dir`."""
    epochs = epochs_of(setting)
    spec = CANDIDATES[candidate][1](setting["temperature"], epochs)
    args = {"mode": spec.get("mode", "distill"), "student": model_flag("student", setting),
            **common_flags(dataset_path(setting["data"]), epochs, seed, str(output_dir)),
            **OPTIMIZERS[setting["optimizer"]], **PAIRS[setting["pair"]][2]}
    if args["mode"] == "distill":
        teacher = model_flag("teacher", setting)
        args.update(
            teacher="" if teacher.endswith(".keras") else teacher,
            teacher_weights=str(teacher_weights(setting)),
            method=spec["method"], ce_weight=spec.get("ce_weight", 1.0),
            method_kwargs=json.dumps(spec["kwargs"]),
        )
        if "clipnorm" in spec:
            args["clipnorm"] = spec["clipnorm"]
    return args


def plan(settings, candidates, seeds):
    """The study's runs.

    Returns:
        `(teachers, rows)`: `teachers` maps a teacher directory to its flags;
        `rows` maps `(setting, candidate, seed)` to `(flags, run directory)`, in
        run order (seed-major). A row whose flags (but for the directory) equal
        an earlier row's gets that row's directory.
    """
    teachers, rows, first = {}, {}, {}
    for seed in seeds:
        for setting_name in settings:
            setting = SETTINGS[setting_name]
            for candidate in candidates:
                out = seeded_runs.output_dir() / "runs" / setting_name / candidate
                out = out / f"seed_{seed}"
                args = row_args(setting, candidate, seed, out)
                key = json.dumps({k: v for k, v in args.items() if k != "output_dir"})
                out = first.setdefault(key, out)
                rows[(setting_name, candidate, seed)] = ({**args, "output_dir": str(out)}, out)
                if args["mode"] == "distill" and teacher_key(setting) not in given_teachers():
                    teachers[teacher_dir(setting)] = teacher_args(setting)
    return teachers, rows


def steps_of(args):
    """Training steps of a run's flags."""
    data = next(name for name in DATA if dataset_path(name) == args["dataset"])
    per_epoch = args["steps_per_epoch"] or math.ceil(DATA[data][2] / args["batch_size"])
    return args["epochs"] * per_epoch


def fit_line(points):
    """`(a, b)` of the least-squares line `seconds = a + b * steps` through `(steps, seconds)`."""
    n = len(points)
    mean_x = sum(x for x, _ in points) / n
    mean_y = sum(y for _, y in points) / n
    b = sum((x - mean_x) * (y - mean_y) for x, y in points) / sum(
        (x - mean_x) ** 2 for x, _ in points)
    return mean_y - b * mean_x, b


def measure_dir(steps):
    return seeded_runs.output_dir() / "measure" / f"steps_{steps}"


def measured():
    """`(a, b, threads)` from the `--measure` runs, or None when they have not finished."""
    points, threads = [], 1
    for steps in MEASURE_STEPS:
        path = measure_dir(steps) / seeded_runs.TIMING_FILE
        if not path.exists():
            return None
        timing = json.loads(path.read_text())
        points.append((steps, timing["wall_seconds"]))
        threads = timing["threads"]
    return (*fit_line(points), threads)


def distinct_runs(rows):
    """`{run directory: flags}` of the `plan` rows, each directory once, in run order."""
    return {out: args for args, out in rows.values()}


def size_and_cost(teachers, rows, settings, candidates, seeds):
    """Lines saying the grid's size and (after `--measure`) its estimated CPU-hours."""
    distinct = distinct_runs(rows)
    lines = [(
        f"Grid: {len(settings)} settings x {len(candidates)} candidates = "
        f"{len(settings) * len(candidates)} rows; {len(distinct) // max(len(seeds), 1)} distinct "
        f"runs per seed x {len(seeds)} seed(s) + {len(teachers)} teachers = "
        f"{len(distinct) + len(teachers)} runs."
    )]
    fit = measured()
    if fit is None:
        lines.append("Cost: not measured yet; run --measure (two tiny runs) first.")
        return lines
    a, b, threads = fit
    runs = list(teachers.values()) + list(distinct_runs(rows).values())
    cpu_seconds = sum((a + b * steps_of(args)) * threads for args in runs)
    lines.append(
        f"Cost: about {cpu_seconds / 3600:.1f} CPU-hours: each run's wall time = {a:.0f} s + "
        f"{b:.3f} s/step x its steps, fitted to the base KD row at {MEASURE_STEPS} steps on "
        f"{threads} thread(s), times its threads."
    )
    return lines


def measure_jobs():
    """The `--measure` runs: the base teacher and KD row at each of `MEASURE_STEPS` steps."""
    base = SETTINGS["base"]
    root = seeded_runs.output_dir() / "measure"
    teacher = {**teacher_args(base), "epochs": 1, "steps_per_epoch": MEASURE_STEPS[0],
               "output_dir": str(root / "teacher")}
    jobs = {"teacher": (seeded_runs.command(teacher), root / "teacher")}
    for steps in MEASURE_STEPS:
        args = {**row_args(base, HINTON, 0, measure_dir(steps)), "epochs": 1,
                "steps_per_epoch": steps, "teacher_weights": str(root / "teacher" / "model.keras")}
        jobs[f"kd_{steps}"] = (seeded_runs.command(args), measure_dir(steps))
    return jobs


def sequential_net(filters, num_classes, name):
    """A plain conv net of the kind users write: no BatchNorm, Flatten + Dense logits."""
    import keras

    return keras.Sequential([
        keras.Input((32, 32, 3)),
        keras.layers.Conv2D(filters, 3, strides=2, padding="same"),
        keras.layers.LeakyReLU(0.2),
        keras.layers.MaxPooling2D(2, strides=1, padding="same"),
        keras.layers.Conv2D(2 * filters, 3, strides=2, padding="same"),
        keras.layers.Flatten(),
        keras.layers.Dense(num_classes),
    ], name=name)


def prepare(settings):
    """Writes what the runs read: the Fashion-MNIST folder and the Sequential pair's files."""
    from kerasdistill.data import idx

    for setting in (SETTINGS[name] for name in settings):
        if setting["data"] == "fashion_mnist":
            idx.write_fashion_mnist_folder(dataset_path("fashion_mnist"), FLAGS.fashion_mnist_dir)
        if setting["pair"] == SEQUENTIAL:
            for role, filters in (("teacher", 128), ("student", 16)):
                path = pathlib.Path(sequential_path(role, setting["data"]))
                if not path.exists():
                    path.parent.mkdir(parents=True, exist_ok=True)
                    classes = DATA[setting["data"]][1]
                    sequential_net(filters, classes, f"sequential_{role}").save(path)


def check(settings, candidates):
    """Checks the names and that the data is there, before anything runs.

    Raises:
        UsageError: Naming the first unknown name, budget below 1 or missing file.
    """
    from kerasdistill.data import idx

    for flag, names, known in (("settings", settings, SETTINGS),
                               ("candidates", candidates, CANDIDATES)):
        unknown = [name for name in names if name not in known]
        if unknown:
            raise errors.UsageError(f"--{flag}: unknown {unknown}; choose from {', '.join(known)}.")
    for flag in ("short_epochs", "long_epochs", "teacher_epochs"):
        if FLAGS[flag].value < 1:
            raise errors.UsageError(f"--{flag}={FLAGS[flag].value}: must be >= 1.")
    for key, path in given_teachers().items():
        if not path.is_file():
            raise errors.UsageError(f"--teacher_file: {key}'s {path} is not a file.")
    for data in sorted({SETTINGS[name]["data"] for name in settings}):
        if DATA[data][0] is None:
            missing = idx.missing_fashion_mnist_files(FLAGS.fashion_mnist_dir)
            if missing:
                raise errors.UsageError(
                    f"Fashion-MNIST: {missing[0]} is missing; apt-get install "
                    f"{idx.FASHION_MNIST_PACKAGE} (or pass --fashion_mnist_dir)."
                )
        elif not pathlib.Path(dataset_path(data)).is_file():
            raise errors.UsageError(f"--data_root={FLAGS.data_root!r}: no {DATA[data][0]} in it.")


def run_error(out):
    """The first sentence of the `error: ...` line a failed run (no `metrics.json`) ended
    its log with, or None."""
    log = pathlib.Path(out) / "log.txt"
    if seeded_runs.finished(out) is not None or not log.exists():
        return None
    lines = [line for line in log.read_text(errors="replace").splitlines()
             if line.startswith("error: ")]
    return lines[-1][len("error: "):].split(". ")[0].rstrip(".") + "." if lines else None


def _compared(row, base, base_name):
    """`seeded_runs.compared`, or the difference in points when either has one seed."""
    if row[2] < 2 or base[2] < 2:
        return f"{row[0] - base[0]:+.2f} vs {base_name} (one seed)"
    return seeded_runs.compared(row, base, base_name)


def report(settings, candidates, results, errors_by_row=None):
    """The markdown table: each row's test top-1 against the student alone and Hinton KD T=4.

    Args:
        settings: Setting names, in table order.
        candidates: Candidate names, in table order.
        results: `{(setting, candidate): [metrics dict, ...]}` of the finished runs.
        errors_by_row: `{(setting, candidate): [error line, ...]}` of the failed runs.

    Returns:
        The markdown text.
    """
    errors_by_row = errors_by_row or {}
    lines = [
        (f"Budgets: short {FLAGS.short_epochs}, long {FLAGS.long_epochs} epoch(s) x "
         f"{FLAGS.steps_per_epoch or 'all'} steps x batch {FLAGS.batch_size}; teachers "
         f"{FLAGS.teacher_epochs} epochs x {FLAGS.teacher_steps_per_epoch or 'all'} steps "
         "unless given."),
        "",
        ("| setting | candidate | test top-1 (%) mean ± std | seeds | vs student alone "
         "| vs Hinton KD T=4 |"),
        "|---|---|---:|---:|---|---|",
    ]
    stats = {key: seeded_runs.top1_stats(runs) for key, runs in results.items() if runs}
    for setting_name in settings:
        hinton_setting = next((name for name, s in SETTINGS.items()
                               if s == {**SETTINGS[setting_name], "temperature": 4.0}),
                              setting_name)
        for candidate in candidates:
            failures = errors_by_row.get((setting_name, candidate), [])
            if failures:
                lines.append(f"| {setting_name} | {candidate} | failed in {len(failures)} "
                             f"run(s): {failures[0]} | | | |")
            row = stats.get((setting_name, candidate))
            if row is None:
                continue
            cells = []
            for other in ((setting_name, STUDENT), (hinton_setting, HINTON)):
                base = stats.get(other)
                cells.append("" if base is None or other == (setting_name, candidate)
                             else _compared(row, base, "/".join(other)))
            lines.append(f"| {setting_name} | {candidate} | {seeded_runs.formatted(row)} | "
                         f"{cells[0]} | {cells[1]} |")
    lines += ["", "| teacher | test top-1 (%) |", "|---|---:|"]
    used = {teacher_key(SETTINGS[name]): SETTINGS[name] for name in settings}
    for key, setting in sorted(used.items()):
        accuracy = teacher_accuracy(setting)
        if accuracy is not None:
            lines.append(f"| {key} | {100 * accuracy:.2f} |")
    return "\n".join(lines) + "\n"


def measured_cost(run_dirs):
    """A line: how many of `run_dirs` finished, and their CPU-hours (wall x threads each)."""
    timings = [json.loads(path.read_text()) for path in
               (pathlib.Path(out) / seeded_runs.TIMING_FILE for out in run_dirs) if path.exists()]
    cpu_hours = sum(t["wall_seconds"] * t["threads"] for t in timings) / 3600
    wall_hours = sum(t["wall_seconds"] for t in timings) / 3600
    return (f"Measured: {len(timings)} of {len(run_dirs)} runs finished, {cpu_hours:.2f} "
            f"CPU-hours (each run's wall time x its threads; {wall_hours:.2f} run-hours).\n")


def main(argv):
    del argv
    quiet.quiet_libraries()
    settings, candidates = list(FLAGS.settings), list(FLAGS.candidates)
    seeds = [int(seed) for seed in FLAGS.seeds]
    check(settings, candidates)
    teachers, rows = plan(settings, candidates, seeds)
    if FLAGS.measure:
        jobs = measure_jobs()
        seeded_runs.run_all({"teacher": jobs.pop("teacher")}, 1, FLAGS.threads)
        seeded_runs.run_all(jobs, FLAGS.parallel, FLAGS.threads)
    print("\n".join(size_and_cost(teachers, rows, settings, candidates, seeds)))
    if FLAGS.measure:
        return
    if FLAGS.dry_run:
        for args in teachers.values():
            print(shlex.join(seeded_runs.command(args)))
        for args in distinct_runs(rows).values():
            print(shlex.join(seeded_runs.command(args)))
        return
    if not FLAGS.report_only:
        prepare(settings)
        seeded_runs.run_all(
            {out: (seeded_runs.command(args), out) for out, args in teachers.items()},
            FLAGS.parallel, FLAGS.threads)
        jobs = {
            out: (seeded_runs.command(args), out) for out, args in distinct_runs(rows).items()
            if args["mode"] != "distill" or pathlib.Path(args["teacher_weights"]).is_file()
        }
        seeded_runs.run_all(jobs, FLAGS.parallel, FLAGS.threads)
    results, failed = {}, {}
    for (setting_name, candidate, _), (_, out) in rows.items():
        metrics, error = seeded_runs.finished(out), run_error(out)
        if metrics is not None:
            results.setdefault((setting_name, candidate), []).append(metrics)
        if error is not None:
            failed.setdefault((setting_name, candidate), []).append(error)
    run_dirs = list(teachers) + list(distinct_runs(rows))
    table = report(settings, candidates, results, failed)
    seeded_runs.write_report(table + "\n" + measured_cost(run_dirs))


if __name__ == "__main__":
    errors.run_app(main)
