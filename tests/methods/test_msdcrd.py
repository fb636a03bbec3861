import keras
import numpy as np
import pytest
import tensorflow as tf

from kerasdistill import Distiller, methods
from kerasdistill.methods import MSDCRD
from kerasdistill.ops import (
    feature_wise_info_nce,
    l2_normalize,
    multiscale_pool,
    sample_wise_info_nce,
)

TEACHER_SHAPE = (6, 8, 8, 64)
STUDENT_SHAPE = (6, 4, 4, 32)
LABELS = np.array([0, 1, 2, 0, 1, 2], "int32")


def _maps(shape, seed):
    return np.random.default_rng(seed).normal(size=shape).astype("float32")


def _built(method, teacher_shape=TEACHER_SHAPE, student_shape=STUDENT_SHAPE, tap="feat_last"):
    method.build_from_taps({tap: teacher_shape}, {tap: student_shape})
    return method


def _terms(method, teacher_map, student_map, labels=LABELS, tap="feat_last"):
    out = method({tap: teacher_map}, {tap: student_map}, labels=labels)
    return {k: float(v) for k, v in out.items()}


def _reference_terms(teacher_map, student_map, tau=0.07, scales=(1, 2, 4)):
    """Both losses composed from the ops, for `projection="none"`."""
    s = l2_normalize(multiscale_pool(student_map, scales))
    t = l2_normalize(multiscale_pool(teacher_map, scales))
    return (
        float(np.mean(sample_wise_info_nce(s, t, tau))),
        float(np.mean(feature_wise_info_nce(s, t, tau))),
    )


def test_heterogeneous_maps_with_linear_heads():
    method = _built(MSDCRD())
    terms = _terms(method, _maps(TEACHER_SHAPE, 0), _maps(STUDENT_SHAPE, 1))
    assert set(terms) == set(method.loss_terms()) == {"loss_msd_sw", "loss_msd_fw"}
    assert all(np.isfinite(v) and v > 0 for v in terms.values())
    assert method.teacher_heads[0].kernel.shape == (64, 128)
    assert method.student_heads[0].kernel.shape == (32, 128)


def test_auto_projection_is_parameter_free_when_channels_match():
    same = _built(MSDCRD(), (6, 8, 8, 16), (6, 8, 8, 16))
    assert same.trainable_weights == []
    teacher = _maps((6, 8, 8, 16), 7)
    student = teacher + 0.2 * _maps((6, 8, 8, 16), 8)
    sw, fw = _reference_terms(teacher, student)
    terms = _terms(same, teacher, student)
    assert terms["loss_msd_sw"] == pytest.approx(sw, rel=1e-5)
    assert terms["loss_msd_fw"] == pytest.approx(fw, rel=1e-5)
    two_taps = MSDCRD(taps=("feat_2", "feat_3"))
    two_taps.build_from_taps(
        {"feat_2": (6, 8, 8, 16), "feat_3": (6, 4, 4, 32)},
        {"feat_2": (6, 8, 8, 16), "feat_3": (6, 4, 4, 8)},
    )
    assert [h.kernel.shape for h in two_taps.student_heads] == [(8, 128)]


def test_terms_are_weighted_ops_losses():
    teacher = _maps((6, 8, 8, 16), 2)
    student = teacher + 0.3 * _maps((6, 8, 8, 16), 3)
    method = _built(
        MSDCRD(projection="none", beta=2.0, lambda_sw=0.25, lambda_fw=0.5),
        (6, 8, 8, 16),
        (6, 8, 8, 16),
    )
    terms = _terms(method, teacher, student)
    sw, fw = _reference_terms(teacher, student)
    assert terms["loss_msd_sw"] == pytest.approx(2.0 * 0.25 * sw, rel=1e-5)
    assert terms["loss_msd_fw"] == pytest.approx(2.0 * 0.5 * fw, rel=1e-5)


