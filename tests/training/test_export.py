"""SavedModel, TFLite and ONNX export: [0, 255] pixels in, the Keras logits out, named `logits`."""

import sys
import tarfile

import keras
import numpy as np
import pytest
import tensorflow as tf

from kerasdistill import data, models
from kerasdistill.training import TorchSGD, export_onnx, export_saved_model, export_tflite
from tests.conftest import REPO

MEAN, STD = (0.4, 0.5, 0.6), (0.2, 0.25, 0.3)


def _tiny_classifier(classes=7, size=8):
    """A small functional classifier of normalized images (with BatchNorm in inference)."""
    inputs = keras.Input((size, size, 3))
    x = keras.layers.Conv2D(4, 3, name="conv")(inputs)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.GlobalAveragePooling2D()(keras.layers.ReLU()(x))
    return keras.Model(inputs, keras.layers.Dense(classes, name="logits")(x))


def _pixels(count, seed=0, size=8):
    return np.random.default_rng(seed).uniform(0, 255, (count, size, size, 3)).astype("float32")


def _normalized(pixels):
    """The normalization, in NumPy."""
    return (pixels / 255.0 - np.array(MEAN)) / np.array(STD)


def _real_test_photos(every):
    """Every `every`-th test photo of the mini CIFAR-10 archive: float32 [0, 255] pixels, labels."""
    pixels, labels = [], []
    with tarfile.open(REPO / "data" / "cifar10-mini.tar.gz") as tar:
        photos = [m for m in tar.getmembers() if m.isfile() and "/test/" in m.name]
        classes = sorted({m.name.split("/")[-2] for m in photos})
        for member in photos[::every]:
            pixels.append(tf.io.decode_jpeg(tar.extractfile(member).read()).numpy())
            labels.append(classes.index(member.name.split("/")[-2]))
    return np.stack(pixels).astype("float32"), np.array(labels)


def _tflite_logits(path, pixels):
    runner = tf.lite.Interpreter(model_path=str(path)).get_signature_runner("serving_default")
    return runner(images=pixels)["logits"]


def test_saved_model_gives_the_in_memory_logits_under_the_name_logits(tmp_path):
    keras.utils.set_random_seed(0)
    model = _tiny_classifier()
    export_saved_model(model, tmp_path / "sm", MEAN, STD)
    loaded = tf.saved_model.load(str(tmp_path / "sm"))
    pixels = _pixels(5)
    signature = loaded.signatures["serving_default"]
    assert list(signature.structured_outputs) == ["logits"]
    assert list(signature.structured_input_signature[1]) == ["images"]
    served = signature(images=tf.constant(pixels))["logits"].numpy()
    expected = keras.ops.convert_to_numpy(model(_normalized(pixels), training=False))
    assert served.shape == (5, 7)
    np.testing.assert_allclose(served, expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(loaded.serve(pixels).numpy(), served, rtol=1e-6, atol=1e-6)


def test_model_that_normalizes_itself_is_exported_as_it_is(tmp_path):
    inner = _tiny_classifier()
    inputs = keras.Input((8, 8, 3))
    model = keras.Model(inputs, inner(data.normalization_layer(MEAN, STD)(inputs)))
    assert export_saved_model(model, tmp_path / "sm") is model
    pixels = _pixels(4, seed=1)
    expected = keras.ops.convert_to_numpy(inner(_normalized(pixels), training=False))
    loaded = tf.saved_model.load(str(tmp_path / "sm"))  # Kept: `serve` reads its variables.
    served = loaded.serve(pixels).numpy()
    np.testing.assert_allclose(served, expected, rtol=1e-5, atol=1e-5)


def test_float_tflite_gives_the_in_memory_logits_under_the_name_logits(tmp_path):
    keras.utils.set_random_seed(0)
    model = _tiny_classifier()
    path = tmp_path / "model.tflite"
    size = export_tflite(model, path, MEAN, STD)
    assert size == path.stat().st_size
    assert tf.lite.Interpreter(model_path=str(path)).get_signature_list() == {
        "serving_default": {"inputs": ["images"], "outputs": ["logits"]}
    }
    pixels = _pixels(6, seed=2)
    expected = keras.ops.convert_to_numpy(model(_normalized(pixels), training=False))
    np.testing.assert_allclose(_tflite_logits(path, pixels), expected, rtol=1e-4, atol=1e-5)


def test_onnx_gives_the_in_memory_logits_on_real_photos(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    keras.utils.set_random_seed(0)
    model = _tiny_classifier(size=32)
    path = tmp_path / "model.onnx"
    assert export_onnx(model, path, MEAN, STD) == path.stat().st_size
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["images"]
    assert [o.name for o in session.get_outputs()] == ["logits"]
    pixels, _ = _real_test_photos(every=20)
    assert pixels.shape == (50, 32, 32, 3) and pixels.max() > 200  # [0, 255] pixels.
    expected = keras.ops.convert_to_numpy(model(_normalized(pixels), training=False))
    assert np.abs(session.run(["logits"], {"images": pixels})[0] - expected).max() <= 1e-4


@pytest.mark.integration  # Loads and converts a resnet20: about 2 s.
def test_onnx_gives_the_shipped_teachers_logits_on_real_photos(tmp_path):
    """The shipped CIFAR-10 resnet20 (of normalized inputs) behind its normalization."""
    ort = pytest.importorskip("onnxruntime")
    model = keras.saving.load_model(REPO / "data" / "cifar10_resnet20_teacher.keras")
    mean, std = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)  # CIFAR-10's, as trained.
    path = tmp_path / "model.onnx"
    assert export_onnx(model, path, mean, std) == path.stat().st_size
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["images"]
    assert [o.name for o in session.get_outputs()] == ["logits"]
    pixels, labels = _real_test_photos(every=20)  # 50 photos, 5 of each class.
    assert pixels.shape == (50, 32, 32, 3) and pixels.max() > 200  # [0, 255] pixels.
    normalized = (pixels / 255.0 - np.array(mean)) / np.array(std)
    expected = keras.ops.convert_to_numpy(model(normalized.astype("float32"), training=False))
    logits = session.run(["logits"], {"images": pixels})[0]
    assert np.abs(logits - expected).max() <= 1e-4
    assert np.mean(logits.argmax(-1) == labels) >= 0.5  # Recorded: 0.70 on the 1,000; chance 0.1.


@pytest.mark.parametrize("package", ["tf2onnx", "onnx"])
def test_onnx_without_its_converter_names_the_pip_command_before_any_work(
    tmp_path, monkeypatch, package
):
    monkeypatch.setitem(sys.modules, package, None)  # `import package` now raises ImportError.
    with pytest.raises(ImportError, match=rf"package\(s\) {package},.*pip install tf2onnx onnx"):
        export_onnx(_tiny_classifier(), tmp_path / "model.onnx", MEAN, STD)
    assert not (tmp_path / "model.onnx").exists()


def test_mean_without_std_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="both mean and std"):
        export_saved_model(_tiny_classifier(), tmp_path / "sm", MEAN)
    assert not (tmp_path / "sm").exists()


