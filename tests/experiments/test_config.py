"""Configuration mistakes are refused before any work, naming the value and what is accepted."""

import dataclasses

import pytest

from experiments import config as config_lib
from experiments.errors import UsageError


def _distill(tmp_path, **overrides):
    teacher = tmp_path / "teacher.keras"
    teacher.write_bytes(b"")
    fields = dict(mode="distill", teacher="resnet8", student="resnet8", method="kd",
                  teacher_weights=str(teacher), output_dir=str(tmp_path / "out"))
    return config_lib.RunConfig(**{**fields, **overrides})


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"epochs": 0}, r"--epochs=0 is not accepted; it must be a finite number > 0"),
        ({"epochs": 2.5}, r"--epochs=2.5"),
        ({"batch_size": -4}, r"--batch_size=-4 is not accepted"),
        ({"lr": 0.0}, r"--lr=0.0 is not accepted; it must be a finite number > 0"),
        ({"lr": float("nan")}, r"--lr=nan"),
        ({"momentum": 1.5}, r"--momentum=1.5 .* >= 0 and < 1"),
        ({"weight_decay": -1e-4}, r"--weight_decay=-0.0001"),
        ({"ce_weight": float("inf")}, r"--ce_weight=inf"),
        ({"method_kwargs": {"dkd": {"nckd_weight": 1}}}, r"names method 'dkd', which is not in"),
        ({"method_kwargs": {"kd": 4}}, r"must be a JSON object of arguments"),
        ({"mode": "teach"}, r"--mode='teach' is not accepted; expected one of teacher, student"),
        ({"strategy": "tpu"}, r"--strategy='tpu' .* auto, default, mirrored, multi_worker"),
        ({"mixed_precision": "fp8"}, r"--mixed_precision='fp8'"),
        ({"export": "saved_model,onnx"}, r"--export='onnx' .* saved_model, keras, tflite"),
        ({"optimizer": "lamb"}, r"--optimizer='lamb' is not accepted; expected one of sgd, adamw"),
        ({"label_smoothing": 1.0}, r"--label_smoothing=1.0 .* >= 0 and < 1"),
        ({"lr_warmup_epochs": 2}, r"--lr_warmup_epochs=2 needs --lr_schedule=cosine"),
        ({"lr_schedule": "cosine", "epochs": 4, "lr_warmup_epochs": 4},
         r"--lr_warmup_epochs=4 .* < 4"),
        ({"teacher_weights": ""}, r"needs --teacher_weights"),
        ({"teacher_weights": "/no/such/file.keras"}, r"'/no/such/file.keras': no such file"),
        ({"student": ""}, r"^--mode=distill needs --student \(a zoo name, "
         r"keras.applications.<Name> or a path to a .keras file\).$"),
        ({"mode": "teacher", "teacher": ""}, r"^--mode=teacher needs --teacher \(a zoo name"),
        ({"teacher": "runs/teacher.h5"}, r"^--teacher='runs/teacher.h5' is not a .keras model "
         r"file; expected a zoo name, keras.applications.<Name> or a path to a .keras file"),
    ],
)
def test_impossible_values_fail_without_tensorflow(tmp_path, overrides, message):
    with pytest.raises(UsageError, match=message):
        config_lib.check_values(_distill(tmp_path, **overrides))


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"student": "resnet9"}, r"Unknown student model 'resnet9'. Did you mean 'resnet8'\?"),
        ({"teacher": "wrn_40"}, r"Unknown teacher model 'wrn_40'.*Accepted: .*wrn_40_2"),
        ({"method": "kd,msdcr"}, r"Unknown method 'msdcr'. Did you mean 'msdcrd'\?"),
    ],
)
def test_unknown_names_suggest_the_closest(tmp_path, overrides, message):
    with pytest.raises(UsageError, match=message):
        _distill(tmp_path, **overrides).validate()


@pytest.mark.parametrize(
    "overrides",
    [
        {"student": "keras.applications.MobileNetV3Small"},
        {"teacher": ""},  # Any architecture --teacher_weights holds.
        {"teacher": "keras.applications.ResNet50"},
    ],
)
def test_application_and_empty_model_flags_are_accepted(tmp_path, overrides):
    _distill(tmp_path, **overrides).validate()


def test_teacher_may_name_the_teacher_weights_file_itself(tmp_path):
    config = _distill(tmp_path)
    config.teacher = str(tmp_path / "." / "teacher.keras")
    config.validate()


def test_readme_flag_table_is_the_one_the_fields_give():
    from experiments import run_flags
    from tests.conftest import REPO

    readme = (REPO / "README.md").read_text()
    section = readme.split("## Experiment scripts", 1)[1].split("\n## ", 1)[0]
    assert run_flags.flag_table() in section, "run python -m experiments.run_flags"
    rows = [line.split("|")[1].strip(" `") for line in section.splitlines()
            if line.startswith("| `--")]
    assert rows == [f"--{field.name}" for field in dataclasses.fields(config_lib.RunConfig)]


