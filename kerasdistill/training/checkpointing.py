"""Resumable training state: atomic checkpoints every N steps, every epoch and on SIGTERM.

A checkpoint is one `.npz` file holding the values of the model's variables
(a Distiller's teacher excluded: it is frozen and reloaded from its own file;
method state such as CRD memory banks and random seed states included) and
the optimizer's, each stored under its Keras path (`conv1/kernel`), with the
model's, its methods' and the optimizer's own names replaced by their role
(`model/training_steps`, `methods/2/memory_v1`, `optimizer/inner/
conv1_kernel_momentum`; a path that repeats gets `#2`, `#3` in order), and a
JSON record of the position in training
(`step`, `epoch`, `batch` within the epoch) plus any metadata the caller adds
(the run's configuration). It is written to a temporary file and renamed over
the previous one, so a process killed while saving leaves the previous
checkpoint intact.
"""

import io
import json
import os
import pathlib
import signal

import keras
import numpy as np

_META_KEY = "__meta__"


def _owner_prefixes(model):
    """`{name: stable prefix}` of the objects whose own names Keras numbers per process.

    A variable's path starts with the name of the object that created it;
    the model, its methods and its optimizers are named `distiller`,
    `distiller_1`, ... in the order they are made, so their prefixes are
    replaced by their role.
    """
    prefixes = {model.name: "model"}
    for index, method in enumerate(getattr(model, "methods", [])):
        prefixes[method.name] = f"methods/{index}"
    optimizer = model.optimizer
    prefixes[optimizer.name] = "optimizer"
    inner = getattr(optimizer, "inner_optimizer", None)
    if inner is not None:
        prefixes[inner.name] = "optimizer/inner"
    return prefixes


def _state_variables(model):
    """`{name: variable}` of the model's state a checkpoint holds, then the optimizer's."""
    frozen = set()
    teacher = getattr(model, "teacher", None)
    if teacher is not None:
        frozen = {id(v) for v in teacher.variables}
    variables = [v for v in model.variables if id(v) not in frozen]
    prefixes = _owner_prefixes(model)
    named, seen = {}, {}
    inner = getattr(model.optimizer, "inner_optimizer", None)
    for variable in variables + list(model.optimizer.variables):
        owner, _, rest = variable.path.partition("/")
        if inner is not None and owner == model.optimizer.name and rest.startswith(inner.name + "/"):
            # The wrapped optimizer's slots are created inside the wrapper's name scope
            # when it builds them, outside it when it is built directly (at restore).
            owner, _, rest = rest.partition("/")
        path = f"{prefixes[owner]}/{rest}" if owner in prefixes and rest else variable.path
        seen[path] = seen.get(path, 0) + 1
        named[path + (f"#{seen[path]}" if seen[path] > 1 else "")] = variable
    return named


def _listed(names, most=5):
    names = sorted(names)
    return ", ".join(names[:most]) + (f" and {len(names) - most} more" if len(names) > most else "")


def save(path, model, position, metadata=None):
    """Writes the training state of `model` to `path` atomically.

    Args:
        path: The checkpoint file (`.npz`).
        model: A compiled `keras.Model` whose optimizer is built.
        position: Dict with at least `step`, `epoch` and `batch`.
        metadata: More JSON-serializable facts to store (the configuration).
    """
    path = pathlib.Path(path)
    meta = {**(metadata or {}), **position}
    arrays = {name: keras.ops.convert_to_numpy(v) for name, v in _state_variables(model).items()}
    arrays[_META_KEY] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    temporary = path.with_name(path.name + ".tmp")
    with open(temporary, "wb") as file:
        file.write(buffer.getvalue())
        file.flush()
        os.fsync(file.fileno())
    os.replace(temporary, path)


def read_metadata(path):
    """Returns the JSON record (position and metadata) of the checkpoint at `path`."""
    with np.load(path) as archive:
        return json.loads(archive[_META_KEY].tobytes().decode())


