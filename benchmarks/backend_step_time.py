"""Training-step cost of kerasdistill on the TensorFlow, JAX and PyTorch Keras backends.

    python benchmarks/backend_step_time.py --rounds=2 --steps=4 --output=/tmp/backends.md
    python benchmarks/backend_step_time.py --rounds=1 --steps=1 --warmup=1 --tiny   # smoke

resnet32x4 -> resnet8x4, 100 classes, batch 64, 32x32 random inputs. One table,
measured in one run, of every `(backend, configuration)` entry:

- kerasdistill `Distiller` on each backend: the student alone (`none`, cross-entropy),
  `kd` (`0.1 * CE + 0.9 * KD`, T = 4), `kd,msdcrd` (methods given as that string,
  built with the training labels) and `crd` (`methods.get("crd", data=...,
  num_negatives=16384)`, index batches `({"image": x, "index": i}, y)`);
- Keras's own `keras.distillation.Distiller` (TensorFlow backend): `kd` and
  `kd+feature` (feature MSE on `feat_2`), built by the helpers of
  `keras_distillation_step_time.py` (imported, not copied);
- the PyTorch reference (`torch_reference.py`: RepDistiller's models and `DistillKL`
  in plain PyTorch, `torch.optim.SGD`): the student alone and KD;
- a diagnostic per backend: the teacher's forward pass alone (`predict_on_batch`,
  or the reference teacher under `torch.no_grad()`).

`KERAS_BACKEND` is fixed per process, so each backend runs in a worker subprocess
(this script with `--worker=<backend>`) that builds and warms up its entries, then
answers JSON requests on stdin/stdout; the workers stay alive across rounds. Round
`r` times `--steps` steps of every entry, one entry at a time (the others wait,
idle), the order of the entries reversed every other round. A step is one
`train_on_batch` (its logs read on the host) or one reference step (`loss.item()`),
measured in CPU time of the worker process (`time.process_time()`, all threads),
which on a shared machine varies much less than wall-clock time; wall-clock time is
recorded too. Workers run with `OMP_WAIT_POLICY=PASSIVE`: with OpenMP's default active
wait, PyTorch's idle threads spin and a loaded machine doubled its CPU time per step
(3.9 s against 2.0 s for the reference KD step). Every framework gets 2 threads:
`torch.set_num_threads(2)` (and interop 2), TensorFlow intra-/inter-op 2, XLA's CPU
client (JAX) one thread per core of this 2-core machine.

Compile modes are what a user gets: TensorFlow `jit_compile=False` (a `tf.function`
graph, no XLA, as Keras's "auto" picks on CPU and as the other benchmarks here),
JAX `jit_compile="auto"` (the train step under `jax.jit`), PyTorch `"auto"` (eager:
Keras's torch trainer does not `torch.compile` unless asked).
"""

import argparse
import json
import os
import pathlib
import platform
import statistics
import subprocess
import sys
import time

HERE = pathlib.Path(__file__).resolve().parent
REPO = HERE.parent
BACKENDS = ("tensorflow", "jax", "torch")
THREADS = 2
BATCH, NUM_CLASSES, NUM_TRAIN, IMAGE = 64, 100, 50_000, 32
TEACHER, STUDENT = "resnet32x4", "resnet8x4"
TAG = "@@json "  # prefix of protocol lines on a worker's stdout (libraries print there too)
REFERENCE = "PyTorch reference"
TF_KD = ("tensorflow", "kerasdistill", "kd")
REF_KD = ("torch", REFERENCE, "kd")

# (backend, library, configuration) in display order.
KERASDISTILL_CONFIGS = ("none", "kd", "kd,msdcrd", "crd")
FORWARD = "teacher forward only"


def entries_of(backend):
    """The entries a backend's worker times, as `(backend, library, configuration)`."""
    rows = [(backend, "kerasdistill", c) for c in KERASDISTILL_CONFIGS]
    if backend == "tensorflow":
        rows += [(backend, "keras.distillation", c) for c in ("kd", "kd+feature")]
    if backend == "torch":
        rows += [(backend, REFERENCE, c) for c in ("none", "kd", FORWARD)]
    rows.append((backend, "kerasdistill", FORWARD))
    return rows


