"""One training run (teacher, student alone, or distillation), shared by the scripts.

A run writes to its output directory:

    checkpoint.npz     resumable state (weights, optimizer, method state, position),
                       every --checkpoint_every_steps steps, every epoch and on SIGTERM
    history.csv        one row per epoch
    tensorboard/       TensorBoard logs: every loss term, accuracy, learning rate, images/s
    model.keras        the trained model (the student in distill mode)
    saved_model/       TensorFlow SavedModel of it: float32 [0, 255] images -> logits
    model.tflite, model_int8.tflite   with --export=...,tflite,tflite_int8
    metrics.json       test accuracy, epochs, throughput, the configuration, the models
                       (name, parameters) and the SHA-256 of the model files read

A run started again with the same output directory resumes from its checkpoint
and ends with exactly the weights of an uninterrupted run (with
--deterministic); a checkpoint of another configuration, or of other contents
of its model files (`--teacher_weights`, a `.keras` `--student`), is refused.
"""

import dataclasses
import json
import pathlib
import tempfile
import time

from experiments import config as config_lib
from experiments import model_specs
from experiments.config import MODES, RunConfig, config_from_flags, define_flags
from experiments.errors import RunInterrupted, UsageError

__all__ = ["MODES", "RunConfig", "config_from_flags", "define_flags", "run"]

CHECKPOINT = "checkpoint.npz"
# The CIFAR pipeline's pad-4 random crop (kerasdistill.data.augment) keeps 32x32 images.
CIFAR_IMAGE_SIZE = 32


@dataclasses.dataclass
class Models:
    """What `build_models` returns.

    Attributes:
        fitted: The model `fit` trains (a Distiller in distill mode).
        trained: The classifier that is exported (the student in distill mode).
        teacher: The teacher in distill mode, else None.
    """

    fitted: object
    trained: object
    teacher: object = None


def set_up_runtime(config):
    """Seeds, determinism, mixed precision and the distribution strategy; before any model.

    Returns:
        The `tf.distribute.Strategy` to build and train under.
    """
    import keras
    import tensorflow as tf

    from kerasdistill.training import distribute

    strategy = distribute.make_strategy(config.strategy, logical_devices=config.logical_devices)
    keras.utils.set_random_seed(config.seed)
    if config.deterministic:
        tf.config.experimental.enable_op_determinism()
    distribute.set_mixed_precision(config.mixed_precision)
    return strategy


def load_dataset(config, output_dir):
    """Checks and loads `config.dataset`; an image folder's undecodable files fail or are skipped.

    Returns:
        A `kerasdistill.data.Dataset`.

    Raises:
        UsageError: For a missing dataset, a bad folder layout or corrupt images.
    """
    from absl import logging

    from kerasdistill import data
    from kerasdistill.data import datasets, validation

    source = config.dataset
    if config.input_pipeline == "imagenet" and source != "imagenet2012":
        from kerasdistill.data.imagenet import load_imagenet_folder

        try:
            return load_imagenet_folder(source)
        except (ValueError, FileNotFoundError) as error:
            raise UsageError(f"--dataset={source!r}: {error}") from error
    if pathlib.Path(source).is_file() and source.endswith(datasets.ARCHIVE_SUFFIXES):
        try:  # Extracted once; its images are then checked like a folder's.
            source = str(datasets.extract_archive(source))
        except (data.DatasetUnavailableError, OSError) as error:
            raise UsageError(f"--dataset={config.dataset!r}: {error}") from error
    if pathlib.Path(source).is_dir():
        try:
            corrupt = validation.check_image_folder(source)
        except ValueError as error:
            raise UsageError(f"--dataset={source!r}: {error}") from error
        if corrupt and not config.skip_corrupt_images:
            raise UsageError(
                f"--dataset={source!r} holds {len(corrupt)} image(s) that cannot be decoded, "
                f"first {corrupt[0]}; fix or remove them, or pass --skip_corrupt_images."
            )
        if corrupt:
            logging.warning("Skipping %d undecodable image(s), first %s.", len(corrupt), corrupt[0])
            mirror = output_dir / "dataset_without_corrupt_images" / pathlib.Path(source).name
            source = str(validation.without_files(source, corrupt, mirror))
    try:
        return data.load(source, data_dir=config.data_dir or None, download=config.download)
    except data.DatasetUnavailableError as error:
        raise UsageError(f"--dataset={config.dataset!r}: {error}") from error


