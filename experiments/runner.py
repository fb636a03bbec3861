"""One training run (teacher, student alone, or distillation), shared by the scripts.

A run writes to its output directory:

    backup/            resumable state (weights, optimizer, epoch), removed once saved
    history.csv        one row per epoch
    model.keras        the trained model (the student in distill mode)
    saved_model/       TensorFlow SavedModel of it: float32 [0, 255] images -> logits
    metrics.json       test accuracy, epochs, throughput and the configuration

An interrupted run restarts from its last finished epoch when started again
with the same output directory.
"""

import dataclasses
import json
import os
import pathlib
import shutil
import time

import keras

import kerasdistill
from kerasdistill import data, methods, models
from kerasdistill.training import TorchSGD, export_saved_model, step_decay

MODES = ("teacher", "student", "distill")


@dataclasses.dataclass
class RunConfig:
    """Everything one run needs; the absl flags map onto these fields one to one."""

    mode: str = "distill"
    teacher: str = "resnet32x4"
    student: str = "resnet8x4"
    method: str = "kd"
    method_kwargs: dict = dataclasses.field(default_factory=dict)
    ce_weight: float = 1.0
    teacher_weights: str = ""
    dataset: str = "cifar100"
    data_dir: str = ""
    download: bool = False
    epochs: int = 240
    steps_per_epoch: int = 0
    batch_size: int = 64
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    seed: int = 0
    output_dir: str = "runs/default"
    verbose: int = 2

    def validate(self):
        """Raises ValueError naming the first bad field."""
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}.")
        for name in ("teacher", "student"):
            if self.mode in (name, "distill") and getattr(self, name) not in models.available():
                raise ValueError(
                    f"Unknown {name} model {getattr(self, name)!r}; "
                    f"available: {', '.join(models.available())}."
                )
        if self.mode == "distill":
            for name in self.method_names():
                if name not in methods.available():
                    raise ValueError(
                        f"Unknown method {name!r}; available: {', '.join(methods.available())}."
                    )
            if not self.teacher_weights:
                raise ValueError("mode=distill needs --teacher_weights (a trained teacher).")
            if not pathlib.Path(self.teacher_weights).exists():
                raise ValueError(f"--teacher_weights file {self.teacher_weights!r} does not exist.")
        for name in ("epochs", "batch_size"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}.")
        if self.steps_per_epoch < 0:
            raise ValueError(f"steps_per_epoch must be >= 0, got {self.steps_per_epoch}.")

    def method_names(self):
        """The comma-separated `method` field as a list (`"kd,msdcrd"`)."""
        return [m.strip() for m in self.method.split(",") if m.strip()]


def load_teacher(name, weights, num_classes):
    """Builds zoo model `name` and loads `.keras`, `.weights.h5` or PyTorch `.pth` weights."""
    if weights.endswith(".pth"):
        return models.from_torch_checkpoint(name, weights, num_classes=num_classes)
    if weights.endswith(".keras"):
        return keras.saving.load_model(weights)
    model = models.get(name, num_classes=num_classes)
    model.load_weights(weights)
    return model


def build_methods(config, dataset, steps_per_epoch):
    """Instantiates the configured methods, giving each what it needs of the data."""
    built = []
    for name in config.method_names():
        kwargs = dict(config.method_kwargs.get(name, {}))
        cls = methods.method_class(name)
        if cls.uses_sample_indices:
            kwargs.setdefault("train_labels", dataset.train_labels())
        if "warmup_epochs" in kwargs:
            kwargs["warmup_steps"] = int(kwargs.pop("warmup_epochs") * steps_per_epoch)
        built.append(cls(**kwargs))
    return built


def _accuracy(model, eval_ds):
    model.compile(
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
    )
    return float(model.evaluate(eval_ds, verbose=0, return_dict=True)["accuracy"])


