"""Trains a CIFAR teacher, a student alone, or distils a student.

    python experiments/cifar100.py --flagfile=experiments/flags/resnet32x4_resnet8x4_kd.cfg

See experiments/runner.py for what a run writes to --output_dir. A mistake in
the flags or inputs ends the program with one line on stderr and exit status 2
(`KERASDISTILL_VERBOSE=1` or `--verbose=3` adds the traceback).
"""

import os
import pathlib
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from absl import flags  # noqa: E402

from experiments import cli, config, errors  # noqa: E402

config.define_flags(flags)


if __name__ == "__main__":
    errors.run_app(cli.main)
