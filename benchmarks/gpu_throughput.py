"""Distillation training throughput on one accelerator, JAX backend, without TensorFlow.

    KERAS_BACKEND=jax python benchmarks/gpu_throughput.py --output_dir=/tmp/out
    KERAS_BACKEND=jax python benchmarks/gpu_throughput.py --tiny        # CPU smoke run

For each batch size of `--batch_sizes` and each entry of `--methods` (`kd`,
`kd+msdcrd`, ...), a fresh `Distiller` of a frozen teacher and a new student
trains for `--warmup_steps` untimed steps (the first one compiles), then for
`--steps` timed steps. Reported: training images/s, ms/step, the wall time of
`--epochs` epochs of `--num_train` images implied by that rate, the time of the
first step (tracing and compilation) and the device's peak memory.

What one step does, all inside one `jax.jit`-compiled function:

1. gathers the batch by index from the training set, held on the device as
   uint8 NumPy arrays copied there once (synthetic CIFAR-sized images, or the
   arrays of an `.npz` file given by `--data`);
2. augments it as the reference CIFAR recipe does, per example: zero-pad 4,
   random 32x32 crop, random horizontal flip, then normalization
   (`device_augment.py`, in `keras.ops`);
3. runs Keras's own JAX `train_step` of the `Distiller` (teacher forward,
   student forward and backward, the methods' losses, the `TorchSGD` update
   with the reference step-decay schedule).

The host only draws one shuffled index vector per epoch and passes a slice of
it each step. The step loop is `benchmarks/device_training.py`'s, shared with
`benchmarks/gpu_study.py`. The clock stops after `jax.block_until_ready` on the last
step's loss and the model state, so queued device work is counted.

Nothing here imports TensorFlow: the device this is written for has JAX and
PyTorch only.
"""

import json
import os
import pathlib
import sys

os.environ.setdefault("KERAS_BACKEND", "jax")

import jax  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from kerasdistill import models  # noqa: E402
from kerasdistill.training import step_decay  # noqa: E402

# The data on the device, the augmented step and the measurements, shared with gpu_study.py.
import device_training  # noqa: E402
from device_training import (  # noqa: E402
    CIFAR100_MEAN,
    CIFAR100_STD,
    IMAGE_SHAPE,
    BatchIndices,
    DeviceTrainer,
    machine_info,
    parse_list,
    parse_method_entries,
    peak_memory_gib,
    time_steps,
)

# What --tiny sets, for every flag not given on the command line.
TINY = {
    "teacher": "resnet8",
    "student": "resnet8",
    "batch_sizes": "8",
    "steps": 2,
    "warmup_steps": 1,
    "num_train": 64,
}

flags.DEFINE_string("teacher", "resnet32x4", "Teacher model name (zoo registry).")
flags.DEFINE_string("student", "resnet8x4", "Student model name (zoo registry).")
flags.DEFINE_string(
    "methods", "kd,kd+msdcrd", "Comma-separated entries; '+' combines methods (kd+msdcrd)."
)
flags.DEFINE_string("batch_sizes", "64,256", "Comma-separated batch sizes.")
flags.DEFINE_integer("steps", 200, "Timed steps per entry.")
flags.DEFINE_integer("warmup_steps", 5, "Untimed steps per entry first (the first compiles).")
flags.DEFINE_integer("num_classes", 100, "Number of classes.")
flags.DEFINE_integer("num_train", 50_000, "Synthetic training-set size (ignored with --data).")
flags.DEFINE_string(
    "data", "",
    "Optional .npz with uint8 'x_train' (N, 32, 32, 3) and integer 'y_train' (N,) "
    "instead of synthetic data.",
)
flags.DEFINE_integer("epochs", 240, "Epochs of the run whose wall time is extrapolated.")
flags.DEFINE_string(
    "dtype_policy", "float32", "Keras dtype policy of the models ('float32', 'mixed_bfloat16')."
)
flags.DEFINE_integer("seed", 0, "Seed of the synthetic data, the shuffles and the augmentation.")
flags.DEFINE_string("output_dir", "", "Also write gpu_throughput.md and gpu_throughput.json here.")
flags.DEFINE_bool("tiny", False, "CPU smoke preset: " + json.dumps(TINY) + " unless given.")
FLAGS = flags.FLAGS


