"""Step time of kerasdistill's Distiller against Keras's own `keras.distillation.Distiller`.

    python benchmarks/keras_distillation_step_time.py      # resnet32x4 -> resnet8x4, 100 classes
    python benchmarks/keras_distillation_step_time.py --configs=kd --steps=2 --repeats=2   # smoke

The same teacher/student pair trained the same way by both libraries, in two
configurations (docs/keras_distillation.md explains the pairing):

- `kd`: Hinton's KD at `T = 4`, total `0.1 * CE + 0.9 * KD`. kerasdistill:
  `Distiller(methods=[KD(4, weight=0.9)], ce_weight=0.1)`. Keras:
  `Distiller(distillation_losses=[LogitsDistillation(4, loss=KLDivergence())],
  student_loss_weight=0.1)` compiled with `SparseCategoricalCrossentropy(from_logits=True)`
  (the `KLDivergence()` instance is what makes Keras's term Hinton's; the cost
  is that of the same formula).
- `kd+feature`: the same plus `--feature_weight` times the mean squared error
  between the teacher's and the student's `--feature_tap` maps (equal shapes for
  this pair). Keras: a `FeatureDistillation("mse", tap, tap)`, weighted
  `feature_weight / 0.9` because Keras multiplies every distillation loss by
  `1 - student_loss_weight`. kerasdistill: `FeatureMSE` below, the same
  formula as a `DistillationMethod` (kerasdistill ships no regressor-free feature
  MSE). With `--with_fitnet` also kerasdistill's own `FitNet` on the same tap,
  which adds its trainable regressor (conv, BatchNorm, ReLU) and so more work.

Both Distillers use the same optimizer (`TorchSGD`), accuracy metric and
`--jit_compile`. The timing is `method_step_time.py`'s (whose flags and
synthetic data this script shares, and `step_timing`'s helpers): one warm-up
`fit` per entry that traces, then `--repeats` rounds of one `fit` per entry,
each step timed by a callback, the first step of each `fit` untimed;
the median step is reported. Unlike `step_timing.time_round_robin`, the order
of the entries is reversed every other round, so that a load rising during a
round does not always hit the same entries last; a line per round gives that
round's ratios, to show how far they move.

Two tables: the CPU time of a step (`time.process_time()` of this process, all
threads) and its wall-clock time. On a machine shared with other jobs the
wall-clock time also counts the time the scheduler gives to them: in the run of
docs/keras_distillation.md its ratios moved by more than a factor of two between
rounds, those of the CPU time (the work the step does) by 0.03 at most. The ratio columns
divide by the kerasdistill entry of the same configuration (`0.50x`: the entry
takes twice as long, or twice the CPU time).
"""

import os
import pathlib
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
from absl import app, flags  # noqa: E402
from keras import distillation as keras_distillation  # noqa: E402
from keras import ops  # noqa: E402

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

import method_step_time as timing  # noqa: E402
import step_timing  # noqa: E402
import kerasdistill  # noqa: E402
from kerasdistill import methods, models  # noqa: E402
from kerasdistill.training import TorchSGD  # noqa: E402

KERASDISTILL = "kerasdistill"
KERAS = "keras.distillation"
CONFIGS = ("kd", "kd+feature")
TEMPERATURE = 4.0
CE_WEIGHT = 0.1
KD_WEIGHT = 1.0 - CE_WEIGHT

flags.DEFINE_string(
    "configs", ",".join(CONFIGS), f"Comma-separated configurations to time, of {CONFIGS}."
)
flags.DEFINE_string(
    "feature_tap", "feat_2", "Layer (zoo tap) whose teacher and student maps the MSE compares."
)
flags.DEFINE_float("feature_weight", 100.0, "Weight of the feature MSE in the total loss.")
flags.DEFINE_bool(
    "with_fitnet", True, "Also time kerasdistill's FitNet (with its regressor) in kd+feature."
)
FLAGS = flags.FLAGS
FLAGS.set_default("teacher", "resnet32x4")
FLAGS.set_default("student", "resnet8x4")
FLAGS.set_default("num_classes", 100)
FLAGS.set_default("steps", 20)
FLAGS.set_default("warmup", 2)
FLAGS.set_default("repeats", 4)


