"""The one-line warnings of terms out of proportion (first step) and of features that may grow."""

import logging

import keras
import numpy as np
import pytest

import kerasdistill
from kerasdistill import methods, models
from kerasdistill.training.callbacks import WarnOnTermsOutOfProportion


class _Model:
    ce_weight = 0.1


def _warnings_for(logs_per_batch, caplog, ratio=30.0):
    callback = WarnOnTermsOutOfProportion(ratio)
    callback.set_model(_Model())
    with caplog.at_level(logging.WARNING, logger="kerasdistill"):
        callback.on_train_begin()
        for batch, logs in enumerate(logs_per_batch):
            callback.on_train_batch_end(batch, logs)
    return [record.getMessage() for record in caplog.records]


def test_a_term_over_30x_the_rest_of_the_loss_gets_one_line_with_the_ratio(caplog):
    # 0.1 x 4.0 = 0.4 weighted CE; loss_kd 45 is 50x the rest (0.4 + 0.5), loss_msd 0.5 is
    # far under its own rest (0.4 + 45).
    messages = _warnings_for([{"loss": 45.9, "loss_ce": 4.0, "loss_kd": 45.0, "loss_msd": 0.5}],
                             caplog)
    assert messages == [
        "loss_kd is 50x the weighted cross-entropy and the other terms together (0.9) at the "
        "first step: the labels are nearly ignored; lower the term's weight or temperature, "
        "or use KD(standardize=True)."
    ]


def test_a_term_over_30x_the_cross_entropy_but_not_the_rest_says_nothing(caplog):
    # The default recipe's first step: KD 9 on standardized logits is 34x the cross-entropy
    # (0.1 x 4.6) but under 2x the cross-entropy and MSDCRD's terms together.
    logs = {"loss_ce": 4.6, "loss_kd": 15.6, "loss_msd_sw": 5.0, "loss_msd_fw": 3.6}
    assert _warnings_for([logs], caplog) == []
    assert len(_warnings_for([{"loss_ce": 4.6, "loss_kd": 15.6}], caplog)) == 1


def test_only_the_first_step_is_read_and_small_terms_say_nothing(caplog):
    # A warm-up (DKD's) starts its term at 0; a small term is not reported.
    messages = _warnings_for([{"loss_ce": 4.0, "loss_at": 0.004, "loss_dkd": 0.0},
                              {"loss_ce": 4.0, "loss_kd": 400.0}], caplog)
    assert messages == []


def test_terms_within_the_ratio_and_a_run_without_cross_entropy_say_nothing(caplog):
    assert _warnings_for([{"loss_ce": 4.0, "loss_kd": 11.9, "loss_crd": 0.014}], caplog) == []
    assert _warnings_for([{"loss_ce": 0.0, "loss_kd": 5.0}], caplog) == []
    with pytest.raises(ValueError, match="ratio must be > 1, got 1"):
        WarnOnTermsOutOfProportion(1)


def test_distiller_fit_warns_with_the_ratio_of_its_own_first_step(caplog):
    teacher = models.get("resnet8", num_classes=5)
    student = models.get("resnet8", num_classes=5)
    distiller = kerasdistill.Distiller(teacher, student, methods.KD(weight=1e4), ce_weight=0.5)
    distiller.compile(optimizer=keras.optimizers.SGD(0.0), run_eagerly=True)
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(4, 32, 32, 3)).astype("float32"), rng.integers(0, 5, 4)
    with caplog.at_level(logging.WARNING, logger="kerasdistill"):
        logs = distiller.fit(x, y, batch_size=4, epochs=1, verbose=0).history
    ratio = logs["loss_kd"][0] / (0.5 * logs["loss_ce"][0])
    warnings = [r.getMessage() for r in caplog.records if "first step" in r.getMessage()]
    assert ratio > 30 and warnings == [
        f"loss_kd is {ratio:.0f}x the weighted cross-entropy and the other terms together "
        f"({0.5 * logs['loss_ce'][0]:.3g}) at the first step: the labels are nearly ignored; "
        "lower the term's weight or temperature, or use KD(standardize=True)."
    ]


def _sequential_without_normalization():
    return keras.Sequential([
        keras.Input((32, 32, 3)), keras.layers.Conv2D(8, 3, strides=2), keras.layers.ReLU(),
        keras.layers.Conv2D(16, 3, strides=2), keras.layers.Flatten(), keras.layers.Dense(5),
    ], name="plain")


@pytest.mark.parametrize("student, method_list, optimizer, clips", [
    (_sequential_without_normalization, "default", lambda: keras.optimizers.SGD(0.05), True),
    (_sequential_without_normalization, "msdcrd", lambda: "adam", True),
    (_sequential_without_normalization, "default",
     lambda: keras.optimizers.SGD(0.05, global_clipnorm=5.0), False),
    (_sequential_without_normalization, "kd", lambda: keras.optimizers.SGD(0.05), False),
    (lambda: models.get("resnet8", num_classes=5), "default", lambda: "sgd", False),
])
def test_compile_clips_where_msdcrd_may_grow_an_unnormalized_students_features(
        student, method_list, optimizer, clips, caplog):
    teacher = models.get("resnet8", num_classes=5)
    distiller = kerasdistill.Distiller(teacher, student(), method_list)
    with caplog.at_level(logging.WARNING, logger="kerasdistill"):
        distiller.compile(optimizer=optimizer())
    messages = [r.getMessage() for r in caplog.records if "normalization layer" in r.getMessage()]
    assert messages == ([
        "The student 'plain' has no normalization layer and MSDCRD trains on its L2-normalized "
        "features, which diverged on such students unclipped (docs/results.md, \"Defaults "
        "study\"): the optimizer clips each gradient to norm 1; give it a clipnorm, "
        "global_clipnorm or clipvalue of your own to choose otherwise."] if clips else [])
    assert distiller.optimizer.inner_optimizer.clipnorm == (1.0 if clips else None)


@pytest.mark.parametrize("method_list, clipped", [("msdcrd", True), ("kd", False)])
def test_the_clip_bounds_each_variables_step(method_list, clipped):
    # Plain SGD at LR 10 moves each variable by 10 * its gradient: at most 10 when clipped.
    keras.utils.set_random_seed(0)
    teacher, student = models.get("resnet8", num_classes=5), _sequential_without_normalization()
    distiller = kerasdistill.Distiller(teacher, student, method_list)
    distiller.compile(optimizer=keras.optimizers.SGD(10.0))
    x = np.random.default_rng(0).normal(0, 50, (8, 32, 32, 3)).astype("float32")
    y = np.arange(8) % 5
    before = [np.array(v) for v in student.trainable_weights]
    distiller.fit(x, y, batch_size=8, epochs=1, verbose=0)
    steps = [np.linalg.norm(np.array(v) - b) for v, b in zip(student.trainable_weights, before)]
    assert (max(steps) <= 10.0 * (1 + 1e-4)) == clipped, steps
