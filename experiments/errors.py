"""How the experiment scripts end on a user mistake: one line, exit status 2.

A script's entry point is `errors.run_app(main)` instead of `absl.app.run(main)`.
Flag parsing errors and every `UsageError` raised by the run print one line,
`error: <what is wrong and what is accepted>`, on stderr and exit with status 2;
a `RunInterrupted` (SIGTERM) and a diverged training
(`kerasdistill.training.callbacks.TrainingDiverged`) print one line and exit
with 143 and 1. The traceback is printed too when the environment variable
`KERASDISTILL_VERBOSE=1` is set or the command line holds `--verbose=3`.
"""

import os
import sys
import traceback

USAGE_EXIT_STATUS = 2
VERBOSE_ENV = "KERASDISTILL_VERBOSE"


class UsageError(ValueError):
    """A mistake in the flags or inputs of a run; its message is the whole report."""


class RunInterrupted(RuntimeError):
    """The run stopped on SIGTERM after saving a checkpoint it can resume from."""


def _exit_status(error):
    """The exit status for `error`, or None for errors that are bugs (re-raised)."""
    from absl import flags

    if isinstance(error, (UsageError, flags.Error)):
        return USAGE_EXIT_STATUS
    if isinstance(error, RunInterrupted):
        return 143  # 128 + SIGTERM, as a shell reports a process it terminated.
    if "kerasdistill.training.callbacks" in sys.modules:
        from kerasdistill.training.callbacks import TrainingDiverged

        if isinstance(error, TrainingDiverged):
            return 1
    return None


def _wants_traceback(argv):
    return os.environ.get(VERBOSE_ENV, "") not in ("", "0") or "--verbose=3" in argv


def report(error, argv=()):
    """Prints `error` as one line on stderr (with its traceback if asked) and exits.

    Args:
        error: The exception that ends the program.
        argv: The command line, read for `--verbose=3`.

    Raises:
        SystemExit: With the status that belongs to the error's type (2 for
            usage errors, including absl flag errors).
    """
    status = _exit_status(error)
    if status is None:
        raise error
    if _wants_traceback(argv):
        traceback.print_exception(error, file=sys.stderr)
    message = " ".join(str(error).split())
    print(f"error: {message}", file=sys.stderr, flush=True)
    sys.exit(status)


def parse_flags(argv):
    """An `absl.app.run` `flags_parser` that reports flag errors in one line."""
    from absl import flags

    try:
        return flags.FLAGS(argv)
    except flags.Error as error:
        report(error, argv)


def run_app(main, argv=None):
    """`absl.app.run(main)` with one-line error reports (see the module docstring).

    Args:
        main: The script's `main(argv)`.
        argv: The command line (default `sys.argv`).
    """
    from absl import app

    argv = sys.argv if argv is None else argv
    try:
        app.run(main, argv=argv, flags_parser=parse_flags)
    except Exception as error:  # noqa: BLE001 - report() re-raises what is a bug.
        report(error, argv)
