"""ImageNet zoo models: sizes, feature taps and parity with PyTorch on real photos.

The PyTorch references are written here from the architectures' published
definitions with the state-dict key names of torchvision (ResNets) and
mdistiller (MobileNetV1). Where torchvision imports, the ResNets are also
checked against torchvision's own models.
"""

import tarfile

import numpy as np
import pytest
import tensorflow as tf
import torch  # The CI installs torch: a missing torch must fail these tests, not skip them.
from torch import nn

from kerasdistill import models, taps
from tests.conftest import SHARED

IMAGENET_ARCHIVE = SHARED / "data" / "imagenet-1k-samples.tar.gz"
NUM_PHOTOS = 2
# torchvision's ImageNet normalization.
MEAN = np.array([0.485, 0.456, 0.406], "float32")
STD = np.array([0.229, 0.224, 0.225], "float32")

# Trainable parameters with 1000 classes: torchvision's model cards for the
# ResNets; MobileNetV1 counted from mdistiller's definition.
PARAMS = {
    "ResNet18": 11_689_512,
    "ResNet34": 21_797_672,
    "ResNet50_imagenet": 25_557_032,
    "MobileNetV1": 4_231_976,
}
# Channels of feat_0 .. feat_4; spatial sizes at 224 are 112, 56, 28, 14, 7.
CHANNELS = {
    "ResNet18": (64, 64, 128, 256, 512),
    "ResNet34": (64, 64, 128, 256, 512),
    "ResNet50_imagenet": (64, 256, 512, 1024, 2048),
    "MobileNetV1": (32, 128, 256, 512, 1024),
}
TORCHVISION_NAMES = {
    "ResNet18": "resnet18", "ResNet34": "resnet34", "ResNet50_imagenet": "resnet50"
}


# ---------------------------------------------------------------------------
# PyTorch references.


