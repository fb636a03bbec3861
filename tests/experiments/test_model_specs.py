"""Models named by the flags: zoo names, keras.applications.<Name>, and .keras files of any
architecture; each refused in one line when it cannot fit the dataset."""

import hashlib
import json
import types
import zipfile

import keras
import numpy as np
import pytest

from experiments import model_specs, runner
from experiments.errors import UsageError
from experiments.model_specs import ModelSpec
from kerasdistill.training import distribute
from tests.conftest import FIXTURES, require
from tests.experiments.conftest import small_cnn, tiny_config

CIFAR = (32, 32, 3)
IMAGES = np.random.default_rng(0).normal(size=(2, *CIFAR)).astype("float32")


def _teacher(value, weights, num_classes=2):
    return ModelSpec("teacher", value, weights=str(weights)).load(num_classes, CIFAR)


def _saved(model, path):
    model.save(path)
    return str(path)


def _with_pooled_output(model):
    """`model` returning its pooled features next to its logits."""
    return keras.Model(model.inputs, [model.outputs[0], model.layers[-2].output])


@pytest.mark.parametrize(
    "name, first_layer",
    [
        ("MobileNetV3Small", "conv"),  # Has include_preprocessing: built without it.
        pytest.param("EfficientNetV2B0", "stem_conv", marks=pytest.mark.integration),  # Same.
        ("EfficientNetB0", "stem_conv_pad"),  # Always rescales by 1/255: cancelled in front.
    ],
)
def test_application_student_takes_standardized_images_and_outputs_logits(name, first_layer):
    model = ModelSpec("student", f"keras.applications.{name}").build(5, CIFAR)
    assert model.inputs[0].shape[1:] == CIFAR and model.outputs[0].shape[1:] == (5,)
    # What the first convolution (or its padding) sees is the standardized image itself.
    seen = keras.Model(model.input, model.get_layer(first_layer).input)(IMAGES)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(seen), IMAGES, rtol=1e-5, atol=1e-5)
    logits = keras.ops.convert_to_numpy(model(IMAGES))
    assert not np.allclose(logits.sum(axis=-1), 1.0)  # No softmax.


def test_application_that_needs_larger_images_says_which_size():
    with pytest.raises(UsageError, match=r"^--student='keras.applications.InceptionV3' cannot be "
                       r"built for the dataset's 32x32x3 images: Input size must be at least "
                       r"75x75"):
        ModelSpec("student", "keras.applications.InceptionV3").build(10, CIFAR)


def test_keras_file_student_of_any_architecture_trains_from_its_weights(tmp_path):
    saved = small_cnn()
    model = ModelSpec("student", _saved(saved, tmp_path / "s.keras")).build(2, CIFAR)
    np.testing.assert_allclose(model(IMAGES), saved(IMAGES), rtol=1e-5, atol=1e-6)


def test_keras_file_with_an_open_input_size_is_accepted(tmp_path):
    path = _saved(small_cnn(input_shape=(None, None, 3)), tmp_path / "open.keras")
    assert ModelSpec("student", path).build(2, CIFAR).outputs[0].shape[-1] == 2


@pytest.mark.parametrize(
    "model, message",
    [
        (lambda: small_cnn(num_classes=10),
         r"^--student='.*s.keras' predicts 10 classes but the dataset has 2; train or pick a "
         r"model for this dataset.$"),
        (lambda: small_cnn(input_shape=(64, 64, 3)),
         r"^--student='.*s.keras' takes 64x64x3 images but the dataset's are 32x32x3; pass a "
         r"model built for 32x32x3 inputs \(or one with an open size, \?x\?x3\).$"),
        (lambda: small_cnn(final_activation="softmax"),
         r"^--student='.*s.keras' ends in a softmax \(layer 'dense.*'\) but is trained and "
         r"exported as a logits model; save it without the final softmax"),
        (lambda: _with_pooled_output(small_cnn()),
         r"^--student='.*s.keras' has 1 inputs and 2 outputs; expected one image input and one "
         r"\(batch, classes\) logits output \(a functional or Sequential model\).$"),
    ],
)
def test_keras_file_student_that_cannot_fit_the_dataset_is_refused(tmp_path, model, message):
    path = _saved(model(), tmp_path / "s.keras")
    with pytest.raises(UsageError, match=message):
        ModelSpec("student", path).build(2, CIFAR)


def test_file_that_is_not_a_keras_model_is_refused(tmp_path):
    path = tmp_path / "s.keras"
    path.write_text("weights")
    with pytest.raises(UsageError, match=r"^--student='.*s.keras' is not a .keras model file "
                       r"\(a zip archive written by model.save\('name.keras'\)\).$"):
        ModelSpec("student", str(path)).build(2, CIFAR)


