"""Distillation step time across replicas, mixed precision, XLA and a folded teacher.

    python benchmarks/training_step_time.py         # resnet32x4 -> resnet8x4, kd and kd+msdcrd
    python benchmarks/training_step_time.py --steps=3 --warmup=1 --repeats=2 \\
        --variants=baseline,replicas=2,precision=bfloat16+teacher=folded_bfloat16

Every `--methods` entry runs under every `--variants` entry, each a separate
`Distiller` in one process, timed as in `method_step_time.py` (whose flags and
helpers this script shares): synthetic in-memory batches, a warm-up `fit` that
traces, then interleaved rounds of one `fit` per entry in which a callback times
each step, the median step reported (and the per-`fit` overhead apart). The
ratio column divides by the `baseline` variant of the same method: float32,
`--jit_compile`, one replica and the teacher as built.

A variant changes the baseline in `key=value` settings joined by `+`:

- `replicas=N`: a `MirroredStrategy` over N devices (GPUs; without GPUs, the
  CPU is split into logical devices at start, `distribute.split_cpu`), with
  the batch as the global batch. The baseline is a `MirroredStrategy` over
  one device, so that only the number of replicas differs.
- `precision=bfloat16` (or `float16`): the global dtype policy is set before
  that entry's teacher and student are built and reset afterwards.
- `jit_compile=true|false|auto`: XLA compilation of the train step.
- `teacher=folded`: the teacher with BatchNorm folded into its convolutions
  (`models.fold_batchnorm`); `teacher=folded_bfloat16`: the same, computing
  in bfloat16.
"""

import dataclasses
import os
import pathlib
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402
from absl import app, flags  # noqa: E402

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

import method_step_time as timing  # noqa: E402
import step_timing  # noqa: E402
from kerasdistill import models  # noqa: E402
from kerasdistill.training import distribute  # noqa: E402

BASELINE = "baseline"
# Folded teachers and the dtype policy of their layers (None: as built).
FOLDED_TEACHER_DTYPES = {"folded": None, "folded_bfloat16": "mixed_bfloat16"}
TEACHERS = ("plain", *FOLDED_TEACHER_DTYPES)
JIT_VALUES = ("false", "true", "auto")
# CPU flags with native bfloat16 arithmetic (x86).
BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")

flags.DEFINE_string(
    "variants",
    "baseline,replicas=2,precision=bfloat16,jit_compile=true,teacher=folded,"
    "teacher=folded_bfloat16",
    "Comma-separated settings to time every method under: 'baseline', or key=value "
    "changes of it joined by '+' (keys: replicas, precision, jit_compile, teacher).",
)
FLAGS = flags.FLAGS
FLAGS.set_default("teacher", "resnet32x4")
FLAGS.set_default("student", "resnet8x4")
FLAGS.set_default("num_classes", 100)
FLAGS.set_default("methods", "kd,kd+msdcrd")


@dataclasses.dataclass(frozen=True)
class Variant:
    """How one entry trains.

    Attributes:
        replicas: Devices of the `MirroredStrategy`.
        precision: A `distribute.set_mixed_precision` name (`"none"`,
            `"float16"`, `"bfloat16"`).
        jit_compile: `"false"`, `"true"` or `"auto"`, passed to `compile()`.
        teacher: `"plain"`, `"folded"` or `"folded_bfloat16"`.
    """

    replicas: int = 1
    precision: str = "none"
    jit_compile: str = "false"
    teacher: str = "plain"


def _setting(key, value):
    """Returns the typed value of one `key=value` setting, or raises ValueError."""
    accepted = {
        "precision": tuple(distribute.MIXED_PRECISION),
        "jit_compile": JIT_VALUES,
        "teacher": TEACHERS,
    }
    if key == "replicas":
        if not value.isdigit() or int(value) < 1:
            raise ValueError(f"replicas must be a positive integer; got {value!r}.")
        return int(value)
    if key not in accepted:
        raise ValueError(f"Unknown variant key {key!r}; expected replicas, {', '.join(accepted)}.")
    if value not in accepted[key]:
        raise ValueError(f"Unknown {key} {value!r}; expected one of {', '.join(accepted[key])}.")
    return value


