"""Training throughput of one distillation step per method, side by side in one process.

    python benchmarks/method_step_time.py                        # resnet20 -> resnet8, all methods
    python benchmarks/method_step_time.py --teacher=resnet32x4 --student=resnet8x4 \\
        --num_classes=100 --methods=none,kd,msdcrd --output=docs/step_time.md

Each entry of `--methods` is one `Distiller`: `none` is the student alone with
cross-entropy (a Distiller without methods), `kd` one method, `kd+msdcrd`
several combined. Methods are built by `kerasdistill.methods.get` with the
`TrainingData` they need, as in a real run, with their default hyper-parameters
(or `--method_kwargs`).

The data are synthetic and in memory (random normalized images, labels and
dataset indices, with `train_labels` for `--num_train` samples for CRD), so the
numbers measure the training step, not the input pipeline. The teacher has
random weights: its compute is that of a trained one.

Every Distiller is traced first by a warm-up `fit`; then `--repeats` rounds run
one `fit` per entry, the entries interleaved round-robin so that background load
hits all of them alike. Inside each `fit` a callback times every step on its own
(from `on_train_batch_begin` until the step's loss is on the host); the first
step of each `fit` is run but not timed, and neither is the rest of the `fit`:
creating and tearing down its dataset iterator costs from under a second to
over a minute under a `MirroredStrategy` on a loaded CPU, which timing whole
`fit`s of a few steps used to fold into the step time. The table reports the median step
over all rounds, and the per-`fit` overhead apart. The ratios to `none` are the
result; absolute images/s depend on the machine.
"""

import json
import os
import pathlib
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from absl import app, flags  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import kerasdistill  # noqa: E402
from kerasdistill import methods, models  # noqa: E402
from kerasdistill.batch_keys import IMAGE_KEY, INDEX_KEY  # noqa: E402
from kerasdistill.training import TorchSGD  # noqa: E402

sys.path.insert(0, str(REPO / "benchmarks"))

from step_timing import (  # noqa: E402
    STUDENT_ALONE,
    UNTIMED_STEPS_PER_FIT,
    fit_seconds,
    format_table,
    machine_line,
    publish,
    time_round_robin,
)

# Distinct batches held in memory and cycled (fewer when --num_train is smaller).
POOL_BATCHES = 8

flags.DEFINE_string("teacher", "resnet20", "Teacher model name (zoo registry).")
flags.DEFINE_string("student", "resnet8", "Student model name (zoo registry).")
flags.DEFINE_string(
    "methods", "none,kd,fitnet,at,crd,dkd,msdcrd,kd+msdcrd",
    "Comma-separated entries; 'none' = student alone, '+' combines methods (kd+msdcrd).",
)
flags.DEFINE_string(
    "method_kwargs", "{}",
    'JSON dict of constructor arguments per method, e.g. {"crd": {"num_negatives": 4096}}.',
)
flags.DEFINE_integer("batch_size", 64, "Batch size.")
flags.DEFINE_integer("image_size", 32, "Image height and width (224 for the ImageNet zoo).")
flags.DEFINE_integer("steps", 50, "Timed steps per entry and repeat.")
flags.DEFINE_integer("warmup", 5, "Untimed steps per entry before timing (includes tracing).")
flags.DEFINE_integer("repeats", 3, "Timed rounds over all entries; the median is reported.")
flags.DEFINE_integer("num_classes", 10, "Number of classes.")
flags.DEFINE_integer("num_train", 50_000, "Training-set size seen by CRD (its memory bank).")
flags.DEFINE_enum(
    "jit_compile", "false", ["false", "true", "auto"],
    "XLA compilation of the train step, passed to compile() ('auto' is Keras's default).",
)
flags.DEFINE_integer("seed", 0, "Random seed.")
flags.DEFINE_string("output", "", "Also write the markdown table (and machine line) here.")
FLAGS = flags.FLAGS


