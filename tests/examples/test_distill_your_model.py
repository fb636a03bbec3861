"""examples/distill_your_model.py on real ImageNet photos (shared archive), random weights."""

import importlib.util
import tarfile

import keras
import keras_hub
import numpy as np
import pytest

from tests.conftest import REPO, SHARED, require

ARCHIVE = SHARED / "data" / "imagenet-1k-samples.tar.gz"


def _example():
    spec = importlib.util.spec_from_file_location(
        "distill_your_model", REPO / "examples" / "distill_your_model.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """Eight classes of the shared photos (one each), as an image folder."""
    root = tmp_path_factory.mktemp("photos")
    with tarfile.open(require(ARCHIVE)) as archive:
        members = sorted(m.name for m in archive.getmembers() if m.isfile())[:8]
        for name in members:
            data = archive.extractfile(name).read()
            target = root / name.split("/")[1] / name.split("/")[2]
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
    return root


@pytest.mark.integration
def test_applications_teacher_distilled_with_kd_and_msdcrd_from_pixels(photos, tmp_path, capsys):
    output = tmp_path / "student.keras"
    distiller = _example().main([
        f"--data={photos}", "--teacher=MobileNetV2", "--teacher_weights=none",
        "--student=MobileNetV3Small", "--methods=kd,msdcrd", "--image_size=64",
        "--batch_size=4", "--validation_split=0.25", f"--output={output}",
    ])
    printed = capsys.readouterr().out
    assert "feat_last: teacher mobilenetv2_1.00_64/block_16_project_BN, student " in printed
    assert "held-out accuracy: teacher" in printed
    student = keras.saving.load_model(output)
    logits = student.predict(np.full((2, 64, 64, 3), 128.0, "float32"), verbose=0)
    assert logits.shape == (2, 8) and np.isfinite(logits).all()
    assert distiller.tap_layers["teacher"]["logits"] == "logits"


@pytest.mark.integration
def test_keras_hub_teacher_file(photos, tmp_path, capsys):
    backbone = keras_hub.models.ResNetBackbone(
        input_conv_filters=[64], input_conv_kernel_sizes=[3], stackwise_num_filters=[64],
        stackwise_num_blocks=[1], stackwise_num_strides=[1], block_type="basic_block",
        use_pre_activation=False, image_shape=(64, 64, 3),
    )
    teacher_file = tmp_path / "hub_teacher.keras"
    keras_hub.models.ResNetImageClassifier(backbone=backbone, num_classes=8).save(teacher_file)
    _example().main([
        f"--data={photos}", f"--teacher={teacher_file}", "--student=MobileNetV3Small",
        "--methods=kd", "--image_size=64", "--batch_size=4", f"--output={tmp_path / 's.keras'}",
    ])
    assert "held-out accuracy" in capsys.readouterr().out


def test_bad_arguments_fail_in_one_line(photos, tmp_path):
    example = _example()
    with pytest.raises(ValueError, match="--student='MobileNetV9' is neither a .keras file nor"):
        example.main([f"--data={photos}", "--teacher=ResNet50", "--teacher_weights=none",
                      "--student=MobileNetV9", "--image_size=64"])
    with pytest.raises(ValueError, match="is not a folder of class sub-folders"):
        example.main([f"--data={tmp_path}", "--teacher=ResNet50"])
