"""Trains a CIFAR teacher, a student alone, or distils a student.

    python experiments/cifar100.py --flagfile=experiments/flags/resnet32x4_resnet8x4_kd.cfg

See experiments/runner.py for what a run writes to --output_dir. A mistake in
the flags or inputs ends the program with one line on stderr and exit status 2
(`KERASDISTILL_VERBOSE=1` or `--verbose=3` adds the traceback).
"""

from absl import flags

from experiments import cli, errors, run_flags

run_flags.define_flags(flags)


def main():
    """The `kerasdistill-cifar100` command (`[project.scripts]` of pyproject.toml)."""
    errors.run_app(cli.main)


if __name__ == "__main__":
    main()
