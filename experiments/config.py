"""The configuration of one run, its absl flags, and its validation.

Validation happens before any data is read or any model is built, in two
passes: `check_values` needs nothing but the standard library (so a mistyped
number fails before TensorFlow is even imported) and `check_names` reads the
model and method registries.
"""

import dataclasses
import difflib
import inspect
import json
import math
import os
import pathlib
import tempfile

from experiments import model_specs
from experiments.errors import UsageError

MODES = ("teacher", "student", "distill")
STRATEGIES = ("auto", "default", "mirrored", "multi_worker")
MIXED_PRECISION = ("none", "float16", "bfloat16")
# cifar: 32x32 images, pad-4 crop + flip. imagenet: encoded photos, random-resized crop 224
# + flip for training, resize 256 + center crop 224 for evaluation, top-5 reported.
INPUT_PIPELINES = ("cifar", "imagenet")
# Step decays scaled to --epochs: cifar divides the LR by 10 at 150, 180, 210 of 240 epochs;
# imagenet at 30, 60, 90 of 100. cosine: linear warm-up over --warmup_epochs, then cosine
# decay to 0 (the transformer recipe).
LR_SCHEDULES = ("cifar", "imagenet", "cosine")
# sgd: PyTorch-style SGD with momentum and coupled L2 decay (the CNN reference recipe);
# adamw: AdamW with decoupled decay (the ViT / MLP-Mixer recipe).
OPTIMIZERS = ("sgd", "adamw")
JIT_COMPILE = ("auto", "true", "false")
EXPORT_FORMATS = ("saved_model", "keras", "tflite", "tflite_int8")
# Methods that contrast each sample with the other samples of its batch.
IN_BATCH_CONTRASTIVE = ("msdcrd",)
# Fields that may change between a run and its resumption (where and how it runs, what
# it writes); any other change makes the run directory's checkpoint another run's.
RESUMABLE_CHANGES = (
    "verbose", "output_dir", "checkpoint_every_steps", "export", "data_dir", "download",
    "strategy", "logical_devices", "jit_compile",
)


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
    input_pipeline: str = "cifar"
    data_dir: str = ""
    download: bool = False
    skip_corrupt_images: bool = False
    epochs: int = 240
    steps_per_epoch: int = 0
    batch_size: int = 64
    lr: float = 0.05
    lr_schedule: str = "cifar"
    warmup_epochs: float = 0.0
    optimizer: str = "sgd"
    momentum: float = 0.9
    weight_decay: float = 5e-4
    label_smoothing: float = 0.0
    seed: int = 0
    deterministic: bool = False
    checkpoint_every_steps: int = 500
    strategy: str = "auto"
    logical_devices: int = 0
    sync_batchnorm: bool = False
    mixed_precision: str = "none"
    jit_compile: str = "auto"
    export: str = "saved_model,keras"
    output_dir: str = "runs/default"
    verbose: int = 2

    def validate(self):
        """Raises `UsageError` (a `ValueError`) naming the first bad field."""
        check_values(self)
        check_names(self)

    def trained_role(self):
        """The flag naming the model this run trains: `teacher` in teacher mode, else `student`."""
        return "teacher" if self.mode == "teacher" else "student"

    def model_files(self):
        """`{flag: path}` of the model files the run reads: the teacher file, a `.keras` model."""
        files = {}
        trained = self.trained_role()
        if model_specs.kind(getattr(self, trained)) == model_specs.FILE:
            files[trained] = getattr(self, trained)
        if self.mode == "distill":
            files["teacher_weights"] = self.teacher_weights
        return files

    def method_names(self):
        """The comma-separated `method` field as a list (`"kd,msdcrd"`)."""
        return [m.strip() for m in self.method.split(",") if m.strip()]

    def export_formats(self):
        """The comma-separated `export` field as a list."""
        return [f.strip() for f in self.export.split(",") if f.strip()]


def _choice(name, value, accepted):
    if value not in accepted:
        raise UsageError(
            f"--{name}={value!r} is not accepted; expected one of {', '.join(accepted)}."
        )


