"""The benchmarks (benchmarks/step_timing.py) time steps, not the `fit` around them."""

import pathlib
import sys
import time

import keras
import numpy as np
import tensorflow as tf

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "benchmarks"))

import step_timing as timing  # noqa: E402

FIT_COST_S = 0.5


class SlowToStartModel(keras.Model):
    """A tiny model whose every `fit` pays `FIT_COST_S` before training."""

    def fit(self, *args, **kwargs):
        time.sleep(FIT_COST_S)
        return super().fit(*args, **kwargs)


def _tiny_run():
    inputs = keras.Input((4,))
    model = SlowToStartModel(inputs, keras.layers.Dense(2)(inputs))
    model.compile(optimizer="sgd", loss="mse")
    x = np.zeros((8, 4), "float32")
    ds = tf.data.Dataset.from_tensor_slices((x, np.zeros((8, 2), "float32")))
    ds = ds.batch(4).repeat()
    timing.fit_seconds(model, ds, 1)  # Traces.
    return model, ds


def test_timed_steps_excludes_the_fixed_cost_of_fit():
    model, ds = _tiny_run()
    step_seconds, overhead_s = timing.timed_steps(model, ds, 3)
    assert len(step_seconds) == 3
    assert all(0 < s < FIT_COST_S / 2 for s in step_seconds)
    assert FIT_COST_S <= overhead_s < FIT_COST_S + 5


def test_time_round_robin_collects_steps_of_every_round():
    model, ds = _tiny_run()
    step_seconds, overhead_seconds = timing.time_round_robin({"a": (model, ds)}, 2, 3)
    assert len(step_seconds["a"]) == 6
    assert len(overhead_seconds["a"]) == 3
    assert min(overhead_seconds["a"]) >= FIT_COST_S


def test_format_table_reports_median_step_and_ratio():
    table = timing.format_table(
        {"none": [0.1, 0.3, 0.1], "kd": [0.2, 0.4, 0.2]},
        {"none": [1.0, 3.0, 2.0], "kd": [0.5, 0.5, 9.0]},
        batch_size=64,
    )
    rows = table.splitlines()
    assert rows[2] == "| none | 640.0 | 1.00x | 100.0 | 2.0 |"
    assert rows[3] == "| kd | 320.0 | 0.50x | 200.0 | 0.5 |"
