import keras
import numpy as np
import pytest

from kerasdistill.training import TorchSGD, step_decay


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