def _number(name, value, low, high=math.inf, low_inclusive=True, kind=(int, float)):
    """Checks `low <(=) value < high` and that `value` is a finite number of type `kind`."""
    ok = isinstance(value, kind) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and (value >= low if low_inclusive else value > low) and value < high
    if not ok:
        bound = f"{'>=' if low_inclusive else '>'} {low}"
        bound += f" and < {high}" if high < math.inf else ""
        raise UsageError(f"--{name}={value!r} is not accepted; it must be a finite number {bound}.")


def _is_temperature(key):
    """Method arguments that are softmax temperatures (> 0), by the methods' naming."""
    return "temperature" in key or key == "tau"


def _is_weight(key):
    """Method arguments that weight a loss term (>= 0), by the methods' naming."""
    named = key in ("weight", "alpha", "beta", "gamma")
    return named or key.endswith("_weight") or key.startswith("lambda")


def check_values(config):
    """Checks choices and numbers of `config`; needs no TensorFlow.

    Args:
        config: A `RunConfig`.

    Raises:
        UsageError: Naming the bad value and what is accepted.
    """
    _choice("mode", config.mode, MODES)
    _choice("strategy", config.strategy, STRATEGIES)
    _choice("mixed_precision", config.mixed_precision, MIXED_PRECISION)
    _choice("input_pipeline", config.input_pipeline, INPUT_PIPELINES)
    _choice("lr_schedule", config.lr_schedule, LR_SCHEDULES)
    _choice("optimizer", config.optimizer, OPTIMIZERS)
    _choice("jit_compile", str(config.jit_compile).lower(), JIT_COMPILE)
    for fmt in config.export_formats():
        _choice("export", fmt, EXPORT_FORMATS)
    _number("epochs", config.epochs, 0, low_inclusive=False, kind=int)
    _number("batch_size", config.batch_size, 0, low_inclusive=False, kind=int)
    _number("steps_per_epoch", config.steps_per_epoch, 0, kind=int)
    _number("checkpoint_every_steps", config.checkpoint_every_steps, 0, kind=int)
    _number("logical_devices", config.logical_devices, 0, kind=int)
    _number("verbose", config.verbose, 0, 4, kind=int)
    _number("lr", config.lr, 0, low_inclusive=False)
    _number("momentum", config.momentum, 0, 1)
    _number("weight_decay", config.weight_decay, 0, 1)
    _number("label_smoothing", config.label_smoothing, 0, 1)
    _number("warmup_epochs", config.warmup_epochs, 0, config.epochs)
    if config.warmup_epochs and config.lr_schedule != "cosine":
        raise UsageError(
            f"--warmup_epochs={config.warmup_epochs!r} needs --lr_schedule=cosine "
            f"(got --lr_schedule={config.lr_schedule!r})."
        )
    _number("ce_weight", config.ce_weight, 0)
    trained = config.trained_role()
    if not getattr(config, trained):
        raise UsageError(f"--mode={config.mode} needs --{trained} ({model_specs.ACCEPTED}).")
    model_specs.check_path(trained, getattr(config, trained))
    if config.mode != "distill":
        return
    if not config.method_names():
        raise UsageError("--method is empty; name at least one method, e.g. --method=kd.")
    if not isinstance(config.method_kwargs, dict):
        raise UsageError(
            f"--method_kwargs must be a JSON object {{method: {{argument: value}}}}, got "
            f"{config.method_kwargs!r}."
        )
    for method, kwargs in config.method_kwargs.items():
        if method not in config.method_names():
            raise UsageError(
                f"--method_kwargs names method {method!r}, which is not in "
                f"--method={config.method!r}."
            )
        if not isinstance(kwargs, dict):
            raise UsageError(
                f"--method_kwargs[{method!r}] must be a JSON object of arguments, got {kwargs!r}."
            )
        for key, value in kwargs.items():
            if _is_temperature(key):
                _number(f"method_kwargs {method}.{key}", value, 0, low_inclusive=False)
            elif _is_weight(key):
                _number(f"method_kwargs {method}.{key}", value, 0)
    if not config.teacher_weights:
        raise UsageError("--mode=distill needs --teacher_weights (a trained teacher file).")
    if not pathlib.Path(config.teacher_weights).is_file():
        raise UsageError(f"--teacher_weights={config.teacher_weights!r}: no such file.")
    if model_specs.kind(config.teacher) == model_specs.FILE:
        same = pathlib.Path(config.teacher).is_file() and os.path.samefile(
            config.teacher, config.teacher_weights
        )
        if not same:
            raise UsageError(
                f"--teacher={config.teacher!r} is another file than --teacher_weights="
                f"{config.teacher_weights!r}; the teacher is --teacher_weights: pass --teacher= "
                "(empty) or the same file."
            )
    elif config.teacher:
        model_specs.check_path("teacher", config.teacher)


