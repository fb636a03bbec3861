"""Training one run: runtime, methods and models, optimizer, the epoch loop with checkpoints.

`runner.run` calls these in order; they read the `RunConfig` and the run's
`pipelines.Pipeline` and raise `UsageError` for what the configuration or its
inputs make impossible.
"""

import dataclasses
import json
import time

from experiments import model_specs
from experiments.artifacts import CHECKPOINT
from experiments.errors import RunInterrupted, UsageError


@dataclasses.dataclass
class Models:
    """What `build_models` returns.

    Attributes:
        fitted: The model `fit` trains (a Distiller in distill mode).
        trained: The classifier that is exported (the student in distill mode).
        teacher: The teacher in distill mode, else None.
        methods: The distillation methods (distill mode).
    """

    fitted: object
    trained: object
    teacher: object = None
    methods: list = dataclasses.field(default_factory=list)


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


def check_replica_batch(config, methods, num_replicas):
    """Checks that the global batch splits over the replicas into batches the methods can use.

    Args:
        config: The `RunConfig`.
        methods: `Plan.methods`: `(name, class, kwargs)` per method.
        num_replicas: The strategy's replicas.

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
    needs = {name: cls.min_batch_per_replica for name, cls, _ in methods}
    short = sorted(m for m, least in needs.items() if per_replica < least)
    if short:
        raise UsageError(
            f"--batch_size={config.batch_size} gives {per_replica} sample(s) per replica, too "
            f"few for {', '.join(short)}; use >= {max(needs[m] for m in short)} per replica."
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


def build_methods(methods):
    """Instantiates the run's methods, each checking its own arguments.

    A method argument travels from the command line to its method in 8 calls,
    counted from the flag parse: `--method_kwargs='{"msdcrd": {"temperature": 0.2}}'`
    lands on its flag in 1 `errors.parse_flags`, then 2 `cli.main` ->
    3 `run_flags.config_from_flags` (`json.loads`) -> 4 `runner.run` ->
    5 `RunConfig.validate` (the JSON's structure checked, `MSDCRD` resolved into
    `Plan.methods`) -> 6 `build_models` -> 7 `build_methods` -> 8 `MSDCRD.__init__`,
    which checks the value.

    Args:
        methods: `Plan.methods`: `(name, class, kwargs)` per method.

    Returns:
        The methods, in order. What they need of the training set they take in
        `set_up`, from the Distiller's `training_data` (`build_models`).

    Raises:
        UsageError: When a method rejects its `--method_kwargs`.
    """
    built = []
    for name, cls, kwargs in methods:
        try:
            built.append(cls(**kwargs))
        except (TypeError, ValueError) as error:  # The method's own check of its arguments.
            raise UsageError(f"--method_kwargs {name} {json.dumps(kwargs)}: {error}") from error
    return built


def training_data(method_list, dataset, steps_per_epoch):
    """The `TrainingData` of `dataset`: the labels only when a method `needs` them.

    Args:
        method_list: The built methods.
        dataset: The run's `kerasdistill.data.Dataset`.
        steps_per_epoch: Training steps per epoch.

    Returns:
        A `kerasdistill.methods.TrainingData`.
    """
    from kerasdistill import methods

    needs_labels = any("train_labels" in method.needs for method in method_list)
    return methods.TrainingData(
        train_labels=dataset.train_labels() if needs_labels else None,
        steps_per_epoch=steps_per_epoch,
    )


def build_models(config, plan, dataset, pipeline, steps):
    """Builds the model to train, then in distill mode loads the teacher and builds the methods.

    The order (student, teacher, methods) fixes what the seeded initializers draw.
    Both models take the pipeline's unnormalized images: each is put behind
    `model_specs.normalizing` with the dataset's statistics.

    Args:
        config: The `RunConfig`.
        plan: Its `Plan` (`RunConfig.validate`).
        dataset: The run's `kerasdistill.data.Dataset`.
        pipeline: The run's `pipelines.Pipeline`.
        steps: Training steps per epoch.

    Returns:
        The `Models`.

    Raises:
        UsageError: When a model cannot be built or loaded for the dataset, a
            method rejects its arguments, or the methods cannot read the models.
    """
    import kerasdistill
    from kerasdistill.training import distribute

    shape = pipeline.image_shape
    trained = plan.model.build(dataset.num_classes, shape)
    if config.sync_batchnorm:
        trained = distribute.synchronized_batchnorm(trained)
    trained = model_specs.normalizing(trained, dataset)
    if config.mode != "distill":
        return Models(fitted=trained, trained=trained)
    teacher = model_specs.normalizing(plan.teacher.load(dataset.num_classes, shape), dataset)
    method_list = build_methods(plan.methods)
    try:
        distiller = kerasdistill.Distiller(
            teacher,
            trained,
            method_list,
            ce_weight=config.resolved_ce_weight(),
            label_smoothing=config.label_smoothing,
            training_data=training_data(method_list, dataset, steps),
        )
    except ValueError as error:  # A tap the models lack, or shapes a method cannot pair.
        raise UsageError(f"--method={config.method!r} with --method_kwargs: {error}") from error
    return Models(fitted=distiller, trained=trained, teacher=teacher, methods=method_list)


def learning_rate(config, steps):
    """The configured LR schedule over optimizer steps (`steps` per epoch)."""
    from kerasdistill.training import schedules

    if config.lr_schedule == "cosine":
        warmup = round(config.lr_warmup_epochs * steps)
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

    clipping = {"clipnorm": config.clipnorm} if config.clipnorm else {}
    if config.optimizer == "adamw":
        optimizer = keras.optimizers.AdamW(
            learning_rate(config, steps), weight_decay=config.weight_decay, **clipping
        )
    else:
        optimizer = TorchSGD(
            learning_rate(config, steps),
            momentum=config.momentum,
            weight_decay=config.weight_decay,
            **clipping,
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
        callbacks.ThroughputLogger(config.batch_size),
        keras.callbacks.CSVLogger(str(output_dir / "history.csv"), append=True),
        keras.callbacks.TensorBoard(str(output_dir / "tensorboard"), write_graph=False),
        *extra_callbacks,
    ]


def train(config, pipeline, models, dataset, steps, start_step, callbacks, checkpointer,
          strategy=None):
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

    model = models.fitted
    with_index = any(m.uses_sample_indices for m in models.methods)
    eval_ds = pipeline.eval_batches(dataset)
    first_epoch, skip = divmod(start_step, steps)
    fit = multi_worker_fit(model, strategy) if config.strategy == "multi_worker" else model.fit
    epochs_done = 0
    for epoch in range(first_epoch, config.epochs):
        batches = epoch_pipeline(
            dataset, config.batch_size, steps, epoch, config.seed,
            skip_batches=skip if epoch == first_epoch else 0, with_index=with_index,
            augment=pipeline.augment, shuffle_buffer=pipeline.shuffle_buffer, normalize=False,
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


def accuracy(config, pipeline, model, dataset):
    """Test accuracy of a classifier ([0, 255] pixels -> logits).

    With `--strategy=multi_worker` every worker scores the whole test split
    itself (`evaluate_locally`).

    Returns:
        Dict with `accuracy` (top-1), and `top5` where the pipeline scores it.
    """
    import keras

    if config.strategy == "multi_worker":
        from kerasdistill.training.multi_worker import evaluate_locally

        result = evaluate_locally(model, pipeline.eval_batches(dataset), top5=pipeline.top5)
        return {name: result[name] for name in ("accuracy", "top5") if name in result}
    metrics = [keras.metrics.SparseCategoricalAccuracy(name="accuracy")]
    if pipeline.top5:
        metrics.append(keras.metrics.SparseTopKCategoricalAccuracy(k=5, name="top5"))
    model.compile(loss=_cross_entropy(), metrics=metrics)
    result = model.evaluate(pipeline.eval_batches(dataset), verbose=0, return_dict=True)
    return {name: float(result[name]) for name in ("accuracy", "top5") if name in result}


def fit_with_checkpoints(
    config, pipeline, models, dataset, steps, start_step, output_dir, extra_callbacks,
    strategy=None, *, digests,
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
        output_dir / CHECKPOINT, steps, config.checkpoint_every_steps,
        metadata={"config": dataclasses.asdict(config), "model_files": digests},
    )
    callbacks = make_callbacks(config, output_dir, checkpointer, extra_callbacks)
    start = time.time()
    try:
        with checkpointer:
            epochs_done = train(config, pipeline, models, dataset, steps, start_step, callbacks,
                                checkpointer, strategy)
    except TrainingDiverged as error:
        raise TrainingDiverged(
            f"{error} Training stopped; the last good checkpoint {checkpointer.path} is kept "
            "(lower --lr or check the data)."
        ) from error
    return epochs_done, time.time() - start
