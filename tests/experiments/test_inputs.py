"""Bad datasets fail when they are read, with a message naming the file; a tap the models lack
fails when the Distiller is built. (Teacher files: test_model_specs.py.)"""

import shutil
import tarfile
import types

import pytest

from experiments import pipelines, runner, trainer
from experiments.errors import UsageError
from tests.experiments.conftest import small_cnn, tiny_config, write_image_folder


def _load(config, tmp_path):
    return pipelines.load_dataset(config, tmp_path, pipelines.for_config(config))


@pytest.fixture
def corrupt_folder(tiny_folder, tmp_path):
    root = shutil.copytree(tiny_folder, tmp_path / "data")
    (root / "train" / "b" / "3.png").write_bytes(b"\x89PNG truncated")
    return root


def test_corrupt_image_is_named_before_training(corrupt_folder, tmp_path):
    with pytest.raises(UsageError, match=r"^--dataset='.*data' holds 1 image\(s\) that cannot be "
                       r"decoded, first .*train/b/3.png; fix or remove them, or pass "
                       r"--skip_corrupt_images.$"):
        _load(tiny_config(corrupt_folder, tmp_path / "out"), tmp_path)


def test_corrupt_image_inside_an_archive_is_named(corrupt_folder, tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # The archive's extraction cache.
    archive = tmp_path / "corrupt.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(corrupt_folder, arcname="corrupt")
    with pytest.raises(UsageError, match=r"holds 1 image\(s\) that cannot be decoded, first "
                       r".*train/b/3.png"):
        _load(tiny_config(str(archive), tmp_path / "out"), tmp_path)


def test_skip_corrupt_images_trains_on_the_rest(corrupt_folder, tmp_path):
    config = tiny_config(corrupt_folder, tmp_path / "out", skip_corrupt_images=True)
    assert _load(config, tmp_path).num_train == 23


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
        _load(config, tmp_path)


def test_skip_corrupt_images_trains_on_the_rest_of_an_imagenet_folder(corrupt_imagenet_folder,
                                                                      tmp_path):
    config = tiny_config(corrupt_imagenet_folder, tmp_path / "out", input_pipeline="imagenet",
                         skip_corrupt_images=True)
    assert _load(config, tmp_path).num_train == 6


@pytest.mark.integration  # A complete run at 224x224.
def test_imagenet_folder_run_skips_its_corrupt_images(corrupt_imagenet_folder, tmp_path):
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
        _load(tiny_config(root, tmp_path / "out"), tmp_path)


def test_test_class_without_training_images_is_refused(tiny_folder, tmp_path):
    root = shutil.copytree(tiny_folder, tmp_path / "data")
    shutil.copytree(root / "test" / "b", root / "test" / "c")
    with pytest.raises(UsageError, match=r"Class folder\(s\) c of .*test have no training images"):
        _load(tiny_config(root, tmp_path / "out"), tmp_path)


def test_missing_dataset_is_a_usage_error(tmp_path):
    with pytest.raises(UsageError, match=r"--dataset='.*nowhere': Dataset path .* does not exist"):
        _load(tiny_config(tmp_path / "nowhere", tmp_path / "out"), tmp_path)


def test_unknown_tap_is_named_with_the_valid_ones(tiny_folder, teacher_file, tmp_path):
    config = tiny_config(
        tiny_folder, tmp_path, mode="distill", method="fitnet", teacher_weights=str(teacher_file),
        method_kwargs={"fitnet": {"teacher_tap": "feat_9"}},
    )
    dataset = types.SimpleNamespace(num_classes=2, mean=(0.5,) * 3, std=(0.25,) * 3)
    with pytest.raises(UsageError, match=r"^--method='fitnet' with --method_kwargs: Tap 'feat_9' "
                       r"not found in model 'resnet8'. Taps: 'logits', 'pre_pool', 'pooled', "
                       r"'feat_last', 'feat_k' or a layer name; feature maps found: feat_0 "):
        trainer.build_models(config, config.validate(), dataset, pipelines.for_config(config), 3)
