"""Cost of one distillation training step: methods x Keras backends x variants, one table.

    python benchmarks/step_time.py                                   # resnet20 -> resnet8, methods
    python benchmarks/step_time.py --teacher=resnet32x4 --student=resnet8x4 --num_classes=100 \\
        --methods=kd,kd+msdcrd --variants=baseline,jit_compile=true,precision=bfloat16
    python benchmarks/step_time.py --backends=tensorflow,jax,torch --clock=cpu \\
        --methods=none,kd,reference:kd,forward                       # one worker per backend

Every row is one `--methods` entry under one `--variants` entry on one
backend, built as a training script builds it (`methods.get`, the
`TrainingData` the methods need, `TorchSGD`, an accuracy metric) and trained by
its own `fit` on synthetic in-memory batches (random images, labels and
dataset indices; `train_labels` for `--num_train` samples). Entries
(`benchmarks/harness.py`): `none` (the student alone), `kd`, `kd+msdcrd`,
`kd+feature` (`feature`: the regressor-free MSE of `examples/feature_mse.py`
on `--feature_tap`), `keras:kd`, `keras:kd+feature` (Keras's own
`keras.distillation`, with the same total loss: `--ce_weight` is its
`student_loss_weight` and each weight is divided by `1 - ce_weight`),
`reference:none`, `reference:kd` (plain PyTorch, `torch_reference.py`),
`forward`, `reference:forward` (the teacher's forward pass alone).

A variant changes the baseline (float32, `--jit_compile`, the teacher as
built) in `key=value` settings joined by `+`: `replicas=N` (a
`MirroredStrategy` over N devices, the CPU split into logical devices when
there is no GPU; TensorFlow backend; then every variant runs under a strategy,
the baseline over one device), `precision=bfloat16|float16`,
`jit_compile=true|false|auto`, `teacher=folded|folded_bfloat16`
(`models.fold_batchnorm`), `num_train=N` (the dataset size CRD's banks cover).

Each row is traced by a warm-up `fit` first; then `--repeats` rounds time
`--steps` steps of every row, interleaved, the order reversed every other
round (`harness.time_interleaved`). `KERAS_BACKEND` is fixed per process, so
with several `--backends` this script runs itself once per backend
(`OMP_WAIT_POLICY=PASSIVE`: spinning OpenMP threads count as CPU time) and
puts all rows in one table. Ratio columns (`--relative_to`) divide the median
step of another row into the row's; `--clock=cpu` uses CPU time
(`time.process_time`, all threads), the stable measure on a shared machine.
"""

import dataclasses
import json
import os
import pathlib
import subprocess
import sys
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
from absl import app, flags

HERE = pathlib.Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE), str(HERE.parent / "examples")]

import harness

import kerasdistill
from kerasdistill import methods, models
from kerasdistill.training import TorchSGD, distribute

BASELINE = "baseline"
FEATURE = "feature"
BACKENDS = ("tensorflow", "jax", "torch")
FOLDED_TEACHER_DTYPES = {"plain": None, "folded": None, "folded_bfloat16": "mixed_bfloat16"}
JIT = {"false": False, "true": True, "auto": "auto"}
COLUMNS = ("backend", "entry", "variant")

flags.DEFINE_string("teacher", "resnet20", "Teacher model name (zoo registry).")
flags.DEFINE_string("student", "resnet8", "Student model name (zoo registry).")
flags.DEFINE_string(
    "methods", "none,kd,fitnet,at,crd,dkd,msdcrd,kd+msdcrd",
    "Comma-separated entries: none, kd, kd+msdcrd, keras:kd+feature, reference:kd, forward.",
)
flags.DEFINE_string("variants", BASELINE, "Comma-separated variants: baseline or key=value+...")
flags.DEFINE_string("backends", "", "Comma-separated Keras backends (default: the current one).")
flags.DEFINE_string("method_kwargs", "{}", 'JSON constructor arguments per method: {"crd": {...}}.')
flags.DEFINE_float("ce_weight", 1.0, "Weight of the student's cross-entropy.")
flags.DEFINE_string("feature_tap", "feat_2", "Tap of the `feature` MSE (same shape in both).")
flags.DEFINE_float("feature_weight", 100.0, "Weight of the `feature` MSE.")
flags.DEFINE_integer("batch_size", 64, "Images per step.")
flags.DEFINE_integer("image_size", 32, "Image height and width.")
flags.DEFINE_integer("num_classes", 10, "Number of classes.")
flags.DEFINE_integer("num_train", 50_000, "Training-set size the methods see (CRD's banks).")
flags.DEFINE_integer("steps", 50, "Timed steps per row and round.")
flags.DEFINE_integer("warmup", 5, "Untimed steps per row first (tracing included), >= 1.")
flags.DEFINE_integer("repeats", 3, "Interleaved timed rounds; the median step is reported.")
flags.DEFINE_enum("jit_compile", "false", list(JIT), "The baseline's compile(jit_compile=...).")
flags.DEFINE_multi_string(
    "relative_to", None,
    "A ratio column: the row each row is divided into, as key=value+... over backend, entry, "
    "variant, the others the row's own (default: entry=none, else the first entry). Repeatable.",
)
flags.DEFINE_enum("clock", "wall", ["wall", "cpu"], "The time images/s and the ratios use.")
flags.DEFINE_integer("threads", 0, "Threads per framework (TensorFlow, PyTorch); 0: default.")
flags.DEFINE_integer("seed", 0, "Random seed.")
flags.DEFINE_string("output", "", "Also write the report, as markdown, to this file.")
flags.DEFINE_string("samples_out", "", "Write the raw samples as JSON here (per-backend workers).")
FLAGS = flags.FLAGS


