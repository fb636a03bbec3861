"""One-call GPU study: distillation throughput on JAX and PyTorch, then accuracy at a real budget.

    python benchmarks/gpu_study.py --output_dir=/tmp/study             # on the GPU, ~8 minutes
    python benchmarks/gpu_study.py --tiny --output_dir=/tmp/study      # CPU smoke, ~4 minutes

Written for the lent H200 (JAX and PyTorch with CUDA, no TensorFlow, no
network, one command of at most 10 minutes): nothing here imports TensorFlow,
and every process of the study makes it unimportable, so that a CPU run
imports what a device run does. The top-level process imports neither Keras
nor a framework; it runs each part in its own subprocess, since
`KERAS_BACKEND` is fixed per process:

1. **Throughput**, once per backend of `--backends` (`jax,torch`): for each
   batch size of `--batch_sizes` (64, 256) and each entry of `--methods`
   (KD, KD+MSDCRD, MSDCRD, DKD, CRD), a fresh `Distiller` of `--teacher` ->
   `--student` (resnet32x4 -> resnet8x4, 100 classes, random weights,
   synthetic uint8 CIFAR-sized data on the device) runs `--warmup_steps`
   untimed steps (the first traces and compiles on JAX) and `--steps` timed
   ones (`benchmarks/device_training.py`: batch gathered by index on the
   device, pad-4 crop, flip and normalization in `keras.ops` on the device,
   then Keras's own `train_step`; one `jax.jit` function on JAX, eager on
   PyTorch). Reported: images/s, ms/step, the implied wall time of 240
   epochs of 50,000 images, the first step's time, the peak device memory,
   and the throughput against the goal, 240 epochs in 15 minutes on one
   H100-class GPU: 240 x 50,000 / 900 s = **13,333 images/s**.
2. **Accuracy** (one backend, `--accuracy_backend`, JAX by default) on the
   full CIFAR-10 of the shared archive (`--archive`: 50,000 training and
   10,000 test JPEGs, decoded with Pillow by a background subprocess while
   part 1 runs): a teacher (`--accuracy_teacher`, resnet56) trained from
   scratch, then students (`--accuracy_student`, resnet20) of each entry of
   `--runs`: alone, KD, DKD, CRD, MSDCRD and KD+MSDCRD. Each run follows the
   library's recipe, read from the flagfiles `experiments/flags/<recipe>_*.cfg`
   (`--recipe=resnet56_resnet20`: batch 64, `TorchSGD` LR 0.05, momentum 0.9,
   weight decay 5e-4, the CE weight and method arguments of the flagfile;
   MSDCRD alone, which has no flagfile, takes the library defaults with CE
   weight 1), with `kerasdistill.training.step_decay` scaled to the epochs
   run and DKD's 20-of-240 warm-up epochs scaled likewise. Test top-1 is
   measured on all 10,000 test images and printed as the table
   `experiments/report.py` writes (`report.markdown_table`; the published
   column is n/a: the reference numbers are CIFAR-100's).

Outputs, rewritten after every entry and run so that a run cut off keeps what
it measured: `--output_dir`/`gpu_study.md` (both tables), `throughput_jax.json`,
`throughput_torch.json`, `accuracy.json` and `gpu_study.json` (stage exit
statuses).

**The budget.** `--budget_s` (480 s) is the wall time of the whole study.
The throughput part may use `--throughput_share` of it (0.5), 70 % for JAX
(168 s) and 30 % for PyTorch (72 s); an entry is skipped when the longest
entry so far would overrun its backend's share. The accuracy part gets what
is left (at least 240 s) and sizes its epochs to fit from its own measured
step times: the learning rate is fed to each step from the host (the exact
`step_decay` values), so a run's length is decided after its first steps
are timed, before its first learning-rate milestone. The teacher trains for
`--teacher_share` (0.3) of the time left once it has compiled, at most
`--teacher_epochs` (30). After the first student's compilation and
`--probe_steps` timed steps, M, the epochs of every student, is the largest
number (at most `--student_epochs`, 15) such that all students fit: each
student's epoch costs the first one's times the ratio of the two methods'
ms/step measured in part 1 on the same backend (1 where part 1 has no
number, as for the student alone; 1.5 for CRD), and each later student
compiles and is evaluated in as long as the first. A student that would
still overrun the end is skipped; a run still training at the end stops
there, is evaluated and is marked cut short. The subprocesses are killed 30 s
after their share at the latest, so the command ends within about
`--budget_s` + 40 s.

**The estimate behind the defaults** (no GPU has run this yet: the first
device run's `gpu_study.md` replaces every number below). Compilation: on the
2 development CPU cores the first JAX step (trace, XLA compilation, one step)
takes about 17 s for resnet32x4 -> resnet8x4 KD, 13 s for resnet56 alone and
8.6 s for resnet56 -> resnet20 KD; XLA's GPU compilation, with its
convolution autotuning, is taken to cost as much (~10-15 s per program).
Step time: at batch 64 these CIFAR networks are small (resnet56: 0.13
GFLOPs per image forward), so an H200 step is bound by kernel launches and
small convolutions rather than FLOPs; taken as 3 ms per resnet56 training
step or resnet56 -> resnet20 distillation step on JAX (XLA fuses batch
normalization and activations), i.e. about 2.5 s per epoch of 781 steps.
PyTorch runs Keras eagerly, with tens of microseconds of Python per layer
call and per optimizer variable, several times slower at batch 64, so the
accuracy part runs on JAX. The arithmetic, in 480 s:

- throughput, JAX: 10 entries x (~15 s compile + ~2 s build + 33 steps)
  ~= 170 s against a 168 s share: the last entry or two at batch 256 may be
  skipped; PyTorch: 10 x ~5 s + ~10 s start ~= 60 s of its 72 s;
- accuracy, >= 240 s: 20 s reserve, ~20 s start-up (import, 150 MB of images
  to the device, the teacher's first build), ~11 s teacher compile, leaving
  ~190 s; teacher 0.3 x 190 ~= 57 s, ~= 22 epochs at 2.5 s; students: ~130 s
  for 6 runs, ~6 x 11 s of compilation and evaluation, ~65 s of training at
  2.5 s per epoch times the cost ratios (sum ~7) -> M ~= 3-4 epochs.

A GPU that steps or compiles faster raises N and M up to their caps; a
slower one lowers them, never below 1 epoch. The table says what ran.

Per-entry peak memory: PyTorch's `max_memory_allocated` since the entry
began; JAX's `peak_bytes_in_use` is the process's peak so far (entries run
by ascending batch size). `n/a` on CPU.
"""

