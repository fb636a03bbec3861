"""The one-line error report of the scripts, by error type."""

import pytest
from absl import flags

from experiments import errors, run_flags
from kerasdistill.training.callbacks import TrainingDiverged
from tests.experiments.private_flags import Definer


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


@pytest.mark.parametrize("argv, env", [(["prog", "--verbose=3"], None), (["prog"], "1")])
def test_verbose_flag_or_environment_adds_the_traceback(capsys, monkeypatch, argv, env):
    monkeypatch.delenv(errors.VERBOSE_ENV, raising=False)
    if env:
        monkeypatch.setenv(errors.VERBOSE_ENV, env)
    try:
        raise errors.UsageError("bad")
    except errors.UsageError as error:
        with pytest.raises(SystemExit):
            errors.report(error, argv=argv)
    err = capsys.readouterr().err
    assert err.startswith("Traceback") and err.endswith("error: bad\n")


def test_other_errors_are_bugs_and_keep_their_traceback():
    with pytest.raises(KeyError):
        errors.report(KeyError("x"))


@pytest.mark.parametrize(
    "args, message",
    [
        (["--epochs=ten"], "error: flag --epochs=ten: invalid literal for int() with base 10: "
         "'ten'\n"),
        (["--mode=teach"], "error: flag --mode=teach: value should be one of "
         "<teacher|student|distill>\n"),
        (["--epoch=3"], "error: Unknown command line flag 'epoch'. Did you mean: epochs ?\n"),
    ],
)
def test_flag_parsing_errors_print_one_line_and_exit_2(capsys, monkeypatch, args, message):
    monkeypatch.delenv(errors.VERBOSE_ENV, raising=False)
    values = flags.FlagValues()
    run_flags.define_flags(Definer(values))
    with pytest.raises(flags.Error) as parse_error:
        values(["prog", *args])
    with pytest.raises(SystemExit) as exit_info:
        errors.report(parse_error.value, argv=["prog", *args])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == message


def test_run_app_reports_what_main_raises_in_one_line(capsys, monkeypatch):
    monkeypatch.delenv(errors.VERBOSE_ENV, raising=False)

    def main(argv):
        del argv
        raise errors.UsageError("--lr=-1.0 is not accepted; it must be a finite number > 0.")

    with pytest.raises(SystemExit) as exit_info:
        errors.run_app(main, argv=["prog"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == (
        "error: --lr=-1.0 is not accepted; it must be a finite number > 0.\n"
    )