@dataclasses.dataclass(frozen=True)
class Variant:
    """How a row trains (see the module docstring)."""

    replicas: int = 1
    precision: str = "none"
    jit_compile: str = "false"
    teacher: str = "plain"
    num_train: int = 0  # 0: --num_train.


def _setting(key, value):
    accepted = {
        "precision": tuple(distribute.MIXED_PRECISION),
        "jit_compile": tuple(JIT),
        "teacher": tuple(FOLDED_TEACHER_DTYPES),
    }
    if key in ("replicas", "num_train"):
        if not value.isdigit() or int(value) < 1:
            raise ValueError(f"{key} must be a positive integer; got {value!r}.")
        return int(value)
    if key not in accepted:
        raise ValueError(f"Unknown variant key {key!r}; expected replicas, num_train, "
                         f"{', '.join(accepted)}.")
    if value not in accepted[key]:
        raise ValueError(f"Unknown {key} {value!r}; expected one of {', '.join(accepted[key])}.")
    return value


def parse_variants(spec, baseline):
    """`"baseline,replicas=2,precision=bfloat16+teacher=folded"` -> `[(label, Variant)]`."""
    variants = []
    for label in harness.parse_list(spec, "variants"):
        changes = {}
        for setting in [] if label == BASELINE else label.split("+"):
            key, sep, value = setting.partition("=")
            if not sep or key in changes:
                raise ValueError(f"Bad setting {setting!r} in variant {label!r}: expected "
                                 f"{BASELINE!r} or distinct key=value settings joined by '+'.")
            changes[key] = _setting(key, value)
        variants.append((label, dataclasses.replace(baseline, **changes)))
    return variants


def parse_relative_to(specs, entries):
    """The ratio columns: `[(header, baseline_of)]` from the `--relative_to` specs."""
    if not specs:
        specs = [f"entry={harness.STUDENT_ALONE if harness.STUDENT_ALONE in entries else entries[0]}"]
    columns = []
    for spec in specs:
        fixed = {}
        for setting in spec.split("+"):
            key, sep, value = setting.partition("=")
            if not sep or key not in COLUMNS:
                raise ValueError(f"Bad --relative_to {spec!r}: expected key=value+... over {COLUMNS}.")
            fixed[COLUMNS.index(key)] = value

        def baseline_of(key, fixed=fixed):
            return tuple(fixed.get(i, part) for i, part in enumerate(key))

        columns.append((f"relative to {' '.join(fixed.values())}", baseline_of))
    return columns


def _method(name, method_kwargs):
    kwargs = method_kwargs.get(name, {})
    if name == FEATURE:
        from feature_mse import FeatureMSE  # examples/feature_mse.py

        return FeatureMSE(FLAGS.feature_tap, **{"weight": FLAGS.feature_weight, **kwargs})
    try:
        return methods.get(name, **kwargs)
    except (TypeError, ValueError) as error:
        raise ValueError(f"--method_kwargs for {name!r} {kwargs}: {error}") from error


def _keras_distiller(teacher, student, names, method_kwargs):
    """`keras.distillation.Distiller` with the total loss of kerasdistill's for `names`."""
    if FLAGS.ce_weight >= 1.0:
        raise ValueError(f"keras: entries need --ce_weight below 1; got {FLAGS.ce_weight}.")
    distill_share = 1.0 - FLAGS.ce_weight  # Keras multiplies every distillation loss by it.
    losses, weights = [], []
    for name in names:
        kwargs = method_kwargs.get(name, {})
        if name == "kd":
            kd = methods.KD(**kwargs)
            losses.append(keras.distillation.LogitsDistillation(
                temperature=kd.temperature, loss=keras.losses.KLDivergence()))
            weights.append(kd.weight / distill_share)
        elif name == FEATURE:
            tap = FLAGS.feature_tap
            losses.append(keras.distillation.FeatureDistillation("mse", tap, tap))
            weights.append(kwargs.get("weight", FLAGS.feature_weight) / distill_share)
        else:
            raise ValueError(f"keras: entries take kd and {FEATURE}; got {name!r}.")
    return keras.distillation.Distiller(
        teacher, student, losses, distillation_loss_weights=weights,
        student_loss_weight=FLAGS.ce_weight,
    )