class FeatureMSE(methods.DistillationMethod):
    """Mean squared error between the teacher's and the student's map at one tap.

    What `keras.distillation.FeatureDistillation(loss="mse")` computes, with no
    regressor: both maps must have the same shape.

    Args:
        tap: Tap (layer name) read from both models.
        weight: Weight of the term in the total loss (applied by `DistillationMethod`).
        **kwargs: Passed to `DistillationMethod` (`name`).
    """

    def __init__(self, tap, weight=1.0, **kwargs):
        super().__init__(teacher_taps=(tap,), student_taps=(tap,), weight=weight, **kwargs)
        self.tap = tap

    def loss_terms(self):
        """Returns `("loss_feature_mse",)`."""
        return ("loss_feature_mse",)

    def call(self, teacher_outputs, student_outputs, labels=None, sample_indices=None, step=None):
        """Returns `{"loss_feature_mse": mean((s - t)^2)}` over all elements (before `weight`)."""
        difference = student_outputs[self.tap] - ops.stop_gradient(teacher_outputs[self.tap])
        return {"loss_feature_mse": ops.mean(ops.square(difference))}


def build_kerasdistill(teacher, student, config, fitnet=False):
    """kerasdistill's Distiller for `config` (uncompiled).

    Args:
        teacher: The teacher model.
        student: A freshly built student model.
        config: `"kd"` or `"kd+feature"`.
        fitnet: In `kd+feature`, use `methods.FitNet` instead of `FeatureMSE`.

    Returns:
        A `kerasdistill.Distiller`.
    """
    method_list = [methods.KD(temperature=TEMPERATURE, weight=KD_WEIGHT)]
    if config == "kd+feature":
        tap, weight = FLAGS.feature_tap, FLAGS.feature_weight
        method_list.append(
            methods.FitNet(tap, tap, weight=weight) if fitnet else FeatureMSE(tap, weight)
        )
    return kerasdistill.Distiller(teacher, student, method_list, ce_weight=CE_WEIGHT)


def build_keras(teacher, student, config):
    """Keras's `keras.distillation.Distiller` for `config` (uncompiled).

    Args:
        teacher: The teacher model.
        student: A freshly built student model.
        config: `"kd"` or `"kd+feature"`.

    Returns:
        A `keras.distillation.Distiller` whose total loss equals kerasdistill's.
    """
    losses = [
        keras_distillation.LogitsDistillation(
            temperature=TEMPERATURE, loss=keras.losses.KLDivergence()
        )
    ]
    # Keras multiplies the sum of the weighted distillation losses by
    # 1 - student_loss_weight (= KD_WEIGHT): KD's own weight is therefore 1.
    weights = [1.0]
    if config == "kd+feature":
        tap = FLAGS.feature_tap
        losses.append(keras_distillation.FeatureDistillation("mse", tap, tap))
        weights.append(FLAGS.feature_weight / KD_WEIGHT)
    return keras_distillation.Distiller(
        teacher,
        student,
        losses,
        distillation_loss_weights=weights,
        student_loss_weight=CE_WEIGHT,
    )


def compile_distiller(distiller, supervised_loss=None):
    """Compiles either Distiller with the benchmark's optimizer and metric.

    Args:
        distiller: A kerasdistill or Keras Distiller.
        supervised_loss: The student's supervised loss (Keras's Distiller
            requires one; kerasdistill's has its own cross-entropy).
    """
    kwargs = {} if supervised_loss is None else {"loss": supervised_loss}
    distiller.compile(
        optimizer=TorchSGD(0.05, momentum=0.9, weight_decay=5e-4),
        metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
        jit_compile={"false": False, "true": True, "auto": "auto"}[FLAGS.jit_compile],
        **kwargs,
    )


def entries(configs):
    """The timed entries, as `(configuration, library, losses)` tuples, in display order."""
    tap = FLAGS.feature_tap
    rows = []
    if "kd" in configs:
        rows.append(("kd", KERASDISTILL, "KD"))
        rows.append(("kd", KERAS, "LogitsDistillation(KLDivergence())"))
    if "kd+feature" in configs:
        rows.append(("kd+feature", KERASDISTILL, f"KD + FeatureMSE({tap})"))
        rows.append(("kd+feature", KERAS, f"LogitsDistillation + FeatureDistillation(mse, {tap})"))
        if FLAGS.with_fitnet:
            rows.append(("kd+feature", KERASDISTILL + " FitNet", f"KD + FitNet({tap}) (regressor)"))
    return rows


