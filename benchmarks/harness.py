"""What the benchmark scripts share: entries, synthetic data, step timing, the table.

Imports Keras and NumPy only (no TensorFlow), so `gpu_throughput.py` can use
it where only JAX is installed.

An entry names what one row trains: `none` (the student alone, cross-entropy),
`kd`, `kd+msdcrd` (kerasdistill methods, combined with `+`), `keras:kd+feature`
(Keras's own `keras.distillation`), `reference:kd` (the plain-PyTorch
reference of `torch_reference.py`) or `forward` (the teacher's forward pass
alone). Rows are timed step by step: the clock of a step runs from
`on_train_batch_begin` until its logs are on the host, so building and
tearing down a `fit`'s dataset iterator (which took from under a second to
over a minute under a `MirroredStrategy`, `docs/benchmarks.md`) is reported
apart as the per-fit overhead and never enters the step time.
"""

import importlib.metadata
import os
import pathlib
import platform
import statistics
import time

import keras
import numpy as np

from kerasdistill.batches import IMAGE_KEY, INDEX_KEY

STUDENT_ALONE = "none"
FORWARD = "forward"
# Libraries an entry may name before a colon; kerasdistill without one.
LIBRARIES = ("kerasdistill", "keras", "reference")
# Steps run but not timed at the start of every timed `fit`: the first one
# waits for the first batch of a freshly created iterator.
UNTIMED_STEPS_PER_FIT = 1
# Distinct batches held in memory and cycled.
POOL_BATCHES = 8


def parse_list(spec, flag, convert=str):
    """Splits a comma-separated flag value into distinct items.

    Raises:
        ValueError: On an empty or repeated list, naming the flag.
    """
    items = [convert(item.strip()) for item in spec.split(",") if item.strip()]
    if not items or len(set(items)) != len(items):
        raise ValueError(f"--{flag} must list distinct values; got {spec!r}.")
    return items


def parse_entry(entry, known_methods):
    """Splits an entry into its library and method names.

    Args:
        entry: E.g. `"none"`, `"kd+msdcrd"`, `"keras:kd+feature"`,
            `"reference:kd"`, `"forward"`.
        known_methods: The method names accepted for the library
            (`reference:` takes `none`, `kd` and `forward` only).

    Returns:
        `(library, names)`: `("kerasdistill", ["kd", "msdcrd"])`; `none` and
        `forward` have no names and `forward` is its own library.

    Raises:
        ValueError: On an unknown library or method name.
    """
    library, _, spec = entry.rpartition(":")
    library = library or "kerasdistill"
    if library not in LIBRARIES:
        raise ValueError(f"Unknown library {library!r} in entry {entry!r}; expected {LIBRARIES}.")
    if spec == FORWARD:
        return (FORWARD if library == "kerasdistill" else library), []
    if library == "reference":
        known_methods = ("kd",)
    names = [] if spec == STUDENT_ALONE else [name.strip() for name in spec.split("+")]
    for name in names:
        if name not in known_methods:
            raise ValueError(
                f"Unknown method {name!r} in entry {entry!r}; expected {STUDENT_ALONE}, "
                f"{FORWARD} or methods of {', '.join(known_methods)} joined by '+'."
            )
    return library, names


