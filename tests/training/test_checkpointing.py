"""Checkpoints restore variables by name, and name the ones that do not match."""

import keras
import numpy as np
import pytest

from kerasdistill.training import checkpointing


def _model(order, extra=False):
    """Two same-shaped Dense branches, in the model's layer order `order`."""
    inputs = keras.Input((3,))
    branches = {name: keras.layers.Dense(3, name=name)(inputs) for name in order}
    outputs = keras.layers.Add()([branches[name] for name in order])
    if extra:
        outputs = keras.layers.Dense(2, name="extra")(outputs)
    model = keras.Model(inputs, outputs)
    model.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9), loss="mse")
    model.optimizer.build(model.trainable_variables)
    return model


def test_same_shaped_variables_created_in_another_order_restore_by_name(tmp_path):
    saved = _model(["first", "second"])
    saved.get_layer("first").kernel.assign(np.full((3, 3), 1.0, "float32"))
    saved.get_layer("second").kernel.assign(np.full((3, 3), 2.0, "float32"))
    checkpointing.save(tmp_path / "c.npz", saved, {"step": 3, "epoch": 0, "batch": 3})
    restored = _model(["second", "first"])  # Same shapes, in the other order.
    assert [v.path for v in restored.weights] != [v.path for v in saved.weights]
    meta = checkpointing.restore(tmp_path / "c.npz", restored)
    assert meta["step"] == 3
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(restored.get_layer("first").kernel), 1.0)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(restored.get_layer("second").kernel), 2.0)


def test_a_checkpoint_that_does_not_match_names_the_variables(tmp_path):
    checkpointing.save(tmp_path / "c.npz", _model(["first", "second"]), {"step": 1, "epoch": 0, "batch": 1})
    with pytest.raises(ValueError, match=r"does not match this model \(different model, method or "
                                         r"optimizer\); variables missing from it: extra/bias, "
                                         r"extra/kernel, optimizer/extra_bias_momentum, "
                                         r"optimizer/extra_kernel_momentum\.$"):
        checkpointing.restore(tmp_path / "c.npz", _model(["first", "second"], extra=True))