import hashlib
import importlib.abc
import importlib.machinery
import io
import json
import math
import os
import pathlib
import subprocess
import sys
import tarfile
import time

import numpy as np
from absl import app, flags

REPO = pathlib.Path(__file__).resolve().parents[1]
SCRIPT = pathlib.Path(__file__).resolve()
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

# The accuracy table is the one experiments/report.py writes (absl and the standard library only).
from experiments import report  # noqa: E402

REFERENCE_EPOCHS = 240
EPOCH_IMAGES = 50_000
TARGET_MINUTES = 15
TARGET_IMAGES_PER_S = REFERENCE_EPOCHS * EPOCH_IMAGES / (TARGET_MINUTES * 60)
FLAGS_DIR = REPO / "experiments" / "flags"
# Student runs in the order of the accuracy table (the teacher comes first).
TABLE_ORDER = ("student", "kd", "dkd", "crd", "msdcrd", "kd+msdcrd")
# A student's cost per step relative to the first student's, where part 1 did not measure it.
DEFAULT_COST_RATIOS = {"crd": 1.5}
JPEG_EXTENSIONS = (".jpg", ".jpeg", ".png")
# Where the archive is looked for when --archive is not given: a copy carried inside the
# checkout (the device receives the repository only), then the shared folder beside it.
ARCHIVE_CANDIDATES = (
    REPO / ".data" / "cifar10-jpeg.tar.gz",
    pathlib.Path(os.environ.get("KERASDISTILL_SHARED", REPO.parent / "shared"))
    / "data" / "cifar10-jpeg.tar.gz",
)
# What --tiny sets, for every flag not given on the command line.
TINY = {
    "teacher": "resnet8",
    "student": "resnet8",
    "batch_sizes": "8",
    "steps": 2,
    "warmup_steps": 1,
    "num_train": 64,
    "accuracy_teacher": "resnet8",
    "accuracy_student": "resnet8",
    "batch_size": 16,
    "max_train_images": 256,
    "max_test_images": 128,
    "teacher_epochs": 2,
    "student_epochs": 1,
    "probe_steps": 2,
    "budget_s": 1200,
}

FLAGS = flags.FLAGS


def define_flags():
    """Defines the study's flags (when run as a script: importing this module defines none)."""
    flags.DEFINE_float("budget_s", 480, "Wall time of the whole study, seconds.")
    flags.DEFINE_string("output_dir", "runs/gpu_study", "Where the tables and JSON records go.")
    flags.DEFINE_integer("seed", 0, "Seed of the data order, the augmentation and the models.")
    flags.DEFINE_string(
        "dtype_policy", "float32", "Keras dtype policy of the models ('float32', 'mixed_bfloat16')."
    )
    flags.DEFINE_string("stages", "throughput,accuracy", "Parts to run: throughput, accuracy.")
    # Part 1: throughput.
    flags.DEFINE_string("backends", "jax,torch", "Backends of the throughput part, in order.")
    flags.DEFINE_string("teacher", "resnet32x4", "Throughput teacher (zoo name).")
    flags.DEFINE_string("student", "resnet8x4", "Throughput student (zoo name).")
    flags.DEFINE_integer("num_classes", 100, "Throughput classes.")
    flags.DEFINE_string(
        "methods", "kd,kd+msdcrd,msdcrd,dkd,crd",
        "Throughput entries, in order; '+' combines methods.",
    )
    flags.DEFINE_string("batch_sizes", "64,256", "Throughput batch sizes (run in ascending order).")
    flags.DEFINE_integer("steps", 30, "Timed steps per throughput entry.")
    flags.DEFINE_integer("warmup_steps", 3, "Untimed steps per throughput entry first (compile).")
    flags.DEFINE_integer("num_train", 50_000, "Synthetic training-set size of the throughput part.")
    flags.DEFINE_float(
        "throughput_share", 0.5,
        "Share of --budget_s the throughput part may use: 70 % for JAX, 30 % for PyTorch.",
    )
    # Part 2: accuracy.
    flags.DEFINE_string("accuracy_backend", "jax", "Backend of the accuracy part (jax or torch).")
    flags.DEFINE_string("archive", "", "CIFAR-10 JPEG archive (train/<class>/*, test/<class>/*).")
    flags.DEFINE_string("accuracy_teacher", "resnet56", "Teacher trained in the accuracy part.")
    flags.DEFINE_string("accuracy_student", "resnet20", "Student of the accuracy part.")
    flags.DEFINE_string(
        "recipe", "resnet56_resnet20",
        "Flagfile prefix in experiments/flags/ whose CE weights and method arguments the "
        "runs take.",
    )
    flags.DEFINE_string(
        "runs", "kd,student,msdcrd,kd+msdcrd,dkd,crd",
        "Student runs in the order they train: 'student' (alone) or method entries. The first "
        "one's measured step sets the student epochs.",
    )
    flags.DEFINE_integer("batch_size", 64, "Accuracy-part batch size (the recipe's 64).")
    flags.DEFINE_integer("teacher_epochs", 30, "Most teacher epochs (fewer to fit the budget).")
    flags.DEFINE_integer("student_epochs", 15, "Most epochs per student (fewer to fit the budget).")
    flags.DEFINE_float("teacher_share", 0.3, "Share of the accuracy part's time for the teacher.")
    flags.DEFINE_integer("probe_steps", 50, "Timed steps after the compiling one: epoch sizing.")
    flags.DEFINE_float("reserve_s", 20, "Seconds kept free at the end (evaluation, writing, exit).")
    flags.DEFINE_integer("max_train_images", 0, "Use this many training images (0: all).")
    flags.DEFINE_integer("max_test_images", 0, "Use this many test images (0: all).")
    flags.DEFINE_string(
        "cache_dir", "/tmp/kerasdistill_gpu_study", "Where decoded arrays are kept."
    )
    flags.DEFINE_bool("tiny", False, "CPU smoke preset: " + json.dumps(TINY) + " unless given.")
    # Internal: which part this process runs, and its soft deadline (Unix time).
    flags.DEFINE_enum("stage", "all", ["all", "throughput", "accuracy", "decode"], "Internal.")
    flags.DEFINE_float("deadline", 0, "Internal: Unix time by which the stage should be done.")