def run(config, extra_callbacks=()):
    """Trains, evaluates and exports one model as `config` says.

    Args:
        config: A `RunConfig`.
        extra_callbacks: More `keras.callbacks.Callback`s for `fit`.

    Returns:
        The metrics dict also written to `metrics.json`.
    """
    config.validate()
    keras.utils.set_random_seed(config.seed)
    out = pathlib.Path(config.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    dataset = data.load(config.dataset, data_dir=config.data_dir or None, download=config.download)
    steps_per_epoch = dataset.num_train // config.batch_size
    if steps_per_epoch == 0:
        raise ValueError(
            f"The training split of {dataset.name} has {dataset.num_train} examples, fewer "
            f"than one batch (batch_size={config.batch_size}); lower --batch_size."
        )
    if config.steps_per_epoch:
        steps_per_epoch = min(steps_per_epoch, config.steps_per_epoch)
    eval_ds = data.eval_pipeline(dataset)
    metrics = {}

    if config.mode == "distill":
        teacher = load_teacher(config.teacher, config.teacher_weights, dataset.num_classes)
        metrics["teacher_test_accuracy"] = _accuracy(teacher, eval_ds)
        trained = models.get(config.student, num_classes=dataset.num_classes)
        method_list = build_methods(config, dataset, steps_per_epoch)
        model = kerasdistill.Distiller(teacher, trained, method_list, ce_weight=config.ce_weight)
        with_index = any(m.uses_sample_indices for m in method_list)
        loss = None  # The Distiller computes its own loss.
    else:
        trained = models.get(getattr(config, config.mode), num_classes=dataset.num_classes)
        model = trained
        with_index = False
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    optimizer = TorchSGD(
        step_decay(config.lr, config.epochs, steps_per_epoch),
        momentum=config.momentum,
        weight_decay=config.weight_decay,
    )
    model.compile(
        optimizer=optimizer,
        loss=loss,
        metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
    )
    train_ds = data.train_pipeline(
        dataset, config.batch_size, with_index=with_index, seed=config.seed
    ).repeat()
    callbacks = [
        # Kept until the model is saved below, so a crash while saving loses nothing.
        keras.callbacks.BackupAndRestore(str(out / "backup"), delete_checkpoint=False),
        keras.callbacks.CSVLogger(str(out / "history.csv"), append=True),
        *extra_callbacks,
    ]
    start = time.time()
    history = model.fit(
        train_ds,
        epochs=config.epochs,
        steps_per_epoch=steps_per_epoch,
        validation_data=eval_ds,
        callbacks=callbacks,
        verbose=config.verbose,
    )
    seconds = time.time() - start
    trained_epochs = len(history.history.get("loss", []))

    trained.save(out / "model.keras")
    export_saved_model(trained, out / "saved_model", dataset.mean, dataset.std)
    shutil.rmtree(out / "backup", ignore_errors=True)
    metrics.update(
        {
            "test_accuracy": _accuracy(trained, eval_ds),
            "epochs": config.epochs,
            "steps_per_epoch": steps_per_epoch,
            "epochs_trained_this_session": trained_epochs,
            "train_images_per_second": trained_epochs * steps_per_epoch * config.batch_size
            / max(seconds, 1e-9),
            "dataset": dataset.name,
            "num_train": dataset.num_train,
            "config": dataclasses.asdict(config),
        }
    )
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2, default=str))
    return metrics


def config_from_flags(flag_values):
    """Builds a `RunConfig` from absl flags of the same names."""
    kwargs = {}
    for field in dataclasses.fields(RunConfig):
        value = flag_values[field.name].value
        if field.name == "method_kwargs":
            value = json.loads(value) if value else {}
        kwargs[field.name] = value
    return RunConfig(**kwargs)


def define_flags(flags_module, defaults=None):
    """Defines one absl flag per `RunConfig` field (with optional new defaults)."""
    defaults = {**dataclasses.asdict(RunConfig()), **(defaults or {})}
    f = flags_module
    f.DEFINE_enum("mode", defaults["mode"], MODES, "teacher | student (alone) | distill.")
    f.DEFINE_string("teacher", defaults["teacher"], "Teacher model name (zoo registry).")
    f.DEFINE_string("student", defaults["student"], "Student model name (zoo registry).")
    f.DEFINE_string("method", defaults["method"], "Method name(s), comma-separated: kd,msdcrd.")
    f.DEFINE_string(
        "method_kwargs", json.dumps(defaults["method_kwargs"]),
        'JSON dict of constructor arguments per method, e.g. {"kd": {"weight": 0.9}}.',
    )
    f.DEFINE_float("ce_weight", defaults["ce_weight"], "Cross-entropy weight in distill mode.")
    f.DEFINE_string("teacher_weights", defaults["teacher_weights"],
                    "Teacher weights: .keras, .weights.h5 or a PyTorch .pth checkpoint.")
    f.DEFINE_string("dataset", defaults["dataset"],
                    "cifar100 | cifar10 | path to an image folder (train/, test/) or its .tar.gz.")
    f.DEFINE_string("data_dir", defaults["data_dir"], "tensorflow-datasets data directory.")
    f.DEFINE_bool("download", defaults["download"], "Allow tensorflow-datasets to download.")
    f.DEFINE_integer("epochs", defaults["epochs"], "Training epochs (LR milestones scale).")
    f.DEFINE_integer("steps_per_epoch", defaults["steps_per_epoch"],
                     "Cap on steps per epoch (0 = one pass over the training set).")
    f.DEFINE_integer("batch_size", defaults["batch_size"], "Training batch size.")
    f.DEFINE_float("lr", defaults["lr"], "Initial learning rate.")
    f.DEFINE_float("momentum", defaults["momentum"], "SGD momentum.")
    f.DEFINE_float("weight_decay", defaults["weight_decay"], "Coupled L2 weight decay.")
    f.DEFINE_integer("seed", defaults["seed"], "Random seed.")
    f.DEFINE_string("output_dir", defaults["output_dir"], "Where outputs are written.")
    f.DEFINE_integer("verbose", defaults["verbose"], "Keras fit verbosity (0, 1, 2).")


os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