class SyntheticData:
    """Random normalized CIFAR-sized batches held in memory.

    Args:
        num_train: Number of (virtual) training samples, at least
            `batch_size`; indices lie in `[0, num_train)` and are distinct
            within the pool (CRD's memory-bank update assumes distinct
            indices in a batch).
        num_classes: Number of classes.
        batch_size: Batch size.
        seed: Seed of the random images, labels and indices.
        image_size: Height and width of the images (224 for the ImageNet models).
    """

    def __init__(self, num_train, num_classes, batch_size, seed=0, image_size=32):
        rng = np.random.default_rng(seed)
        self._train_labels = rng.integers(0, num_classes, num_train).astype("int64")
        count = min(POOL_BATCHES, num_train // batch_size) * batch_size
        self._images = rng.standard_normal((count, image_size, image_size, 3)).astype("float32")
        self._indices = rng.choice(num_train, count, replace=False).astype("int64")
        self.batch_size = batch_size

    def train_labels(self):
        """Returns the label of every training sample, in index order."""
        return self._train_labels

    def pipeline(self, with_index):
        """An endless `tf.data.Dataset` of batches, `(x, y)` or `({"image", "index"}, y)`."""
        labels = self._train_labels[self._indices]
        x = {IMAGE_KEY: self._images, INDEX_KEY: self._indices} if with_index else self._images
        ds = tf.data.Dataset.from_tensor_slices((x, labels))
        return ds.batch(self.batch_size, drop_remainder=True).cache().repeat().prefetch(2)


def parse_entries(spec):
    """Splits `"none,kd,kd+msdcrd"` into entries, validating every method name.

    Returns:
        A list of `(entry, method_names)`, e.g. `("kd+msdcrd", ["kd", "msdcrd"])`;
        `none` has no method names.

    Raises:
        ValueError: On an empty list, a repeated entry or an unknown method.
    """
    entries = [e.strip() for e in spec.split(",") if e.strip()]
    if not entries:
        raise ValueError("--methods is empty.")
    if len(set(entries)) != len(entries):
        raise ValueError(f"--methods repeats an entry: {entries}.")
    parsed = []
    for entry in entries:
        names = [] if entry == STUDENT_ALONE else [n.strip() for n in entry.split("+")]
        for name in names:
            if name not in methods.available():
                raise ValueError(
                    f"Unknown method {name!r} in {entry!r}; available: "
                    f"{STUDENT_ALONE}, {', '.join(methods.available())}."
                )
        parsed.append((entry, names))
    return parsed


def build_methods(method_names, data, method_kwargs):
    """Builds the named methods as a training script does, from `methods.get`.

    Args:
        method_names: Registered method names.
        data: The `SyntheticData` the methods learn the training labels from.
        method_kwargs: Dict `{name: constructor kwargs}`; missing names get
            the defaults.

    Returns:
        A list of `DistillationMethod`s.

    Raises:
        ValueError: Naming the method whose `method_kwargs` it rejects.
    """
    labels = data.train_labels()
    training_data = methods.TrainingData(
        train_labels=labels, steps_per_epoch=len(labels) // data.batch_size
    )
    built = []
    for name in method_names:
        kwargs = method_kwargs.get(name, {})
        try:
            built.append(methods.get(name, data=training_data, **kwargs))
        except (TypeError, ValueError) as error:
            raise ValueError(f"--method_kwargs for {name!r} {kwargs}: {error}") from error
    return built


def build_distiller(teacher, student, method_names, data, method_kwargs, jit_compile):
    """A compiled Distiller of `student` and the frozen `teacher`.

    Args:
        teacher: The teacher model.
        student: A freshly built student model.
        method_names: Registered method names (none: the student alone).
        data: A `SyntheticData`.
        method_kwargs: Dict `{name: constructor kwargs}`.
        jit_compile: `"false"`, `"true"` or `"auto"`, passed to `compile()`.

    Returns:
        `(distiller, train_dataset)`; the dataset carries dataset indices only
        when a method needs them, as in `experiments/runner.py`.
    """
    method_list = build_methods(method_names, data, method_kwargs)
    distiller = kerasdistill.Distiller(teacher, student, method_list)
    distiller.compile(
        optimizer=TorchSGD(0.05, momentum=0.9, weight_decay=5e-4),
        metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
        jit_compile={"false": False, "true": True, "auto": "auto"}[jit_compile],
    )
    with_index = any(m.uses_sample_indices for m in method_list)
    return distiller, data.pipeline(with_index)


def check_flags():
    """Validates the flags; returns `(entries, method_kwargs)`.

    Returns:
        The `parse_entries` list of `--methods` and the dict of
        `--method_kwargs`.

    Raises:
        app.UsageError: Naming the bad flag value.
    """
    for name in ("batch_size", "steps", "repeats"):
        if getattr(FLAGS, name) <= 0:
            raise app.UsageError(f"--{name} must be positive.")
    if FLAGS.warmup < 1:
        raise app.UsageError("--warmup must be >= 1 so that tracing is not timed.")
    for name in ("teacher", "student"):
        if getattr(FLAGS, name) not in models.available():
            raise app.UsageError(
                f"Unknown --{name} {getattr(FLAGS, name)!r}; available: "
                f"{', '.join(models.available())}."
            )
    if FLAGS.num_train < FLAGS.batch_size:
        raise app.UsageError("--num_train must be at least --batch_size.")
    try:
        return parse_entries(FLAGS.methods), json.loads(FLAGS.method_kwargs or "{}")
    except ValueError as error:  # json.JSONDecodeError included
        raise app.UsageError(str(error)) from error


def config_line():
    """The models, batch and timing settings of the run, as one sentence."""
    return (
        f"{FLAGS.teacher} -> {FLAGS.student}, {FLAGS.num_classes} classes, batch "
        f"{FLAGS.batch_size}, {FLAGS.steps} timed steps x {FLAGS.repeats} repeats "
        f"(median step; {UNTIMED_STEPS_PER_FIT} untimed step first in each fit), "
        f"{FLAGS.warmup} warm-up steps"
    )


def main(argv):
    del argv
    entries, method_kwargs = check_flags()
    keras.utils.set_random_seed(FLAGS.seed)
    data = SyntheticData(
        FLAGS.num_train, FLAGS.num_classes, FLAGS.batch_size, FLAGS.seed, FLAGS.image_size
    )
    teacher = models.get(FLAGS.teacher, num_classes=FLAGS.num_classes)
    runs = {}
    for entry, names in entries:
        try:
            student = models.get(FLAGS.student, num_classes=FLAGS.num_classes)
            distiller, ds = build_distiller(
                teacher, student, names, data, method_kwargs, FLAGS.jit_compile
            )
        except ValueError as error:
            raise app.UsageError(str(error)) from error
        warmup_s = fit_seconds(distiller, ds, FLAGS.warmup)
        print(f"built and traced {entry}: warm-up {warmup_s:.1f} s", flush=True)
        runs[entry] = (distiller, ds)

    step_seconds, overhead_seconds = time_round_robin(runs, FLAGS.steps, FLAGS.repeats)

    header = f"{config_line()}, jit_compile={FLAGS.jit_compile}.\n{machine_line()}"
    table = format_table(step_seconds, overhead_seconds, FLAGS.batch_size)
    publish(f"{header}\n\n{table}\n", FLAGS.output)


if __name__ == "__main__":
    app.run(main)