def check_replica_batch(config, num_replicas):
    """Checks that the global batch splits over the replicas into batches the methods can use.

    Raises:
        UsageError: When it does not split evenly, or leaves an in-batch
            contrastive method fewer than 2 samples per replica.
    """
    if config.batch_size % num_replicas:
        raise UsageError(
            f"--batch_size={config.batch_size} (the global batch) must be a multiple of the "
            f"{num_replicas} replicas."
        )
    per_replica = config.batch_size // num_replicas
    contrastive = set(config.method_names()) & set(config_lib.IN_BATCH_CONTRASTIVE)
    if config.mode == "distill" and contrastive and per_replica < 2:
        raise UsageError(
            f"--batch_size={config.batch_size} gives {per_replica} sample(s) per replica, too "
            f"few for {', '.join(sorted(contrastive))}; use >= 2 per replica."
        )


def steps_per_epoch(config, dataset):
    """Training steps per epoch: one pass, capped by `--steps_per_epoch`.

    Raises:
        UsageError: When the training split is smaller than one batch.
    """
    steps = dataset.num_train // config.batch_size
    if steps == 0:
        raise UsageError(
            f"The training split of {dataset.name} has {dataset.num_train} examples, fewer "
            f"than one batch (--batch_size={config.batch_size}); lower --batch_size."
        )
    return min(steps, config.steps_per_epoch) if config.steps_per_epoch else steps


def build_methods(config, dataset, steps_per_epoch):
    """Instantiates the configured methods, giving each what it needs of the data.

    Raises:
        UsageError: When a method rejects its `--method_kwargs`.
    """
    from kerasdistill import methods

    needs_labels = any(methods.method_class(m).uses_sample_indices for m in config.method_names())
    training_data = methods.TrainingData(
        train_labels=dataset.train_labels() if needs_labels else None,
        steps_per_epoch=steps_per_epoch,
    )
    built = []
    for name in config.method_names():
        kwargs = config.method_kwargs.get(name, {})
        try:
            built.append(methods.get(name, data=training_data, **kwargs))
        except (TypeError, ValueError) as error:
            raise UsageError(f"--method_kwargs for {name!r} {kwargs}: {error}") from error
    return built


def image_shape(config):
    """`(height, width, channels)` of the images the input pipeline feeds the models."""
    from kerasdistill.data.imagenet import IMAGE_SIZE

    if config.input_pipeline == "imagenet":
        return (IMAGE_SIZE, IMAGE_SIZE, 3)
    return (CIFAR_IMAGE_SIZE, CIFAR_IMAGE_SIZE, 3)


def build_models(config, dataset, steps):
    """Builds the model to train, then in distill mode loads the teacher; checks both fit."""
    import kerasdistill
    from experiments.teacher import load_teacher
    from kerasdistill.training import distribute

    role = config.trained_role()
    shape = image_shape(config)
    trained = model_specs.build(role, getattr(config, role), dataset.num_classes, shape)
    if config.sync_batchnorm:
        trained = distribute.synchronized_batchnorm(trained)
    if config.mode != "distill":
        return Models(fitted=trained, trained=trained)
    teacher = load_teacher(config.teacher, config.teacher_weights, dataset.num_classes, shape)
    method_list = build_methods(config, dataset, steps)
    try:
        distiller = kerasdistill.Distiller(
            teacher,
            trained,
            method_list,
            ce_weight=config.ce_weight,
            label_smoothing=config.label_smoothing,
        )
    except ValueError as error:  # A tap the models lack, or shapes a method cannot pair.
        raise UsageError(f"--method={config.method!r} with --method_kwargs: {error}") from error
    return Models(fitted=distiller, trained=trained, teacher=teacher)


def learning_rate(config, steps):
    """The configured LR schedule over optimizer steps (`steps` per epoch)."""
    from kerasdistill.training import schedules

    if config.lr_schedule == "cosine":
        warmup = round(config.warmup_epochs * steps)
        return schedules.cosine_with_warmup(config.lr, config.epochs * steps, warmup)
    milestones = {
        "cifar": (schedules.REFERENCE_MILESTONES, schedules.REFERENCE_EPOCHS),
        "imagenet": (schedules.IMAGENET_MILESTONES, schedules.IMAGENET_EPOCHS),
    }[config.lr_schedule]
    return schedules.step_decay(config.lr, config.epochs, steps, *milestones)


