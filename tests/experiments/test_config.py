"""Configuration mistakes are refused by `RunConfig.validate`, before any work, in one line
naming the value and what is accepted."""

import dataclasses

import numpy as np
import pytest

from experiments import config as config_lib
from experiments import run_flags, trainer
from experiments.errors import UsageError
from experiments.model_specs import ModelSpec
from tests.experiments.private_flags import Definer


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
        ({"clipnorm": -1.0}, r"--clipnorm=-1.0 is not accepted; it must be a finite number >= 0"),
        ({"ce_weight": float("inf")}, r"--ce_weight=inf"),
        ({"method_kwargs": {"dkd": {"nckd_weight": 1}}}, r"names method 'dkd', which is not in"),
        ({"method_kwargs": {"kd": 4}}, r"must be a JSON object of arguments"),
        ({"mode": "teach"}, r"--mode='teach' is not accepted; expected one of teacher, student"),
        ({"strategy": "tpu"}, r"--strategy='tpu' .* auto, default, mirrored, multi_worker"),
        ({"mixed_precision": "fp8"}, r"--mixed_precision='fp8'"),
        ({"export": "saved_model,tensorrt"}, r"--export='tensorrt' .* tflite_int8, onnx"),
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
        ({"student": "runs/none/model.keras"}, r"^--student='runs/none/model.keras': no such file; "
         r"expected a zoo name, keras.applications.<Name> or a path to a .keras file.$"),
        ({"student": "runs/none/model.h5"}, r"^--student='runs/none/model.h5' is not a .keras "
         r"model file; expected a zoo name, keras.applications.<Name> or a path to a .keras file "
         r"\(re-save an HDF5 or SavedModel model with model.save\('model.keras'\)\).$"),
    ],
)
def test_impossible_values_are_refused(tmp_path, overrides, message):
    with pytest.raises(UsageError, match=message):
        _distill(tmp_path, **overrides).validate()


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"student": "resnet9"}, r"Unknown student model 'resnet9'. Did you mean 'resnet8'\?"),
        ({"teacher": "wrn_40"}, r"Unknown teacher model 'wrn_40'.*Accepted: .*wrn_40_2"),
        ({"method": "kd,msdcr"}, r"^--method='kd,msdcr': Unknown method 'msdcr'. Did you mean "
         r"'msdcrd'\? Available methods: "),
        ({"student": "keras.applications.MobileNetV3Smal"}, r"^Unknown student model "
         r"'keras.applications.MobileNetV3Smal'. Did you mean "
         r"'keras.applications.MobileNetV3Small' or "),
        ({"student": "MobileNetV3Small"}, r"^Unknown student model 'MobileNetV3Small'. Did you "
         r"mean 'keras.applications.MobileNetV3Small'\? Accepted: a zoo name \("),
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


def test_the_default_method_is_the_studys_recipe_and_method_kwargs_refine_it(tmp_path):
    from kerasdistill import methods

    config = _distill(tmp_path, method=config_lib.RunConfig().method)
    standardized_kd = {"temperature": 2.0, "weight": 9.0, "standardize": True}
    assert config.method == "default" and config.validate().methods == (
        ("kd", methods.KD, standardized_kd), ("msdcrd", methods.MSDCRD, {}))
    # An unset --ce_weight is the recipe's with `default`, 1 without it; a given one is kept.
    assert config.ce_weight is None and config.resolved_ce_weight() == 0.1
    assert _distill(tmp_path, method="kd,msdcrd").resolved_ce_weight() == 1.0
    assert _distill(tmp_path, method="default", ce_weight=0.5).resolved_ce_weight() == 0.5
    config = _distill(tmp_path, method="default,crd",
                      method_kwargs={"kd": {"temperature": 3.0}, "crd": {"weight": 0.5}})
    assert config.validate().methods == (
        ("kd", methods.KD, {**standardized_kd, "temperature": 3.0}), ("msdcrd", methods.MSDCRD, {}),
        ("crd", methods.CRD, {"weight": 0.5}))
    with pytest.raises(UsageError, match="names method 'dkd', which is not in --method='default'"):
        _distill(tmp_path, method="default", method_kwargs={"dkd": {}}).validate()


def test_teacher_may_name_the_teacher_weights_file_itself(tmp_path):
    config = _distill(tmp_path)
    config.teacher = str(tmp_path / "." / "teacher.keras")
    config.validate()


def test_validate_parses_the_model_flags_and_resolves_the_methods_once(tmp_path):
    from kerasdistill import methods

    config = _distill(tmp_path, method="kd,dkd", method_kwargs={"dkd": {"warmup_epochs": 2}})
    plan = config.validate()
    assert plan.model == ModelSpec("student", "resnet8")
    assert plan.teacher == ModelSpec("teacher", "resnet8", weights=config.teacher_weights)
    assert plan.methods == (("kd", methods.KD, {}), ("dkd", methods.DKD, {"warmup_epochs": 2}))
    assert plan.files() == {"teacher_weights": config.teacher_weights}
    student = config_lib.RunConfig(mode="student", student=config.teacher_weights).validate()
    assert (student.teacher, student.methods) == (None, ())
    assert student.files() == {"student": config.teacher_weights}


