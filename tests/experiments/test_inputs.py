"""Bad inputs (teacher files, dataset folders) fail early with a message naming the file."""

import shutil
import tarfile

import pytest

from experiments import runner
from experiments.errors import UsageError
from experiments.teacher import load_teacher
from kerasdistill import models
from tests.conftest import FIXTURES, require
from tests.experiments.conftest import small_cnn, tiny_config, write_image_folder

CIFAR = (32, 32, 3)


def test_teacher_of_another_architecture_is_refused(teacher_file):
    with pytest.raises(UsageError, match=r"holds a 'resnet8' model, not --teacher='resnet14' "
                       r"\(its layers differ\); pass the matching --teacher, or --teacher= "):
        load_teacher("resnet14", str(teacher_file), num_classes=2, image_shape=CIFAR)


def test_teacher_with_another_number_of_classes_is_refused(teacher_file):
    with pytest.raises(UsageError, match=r"predicts 2 classes but the dataset has 100"):
        load_teacher("resnet8", str(teacher_file), num_classes=100, image_shape=CIFAR)


def test_file_that_is_not_a_model_is_named(tmp_path):
    path = tmp_path / "teacher.keras"
    path.write_text("not a model")
    with pytest.raises(UsageError, match=r"teacher.keras' is not a .keras model file"):
        load_teacher("resnet8", str(path), num_classes=2, image_shape=CIFAR)


def test_unknown_extension_lists_the_accepted_ones(tmp_path):
    path = tmp_path / "teacher.pt"
    path.write_text("")
    with pytest.raises(UsageError, match=r"unknown extension; expected .keras .*h5.*\.pth"):
        load_teacher("resnet8", str(path), num_classes=2, image_shape=CIFAR)


def test_pth_of_another_architecture_is_refused():
    checkpoint = require(FIXTURES / "torch_ckpt" / "resnet20.pth")
    with pytest.raises(UsageError, match=r"cannot be read as a resnet8x4 teacher with 100 classes"):
        load_teacher("resnet8x4", str(checkpoint), num_classes=100, image_shape=CIFAR)


def test_weights_file_of_another_architecture_is_refused(tmp_path):
    path = tmp_path / "teacher.weights.h5"
    models.get("resnet8", num_classes=2).save_weights(path)
    with pytest.raises(UsageError, match=r"cannot be read as a resnet14 teacher with 2 classes"):
        load_teacher("resnet14", str(path), num_classes=2, image_shape=CIFAR)


@pytest.fixture
def corrupt_folder(tiny_folder, tmp_path):
    root = shutil.copytree(tiny_folder, tmp_path / "data")
    (root / "train" / "b" / "3.png").write_bytes(b"\x89PNG truncated")
    return root


def test_corrupt_image_is_named_before_training(corrupt_folder, tmp_path):
    with pytest.raises(UsageError, match=r"holds 1 image\(s\) that cannot be decoded, first "
                       r".*train/b/3.png; .* --skip_corrupt_images"):
        runner.run(tiny_config(corrupt_folder, tmp_path / "out"))
    assert not (tmp_path / "out" / "history.csv").exists()


def test_corrupt_image_inside_an_archive_is_named(corrupt_folder, tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # The archive's extraction cache.
    archive = tmp_path / "corrupt.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(corrupt_folder, arcname="corrupt")
    with pytest.raises(UsageError, match=r"holds 1 image\(s\) that cannot be decoded, first "
                       r".*train/b/3.png"):
        runner.run(tiny_config(str(archive), tmp_path / "out"))


def test_skip_corrupt_images_trains_on_the_rest(corrupt_folder, tmp_path):
    config = tiny_config(corrupt_folder, tmp_path / "out", skip_corrupt_images=True, epochs=1,
                         steps_per_epoch=1)
    assert runner.run(config)["num_train"] == 23


@pytest.fixture
def corrupt_imagenet_folder(tmp_path):
    """An ImageNet-layout folder (`train/<wnid>/`, `val/<wnid>/`) with one corrupt JPEG."""
    root = write_image_folder(tmp_path / "ilsvrc", per_class=(("train", 3), ("val", 1)),
                              classes=("n01440764", "n01443537"))
    (root / "train" / "n01443537" / "2.JPEG").write_bytes(b"\xff\xd8 truncated JPEG")
    return root


def test_corrupt_image_of_an_imagenet_folder_is_named(corrupt_imagenet_folder, tmp_path):
    config = tiny_config(corrupt_imagenet_folder, tmp_path / "out", input_pipeline="imagenet")
    with pytest.raises(UsageError, match=r"^--dataset='.*ilsvrc' holds 1 image\(s\) that cannot be "
                       r"decoded, first .*train/n01443537/2.JPEG; .* --skip_corrupt_images\.$"):
        runner.run(config)
    assert not (tmp_path / "out" / "history.csv").exists()


def test_skip_corrupt_images_trains_on_the_rest_of_an_imagenet_folder(corrupt_imagenet_folder,
                                                                      tmp_path):
    student = tmp_path / "open_size_cnn.keras"  # Cheaper at 224x224 than the zoo's models.
    small_cnn(input_shape=(None, None, 3)).save(student)
    config = tiny_config(corrupt_imagenet_folder, tmp_path / "out", input_pipeline="imagenet",
                         student=str(student), skip_corrupt_images=True, epochs=1,
                         steps_per_epoch=1, batch_size=2)
    assert runner.run(config)["num_train"] == 6


@pytest.mark.parametrize(
    "layout, message",
    [
        ((("train", 3), ("test", 0)), r"The test split .* holds no image"),
        ((("train", 0), ("test", 3)), r"The train split .* holds no image"),
    ],
)
def test_empty_split_is_refused(tmp_path, layout, message):
    root = write_image_folder(tmp_path / "data", per_class=layout)
    for split, count in layout:
        (root / split).mkdir(exist_ok=True)
    with pytest.raises(UsageError, match=message):
        runner.load_dataset(tiny_config(root, tmp_path / "out"), tmp_path / "out")


def test_test_class_without_training_images_is_refused(tiny_folder, tmp_path):
    root = shutil.copytree(tiny_folder, tmp_path / "data")
    shutil.copytree(root / "test" / "b", root / "test" / "c")
    with pytest.raises(UsageError, match=r"Class folder\(s\) c of .*test have no training images"):
        runner.load_dataset(tiny_config(root, tmp_path / "out"), tmp_path / "out")


def test_missing_dataset_is_a_usage_error(tmp_path):
    with pytest.raises(UsageError, match=r"--dataset='.*nowhere': Dataset path .* does not exist"):
        runner.load_dataset(tiny_config(tmp_path / "nowhere", tmp_path / "out"), tmp_path / "out")


def test_unknown_tap_is_named_with_the_valid_ones(tiny_folder, teacher_file, tmp_path):
    config = tiny_config(
        tiny_folder, tmp_path, mode="distill", method="fitnet", teacher_weights=str(teacher_file),
        method_kwargs={"fitnet": {"teacher_tap": "feat_9"}},
    )
    with pytest.raises(UsageError, match=r"^--method='fitnet' with --method_kwargs: Tap 'feat_9' "
                       r"not found in model 'resnet8'. Taps: 'logits', 'pre_pool', 'pooled', "
                       r"'feat_last', 'feat_k' or a layer name; feature maps found: feat_0 "):
        runner.run(config)
