"""fold_batchnorm: the folded teacher computes what the plain one does, faster."""

import keras
import numpy as np
import pytest

import kerasdistill
from kerasdistill import methods, models
from kerasdistill.models.inference import FoldedBatchNorm, fold_batchnorm
from kerasdistill.taps import tap_model
from kerasdistill.training import TorchSGD


def _with_random_statistics(model):
    """Gives every BatchNorm non-trivial gamma, beta, mean and variance."""
    rng = np.random.default_rng(0)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            gamma, beta, mean, variance = layer.get_weights()
            layer.set_weights([
                rng.uniform(0.5, 1.5, gamma.shape).astype("float32"),
                rng.normal(0, 0.3, beta.shape).astype("float32"),
                rng.normal(0, 0.3, mean.shape).astype("float32"),
                rng.uniform(0.5, 1.5, variance.shape).astype("float32"),
            ])
    return model


@pytest.mark.parametrize(
    "name, folded",
    # Every BN of these follows a convolution; WRN's pre-activation BNs follow
    # additions and stay (6 of its 13 fold).
    [("resnet8x4", 10), ("MobileNetV2", 53), ("ShuffleV1", None), ("wrn_16_2", 6), ("vgg8", 5)],
)
def test_folded_model_equals_plain_model_with_all_taps(name, folded):
    model = _with_random_statistics(models.get(name, num_classes=10))
    fast = fold_batchnorm(model)
    batchnorms = [l for l in model.layers if isinstance(l, keras.layers.BatchNormalization)]
    replaced = [l for l in fast.layers if isinstance(l, FoldedBatchNorm)]
    if folded is not None:
        assert len(replaced) == folded
    assert 0 < len(replaced) <= len(batchnorms)
    taps = {"logits": "logits", "pooled": "pooled", "feat_1": "feat_1", "feat_last": "feat_last"}
    plain_taps, fast_taps = tap_model(model, taps), tap_model(fast, taps)
    x = np.random.default_rng(1).normal(size=(4, 32, 32, 3)).astype("float32")
    expected, actual = plain_taps(x, training=False), fast_taps(x, training=False)
    for tap in taps:
        scale = float(np.max(np.abs(expected[tap])))
        np.testing.assert_allclose(actual[tap], expected[tap], atol=1e-5 * max(scale, 1.0), err_msg=tap)


@pytest.mark.integration
def test_folded_teacher_distils_like_the_plain_teacher():
    teacher = _with_random_statistics(models.get("resnet8", num_classes=4, input_shape=(16, 16, 3)))
    x = np.random.default_rng(0).normal(size=(8, 16, 16, 3)).astype("float32")
    y = np.arange(8) % 4
    losses = []
    for t in (teacher, fold_batchnorm(teacher)):
        keras.utils.set_random_seed(0)
        student = models.get("resnet8", num_classes=4, input_shape=(16, 16, 3))
        distiller = kerasdistill.Distiller(t, student, [methods.KD()])
        distiller.compile(optimizer=TorchSGD(0.0))
        losses.append(distiller.train_on_batch(x, y, return_dict=True)["loss_kd"])
    assert losses[0] > 0
    np.testing.assert_allclose(losses[1], losses[0], rtol=1e-5)


def test_lower_precision_teacher_stays_close():
    model = _with_random_statistics(models.get("resnet8x4", num_classes=10))
    fast = fold_batchnorm(model, dtype="mixed_bfloat16")
    assert fast.layers[-1].compute_dtype == "bfloat16"
    x = np.random.default_rng(1).normal(size=(4, 32, 32, 3)).astype("float32")
    expected = np.asarray(model(x, training=False))
    actual = np.asarray(keras.ops.cast(fast(x, training=False), "float32"))
    assert np.max(np.abs(actual - expected)) < 0.05 * np.max(np.abs(expected))
    assert np.array_equal(np.argmax(actual, -1), np.argmax(expected, -1))