def synthetic_batches(count=4, seed=0):
    """`count` random batches `(images NHWC, labels, indices)` and the training labels."""
    import numpy as np

    rng = np.random.default_rng(seed)
    train_labels = rng.integers(0, NUM_CLASSES, NUM_TRAIN).astype("int64")
    indices = rng.choice(NUM_TRAIN, count * BATCH, replace=False).astype("int64")
    batches = []
    for b in range(count):
        idx = indices[b * BATCH:(b + 1) * BATCH]
        x = rng.standard_normal((BATCH, IMAGE, IMAGE, 3)).astype("float32")
        batches.append((x, train_labels[idx], idx))
    return batches, train_labels


# ----------------------------------------------------------------------------- worker side


def _set_threads(backend):
    if backend == "torch":
        import torch

        torch.set_num_threads(THREADS)
        try:
            torch.set_num_interop_threads(THREADS)
        except RuntimeError:  # already set
            pass
    if backend == "tensorflow":
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(THREADS)
        tf.config.threading.set_inter_op_parallelism_threads(THREADS)


class Worker:
    """Builds a backend's entries and times their steps on request."""

    def __init__(self, backend, tiny=False):
        self.backend = backend
        _set_threads(backend)
        import keras

        sys.path.insert(0, str(REPO))
        sys.path.insert(0, str(HERE))
        self.keras = keras
        keras.utils.set_random_seed(0)
        self.batches, self.train_labels = synthetic_batches()
        self.tiny = tiny
        self.steps = {}  # entry -> callable(batch) running one step, host-synchronous
        self.info = {}

    def _models(self):
        from kerasdistill import models

        if self.tiny:
            return tuple(models.get("resnet8", num_classes=NUM_CLASSES) for _ in range(2))
        return tuple(models.get(n, num_classes=NUM_CLASSES) for n in (TEACHER, STUDENT))

    def _kerasdistill(self, teacher, config):
        import keras

        import kerasdistill
        from kerasdistill import methods
        from kerasdistill.training import TorchSGD

        _, student = self._models()
        data = methods.TrainingData(
            train_labels=self.train_labels, steps_per_epoch=NUM_TRAIN // BATCH
        )
        if config == "none":
            method_list, ce_weight = None, 1.0
        elif config == "crd":
            method_list, ce_weight = [methods.get("crd", data=data, num_negatives=16384)], 1.0
        else:
            method_list, ce_weight = [methods.get(n, data=data) for n in config.split(",")], 0.1
        distiller = kerasdistill.Distiller(teacher, student, method_list, ce_weight=ce_weight)
        distiller.compile(
            optimizer=TorchSGD(0.05, momentum=0.9, weight_decay=5e-4),
            metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
            jit_compile=False if self.backend == "tensorflow" else "auto",
        )
        with_index = any(m.uses_sample_indices for m in distiller.methods)
        return distiller, with_index

    def _keras_distillation(self, teacher, config):
        import keras

        import keras_distillation_step_time as kds

        if not kds.FLAGS.is_parsed():
            kds.FLAGS(["backend_step_time"])  # the script's defaults: feat_2, weight 100, no XLA
        _, student = self._models()
        distiller = kds.build_keras(teacher, student, config)
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        kds.compile_distiller(distiller, loss)
        return distiller, False

    def build(self, warmup):
        """Builds every entry and runs `warmup` untimed steps of each; returns seconds per entry."""
        teacher, _ = self._models()
        warm = {}
        for entry in entries_of(self.backend):
            _, library, config = entry
            if library == REFERENCE:
                step = self._reference(config)
            elif config == FORWARD:
                step = self._forward_step(teacher)
            else:
                if library == "kerasdistill":
                    distiller, with_index = self._kerasdistill(teacher, config)
                else:
                    distiller, with_index = self._keras_distillation(teacher, config)
                step = self._train_step(distiller, with_index)
                self.info[json.dumps(entry)] = f"jit_compile={distiller.jit_compile}"
            start = time.perf_counter()
            for i in range(warmup):
                step(self.batches[i % len(self.batches)])
            warm[json.dumps(entry)] = time.perf_counter() - start
            self.steps[entry] = step
        return warm

    @staticmethod
    def _train_step(distiller, with_index):
        def step(batch):
            x, y, idx = batch
            inputs = {"image": x, "index": idx} if with_index else x
            return distiller.train_on_batch(inputs, y, return_dict=True)

        return step

    @staticmethod
    def _forward_step(teacher):
        return lambda batch: teacher.predict_on_batch(batch[0])

    def _reference(self, config):
        import torch

        import torch_reference

        torch.manual_seed(0)
        teacher = torch_reference.build(STUDENT if self.tiny else TEACHER)
        student = torch_reference.build(STUDENT)
        for name, model in ((TEACHER, teacher), (STUDENT, student)):
            if not self.tiny:
                assert torch_reference.num_params(model) == torch_reference.PARAMS[name], name
        runner = torch_reference.ReferenceStep(None if config == "none" else teacher, student)
        torch_batches = {}

        def to_torch(batch):
            key = id(batch[0])
            if key not in torch_batches:  # NCHW once, as a DataLoader would hand it over
                x, y, _ = batch
                torch_batches[key] = (
                    torch.from_numpy(x.transpose(0, 3, 1, 2).copy()),
                    torch.from_numpy(y),
                )
            return torch_batches[key]

        if config == FORWARD:
            runner.teacher = teacher.eval()
            return lambda batch: runner.teacher_forward(to_torch(batch)[0])
        return lambda batch: runner(*to_torch(batch))

    def time(self, entry, steps, offset):
        """CPU and wall seconds of `steps` steps of `entry`."""
        step = self.steps[entry]
        cpu, wall = [], []
        for i in range(steps):
            batch = self.batches[(offset + i) % len(self.batches)]
            c0, w0 = time.process_time(), time.perf_counter()
            step(batch)
            cpu.append(time.process_time() - c0)
            wall.append(time.perf_counter() - w0)
        return {"cpu": cpu, "wall": wall}

    def profile(self, entry, steps):
        """Top ops of `steps` steps of a PyTorch-backend entry (torch.profiler, self CPU time)."""
        import torch

        step = self.steps[entry]
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            for i in range(steps):
                step(self.batches[i % len(self.batches)])
        averages = prof.key_averages()
        return {
            "table": averages.table(sort_by="self_cpu_time_total", row_limit=15),
            "ops": sum(e.count for e in averages) / steps,
        }


