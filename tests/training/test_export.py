import keras
import numpy as np
import pytest
import tensorflow as tf

from kerasdistill import data, models
from kerasdistill.training import TorchSGD, export_saved_model, export_tflite
from tests.conftest import REPO

MEAN, STD = (0.4, 0.5, 0.6), (0.2, 0.25, 0.3)


def _tflite_logits(path, pixels):
    runner = tf.lite.Interpreter(model_path=str(path)).get_signature_runner("serving_default")
    return runner(images=pixels)["logits"]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A resnet8 trained for 20 steps on the mini CIFAR-10, exported three ways."""
    dataset = data.load(str(REPO / "data" / "cifar10-mini.tar.gz"))
    keras.utils.set_random_seed(0)
    model = models.get("resnet8", num_classes=dataset.num_classes)
    model.compile(
        optimizer=TorchSGD(0.05, weight_decay=5e-4),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    model.fit(data.train_pipeline(dataset, 64, seed=0).repeat(), steps_per_epoch=20, verbose=0)
    out = tmp_path_factory.mktemp("exported")
    export_saved_model(model, out / "saved_model", dataset.mean, dataset.std)
    sizes = {
        quantization: export_tflite(
            model, out / f"{quantization}.tflite", dataset.mean, dataset.std, quantization
        )
        for quantization in ("none", "dynamic_int8")
    }
    images, labels = next(iter(dataset.test.batch(200)))
    return out, sizes, images.numpy().astype("float32"), labels.numpy()


def test_saved_model_gives_the_in_memory_logits_under_the_name_logits(tmp_path):
    model = models.get("resnet8", num_classes=7)
    export_saved_model(model, tmp_path / "sm", MEAN, STD)
    loaded = tf.saved_model.load(str(tmp_path / "sm"))
    pixels = np.random.default_rng(0).uniform(0, 255, (5, 32, 32, 3)).astype("float32")
    signature = loaded.signatures["serving_default"]
    assert list(signature.structured_outputs) == ["logits"]
    assert list(signature.structured_input_signature[1]) == ["images"]
    served = signature(images=tf.constant(pixels))["logits"].numpy()
    expected = model((pixels / 255.0 - np.array(MEAN)) / np.array(STD), training=False).numpy()
    assert served.shape == (5, 7)
    np.testing.assert_allclose(served, expected, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(loaded.serve(pixels).numpy(), served, rtol=1e-6, atol=1e-6)


def test_model_that_normalizes_itself_is_exported_as_it_is(tmp_path):
    inner = models.get("resnet8", num_classes=7)
    inputs = keras.Input((32, 32, 3))
    model = keras.Model(inputs, inner(data.normalization_layer(MEAN, STD)(inputs)))
    assert export_saved_model(model, tmp_path / "sm") is model
    pixels = np.random.default_rng(1).uniform(0, 255, (4, 32, 32, 3)).astype("float32")
    expected = inner((pixels / 255.0 - np.array(MEAN)) / np.array(STD), training=False).numpy()
    loaded = tf.saved_model.load(str(tmp_path / "sm"))
    served = loaded.serve(pixels).numpy()
    np.testing.assert_allclose(served, expected, rtol=1e-4, atol=1e-5)


def test_mean_without_std_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="both mean and std"):
        export_saved_model(models.get("resnet8", num_classes=3), tmp_path / "sm", MEAN)
    assert not (tmp_path / "sm").exists()


def test_float_tflite_agrees_with_the_saved_model_on_real_images(exported):
    out, sizes, pixels, _ = exported
    path = out / "none.tflite"
    assert sizes["none"] == path.stat().st_size
    assert tf.lite.Interpreter(model_path=str(path)).get_signature_list() == {
        "serving_default": {"inputs": ["images"], "outputs": ["logits"]}
    }
    loaded = tf.saved_model.load(str(out / "saved_model"))
    served = loaded.signatures["serving_default"](images=tf.constant(pixels))["logits"].numpy()
    lite = _tflite_logits(path, pixels)
    assert lite.shape == (len(pixels), 10)
    np.testing.assert_allclose(lite, served, rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(lite.argmax(-1), served.argmax(-1))


def test_dynamic_int8_tflite_is_smaller_and_keeps_the_top1_on_real_images(exported):
    out, sizes, pixels, labels = exported
    float_pred = _tflite_logits(out / "none.tflite", pixels).argmax(-1)
    int8_pred = _tflite_logits(out / "dynamic_int8.tflite", pixels).argmax(-1)
    float_top1, int8_top1 = (float((p == labels).mean()) for p in (float_pred, int8_pred))
    agreement = float((int8_pred == float_pred).mean())
    print(f"\n{len(labels)} CIFAR-10 test images: top-1 float32 TFLite {float_top1:.3f} "
          f"({sizes['none']} B), dynamic int8 {int8_top1:.3f} ({sizes['dynamic_int8']} B), "
          f"same prediction on {agreement:.3f}")
    assert len(set(float_pred.tolist())) > 2  # The trained model does not predict one class.
    assert sizes["dynamic_int8"] < 0.4 * sizes["none"]
    assert agreement >= 0.9
    assert abs(int8_top1 - float_top1) <= 0.05


def test_unknown_quantization_is_rejected_before_any_work(tmp_path):
    with pytest.raises(ValueError, match="'float16'.*dynamic_int8"):
        export_tflite(
            models.get("resnet8", num_classes=3), tmp_path / "m.tflite", MEAN, STD,
            quantization="float16",
        )
    assert not (tmp_path / "m.tflite").exists()