def test_zero_weights_skip_terms():
    shape = (6, 4, 4, 8)
    teacher, student = _maps(shape, 4), _maps(shape, 5)
    no_fw = _terms(_built(MSDCRD(projection="none", lambda_fw=0.0), shape, shape), teacher, student)
    assert no_fw["loss_msd_fw"] == 0.0 and no_fw["loss_msd_sw"] > 0
    no_sw = _terms(_built(MSDCRD(projection="none", lambda_sw=0.0), shape, shape), teacher, student)
    assert no_sw["loss_msd_sw"] == 0.0 and no_sw["loss_msd_fw"] > 0
    off = _terms(_built(MSDCRD(projection="none", beta=0.0), shape, shape), teacher, student)
    assert off == {"loss_msd_sw": 0.0, "loss_msd_fw": 0.0}


def test_aligned_student_scores_lower_than_batch_shuffled():
    shape = (6, 8, 8, 16)
    teacher = _maps(shape, 6)
    method = _built(MSDCRD(projection="none"), shape, shape)
    aligned = _terms(method, teacher, teacher)
    shuffled = _terms(method, teacher, teacher[np.roll(np.arange(6), 1)])
    for term in aligned:
        assert aligned[term] < shuffled[term]


def test_batch_permutation_leaves_the_loss_unchanged():
    method = _built(MSDCRD(exclude_same_class_negatives=True, symmetric=True))
    teacher, student = _maps(TEACHER_SHAPE, 7), _maps(STUDENT_SHAPE, 8)
    perm = np.array([3, 5, 0, 2, 4, 1])
    before = _terms(method, teacher, student, LABELS)
    after = _terms(method, teacher[perm], student[perm], LABELS[perm])
    for term in before:
        assert after[term] == pytest.approx(before[term], rel=1e-5)


def test_exclude_same_class_negatives_changes_only_the_sample_wise_term():
    shape = (6, 4, 4, 8)
    teacher, student = _maps(shape, 9), _maps(shape, 10)
    plain = _terms(_built(MSDCRD(projection="none"), shape, shape), teacher, student)
    masked = _terms(
        _built(MSDCRD(projection="none", exclude_same_class_negatives=True), shape, shape),
        teacher,
        student,
    )
    assert masked["loss_msd_sw"] < plain["loss_msd_sw"]
    assert masked["loss_msd_fw"] == pytest.approx(plain["loss_msd_fw"], rel=1e-6)
    # With every image of one class, only the positive remains: the loss is 0.
    single = _terms(
        _built(MSDCRD(projection="none", exclude_same_class_negatives=True), shape, shape),
        teacher,
        student,
        labels=np.zeros(6, "int32"),
    )
    assert single["loss_msd_sw"] == pytest.approx(0.0, abs=1e-6)


def test_gradients_reach_student_and_heads_never_teacher():
    method = _built(MSDCRD(symmetric=True))
    teacher = tf.Variable(_maps(TEACHER_SHAPE, 11))
    student = tf.Variable(_maps(STUDENT_SHAPE, 12))
    heads = [method.teacher_heads[0].kernel, method.student_heads[0].kernel]
    with tf.GradientTape() as tape:
        out = method({"feat_last": teacher}, {"feat_last": student}, labels=LABELS)
        total = out["loss_msd_sw"] + out["loss_msd_fw"]
    grad_teacher, grad_student, *grad_heads = tape.gradient(total, [teacher, student, *heads])
    assert grad_teacher is None
    assert np.any(np.asarray(grad_student) != 0)
    assert all(np.any(np.asarray(g) != 0) for g in grad_heads)
    assert {v.path for v in method.trainable_weights} >= {v.path for v in heads}


