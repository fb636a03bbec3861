"""Trains a CIFAR teacher, a student alone, or distils a student.

    python experiments/cifar100.py --flagfile=experiments/flags/resnet32x4_resnet8x4_kd.cfg

See experiments/runner.py for what a run writes to --output_dir.
"""

import json
import pathlib
import sys

from absl import app, flags

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from experiments import runner  # noqa: E402

runner.define_flags(flags)


def main(argv):
    del argv
    metrics = runner.run(runner.config_from_flags(flags.FLAGS))
    print(json.dumps({k: v for k, v in metrics.items() if k != "config"}, indent=2))


if __name__ == "__main__":
    app.run(main)
