"""Training loops with the data on the accelerator, on JAX and PyTorch, without TensorFlow.

Shared by `benchmarks/gpu_throughput.py` and `benchmarks/gpu_study.py` (not a
script). Import it after `KERAS_BACKEND` is set: the backend is Keras's, fixed
per process.

`DeviceTrainer` runs one compiled Keras model (a `Distiller`, or a plain
classifier compiled with a loss) on a training set held on the device as
uint8 arrays. Each step:

1. gathers the batch by index from the device-resident images and labels;
2. augments it as the reference CIFAR recipe does, per example: zero-pad 4,
   random 32x32 crop, random horizontal flip, then normalization
   (`device_augment.py`, in `keras.ops`);
3. runs Keras's own `train_step` of the model.

On JAX the three are one `jax.jit`-compiled function whose model state is
threaded through (and donated); on PyTorch they run eagerly on the tensors
of the default device (CUDA when present), as Keras's own PyTorch `fit` does
without `jit_compile`. The host only draws a shuffled index vector per epoch
(`BatchIndices`) and passes a slice of it each step.

With `host_learning_rate=True` the learning rate is an input of every step
instead of a schedule inside the optimizer (compile the model with a float
learning rate; the step overrides that variable): the length of the run, and
so its step-decay schedule, can then be decided after the first steps were
timed. `step_decay_rate` evaluates `kerasdistill.training.step_decay`'s
schedule on the host exactly as the optimizer would.
"""

import bisect
import os
import platform
import sys

import time

import keras
import numpy as np
from keras import ops

import kerasdistill
from kerasdistill import methods
from kerasdistill.batch_keys import IMAGE_KEY, INDEX_KEY
from kerasdistill.training import TorchSGD

import device_augment

# Per-channel statistics of CIFAR-100's training images, as in
# kerasdistill/data/datasets.py (CIFAR_STATS), which imports TensorFlow.
CIFAR100_MEAN = (0.5071, 0.4865, 0.4409)
CIFAR100_STD = (0.2673, 0.2564, 0.2762)
IMAGE_SHAPE = (32, 32, 3)
PADDING = 4
GIB = 1024**3


def parse_list(spec, flag, convert=str):
    """Splits a comma-separated flag value; raises ValueError on an empty or repeated list."""
    items = [convert(s.strip()) for s in spec.split(",") if s.strip()]
    if not items or len(set(items)) != len(items):
        raise ValueError(f"--{flag} must list distinct values, got {spec!r}.")
    return items


def parse_method_entries(spec, flag="methods"):
    """Splits `"kd,kd+msdcrd"` into `[("kd", ["kd"]), ("kd+msdcrd", ["kd", "msdcrd"])]`.

    Raises:
        ValueError: On an empty or repeated list or an unknown method name.
    """
    parsed = []
    for entry in parse_list(spec, flag):
        names = [n.strip() for n in entry.split("+")]
        for name in names:
            if name not in methods.available():
                raise ValueError(
                    f"Unknown method {name!r} in --{flag} entry {entry!r}; "
                    f"available: {', '.join(methods.available())}."
                )
        parsed.append((entry, names))
    return parsed


class BatchIndices:
    """Shuffled index vectors, one epoch after another, dropping the last partial batch.

    Args:
        num_examples: Training-set size, at least `batch_size`.
        batch_size: Indices per batch.
        seed: Seed of the shuffles.
    """

    def __init__(self, num_examples, batch_size, seed):
        if batch_size > num_examples:
            raise ValueError(
                f"Batch size {batch_size} exceeds the {num_examples} training images."
            )
        self._rng = np.random.default_rng(seed)
        self._num_examples = num_examples
        self._batch_size = batch_size
        self._order = np.empty(0, "int32")

    def next(self):
        """Returns the next int32 index vector of `batch_size` indices."""
        if len(self._order) < self._batch_size:
            self._order = self._rng.permutation(self._num_examples).astype("int32")
        batch, self._order = self._order[: self._batch_size], self._order[self._batch_size :]
        return batch