def test_flags_take_name_default_help_and_choices_from_the_fields():
    from absl import flags

    from experiments import run_flags

    values = flags.FlagValues()

    class _Definer:
        def __getattr__(self, name):
            return lambda *a, **k: getattr(flags, name)(*a, flag_values=values, **k)

    run_flags.define_flags(_Definer(), defaults={"epochs": 7})
    for field in dataclasses.fields(config_lib.RunConfig):
        assert field.metadata["help"] in values[field.name].help, field.name
    assert values["epochs"].default == 7 and values["lr"].default == 0.05
    assert values["optimizer"].parser.enum_values == list(config_lib.OPTIMIZERS)
    values(["prog", "--method_kwargs={\"kd\": {\"weight\": 0.5}}", "--export=keras"])
    config = run_flags.config_from_flags(values)
    assert config.method_kwargs == {"kd": {"weight": 0.5}} and config.epochs == 7


class _TrainLabels:
    """The one part of a dataset that building the methods reads."""

    def train_labels(self):
        return [0, 1, 2, 3] * 8


@pytest.mark.parametrize(
    "method_kwargs, message",
    [
        ({"kd": {"temprature": 4.0}}, r"^--method_kwargs kd \{\"temprature\": 4.0\}: KD got an "
         r"unexpected argument 'temprature'; did you mean 'temperature'\?"),
        ({"kd": {"temperature": 0}}, r"^--method_kwargs kd \{\"temperature\": 0\}: .*temperature "
         r"must be > 0"),
    ],
)
def test_each_method_checks_its_own_arguments_once(tmp_path, method_kwargs, message):
    from experiments import runner

    config = _distill(tmp_path, method_kwargs=method_kwargs)
    config.validate()  # Names only: the arguments are the method's to check.
    with pytest.raises(UsageError, match=message):
        runner.build_methods(config, _TrainLabels(), steps_per_epoch=10)


@pytest.mark.parametrize(
    "method, former, name",
    [("msdcrd", "lambda_sw", "sw_weight"), ("msdcrd", "beta", "weight"),
     ("dkd", "alpha", "tckd_weight"), ("dkd", "beta", "nckd_weight")],
)
def test_a_former_argument_name_names_its_replacement(tmp_path, method, former, name):
    from experiments import runner

    config = _distill(tmp_path, method=method, method_kwargs={method: {former: 1.0}})
    config.validate()
    with pytest.raises(UsageError, match=rf"^--method_kwargs {method} .*unexpected argument "
                                         rf"'{former}'; did you mean '{name}'\?"):
        runner.build_methods(config, _TrainLabels(), steps_per_epoch=10)


def test_dkd_accepts_warmup_epochs(tmp_path):
    from experiments import runner

    config = _distill(tmp_path, method="dkd", method_kwargs={"dkd": {"warmup_epochs": 20}})
    config.validate()
    [dkd] = runner.build_methods(config, _TrainLabels(), steps_per_epoch=10)
    assert dkd.get_config()["warmup_steps"] == 200


def test_malformed_method_kwargs_json_names_the_flag():
    with pytest.raises(UsageError, match=r"--method_kwargs is not valid JSON .* '\{\"kd\": \{'"):
        config_lib.parse_method_kwargs('{"kd": {')


def test_unwritable_output_dir_is_refused(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(UsageError, match=r"--output_dir=.*file/run' cannot be written"):
        config_lib.check_output_dir(blocker / "run")


def test_only_resumable_fields_may_change():
    saved = config_lib.RunConfig(epochs=10).__dict__ | {"verbose": 0, "output_dir": "elsewhere"}
    assert config_lib.differences(config_lib.RunConfig(epochs=10), saved) == []
    changed = config_lib.differences(config_lib.RunConfig(epochs=12, lr=0.1), saved)
    assert changed == ["epochs", "lr"]


@pytest.mark.parametrize(
    "batch_size, replicas, message",
    [
        (1, 1, r"--batch_size=1 gives 1 sample\(s\) per replica, too few for msdcrd"),
        (6, 4, r"--batch_size=6 \(the global batch\) must be a multiple of the 4 replicas"),
    ],
)
def test_batch_must_give_each_replica_two_samples_for_contrastive_methods(
    tmp_path, batch_size, replicas, message
):
    from experiments import runner

    config = _distill(tmp_path, method="kd,msdcrd", batch_size=batch_size)
    with pytest.raises(UsageError, match=message):
        runner.check_replica_batch(config, replicas)
    runner.check_replica_batch(_distill(tmp_path, method="kd", batch_size=1), 1)