def test_unknown_quantization_is_rejected_before_any_work(tmp_path):
    with pytest.raises(ValueError, match="'float16'.*dynamic_int8"):
        export_tflite(_tiny_classifier(), tmp_path / "m.tflite", MEAN, STD, quantization="float16")
    assert not (tmp_path / "m.tflite").exists()


@pytest.mark.integration
def test_dynamic_int8_tflite_is_smaller_and_keeps_the_top1_on_real_images(tmp_path):
    """A resnet8 trained for 20 steps on the mini CIFAR-10, exported as float and int8 TFLite."""
    dataset = data.load(str(REPO / "data" / "cifar10-mini.tar.gz"))
    keras.utils.set_random_seed(0)
    model = models.get("resnet8", num_classes=dataset.num_classes)
    model.compile(
        optimizer=TorchSGD(0.05, weight_decay=5e-4),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    model.fit(data.train_pipeline(dataset, 64, seed=0).repeat(), steps_per_epoch=20, verbose=0)
    sizes = {
        quantization: export_tflite(
            model, tmp_path / f"{quantization}.tflite", dataset.mean, dataset.std, quantization
        )
        for quantization in ("none", "dynamic_int8")
    }
    images, labels = next(iter(dataset.test.batch(200)))
    pixels, labels = images.numpy().astype("float32"), labels.numpy()
    expected = model.predict(_normalized_with(pixels, dataset), verbose=0)
    float_logits = _tflite_logits(tmp_path / "none.tflite", pixels)
    np.testing.assert_allclose(float_logits, expected, rtol=1e-4, atol=1e-4)
    float_pred = float_logits.argmax(-1)
    int8_pred = _tflite_logits(tmp_path / "dynamic_int8.tflite", pixels).argmax(-1)
    float_top1, int8_top1 = (float((p == labels).mean()) for p in (float_pred, int8_pred))
    assert len(set(float_pred.tolist())) > 2  # The trained model does not predict one class.
    assert sizes["dynamic_int8"] < 0.4 * sizes["none"]
    assert float((int8_pred == float_pred).mean()) >= 0.9
    assert abs(int8_top1 - float_top1) <= 0.05


def _normalized_with(pixels, dataset):
    return (pixels / 255.0 - np.array(dataset.mean)) / np.array(dataset.std)