def build(entry, teacher):
    """A compiled Distiller for one `entries()` tuple, with a fresh student."""
    config, library, _ = entry
    student = models.get(FLAGS.student, num_classes=FLAGS.num_classes)
    if library == KERAS:
        distiller = build_keras(teacher, student, config)
        compile_distiller(distiller, keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    else:
        distiller = build_kerasdistill(teacher, student, config, fitnet=library != KERASDISTILL)
        compile_distiller(distiller)
    return distiller


def baseline_of(entry):
    """The kerasdistill entry of the same configuration (ratios are taken to it)."""
    config = entry[0]
    tap = FLAGS.feature_tap
    losses = "KD" if config == "kd" else f"KD + FeatureMSE({tap})"
    return (config, KERASDISTILL, losses)


class CpuStepTimer(step_timing.StepTimer):
    """A `step_timing.StepTimer` that also records the CPU seconds of every step.

    CPU seconds are `time.process_time()`: all threads of this process. On a
    machine shared with other jobs they vary much less than wall-clock
    seconds, which also count the time the scheduler gives to the other jobs.

    Attributes:
        seconds: Wall-clock seconds of each step (as `StepTimer`).
        cpu_seconds: CPU seconds of each step, in order.
    """

    def __init__(self):
        super().__init__()
        self.cpu_seconds = []
        self._cpu_start = None

    def on_train_batch_begin(self, batch, logs=None):
        self._cpu_start = time.process_time()
        super().on_train_batch_begin(batch, logs)

    def on_train_batch_end(self, batch, logs=None):
        super().on_train_batch_end(batch, logs)
        self.cpu_seconds.append(time.process_time() - self._cpu_start)


def timed_steps(distiller, ds, steps):
    """`step_timing.timed_steps` with CPU seconds too.

    Returns:
        `(step_seconds, cpu_seconds, overhead_seconds)`: wall-clock and CPU
        seconds of each timed step, and the fixed wall-clock cost of the `fit`.
    """
    timer = CpuStepTimer()
    untimed = step_timing.UNTIMED_STEPS_PER_FIT
    total = step_timing.fit_seconds(distiller, ds, untimed + steps, callbacks=[timer])
    return timer.seconds[untimed:], timer.cpu_seconds[untimed:], total - sum(timer.seconds)


def _ratios(medians):
    """`"entry 0.80x, ..."`: each entry's median relative to its `baseline_of`."""
    return ", ".join(
        f"{' / '.join(entry[:2])} {medians[baseline_of(entry)] / medians[entry]:.2f}x"
        for entry in medians
        if entry != baseline_of(entry) and baseline_of(entry) in medians
    )


def time_alternating(runs, steps, repeats):
    """Times every entry once per round, the order of the entries reversed every other round.

    Reversing the order keeps a load that rises or falls during a round from
    favouring the entries that come first (`step_timing.time_round_robin`
    always runs them in one order).

    Args:
        runs: Dict `{entry: (distiller, dataset)}` of warmed-up Distillers.
        steps: Timed steps per entry and round.
        repeats: Rounds.

    Returns:
        `(step_seconds, cpu_seconds, overhead_seconds, round_lines)`: dicts
        `{entry: [...]}` of the wall-clock and CPU seconds of every timed step
        and of the fixed cost of every `fit`, and per round one line with the
        load average and each entry's median step (CPU and wall) relative to
        its `baseline_of`.
    """
    step_seconds = {entry: [] for entry in runs}
    cpu_seconds = {entry: [] for entry in runs}
    overhead_seconds = {entry: [] for entry in runs}
    round_lines = []
    for repeat in range(repeats):
        order = list(runs) if repeat % 2 == 0 else list(reversed(runs))
        wall_medians, cpu_medians = {}, {}
        for entry in order:
            wall_s, cpu_s, overhead_s = timed_steps(*runs[entry], steps)
            step_seconds[entry].extend(wall_s)
            cpu_seconds[entry].extend(cpu_s)
            overhead_seconds[entry].append(overhead_s)
            wall_medians[entry] = statistics.median(wall_s)
            cpu_medians[entry] = statistics.median(cpu_s)
        wall_medians = {entry: wall_medians[entry] for entry in runs}
        cpu_medians = {entry: cpu_medians[entry] for entry in runs}
        direction = "forward" if repeat % 2 == 0 else "reversed"
        round_lines.append(
            f"round {repeat + 1} ({direction} order, load average {os.getloadavg()[0]:.1f} at "
            f"its end): CPU {_ratios(cpu_medians)}; wall {_ratios(wall_medians)}"
        )
        print(round_lines[-1], flush=True)
    return step_seconds, cpu_seconds, overhead_seconds, round_lines


def cpu_table(cpu_seconds):
    """Markdown table of the median CPU time of a step per entry.

    Args:
        cpu_seconds: Dict `{entry: [CPU seconds of each timed step]}`, entries
            as `entries()` makes them.

    Returns:
        The table as a string; the ratio is that of `baseline_of(entry)`'s
        median to the entry's (`0.50x`: the entry needs twice the CPU time).
    """
    medians = {entry: statistics.median(values) for entry, values in cpu_seconds.items()}
    rows = [
        "| configuration | library | losses | CPU ms/step (median) | relative to kerasdistill |",
        "|---|---|---|---:|---:|",
    ]
    for entry, median in medians.items():
        baseline = medians.get(baseline_of(entry))
        relative = f"{baseline / median:.2f}x" if baseline else "n/a"
        rows.append(f"| {' | '.join(entry)} | {median * 1e3:.1f} | {relative} |")
    return "\n".join(rows)


def check_configs():
    """Returns the `--configs` list, or raises `app.UsageError` naming the bad one."""
    configs = [c.strip() for c in FLAGS.configs.split(",") if c.strip()]
    unknown = [c for c in configs if c not in CONFIGS]
    if not configs or unknown:
        raise app.UsageError(f"--configs must be a non-empty subset of {CONFIGS}; got {configs}.")
    return configs


def main(argv):
    del argv
    timing.check_flags()
    configs = check_configs()
    keras.utils.set_random_seed(FLAGS.seed)
    data = timing.SyntheticData(
        FLAGS.num_train, FLAGS.num_classes, FLAGS.batch_size, FLAGS.seed, FLAGS.image_size
    )
    ds = data.pipeline(with_index=False)
    teacher = models.get(FLAGS.teacher, num_classes=FLAGS.num_classes)
    runs = {}
    for entry in entries(configs):
        try:
            distiller = build(entry, teacher)
        except ValueError as error:  # e.g. a --feature_tap the models lack
            raise app.UsageError(str(error)) from error
        warmup_s = step_timing.fit_seconds(distiller, ds, FLAGS.warmup)
        print(f"built and traced {' / '.join(entry)}: warm-up {warmup_s:.1f} s", flush=True)
        runs[entry] = (distiller, ds)

    step_seconds, cpu_seconds, overhead_seconds, round_lines = time_alternating(
        runs, FLAGS.steps, FLAGS.repeats
    )

    header = (
        f"{FLAGS.teacher} -> {FLAGS.student}, {FLAGS.num_classes} classes, batch "
        f"{FLAGS.batch_size}, {FLAGS.image_size}x{FLAGS.image_size} random inputs, "
        f"{FLAGS.steps} timed steps x {FLAGS.repeats} rounds per entry (median step; "
        f"{step_timing.UNTIMED_STEPS_PER_FIT} untimed step first in each fit), {FLAGS.warmup} "
        f"warm-up steps, jit_compile={FLAGS.jit_compile}; KD T={TEMPERATURE:g}, "
        f"CE weight {CE_WEIGHT:g}, feature MSE weight {FLAGS.feature_weight:g} on "
        f"{FLAGS.feature_tap}.\n{step_timing.machine_line()}"
    )
    wall = step_timing.format_table(
        step_seconds,
        overhead_seconds,
        FLAGS.batch_size,
        columns=("configuration", "library", "losses"),
        baseline_of=baseline_of,
        relative_label="relative to kerasdistill",
    )
    rounds = "\n".join(f"- {line}" for line in round_lines)
    step_timing.publish(
        f"{header}\n\nCPU time of a step (this process, all threads):\n\n"
        f"{cpu_table(cpu_seconds)}\n\nWall-clock time of a step:\n\n{wall}\n\n"
        f"Per round, median step relative to kerasdistill:\n\n{rounds}\n",
        FLAGS.output,
    )

if __name__ == "__main__":
    app.run(main)