def test_readme_flag_table_is_the_one_the_fields_give():
    from tests.conftest import REPO

    readme = (REPO / "README.md").read_text()
    section = readme.split("## Experiment scripts", 1)[1].split("\n## ", 1)[0]
    assert run_flags.flag_table() in section, "run python -m experiments.run_flags"
    rows = [line.split("|")[1].strip(" `") for line in section.splitlines()
            if line.startswith("| `--")]
    assert rows == [f"--{field.name}" for field in dataclasses.fields(config_lib.RunConfig)]


def test_flags_take_name_default_help_and_choices_from_the_fields():
    from absl import flags

    values = flags.FlagValues()
    run_flags.define_flags(Definer(values), defaults={"epochs": 7})
    for field in dataclasses.fields(config_lib.RunConfig):
        assert field.metadata["help"] in values[field.name].help, field.name
    assert values["epochs"].default == 7 and values["lr"].default == 0.05
    assert values["optimizer"].parser.enum_values == list(config_lib.OPTIMIZERS)
    values(["prog", "--method_kwargs={\"kd\": {\"weight\": 0.5}}", "--export=keras"])
    config = run_flags.config_from_flags(values)
    assert config.method_kwargs == {"kd": {"weight": 0.5}} and config.epochs == 7


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
    plan = _distill(tmp_path, method_kwargs=method_kwargs).validate()
    with pytest.raises(UsageError, match=message):
        trainer.build_methods(plan.methods)


@pytest.mark.parametrize(
    "method, former, name",
    [("msdcrd", "lambda_sw", "sw_weight"), ("msdcrd", "beta", "weight"),
     ("dkd", "alpha", "tckd_weight"), ("dkd", "beta", "nckd_weight")],
)
def test_a_former_argument_name_names_its_replacement(tmp_path, method, former, name):
    plan = _distill(tmp_path, method=method, method_kwargs={method: {former: 1.0}}).validate()
    with pytest.raises(UsageError, match=rf"^--method_kwargs {method} .*unexpected argument "
                                         rf"'{former}'; did you mean '{name}'\?"):
        trainer.build_methods(plan.methods)


class _Dataset:
    """The one part of a dataset that the methods' training data reads."""

    def train_labels(self):
        return np.arange(32) % 4


def test_methods_get_the_training_data_they_need(tmp_path):
    plan = _distill(tmp_path, method="dkd,crd",
                    method_kwargs={"dkd": {"warmup_epochs": 20}}).validate()
    dkd, crd = trainer.build_methods(plan.methods)
    data = trainer.training_data([dkd, crd], _Dataset(), steps_per_epoch=10)
    np.testing.assert_array_equal(data.train_labels, np.arange(32) % 4)
    assert data.steps_per_epoch == 10
    dkd.set_up(data)
    assert dkd.warmup_steps == 200 and dkd.get_config()["warmup_epochs"] == 20
    assert trainer.training_data([dkd], _Dataset(), 10).train_labels is None


@pytest.mark.parametrize(
    "text, message",
    [
        ('{"kd": {', r"^--method_kwargs is not valid JSON \(Expecting property name enclosed in "
         r"double quotes at character 8\): '\{\"kd\": \{'. Expected e.g. "),
        ("[1]", r"^--method_kwargs must be a JSON object \{method: \{argument: value\}\}, "
         r"got \[1\].$"),
    ],
)
def test_malformed_method_kwargs_names_the_flag(text, message):
    from absl import flags

    values = flags.FlagValues()
    run_flags.define_flags(Definer(values))
    values(["prog", f"--method_kwargs={text}", "--teacher_weights=t.keras"])
    with pytest.raises(UsageError, match=message):
        run_flags.config_from_flags(values).validate()


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
    config = _distill(tmp_path, method="kd,msdcrd", batch_size=batch_size)
    with pytest.raises(UsageError, match=message):
        trainer.check_replica_batch(config, config.validate().methods, replicas)
    config = _distill(tmp_path, method="kd", batch_size=1)
    trainer.check_replica_batch(config, config.validate().methods, 1)


def test_training_split_smaller_than_a_batch_is_refused(tmp_path):
    import types

    dataset = types.SimpleNamespace(name="tiny", num_train=24)
    with pytest.raises(UsageError, match=r"^The training split of tiny has 24 examples, fewer "
                       r"than one batch \(--batch_size=100\); lower --batch_size.$"):
        trainer.steps_per_epoch(_distill(tmp_path, batch_size=100), dataset)
    capped = _distill(tmp_path, batch_size=8, steps_per_epoch=2)
    assert trainer.steps_per_epoch(capped, dataset) == 2