def build_distiller(teacher, student, method_specs, train_labels, steps_per_epoch,
                    learning_rate, ce_weight=1.0, momentum=0.9, weight_decay=5e-4):
    """A compiled Distiller with its optimizer built, as `experiments/runner.py` builds one.

    Args:
        teacher: The teacher model (frozen by the Distiller).
        student: The student model.
        method_specs: `[(method name, constructor kwargs)]`, built by
            `methods.get` with the `TrainingData` of `train_labels` and
            `steps_per_epoch`.
        train_labels: The training labels in dataset-index order (NumPy).
        steps_per_epoch: Optimizer steps per epoch.
        learning_rate: A float (a variable the step may override, see
            `DeviceTrainer`) or a schedule (`step_decay`).
        ce_weight: Weight of the student's cross-entropy.
        momentum: `TorchSGD` momentum.
        weight_decay: `TorchSGD`'s coupled weight decay.

    Returns:
        The Distiller, compiled with `TorchSGD` and no metric beyond the loss
        terms.
    """
    training_data = methods.TrainingData(
        train_labels=train_labels, steps_per_epoch=steps_per_epoch
    )
    distiller = kerasdistill.Distiller(
        teacher,
        student,
        [methods.get(name, data=training_data, **kwargs) for name, kwargs in method_specs],
        ce_weight=ce_weight,
    )
    distiller.compile(
        optimizer=TorchSGD(learning_rate, momentum=momentum, weight_decay=weight_decay)
    )
    distiller.optimizer.build(distiller.trainable_variables)
    return distiller


def time_steps(trainer, indices, steps, warmup_steps, learning_rate=None):
    """Runs `warmup_steps` untimed steps, then `steps` timed ones.

    The first step, which traces and compiles on JAX, is timed on its own.
    The clocks stop once the device has finished the queued work.

    Args:
        trainer: A `DeviceTrainer`.
        indices: The `BatchIndices` to draw batches from.
        steps: Timed steps.
        warmup_steps: Untimed steps first, at least 1.
        learning_rate: The learning rate of every step, with `host_learning_rate`.

    Returns:
        `{"first_step_s", "seconds", "mean_loss"}`: the first step's time,
        the time of the timed steps and the mean loss log of all steps.
    """
    start = time.perf_counter()
    trainer.step(indices.next(), learning_rate)
    trainer.wait()
    first_step_s = time.perf_counter() - start
    for _ in range(warmup_steps - 1):
        trainer.step(indices.next(), learning_rate)
    trainer.wait()
    start = time.perf_counter()
    for _ in range(steps):
        trainer.step(indices.next(), learning_rate)
    loss = trainer.wait()
    return {
        "first_step_s": first_step_s,
        "seconds": time.perf_counter() - start,
        "mean_loss": loss,
    }


def step_decay_rate(schedule, step):
    """The learning rate of a `PiecewiseConstantDecay` (`step_decay`'s) at a 0-based step.

    The same value the optimizer reads inside its step: value `i` while
    `step <= boundaries[i]`.
    """
    return float(schedule.values[bisect.bisect_left(schedule.boundaries, step)])


def uses_sample_indices(model):
    """Whether a model is a Distiller with a method that reads dataset indices (CRD)."""
    return any(m.uses_sample_indices for m in getattr(model, "methods", ()))


def to_device(array):
    """A NumPy array as a tensor of the backend's default device (the GPU when there is one)."""
    return ops.convert_to_tensor(array)


def model_state(model):
    """The `(trainable, non_trainable, optimizer, metrics)` values of Keras's JAX `train_step`."""
    return tuple(
        [v.value for v in variables]
        for variables in (
            model.trainable_variables,
            model.non_trainable_variables,
            model.optimizer.variables,
            model.metrics_variables,
        )
    )


def _learning_rate_position(optimizer):
    """Index of the optimizer's learning-rate variable in `optimizer.variables`."""
    variable = optimizer.learning_rate  # A LossScaleOptimizer answers for its inner one.
    if not isinstance(variable, keras.Variable):
        raise ValueError(
            "host_learning_rate needs an optimizer compiled with a float learning rate, "
            f"got {type(variable).__name__}."
        )
    for position, candidate in enumerate(optimizer.variables):
        if candidate is variable:
            return position
    raise ValueError("The optimizer's learning-rate variable is not among its variables.")