def worker_main(backend, tiny):
    out = os.fdopen(os.dup(1), "w", buffering=1)  # protocol channel
    os.dup2(2, 1)  # everything else the libraries print goes to stderr
    worker = Worker(backend, tiny)

    def reply(obj):
        out.write(TAG + json.dumps(obj) + "\n")

    reply({"ready": True})
    for line in sys.stdin:
        request = json.loads(line)
        cmd = request["cmd"]
        if cmd == "build":
            reply({"warmup_s": worker.build(request["warmup"]), "info": worker.info})
        elif cmd == "time":
            reply(worker.time(tuple(request["entry"]), request["steps"], request.get("offset", 0)))
        elif cmd == "profile":
            reply(worker.profile(tuple(request["entry"]), request["steps"]))
        elif cmd == "quit":
            reply({"bye": True})
            return


# ----------------------------------------------------------------------------- driver side


class WorkerProcess:
    """A worker subprocess for one backend, spoken to in JSON lines."""

    def __init__(self, backend, tiny):
        # OMP_WAIT_POLICY=PASSIVE: process CPU time counts OpenMP threads spin-waiting for
        # each other, which on a loaded machine doubled PyTorch's CPU time per step.
        env = dict(
            os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="2", OMP_WAIT_POLICY="PASSIVE"
        )
        args = [sys.executable, str(pathlib.Path(__file__).resolve()), f"--worker={backend}"]
        if tiny:
            args.append("--tiny")
        self.backend = backend
        self.log = open(f"/tmp/backend_step_time_{backend}_{os.getpid()}.log", "w")
        self.proc = subprocess.Popen(
            args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log, text=True, env=env
        )
        self.read()

    def send(self, **request):
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()

    def read(self):
        for line in self.proc.stdout:
            if line.startswith(TAG):
                return json.loads(line[len(TAG):])
        raise RuntimeError(f"{self.backend} worker exited; see {self.log.name}")

    def request(self, **request):
        self.send(**request)
        return self.read()


def ratio(base, value):
    return f"{base / value:.2f}x" if base and value else "n/a"


def table(cpu, wall):
    """Markdown table: median CPU ms/step, images/s (CPU), ratios, wall ms/step."""
    med = {e: statistics.median(v) for e, v in cpu.items()}
    wmed = {e: statistics.median(v) for e, v in wall.items()}
    rows = [
        "| backend | library | configuration | CPU ms/step (median) | images per CPU-second "
        "| relative to PyTorch reference KD | relative to TensorFlow kerasdistill KD "
        "| wall ms/step (median) |",
        "|---|---|---|---:|---:|---:|---:|---:|",
    ]
    for entry, value in med.items():
        rows.append(
            f"| {' | '.join(entry)} | {value * 1e3:.0f} | {BATCH / value:.1f} "
            f"| {ratio(med.get(REF_KD), value)} | {ratio(med.get(TF_KD), value)} "
            f"| {wmed[entry] * 1e3:.0f} |"
        )
    return "\n".join(rows)


