"""The GPU procedure: distillation throughput, then a short accuracy run; JAX, no TensorFlow.

    KERAS_BACKEND=jax python benchmarks/gpu_throughput.py --output_dir=/tmp/gpu        # on the GPU
    KERAS_BACKEND=jax python benchmarks/gpu_throughput.py --tiny --output_dir=/tmp/gpu # CPU smoke

1. **Throughput.** For each batch size of `--batch_sizes` and each entry of
   `--methods`, a fresh `Distiller` of `--teacher` -> `--student` (random
   weights), built as `step_time.py` builds one, trains by its own `fit` on
   synthetic in-memory batches: a warm-up `fit` of `--warmup_steps` (the first
   step traces and compiles; its time is reported), then `--steps` steps, each
   timed until its logs are on the host (`harness.timed_fit`). Reported:
   images/s, ms/step, the wall time of `--epochs` epochs of 50,000 images at
   that rate, the warm-up and the device's peak memory.
2. **Accuracy** (with `--archive`, a `train/<class>/`, `test/<class>/` JPEG
   folder archive such as the shared CIFAR-10 one): a `--accuracy_teacher`
   trained by `fit` for `--teacher_epochs`, then a student
   (`--accuracy_student`) per entry of `--runs` (`none`: alone) distilled by
   `Distiller.fit` for `--student_epochs`; the recipe's `TorchSGD` (momentum
   0.9, weight decay 5e-4) and `step_decay` from 0.05, batch
   `--accuracy_batch_size`, CE weight 0.1 with KD (the papers' recipe) and 1 without, no
   augmentation (a short run checks that training
   works on the device, it does not reproduce the papers). Test top-1 is
   counted in NumPy from `predict`.

Nothing here imports TensorFlow (the GPU machine has JAX and PyTorch only):
the files are listed by `kerasdistill.data.folders`, the JPEGs decoded with
Pillow, normalized with `kerasdistill.data.stats`, and `fit` reads NumPy
arrays. The report's machine line says whether TensorFlow was imported.
"""

import concurrent.futures
import json
import os
import pathlib
import sys
import time

os.environ.setdefault("KERAS_BACKEND", "jax")

import keras
import numpy as np
from absl import app, flags

HERE = pathlib.Path(__file__).resolve().parent
REPO = HERE.parent
sys.path[:0] = [str(REPO), str(HERE)]

import harness

import kerasdistill
from kerasdistill import methods, models
from kerasdistill.data import folders, stats
from kerasdistill.training import TorchSGD, step_decay

GIB = 1024**3
EPOCH_IMAGES = 50_000  # The reference CIFAR epoch the wall-time column extrapolates to.
# Where --archive is looked for by default: inside the checkout (what a device receives),
# then the shared folder beside it.
ARCHIVES = (REPO / ".data" / "cifar10-jpeg.tar.gz", REPO.parent / "shared" / "data" /
            "cifar10-jpeg.tar.gz")
TINY = {
    "teacher": "resnet8", "student": "resnet8", "batch_sizes": "8", "steps": 2,
    "warmup_steps": 1, "accuracy_teacher": "resnet8", "accuracy_student": "resnet8",
    "accuracy_batch_size": 16, "max_train_images": 128, "max_test_images": 64,
    "teacher_epochs": 1, "student_epochs": 1,
}

flags.DEFINE_string("teacher", "resnet32x4", "Throughput teacher (zoo name).")
flags.DEFINE_string("student", "resnet8x4", "Throughput student (zoo name).")
flags.DEFINE_string("methods", "kd,kd+msdcrd", "Throughput entries; '+' combines methods.")
flags.DEFINE_string("batch_sizes", "64,256", "Throughput batch sizes.")
flags.DEFINE_integer("num_classes", 100, "Throughput classes.")
flags.DEFINE_integer("steps", 200, "Timed steps per throughput entry.")
flags.DEFINE_integer("warmup_steps", 5, "Untimed steps per throughput entry first (compile).")
flags.DEFINE_integer("epochs", 240, "Epochs of the run whose wall time is extrapolated.")
flags.DEFINE_string("dtype_policy", "float32", "Keras dtype policy ('mixed_bfloat16').")
flags.DEFINE_string("archive", "", "Image-folder archive of the accuracy part (default: "
                    "the CIFAR-10 JPEGs, if found); 'none' skips the part.")
flags.DEFINE_string("accuracy_teacher", "resnet56", "Teacher trained in the accuracy part.")
flags.DEFINE_string("accuracy_student", "resnet20", "Student of the accuracy part.")
flags.DEFINE_string("runs", "none,kd", "Students of the accuracy part, as method entries.")
flags.DEFINE_integer("teacher_epochs", 10, "Epochs of the teacher.")
flags.DEFINE_integer("student_epochs", 5, "Epochs of each student.")
flags.DEFINE_integer("accuracy_batch_size", 64, "Batch size of the accuracy part.")
flags.DEFINE_integer("max_train_images", 0, "Train on N images drawn at random (0: all).")
flags.DEFINE_integer("max_test_images", 0, "Evaluate on N images drawn at random (0: all).")
flags.DEFINE_integer("seed", 0, "Seed of the data and the models.")
flags.DEFINE_string("output_dir", "", "Also write gpu_throughput.md and .json here.")
flags.DEFINE_bool("tiny", False, "CPU smoke preset: " + json.dumps(TINY) + " unless given.")
FLAGS = flags.FLAGS


