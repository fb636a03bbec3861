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


def test_checkpointer_saves_the_optimizers_step_and_a_restored_run_goes_on_from_it(tmp_path):
    x = np.arange(30, dtype="float32").reshape(10, 3) / 10
    model = _model(["first", "second"])
    path = tmp_path / "c.npz"
    saved_at = []

    class Saves(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if path.exists():
                saved_at.append(checkpointing.read_metadata(path)["step"])

    checkpointer = checkpointing.Checkpointer(path, steps_per_epoch=5, every_steps=2)
    model.fit(x, x, batch_size=2, epochs=1, verbose=0, callbacks=[checkpointer, Saves()])
    assert sorted(set(saved_at)) == [2, 4]  # Every 2 steps, but not at the epoch end ...
    meta = checkpointing.restore(path, restored := _model(["first", "second"]))
    assert meta["step"] == 5 and (meta["epoch"], meta["batch"]) == (1, 0)  # ... saved there.
    resumed = checkpointing.Checkpointer(path, steps_per_epoch=5)
    resumed.set_model(restored)
    assert resumed.position() == {"step": 5, "epoch": 1, "batch": 0}