def test_zip_archive_that_keras_cannot_load_is_refused(tmp_path):
    path = tmp_path / "s.keras"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("notes.txt", "not a model")
    with pytest.raises(UsageError, match=r"^--student='.*s.keras' cannot be loaded as a .keras "
                       r"model \("):
        ModelSpec("student", str(path)).build(2, CIFAR)


def test_keras_file_student_computes_in_the_mixed_precision_policy(tmp_path):
    path = _saved(small_cnn(), tmp_path / "s.keras")
    try:
        distribute.set_mixed_precision("bfloat16")
        model = ModelSpec("student", path).build(2, CIFAR)
    finally:
        distribute.set_mixed_precision("none")
    assert {layer.compute_dtype for layer in model.layers[1:]} == {"bfloat16"}


def test_runs_model_file_is_read_without_its_normalization_and_normalized_again(tmp_path):
    """A run's model.keras (pixels in) as --student or --teacher_weights: not normalized twice."""
    stats = types.SimpleNamespace(mean=(0.5,) * 3, std=(0.25,) * 3)
    inner = small_cnn()
    path = _saved(model_specs.normalizing(inner, stats), tmp_path / "model.keras")
    for model in (ModelSpec("student", path).build(2, CIFAR), _teacher("", path)):
        assert model.name == "small_cnn"
        assert "pixel_normalization" not in [layer.name for layer in model.layers]
        np.testing.assert_allclose(model(IMAGES), inner(IMAGES), rtol=1e-5, atol=1e-6)
    try:
        distribute.set_mixed_precision("bfloat16")
        wrapped = model_specs.normalizing(ModelSpec("student", path).build(2, CIFAR), stats)
    finally:
        distribute.set_mixed_precision("none")
    assert [layer.name for layer in wrapped.layers] == [
        "images", "pixel_normalization", "small_cnn"
    ]
    assert wrapped.get_layer("pixel_normalization").compute_dtype == "float32"
    assert {layer.compute_dtype for layer in wrapped.layers[2].layers[1:]} == {"bfloat16"}
    pixels = np.random.default_rng(1).uniform(0, 255, (2, *CIFAR)).astype("float32")
    np.testing.assert_allclose(
        wrapped(pixels), inner((pixels / 255 - 0.5) / 0.25), rtol=2e-2, atol=2e-2  # bfloat16.
    )


def test_teacher_file_of_any_architecture_with_empty_or_same_file_teacher(small_cnn_file):
    for value in ("", str(small_cnn_file)):
        assert _teacher(value, small_cnn_file).name == "small_cnn"
    with pytest.raises(UsageError, match=r"^--teacher_weights='.*small_cnn.keras' holds a "
                       r"'small_cnn' model, not --teacher='resnet8' \(.*\); pass the matching "
                       r"--teacher, or --teacher= \(empty\) to take the .keras file's "
                       r"architecture as it is.$"):
        _teacher("resnet8", small_cnn_file)


def test_teacher_named_by_its_architecture_takes_the_files_weights(teacher_file):
    """`--teacher=resnet8` with a resnet8 `.keras` file: the zoo model, the file's weights."""
    saved = keras.saving.load_model(teacher_file)
    teacher = _teacher("resnet8", teacher_file)
    np.testing.assert_allclose(teacher(IMAGES), saved(IMAGES), rtol=1e-5, atol=1e-6)


def test_teacher_file_is_checked_for_classes_and_input_size(tmp_path, small_cnn_file):
    with pytest.raises(UsageError, match=r"^--teacher_weights='.*small_cnn.keras' predicts 2 "
                       r"classes but the dataset has 100"):
        _teacher("", small_cnn_file, num_classes=100)
    path = _saved(small_cnn(input_shape=(224, 224, 3)), tmp_path / "t.keras")
    with pytest.raises(UsageError, match=r"^--teacher_weights='.*t.keras' takes 224x224x3 images "
                       r"but the dataset's are 32x32x3"):
        _teacher("", path)


def test_teacher_from_its_weights_file(tmp_path):
    spec = "resnet8"
    trained = ModelSpec("teacher", spec).build(2, CIFAR)
    path = tmp_path / "t.weights.h5"
    trained.save_weights(path)
    teacher = _teacher(spec, path)
    np.testing.assert_allclose(teacher(IMAGES), trained(IMAGES), rtol=1e-5, atol=1e-6)


def test_teacher_of_another_architecture_is_refused(teacher_file):
    with pytest.raises(UsageError, match=r"holds a 'resnet8' model, not --teacher='resnet14' "
                       r"\(.*\); pass the matching --teacher, or --teacher= "):
        _teacher("resnet14", teacher_file)


def test_teacher_with_another_number_of_classes_is_refused(teacher_file):
    for value in ("resnet8", ""):
        with pytest.raises(UsageError, match=r"^--teacher_weights='.*resnet8.keras' predicts 2 "
                           r"classes but the dataset has 100"):
            _teacher(value, teacher_file, num_classes=100)