class SyntheticData:
    """Random CIFAR-sized batches held in memory, with training labels for the methods.

    Args:
        num_train: Training-set size the methods see (CRD's memory bank), at
            least `batch_size`; dataset indices lie in `[0, num_train)`,
            distinct within the pool.
        num_classes: Number of classes.
        batch_size: Images per batch.
        image_size: Height and width.
        seed: Seed of the images, labels and indices.
        dtype: `"float32"` (standard normal, as normalized images) or
            `"uint8"` (pixels).
    """

    def __init__(self, num_train, num_classes, batch_size, image_size=32, seed=0,
                 dtype="float32"):
        if num_train < batch_size:
            raise ValueError(f"num_train={num_train} must be at least the batch size {batch_size}.")
        rng = np.random.default_rng(seed)
        self.train_labels = rng.integers(0, num_classes, num_train).astype("int64")
        count = min(POOL_BATCHES, num_train // batch_size) * batch_size
        shape = (count, image_size, image_size, 3)
        if dtype == "uint8":
            self.images = rng.integers(0, 256, shape, dtype="uint8")
        else:
            self.images = rng.standard_normal(shape).astype(dtype)
        self.indices = rng.choice(num_train, count, replace=False).astype("int64")
        self.batch_size = batch_size

    def batch(self, position, with_index=False):
        """The batch at `position` of the pool (cycled): `(x, y)`."""
        start = position % (len(self.indices) // self.batch_size) * self.batch_size
        indices = self.indices[start : start + self.batch_size]
        images = self.images[start : start + self.batch_size]
        x = {IMAGE_KEY: images, INDEX_KEY: indices} if with_index else images
        return x, self.train_labels[indices]

    def dataset(self, with_index=False):
        """An endless `keras.utils.PyDataset` of the pool's batches, for `fit`."""
        return _Cycle(self, with_index)


class _Cycle(keras.utils.PyDataset):
    def __init__(self, data, with_index):
        super().__init__()
        self._data, self._with_index = data, with_index

    @property
    def num_batches(self):
        return None  # Endless: `fit` takes `steps_per_epoch`.

    def __getitem__(self, position):
        return self._data.batch(position, self._with_index)


class StepTimer(keras.callbacks.Callback):
    """Records the wall-clock and CPU seconds of every training step of a `fit`.

    CPU seconds are `time.process_time()`, all threads of the process: on a
    machine shared with other jobs they vary much less than wall-clock seconds.

    Attributes:
        wall: Wall-clock seconds of each step, in order.
        cpu: CPU seconds of each step, in order.
    """

    def __init__(self):
        super().__init__()
        self.wall, self.cpu = [], []
        self._start = None

    def on_train_batch_begin(self, batch, logs=None):
        self._start = (time.perf_counter(), time.process_time())

    def on_train_batch_end(self, batch, logs=None):
        keras.tree.map_structure(keras.ops.convert_to_numpy, logs or {})
        self.wall.append(time.perf_counter() - self._start[0])
        self.cpu.append(time.process_time() - self._start[1])


def fit_seconds(model, dataset, steps, callbacks=()):
    """Runs `steps` training steps in one `fit`; returns its wall-clock seconds."""
    start = time.perf_counter()
    model.fit(dataset, epochs=1, steps_per_epoch=steps, shuffle=False, verbose=0,
              callbacks=list(callbacks))
    return time.perf_counter() - start


def timed_fit(model, dataset, steps):
    """Times `steps` steady-state steps of one `fit` (after `UNTIMED_STEPS_PER_FIT` more).

    Returns:
        `{"wall": [...], "cpu": [...], "overhead": [s]}`: the seconds of each
        timed step and the wall time of the `fit` minus that of all its steps.
    """
    timer = StepTimer()
    total = fit_seconds(model, dataset, UNTIMED_STEPS_PER_FIT + steps, [timer])
    return {
        "wall": timer.wall[UNTIMED_STEPS_PER_FIT:],
        "cpu": timer.cpu[UNTIMED_STEPS_PER_FIT:],
        "overhead": [total - sum(timer.wall)],
    }


def timed_calls(step, steps):
    """Times `steps` calls of `step(position)`, each synchronous with the host.

    Returns:
        `{"wall": [...], "cpu": [...], "overhead": []}`.
    """
    wall, cpu = [], []
    for position in range(steps):
        start = (time.perf_counter(), time.process_time())
        step(position)
        wall.append(time.perf_counter() - start[0])
        cpu.append(time.process_time() - start[1])
    return {"wall": wall, "cpu": cpu, "overhead": []}


def time_interleaved(runs, steps, repeats, log=print):
    """Times every entry once per round, reversing the order every other round.

    Interleaving makes background load slow all entries alike, and reversing
    keeps a load that rises during a round from always hitting the same ones.

    Args:
        runs: Dict `{key: run}`, `run(steps)` returning a `timed_fit` dict.
        steps: Timed steps per entry and round.
        repeats: Rounds.
        log: Called with a line after each round.

    Returns:
        `{key: {"wall": [...], "cpu": [...], "overhead": [...]}}` over all rounds.
    """
    samples = {key: {"wall": [], "cpu": [], "overhead": []} for key in runs}
    for repeat in range(repeats):
        for key in list(runs) if repeat % 2 == 0 else list(reversed(runs)):
            for name, values in runs[key](steps).items():
                samples[key][name].extend(values)
        log(f"round {repeat + 1}/{repeats} done, load average {os.getloadavg()[0]:.1f}")
    return samples


def _median(values):
    return statistics.median(values) if values else None


def format_table(samples, batch_size, columns, relative_to=(), clock="wall"):
    """Markdown table of the median step per row.

    Args:
        samples: `{key: {"wall", "cpu", "overhead"}}` in display order, each
            key a tuple with one string per column of `columns`.
        batch_size: Images per step.
        columns: Headers of the columns naming a row.
        relative_to: `(header, baseline_of)` pairs, one ratio column each:
            `baseline_of(key)` is the key whose median step the row's is
            divided into (`0.50x`: the row takes twice as long; `n/a` when
            that key was not timed).
        clock: `"wall"` or `"cpu"`: the times images/s and the ratios use.

    Returns:
        The table as a string.
    """
    medians = {key: _median(values[clock]) for key, values in samples.items()}
    rate = "images/s (median)" if clock == "wall" else "images per CPU-second (median)"
    header = [*columns, rate, *(label for label, _ in relative_to), "ms/step (median)",
              "CPU ms/step (median)", "per-fit overhead, s (median)"]
    rows = ["| " + " | ".join(header) + " |", "|---" * len(columns) + "|---:" * (
        len(header) - len(columns)) + "|"]
    for key, values in samples.items():
        step_s = medians[key]
        ratios = []
        for _, baseline_of in relative_to:
            baseline = medians.get(baseline_of(key))
            ratios.append(f"{baseline / step_s:.2f}x" if baseline else "n/a")
        overhead = _median(values["overhead"])
        cells = [*key, f"{batch_size / step_s:.1f}", *ratios,
                 f"{_median(values['wall']) * 1e3:.1f}", f"{_median(values['cpu']) * 1e3:.1f}",
                 "n/a" if overhead is None else f"{overhead:.1f}"]
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


def versions():
    """`"keras 3.15.1, jax 0.10.2, ..."` for the frameworks installed."""
    found = []
    for name in ("keras", "tensorflow", "jax", "jaxlib", "torch"):
        try:
            found.append(f"{name} {importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            pass
    return ", ".join(found)


def machine_line(backends=None):
    """One line naming the hardware and software the numbers come from.

    Args:
        backends: The Keras backends timed (default: this process's).
    """
    return (
        f"Machine: {os.cpu_count()} CPUs ({platform.processor() or platform.machine()}); "
        f"Python {platform.python_version()}, {versions()}; Keras backend "
        f"{backends or keras.backend.backend()}; load average {os.getloadavg()[0]:.1f} at the end."
    )


def publish(report, output):
    """Prints `report` and, when `output` is a path, writes it there too."""
    print(f"\n{report}")
    if output:
        path = pathlib.Path(output)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(report)
        print(f"Wrote {path}")