def versions():
    import importlib.metadata as md

    names = ("keras", "tensorflow", "jax", "jaxlib", "torch")
    found = []
    for name in names:
        try:
            found.append(f"{name} {md.version(name)}")
        except md.PackageNotFoundError:
            pass
    return ", ".join(found)


def main(args):
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    workers = {b: WorkerProcess(b, args.tiny) for b in backends}
    # Warm-up (tracing, compilation) in parallel: untimed.
    for w in workers.values():
        w.send(cmd="build", warmup=args.warmup)
    info = {}
    for b, w in workers.items():
        reply = w.read()
        info.update(reply["info"])
        for entry, seconds in reply["warmup_s"].items():
            name = " / ".join(json.loads(entry))
            print(f"built and warmed up {name}: {seconds:.1f} s", flush=True)
    entries = [e for b in backends for e in entries_of(b)]
    cpu = {e: [] for e in entries}
    wall = {e: [] for e in entries}
    round_lines = []
    for r in range(args.rounds):
        order = entries if r % 2 == 0 else list(reversed(entries))
        for entry in order:
            reply = workers[entry[0]].request(cmd="time", entry=entry, steps=args.steps, offset=r)
            cpu[entry] += reply["cpu"]
            wall[entry] += reply["wall"]
        med = {e: statistics.median(cpu[e][-args.steps:]) for e in entries}
        line = f"round {r + 1} ({'forward' if r % 2 == 0 else 'reversed'} order, load average " \
               f"{os.getloadavg()[0]:.1f}): CPU ms/step " + ", ".join(
                   f"{'/'.join(e)} {med[e] * 1e3:.0f}" for e in entries)
        round_lines.append(line)
        print(line, flush=True)
    profiles = {}
    if args.profile and "torch" in workers:
        for entry in (("torch", "kerasdistill", "kd"), REF_KD):
            profiles[entry] = workers["torch"].request(cmd="profile", entry=entry, steps=1)
    for w in workers.values():
        w.request(cmd="quit")
    finished = time.strftime("%H:%M UTC", time.gmtime())

    header = (
        f"Measured {started} - {finished}. {TEACHER} -> {STUDENT}, {NUM_CLASSES} classes, batch "
        f"{BATCH}, {IMAGE}x{IMAGE} random inputs, {args.steps} timed steps x {args.rounds} rounds "
        f"per entry (median; order reversed every other round), {args.warmup} warm-up steps per "
        f"entry, {THREADS} threads per framework.\nMachine: {os.cpu_count()} CPUs "
        f"({platform.machine()}); Python {platform.python_version()}, {versions()}.\n"
        f"Compile modes: " + "; ".join(f"{'/'.join(json.loads(e))}: {v}" for e, v in info.items())
    )
    report = f"{header}\n\n{table(cpu, wall)}\n\n" + "\n".join(f"- {l}" for l in round_lines) + "\n"
    for entry, prof in profiles.items():
        report += (
            f"\ntorch.profiler, one step of {'/'.join(entry)} ({prof['ops']:.0f} op calls):"
            f"\n\n```\n{prof['table']}\n```\n"
        )
    print("\n" + report)
    if args.output:
        pathlib.Path(args.output).write_text(report)
        print(f"Wrote {args.output}")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backends", default=",".join(BACKENDS), help="Comma-separated backends.")
    parser.add_argument("--rounds", type=int, default=2, help="Interleaved timed rounds.")
    parser.add_argument("--steps", type=int, default=4, help="Timed steps per entry and round.")
    parser.add_argument("--warmup", type=int, default=2, help="Untimed steps per entry first.")
    parser.add_argument("--profile", action="store_true", help="Also torch.profiler one KD step.")
    parser.add_argument(
        "--tiny", action="store_true",
        help="Smoke test: resnet8 -> resnet8 (the reference: resnet8x4 -> resnet8x4).",
    )
    parser.add_argument("--output", default="", help="Also write the report here.")
    parser.add_argument("--worker", default="", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


if __name__ == "__main__":
    ARGS = parse_args()
    if ARGS.worker:
        worker_main(ARGS.worker, ARGS.tiny)
    else:
        main(ARGS)