def test_teacher_file_that_is_not_a_model_is_named(tmp_path):
    path = tmp_path / "teacher.keras"
    path.write_text("not a model")
    with pytest.raises(UsageError, match=r"^--teacher_weights='.*teacher.keras' is not a .keras "
                       r"model file"):
        _teacher("resnet8", path)


@pytest.mark.integration  # Imports torch.
def test_pth_of_another_architecture_is_refused():
    checkpoint = require(FIXTURES / "torch_ckpt" / "resnet20.pth")
    with pytest.raises(UsageError, match=r"cannot be read as a resnet8x4 teacher with 100 classes"):
        _teacher("resnet8x4", checkpoint, num_classes=100)


def test_weights_file_of_another_architecture_is_refused(tmp_path):
    from kerasdistill import models

    path = tmp_path / "teacher.weights.h5"
    models.get("resnet8", num_classes=2).save_weights(path)
    with pytest.raises(UsageError, match=r"cannot be read as a resnet14 teacher with 2 classes"):
        _teacher("resnet14", path)


@pytest.mark.parametrize(
    "value, weights, message",
    [
        ("", "t.weights.h5", r"^--teacher_weights='.*t.weights.h5' holds weights only; name their "
         r"architecture with --teacher=<zoo name or keras.applications.Name>.$"),
        ("keras.applications.ResNet50", "t.pth", r"^--teacher_weights='.*t.pth' is a PyTorch "
         r"checkpoint; name its zoo model with --teacher \(got "
         r"--teacher='keras.applications.ResNet50'\).$"),
        ("resnet8", "t.pt", r"^--teacher_weights='.*t.pt' has an unknown extension; expected "
         r".keras .*h5.*\.pth"),
        ("resnet8", "", r"^--mode=distill needs --teacher_weights \(a trained teacher file\).$"),
        ("other.keras", "t.keras", r"^--teacher='.*other.keras' is another file than "
         r"--teacher_weights='.*t.keras'; the teacher is --teacher_weights: pass --teacher= "
         r"\(empty\) or the same file.$"),
    ],
)
def test_teacher_flags_that_cannot_name_a_teacher_are_refused_without_tensorflow(
    tmp_path, value, weights, message
):
    for name in (value, weights):
        if name.endswith((".keras", ".h5", ".pth", ".pt")):
            (tmp_path / name).write_bytes(b"")
    value = str(tmp_path / value) if value.endswith(".keras") else value
    spec = ModelSpec("teacher", value, weights=str(tmp_path / weights) if weights else "")
    with pytest.raises(UsageError, match=message):
        spec.check()


def test_files_are_the_model_files_a_run_reads(tmp_path):
    assert ModelSpec("student", "resnet8").files() == {}
    assert ModelSpec("student", "s.keras").files() == {"student": "s.keras"}
    assert ModelSpec("teacher", "resnet8", weights="t.pth").files() == {"teacher_weights": "t.pth"}


@pytest.mark.integration  # Two complete runs.
def test_any_teacher_and_application_student_distil_and_record_what_they_were(
    tiny_folder, small_cnn_file, tmp_path
):
    teacher = tmp_path / "teacher.keras"
    teacher.write_bytes(small_cnn_file.read_bytes())
    out = tmp_path / "run"
    config = tiny_config(
        tiny_folder, out, mode="distill", method="kd", teacher="", teacher_weights=str(teacher),
        student="keras.applications.MobileNetV3Small", epochs=1, steps_per_epoch=2,
    )
    runner.run(config)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["config"]["student"] == "keras.applications.MobileNetV3Small"
    assert metrics["models"]["student"]["name"] == "MobileNetV3Small"
    assert metrics["models"]["teacher"] == {
        "name": "small_cnn", "parameters": small_cnn().count_params()
    }
    assert metrics["model_files"] == {
        "teacher_weights": hashlib.sha256(teacher.read_bytes()).hexdigest()
    }
    assert keras.saving.load_model(out / "model.keras").outputs[0].shape[-1] == 2
    # The run directory resumes only with the teacher file it was trained against.
    small_cnn().save(teacher)
    with pytest.raises(UsageError, match=r"^--output_dir='.*run' holds the checkpoint of a run "
                       r"that read other contents from --teacher_weights='.*teacher.keras' \(the "
                       r"file changed since\); use another --output_dir, or restore the file"):
        runner.run(config)


@pytest.mark.integration  # A complete run.
def test_msdcrd_distils_an_application_student_from_a_non_zoo_teacher(
    tiny_folder, small_cnn_file, tmp_path
):
    config = tiny_config(
        tiny_folder, tmp_path, mode="distill", method="msdcrd", teacher="",
        teacher_weights=str(small_cnn_file), student="keras.applications.MobileNetV3Small",
        epochs=1, steps_per_epoch=2,
    )
    runner.run(config)
    history = (tmp_path / "history.csv").read_text().splitlines()
    assert "loss_msd_sw" in history[0] and "loss_msd_fw" in history[0] and len(history) == 2