def _unknown(kind, name, accepted):
    close = difflib.get_close_matches(name, accepted, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    return UsageError(f"Unknown {kind} {name!r}.{hint} Accepted: {', '.join(accepted)}.")


def check_names(config):
    """Checks model and method names and method arguments against the registries.

    Args:
        config: A `RunConfig` that passed `check_values`.

    Raises:
        UsageError: Naming the bad name and the closest accepted one.
    """
    from kerasdistill import methods

    model_specs.check_name(config.trained_role(), getattr(config, config.trained_role()))
    if config.mode == "distill" and config.teacher:
        model_specs.check_name("teacher", config.teacher)
    if config.mode != "distill":
        return
    for name in config.method_names():
        if name not in methods.available():
            raise _unknown("method", name, methods.available())
        cls = methods.method_class(name)
        parameters = [*inspect.signature(cls.__init__).parameters]
        parameters += inspect.signature(cls.from_data).parameters
        internal = ("self", "kwargs", "data", "train_labels")
        accepted = [p for p in dict.fromkeys(parameters) if p not in internal]
        for key in config.method_kwargs.get(name, {}):
            if key not in accepted:
                raise _unknown(f"argument of method {name!r} in --method_kwargs", key, accepted)


def check_output_dir(path):
    """Creates `path` if needed and checks that files can be written there.

    Raises:
        UsageError: When the directory cannot be created or written.
    """
    path = pathlib.Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write_test"):
            pass
    except OSError as error:
        raise UsageError(
            f"--output_dir={str(path)!r} cannot be written ({error.strerror or error}); "
            "pick a writable directory."
        ) from error


def parse_method_kwargs(text):
    """Parses the `--method_kwargs` JSON text.

    Raises:
        UsageError: When `text` is not valid JSON.
    """
    if not text:
        return {}
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise UsageError(
            f"--method_kwargs is not valid JSON ({error.msg} at character {error.pos}): {text!r}. "
            'Expected e.g. {"kd": {"temperature": 4.0}}.'
        ) from error


def differences(config, saved):
    """Fields whose value in `config` differs from the dict `saved` (ignoring RESUMABLE_CHANGES)."""
    current = dataclasses.asdict(config)
    return sorted(
        key for key, value in current.items()
        if key not in RESUMABLE_CHANGES and saved.get(key, value) != value
    )


def config_from_flags(flag_values):
    """Builds a `RunConfig` from absl flags of the same names."""
    kwargs = {}
    for field in dataclasses.fields(RunConfig):
        value = flag_values[field.name].value
        if field.name == "method_kwargs":
            value = parse_method_kwargs(value)
        kwargs[field.name] = value
    return RunConfig(**kwargs)


def define_flags(flags_module, defaults=None):
    """Defines one absl flag per `RunConfig` field (with optional new defaults)."""
    defaults = {**dataclasses.asdict(RunConfig()), **(defaults or {})}
    f = flags_module
    f.DEFINE_enum("mode", defaults["mode"], MODES, "teacher | student (alone) | distill.")
    f.DEFINE_string("teacher", defaults["teacher"],
                    "Teacher: a zoo name, keras.applications.<Name> or a .keras file; in distill "
                    "mode the architecture --teacher_weights holds, empty for any.")
    f.DEFINE_string("student", defaults["student"],
                    "Student: a zoo name, keras.applications.<Name> or a .keras file.")
    f.DEFINE_string("method", defaults["method"], "Method name(s), comma-separated: kd,msdcrd.")
    f.DEFINE_string(
        "method_kwargs", json.dumps(defaults["method_kwargs"]),
        'JSON dict of constructor arguments per method, e.g. {"kd": {"weight": 0.9}}.',
    )
    f.DEFINE_float("ce_weight", defaults["ce_weight"], "Cross-entropy weight in distill mode.")
    f.DEFINE_string("teacher_weights", defaults["teacher_weights"],
                    "Teacher file (distill mode): .keras (any architecture with --teacher "
                    "empty), .weights.h5 or a PyTorch .pth checkpoint.")
    f.DEFINE_string("dataset", defaults["dataset"],
                    "cifar100 | cifar10 | path to an image folder (train/, test/) or its .tar.gz.")
    f.DEFINE_enum("input_pipeline", defaults["input_pipeline"], INPUT_PIPELINES,
                  "cifar (32x32, pad-4 crop) | imagenet (encoded photos, crops at 224, top-5).")
    f.DEFINE_string("data_dir", defaults["data_dir"], "tensorflow-datasets data directory.")
    f.DEFINE_bool("download", defaults["download"], "Allow tensorflow-datasets to download.")
    f.DEFINE_bool("skip_corrupt_images", defaults["skip_corrupt_images"],
                  "Skip undecodable images of an image folder (with a warning) instead of failing.")
    f.DEFINE_integer("epochs", defaults["epochs"], "Training epochs (LR milestones scale).")
    f.DEFINE_integer("steps_per_epoch", defaults["steps_per_epoch"],
                     "Cap on steps per epoch (0 = one pass over the training set).")
    f.DEFINE_integer("batch_size", defaults["batch_size"],
                     "Global training batch size (split over the replicas).")
    f.DEFINE_float("lr", defaults["lr"], "Initial learning rate.")
    f.DEFINE_enum("lr_schedule", defaults["lr_schedule"], LR_SCHEDULES,
                  "LR / 10 at 150, 180, 210 of 240 epochs (cifar) or 30, 60, 90 of 100 "
                  "(imagenet), scaled to --epochs; or cosine (after --warmup_epochs).")
    f.DEFINE_float("warmup_epochs", defaults["warmup_epochs"],
                   "Linear LR warm-up epochs (with --lr_schedule=cosine).")
    f.DEFINE_enum("optimizer", defaults["optimizer"], OPTIMIZERS,
                  "sgd (momentum, coupled L2 decay) | adamw (decoupled decay).")
    f.DEFINE_float("momentum", defaults["momentum"], "SGD momentum.")
    f.DEFINE_float("weight_decay", defaults["weight_decay"],
                   "Weight decay: coupled L2 with sgd, decoupled with adamw.")
    f.DEFINE_float("label_smoothing", defaults["label_smoothing"],
                   "Label smoothing of the training cross-entropy, in [0, 1).")
    f.DEFINE_integer("seed", defaults["seed"], "Random seed.")
    f.DEFINE_bool("deterministic", defaults["deterministic"],
                  "Deterministic TensorFlow ops: two runs give identical weights (slower).")
    f.DEFINE_integer("checkpoint_every_steps", defaults["checkpoint_every_steps"],
                     "Checkpoint every N training steps (0 = at epoch ends only).")
    f.DEFINE_enum("strategy", defaults["strategy"], STRATEGIES, "tf.distribute strategy.")
    f.DEFINE_integer("logical_devices", defaults["logical_devices"],
                     "N > 0 splits the CPU into N logical devices (testing strategies).")
    f.DEFINE_bool("sync_batchnorm", defaults["sync_batchnorm"],
                  "Synchronize the student's BatchNorm statistics across replicas.")
    f.DEFINE_enum("mixed_precision", defaults["mixed_precision"], MIXED_PRECISION,
                  "Mixed-precision compute dtype.")
    f.DEFINE_enum("jit_compile", defaults["jit_compile"], JIT_COMPILE,
                  "XLA-compile the train step (auto: not on CPU).")
    f.DEFINE_string("export", defaults["export"],
                    f"Comma-separated export formats: {', '.join(EXPORT_FORMATS)}.")
    f.DEFINE_string("output_dir", defaults["output_dir"], "Where outputs are written.")
    f.DEFINE_integer("verbose", defaults["verbose"],
                     "Keras fit verbosity (0, 1, 2); 3 is 2 plus full tracebacks on errors.")

