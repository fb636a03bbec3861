"""The one-line error report of the scripts, by error type."""

import pytest

from experiments import errors
from kerasdistill.training.callbacks import TrainingDiverged


@pytest.mark.parametrize(
    "error, status",
    [
        (errors.UsageError("--lr=-1 is not accepted;\n it must be > 0."), 2),
        (errors.RunInterrupted("Stopped by SIGTERM at step 7."), 143),
        (TrainingDiverged("Loss term loss_kd is nan at training step 3."), 1),
    ],
)
def test_known_errors_print_one_line_and_exit_with_their_status(capsys, monkeypatch, error, status):
    monkeypatch.delenv(errors.VERBOSE_ENV, raising=False)
    with pytest.raises(SystemExit) as exit_info:
        errors.report(error, argv=["prog"])
    assert exit_info.value.code == status
    assert capsys.readouterr().err == f"error: {' '.join(str(error).split())}\n"


def test_verbose_flag_adds_the_traceback(capsys, monkeypatch):
    monkeypatch.delenv(errors.VERBOSE_ENV, raising=False)
    try:
        raise errors.UsageError("bad")
    except errors.UsageError as error:
        with pytest.raises(SystemExit):
            errors.report(error, argv=["prog", "--verbose=3"])
    err = capsys.readouterr().err
    assert err.startswith("Traceback") and err.endswith("error: bad\n")


def test_other_errors_are_bugs_and_keep_their_traceback():
    with pytest.raises(KeyError):
        errors.report(KeyError("x"))