class DeviceTrainer:
    """Trains a compiled Keras model on a training set held on the device.

    Args:
        model: A compiled model whose `train_step` takes `(x, y)`: a
            `Distiller` (`x` a dict of images and dataset indices when one of
            its methods reads indices) or a classifier compiled with a loss.
        images: uint8 images `(N, 32, 32, 3)` on the device (`to_device`).
        labels: int32 labels `(N,)` on the device.
        mean: Per-channel mean of [0, 1] pixels (normalization).
        std: Per-channel standard deviation of [0, 1] pixels.
        seed: Seed of the augmentation.
        host_learning_rate: Take the learning rate as an argument of `step`.
    """

    def __init__(self, model, images, labels, *, mean, std, seed, host_learning_rate=False):
        self.model = model
        self.backend = keras.backend.backend()
        if self.backend not in ("jax", "torch"):
            raise ValueError(f"DeviceTrainer runs on JAX or PyTorch, not {self.backend!r}.")
        model.optimizer.build(model.trainable_variables)
        self._images, self._labels = images, labels
        self._mean, self._std = tuple(mean), tuple(std)
        self._with_index = uses_sample_indices(model)
        self._seed_generator = keras.random.SeedGenerator(seed)
        self._host_lr = host_learning_rate
        self._lr = None
        self._loss = None
        if self.backend == "jax":
            lr_position = _learning_rate_position(model.optimizer) if host_learning_rate else None
            self._step = self._jax_step(lr_position)
            self._state = model_state(model)
            self._seed_state = self._seed_generator.state.value
            self._lr_values = {}

    def _batch(self, images, labels, indices):
        """The augmented, normalized batch `(x, y)` of the dataset indices `indices`."""
        batch = ops.take(images, indices, axis=0)
        batch = device_augment.random_crop_flip(batch, self._seed_generator, padding=PADDING)
        batch = device_augment.normalize(batch, self._mean, self._std)
        x = {IMAGE_KEY: batch, INDEX_KEY: indices} if self._with_index else batch
        return x, ops.take(labels, indices, axis=0)

    def _jax_step(self, lr_position):
        import jax

        model, seed_generator = self.model, self._seed_generator

        def step(state, seed_state, images, labels, indices, learning_rate):
            with keras.StatelessScope(
                state_mapping=[(seed_generator.state, seed_state)]
            ) as scope:
                x, y = self._batch(images, labels, indices)
                seed_state = scope.get_current_value(seed_generator.state)
            if lr_position is not None:
                trainable, non_trainable, optimizer_values, metric_values = state
                optimizer_values = list(optimizer_values)
                optimizer_values[lr_position] = learning_rate.astype(
                    optimizer_values[lr_position].dtype
                )
                state = (trainable, non_trainable, optimizer_values, metric_values)
            logs, state = model.train_step(state, (x, y))
            return logs["loss"], state, seed_state

        jitted = jax.jit(step, donate_argnums=(0, 1))

        def run(indices, learning_rate):
            self._loss, self._state, self._seed_state = jitted(
                self._state, self._seed_state, self._images, self._labels, indices, learning_rate
            )

        return run

    def step(self, indices, learning_rate=None):
        """Queues one training step on the batch of dataset indices `indices` (int32 NumPy).

        Args:
            indices: The batch's dataset indices.
            learning_rate: The step's learning rate (with `host_learning_rate`).
        """
        if self._host_lr == (learning_rate is None):
            raise ValueError(
                "Pass learning_rate to every step with host_learning_rate=True, and never without."
            )
        if self.backend == "jax":
            lr = None
            if learning_rate is not None:
                lr = self._lr_values.get(learning_rate)
                if lr is None:
                    lr = self._lr_values[learning_rate] = np.float32(learning_rate)
            self._step(indices, lr)
            return
        if learning_rate is not None and learning_rate != self._lr:
            self.model.optimizer.learning_rate = learning_rate
            self._lr = learning_rate
        x, y = self._batch(self._images, self._labels, ops.convert_to_tensor(indices))
        self._loss = self.model.train_step((x, y))["loss"]

    def wait(self):
        """Blocks until every queued step has run; returns the loss log of the last one.

        The loss log is Keras's `loss` metric: the mean total loss since the
        metrics were last reset. Raises `FloatingPointError` if it is not finite.
        """
        if self.backend == "jax":
            import jax

            jax.block_until_ready((self._loss, self._state, self._seed_state))
        else:
            import torch

            if torch.cuda.is_available():
                torch.cuda.synchronize()
        loss = float(self._loss)
        if not np.isfinite(loss):
            raise FloatingPointError(f"The mean training loss is {loss}.")
        return loss

    def reset_metrics(self):
        """Restarts the mean of the `loss` log (and the loss-term logs)."""
        if self.backend == "jax":
            trainable, non_trainable, optimizer_values, metric_values = self._state
            metric_values = [ops.zeros_like(v) for v in metric_values]
            self._state = (trainable, non_trainable, optimizer_values, metric_values)
        else:
            for metric in self.model.metrics:
                metric.reset_state()

    def finish(self):
        """Writes the trained state back into the model's variables (JAX); call once, last."""
        if self.backend != "jax":
            return
        self.wait()
        groups = (
            self.model.trainable_variables,
            self.model.non_trainable_variables,
            self.model.optimizer.variables,
            self.model.metrics_variables,
        )
        for variables, values in zip(groups, self._state):
            for variable, value in zip(variables, values):
                variable.assign(value)
        self._state = None


