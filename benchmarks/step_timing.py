"""Step timing shared by the benchmark scripts: a callback that times every
training step of a `fit`, round-robin timing of several models, the markdown
table. No flags are defined here, so tests and several scripts can import it.
"""

import os
import pathlib
import platform
import statistics
import time

import keras
import tensorflow as tf

# Steps run but not timed at the start of every timed `fit`: the first one waits
# for the batch of a freshly created dataset iterator.
UNTIMED_STEPS_PER_FIT = 1
# The entry every ratio is taken to by default: the student trained alone.
STUDENT_ALONE = "none"


class StepTimer(keras.callbacks.Callback):
    """Records the wall-clock seconds of every training step of a `fit`.

    A step's clock starts at `on_train_batch_begin` and stops at
    `on_train_batch_end` once the step's logs are on the host, so it covers
    one call of the compiled train function and nothing of the `fit` around
    it (building the dataset iterator, callbacks, tearing the iterator down).
    With `steps_per_execution > 1` one record covers that many steps.

    Attributes:
        seconds: One float per step, in order.
    """

    def __init__(self):
        super().__init__()
        self.seconds = []
        self._start = None

    def on_train_batch_begin(self, batch, logs=None):
        self._start = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        keras.tree.map_structure(keras.ops.convert_to_numpy, logs or {})
        self.seconds.append(time.perf_counter() - self._start)


def fit_seconds(distiller, ds, steps, callbacks=()):
    """Runs `steps` training steps in one `fit` and returns its wall-clock seconds."""
    start = time.perf_counter()
    distiller.fit(
        ds, epochs=1, steps_per_epoch=steps, shuffle=False, verbose=0, callbacks=list(callbacks)
    )
    return time.perf_counter() - start


def timed_steps(distiller, ds, steps):
    """Times `steps` steady-state training steps inside one `fit`.

    The `fit` runs `UNTIMED_STEPS_PER_FIT + steps` steps and the first ones
    are not timed.

    Returns:
        `(step_seconds, overhead_seconds)`: the seconds of each timed step,
        and the wall time of the whole `fit` minus that of all its steps
        (its fixed cost: iterator creation and teardown, callbacks).
    """
    timer = StepTimer()
    total = fit_seconds(distiller, ds, UNTIMED_STEPS_PER_FIT + steps, callbacks=[timer])
    return timer.seconds[UNTIMED_STEPS_PER_FIT:], total - sum(timer.seconds)


def time_round_robin(runs, steps, repeats):
    """Times `steps` steps per entry in one `fit`, in `repeats` interleaved rounds.

    Args:
        runs: Dict `{entry: (distiller, dataset)}` of warmed-up Distillers.
        steps: Timed steps per entry and round.
        repeats: Rounds over all entries.

    Returns:
        `(step_seconds, overhead_seconds)`: dicts `{entry: [seconds]}`, the
        first with `steps x repeats` step times per entry, the second with
        the fixed cost of each of the entry's `repeats` timed `fit`s.
    """
    step_seconds = {entry: [] for entry in runs}
    overhead_seconds = {entry: [] for entry in runs}
    for repeat in range(repeats):
        for entry, (distiller, ds) in runs.items():
            steps_s, overhead_s = timed_steps(distiller, ds, steps)
            step_seconds[entry].extend(steps_s)
            overhead_seconds[entry].append(overhead_s)
        load = os.getloadavg()[0]
        print(f"repeat {repeat + 1}/{repeats} done, load average {load:.1f}", flush=True)
    return step_seconds, overhead_seconds


def publish(report, output):
    """Prints `report` and, when `output` is a path, writes it there too."""
    print(f"\n{report}")
    if output:
        path = pathlib.Path(output)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(report)
        print(f"Wrote {path}")


def machine_line():
    """One line naming the hardware and software the numbers come from."""
    gpus = tf.config.list_physical_devices("GPU")
    return (
        f"Machine: {os.cpu_count()} CPUs ({platform.processor() or platform.machine()}), "
        f"{len(gpus)} GPU(s); Python {platform.python_version()}, TensorFlow {tf.__version__}, "
        f"Keras {keras.__version__}, backend {keras.backend.backend()}."
    )


def format_table(
    step_seconds, overhead_seconds, batch_size, columns=("method",),
    baseline_of=lambda entry: STUDENT_ALONE, relative_label="relative to student alone",
):
    """Markdown table of median throughput per entry.

    Args:
        step_seconds: Dict `{entry: [seconds of each timed step]}`, in
            display order. An entry is a string, or a tuple with one string
            per column of `columns`.
        overhead_seconds: Dict `{entry: [fixed seconds of each timed fit]}`.
        batch_size: Images per step.
        columns: Headers of the columns naming the entry.
        baseline_of: Returns the entry whose throughput an entry's ratio is
            taken to (`n/a` when that entry was not timed).
        relative_label: Header of the ratio column.

    Returns:
        The table as a string.
    """
    median_step = {entry: statistics.median(times) for entry, times in step_seconds.items()}
    rows = [
        f"| {' | '.join(columns)} | images/s (median) | {relative_label} | ms/step "
        "| per-fit overhead, s (median) |",
        "|---" * len(columns) + "|---:|---:|---:|---:|",
    ]
    for entry, step_s in median_step.items():
        baseline = median_step.get(baseline_of(entry))
        relative = f"{baseline / step_s:.2f}x" if baseline else "n/a"
        names = " | ".join(entry) if isinstance(entry, tuple) else entry
        overhead = statistics.median(overhead_seconds[entry])
        rows.append(
            f"| {names} | {batch_size / step_s:.1f} | {relative} | {step_s * 1e3:.1f} "
            f"| {overhead:.1f} |"
        )
    return "\n".join(rows)