def peak_memory_gib():
    """The device's peak allocated memory so far, in GiB, or None where JAX reports none (CPU)."""
    import jax

    memory = jax.devices()[0].memory_stats() or {}
    return memory["peak_bytes_in_use"] / GIB if "peak_bytes_in_use" in memory else None


def machine_line():
    """The device, the software and whether TensorFlow was imported."""
    import jax

    device = jax.devices()[0]
    return (f"Machine: {device.platform} {device.device_kind} (x{jax.device_count()}), "
            f"{os.cpu_count()} CPUs; {harness.versions()}; Keras backend "
            f"{keras.backend.backend()}; TensorFlow imported: {'tensorflow' in sys.modules}.")


def distiller(teacher, student, names, train_labels, batch_size, epochs):
    """A Distiller compiled with the recipe's optimizer, step decay from 0.05 over `epochs`."""
    steps_per_epoch = len(train_labels) // batch_size
    model = kerasdistill.Distiller(
        teacher, student, [methods.get(name) for name in names],
        ce_weight=0.1 if "kd" in names else 1.0,
        training_data=methods.TrainingData(train_labels=train_labels,
                                           steps_per_epoch=steps_per_epoch),
    )
    model.compile(optimizer=TorchSGD(step_decay(0.05, epochs, steps_per_epoch), momentum=0.9,
                                     weight_decay=5e-4))
    return model


def throughput_row(entry, batch_size):
    """Builds, warms up and times one Distiller; returns its row."""
    _, names = harness.parse_entry(entry, methods.available())
    data = harness.SyntheticData(EPOCH_IMAGES, FLAGS.num_classes, batch_size, seed=FLAGS.seed)
    keras.config.set_dtype_policy(FLAGS.dtype_policy)
    try:
        model = distiller(models.get(FLAGS.teacher, num_classes=FLAGS.num_classes),
                          models.get(FLAGS.student, num_classes=FLAGS.num_classes),
                          names, data.train_labels, batch_size, FLAGS.epochs)
    finally:
        keras.config.set_dtype_policy("float32")
    dataset = data.dataset(any(m.uses_sample_indices for m in model.methods))
    warmup_s = harness.fit_seconds(model, dataset, FLAGS.warmup_steps)
    step_s = float(np.median(harness.timed_fit(model, dataset, FLAGS.steps)["wall"]))
    return {
        "method": entry, "batch_size": batch_size, "images_per_s": batch_size / step_s,
        "ms_per_step": 1e3 * step_s,
        "run_minutes": FLAGS.epochs * EPOCH_IMAGES * step_s / batch_size / 60,
        "warmup_s": warmup_s, "peak_memory_gib": peak_memory_gib(),
    }


def read_split(root, split, class_names, limit):
    """uint8 images `(N, H, W, 3)` and int32 labels of a split, decoded with Pillow."""
    from PIL import Image

    class_names, paths, labels = folders.list_split(root, split, class_names)
    if limit:
        keep = np.random.default_rng(FLAGS.seed).permutation(len(paths))[:limit]
        paths, labels = [paths[i] for i in keep], [labels[i] for i in keep]

    def decode(path):
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"))

    with concurrent.futures.ThreadPoolExecutor(os.cpu_count()) as pool:
        images = np.stack(list(pool.map(decode, paths)))
    return class_names, images, np.asarray(labels, "int32")