def compile_model(config, models, steps):
    """Compiles the fitted model with the configured optimizer and LR schedule."""
    import keras

    from kerasdistill.training import TorchSGD

    if config.optimizer == "adamw":
        optimizer = keras.optimizers.AdamW(
            learning_rate(config, steps), weight_decay=config.weight_decay
        )
    else:
        optimizer = TorchSGD(
            learning_rate(config, steps),
            momentum=config.momentum,
            weight_decay=config.weight_decay,
        )
    jit = {"true": True, "false": False}.get(str(config.jit_compile).lower())
    if jit is None:  # auto: XLA where an accelerator is visible.
        import tensorflow as tf

        jit = bool(tf.config.list_logical_devices("GPU"))
    models.fitted.compile(
        optimizer=optimizer,
        loss=None if config.mode == "distill" else _cross_entropy(config.label_smoothing),
        metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
        jit_compile=jit,
    )


def _cross_entropy(label_smoothing=0.0):
    from kerasdistill.training import SparseCrossEntropy

    return SparseCrossEntropy(label_smoothing)


def model_file_digests(config):
    """`{flag: SHA-256}` of the model files the run reads (`RunConfig.model_files`)."""
    return {flag: model_specs.sha256(path) for flag, path in config.model_files().items()}


def check_checkpoint(config, output_dir, digests):
    """Refuses a run directory whose checkpoint belongs to another configuration.

    Args:
        config: The `RunConfig`.
        output_dir: The run directory.
        digests: `model_file_digests(config)`; a model file whose contents
            changed since the checkpoint makes it another run's.

    Raises:
        UsageError: Naming the fields, or the files, that differ.
    """
    from kerasdistill.training import checkpointing

    path = output_dir / CHECKPOINT
    if not path.exists():
        return
    metadata = checkpointing.read_metadata(path)
    saved = metadata.get("config", {})
    changed = config_lib.differences(config, saved)
    if changed:
        listed = ", ".join(f"{k}={saved.get(k)!r} (now {getattr(config, k)!r})" for k in changed)
        raise UsageError(
            f"--output_dir={str(output_dir)!r} holds the checkpoint of another configuration "
            f"({listed}); use another --output_dir or the same flags to resume."
        )
    saved_digests = metadata.get("model_files", {})
    replaced = [flag for flag, digest in digests.items() if saved_digests.get(flag, digest) != digest]
    if replaced:
        listed = ", ".join(f"--{flag}={getattr(config, flag)!r}" for flag in replaced)
        raise UsageError(
            f"--output_dir={str(output_dir)!r} holds the checkpoint of a run that read other "
            f"contents from {listed} (the file changed since); use another --output_dir, or "
            "restore the file to resume."
        )


def resume(model, output_dir):
    """Restores the run directory's checkpoint into `model`, if there is one.

    Returns:
        The number of training steps already done (0 without a checkpoint).
    """
    from kerasdistill.training import checkpointing

    path = output_dir / CHECKPOINT
    if not path.exists():
        return 0
    try:
        return checkpointing.restore(path, model)["step"]
    except ValueError as error:
        raise UsageError(f"--output_dir={str(output_dir)!r}: {error}") from error


def _keep_history_before(path, epoch):
    """Drops rows of epochs >= `epoch` from history.csv (they are trained again)."""
    if not path.exists():
        return
    if epoch == 0:  # A fresh start: the old columns may not be this run's.
        path.unlink()
        return
    lines = path.read_text().splitlines(keepends=True)
    kept = lines[:1] + [row for row in lines[1:] if int(row.split(",")[0]) < epoch]
    path.write_text("".join(kept))


def make_callbacks(config, output_dir, checkpointer, extra_callbacks):
    """The callbacks of `fit`, in order: divergence stop before anything is saved or logged."""
    import keras

    from kerasdistill.training import callbacks

    return [
        callbacks.StopOnNonFiniteLoss(),
        checkpointer,
        callbacks.ValidationLogFilter(),
        callbacks.ThroughputLogger(config.batch_size),
        keras.callbacks.CSVLogger(str(output_dir / "history.csv"), append=True),
        keras.callbacks.TensorBoard(str(output_dir / "tensorboard"), write_graph=False),
        *extra_callbacks,
    ]


