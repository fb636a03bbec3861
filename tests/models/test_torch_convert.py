"""PyTorch checkpoint conversion: forward parity with the RepDistiller reference."""

import sys

import keras
import numpy as np
import pytest
import torch  # The CI installs torch: a missing torch must fail these tests, not skip them.

from kerasdistill import models, taps
from tests.conftest import FIXTURES, require

CHECKPOINTS = ["resnet20", "resnet8x4", "wrn_16_2", "vgg8", "MobileNetV2", "ShuffleV1", "ShuffleV2"]
CKPT_DIR = FIXTURES / "torch_ckpt"


@pytest.fixture(autouse=True)
def _full_float32_precision():
    # TF32 on GPUs moves outputs by up to 1e-3 of their scale (fixtures README 4.6).
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        tf.config.experimental.enable_tensor_float_32_execution(False)


def _parity():
    return np.load(require(FIXTURES / "forward_parity.npz"), allow_pickle=False)


def _nhwc(array):
    return array.transpose(0, 2, 3, 1) if array.ndim == 4 else array


def _state_dict(name):
    checkpoint = torch.load(require(CKPT_DIR / f"{name}.pth"), map_location="cpu")
    return {key: value.numpy() for key, value in checkpoint["model"].items()}


def _assert_close(got, ref, what):
    error = float(np.max(np.abs(np.asarray(got) - ref)))
    bound = 1e-5 * max(1.0, float(np.max(np.abs(ref))))
    assert error <= bound, f"{what}: max |keras - ref| = {error:.3g} > {bound:.3g}"


def test_every_fixture_checkpoint_is_covered():
    assert sorted(p.stem for p in require(CKPT_DIR).glob("*.pth")) == sorted(CHECKPOINTS)


@pytest.mark.parametrize("name", CHECKPOINTS)
def test_converted_checkpoint_reproduces_reference_logits_and_features(name):
    z = _parity()
    model = models.from_torch_checkpoint(name, require(CKPT_DIR / f"{name}.pth"))
    refs = sorted(
        (k for k in z.files if k.startswith(f"{name}/feat")), key=lambda k: int(k[len(name) + 5 :])
    )
    names = [f"feat_{k}" for k in range(len(refs) - 1)] + ["pooled"]
    out = taps.tap_model(model, names)(_nhwc(z["input_nchw"]), training=False)
    _assert_close(out["logits"], z[f"{name}/logits"], f"{name} logits")
    for tap, key in zip(names, refs):
        _assert_close(out[tap], _nhwc(z[key]), f"{name} {tap}")


def _checkpoint_file(tmp_path, state_dict):
    path = tmp_path / "ckpt.pth"
    tensors = {key: torch.from_numpy(np.asarray(value)) for key, value in state_dict.items()}
    torch.save({"epoch": 1, "model": tensors, "optimizer": None}, path)
    return path


def test_checkpoint_with_missing_key_is_rejected(tmp_path):
    state_dict = _state_dict("resnet20")
    del state_dict["layer2.1.bn2.running_var"]
    with pytest.raises(ValueError, match=r"missing keys.*'layer2\.1\.bn2\.running_var'"):
        models.from_torch_checkpoint("resnet20", _checkpoint_file(tmp_path, state_dict))


def test_checkpoint_with_extra_key_is_rejected(tmp_path):
    state_dict = _state_dict("resnet20")
    state_dict["layer3.9.conv1.weight"] = np.zeros((64, 64, 3, 3), "float32")
    with pytest.raises(ValueError, match=r"unexpected keys.*'layer3\.9\.conv1\.weight'"):
        models.from_torch_checkpoint("resnet20", _checkpoint_file(tmp_path, state_dict))


def test_failed_load_lists_all_problems_and_assigns_nothing():
    state_dict = _state_dict("resnet20")
    state_dict["fc.weight"] = state_dict["fc.weight"][:10]
    del state_dict["conv1.weight"]
    state_dict["extra.bias"] = np.zeros(3, "float32")
    model = models.get("resnet20")
    before = [np.array(v) for v in model.weights]
    with pytest.raises(ValueError) as error:
        models.load_torch_state_dict(model, state_dict)
    message = str(error.value)
    assert "'conv1.weight'" in message and "'extra.bias'" in message
    assert "shape mismatches: ['fc.weight: torch (10, 64)" in message
    for old, new in zip(before, model.weights):
        np.testing.assert_array_equal(old, np.asarray(new))


def test_dataparallel_prefix_and_bare_state_dict_are_accepted(tmp_path):
    state_dict = torch.load(require(CKPT_DIR / "resnet20.pth"), map_location="cpu")["model"]
    prefixed = {f"module.{key}": value for key, value in state_dict.items()}
    assert any(key.endswith("num_batches_tracked") for key in prefixed)
    path = tmp_path / "bare.pth"
    torch.save(prefixed, path)
    model = models.from_torch_checkpoint("resnet20", path)
    z = _parity()
    _assert_close(
        model(_nhwc(z["input_nchw"]), training=False), z["resnet20/logits"], "resnet20 logits"
    )


def test_missing_torch_gives_install_hint(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)
    with pytest.raises(ImportError, match="pip install torch"):
        models.from_torch_checkpoint("resnet20", CKPT_DIR / "resnet20.pth")


def test_module_paths_mapping_to_one_layer_name_are_rejected():
    state_dict = _state_dict("resnet20")
    state_dict["layer1_0.conv1.weight"] = state_dict["layer1.0.conv1.weight"]
    with pytest.raises(
        ValueError,
        match=r"'layer1\.0\.conv1' and 'layer1_0\.conv1' both map to the Keras layer name "
        r"'layer1_0_conv1'",
    ):
        models.load_torch_state_dict(models.get("resnet20"), state_dict)