def accuracy_rows(archive):
    """Trains the teacher, then each student of `--runs`; returns their rows."""
    root = folders.folder_of(archive)
    classes, x_train, y_train = read_split(root, "train", None, FLAGS.max_train_images)
    _, x_test, y_test = read_split(root, "test", classes, FLAGS.max_test_images)
    mean, std = stats.CIFAR_STATS["cifar10"]
    x_train, x_test = ((x / np.float32(255) - np.float32(mean)) / np.float32(std)
                       for x in (x_train, x_test))
    batch = FLAGS.accuracy_batch_size
    print(f"{len(x_train)} training and {len(x_test)} test images of {len(classes)} classes",
          flush=True)

    def train_and_test(run, model, predictor, epochs):
        start = time.perf_counter()
        model.fit(x_train, y_train, batch_size=batch, epochs=epochs, shuffle=True, verbose=2)
        seconds = time.perf_counter() - start
        predicted = np.argmax(predictor.predict(x_test, batch_size=1000, verbose=0), axis=-1)
        row = {"run": run, "epochs": epochs, "top1": float(np.mean(predicted == y_test)),
               "train_s": seconds, "images_per_s": epochs * len(x_train) / seconds}
        print(f"{run}: top-1 {row['top1']:.4f} after {epochs} epochs, {seconds:.0f} s", flush=True)
        return row

    keras.utils.set_random_seed(FLAGS.seed)
    teacher = models.get(FLAGS.accuracy_teacher, num_classes=len(classes))
    steps = len(x_train) // batch
    teacher.compile(
        optimizer=TorchSGD(step_decay(0.05, FLAGS.teacher_epochs, steps), momentum=0.9,
                           weight_decay=5e-4),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    rows = [train_and_test(f"teacher {FLAGS.accuracy_teacher}", teacher, teacher,
                           FLAGS.teacher_epochs)]
    for entry in harness.parse_list(FLAGS.runs, "runs"):
        _, names = harness.parse_entry(entry, methods.available())
        student = models.get(FLAGS.accuracy_student, num_classes=len(classes))
        model = distiller(teacher, student, names, y_train.astype("int64"), batch,
                          FLAGS.student_epochs)
        rows.append(train_and_test(f"{FLAGS.accuracy_student} {entry}", model, student,
                                   FLAGS.student_epochs))
    return rows


def report(throughput, accuracy):
    """The markdown report: configuration, machine, the throughput and accuracy tables."""
    lines = [
        (f"{FLAGS.teacher} -> {FLAGS.student}, {FLAGS.num_classes} classes, synthetic data; "
         f"{FLAGS.steps} timed steps after a warm-up fit of {FLAGS.warmup_steps}; dtype policy "
         f"{FLAGS.dtype_policy}."),
        machine_line(),
        "",
        (f"| method | batch | images/s | ms/step | {FLAGS.epochs} epochs x {EPOCH_IMAGES:,} "
         "images (min) | warm-up fit, compile (s) | peak device memory (GiB) |"),
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in throughput:
        peak = "n/a" if row["peak_memory_gib"] is None else f"{row['peak_memory_gib']:.2f}"
        lines.append(f"| {row['method']} | {row['batch_size']} | {row['images_per_s']:,.0f} | "
                     f"{row['ms_per_step']:.2f} | {row['run_minutes']:,.1f} | "
                     f"{row['warmup_s']:.1f} | {peak} |")
    if accuracy:
        lines += ["", f"Accuracy: batch {FLAGS.accuracy_batch_size}, no augmentation.", "",
                  "| run | epochs | test top-1 | training (s) | images/s |",
                  "|---|---:|---:|---:|---:|"]
        lines += [f"| {r['run']} | {r['epochs']} | {r['top1']:.4f} | {r['train_s']:.0f} | "
                  f"{r['images_per_s']:,.0f} |" for r in accuracy]
    return "\n".join(lines) + "\n"


def write(throughput, accuracy):
    """Writes the report and the JSON record (after every row: a run cut short keeps them)."""
    if not FLAGS.output_dir:
        return
    out = pathlib.Path(FLAGS.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu_throughput.md").write_text(report(throughput, accuracy))
    record = {"flags": {name: FLAGS[name].value for name in [*TINY, "methods", "runs", "epochs",
                                                             "dtype_policy", "archive"]},
              "throughput": throughput, "accuracy": accuracy}
    (out / "gpu_throughput.json").write_text(json.dumps(record, indent=2) + "\n")


def archive_path():
    """The accuracy part's archive, or None to skip the part."""
    if FLAGS.archive == "none":
        return None
    if FLAGS.archive:
        return FLAGS.archive
    return next((str(path) for path in ARCHIVES if path.exists()), None)


def main(argv):
    del argv
    if FLAGS.tiny:
        for name, value in TINY.items():
            if not FLAGS[name].present:
                FLAGS[name].value = value
    if keras.backend.backend() != "jax":
        raise app.UsageError(f"Runs on the JAX backend; KERAS_BACKEND is {keras.backend.backend()!r}.")
    try:
        entries = harness.parse_list(FLAGS.methods, "methods")
        for entry in entries:
            harness.parse_entry(entry, methods.available())
        batch_sizes = sorted(harness.parse_list(FLAGS.batch_sizes, "batch_sizes", int))
        keras.dtype_policies.get(FLAGS.dtype_policy)
    except ValueError as error:
        raise app.UsageError(str(error)) from error
    throughput, accuracy = [], []
    # Ascending batch sizes: JAX's peak memory is the process's peak so far.
    for batch_size in batch_sizes:
        for entry in entries:
            throughput.append(throughput_row(entry, batch_size))
            print(f"{entry} batch {batch_size}: {throughput[-1]['images_per_s']:,.0f} images/s",
                  flush=True)
            keras.backend.clear_session()
            write(throughput, accuracy)
    archive = archive_path()
    if archive:
        accuracy = accuracy_rows(archive)
        write(throughput, accuracy)
    print(f"\n{report(throughput, accuracy)}")


if __name__ == "__main__":
    app.run(main)