def train(config, model, dataset, steps, start_step, callbacks, checkpointer, strategy=None):
    """Fits one epoch at a time from `start_step`, each epoch's batches a function of its number.

    With `--strategy=multi_worker` the epochs run in `multi_worker_fit`'s
    loop instead of `model.fit`.

    Returns:
        The epochs whose end was reached in this session.

    Raises:
        RunInterrupted: When SIGTERM stopped training (after a checkpoint).
    """
    from kerasdistill.data.pipeline import epoch_pipeline
    from kerasdistill.training.multi_worker import multi_worker_fit

    with_index = any(m.uses_sample_indices for m in getattr(model, "methods", ()))
    eval_ds = eval_batches(config, dataset)
    augment = None
    if config.input_pipeline == "imagenet":
        from kerasdistill.data.imagenet_augment import random_resized_crop_flip as augment
    first_epoch, skip = divmod(start_step, steps)
    fit = multi_worker_fit(model, strategy) if config.strategy == "multi_worker" else model.fit
    epochs_done = 0
    for epoch in range(first_epoch, config.epochs):
        batches = epoch_pipeline(
            dataset, config.batch_size, steps, epoch, config.seed,
            skip_batches=skip if epoch == first_epoch else 0, with_index=with_index,
            augment=augment, shuffle_buffer=10_000 if augment else 50_000,
        )
        fit(
            batches,
            initial_epoch=epoch,
            epochs=epoch + 1,
            validation_data=eval_ds,
            callbacks=callbacks,
            verbose=min(config.verbose, 2),
            shuffle=False,  # The batches are shuffled, reproducibly, by epoch_pipeline.
        )
        if checkpointer.interrupted:
            raise RunInterrupted(
                f"Stopped by SIGTERM at step {checkpointer.step}; the checkpoint "
                f"{checkpointer.path} is saved. Run the same command again to resume."
            )
        epochs_done += 1
    return epochs_done


def eval_batches(config, dataset):
    """The test split as the input pipeline of `config` evaluates it."""
    from kerasdistill import data

    if config.input_pipeline == "imagenet":
        return data.imagenet_eval_pipeline(dataset)
    return data.eval_pipeline(dataset)


def accuracy(config, model, dataset):
    """Test accuracy of a classifier (normalized images -> logits).

    With `--strategy=multi_worker` every worker scores the whole test split
    itself (`evaluate_locally`).

    Returns:
        Dict with `accuracy` (top-1), and `top5` for the ImageNet pipeline.
    """
    import keras

    if config.strategy == "multi_worker":
        top5 = config.input_pipeline == "imagenet"
        from kerasdistill.training.multi_worker import evaluate_locally

        result = evaluate_locally(model, eval_batches(config, dataset), top5=top5)
        return {name: result[name] for name in ("accuracy", "top5") if name in result}
    metrics = [keras.metrics.SparseCategoricalAccuracy(name="accuracy")]
    if config.input_pipeline == "imagenet":
        metrics.append(keras.metrics.SparseTopKCategoricalAccuracy(k=5, name="top5"))
    model.compile(loss=_cross_entropy(), metrics=metrics)
    result = model.evaluate(eval_batches(config, dataset), verbose=0, return_dict=True)
    return {name: float(result[name]) for name in ("accuracy", "top5") if name in result}


def export(model, output_dir, formats, dataset):
    """Writes `model` in each of `formats` (see `config.EXPORT_FORMATS`).

    Returns:
        Dict `{format: path}` of what was written.
    """
    from kerasdistill.training import export as export_lib

    paths = {
        "keras": output_dir / "model.keras",
        "saved_model": output_dir / "saved_model",
        "tflite": output_dir / "model.tflite",
        "tflite_int8": output_dir / "model_int8.tflite",
    }
    for fmt in formats:
        if fmt == "keras":
            model.save(paths[fmt])
        elif fmt == "saved_model":
            export_lib.export_saved_model(model, paths[fmt], dataset.mean, dataset.std)
        else:
            quantization = "dynamic_int8" if fmt == "tflite_int8" else "none"
            export_lib.export_tflite(
                model, paths[fmt], dataset.mean, dataset.std, quantization=quantization
            )
    return {fmt: str(paths[fmt]) for fmt in formats}