def test_float16_large_features_give_finite_float32_terms():
    rng = np.random.default_rng(13)
    teacher = (rng.normal(size=TEACHER_SHAPE) * 3e4).clip(-6e4, 6e4).astype("float16")
    student = (rng.normal(size=STUDENT_SHAPE) * 3e4).clip(-6e4, 6e4).astype("float16")
    method = _built(MSDCRD(temperature=0.07, symmetric=True))
    out = method({"feat_last": teacher}, {"feat_last": student}, labels=LABELS)
    for value in out.values():
        assert np.asarray(value).dtype == np.float32
        assert np.isfinite(float(value))


def test_overlapping_pooling_on_heterogeneous_maps():
    method = _built(MSDCRD(pooling="overlapping", scales=((1.0, 1.0), (0.5, 0.25))))
    assert len(method._scale_ids[0]) == 1 + 9
    terms = _terms(method, _maps(TEACHER_SHAPE, 14), _maps(STUDENT_SHAPE, 15))
    assert all(np.isfinite(v) for v in terms.values())


def test_several_taps_sum_with_tap_weights():
    shapes = {"feat_2": (6, 8, 8, 8), "feat_3": (6, 4, 4, 8)}
    maps_t = {k: _maps(v, i) for i, (k, v) in enumerate(shapes.items())}
    maps_s = {k: _maps(v, 10 + i) for i, (k, v) in enumerate(shapes.items())}
    both = MSDCRD(taps=("feat_2", "feat_3"), tap_weights=(0.5, 2.0), projection="none")
    both.build_from_taps(shapes, shapes)
    total = {k: float(v) for k, v in both(maps_t, maps_s, labels=LABELS).items()}
    expected = {"loss_msd_sw": 0.0, "loss_msd_fw": 0.0}
    for tap, weight in (("feat_2", 0.5), ("feat_3", 2.0)):
        single = _built(MSDCRD(taps=(tap,), projection="none"), shapes[tap], shapes[tap], tap)
        for term, value in _terms(single, maps_t[tap], maps_s[tap], tap=tap).items():
            expected[term] += weight * value
    for term in total:
        assert total[term] == pytest.approx(expected[term], rel=1e-5)


def test_per_scale_weighting_and_same_scale_negatives():
    shape = (6, 4, 4, 8)
    teacher, student = _maps(shape, 16), _maps(shape, 17)
    method = _built(
        MSDCRD(
            scales=(1, 2),
            projection="none",
            region_weighting="per_scale",
            feature_negatives="same_scale",
        ),
        shape,
        shape,
    )
    terms = _terms(method, teacher, student)
    s = l2_normalize(multiscale_pool(student, (1, 2)))
    t = l2_normalize(multiscale_pool(teacher, (1, 2)))
    sw = np.mean(np.asarray(sample_wise_info_nce(s, t, 0.07)), axis=0)
    assert terms["loss_msd_sw"] == pytest.approx(0.5 * sw[0] + 0.5 * np.mean(sw[1:]), rel=1e-5)
    # The 1x1 region has no same-scale negative (loss 0); the 2x2 regions contrast among themselves.
    fw = np.mean(np.asarray(feature_wise_info_nce(s[:, 1:], t[:, 1:], 0.07)), axis=0)
    assert terms["loss_msd_fw"] == pytest.approx(0.5 * np.mean(fw), rel=1e-5)


def test_classifier_projection_uses_the_given_layers():
    teacher_fc = keras.layers.Dense(5, name="teacher_fc")
    student_fc = keras.layers.Dense(5, name="student_fc")
    teacher_fc.build((None, 64))
    student_fc.build((None, 32))
    method = _built(
        MSDCRD(
            projection="classifier",
            teacher_classifier=teacher_fc,
            student_classifier=student_fc,
        )
    )
    terms = _terms(method, _maps(TEACHER_SHAPE, 18), _maps(STUDENT_SHAPE, 19))
    assert all(np.isfinite(v) for v in terms.values())
    with pytest.raises(ValueError, match="cannot be serialized by config"):
        method.get_config()
    wrong = MSDCRD(
        projection="classifier", teacher_classifier=student_fc, student_classifier=student_fc
    )
    with pytest.raises(ValueError, match="teacher classifier takes 32 features"):
        _built(wrong)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"projection": "mlp"}, "projection must be one of"),
        ({"pooling": "pyramid"}, "pooling must be one of"),
        ({"temperature": 0.0}, "temperature must be > 0"),
        ({"tap_weights": (1.0, 2.0)}, "2 tap_weights for 1 taps"),
        ({"beta": -1.0}, ">= 0"),
        ({"projection": "classifier"}, "needs teacher_classifier"),
        ({"feature_negatives": "none"}, "feature_negatives must be one of"),
    ],
)
def test_invalid_options_raise(kwargs, message):
    with pytest.raises(ValueError, match=message):
        MSDCRD(**kwargs)


