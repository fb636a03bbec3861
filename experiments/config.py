"""The configuration of one run: its fields (one absl flag each) and their one validation.

`RunConfig.validate` checks every field once, before any data is read or any
model built: numbers, choices and paths first, then the names against the model
and method registries. It returns a `Plan`, the model flags parsed into
`ModelSpec`s and the methods resolved to their classes, which the run passes on.
"""

import dataclasses
import math
import pathlib
import tempfile

from experiments.errors import UsageError
from experiments.model_specs import ACCEPTED, ModelSpec

MODES = ("teacher", "student", "distill")
STRATEGIES = ("auto", "default", "mirrored", "multi_worker")
MIXED_PRECISION = ("none", "float16", "bfloat16")
# cifar: 32x32 images, pad-4 crop + flip. imagenet: encoded photos, random-resized crop 224
# + flip for training, resize 256 + center crop 224 for evaluation, top-5 reported.
INPUT_PIPELINES = ("cifar", "imagenet")
# Step decays scaled to --epochs: cifar divides the LR by 10 at 150, 180, 210 of 240 epochs;
# imagenet at 30, 60, 90 of 100. cosine: linear warm-up over --lr_warmup_epochs, then cosine
# decay to 0 (the transformer recipe).
LR_SCHEDULES = ("cifar", "imagenet", "cosine")
# sgd: PyTorch-style SGD with momentum and coupled L2 decay (the CNN reference recipe);
# adamw: AdamW with decoupled decay (the ViT / MLP-Mixer recipe).
OPTIMIZERS = ("sgd", "adamw")
JIT_COMPILE = ("auto", "true", "false")
# onnx needs the packages tf2onnx and onnx (requirements-test.txt), imported only when asked.
EXPORT_FORMATS = ("saved_model", "keras", "tflite", "tflite_int8", "onnx")
# Fields that may change between a run and its resumption (where and how it runs, what
# it writes); any other change makes the run directory's checkpoint another run's.
RESUMABLE_CHANGES = (
    "verbose", "output_dir", "checkpoint_every_steps", "export", "data_dir", "download",
    "strategy", "logical_devices", "jit_compile",
)