def build_models(variant):
    """The teacher (folded as `variant` says) and a student, under its dtype policy."""
    distribute.set_mixed_precision(variant.precision)
    try:
        teacher = models.get(FLAGS.teacher, num_classes=FLAGS.num_classes)
        if variant.teacher != "plain":
            teacher = models.fold_batchnorm(teacher, dtype=FOLDED_TEACHER_DTYPES[variant.teacher])
        return teacher, models.get(FLAGS.student, num_classes=FLAGS.num_classes)
    finally:
        keras.config.set_dtype_policy("float32")


def build_model_row(library, names, variant, data, method_kwargs):
    """A compiled Distiller (or `keras.distillation.Distiller`) and its dataset."""
    teacher, student = build_models(variant)
    compile_kwargs = {
        "optimizer": TorchSGD(0.05, momentum=0.9, weight_decay=5e-4),
        "metrics": [keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
        "jit_compile": JIT[variant.jit_compile],
    }
    if library == "keras":
        model = _keras_distiller(teacher, student, names, method_kwargs)
        model.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                      **compile_kwargs)
        return model, data.dataset()
    method_list = [_method(name, method_kwargs) for name in names]
    training_data = methods.TrainingData(
        train_labels=data.train_labels, steps_per_epoch=len(data.train_labels) // data.batch_size
    )
    model = kerasdistill.Distiller(teacher, student, method_list, ce_weight=FLAGS.ce_weight,
                                   training_data=training_data)
    model.compile(**compile_kwargs)
    return model, data.dataset(any(m.uses_sample_indices for m in method_list))


def build_row(entry, variant, data, method_kwargs):
    """Builds and warms up one row; returns `run(steps)` for `harness.time_interleaved`."""
    library, names = harness.parse_entry(entry, methods.available() + [FEATURE])
    if library == "reference":
        return _reference_row(names, entry.endswith(harness.FORWARD), data)
    if library == harness.FORWARD:
        teacher, _ = build_models(variant)

        def forward(position):
            keras.ops.convert_to_numpy(teacher.predict_on_batch(data.batch(position)[0]))

        harness.timed_calls(forward, FLAGS.warmup)
        return lambda steps: harness.timed_calls(forward, steps)
    model, dataset = build_model_row(library, names, variant, data, method_kwargs)
    harness.fit_seconds(model, dataset, FLAGS.warmup)
    return lambda steps: harness.timed_fit(model, dataset, steps)


def _reference_row(names, forward, data):
    """The plain-PyTorch step of `torch_reference.py`: `names` [] or ["kd"], or the forward."""
    import torch
    import torch_reference

    torch.manual_seed(FLAGS.seed)
    teacher = torch_reference.build(FLAGS.teacher, FLAGS.num_classes)
    student = torch_reference.build(FLAGS.student, FLAGS.num_classes)
    runner = torch_reference.ReferenceStep(teacher if names else None, student)
    batches = {}

    def batch(position):
        position %= harness.POOL_BATCHES
        if position not in batches:  # NCHW once, as a DataLoader hands it over.
            x, y = data.batch(position)
            batches[position] = (torch.from_numpy(x.transpose(0, 3, 1, 2).copy()),
                                 torch.from_numpy(y))
        return batches[position]

    if forward:
        runner.teacher = teacher.eval()
        step = lambda position: runner.teacher_forward(batch(position)[0])
    else:
        step = lambda position: runner(*batch(position))
    harness.timed_calls(step, FLAGS.warmup)
    return lambda steps: harness.timed_calls(step, steps)


def _set_threads(backend, threads):
    if not threads:
        return
    if backend == "torch" or "reference:" in FLAGS.methods:
        import torch

        torch.set_num_threads(threads)
    if backend == "tensorflow":
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)


