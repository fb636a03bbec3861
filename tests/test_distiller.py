import keras
import numpy as np
import pytest

import kerasdistill
from kerasdistill import methods, models, taps


def _tiny_pair(num_classes=5):
    return (
        models.get("resnet8", num_classes=num_classes),
        models.get("resnet8", num_classes=num_classes),
    )


def _batch(n=8, num_classes=5, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 32, 32, 3)).astype("float32"), rng.integers(0, num_classes, n)


def test_student_batchnorm_statistics_update_exactly_once_per_step():
    teacher, student = _tiny_pair()
    distiller = kerasdistill.Distiller(teacher, student, methods.KD())
    distiller.compile(optimizer=keras.optimizers.SGD(learning_rate=0.0), run_eagerly=True)
    x, y = _batch()
    stem = keras.Model(student.inputs, student.get_layer("conv1").output)
    batch_mean = stem(x).numpy().mean(axis=(0, 1, 2))
    bn = student.get_layer("bn1")
    before = bn.moving_mean.numpy().copy()
    distiller.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0)
    expected_once = 0.9 * before + 0.1 * batch_mean
    np.testing.assert_allclose(bn.moving_mean.numpy(), expected_once, rtol=1e-4, atol=1e-6)


def test_teacher_is_frozen_weights_and_statistics():
    teacher, student = _tiny_pair()
    distiller = kerasdistill.Distiller(teacher, student, methods.KD())
    distiller.compile(optimizer=keras.optimizers.SGD(learning_rate=0.5), run_eagerly=True)
    before = [w.numpy().copy() for w in teacher.weights]
    student_before = [w.numpy().copy() for w in student.trainable_weights]
    x, y = _batch()
    distiller.fit(x, y, batch_size=4, epochs=1, verbose=0)
    for b, w in zip(before, teacher.weights):
        np.testing.assert_array_equal(b, w.numpy())
    assert any(
        not np.array_equal(b, w.numpy()) for b, w in zip(student_before, student.trainable_weights)
    )
    assert not teacher.trainable_weights


def test_total_loss_is_weighted_ce_plus_method_terms():
    teacher, student = _tiny_pair()
    distiller = kerasdistill.Distiller(
        teacher, student, methods.KD(temperature=4.0, weight=0.9), ce_weight=0.1
    )
    x, y = _batch()
    y_pred = distiller(x, training=True)
    total = distiller.compute_loss(x, y, y_pred, training=True)
    t_logits = np.asarray(teacher(x, training=False), "float64")
    s_logits = np.asarray(y_pred["student"]["logits"], "float64")
    expected = 0.1 * _numpy_cross_entropy(y, s_logits) + 0.9 * _numpy_kd(s_logits, t_logits, 4.0)
    np.testing.assert_allclose(float(total), expected, rtol=1e-5)


def _numpy_log_softmax(logits):
    shifted = logits - logits.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def _numpy_kd(student_logits, teacher_logits, temperature):
    """Hinton's KD as RepDistiller's DistillKL: T^2 * KL(p_t || p_s) at T, summed, per sample."""
    log_p_s = _numpy_log_softmax(student_logits / temperature)
    log_p_t = _numpy_log_softmax(teacher_logits / temperature)
    kl = (np.exp(log_p_t) * (log_p_t - log_p_s)).sum(axis=1)
    return temperature**2 * kl.mean()


def _numpy_cross_entropy(labels, logits):
    """Mean sparse softmax cross-entropy, in float64."""
    log_probs = _numpy_log_softmax(np.asarray(logits, "float64"))
    return -log_probs[np.arange(len(labels)), np.asarray(labels).reshape(-1)].mean()


def test_logged_train_loss_ce_is_unweighted_and_loss_adds_its_weighted_value():
    teacher, student = _tiny_pair()
    distiller = kerasdistill.Distiller(teacher, student, methods.KD(), ce_weight=0.1)
    # Learning rate 0: the step's logits are those of the unchanged student.
    distiller.compile(optimizer=keras.optimizers.SGD(learning_rate=0.0), run_eagerly=True)
    x, y = _batch()
    logits = keras.ops.convert_to_numpy(student(x, training=True))
    logs = distiller.train_on_batch(x, y, return_dict=True)
    assert set(logs) == {"loss", "loss_ce", "loss_kd"}
    np.testing.assert_allclose(logs["loss_ce"], _numpy_cross_entropy(y, logits), rtol=1e-5)
    assert not distiller.losses
    np.testing.assert_allclose(logs["loss"], 0.1 * logs["loss_ce"] + logs["loss_kd"], rtol=1e-5)
    evaluated = distiller.evaluate(x, y, verbose=0, return_dict=True)
    assert set(evaluated) == {"loss"}  # The training terms are not evaluated.
    expected = _numpy_cross_entropy(y, keras.ops.convert_to_numpy(student(x, training=False)))
    np.testing.assert_allclose(evaluated["loss"], expected, rtol=1e-5)