def load_training_set(path, num_train, num_classes, seed):
    """The training images and labels, as NumPy arrays.

    Args:
        path: An `.npz` file with `x_train` and `y_train`, or `""` for
            synthetic data.
        num_train: Number of synthetic images.
        num_classes: Labels lie in `[0, num_classes)`.
        seed: Seed of the synthetic images and labels.

    Returns:
        `(images, labels)`: uint8 `(N, 32, 32, 3)` and int32 `(N,)`.

    Raises:
        ValueError: When the file's arrays have the wrong shape, dtype or labels.
    """
    if not path:
        rng = np.random.default_rng(seed)
        images = rng.integers(0, 256, (num_train, *IMAGE_SHAPE), dtype="uint8")
        return images, rng.integers(0, num_classes, num_train).astype("int32")
    with np.load(path) as arrays:
        if "x_train" not in arrays or "y_train" not in arrays:
            raise ValueError(
                f"--data={path} must hold 'x_train' and 'y_train'; got {arrays.files}."
            )
        images, labels = arrays["x_train"], arrays["y_train"].reshape(-1)
    if images.dtype != np.uint8 or images.shape[1:] != IMAGE_SHAPE:
        raise ValueError(
            f"--data x_train must be uint8 (N, 32, 32, 3); got {images.dtype} {images.shape}."
        )
    if len(labels) != len(images) or labels.min() < 0 or labels.max() >= num_classes:
        raise ValueError(
            f"--data y_train must hold one label in [0, {num_classes}) per image; got "
            f"{len(labels)} labels in [{labels.min()}, {labels.max()}] for {len(images)} images."
        )
    return images, labels.astype("int32")


def build_distiller(config, method_names, train_labels, batch_size):
    """A compiled Distiller of a fresh student and a frozen teacher, with its optimizer built.

    Methods and optimizer are built as `experiments/runner.py` builds them:
    `methods.get` with the `TrainingData`, `TorchSGD(momentum=0.9,
    weight_decay=5e-4)` with the reference step decay from 0.05. The models
    take `config["dtype_policy"]` (set here: `clear_session` resets it).
    """
    keras.config.set_dtype_policy(config["dtype_policy"])
    steps_per_epoch = len(train_labels) // batch_size
    return device_training.build_distiller(
        models.get(config["teacher"], num_classes=config["num_classes"]),
        models.get(config["student"], num_classes=config["num_classes"]),
        [(name, {}) for name in method_names],
        train_labels,
        steps_per_epoch,
        step_decay(0.05, config["epochs"], steps_per_epoch),
    )


def measure(config, entry, method_names, batch_size, images, labels, train_labels):
    """Builds, warms up and times one Distiller; returns its row of results.

    Args:
        config: The run's configuration dict.
        entry: The `--methods` entry (`kd+msdcrd`).
        method_names: Its method names.
        batch_size: Images per step.
        images: uint8 training images on the device.
        labels: int32 labels on the device.
        train_labels: The same labels as a NumPy array (the methods' `TrainingData`).

    Returns:
        A dict with the entry's measurements.
    """
    distiller = build_distiller(config, method_names, train_labels, batch_size)
    trainer = DeviceTrainer(
        distiller, images, labels, mean=CIFAR100_MEAN, std=CIFAR100_STD, seed=config["seed"]
    )
    indices = BatchIndices(len(train_labels), batch_size, config["seed"])
    try:
        timing = time_steps(trainer, indices, config["steps"], config["warmup_steps"])
    except FloatingPointError as error:
        raise FloatingPointError(f"{entry} at batch {batch_size}: {error}") from None
    images_per_s = config["steps"] * batch_size / timing["seconds"]
    return {
        "method": entry,
        "batch_size": batch_size,
        "images_per_s": images_per_s,
        "ms_per_step": 1000 * timing["seconds"] / config["steps"],
        "run_minutes": config["epochs"] * config["epoch_images"] / images_per_s / 60,
        "first_step_s": timing["first_step_s"],
        "peak_memory_gib": peak_memory_gib(),
        "student_compute_dtype": distiller.student.compute_dtype,
        # Keras's "loss" log: the mean total loss over the steps run.
        "mean_loss": timing["mean_loss"],
    }