def fit_with_checkpoints(
    config, model, dataset, steps, start_step, output_dir, extra_callbacks, strategy=None, *,
    digests,
):
    """Trains from `start_step` with checkpoints, logs and the SIGTERM handler.

    The checkpoints record the configuration and `digests`
    (`model_file_digests`), which `check_checkpoint` compares on resumption.

    Returns:
        `(epochs whose end was reached in this session, seconds spent)`.
    """
    from kerasdistill.training.callbacks import TrainingDiverged
    from kerasdistill.training.checkpointing import Checkpointer

    _keep_history_before(output_dir / "history.csv", start_step // steps)
    checkpointer = Checkpointer(
        output_dir / CHECKPOINT, steps, config.checkpoint_every_steps, start_step,
        metadata={"config": dataclasses.asdict(config), "model_files": digests},
    )
    callbacks = make_callbacks(config, output_dir, checkpointer, extra_callbacks)
    start = time.time()
    try:
        with checkpointer:
            epochs_done = train(
                config, model, dataset, steps, start_step, callbacks, checkpointer, strategy
            )
    except TrainingDiverged as error:
        raise TrainingDiverged(
            f"{error} Training stopped; the last good checkpoint {checkpointer.path} is kept "
            "(lower --lr or check the data)."
        ) from error
    return epochs_done, time.time() - start


def run(config, extra_callbacks=()):
    """Trains, evaluates and exports one model as `config` says.

    Every check of the configuration runs before any data is read or model
    built. Started again on the same output directory, the run resumes from
    its checkpoint.

    With `--strategy=multi_worker`, every worker of the cluster in `TF_CONFIG`
    runs the same command; only the chief (`distribute.is_chief`) writes to
    `config.output_dir`. The other workers compute the same outputs (saving
    reads variables with collectives that every worker joins), write them to a
    temporary directory they delete, and resume from the chief's checkpoint.

    Args:
        config: A `RunConfig`.
        extra_callbacks: More `keras.callbacks.Callback`s for `fit`.

    Returns:
        The metrics dict also written to `metrics.json`.

    Raises:
        UsageError: For a mistake in the configuration or its inputs.
        RunInterrupted: When SIGTERM stopped the run after a checkpoint.
        kerasdistill.training.callbacks.TrainingDiverged: When a loss term
            became non-finite; the last good checkpoint is kept.
    """
    config.validate()
    output_dir = pathlib.Path(config.output_dir)
    config_lib.check_output_dir(output_dir)
    digests = model_file_digests(config)
    check_checkpoint(config, output_dir, digests)
    strategy = set_up_runtime(config)
    check_replica_batch(config, strategy.num_replicas_in_sync)
    from kerasdistill.training import distribute

    if distribute.is_chief(strategy):
        return _train_evaluate_export(
            config, strategy, output_dir, output_dir, extra_callbacks, digests
        )
    with tempfile.TemporaryDirectory(prefix="kerasdistill_worker_") as scratch:
        return _train_evaluate_export(
            config, strategy, output_dir, pathlib.Path(scratch), extra_callbacks, digests
        )


def _train_evaluate_export(config, strategy, run_dir, output_dir, extra_callbacks, digests):
    """The body of `run`: resumes from `run_dir`'s checkpoint, writes to `output_dir`."""
    dataset = load_dataset(config, output_dir)
    steps = steps_per_epoch(config, dataset)
    with strategy.scope():
        models = build_models(config, dataset, steps)
        compile_model(config, models, steps)
        start_step = resume(models.fitted, run_dir)
        metrics = {}
        if models.teacher is not None:
            for name, value in accuracy(config, models.teacher, dataset).items():
                metrics[f"teacher_test_{name}"] = value
    epochs_done, seconds = fit_with_checkpoints(
        config, models.fitted, dataset, steps, start_step, output_dir, extra_callbacks, strategy,
        digests=digests,
    )
    exported = export(models.trained, output_dir, config.export_formats(), dataset)
    with strategy.scope():
        for name, value in accuracy(config, models.trained, dataset).items():
            metrics[f"test_{name}"] = value
    metrics.update(
        {
            "epochs": config.epochs,
            "steps_per_epoch": steps,
            "epochs_trained_this_session": epochs_done,
            "train_images_per_second": (config.epochs * steps - start_step) * config.batch_size
            / max(seconds, 1e-9),
            "dataset": dataset.name,
            "num_train": dataset.num_train,
            "exported": exported,
            "models": {
                role: {"name": model.name, "parameters": int(model.count_params())}
                for role, model in ((config.trained_role(), models.trained),
                                    ("teacher", models.teacher))
                if model is not None
            },
            "model_files": digests,
            "config": dataclasses.asdict(config),
        }
    )
    (output_dir / "metrics.json").write_text(json.dumps(metrics, indent=2, default=str))
    return metrics