def test_label_smoothing_matches_keras_categorical_cross_entropy():
    teacher, student = _tiny_pair()
    distiller = kerasdistill.Distiller(
        teacher, student, methods.KD(temperature=4.0, weight=0.9), label_smoothing=0.1
    )
    x, y = _batch()
    y_pred = distiller(x, training=True)
    total = distiller.compute_loss(x, y, y_pred, training=True)
    s_logits = y_pred["student"]["logits"]
    num_classes = s_logits.shape[-1]
    smoothed = keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=0.1)(
        keras.ops.one_hot(y, num_classes), s_logits
    )
    t_logits = np.asarray(teacher(x, training=False), "float64")
    kd = 0.9 * _numpy_kd(np.asarray(s_logits, "float64"), t_logits, 4.0)
    np.testing.assert_allclose(float(total), float(smoothed) + kd, rtol=1e-5)
    assert float(smoothed) != pytest.approx(_numpy_cross_entropy(y, s_logits), rel=1e-3)
    assert distiller.get_config()["label_smoothing"] == 0.1
    with pytest.raises(ValueError, match=r"label_smoothing must be in \[0, 1\), got 1.5"):
        kerasdistill.Distiller(teacher, student, label_smoothing=1.5)


def test_fit_reports_one_metric_per_term_and_accuracy():
    teacher, student = _tiny_pair()
    distiller = kerasdistill.Distiller(teacher, student, methods.KD())
    distiller.compile(optimizer="sgd", metrics=["accuracy"], run_eagerly=True)
    x, y = _batch()
    history = distiller.fit(x, y, batch_size=4, epochs=1, validation_data=(x, y), verbose=0)
    assert set(history.history) == {
        "loss", "loss_ce", "loss_kd", "accuracy", "val_loss", "val_accuracy"
    }
    logged = {key: values[0] for key, values in history.history.items()}
    # ce_weight 1: the epoch's mean total is the sum of its terms' means.
    assert logged["loss"] == pytest.approx(logged["loss_ce"] + logged["loss_kd"], rel=1e-5)


def test_evaluation_runs_the_student_alone(monkeypatch):
    teacher, student = _tiny_pair()
    distiller = kerasdistill.Distiller(teacher, student, methods.KD())
    distiller.compile(optimizer="sgd", metrics=["accuracy"], run_eagerly=True)
    calls = []
    original = distiller.taps.teacher_model.call
    monkeypatch.setattr(
        distiller.taps.teacher_model, "call",
        lambda *a, **k: calls.append(1) or original(*a, **k),
    )
    x, y = _batch()
    result = distiller.evaluate(x, y, verbose=0, return_dict=True)
    assert calls == []
    expected_ce = _numpy_cross_entropy(y, student(x, training=False))
    np.testing.assert_allclose(result["loss"], expected_ce, rtol=1e-5)
    distiller.train_on_batch(x, y)
    assert calls, "training must run the teacher"


def test_wrong_tap_name_fails_at_construction_listing_valid_names():
    teacher, student = _tiny_pair()
    with pytest.raises(ValueError, match=r"Tap 'logits' -> layer 'no_such_layer' not found in model 'resnet8'.*"
                       r"feature maps found: feat_0 \(32x32x16\).*feat_3 \(8x8x64\)"):
        kerasdistill.Distiller(
            teacher, student, methods.KD(), student_layers={"logits": "no_such_layer"}
        )


def test_a_layer_for_a_tap_no_method_reads_is_refused():
    teacher, student = _tiny_pair()
    with pytest.raises(ValueError, match=r"student_layers names tap\(s\) \['feat_lats'\] that no "
                       r"method reads; the taps read are \['feat_last', 'logits'\]"):
        kerasdistill.Distiller(
            teacher, student, "msdcrd", student_layers={"feat_lats": "layer3_0_relu"}
        )


def test_non_method_argument_is_rejected():
    teacher, student = _tiny_pair()
    with pytest.raises(TypeError, match="A method is a name .* or a DistillationMethod; got 42"):
        kerasdistill.Distiller(teacher, student, [42])


def test_dict_inputs_without_image_key_are_rejected():
    teacher, student = _tiny_pair()
    distiller = kerasdistill.Distiller(teacher, student, methods.KD())
    with pytest.raises(ValueError, match="under 'image'"):
        distiller({"pixels": np.zeros((1, 32, 32, 3), "float32")})


def test_taps_for_an_arbitrary_functional_model():
    inputs = keras.Input((32, 32, 3))
    hidden = keras.layers.Conv2D(4, 3, name="my_conv")(inputs)
    outputs = keras.layers.Dense(5)(keras.layers.GlobalAveragePooling2D()(hidden))
    model = keras.Model(inputs, outputs)
    tapped = taps.tap_model(model, {"feat_last": "my_conv"})
    out = tapped(np.zeros((2, 32, 32, 3), "float32"))
    assert out["feat_last"].shape == (2, 30, 30, 4)
    assert out["logits"].shape == (2, 5)


def test_feat_last_resolves_to_the_last_stage_of_zoo_models():
    model = models.get("resnet8", num_classes=5)
    assert taps.resolve_taps(model, ["feat_last"]) == {"feat_last": "feat_3"}


def test_distiller_round_trips_through_a_keras_file(tmp_path):
    teacher, student = _tiny_pair()
    distiller = kerasdistill.Distiller(
        teacher, student, [methods.KD(temperature=2.0), methods.MSDCRD()], ce_weight=0.5
    )
    distiller.compile(optimizer="sgd", run_eagerly=True)
    x, y = _batch()
    distiller.fit(x, y, batch_size=4, epochs=1, verbose=0)
    distiller.save(tmp_path / "distiller.keras")
    restored = keras.saving.load_model(tmp_path / "distiller.keras")
    assert restored.ce_weight == 0.5
    assert [type(m).__name__ for m in restored.methods] == ["KD", "MSDCRD"]
    assert int(keras.ops.convert_to_numpy(restored.training_steps)) == 2
    np.testing.assert_allclose(
        restored(x).numpy(), distiller(x).numpy(), rtol=1e-5, atol=1e-6
    )