def measure(entries, variants, method_kwargs):
    """Times every (entry, variant) on the current backend; returns the samples by key."""
    backend = keras.backend.backend()
    _set_threads(backend, FLAGS.threads)
    replicas = max(variant.replicas for _, variant in variants)
    strategies = {}
    if replicas > 1:
        import tensorflow as tf

        if backend != "tensorflow":
            raise ValueError(f"replicas= variants run on the TensorFlow backend, not {backend!r}.")
        if not tf.config.list_physical_devices("GPU"):
            distribute.split_cpu(replicas)
        devices = [d.name for d in tf.config.list_logical_devices("GPU")
                   or tf.config.list_logical_devices("CPU")]
        strategies = {n: tf.distribute.MirroredStrategy(devices[:n]) for n in range(1, replicas + 1)}
    keras.utils.set_random_seed(FLAGS.seed)
    runs = {}
    for entry in entries:
        for label, variant in variants:
            data = harness.SyntheticData(variant.num_train or FLAGS.num_train, FLAGS.num_classes,
                                         FLAGS.batch_size, FLAGS.image_size, FLAGS.seed)
            if strategies:
                with strategies[variant.replicas].scope():
                    runs[(backend, entry, label)] = build_row(entry, variant, data, method_kwargs)
            else:
                runs[(backend, entry, label)] = build_row(entry, variant, data, method_kwargs)
            print(f"built and warmed up {entry} / {label} on {backend}", flush=True)
    return harness.time_interleaved(runs, FLAGS.steps, FLAGS.repeats)


def measure_in_workers(backends):
    """Runs this script once per backend (a process each) and merges their samples."""
    samples = {}
    argv = [a for a in sys.argv[1:]
            if not a.startswith(("--backends", "--methods", "--output", "--samples_out"))]
    entries = harness.parse_list(FLAGS.methods, "methods")
    # The plain-PyTorch reference runs once, in the PyTorch worker if there is one.
    reference_backend = "torch" if "torch" in backends else backends[0]
    for backend in backends:
        methods_here = [e for e in entries
                        if backend == reference_backend or not e.startswith("reference:")]
        argv_here = [*argv, f"--methods={','.join(methods_here)}"]
        with tempfile.NamedTemporaryFile(suffix=".json") as out:
            env = dict(os.environ, KERAS_BACKEND=backend, OMP_WAIT_POLICY="PASSIVE")
            subprocess.run([sys.executable, __file__, *argv_here, f"--backends={backend}",
                            f"--samples_out={out.name}"], env=env, check=True)
            for row in json.loads(pathlib.Path(out.name).read_text()):
                samples[tuple(row["key"])] = row["samples"]
    return samples


def main(argv):
    del argv
    try:
        entries = harness.parse_list(FLAGS.methods, "methods")
        variants = parse_variants(FLAGS.variants, Variant(jit_compile=FLAGS.jit_compile))
        relative_to = parse_relative_to(FLAGS.relative_to, entries)
        method_kwargs = json.loads(FLAGS.method_kwargs or "{}")
        backends = harness.parse_list(FLAGS.backends or keras.backend.backend(), "backends")
        for entry in entries:
            harness.parse_entry(entry, methods.available() + [FEATURE])
        for name in (FLAGS.teacher, FLAGS.student):
            if name not in models.available():
                raise ValueError(f"Unknown model {name!r}; available: {', '.join(models.available())}.")
        if FLAGS.warmup < 1 or FLAGS.steps < 1 or FLAGS.repeats < 1:
            raise ValueError("--warmup, --steps and --repeats must be at least 1.")
        unknown = sorted(set(backends) - set(BACKENDS))
        if unknown:
            raise ValueError(f"Unknown --backends {unknown}; expected {BACKENDS}.")
    except ValueError as error:  # json.JSONDecodeError included
        raise app.UsageError(str(error)) from error

    if backends == [keras.backend.backend()]:
        samples = measure(entries, variants, method_kwargs)
    else:
        samples = measure_in_workers(backends)
    if FLAGS.samples_out:
        rows = [{"key": list(key), "samples": values} for key, values in samples.items()]
        pathlib.Path(FLAGS.samples_out).write_text(json.dumps(rows))
        return
    header = (
        f"{FLAGS.teacher} -> {FLAGS.student}, {FLAGS.num_classes} classes, batch {FLAGS.batch_size}, "
        f"{FLAGS.image_size}x{FLAGS.image_size} random inputs, CE weight {FLAGS.ce_weight:g}, "
        f"{FLAGS.steps} timed steps x {FLAGS.repeats} rounds per row (median; "
        f"{harness.UNTIMED_STEPS_PER_FIT} untimed step first in each fit), {FLAGS.warmup} warm-up "
        f"steps; baseline float32, jit_compile={FLAGS.jit_compile}; clock {FLAGS.clock}.\n"
        f"{harness.machine_line(', '.join(backends))}"
    )
    table = harness.format_table(samples, FLAGS.batch_size, COLUMNS, relative_to, FLAGS.clock)
    harness.publish(f"{header}\n\n{table}\n", FLAGS.output)


if __name__ == "__main__":
    app.run(main)