class Evaluator:
    """Top-1 accuracy of classifiers on a test set held on the host as uint8 images.

    On JAX, one inference function is compiled per architecture and reused for
    every model of that architecture (their variables are passed as arguments);
    on PyTorch the models run eagerly under `torch.no_grad`.

    Args:
        images: uint8 test images `(N, 32, 32, 3)` (NumPy).
        labels: Integer labels `(N,)` (NumPy).
        mean: Per-channel mean of [0, 1] pixels.
        std: Per-channel standard deviation of [0, 1] pixels.
        batch_size: Images per forward pass; the last batch is padded.
    """

    def __init__(self, images, labels, *, mean, std, batch_size=1000):
        self._labels = np.asarray(labels).reshape(-1)
        batch_size = min(batch_size, len(self._labels))
        padded = -len(images) % batch_size
        if padded:
            images = np.concatenate([images, np.zeros((padded, *images.shape[1:]), images.dtype)])
        self._batches = [
            to_device(images[i : i + batch_size]) for i in range(0, len(images), batch_size)
        ]
        self._mean, self._std = tuple(mean), tuple(std)
        self._compiled = {}

    def _predict_fn(self, model, architecture):
        import jax

        key = (architecture, tuple(
            (tuple(v.shape), str(v.dtype))
            for v in model.trainable_variables + model.non_trainable_variables
        ))
        if key not in self._compiled:
            template, mean, std = model, self._mean, self._std

            def predict(trainable, non_trainable, images):
                x = device_augment.normalize(images, mean, std)
                logits, _ = template.stateless_call(trainable, non_trainable, x, training=False)
                return ops.argmax(logits, axis=-1)

            self._compiled[key] = jax.jit(predict)
        return self._compiled[key]

    def accuracy(self, model, architecture):
        """The model's top-1 accuracy on the test set.

        Args:
            model: A classifier returning logits.
            architecture: Its zoo name; on JAX, models of one name share a
                compiled function.
        """
        predictions = []
        if keras.backend.backend() == "jax":
            predict = self._predict_fn(model, architecture)
            trainable = [v.value for v in model.trainable_variables]
            non_trainable = [v.value for v in model.non_trainable_variables]
            for batch in self._batches:
                predictions.append(np.asarray(predict(trainable, non_trainable, batch)))
        else:
            import torch

            with torch.no_grad():
                for batch in self._batches:
                    x = device_augment.normalize(batch, self._mean, self._std)
                    logits = model(x, training=False)
                    predictions.append(ops.convert_to_numpy(ops.argmax(logits, axis=-1)))
        predictions = np.concatenate(predictions)[: len(self._labels)]
        return float(np.mean(predictions == self._labels))


def peak_memory_gib(reset=False):
    """The device's peak allocated memory in GiB, or None where the backend reports none (CPU).

    JAX: `peak_bytes_in_use`, the process's peak so far (it cannot be reset).
    PyTorch: `torch.cuda.max_memory_allocated()` since the last `reset=True` call.
    """
    if keras.backend.backend() == "jax":
        import jax

        stats = jax.devices()[0].memory_stats()
        if not stats or "peak_bytes_in_use" not in stats:
            return None
        return stats["peak_bytes_in_use"] / GIB
    import torch

    if not torch.cuda.is_available():
        return None
    peak = torch.cuda.max_memory_allocated() / GIB
    if reset:
        torch.cuda.reset_peak_memory_stats()
    return peak


def machine_info():
    """The device and software the numbers come from, and whether TensorFlow was imported so far."""
    backend = keras.backend.backend()
    info = {"python": platform.python_version(), "keras": keras.__version__, "backend": backend}
    if backend == "jax":
        import jax

        device = jax.devices()[0]
        info.update(
            device=f"{device.platform}: {device.device_kind}",
            device_count=jax.device_count(),
            jax=jax.__version__,
        )
    else:
        import torch

        cuda = torch.cuda.is_available()
        info.update(
            device=f"cuda: {torch.cuda.get_device_name(0)}" if cuda else "cpu",
            device_count=torch.cuda.device_count() if cuda else 1,
            torch=torch.__version__,
        )
    info["cpus"] = os.cpu_count()
    info["tensorflow_imported"] = sys.modules.get("tensorflow") is not None
    return info