def restore(path, model):
    """Loads the checkpoint at `path` into `model` and its optimizer.

    Args:
        path: A file written by `save`.
        model: The same architecture, compiled with the same optimizer.

    Returns:
        The checkpoint's JSON record.

    Raises:
        ValueError: When the checkpoint's variables do not match the model's,
            naming the variables missing, unexpected or of another shape.
    """
    model.optimizer.build(model.trainable_variables)
    variables = _state_variables(model)
    with np.load(path) as archive:
        values = {name: archive[name] for name in archive.files if name != _META_KEY}
        meta = json.loads(archive[_META_KEY].tobytes().decode())
    problems = []
    if set(variables) - set(values):
        problems.append(f"missing from it: {_listed(set(variables) - set(values))}")
    if set(values) - set(variables):
        problems.append(f"not in this model: {_listed(set(values) - set(variables))}")
    reshaped = [
        f"{name} {values[name].shape} vs {tuple(v.shape)}"
        for name, v in variables.items()
        if name in values and values[name].shape != tuple(v.shape)
    ]
    if reshaped:
        problems.append(f"of another shape: {_listed(reshaped)}")
    if problems:
        raise ValueError(
            f"Checkpoint {path} does not match this model (different model, method or "
            f"optimizer); variables {'; '.join(problems)}."
        )
    for name, variable in variables.items():
        variable.assign(values[name])
    return meta


class Checkpointer(keras.callbacks.Callback):
    """Saves the training state every `every_steps` steps, at each epoch end and on SIGTERM.

    The position saved is the optimizer's own step counter (`iterations`,
    restored with the optimizer on a resume; a skipped non-finite step is not
    counted, and training stops at one). On
    SIGTERM the state is saved after the current step and training stops;
    `interrupted` is then True. Use as a context manager around `fit` calls
    so that the SIGTERM handler is installed and removed.

    Args:
        path: The checkpoint file.
        steps_per_epoch: Steps in one epoch.
        every_steps: Save every this many steps (0: only at epoch ends).
        metadata: JSON-serializable facts stored with every checkpoint.
    """

    def __init__(self, path, steps_per_epoch, every_steps=0, metadata=None):
        super().__init__()
        self.path = pathlib.Path(path)
        self.steps_per_epoch = int(steps_per_epoch)
        self.every_steps = int(every_steps)
        self.metadata = dict(metadata or {})
        self.interrupted = False
        self._sigterm = False
        self._previous_handler = None

    def __enter__(self):
        self._previous_handler = signal.signal(signal.SIGTERM, self._on_sigterm)
        return self

    def __exit__(self, *exc_info):
        signal.signal(signal.SIGTERM, self._previous_handler)
        return False

    def _on_sigterm(self, signum, frame):
        del signum, frame
        self._sigterm = True

    @property
    def step(self):
        """Training steps taken so far (the optimizer's `iterations`)."""
        return int(keras.ops.convert_to_numpy(self.model.optimizer.iterations))

    def position(self):
        """The current position: global `step`, `epoch` and `batch` within it."""
        step = self.step
        epoch, batch = divmod(step, self.steps_per_epoch)
        return {"step": step, "epoch": epoch, "batch": batch}

    def save(self):
        """Writes the current training state."""
        save(self.path, self.model, self.position(), self.metadata)

    def on_train_batch_end(self, batch, logs=None):
        step = self.step
        end_of_epoch = step % self.steps_per_epoch == 0  # Saved by on_epoch_end.
        if self._sigterm and not end_of_epoch:
            self.save()
            self.interrupted = True
            self.model.stop_training = True
        elif self.every_steps and step % self.every_steps == 0 and not end_of_epoch:
            self.save()

    def on_epoch_end(self, epoch, logs=None):
        if self.step % self.steps_per_epoch == 0:
            self.save()
            if self._sigterm:
                self.interrupted = True
                self.model.stop_training = True