def parse_variants(spec, baseline):
    """Parses `--variants` into named settings.

    Args:
        spec: E.g. `"baseline,replicas=2,precision=bfloat16+teacher=folded"`.
        baseline: The `Variant` that `baseline` names and the others change.

    Returns:
        A list of `(label, Variant)` in the order given.

    Raises:
        ValueError: On an empty or repeated entry, or a malformed, unknown or
            repeated setting.
    """
    labels = [label.strip() for label in spec.split(",") if label.strip()]
    if not labels:
        raise ValueError("--variants is empty.")
    if len(set(labels)) != len(labels):
        raise ValueError(f"--variants repeats an entry: {labels}.")
    variants = []
    for label in labels:
        changes = {}
        for setting in [] if label == BASELINE else label.split("+"):
            key, sep, value = setting.partition("=")
            if not sep or key in changes:
                raise ValueError(
                    f"Bad setting {setting!r} in variant {label!r}: expected {BASELINE!r} or "
                    "distinct key=value settings joined by '+'."
                )
            changes[key] = _setting(key, value)
        variants.append((label, dataclasses.replace(baseline, **changes)))
    return variants


def devices_for(variants):
    """The devices replicas run on; splits the CPU when there is no GPU.

    Must run before TensorFlow initializes its devices.

    Returns:
        Logical device names, at least as many as any variant's replicas.

    Raises:
        ValueError: When there are fewer GPUs than a variant's replicas.
    """
    most = max(variant.replicas for _, variant in variants)
    if not tf.config.list_physical_devices("GPU"):
        distribute.split_cpu(most)
    devices = tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")
    if len(devices) < most:
        raise ValueError(f"replicas={most} needs {most} devices; found {len(devices)} GPU(s).")
    return [device.name for device in devices]


def build_teacher(kind):
    """A randomly initialized `--teacher`, folded for `kind != "plain"`."""
    teacher = models.get(FLAGS.teacher, num_classes=FLAGS.num_classes)
    if kind == "plain":
        return teacher
    return models.fold_batchnorm(teacher, dtype=FOLDED_TEACHER_DTYPES[kind])


def build_entry(method_names, variant, strategy, data, method_kwargs):
    """A compiled Distiller (and its dataset) trained under `variant`.

    The global dtype policy is `variant.precision` while the models are
    built, and float32 again on return.
    """
    distribute.set_mixed_precision(variant.precision)
    try:
        with strategy.scope():
            teacher = build_teacher(variant.teacher)
            student = models.get(FLAGS.student, num_classes=FLAGS.num_classes)
            return timing.build_distiller(
                teacher, student, method_names, data, method_kwargs, variant.jit_compile
            )
    finally:
        keras.config.set_dtype_policy("float32")


def cpu_bfloat16_line():
    """Which native bfloat16 instructions the CPU has, and the load average."""
    try:
        words = set(pathlib.Path("/proc/cpuinfo").read_text().split())
    except OSError:
        words = set()
    present = [flag for flag in BF16_CPU_FLAGS if flag in words] or ["none"]
    load = ", ".join(f"{value:.1f}" for value in os.getloadavg())
    return (
        f"CPU bfloat16 instructions ({' or '.join(BF16_CPU_FLAGS)}): {', '.join(present)}; "
        f"load average (1, 5, 15 min) at the end: {load}."
    )


def main(argv):
    del argv
    entries, method_kwargs = timing.check_flags()
    try:
        variants = parse_variants(FLAGS.variants, Variant(jit_compile=FLAGS.jit_compile))
        devices = devices_for(variants)
    except ValueError as error:
        raise app.UsageError(str(error)) from error

    keras.utils.set_random_seed(FLAGS.seed)
    data = timing.SyntheticData(FLAGS.num_train, FLAGS.num_classes, FLAGS.batch_size, FLAGS.seed)
    strategies = {}
    runs = {}
    for entry, names in entries:
        for label, variant in variants:
            if variant.replicas not in strategies:
                strategies[variant.replicas] = tf.distribute.MirroredStrategy(
                    devices[: variant.replicas]
                )
            try:
                run = build_entry(names, variant, strategies[variant.replicas], data, method_kwargs)
            except ValueError as error:
                raise app.UsageError(str(error)) from error
            warmup_s = step_timing.fit_seconds(*run, FLAGS.warmup)
            print(f"built and traced {entry} / {label}: warm-up {warmup_s:.1f} s", flush=True)
            runs[(entry, label)] = run

    step_seconds, overhead_seconds = step_timing.time_round_robin(runs, FLAGS.steps, FLAGS.repeats)

    table = step_timing.format_table(
        step_seconds, overhead_seconds, FLAGS.batch_size, columns=("method", "variant"),
        baseline_of=lambda key: (key[0], BASELINE), relative_label="relative to baseline",
    )
    header = (
        f"{timing.config_line()}; baseline: float32, jit_compile={FLAGS.jit_compile}, "
        f"1 replica, plain teacher.\n{step_timing.machine_line()}\n{cpu_bfloat16_line()}"
    )
    step_timing.publish(f"{header}\n\n{table}\n", FLAGS.output)


if __name__ == "__main__":
    app.run(main)
