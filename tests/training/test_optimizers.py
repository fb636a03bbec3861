import keras
import numpy as np
import pytest

from kerasdistill.training import SparseCrossEntropy, TorchSGD, cosine_with_warmup, step_decay


def _torch_sgd_reference(w, grads, lrs, momentum, weight_decay, nesterov=False):
    """torch.optim.SGD's documented update, written out in NumPy."""
    w = w.copy()
    buf = None
    for g, lr in zip(grads, lrs):
        d = g + weight_decay * w
        buf = d.copy() if buf is None else momentum * buf + d
        step = d + momentum * buf if nesterov else buf
        w = w - lr * step
    return w


@pytest.mark.parametrize("nesterov", [False, True])
def test_torch_sgd_matches_pytorch_update_across_a_learning_rate_drop(nesterov):
    rng = np.random.default_rng(0)
    w0 = rng.normal(size=(4,)).astype("float32")
    grads = [rng.normal(size=(4,)).astype("float32") for _ in range(4)]
    schedule = keras.optimizers.schedules.PiecewiseConstantDecay([1], [0.1, 0.01])
    opt = TorchSGD(schedule, momentum=0.9, weight_decay=5e-4, nesterov=nesterov)
    var = keras.Variable(w0)
    for g in grads:
        opt.apply([g], [var])
    expected = _torch_sgd_reference(w0, grads, [0.1, 0.1, 0.01, 0.01], 0.9, 5e-4, nesterov)
    np.testing.assert_allclose(var.numpy(), expected, rtol=1e-6)


def test_torch_sgd_weight_decay_is_coupled_not_decoupled():
    var = keras.Variable(np.array([2.0], "float32"))
    opt = TorchSGD(0.5, momentum=0.0, weight_decay=0.1)
    opt.apply([np.array([0.0], "float32")], [var])
    np.testing.assert_allclose(var.numpy(), [2.0 - 0.5 * 0.1 * 2.0])


def test_torch_sgd_config_round_trip_and_validation():
    opt = TorchSGD(0.05, momentum=0.8, weight_decay=1e-4, nesterov=True)
    clone = TorchSGD.from_config(opt.get_config())
    assert (clone.momentum, clone.coupled_weight_decay, clone.nesterov) == (0.8, 1e-4, True)
    with pytest.raises(ValueError, match="weight_decay must be >= 0, got -1"):
        TorchSGD(weight_decay=-1)


def test_step_decay_milestones_scale_with_epochs():
    schedule = step_decay(0.05, epochs=240, steps_per_epoch=10)
    assert schedule.boundaries == [1499, 1799, 2099]
    np.testing.assert_allclose(schedule.values, [0.05, 0.005, 0.0005, 0.00005])
    short = step_decay(0.05, epochs=24, steps_per_epoch=10)
    assert short.boundaries == [149, 179, 209]
    np.testing.assert_allclose(float(short(149)), 0.05)
    np.testing.assert_allclose(float(short(150)), 0.005)
    tiny = step_decay(0.05, epochs=3, steps_per_epoch=100)
    assert tiny.boundaries == [187, 224, 261]
    with pytest.raises(ValueError, match="positive"):
        step_decay(0.05, epochs=0, steps_per_epoch=10)


def test_cosine_with_warmup_rises_linearly_then_follows_the_cosine():
    schedule = cosine_with_warmup(5e-4, total_steps=100, warmup_steps=10)
    lrs = np.array([float(schedule(step)) for step in range(101)])
    np.testing.assert_allclose(lrs[:11], 5e-4 * np.arange(11) / 10, rtol=1e-5, atol=1e-12)
    cosine = 0.5 * 5e-4 * (1 + np.cos(np.pi * np.arange(91) / 90))
    np.testing.assert_allclose(lrs[10:], cosine, rtol=1e-4, atol=1e-10)
    plain = cosine_with_warmup(0.1, total_steps=50)
    assert float(plain(0)) == pytest.approx(0.1) and float(plain(50)) == pytest.approx(0.0, abs=1e-9)
    with pytest.raises(ValueError, match=r"warmup_steps must be in \[0, total_steps=10\), got 10"):
        cosine_with_warmup(0.1, total_steps=10, warmup_steps=10)


def test_sparse_cross_entropy_loss_smooths_and_round_trips():
    rng = np.random.default_rng(3)
    logits = rng.normal(size=(6, 5)).astype("float32")
    labels = rng.integers(0, 5, size=6)
    loss = SparseCrossEntropy(label_smoothing=0.2)
    reference = keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=0.2)
    expected = float(reference(keras.ops.one_hot(labels, 5), logits))
    assert float(loss(labels, logits)) == pytest.approx(expected, rel=1e-5)
    plain = keras.losses.SparseCategoricalCrossentropy(from_logits=True)(labels, logits)
    assert float(SparseCrossEntropy()(labels, logits)) == pytest.approx(float(plain), rel=1e-5)
    revived = keras.losses.deserialize(keras.losses.serialize(loss))
    assert isinstance(revived, SparseCrossEntropy) and revived.label_smoothing == 0.2
    with pytest.raises(ValueError, match=r"label_smoothing must be in \[0, 1\), got -0.1"):
        SparseCrossEntropy(label_smoothing=-0.1)