def _field(default, help, choices=None, **kwargs):  # noqa: A002 - absl's name for it.
    """A `RunConfig` field and its flag: the default, the help, the accepted values.

    `choices` of a `str` field makes an enum flag; with `comma_separated=True` the
    value is a comma-separated list of `choices` (checked by `RunConfig.validate`).
    """
    metadata = {"help": help, "choices": choices, **kwargs}
    if isinstance(default, dict):
        return dataclasses.field(default_factory=lambda: dict(default), metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


@dataclasses.dataclass
class RunConfig:
    """Everything one run needs; one absl flag per field, defined from the field's metadata.

    `experiments.run_flags.define_flags` defines the flags and
    `run_flags.flag_table` writes the README's flag table from these fields.
    """

    mode: str = _field("distill", "`teacher`, `student` (the student alone, cross-entropy) or "
                       "`distill`.", MODES)
    teacher: str = _field(
        "resnet32x4", "The teacher: a zoo name, `keras.applications.<Name>` or a `.keras` file; in "
        "distill mode the architecture `--teacher_weights` holds, or empty for any.")
    student: str = _field("resnet8x4", "The student: a zoo name, `keras.applications.<Name>` or "
                          "a `.keras` file.")
    method: str = _field("default", "Method name(s), comma-separated (`kd,msdcrd`); `default` is "
                         "the defaults study's KD on standardized logits (T 2, weight 9) + "
                         "MSDCRD.")
    method_kwargs: dict = _field(
        {}, 'JSON, constructor arguments per method: `{"kd": {"weight": 0.9}, "msdcrd": '
        '{"temperature": 0.2}}`; each method checks its own.')
    ce_weight: float = _field(None, "Cross-entropy weight in distill mode. Unset: 0.1 when "
                              "`--method` names `default` (the study's recipe), else 1.")
    teacher_weights: str = _field(
        "", "The teacher file of distill mode: `.keras` (any architecture when `--teacher` is "
        "empty or this file), `.weights.h5` (of the `--teacher` model), or a RepDistiller / "
        "mdistiller / torchvision PyTorch `.pth` (of the `--teacher` zoo model).")
    dataset: str = _field("cifar100", "`cifar100`, `cifar10`, `imagenet2012`, or a folder / "
                          "`.tar.gz` with `train/<class>/*`, `test/<class>/*`.")
    input_pipeline: str = _field(
        "cifar", "`cifar` (32x32, pad-4 crop and flip) or `imagenet` (encoded photos, crops at "
        "224, top-5 reported); `experiments/imagenet.py` sets it.", INPUT_PIPELINES)
    data_dir: str = _field("", "tensorflow-datasets data directory (default "
                           "`~/tensorflow_datasets`).")
    download: bool = _field(False, "Allow tensorflow-datasets to download.")
    skip_corrupt_images: bool = _field(
        False, "Skip undecodable images of a folder dataset (with a warning and a count) "
        "instead of failing.")
    epochs: int = _field(240, "Training epochs (the LR milestones scale with them).")
    steps_per_epoch: int = _field(0, "Cap on steps per epoch, for short runs (0 = one pass "
                                  "over the training set).")
    batch_size: int = _field(64, "Global training batch size (split over the replicas).")
    lr: float = _field(0.05, "Initial learning rate.")
    lr_schedule: str = _field(
        "cifar", "LR / 10 at 150, 180, 210 of 240 epochs (`cifar`) or 30, 60, 90 of 100 "
        "(`imagenet`), scaled to `--epochs`; or `cosine` after `--lr_warmup_epochs`.",
        LR_SCHEDULES)
    lr_warmup_epochs: float = _field(0.0, "Linear learning-rate warm-up epochs (with "
                                     "`--lr_schedule=cosine`).")
    optimizer: str = _field("sgd", "`sgd` (momentum, coupled L2 decay) or `adamw` (decoupled "
                            "decay; the ViT / Mixer flagfiles).", OPTIMIZERS)
    momentum: float = _field(0.9, "SGD momentum.")
    weight_decay: float = _field(5e-4, "Weight decay: coupled L2 with sgd, decoupled with adamw.")
    clipnorm: float = _field(0.0, "Clip each parameter's gradient to this norm (Keras's "
                             "`clipnorm`). 0: none of yours; the Distiller then clips to 1.0 "
                             "where MSDCRD trains a student without normalization layers.")
    label_smoothing: float = _field(0.0, "Label smoothing of the training cross-entropy, in "
                                    "[0, 1).")
    seed: int = _field(0, "Random seed.")
    deterministic: bool = _field(False, "Seeds plus deterministic TensorFlow ops: two runs give "
                                 "identical weights (slower).")
    checkpoint_every_steps: int = _field(
        500, "Checkpoint every N training steps (also every epoch and on SIGTERM; 0 = at epoch "
        "ends only).")
    strategy: str = _field(
        "auto", "`auto` (mirrored over all GPUs when more than one), `default`, `mirrored`, "
        "`multi_worker` (`TF_CONFIG`; see `docs/distributed.md`).", STRATEGIES)
    logical_devices: int = _field(0, "N > 0 splits the CPU into N logical devices (for testing "
                                  "strategies).")
    sync_batchnorm: bool = _field(False, "The student's BatchNorm uses global-batch statistics "
                                  "under a strategy.")
    mixed_precision: str = _field("none", "Compute dtype; every loss still computes in float32 "
                                  "(float16 with loss scaling).", MIXED_PRECISION)
    jit_compile: str = _field("auto", "XLA-compile the train step (`auto`: only where a GPU is "
                              "visible; on CPU XLA measured slower).", JIT_COMPILE,
                              lowercase=True)
    export: str = _field("saved_model,keras", "Comma-separated export formats (onnx needs the "
                         "packages tf2onnx and onnx).", EXPORT_FORMATS, comma_separated=True)
    output_dir: str = _field("runs/default", "The run directory.")
    verbose: int = _field(2, "Keras fit verbosity (0, 1, 2); 3 is 2 plus TensorFlow's own logs "
                          "and tracebacks of errors (as `KERASDISTILL_VERBOSE=1`).")

    def validate(self):
        """Checks every field, once, before any data is read or any model built.

        Numbers, choices and paths are checked first (no TensorFlow), then the
        model and method names against their registries. The methods'
        arguments are the methods' to check, when they are built
        (`trainer.build_methods`).

        Returns:
            The run's `Plan`.

        Raises:
            UsageError: Naming the first bad value and what is accepted.
        """
        _check_values(self)
        _check_export_packages(self)
        trained = self.trained_role()
        if not getattr(self, trained):
            raise UsageError(f"--mode={self.mode} needs --{trained} ({ACCEPTED}).")
        model = ModelSpec(trained, getattr(self, trained))
        teacher = None
        if self.mode == "distill":
            _check_method_kwargs(self)
            teacher = ModelSpec("teacher", self.teacher, weights=self.teacher_weights)
        specs = [model] if teacher is None else [model, teacher]
        for spec in specs:
            spec.check()
        for spec in specs:
            spec.check_name()
        return Plan(model=model, teacher=teacher, methods=_resolve_methods(self))

    def trained_role(self):
        """The flag naming the model this run trains: `teacher` in teacher mode, else `student`."""
        return "teacher" if self.mode == "teacher" else "student"

    def method_names(self):
        """The comma-separated `method` field as a list, `default` spelled out (`kd`, `msdcrd`)."""
        from kerasdistill.methods import defaults

        return [name for name, _ in defaults.expand(_listed(self.method))]

    def resolved_ce_weight(self):
        """`ce_weight`, or where it is unset the one `--method` implies (0.1 with `default`)."""
        from kerasdistill.methods import defaults

        if self.ce_weight is None:
            return defaults.ce_weight(_listed(self.method))
        return self.ce_weight

    def export_formats(self):
        """The comma-separated `export` field as a list."""
        return _listed(self.export)


def _listed(field):
    """The names of a comma-separated field, stripped, empty ones dropped."""
    return [name.strip() for name in field.split(",") if name.strip()]


def _check_export_packages(config):
    """Refuses `--export=...,onnx` without the converter's packages, before any training."""
    if "onnx" not in config.export_formats():
        return
    from kerasdistill.training import missing_onnx_packages

    missing = missing_onnx_packages()
    if missing:
        raise UsageError(
            f"--export={config.export!r} needs the package(s) {', '.join(missing)} for onnx, "
            "not installed; run `pip install tf2onnx onnx`, or drop onnx."
        )


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


@dataclasses.dataclass(frozen=True)
class Plan:
    """What `RunConfig.validate` returns: the models and methods of a run, each resolved once.

    Attributes:
        model: The `ModelSpec` of the model the run trains (`--teacher` in
            teacher mode, else `--student`).
        teacher: The `ModelSpec` of distill mode's teacher (`--teacher` and
            `--teacher_weights`), else None.
        methods: `(name, class, kwargs)` per `--method` name, in order
            (distill mode; kwargs from `--method_kwargs`).
    """

    model: ModelSpec
    teacher: ModelSpec = None
    methods: tuple = ()

    def files(self):
        """`{flag: path}` of the model files the run reads (their SHA-256 go in its checkpoint)."""
        files = dict(self.model.files())
        if self.teacher is not None:
            files.update(self.teacher.files())
        return files


def _check_values(config):
    """Checks the choices and numbers of `config`; needs no TensorFlow."""
    for field in dataclasses.fields(config):
        choices, value = field.metadata.get("choices"), getattr(config, field.name)
        if choices and field.metadata.get("comma_separated"):
            for item in (v.strip() for v in value.split(",")):
                if item:
                    _choice(field.name, item, choices)
        elif choices:
            _choice(field.name, str(value).lower() if field.metadata.get("lowercase") else value,
                    choices)
    _number("epochs", config.epochs, 0, low_inclusive=False, kind=int)
    _number("batch_size", config.batch_size, 0, low_inclusive=False, kind=int)
    _number("steps_per_epoch", config.steps_per_epoch, 0, kind=int)
    _number("checkpoint_every_steps", config.checkpoint_every_steps, 0, kind=int)
    _number("logical_devices", config.logical_devices, 0, kind=int)
    _number("verbose", config.verbose, 0, 4, kind=int)
    _number("lr", config.lr, 0, low_inclusive=False)
    _number("momentum", config.momentum, 0, 1)
    _number("weight_decay", config.weight_decay, 0, 1)
    _number("clipnorm", config.clipnorm, 0)
    _number("label_smoothing", config.label_smoothing, 0, 1)
    _number("lr_warmup_epochs", config.lr_warmup_epochs, 0, config.epochs)
    if config.lr_warmup_epochs and config.lr_schedule != "cosine":
        raise UsageError(
            f"--lr_warmup_epochs={config.lr_warmup_epochs!r} needs --lr_schedule=cosine "
            f"(got --lr_schedule={config.lr_schedule!r})."
        )
    if config.ce_weight is not None:
        _number("ce_weight", config.ce_weight, 0)


def _check_method_kwargs(config):
    """Checks that `--method` names methods and `--method_kwargs` is `{method: {arg: value}}`."""
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


def _resolve_methods(config):
    """`((name, class, kwargs), ...)` of the `--method` names; () outside distill mode."""
    if config.mode != "distill":
        return ()
    from kerasdistill import methods
    from kerasdistill.methods import defaults

    resolved = []
    for name, recipe_kwargs in defaults.expand(_listed(config.method)):
        kwargs = {**recipe_kwargs, **config.method_kwargs.get(name, {})}
        try:
            resolved.append((name, methods.method_class(name), kwargs))
        except ValueError as error:
            raise UsageError(f"--method={config.method!r}: {error}") from error
    return tuple(resolved)


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


def differences(config, saved):
    """Fields whose value in `config` differs from the dict `saved` (ignoring RESUMABLE_CHANGES)."""
    current = dataclasses.asdict(config)
    return sorted(
        key for key, value in current.items()
        if key not in RESUMABLE_CHANGES and saved.get(key, value) != value
    )