def test_shape_errors_are_clear():
    with pytest.raises(ValueError, match="projection='none' needs equal channel counts"):
        _built(MSDCRD(projection="none"))
    with pytest.raises(ValueError, match="Grid 4x4 does not divide"):
        _built(MSDCRD(), TEACHER_SHAPE, (6, 2, 2, 32))
    with pytest.raises(RuntimeError, match="build_from_taps"):
        MSDCRD()(
            {"feat_last": _maps(TEACHER_SHAPE, 0)}, {"feat_last": _maps(STUDENT_SHAPE, 0)}, LABELS
        )


def test_config_round_trip():
    assert isinstance(methods.get("msdcrd"), MSDCRD)
    method = MSDCRD(
        taps=("feat_2", "feat_3"),
        tap_weights=(0.5, 1.0),
        scales=((0.5, 0.25), (2, 1)),
        pooling="overlapping",
        projection="linear",
        projection_dim=64,
        temperature=0.07,
        symmetric=True,
        exclude_same_class_negatives=True,
        feature_negatives="same_scale",
        region_weighting="per_scale",
        beta=0.8,
        lambda_fw=0.5,
        name="msd",
    )
    config = method.get_config()
    clone = MSDCRD.from_config(config)
    assert clone.get_config() == config
    assert clone.scales == ((0.5, 0.25), (2, 1))
    revived = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(method))
    assert isinstance(revived, MSDCRD) and revived.get_config() == config


def _snapshot(variables):
    """Values of `variables` as tuples of floats, comparable with `==`."""
    return [tuple(np.ravel(v).tolist()) for v in variables]


def _tiny_model(name, filters, strides):
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(filters, 3, strides=strides, padding="same", name="conv")(inputs)
    x = keras.layers.ReLU(name="feat_1")(x)
    x = keras.layers.GlobalAveragePooling2D(name="pooled")(x)
    return keras.Model(inputs, keras.layers.Dense(3, name="fc")(x), name=name)


def test_distiller_trains_heads_and_student_but_not_teacher():
    teacher = _tiny_model("teacher", 16, 1)
    student = _tiny_model("student", 8, 2)
    method = MSDCRD(projection_dim=16)
    distiller = Distiller(teacher, student, methods=[methods.KD(), method])
    distiller.compile(optimizer=keras.optimizers.SGD(0.5))
    teacher_before = _snapshot(teacher.weights)
    student_before = _snapshot(student.trainable_weights)
    heads_before = _snapshot(method.trainable_weights)
    images = np.random.default_rng(20).normal(size=(6, 8, 8, 3)).astype("float32")
    logs = distiller.train_on_batch(images, LABELS, return_dict=True)
    assert all(np.isfinite(logs[k]) for k in ("loss_msd_sw", "loss_msd_fw", "loss_kd"))
    assert _snapshot(teacher.weights) == teacher_before
    assert _snapshot(student.trainable_weights) != student_before
    assert _snapshot(method.trainable_weights) != heads_before
    # The heads live in the method, not in the exported student.
    student_paths = {v.path for v in student.weights}
    assert not student_paths & {v.path for v in method.weights}
