"""One training run (teacher, student alone, or distillation), shared by the scripts.

`run` checks everything it can before any data is read, then loads the data
(`pipelines`), builds and trains (`trainer`) and writes what the run leaves
(`artifacts`). A run writes to its output directory:

    checkpoint.npz     resumable state (weights, optimizer, method state, position),
                       every --checkpoint_every_steps steps, every epoch and on SIGTERM
    history.csv        one row per epoch
    tensorboard/       TensorBoard logs: every loss term, accuracy, learning rate, images/s
    model.keras        the trained model (the student in distill mode): float32 [0, 255]
                       images -> logits, its normalization its first layer
    saved_model/       TensorFlow SavedModel of it: float32 [0, 255] images -> logits
    model.tflite, model_int8.tflite   with --export=...,tflite,tflite_int8
    model.onnx         with --export=...,onnx (needs the packages tf2onnx and onnx)
    metrics.json       test accuracy, epochs, throughput, the configuration, the models
                       (name, parameters) and the SHA-256 of the model files read

A run started again with the same output directory resumes from its checkpoint
and ends with exactly the weights of an uninterrupted run (with
--deterministic); a checkpoint of another configuration, or of other contents
of its model files (`--teacher_weights`, a `.keras` `--student`), is refused.
"""

import contextlib
import pathlib
import tempfile

from experiments import artifacts, pipelines, trainer
from experiments import config as config_lib
from experiments.artifacts import export
from experiments.config import RunConfig
from experiments.pipelines import load_dataset

__all__ = ["RunConfig", "export", "load_dataset", "run"]


def run(config, extra_callbacks=()):
    """Trains, evaluates and exports one model as `config` says.

    The configuration is validated once (`RunConfig.validate`), before any
    data is read or model built. Started again on the same output directory, the run resumes from
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
    plan = config.validate()
    run_dir = pathlib.Path(config.output_dir)
    config_lib.check_output_dir(run_dir)
    digests = artifacts.model_file_digests(plan)
    artifacts.check_checkpoint(config, run_dir, digests)
    strategy = trainer.set_up_runtime(config)
    trainer.check_replica_batch(config, plan.methods, strategy.num_replicas_in_sync)
    pipeline = pipelines.for_config(config)
    with _writable_dir(strategy, run_dir) as output_dir:
        dataset = load_dataset(config, output_dir, pipeline)
        steps = trainer.steps_per_epoch(config, dataset)
        metrics = {}
        with strategy.scope():
            models = trainer.build_models(config, plan, dataset, pipeline, steps)
            trainer.compile_model(config, models, steps)
            start_step = trainer.resume(models.fitted, run_dir)
            if models.teacher is not None:
                scores = trainer.accuracy(config, pipeline, models.teacher, dataset)
                metrics.update({f"teacher_test_{name}": value for name, value in scores.items()})
        epochs_done, seconds = trainer.fit_with_checkpoints(
            config, pipeline, models, dataset, steps, start_step, output_dir, extra_callbacks,
            strategy, digests=digests,
        )
        exported = export(models.trained, output_dir, config.export_formats())
        with strategy.scope():
            scores = trainer.accuracy(config, pipeline, models.trained, dataset)
            metrics.update({f"test_{name}": value for name, value in scores.items()})
        return artifacts.write_metrics(
            config, output_dir, metrics, models=models, dataset=dataset, steps=steps,
            start_step=start_step, seconds=seconds, epochs_done=epochs_done, exported=exported,
            digests=digests,
        )


@contextlib.contextmanager
def _writable_dir(strategy, run_dir):
    """The directory this process writes to: `run_dir` on the chief, else a scratch one."""
    from kerasdistill.training import distribute

    if distribute.is_chief(strategy):
        yield run_dir
        return
    with tempfile.TemporaryDirectory(prefix="kerasdistill_worker_") as scratch:
        yield pathlib.Path(scratch)