def _conv_bn(inp, out, kernel, stride=1, groups=1):
    return [
        nn.Conv2d(inp, out, kernel, stride, kernel // 2, groups=groups, bias=False),
        nn.BatchNorm2d(out),
    ]


class _TorchBlock(nn.Module):
    """torchvision's BasicBlock (`bottleneck=False`) or Bottleneck (v1.5)."""

    def __init__(self, inp, planes, stride, bottleneck):
        super().__init__()
        out = 4 * planes if bottleneck else planes
        if bottleneck:
            shapes = [(inp, planes, 1, 1), (planes, planes, 3, stride), (planes, out, 1, 1)]
        else:
            shapes = [(inp, planes, 3, stride), (planes, planes, 3, 1)]
        for i, (c_in, c_out, kernel, s) in enumerate(shapes, start=1):
            conv, bn = _conv_bn(c_in, c_out, kernel, s)
            setattr(self, f"conv{i}", conv)
            setattr(self, f"bn{i}", bn)
        self.depth = len(shapes)
        self.downsample = (
            nn.Sequential(*_conv_bn(inp, out, 1, stride)) if stride != 1 or inp != out else None
        )

    def forward(self, x):
        out = x
        for i in range(1, self.depth + 1):
            out = getattr(self, f"bn{i}")(getattr(self, f"conv{i}")(out))
            if i < self.depth:
                out = torch.relu(out)
        return torch.relu(out + (x if self.downsample is None else self.downsample(x)))


class _TorchResNet(nn.Module):
    """torchvision's ImageNet ResNet; returns the logits and feat_0 .. feat_4."""

    def __init__(self, num_blocks, bottleneck):
        super().__init__()
        self.conv1, self.bn1 = _conv_bn(3, 64, 7, 2)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        inp = 64
        for stage, blocks in enumerate(num_blocks, start=1):
            planes = 64 * 2 ** (stage - 1)
            layer = []
            for i in range(blocks):
                layer.append(_TorchBlock(inp, planes, 2 if i == 0 and stage > 1 else 1, bottleneck))
                inp = 4 * planes if bottleneck else planes
            setattr(self, f"layer{stage}", nn.Sequential(*layer))
        self.fc = nn.Linear(inp, 1000)

    def forward(self, x):
        return _resnet_forward(self, x)


def _resnet_forward(model, x):
    """Logits and feat_0 .. feat_4 of a ResNet with torchvision's attributes."""
    feats = [torch.relu(model.bn1(model.conv1(x)))]
    x = model.maxpool(feats[0])
    for stage in range(1, 5):
        x = getattr(model, f"layer{stage}")(x)
        feats.append(x)
    return model.fc(x.mean((2, 3))), feats


class _TorchMobileNetV1(nn.Module):
    """mdistiller's ImageNet MobileNetV1; returns the logits and feat_0 .. feat_4."""

    WIDTHS = [(32, 64, 1), (64, 128, 2), (128, 128, 1), (128, 256, 2), (256, 256, 1),
              (256, 512, 2)] + [(512, 512, 1)] * 5 + [(512, 1024, 2), (1024, 1024, 1)]  # fmt: skip
    FEATURE_INDICES = (0, 3, 5, 11, 13)

    def __init__(self):
        super().__init__()
        blocks = [nn.Sequential(*_conv_bn(3, 32, 3, 2), nn.ReLU())]
        for inp, out, stride in self.WIDTHS:
            dw = _conv_bn(inp, inp, 3, stride, groups=inp)
            blocks.append(nn.Sequential(*dw, nn.ReLU(), *_conv_bn(inp, out, 1), nn.ReLU()))
        self.model = nn.Sequential(*blocks, nn.AvgPool2d(7))
        self.fc = nn.Linear(1024, 1000)

    def forward(self, x):
        feats = []
        for index, block in enumerate(self.model):
            x = block(x)
            if index in self.FEATURE_INDICES:
                feats.append(x)
        return self.fc(x.flatten(1)), feats


def _torch_model(name):
    if name == "MobileNetV1":
        return _TorchMobileNetV1()
    blocks = {"ResNet18": (2, 2, 2, 2), "ResNet34": (3, 4, 6, 3), "ResNet50_imagenet": (3, 4, 6, 3)}
    return _TorchResNet(blocks[name], bottleneck=name == "ResNet50_imagenet")


def _randomize_batch_norms(module, seed=0):
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for bn in module.modules():
            if isinstance(bn, nn.BatchNorm2d):
                n = bn.num_features
                bn.weight.copy_(0.5 + torch.rand(n, generator=generator))
                bn.bias.copy_(0.1 * torch.randn(n, generator=generator))
                bn.running_mean.copy_(0.1 * torch.randn(n, generator=generator))
                bn.running_var.copy_(0.5 + torch.rand(n, generator=generator))
    return module.eval()


# ---------------------------------------------------------------------------
# Real photos.


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """The first photos of the shared ImageNet sample, preprocessed as NHWC."""
    if not IMAGENET_ARCHIVE.exists():
        pytest.skip(f"Shared ImageNet sample {IMAGENET_ARCHIVE} is absent (KERASDISTILL_SHARED).")
    directory = tmp_path_factory.mktemp("imagenet")
    with tarfile.open(IMAGENET_ARCHIVE) as archive:
        members = sorted(
            (m for m in archive.getmembers() if m.name.endswith(".JPEG")), key=lambda m: m.name
        )[:NUM_PHOTOS]
        archive.extractall(directory, members=members, filter="data")
    return np.stack([_preprocess(directory / m.name) for m in members])


def _preprocess(path):
    """Short side to 256, center crop 224, ImageNet normalization."""
    image = tf.io.decode_jpeg(tf.io.read_file(str(path)), channels=3)
    height, width = image.shape[:2]
    scale = 256 / min(height, width)
    image = tf.image.resize(image, (round(height * scale), round(width * scale)))
    image = tf.image.resize_with_crop_or_pad(image, 224, 224)
    return (image.numpy() / 255.0 - MEAN) / STD


# ---------------------------------------------------------------------------
# Tests.


@pytest.mark.parametrize("name", list(PARAMS))
def test_parameter_count_and_feature_taps_at_224(name):
    model = models.get(name, num_classes=1000)
    assert sum(int(np.prod(v.shape)) for v in model.trainable_weights) == PARAMS[name]
    assert sum(p.numel() for p in _torch_model(name).parameters()) == PARAMS[name]
    sizes = (112, 56, 28, 14, 7)
    for k, (size, channels) in enumerate(zip(sizes, CHANNELS[name])):
        assert tuple(model.get_layer(f"feat_{k}").output.shape) == (None, size, size, channels)
    for k in range(1, 5):
        preact = model.get_layer(f"preact_{k}").output
        assert preact.shape == model.get_layer(f"feat_{k}").output.shape
    assert taps.resolve_taps(model, ["feat_last"]) == {"feat_last": "feat_4"}
    assert tuple(model.get_layer("pooled").output.shape) == (None, CHANNELS[name][-1])
    assert tuple(model.output.shape) == (None, 1000)


def _assert_parity(name, torch_model, forward, photos):
    """Converts `torch_model`'s state dict and compares logits and feat_0..4."""
    state_dict = _randomize_batch_norms(torch_model).state_dict()
    model = models.from_torchvision_checkpoint(name, state_dict)
    names = [f"feat_{k}" for k in range(5)]
    out = taps.tap_model(model, names)(photos, training=False)
    with torch.no_grad():
        logits, feats = forward(torch_model, torch.from_numpy(photos.transpose(0, 3, 1, 2)))
    pairs = [("logits", logits.numpy())]
    pairs += [(tap, feat.numpy().transpose(0, 2, 3, 1)) for tap, feat in zip(names, feats)]
    for tap, ref in pairs:
        error = float(np.max(np.abs(np.asarray(out[tap]) - ref)))
        scale = float(np.max(np.abs(ref)))
        assert scale > 0.1, f"{name} {tap}: degenerate reference"
        assert error <= 1e-5 * max(1.0, scale), f"{name} {tap}: max |keras - torch| = {error:.3g}"


@pytest.mark.parametrize("name", list(PARAMS))
def test_converted_state_dict_reproduces_pytorch_on_real_photos(name, photos):
    torch.manual_seed(0)
    _assert_parity(name, _torch_model(name), lambda m, x: m(x), photos)


@pytest.mark.parametrize("name", list(TORCHVISION_NAMES))
def test_converted_torchvision_model_reproduces_it_on_real_photos(name, photos):
    try:
        from torchvision import models as torchvision_models
    except (ImportError, RuntimeError) as error:  # RuntimeError: a build not matching torch.
        pytest.skip(f"torchvision is not usable beside torch {torch.__version__}: {error}")

    torch.manual_seed(0)
    reference = getattr(torchvision_models, TORCHVISION_NAMES[name])()
    _assert_parity(name, reference, _resnet_forward, photos)


def test_mdistiller_checkpoint_file_loads_by_path(tmp_path):
    reference = _randomize_batch_norms(_TorchMobileNetV1())
    path = tmp_path / "student_best"
    torch.save({"epoch": 100, "model": reference.state_dict()}, path)
    model = models.from_torchvision_checkpoint("MobileNetV1", path)
    np.testing.assert_array_equal(
        model.get_layer("model_3_4").moving_variance, reference.model[3][4].running_var
    )
    kernel = reference.model[1][0].weight.detach().numpy()  # Depthwise [C, 1, 3, 3].
    np.testing.assert_array_equal(model.get_layer("model_1_0").kernel, kernel.transpose(2, 3, 0, 1))


def test_state_dict_of_another_architecture_is_rejected_with_the_keys():
    state_dict = _torch_model("ResNet34").state_dict()
    with pytest.raises(ValueError) as error:
        models.from_torchvision_checkpoint("ResNet18", state_dict)
    message = str(error.value)
    assert "unexpected keys" in message and "'layer1.2.conv1.weight'" in message
    assert "'layer4.2.bn2.running_var'" in message and "missing keys" not in message


def test_wrong_class_count_and_missing_keys_are_rejected():
    state_dict = _torch_model("ResNet18").state_dict()
    del state_dict["layer2.0.downsample.1.running_mean"]
    with pytest.raises(ValueError) as error:
        models.from_torchvision_checkpoint("ResNet18", state_dict, num_classes=10)
    message = str(error.value)
    assert "missing keys (Keras weights without a torch entry): " in message
    assert "'layer2.0.downsample.1.running_mean'" in message
    assert "shape mismatches: ['fc.weight: torch (1000, 512) -> (512, 1000), Keras (512, 10)'" in (
        message
    )


def test_unknown_model_name_is_rejected():
    with pytest.raises(ValueError, match=r"Unknown ImageNet model 'resnet34'.*'?ResNet34"):
        models.from_torchvision_checkpoint("resnet34", {})
