"""What a run leaves in its directory besides the training logs (the list is in runner.py).

Checkpoint identity (the configuration and the SHA-256 of the model files read, which
`check_checkpoint` compares on resumption), the exports, and metrics.json.
"""

import dataclasses
import hashlib
import json

from experiments import config as config_lib
from experiments.errors import UsageError

CHECKPOINT = "checkpoint.npz"


def model_file_digests(plan):
    """`{flag: SHA-256}` of the model files the run reads (`Plan.files`)."""
    return {flag: _sha256(path) for flag, path in plan.files().items()}


def _sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


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
    replaced = [flag for flag, digest in digests.items()
                if saved_digests.get(flag, digest) != digest]
    if replaced:
        listed = ", ".join(f"--{flag}={getattr(config, flag)!r}" for flag in replaced)
        raise UsageError(
            f"--output_dir={str(output_dir)!r} holds the checkpoint of a run that read other "
            f"contents from {listed} (the file changed since); use another --output_dir, or "
            "restore the file to resume."
        )


def export(model, output_dir, formats):
    """Writes `model` ([0, 255] pixels -> logits) in each of `formats` (`config.EXPORT_FORMATS`).

    Returns:
        Dict `{format: path}` of what was written.
    """
    from kerasdistill.training import export as export_lib

    paths = {
        "keras": output_dir / "model.keras",
        "saved_model": output_dir / "saved_model",
        "tflite": output_dir / "model.tflite",
        "tflite_int8": output_dir / "model_int8.tflite",
        "onnx": output_dir / "model.onnx",
    }
    for fmt in formats:
        if fmt == "keras":
            model.save(paths[fmt])
        elif fmt == "saved_model":
            export_lib.export_saved_model(model, paths[fmt])
        elif fmt == "onnx":
            export_lib.export_onnx(model, paths[fmt])
        else:
            quantization = "dynamic_int8" if fmt == "tflite_int8" else "none"
            export_lib.export_tflite(model, paths[fmt], quantization=quantization)
    return {fmt: str(paths[fmt]) for fmt in formats}


def write_metrics(config, output_dir, metrics, *, models, dataset, steps, start_step, seconds,
                  epochs_done, exported, digests):
    """Completes `metrics` (the accuracies) with the run's facts and writes `metrics.json`.

    Returns:
        The completed dict.
    """
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
