"""Trains the CIFAR-10 teacher that experiments/quickstart.py ships with.

    python experiments/train_quickstart_teacher.py

Trains a resnet20 on the full real CIFAR-10 (the shared archive, 50,000 train /
10,000 test images) with experiments/runner.py, then writes the trained model
to `--destination` (a `.keras` file, without optimizer state) and its measured
test accuracy next to it (same name, `.json`). Every `runner.py` flag applies
(`--epochs`, `--lr`, `--batch_size`, ...); an interrupted run resumes from its
last finished epoch when started again with the same --output_dir.
"""

import json
import os
import pathlib

from absl import flags

from experiments import errors, quiet, run_flags, runner

REPO = pathlib.Path(__file__).resolve().parents[1]

SHARED = pathlib.Path(os.environ.get("KERASDISTILL_SHARED", REPO.parent / "shared"))
DESTINATION = REPO / "data" / "cifar10_resnet20_teacher.keras"
MINI = REPO / "data" / "cifar10-mini.tar.gz"

run_flags.define_flags(
    flags,
    defaults={
        "mode": "teacher",
        "teacher": "resnet20",
        "dataset": str(SHARED / "data" / "cifar10-jpeg.tar.gz"),
        # About three passes over the 50,000 images as 6 checkpointed "epochs" of 400 steps
        # (LR 0.1, step decay): 28 minutes on the shared 2-core development CPU, 70.4% test
        # accuracy. More epochs give a better teacher.
        "epochs": 6,
        "steps_per_epoch": 400,
        "batch_size": 64,
        "lr": 0.1,
        "output_dir": "runs/quickstart_teacher",
    },
)
flags.DEFINE_string("destination", str(DESTINATION), "Where the trained teacher is written.")
FLAGS = flags.FLAGS


def mini_test_accuracy(model):
    """Top-1 accuracy of `model` on the bundled mini test set, normalized as the quickstart does."""
    import numpy as np

    from kerasdistill import data

    test = data.eval_pipeline(data.load(str(MINI)))
    labels = np.concatenate([y.numpy() for _, y in test])
    return float(np.mean(np.argmax(model.predict(test, verbose=0), -1) == labels))


def write_teacher(run_dir, destination, metrics):
    """Writes the run's model without optimizer state, and its accuracies as JSON.

    The file holds the model of standardized images, without the run's
    normalization layer in front (the runs that read it put it back).

    Args:
        run_dir: The run's output directory (holding `model.keras`).
        destination: Path of the `.keras` file to write.
        metrics: The dict `runner.run` returned.

    Returns:
        The dict written to the `.json` file next to `destination`.
    """
    import keras

    from kerasdistill import models

    config = metrics["config"]
    trained = keras.saving.load_model(pathlib.Path(run_dir) / "model.keras")
    clean = models.get(config["teacher"], num_classes=trained.output_shape[-1])
    clean.set_weights(trained.get_weights())
    destination = pathlib.Path(destination)
    destination.parent.mkdir(parents=True, exist_ok=True)
    clean.save(destination)
    record = {
        "model": config["teacher"],
        "test_accuracy": metrics["test_accuracy"],
        "mini_test_accuracy": mini_test_accuracy(clean),
        "dataset": metrics["dataset"],
        "num_train": metrics["num_train"],
        "epochs": config["epochs"],
        "steps_per_epoch": metrics["steps_per_epoch"],
        "batch_size": config["batch_size"],
        "lr": config["lr"],
        "seed": config["seed"],
        "train_images_per_second": round(metrics["train_images_per_second"], 1),
    }
    destination.with_suffix(".json").write_text(json.dumps(record, indent=2) + "\n")
    return record


def train_teacher(argv):
    del argv
    config = run_flags.config_from_flags(FLAGS)
    if config.mode != "teacher":
        raise errors.UsageError(
            f"This script trains a teacher: --mode must be 'teacher', got {config.mode!r}."
        )
    if "keras" not in config.export_formats():
        raise errors.UsageError(
            f"--export must include 'keras' (the teacher file is made from it), "
            f"got {config.export!r}."
        )
    quiet.quiet_libraries(config.verbose)
    metrics = runner.run(config)
    print(json.dumps(write_teacher(config.output_dir, FLAGS.destination, metrics), indent=2))


def main():
    """The `kerasdistill-train-quickstart-teacher` command (pyproject.toml)."""
    errors.run_app(train_teacher)


if __name__ == "__main__":
    main()