def format_report(config, machine, rows):
    """The markdown report: a configuration line, a machine line and the table."""
    epochs, epoch_images = config["epochs"], config["epoch_images"]
    lines = [
        f"{config['teacher']} -> {config['student']}, {config['num_classes']} classes, "
        f"{config['data']}; {config['steps']} timed steps after {config['warmup_steps']} "
        f"warm-up steps; dtype policy {config['dtype_policy']}; augmentation on the device.",
        f"Machine: {machine['device']} (x{machine['device_count']}), {machine['cpus']} CPUs; "
        f"Python {machine['python']}, JAX {machine['jax']}, Keras {machine['keras']}, "
        f"backend {machine['backend']}; TensorFlow imported: {machine['tensorflow_imported']}.",
        "",
        f"| method | batch | images/s | ms/step | {epochs} epochs x {epoch_images:,} images "
        "(min) | first step, compile (s) | peak device memory (GiB) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        peak = "n/a" if row["peak_memory_gib"] is None else f"{row['peak_memory_gib']:.2f}"
        lines.append(
            f"| {row['method']} | {row['batch_size']} | {row['images_per_s']:,.0f} | "
            f"{row['ms_per_step']:.2f} | {row['run_minutes']:,.1f} | "
            f"{row['first_step_s']:.1f} | {peak} |"
        )
    return "\n".join(lines) + "\n"


def resolve_config():
    """The run's configuration from the flags, `--tiny` filling the flags not given."""
    if FLAGS.tiny:
        for name, value in TINY.items():
            if not FLAGS[name].present:
                FLAGS[name].value = value
    for name in ("steps", "warmup_steps", "num_train", "num_classes", "epochs"):
        if FLAGS[name].value < 1:
            raise ValueError(f"--{name} must be >= 1, got {FLAGS[name].value}.")
    if keras.backend.backend() != "jax":
        raise ValueError(
            f"This benchmark runs on the JAX backend; KERAS_BACKEND is {keras.backend.backend()!r}."
        )
    keras.dtype_policies.get(FLAGS.dtype_policy)  # A ValueError naming the valid policies.
    return {
        "teacher": FLAGS.teacher,
        "student": FLAGS.student,
        "num_classes": FLAGS.num_classes,
        "entries": parse_method_entries(FLAGS.methods),
        "batch_sizes": parse_list(FLAGS.batch_sizes, "batch_sizes", int),
        "steps": FLAGS.steps,
        "warmup_steps": FLAGS.warmup_steps,
        "epochs": FLAGS.epochs,
        "dtype_policy": FLAGS.dtype_policy,
        "seed": FLAGS.seed,
    }


def write_outputs(output_dir, config, rows):
    """Writes the report and the JSON record of the rows measured so far to `output_dir`."""
    machine = machine_info()
    out = pathlib.Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu_throughput.md").write_text(format_report(config, machine, rows))
    record = {"config": config, "machine": machine, "results": rows}
    (out / "gpu_throughput.json").write_text(json.dumps(record, indent=2) + "\n")


def main(argv):
    del argv
    config = resolve_config()
    entries = config.pop("entries")
    config["entries"] = [entry for entry, _ in entries]
    train_images, train_labels = load_training_set(
        FLAGS.data, FLAGS.num_train, config["num_classes"], config["seed"]
    )
    config["data"] = (
        f"{FLAGS.data} ({len(train_labels)} images)" if FLAGS.data
        else f"synthetic uint8 data ({len(train_labels)} images)"
    )
    # The reference CIFAR-100 epoch, whatever the size of the data timed here.
    config["epoch_images"] = 50_000
    images = jax.device_put(train_images)
    labels = jax.device_put(train_labels)

    rows = []
    # Ascending batch sizes: the peak memory column is the process's peak so far.
    for batch_size in sorted(config["batch_sizes"]):
        for entry, method_names in entries:
            row = measure(config, entry, method_names, batch_size, images, labels, train_labels)
            rows.append(row)
            print(
                f"{entry} batch {batch_size}: {row['images_per_s']:,.0f} images/s, "
                f"first step {row['first_step_s']:.1f} s",
                flush=True,
            )
            keras.backend.clear_session()
            # After every entry, so that a run cut short keeps what it measured.
            if FLAGS.output_dir:
                write_outputs(FLAGS.output_dir, config, rows)

    print(f"\n{format_report(config, machine_info(), rows)}")
    if FLAGS.output_dir:
        print(f"Wrote gpu_throughput.md and gpu_throughput.json to {FLAGS.output_dir}")


if __name__ == "__main__":
    app.run(main)
