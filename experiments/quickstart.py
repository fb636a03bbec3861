"""End-to-end distillation in one command: teacher, student alone, KD student, export.

    python experiments/quickstart.py                     # bundled mini CIFAR-10, minutes
    python experiments/quickstart.py --dataset=cifar100  # the full reference job

The default runs offline on `data/cifar10-mini.tar.gz` (5,000 training and 1,000
test images of the real CIFAR-10, shipped with the project). Each stage writes
its own run directory under --output_dir (see experiments/runner.py).
"""

import pathlib
import sys

from absl import app, flags

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from experiments import runner  # noqa: E402

MINI = str(REPO / "data" / "cifar10-mini.tar.gz")
# (teacher, student, epochs) for the bundled mini set and for the full CIFAR-100 job.
PLANS = {"mini": ("resnet20", "resnet8", 8), "full": ("resnet32x4", "resnet8x4", 240)}

flags.DEFINE_string("dataset", MINI, "The mini set (default), cifar100, cifar10 or a folder.")
flags.DEFINE_string("data_dir", "", "tensorflow-datasets data directory.")
flags.DEFINE_bool("download", False, "Allow tensorflow-datasets to download.")
flags.DEFINE_integer("epochs", 0, "Epochs per stage (0 = 8 on the mini set, else 240).")
flags.DEFINE_integer("batch_size", 64, "Training batch size.")
flags.DEFINE_integer("steps_per_epoch", 0, "Cap on steps per epoch (0 = a full pass).")
flags.DEFINE_string("teacher", "", "Teacher (default resnet20 on the mini set, else resnet32x4).")
flags.DEFINE_string("student", "", "Student (default resnet8 on the mini set, else resnet8x4).")
flags.DEFINE_string("output_dir", "runs/quickstart", "Root of the three run directories.")
flags.DEFINE_integer("seed", 0, "Random seed.")
FLAGS = flags.FLAGS


def main(argv):
    del argv
    teacher, student, epochs = PLANS["mini" if FLAGS.dataset == MINI else "full"]
    teacher, student = FLAGS.teacher or teacher, FLAGS.student or student
    root = pathlib.Path(FLAGS.output_dir)
    common = dict(
        teacher=teacher, student=student, dataset=FLAGS.dataset, data_dir=FLAGS.data_dir,
        download=FLAGS.download, epochs=FLAGS.epochs or epochs,
        steps_per_epoch=FLAGS.steps_per_epoch, batch_size=FLAGS.batch_size, seed=FLAGS.seed,
    )
    stages = {
        f"teacher {teacher}": runner.RunConfig(
            mode="teacher", output_dir=str(root / "teacher"), **common
        ),
        f"student {student} alone": runner.RunConfig(
            mode="student", output_dir=str(root / "student"), **common
        ),
        f"student {student} + KD": runner.RunConfig(
            mode="distill", method="kd", ce_weight=0.1,
            method_kwargs={"kd": {"weight": 0.9, "temperature": 4.0}},
            teacher_weights=str(root / "teacher" / "model.keras"),
            output_dir=str(root / "kd"), **common,
        ),
    }
    results = {name: runner.run(config) for name, config in stages.items()}
    print(f"\n{'run':<28}{'test accuracy':>14}   exported SavedModel")
    for (name, metrics), config in zip(results.items(), stages.values()):
        print(f"{name:<28}{metrics['test_accuracy']:>14.4f}   {config.output_dir}/saved_model")


if __name__ == "__main__":
    app.run(main)