STUDY_FLAGS = (
    "budget_s", "output_dir", "seed", "dtype_policy", "stages", "backends", "teacher",
    "student", "num_classes", "methods", "batch_sizes", "steps", "warmup_steps", "num_train",
    "throughput_share", "accuracy_backend", "archive", "accuracy_teacher", "accuracy_student",
    "recipe", "runs", "batch_size", "teacher_epochs", "student_epochs", "teacher_share",
    "probe_steps", "reserve_s", "max_train_images", "max_test_images", "cache_dir",
)


def log(message):
    """Prints one progress line with the time of day."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def write_json(path, record):
    """Writes `record` as JSON, atomically (a reader never sees half a file)."""
    path = pathlib.Path(path)
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(json.dumps(record, indent=2, default=str) + "\n")
    os.replace(temporary, path)


def read_json(path):
    """The JSON record at `path`, or None when there is none."""
    path = pathlib.Path(path)
    return json.loads(path.read_text()) if path.exists() else None


def split_list(spec):
    """`"a, b,c"` -> `["a", "b", "c"]`."""
    return [s.strip() for s in spec.split(",") if s.strip()]


# ---------------------------------------------------------------- recipes and plans


def read_flagfile(path):
    """The `--name=value` lines of an absl flagfile as a dict of strings."""
    values = {}
    for line in pathlib.Path(path).read_text().splitlines():
        line = line.strip()
        if line.startswith("--") and "=" in line:
            name, value = line[2:].split("=", 1)
            values[name] = value
    return values


def run_recipe(recipe, entry, flags_dir=FLAGS_DIR):
    """The recipe of one student run, from the flagfiles `<recipe>_*.cfg`.

    A run whose methods are those of a distillation flagfile takes its CE
    weight and method arguments; otherwise (MSDCRD alone) each method takes
    the arguments of a flagfile that configures it and the CE weight is the
    library's default, 1. Every run takes the optimizer settings of the
    recipe's KD flagfile (the reference ones: LR, momentum, weight decay,
    batch size, epochs).

    Args:
        recipe: Flagfile prefix, `resnet56_resnet20`.
        entry: `"student"` (alone) or methods joined by `+`.
        flags_dir: Folder of the flagfiles.

    Returns:
        Dict with `methods` (`[(name, kwargs)]`), `ce_weight`, `lr`,
        `momentum`, `weight_decay`, `batch_size`, `epochs` (of the reference
        run) and `source` (the flagfiles read).

    Raises:
        ValueError: When the recipe has no KD flagfile or no flagfile configures a method.
    """
    base_file = flags_dir / f"{recipe}_kd.cfg"
    if not base_file.exists():
        raise ValueError(f"--recipe={recipe!r}: no flagfile {base_file}.")
    base = read_flagfile(base_file)
    recipe_out = {
        "lr": float(base["lr"]),
        "momentum": float(base["momentum"]),
        "weight_decay": float(base["weight_decay"]),
        "batch_size": int(base["batch_size"]),
        "epochs": int(base["epochs"]),
    }
    if entry == "student":
        return {**recipe_out, "methods": [], "ce_weight": 1.0, "source": [base_file.name]}
    names = entry.split("+")
    files = {}
    for path in sorted(flags_dir.glob(f"{recipe}_*.cfg")):
        values = read_flagfile(path)
        if values.get("mode") == "distill":
            files[path.name] = values
    for name, values in files.items():
        if split_list(values["method"]) == names:
            kwargs = json.loads(values.get("method_kwargs") or "{}")
            return {
                **recipe_out,
                "methods": [(n, kwargs.get(n, {})) for n in names],
                "ce_weight": float(values.get("ce_weight", 1.0)),
                "source": [name],
            }
    methods, source = [], []
    for method in names:
        found = [
            (len(split_list(values["method"])), name, values)
            for name, values in files.items()
            if method in split_list(values["method"])
        ]
        if not found:
            raise ValueError(f"No flagfile {recipe}_*.cfg configures method {method!r}.")
        _, name, values = min(found)
        methods.append((method, json.loads(values.get("method_kwargs") or "{}").get(method, {})))
        source.append(name)
    return {**recipe_out, "methods": methods, "ce_weight": 1.0, "source": source}


def scale_to_epochs(kwargs, epochs, reference_epochs):
    """Method arguments with epoch counts (DKD's `warmup_epochs`) scaled to a shorter run."""
    scaled = dict(kwargs)
    if "warmup_epochs" in scaled:
        scaled["warmup_epochs"] = scaled["warmup_epochs"] * epochs / reference_epochs
    return scaled


def epochs_that_fit(seconds, epoch_s, cap):
    """The most whole epochs of `epoch_s` seconds in `seconds`, between 1 and `cap`."""
    if epoch_s <= 0:
        return cap
    return int(max(1, min(cap, math.floor(seconds / epoch_s))))


def cost_ratios(throughput, entries, batch_size):
    """Each entry's ms/step over the first entry's, as measured by part 1 on one backend.

    Args:
        throughput: The throughput record of the accuracy backend, or None.
        entries: Run entries (`"student"`, `"kd"`, `"kd+msdcrd"`, ...).
        batch_size: The batch size to compare at (the nearest one measured).

    Returns:
        `{entry: ratio}`; an entry part 1 did not measure (or the student alone,
        which has no teacher to run) takes `DEFAULT_COST_RATIOS` or 1.
    """
    ms = {}
    rows = (throughput or {}).get("results", [])
    if rows:
        batch = min({r["batch_size"] for r in rows}, key=lambda b: (abs(b - batch_size), b))
        ms = {r["method"]: r["ms_per_step"] for r in rows if r["batch_size"] == batch}
    first = entries[0]
    ratios = {}
    for entry in entries:
        if entry in ms and first in ms:
            ratios[entry] = ms[entry] / ms[first]
        else:
            ratios[entry] = DEFAULT_COST_RATIOS.get(entry, 1.0)
    return ratios


def student_epochs(remaining_s, first_epoch_s, ratios, per_run_overhead_s, cap):
    """M: the most epochs per student such that every student fits in `remaining_s`.

    Args:
        remaining_s: Seconds left for all students (the first one's
            compilation and probe already spent).
        first_epoch_s: Seconds per epoch of the first student.
        ratios: `{entry: step cost relative to the first}`, every run.
        per_run_overhead_s: Compilation and evaluation of each later run.
        cap: `--student_epochs`.
    """
    fixed = per_run_overhead_s * (len(ratios) - 1)
    return epochs_that_fit(remaining_s - fixed, first_epoch_s * sum(ratios.values()), cap)


# ---------------------------------------------------------------- data


def read_archive(path, max_train=0, max_test=0, seed=0):
    """Decodes a CIFAR-style JPEG archive (`train/<class>/*`, `test/<class>/*`) with Pillow.

    Classes are the sorted folder names (CIFAR-10's label order), files are
    in sorted order within a class, as `kerasdistill.data.load_image_folder`
    reads them.

    Args:
        path: The `.tar.gz` archive.
        max_train: Keep this many training images, drawn at random (0: all).
        max_test: Likewise for the test images.
        seed: Seed of those draws.

    Returns:
        Dict of `x_train`, `x_test` (uint8 `(N, 32, 32, 3)`), `y_train`,
        `y_test` (int32) and `class_names`.
    """
    from PIL import Image

    files = {"train": [], "test": []}
    with tarfile.open(path) as tar:
        for member in tar:
            parts = pathlib.PurePosixPath(member.name).parts
            if (
                member.isfile() and len(parts) >= 3 and parts[-3] in files
                and parts[-1].lower().endswith(JPEG_EXTENSIONS)
            ):
                files[parts[-3]].append((parts[-2], parts[-1], tar.extractfile(member).read()))
    class_names = sorted({c for c, _, _ in files["train"]})
    if not class_names or not files["test"]:
        raise ValueError(f"{path} holds no train/<class>/*.jpg and test/<class>/*.jpg images.")
    rng = np.random.default_rng(seed)
    arrays = {"class_names": class_names}
    for split, keep in (("train", max_train), ("test", max_test)):
        items = sorted(f for f in files[split] if f[0] in class_names)
        if keep and keep < len(items):
            items = [items[i] for i in sorted(rng.choice(len(items), keep, replace=False))]
        images = []
        for _, _, data in items:
            with Image.open(io.BytesIO(data)) as image:
                images.append(np.asarray(image.convert("RGB")))
        arrays[f"x_{split}"] = np.stack(images)
        arrays[f"y_{split}"] = np.array([class_names.index(c) for c, _, _ in items], "int32")
    return arrays


def channel_stats(images):
    """Per-channel mean and std over [0, 1] pixels, as `load_image_folder` measures them."""
    pixels = images.reshape(-1, images.shape[-1])
    total = pixels.sum(0, dtype=np.float64)
    squares = np.einsum("ij,ij->j", pixels, pixels, dtype=np.float64)
    mean = total / len(pixels) / 255.0
    std = np.sqrt(squares / len(pixels) / 255.0**2 - mean**2)
    return tuple(float(v) for v in mean), tuple(float(v) for v in std)


def find_archive(path):
    """`--archive`, or the first of ARCHIVE_CANDIDATES that exists."""
    if path:
        if not pathlib.Path(path).is_file():
            raise ValueError(f"--archive={path!r}: no such file.")
        return pathlib.Path(path)
    for candidate in ARCHIVE_CANDIDATES:
        if candidate.is_file():
            return candidate
    raise ValueError(
        "No CIFAR-10 archive: pass --archive, or copy cifar10-jpeg.tar.gz to "
        f"{ARCHIVE_CANDIDATES[0]} or {ARCHIVE_CANDIDATES[1]}."
    )


def cache_path(cfg):
    """The decoded-array file of the archive and subset `cfg` names."""
    archive = find_archive(cfg["archive"])
    stat = archive.stat()
    key = f"{archive.resolve()}|{stat.st_size}|{stat.st_mtime}|{cfg['max_train_images']}|"
    key += f"{cfg['max_test_images']}|{cfg['seed']}"
    digest = hashlib.sha1(key.encode()).hexdigest()[:12]
    return pathlib.Path(cfg["cache_dir"]) / f"{archive.name.split('.')[0]}_{digest}.npz"


def load_data(cfg):
    """The decoded archive, from the cache `decode_stage` writes, decoding it if absent."""
    path = cache_path(cfg)
    if path.exists():
        with np.load(path) as arrays:
            data = {k: arrays[k] for k in arrays.files}
        data["class_names"] = [str(c) for c in data["class_names"]]
        return data, True
    return decode_stage(cfg), False


def decode_stage(cfg):
    """Decodes the archive and writes the arrays to the cache; returns them."""
    start = time.perf_counter()
    archive = find_archive(cfg["archive"])
    data = read_archive(
        archive, cfg["max_train_images"], cfg["max_test_images"], cfg["seed"]
    )
    path = cache_path(cfg)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp.npz")
    np.savez(temporary, **{**data, "class_names": np.array(data["class_names"])})
    os.replace(temporary, path)
    log(
        f"decoded {archive.name}: {len(data['y_train'])} training and {len(data['y_test'])} "
        f"test images in {time.perf_counter() - start:.1f} s"
    )
    return data


# ---------------------------------------------------------------- the report


def _cell(value, spec, missing="n/a"):
    return missing if value is None else format(value, spec)


def throughput_lines(record):
    """Markdown of one backend's throughput record."""
    config, machine = record["config"], record["machine"]
    lines = [
        f"### {machine['backend']}: {machine['device']}",
        "",
        f"{config['teacher']} -> {config['student']}, {config['num_classes']} classes, synthetic "
        f"uint8 data ({config['num_train']} images) on the device; {config['steps']} timed steps "
        f"after {config['warmup_steps']} warm-up step(s); dtype policy {config['dtype_policy']}; "
        f"Keras {machine['keras']}, {machine['backend']} "
        f"{machine.get('jax') or machine.get('torch')}, {machine['cpus']} CPUs; TensorFlow "
        f"imported: {machine['tensorflow_imported']}.",
        "",
        f"| method | batch | images/s | ms/step | {REFERENCE_EPOCHS} epochs x {EPOCH_IMAGES:,} "
        "images (min) | of the 13,333 images/s goal | first step, compile (s) | "
        "peak device memory (GiB) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in record["results"]:
        lines.append(
            f"| {row['method']} | {row['batch_size']} | {row['images_per_s']:,.0f} | "
            f"{row['ms_per_step']:.2f} | {row['run_minutes']:,.1f} | "
            f"{row['images_per_s'] / TARGET_IMAGES_PER_S:.0%} | {row['first_step_s']:.1f} | "
            f"{_cell(row['peak_memory_gib'], '.2f')} |"
        )
    if record.get("skipped"):
        lines += ["", "Skipped (out of time): " + ", ".join(record["skipped"]) + "."]
    return lines


def table_runs(record):
    """The accuracy runs as `experiments/report.py`'s `read_run` returns them."""
    return [
        {
            "name": run["name"],
            "config": {
                "mode": run["mode"], "teacher": run["teacher"], "student": run["student"],
                "method": run["method"], "teacher_weights": "",
            },
            "metrics": {"test_accuracy": run["test_accuracy"]},
            "history": {},
        }
        for run in record["runs"]
    ]


def accuracy_lines(record):
    """Markdown of the accuracy record: the plan, report.py's table and the run details."""
    config, machine, plan = record["config"], record["machine"], record["plan"]
    data = record.get("data", {})
    lines = [
        f"### Accuracy: {machine['backend']}: {machine['device']}",
        "",
        f"CIFAR-10 of {data.get('archive', '?')}: {data.get('num_train', '?')} training / "
        f"{data.get('num_test', '?')} test images; batch {config['batch_size']}, "
        f"{plan.get('steps_per_epoch', '?')} steps per epoch; recipe "
        f"experiments/flags/{config['recipe']}_*.cfg, step decay scaled to the epochs run. "
        f"Teacher {config['accuracy_teacher']}: {plan.get('teacher_epochs', '?')} epoch(s) "
        f"(cap {config['teacher_epochs']}); students {config['accuracy_student']}: "
        f"{plan.get('student_epochs', '?')} epoch(s) each (cap {config['student_epochs']}). "
        f"Published column n/a: the reference numbers are CIFAR-100's.",
        "",
    ]
    order = {name: i for i, name in enumerate(TABLE_ORDER)}
    runs = sorted(
        record["runs"],
        key=lambda r: (r["mode"] != "teacher", order.get(r["entry"], len(order))),
    )
    lines += report.markdown_table(table_runs({"runs": runs}), {}).splitlines()
    lines += [
        "",
        "| run | epochs | steps | train (s) | images/s | first step, compile (s) | "
        "final epoch loss | note |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for run in runs:
        note = f"cut short at epoch {run['epochs_done']} of {run['epochs']}" if run[
            "cut_short"] else ""
        losses = run["epoch_losses"]
        lines.append(
            f"| {run['name']} | {run['epochs']} | {run['steps']} | {run['train_s']:.1f} | "
            f"{run['images_per_s']:,.0f} | {run['first_step_s']:.1f} | "
            f"{_cell(losses[-1] if losses else None, '.3f')} | {note} |"
        )
    if record.get("skipped"):
        lines += ["", "Skipped (out of time): " + ", ".join(record["skipped"]) + "."]
    return lines


def format_study(output_dir):
    """The study's markdown, from whatever JSON records `output_dir` holds so far."""
    output_dir = pathlib.Path(output_dir)
    lines = ["# GPU study", ""]
    study = read_json(output_dir / "gpu_study.json")
    if study:
        lines += [
            f"Budget {study['config']['budget_s']:.0f} s; stages: " + ", ".join(
                f"{s['name']} {s['status']} in {s['seconds']:.0f} s" for s in study["stages"]
            ) + ".",
            "",
        ]
    lines += ["## Throughput", ""]
    found = False
    for path in sorted(output_dir.glob("throughput_*.json")):
        lines += throughput_lines(read_json(path)) + [""]
        found = True
    if not found:
        lines += ["Not measured.", ""]
    lines += ["## Accuracy", ""]
    accuracy = read_json(output_dir / "accuracy.json")
    lines += accuracy_lines(accuracy) if accuracy and accuracy["runs"] else ["Not measured."]
    return "\n".join(lines) + "\n"


def write_study(output_dir):
    """Rewrites `gpu_study.md` from the records so far."""
    path = pathlib.Path(output_dir) / "gpu_study.md"
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(format_study(output_dir))
    os.replace(temporary, path)


# ---------------------------------------------------------------- stages (Keras imported)


def _set_up_keras(cfg):
    """Imports Keras for a stage: dtype policy and seeds set, the output folder made."""
    pathlib.Path(cfg["output_dir"]).mkdir(parents=True, exist_ok=True)
    import keras

    keras.config.set_dtype_policy(cfg["dtype_policy"])
    keras.utils.set_random_seed(cfg["seed"])
    return keras


def throughput_stage(cfg, deadline):
    """Part 1 on this process's backend; writes `throughput_<backend>.json` after every entry."""
    keras = _set_up_keras(cfg)
    import device_training as dt
    from kerasdistill import models
    from kerasdistill.training import step_decay

    backend = keras.backend.backend()
    entries = dt.parse_method_entries(cfg["methods"])
    rng = np.random.default_rng(cfg["seed"])
    train_images = rng.integers(0, 256, (cfg["num_train"], *dt.IMAGE_SHAPE), dtype="uint8")
    train_labels = rng.integers(0, cfg["num_classes"], cfg["num_train"]).astype("int32")
    images, labels = dt.to_device(train_images), dt.to_device(train_labels)
    path = pathlib.Path(cfg["output_dir"]) / f"throughput_{backend}.json"
    record = {"config": cfg, "machine": dt.machine_info(), "results": [], "skipped": []}
    longest = 0.0
    for batch_size in sorted(dt.parse_list(cfg["batch_sizes"], "batch_sizes", int)):
        for entry, names in entries:
            if record["results"] and time.time() + longest > deadline:
                record["skipped"].append(f"{entry} at batch {batch_size}")
                log(f"{backend} throughput: skipping {entry} at batch {batch_size} (budget)")
                continue
            start = time.perf_counter()
            keras.config.set_dtype_policy(cfg["dtype_policy"])
            steps_per_epoch = cfg["num_train"] // batch_size
            distiller = dt.build_distiller(
                models.get(cfg["teacher"], num_classes=cfg["num_classes"]),
                models.get(cfg["student"], num_classes=cfg["num_classes"]),
                [(name, {}) for name in names],
                train_labels,
                steps_per_epoch,
                step_decay(0.05, REFERENCE_EPOCHS, steps_per_epoch),
            )
            trainer = dt.DeviceTrainer(
                distiller, images, labels, mean=dt.CIFAR100_MEAN, std=dt.CIFAR100_STD,
                seed=cfg["seed"],
            )
            dt.peak_memory_gib(reset=True)
            indices = dt.BatchIndices(cfg["num_train"], batch_size, cfg["seed"])
            timing = dt.time_steps(trainer, indices, cfg["steps"], cfg["warmup_steps"])
            images_per_s = cfg["steps"] * batch_size / timing["seconds"]
            record["results"].append({
                "backend": backend,
                "method": entry,
                "batch_size": batch_size,
                "images_per_s": images_per_s,
                "ms_per_step": 1000 * timing["seconds"] / cfg["steps"],
                "run_minutes": REFERENCE_EPOCHS * EPOCH_IMAGES / images_per_s / 60,
                "first_step_s": timing["first_step_s"],
                "peak_memory_gib": dt.peak_memory_gib(),
                "student_compute_dtype": distiller.student.compute_dtype,
                "mean_loss": timing["mean_loss"],
                "entry_s": time.perf_counter() - start,
            })
            longest = max(longest, time.perf_counter() - start)
            log(
                f"{backend} throughput: {entry} at batch {batch_size}: {images_per_s:,.0f} "
                f"images/s, first step {timing['first_step_s']:.1f} s"
            )
            del trainer, distiller
            keras.backend.clear_session()
            write_json(path, record)
            write_study(cfg["output_dir"])
    write_json(path, record)
    write_study(cfg["output_dir"])


class _AccuracyRun:
    """Trains one model of the accuracy part, sizing its epochs after its first steps."""

    def __init__(self, cfg, data, device_data, evaluator):
        self.cfg, self.data, self.evaluator = cfg, data, evaluator
        self.images, self.labels = device_data
        self.steps_per_epoch = len(data["y_train"]) // cfg["batch_size"]

    def train(self, model, lr, choose_epochs, deadline, architecture):
        """Compiles, probes, asks `choose_epochs(first_step_s, epoch_s)`, trains, evaluates.

        Returns:
            A dict of the run's measurements (epochs, steps, times, losses, accuracy).
        """
        import device_training as dt
        from keras import ops

        from kerasdistill.training import step_decay

        cfg, spe = self.cfg, self.steps_per_epoch
        trainer = dt.DeviceTrainer(
            model, self.images, self.labels, mean=self.data["mean"], std=self.data["std"],
            seed=cfg["seed"], host_learning_rate=True,
        )
        indices = dt.BatchIndices(len(self.data["y_train"]), cfg["batch_size"], cfg["seed"])
        # The probe steps run at the base LR, which every plan keeps past them:
        # the first milestone falls at 150/240 of the run, at least half an epoch.
        probe = max(1, min(cfg["probe_steps"], spe // 2 - 1))
        timing = dt.time_steps(trainer, indices, probe, 1, learning_rate=lr)
        epoch_s = timing["seconds"] / probe * spe
        epochs = choose_epochs(timing["first_step_s"], epoch_s)
        schedule = step_decay(lr, epochs, spe)
        total, step = epochs * spe, 1 + probe
        start = time.perf_counter()
        losses, cut_short = [], False
        while step < total:
            trainer.step(indices.next(), dt.step_decay_rate(schedule, step))
            step += 1
            if step % spe == 0 or step == total:
                losses.append(trainer.wait())
                trainer.reset_metrics()
                log(
                    f"  epoch {len(losses)}/{epochs}: loss {losses[-1]:.4f}, "
                    f"{time.perf_counter() - start:.1f} s"
                )
                if step < total and time.time() > deadline:
                    cut_short = True
                    break
        if step >= total and len(losses) < epochs:  # A run shorter than its probe.
            losses.append(trainer.wait())
        train_s = time.perf_counter() - start + timing["seconds"]
        trainer.finish()
        # The last step's learning rate, as the optimizer's variable holds it.
        final_lr = float(ops.convert_to_numpy(model.optimizer.learning_rate.value))
        eval_start = time.perf_counter()
        evaluated = model.student if hasattr(model, "student") else model
        accuracy = self.evaluator.accuracy(evaluated, architecture)
        steps_after_compile = step - 1
        return {
            "epochs": epochs,
            "epochs_done": step / spe,
            "steps": step,
            "cut_short": cut_short,
            "first_step_s": timing["first_step_s"],
            "train_s": train_s,
            "images_per_s": steps_after_compile * cfg["batch_size"] / max(train_s, 1e-9),
            "probe_epoch_s": epoch_s,
            "final_learning_rate": final_lr,
            "epoch_losses": losses,
            "eval_s": time.perf_counter() - eval_start,
            "test_accuracy": accuracy,
        }


def accuracy_stage(cfg, deadline):
    """Part 2: teacher, then the student runs; writes `accuracy.json` after every run."""
    keras = _set_up_keras(cfg)
    import device_training as dt
    from kerasdistill import models
    from kerasdistill.training import SparseCrossEntropy, TorchSGD

    stage_start = time.time()
    out = pathlib.Path(cfg["output_dir"])
    entries = split_list(cfg["runs"])
    recipes = {entry: run_recipe(cfg["recipe"], entry) for entry in entries}
    data, cached = load_data(cfg)
    data["mean"], data["std"] = channel_stats(data["x_train"])
    log(
        f"accuracy: {len(data['y_train'])} training / {len(data['y_test'])} test images "
        f"({'decoded in the background' if cached else 'decoded here'}), mean {data['mean']}"
    )
    device_data = (dt.to_device(data["x_train"]), dt.to_device(data["y_train"]))
    evaluator = dt.Evaluator(data["x_test"], data["y_test"], mean=data["mean"], std=data["std"])
    runner = _AccuracyRun(cfg, data, device_data, evaluator)
    spe = runner.steps_per_epoch
    num_classes = len(data["class_names"])
    path = out / "accuracy.json"
    record = {
        "config": cfg,
        "machine": dt.machine_info(),
        "data": {
            "archive": find_archive(cfg["archive"]).name,
            "num_train": len(data["y_train"]),
            "num_test": len(data["y_test"]),
            "mean": data["mean"],
            "std": data["std"],
        },
        "plan": {"steps_per_epoch": spe, "deadline_in_s": deadline - stage_start},
        "runs": [],
        "skipped": [],
    }
    teacher_name, student_name = cfg["accuracy_teacher"], cfg["accuracy_student"]

    def save(run):
        record["runs"].append(run)
        log(
            f"accuracy: {run['name']}: test top-1 {100 * run['test_accuracy']:.2f} % after "
            f"{run['epochs_done']:.2f} epochs ({run['train_s']:.0f} s training)"
        )
        write_json(path, record)
        write_study(cfg["output_dir"])

    # The teacher: a share of the time left once it has compiled.
    def teacher_epochs(first_step_s, epoch_s):
        left = deadline - time.time() - cfg["reserve_s"]
        epochs = epochs_that_fit(cfg["teacher_share"] * left, epoch_s, cfg["teacher_epochs"])
        record["plan"].update(teacher_epochs=epochs, teacher_epoch_s=epoch_s)
        log(f"accuracy: teacher compiled in {first_step_s:.1f} s; {epoch_s:.2f} s per epoch; "
            f"{epochs} epochs")
        return epochs

    base = recipes[entries[0]]
    keras.utils.set_random_seed(cfg["seed"])
    teacher = models.get(teacher_name, num_classes=num_classes)
    teacher.compile(
        optimizer=TorchSGD(base["lr"], momentum=base["momentum"],
                           weight_decay=base["weight_decay"]),
        loss=SparseCrossEntropy(),
    )
    log(f"accuracy: training the teacher {teacher_name}")
    result = runner.train(teacher, base["lr"], teacher_epochs, deadline, teacher_name)
    save({
        "name": f"{teacher_name}_teacher", "entry": "teacher", "mode": "teacher",
        "teacher": teacher_name, "student": "", "method": "", "ce_weight": 1.0,
        "method_kwargs": {}, **result,
    })

    throughput = read_json(out / f"throughput_{keras.backend.backend()}.json")
    ratios = cost_ratios(throughput, entries, cfg["batch_size"])
    record["plan"]["cost_ratios"] = ratios
    plan = {}

    def first_student_epochs(first_step_s, epoch_s):
        left = deadline - time.time() - cfg["reserve_s"]
        overhead = first_step_s + record["runs"][0]["eval_s"]
        epochs = student_epochs(left, epoch_s, ratios, overhead, cfg["student_epochs"])
        plan.update(epochs=epochs, epoch_s=epoch_s, overhead_s=overhead)
        record["plan"].update(student_epochs=epochs, first_student_epoch_s=epoch_s)
        log(f"accuracy: first student compiled in {first_step_s:.1f} s; {epoch_s:.2f} s per "
            f"epoch; {epochs} epochs per student")
        return epochs

    for position, entry in enumerate(entries):
        recipe = recipes[entry]
        if position:
            estimate = plan["overhead_s"] + plan["epochs"] * plan["epoch_s"] * ratios[entry]
            if time.time() + estimate > deadline:
                record["skipped"].append(entry)
                log(f"accuracy: skipping {entry} (~{estimate:.0f} s left to do, budget)")
                write_json(path, record)
                continue
            choose = lambda first_step_s, epoch_s: plan["epochs"]  # noqa: E731
        else:
            choose = first_student_epochs
        keras.utils.set_random_seed(cfg["seed"])
        student = models.get(student_name, num_classes=num_classes)
        if entry == "student":
            model = student
            model.compile(
                optimizer=TorchSGD(recipe["lr"], momentum=recipe["momentum"],
                                   weight_decay=recipe["weight_decay"]),
                loss=SparseCrossEntropy(),
            )
            method_kwargs = {}
        else:
            method_specs = [
                (name, scale_to_epochs(kwargs, plan.get("epochs", 1), recipe["epochs"]))
                for name, kwargs in recipe["methods"]
            ]
            method_kwargs = dict(method_specs)
            model = dt.build_distiller(
                teacher, student, method_specs, data["y_train"], spe, recipe["lr"],
                ce_weight=recipe["ce_weight"], momentum=recipe["momentum"],
                weight_decay=recipe["weight_decay"],
            )
        log(f"accuracy: training {entry} ({student_name})")
        result = runner.train(model, recipe["lr"], choose, deadline, student_name)
        save({
            "name": f"{student_name}_{entry.replace('+', '_')}",
            "entry": entry,
            "mode": "student" if entry == "student" else "distill",
            "teacher": teacher_name,
            "student": student_name,
            "method": "" if entry == "student" else ",".join(entry.split("+")),
            "ce_weight": recipe["ce_weight"],
            "method_kwargs": method_kwargs,
            "recipe_files": recipe["source"],
            **result,
        })
    write_json(path, record)
    write_study(cfg["output_dir"])


# ---------------------------------------------------------------- the top-level process


def stage_command(cfg, stage, deadline):
    """The command line of one stage subprocess."""
    args = [sys.executable, str(SCRIPT), f"--stage={stage}", f"--deadline={deadline:.3f}",
            "--notiny"]
    return args + [f"--{name}={cfg[name]}" for name in STUDY_FLAGS]


def run_stage(cfg, study, name, stage, backend, deadline, grace_s=30):
    """Runs one stage subprocess until it ends or `deadline + grace_s`; records its status."""
    env = {**os.environ, "KERAS_BACKEND": backend, "PYTHONUNBUFFERED": "1"}
    start = time.time()
    log(f"stage {name}: {backend}, {deadline - start:.0f} s")
    try:
        proc = subprocess.run(
            stage_command(cfg, stage, deadline), env=env,
            timeout=max(1.0, deadline - start + grace_s),
        )
        status = "ok" if proc.returncode == 0 else f"failed (exit {proc.returncode})"
    except subprocess.TimeoutExpired:
        status = "killed at its time limit"
    study["stages"].append({"name": name, "status": status, "seconds": time.time() - start})
    write_json(pathlib.Path(cfg["output_dir"]) / "gpu_study.json", study)
    write_study(cfg["output_dir"])
    log(f"stage {name}: {status}")


def orchestrate(cfg):
    """Runs the stages one after the other, each in its own subprocess, within the budget."""
    start = time.time()
    end = start + cfg["budget_s"]
    out = pathlib.Path(cfg["output_dir"])
    out.mkdir(parents=True, exist_ok=True)
    for stale in ["gpu_study.json", "accuracy.json", *out.glob("throughput_*.json")]:
        (out / stale).unlink(missing_ok=True)
    study = {"config": cfg, "stages": []}
    write_json(out / "gpu_study.json", study)
    stages = split_list(cfg["stages"])
    decoder = None
    if "accuracy" in stages:
        find_archive(cfg["archive"])  # Fails now rather than after the throughput part.
        cached = cache_path(cfg)
        if not cached.exists():
            decoder = subprocess.Popen(
                stage_command(cfg, "decode", end), env={**os.environ, "PYTHONUNBUFFERED": "1"}
            )
    if "throughput" in stages:
        backends = split_list(cfg["backends"])
        weights = {"jax": 0.7, "torch": 0.3}
        total = sum(weights.get(b, 1.0) for b in backends)
        for backend in backends:
            share = cfg["throughput_share"] * weights.get(backend, 1.0) / total
            deadline = min(end, time.time() + share * cfg["budget_s"])
            run_stage(cfg, study, f"throughput_{backend}", "throughput", backend, deadline)
    if decoder is not None:
        decoder.wait()
    if "accuracy" in stages:
        run_stage(cfg, study, "accuracy", "accuracy", cfg["accuracy_backend"], end)
    study["seconds"] = time.time() - start
    write_json(out / "gpu_study.json", study)
    write_study(out)
    print("\n" + (out / "gpu_study.md").read_text(), flush=True)
    log(f"study done in {study['seconds']:.0f} s; tables and records in {out}")


def resolve_config():
    """The study's configuration from the flags, `--tiny` filling the flags not given."""
    if FLAGS.tiny:
        for name, value in TINY.items():
            if not FLAGS[name].present:
                FLAGS[name].value = value
    for name in ("steps", "warmup_steps", "num_train", "num_classes", "batch_size",
                 "teacher_epochs", "student_epochs", "probe_steps"):
        if FLAGS[name].value < 1:
            raise ValueError(f"--{name} must be >= 1, got {FLAGS[name].value}.")
    if FLAGS.budget_s <= 0:
        raise ValueError(f"--budget_s must be > 0, got {FLAGS.budget_s}.")
    for name in ("throughput_share", "teacher_share"):
        if not 0 < FLAGS[name].value < 1:
            raise ValueError(f"--{name} must be in (0, 1), got {FLAGS[name].value}.")
    unknown = set(split_list(FLAGS.stages)) - {"throughput", "accuracy"}
    if unknown or not split_list(FLAGS.stages):
        raise ValueError(f"--stages takes throughput and/or accuracy, got {FLAGS.stages!r}.")
    for backend in split_list(FLAGS.backends) + [FLAGS.accuracy_backend]:
        if backend not in ("jax", "torch"):
            raise ValueError(f"Backends are jax and torch, got {backend!r}.")
    runs = split_list(FLAGS.runs)
    if not runs or len(set(runs)) != len(runs):
        raise ValueError(f"--runs must list distinct runs, got {FLAGS.runs!r}.")
    for entry in runs:
        recipe = run_recipe(FLAGS.recipe, entry)  # A ValueError naming an unknown method.
        if entry == runs[0] and any("warmup_epochs" in k for _, k in recipe["methods"]):
            raise ValueError(
                f"The first of --runs ({entry}) sizes the student epochs, so its warm-up "
                "epochs cannot be scaled to them; put a run without warmup_epochs first."
            )
    return {name: FLAGS[name].value for name in STUDY_FLAGS}


class _RefuseTensorFlow(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Makes TensorFlow unimportable, as on the device, which has none.

    Keras's `set_random_seed` then finds no TensorFlow here either, and a
    CPU run imports exactly what a device run imports. `find_spec` probes
    (PyTorch's `torch._dynamo`) get a spec without origin, which they skip.
    """

    NAMES = ("tensorflow", "tensorflow_datasets", "tf_keras")

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in self.NAMES:
            return importlib.machinery.ModuleSpec(name, self)
        return None

    def create_module(self, spec):
        raise ImportError(f"{spec.name} is not imported by gpu_study.py (the device has none).")

    def exec_module(self, module):
        pass


def main(argv):
    del argv
    sys.meta_path.insert(0, _RefuseTensorFlow())
    cfg = resolve_config()
    if FLAGS.stage == "all":
        orchestrate(cfg)
    elif FLAGS.stage == "decode":
        decode_stage(cfg)
    elif FLAGS.stage == "throughput":
        throughput_stage(cfg, FLAGS.deadline or time.time() + cfg["budget_s"])
    else:
        accuracy_stage(cfg, FLAGS.deadline or time.time() + cfg["budget_s"])


if __name__ == "__main__":
    define_flags()
    app.run(main)
