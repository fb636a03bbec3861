import keras
import numpy as np
import pytest
import tensorflow as tf

from kerasdistill import Distiller, methods
from kerasdistill.methods import MSDCRD, MSDCRDVariants
from kerasdistill.ops.multiscale import region_scale_ids

TEACHER_SHAPE = (6, 8, 8, 64)
STUDENT_SHAPE = (6, 4, 4, 32)
LABELS = np.array([0, 1, 2, 0, 1, 2], "int32")


def _np_pool(x, scales):
    """Independent of ops.multiscale: NumPy means over the equal cells of each grid."""
    n, h, w, c = x.shape
    cells = [
        x.reshape(n, g, h // g, g, w // g, c).mean(axis=(2, 4)).reshape(n, g * g, c)
        for g in scales
    ]
    return np.concatenate(cells, axis=1)


def _np_unit(x):
    x = np.asarray(x, "float64")
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _np_sample_wise(s, t, tau, keep=None, positives=None):
    """`(B, P)` InfoNCE of `s[i, r]` against `t[j, r]`; masks `(B, B)` or `(P, B, B)`."""
    logits = np.einsum("ird,jrd->rij", s, t) / tau  # anchor i against image j, per region
    eye = np.eye(s.shape[0], dtype=bool)
    kept = np.broadcast_to(True if keep is None else eye | keep, logits.shape)
    pos = np.broadcast_to(eye if positives is None else eye | positives, logits.shape) & kept
    log_denominator = np.log((np.exp(logits) * kept).sum(-1))
    return (log_denominator - (logits * pos).sum(-1) / pos.sum(-1)).T


def _np_feature_wise(s, t, tau, keep=None):
    """`(B, P)` InfoNCE of `s[i, r]` against `t[i, q]`; `keep` a `(P, P)` mask."""
    logits = np.einsum("ird,iqd->irq", s, t) / tau  # region r against region q, per image
    eye = np.eye(s.shape[1], dtype=bool)
    kept = True if keep is None else eye | np.asarray(keep)
    return np.log((np.exp(logits) * kept).sum(-1)) - np.einsum("irr->ir", logits)


def _maps(shape, seed):
    return np.random.default_rng(seed).normal(size=shape).astype("float32")


def _built(method, teacher_shape=TEACHER_SHAPE, student_shape=STUDENT_SHAPE, tap="feat_last"):
    method.build_from_taps({tap: teacher_shape}, {tap: student_shape})
    return method


def _terms(method, teacher_map, student_map, labels=LABELS, tap="feat_last"):
    out = method({tap: teacher_map}, {tap: student_map}, labels=labels)
    return {k: float(v) for k, v in out.items()}


def _reference_terms(teacher_map, student_map, tau=0.07, scales=(1, 2, 4)):
    """Both losses in NumPy, for `projection="none"`."""
    s = _np_unit(_np_pool(student_map, scales))
    t = _np_unit(_np_pool(teacher_map, scales))
    return (
        float(np.mean(_np_sample_wise(s, t, tau))),
        float(np.mean(_np_feature_wise(s, t, tau))),
    )


def test_heterogeneous_maps_with_linear_heads():
    method = _built(MSDCRD())
    terms = _terms(method, _maps(TEACHER_SHAPE, 0), _maps(STUDENT_SHAPE, 1))
    assert set(terms) == set(method.loss_terms()) == {"loss_msd_sw", "loss_msd_fw"}
    assert all(np.isfinite(v) and v > 0 for v in terms.values())
    assert method.teacher_heads[0].kernel.shape == (64, 128)
    assert method.student_heads[0].kernel.shape == (32, 128)


def test_linear_heads_match_a_numpy_reference():
    method = _built(MSDCRD(projection="linear", projection_dim=16))
    teacher, student = _maps(TEACHER_SHAPE, 59), _maps(STUDENT_SHAPE, 60)
    terms = _terms(method, teacher, student)

    def region_means(x, grid):
        # Independent of ops.multiscale: plain NumPy means over equal cells.
        n, h, w, c = x.shape
        cells = x.reshape(n, grid, h // grid, grid, w // grid, c).mean(axis=(2, 4))
        return cells.reshape(n, grid * grid, c)

    def project(x, head):
        local = np.concatenate([region_means(x, g) for g in (1, 2, 4)], axis=1)
        kernel, bias = (np.asarray(w) for w in head.weights)
        z = local @ kernel + bias
        return z / np.linalg.norm(z, axis=-1, keepdims=True)

    s = project(student, method.student_heads[0])
    t = project(teacher, method.teacher_heads[0])
    logits = np.einsum("ird,jrd->rij", s, t) / 0.07  # anchor i against image j, per region
    sw = np.mean([np.mean(np.log(np.exp(l).sum(1)) - np.diag(l)) for l in logits])
    pair = np.einsum("ird,iqd->irq", s, t) / 0.07  # region r against region q, per image
    fw = np.mean(np.log(np.exp(pair).sum(-1)) - np.einsum("irr->ir", pair))
    assert terms["loss_msd_sw"] == pytest.approx(sw, rel=1e-5)
    assert terms["loss_msd_fw"] == pytest.approx(fw, rel=1e-5)


def test_auto_projection_is_parameter_free_when_channels_match():
    same = _built(MSDCRD(), (6, 8, 8, 16), (6, 8, 8, 16))
    assert same.trainable_weights == []
    teacher = _maps((6, 8, 8, 16), 7)
    student = teacher + 0.2 * _maps((6, 8, 8, 16), 8)
    sw, fw = _reference_terms(teacher, student)
    terms = _terms(same, teacher, student)
    # Near-aligned maps: float32 losses of ~1e-3 are exact to ~1e-6 (logits ~14).
    assert terms["loss_msd_sw"] == pytest.approx(sw, rel=1e-5, abs=1e-6)
    assert terms["loss_msd_fw"] == pytest.approx(fw, rel=1e-5, abs=1e-6)
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
        MSDCRD(projection="none", weight=2.0, sw_weight=0.25, fw_weight=0.5),
        (6, 8, 8, 16),
        (6, 8, 8, 16),
    )
    terms = _terms(method, teacher, student)
    sw, fw = _reference_terms(teacher, student)
    assert terms["loss_msd_sw"] == pytest.approx(2.0 * 0.25 * sw, rel=1e-5, abs=1e-6)
    assert terms["loss_msd_fw"] == pytest.approx(2.0 * 0.5 * fw, rel=1e-5, abs=1e-6)


def test_zero_weights_skip_terms():
    shape = (6, 4, 4, 8)
    teacher, student = _maps(shape, 4), _maps(shape, 5)
    no_fw = _terms(_built(MSDCRD(projection="none", fw_weight=0.0), shape, shape), teacher, student)
    assert no_fw["loss_msd_fw"] == 0.0 and no_fw["loss_msd_sw"] > 0
    no_sw = _terms(_built(MSDCRD(projection="none", sw_weight=0.0), shape, shape), teacher, student)
    assert no_sw["loss_msd_sw"] == 0.0 and no_sw["loss_msd_fw"] > 0
    off = _terms(_built(MSDCRD(projection="none", weight=0.0), shape, shape), teacher, student)
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
    method = _built(MSDCRDVariants(same_class_pairs="exclude", symmetric=True))
    teacher, student = _maps(TEACHER_SHAPE, 7), _maps(STUDENT_SHAPE, 8)
    perm = np.array([3, 5, 0, 2, 4, 1])
    before = _terms(method, teacher, student, LABELS)
    after = _terms(method, teacher[perm], student[perm], LABELS[perm])
    for term in before:
        assert after[term] == pytest.approx(before[term], rel=1e-5)


def test_excluding_same_class_negatives_changes_only_the_sample_wise_term():
    shape = (6, 4, 4, 8)
    teacher, student = _maps(shape, 9), _maps(shape, 10)
    plain = _terms(_built(MSDCRD(projection="none"), shape, shape), teacher, student)
    masked = _terms(
        _built(MSDCRDVariants(projection="none", same_class_pairs="exclude"), shape, shape),
        teacher,
        student,
    )
    assert masked["loss_msd_sw"] < plain["loss_msd_sw"]
    assert masked["loss_msd_fw"] == pytest.approx(plain["loss_msd_fw"], rel=1e-6)
    # With every image of one class, only the positive remains: the loss is 0.
    single = _terms(
        _built(MSDCRDVariants(projection="none", same_class_pairs="exclude"), shape, shape),
        teacher,
        student,
        labels=np.zeros(6, "int32"),
    )
    assert single["loss_msd_sw"] == pytest.approx(0.0, abs=1e-6)


def test_gradients_reach_student_and_heads_never_teacher():
    method = _built(MSDCRDVariants(symmetric=True))
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
    method = _built(MSDCRDVariants(temperature=0.07, symmetric=True))
    out = method({"feat_last": teacher}, {"feat_last": student}, labels=LABELS)
    for value in out.values():
        assert np.asarray(value).dtype == np.float32
        assert np.isfinite(float(value))


def test_overlapping_pooling_on_heterogeneous_maps():
    method = _built(MSDCRDVariants(pooling="overlapping", scales=((1.0, 1.0), (0.5, 0.25))))
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
        MSDCRDVariants(
            scales=(1, 2),
            projection="none",
            region_weighting="per_scale",
            feature_negatives="same_scale",
        ),
        shape,
        shape,
    )
    terms = _terms(method, teacher, student)
    s = _np_unit(_np_pool(student, (1, 2)))
    t = _np_unit(_np_pool(teacher, (1, 2)))
    sw = np.mean(np.asarray(_np_sample_wise(s, t, 0.07)), axis=0)
    assert terms["loss_msd_sw"] == pytest.approx(0.5 * sw[0] + 0.5 * np.mean(sw[1:]), rel=1e-5)
    # The 1x1 region has no same-scale negative (loss 0); the 2x2 regions contrast among themselves.
    fw = np.mean(np.asarray(_np_feature_wise(s[:, 1:], t[:, 1:], 0.07)), axis=0)
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
        ({"weight": -1.0}, "weight must be a finite number >= 0"),
        ({"sw_weight": -1.0}, "sw_weight, fw_weight and tap_weights must be >= 0"),
        ({"feature_negatives": "none"}, "feature_negatives must be one of"),
        ({"same_class_pairs": "ignore"}, "same_class_pairs must be one of"),
        ({"region_categorization": "drop"}, "region_categorization must be one of"),
        ({"region_reference": "student"}, "region_reference must be one of"),
        ({"complementary_weight": 1.5}, r"complementary_weight must be in \[0, 1\]"),
        ({"scales": "all"}, "scales must be a sequence of scales or 'auto'"),
        ({"scales": "auto", "pooling": "overlapping"}, "with pooling='grid'"),
        ({"student_classifier": keras.layers.Dense(3)}, "student_classifier needs projection"),
        ({"teacher_classifier": keras.layers.Dense(3)}, "or a region_categorization"),
    ],
)
def test_invalid_options_raise(kwargs, message):
    with pytest.raises(ValueError, match=message):
        MSDCRDVariants(**kwargs)


def test_classifier_projection_without_classifiers_fails_at_build():
    with pytest.raises(ValueError, match="needs teacher_classifier and student_classifier"):
        _built(MSDCRD(projection="classifier"))


def test_distiller_finds_the_classifiers_the_options_use():
    teacher = _tiny_model("teacher", 16, 1)
    student = _tiny_model("student", 8, 2)
    by_classifier = MSDCRD(taps=("feat_1",), projection="classifier", scales=(1, 2))
    categorizing = MSDCRDVariants(
        taps=("feat_1",), projection="channel_pool", region_categorization="downweight"
    )
    Distiller(teacher, student, methods=[by_classifier])
    assert by_classifier.teacher_classifier is teacher.get_layer("fc")
    assert by_classifier.student_classifier is student.get_layer("fc")
    Distiller(teacher, student, methods=[categorizing])
    assert categorizing.teacher_classifier is teacher.get_layer("fc")
    assert categorizing.student_classifier is None
    # Found (not given) classifiers are found again after a config round trip.
    config = by_classifier.get_config()
    assert config["projection"] == "classifier"
    clone = MSDCRDVariants.from_config(config)
    distiller = Distiller(teacher, student, methods=[clone])
    distiller.compile(optimizer=keras.optimizers.SGD(0.1))
    images = np.random.default_rng(53).normal(size=(6, 8, 8, 3)).astype("float32")
    logs = distiller.train_on_batch(images, LABELS, return_dict=True)
    assert np.isfinite(logs["loss_msd_sw"]) and np.isfinite(logs["loss_msd_fw"])
    # The projected local features are the classifier outputs of each region.
    t_map = _maps((6, 8, 8, 16), 54)
    s_map = _maps((6, 4, 4, 8), 55)
    terms = _terms(clone, t_map, s_map, tap="feat_1")

    def project(local, fc):
        kernel, bias = (np.asarray(w) for w in fc.weights)
        logits = local @ kernel + bias
        return logits / np.linalg.norm(logits, axis=-1, keepdims=True)

    s = project((_np_pool(s_map, (1, 2))), student.get_layer("fc"))
    t = project((_np_pool(t_map, (1, 2))), teacher.get_layer("fc"))
    assert terms["loss_msd_sw"] == pytest.approx(
        float(np.mean(_np_sample_wise(s, t, 0.07))), rel=1e-5
    )


def _numpy_channel_pool(x, width):
    """Independent reference: output channel i averages channels [iC/w, ceil((i+1)C/w))."""
    channels = x.shape[-1]
    out = []
    for i in range(width):
        start = int(np.floor(i * channels / width))
        stop = int(np.ceil((i + 1) * channels / width))
        out.append(x[..., start:stop].mean(axis=-1))
    return np.stack(out, axis=-1)


@pytest.mark.parametrize("channels, width", [(64, 32), (192, 64), (10, 4), (7, 7)])
def test_channel_pool_matrix_matches_a_numpy_reference(channels, width):
    from kerasdistill.ops.alignment import channel_pool_matrix, pool_channels

    x = _maps((3, 5, channels), channels + width)
    expected = _numpy_channel_pool(x, width)
    np.testing.assert_allclose(np.asarray(pool_channels(x, width)), expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(channel_pool_matrix(channels, width).sum(axis=0), 1.0, rtol=1e-6)
    with pytest.raises(ValueError, match="maps 4 channels to 1..4, got 5"):
        channel_pool_matrix(4, 5)


def test_channel_pool_projection_pools_the_wider_side():
    method = _built(MSDCRD(projection="channel_pool"))
    assert method.trainable_weights == []
    teacher, student = _maps(TEACHER_SHAPE, 56), _maps(STUDENT_SHAPE, 57)
    terms = _terms(method, teacher, student)
    s = _np_unit(_np_pool(student, (1, 2, 4)))
    t = _np_unit(_numpy_channel_pool((_np_pool(teacher, (1, 2, 4))), 32))
    assert terms["loss_msd_sw"] == pytest.approx(
        float(np.mean(_np_sample_wise(s, t, 0.07))), rel=1e-5
    )
    assert terms["loss_msd_fw"] == pytest.approx(
        float(np.mean(_np_feature_wise(s, t, 0.07))), rel=1e-5
    )


def test_shape_errors_are_clear():
    with pytest.raises(ValueError, match="projection='none' needs equal channel counts"):
        _built(MSDCRD(projection="none"))
    with pytest.raises(ValueError, match="Grid 4x4 is finer than the feature map"):
        _built(MSDCRD(scales=(1, 2, 4)), TEACHER_SHAPE, (6, 2, 2, 32))
    # The default grids fit the smaller map: 1 and 2 on 2x2, 1, 2 and 4 on 4x4 and larger.
    assert _built(MSDCRD(), TEACHER_SHAPE, (6, 2, 2, 32))._tap_scales == [(1, 2)]
    assert _built(MSDCRD())._tap_scales == [(1, 2, 4)]
    with pytest.raises(ValueError, match="build_from_taps"):
        MSDCRD()(
            {"feat_last": _maps(TEACHER_SHAPE, 0)}, {"feat_last": _maps(STUDENT_SHAPE, 0)}, LABELS
        )


def test_config_round_trip():
    assert isinstance(methods.get("msdcrd"), MSDCRD)
    method = MSDCRDVariants(
        taps=("feat_2", "feat_3"),
        tap_weights=(0.5, 1.0),
        scales=((0.5, 0.25), (2, 1)),
        pooling="overlapping",
        projection="linear",
        projection_dim=64,
        temperature=0.07,
        symmetric=True,
        same_class_pairs="exclude",
        feature_negatives="same_scale",
        region_weighting="per_scale",
        weight=0.8,
        fw_weight=0.5,
        name="msd",
    )
    config = method.get_config()
    clone = MSDCRDVariants.from_config(config)
    assert clone.get_config() == config
    assert clone.scales == ((0.5, 0.25), (2, 1))
    revived = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(method))
    assert isinstance(revived, MSDCRDVariants) and revived.get_config() == config


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


def test_default_grids_train_on_non_divisible_imagenet_sized_maps():
    # ImageNet ResNets end on 7x7 maps; 2 and 4 do not divide 7 (adaptive cells).
    pairs = (((4, 7, 7, 16), (4, 7, 7, 8)), ((4, 14, 14, 8), (4, 7, 7, 8)))
    for teacher_shape, student_shape in pairs:
        method = _built(MSDCRD(), teacher_shape, student_shape)
        assert len(region_scale_ids(method._windows[0])) == 21
        teacher = tf.constant(_maps(teacher_shape, 30))
        student = tf.Variable(_maps(student_shape, 31))
        with tf.GradientTape() as tape:
            out = method({"feat_last": teacher}, {"feat_last": student}, labels=LABELS[:4])
            total = out["loss_msd_sw"] + out["loss_msd_fw"]
        assert all(np.isfinite(float(v)) and float(v) > 0 for v in out.values())
        grad = np.asarray(tape.gradient(total, student))
        assert np.all(np.isfinite(grad)) and np.any(grad != 0)


def _reference_fw(teacher, student, keep, scales=(1, 2, 4)):
    s = _np_unit(_np_pool(student, scales))
    t = _np_unit(_np_pool(teacher, scales))
    return float(np.mean(_np_feature_wise(s, t, 0.07, keep)))


def test_non_overlapping_feature_negatives():
    shape = (6, 8, 8, 8)
    teacher, student = _maps(shape, 40), _maps(shape, 41)
    default = _terms(_built(MSDCRD(projection="none"), shape, shape), teacher, student)
    method = MSDCRDVariants(projection="none", feature_negatives="non_overlapping")
    method = _built(method, shape, shape)
    terms = _terms(method, teacher, student)
    # Reference mask, written out: region 0 is global, 1-4 the quadrants, 5-20 the 4x4 cells.
    cells = [(0, 0, 1)] + [(1, i, j) for i in range(2) for j in range(2)]
    cells += [(2, i, j) for i in range(4) for j in range(4)]
    size = {0: 1, 1: 2, 2: 4}

    def overlap(a, b):
        (ka, ia, ja), (kb, ib, jb) = a, b
        if ka == 0 or kb == 0:
            return True
        coarse, fine = (a, b) if ka <= kb else (b, a)
        ratio = size[fine[0]] // size[coarse[0]]
        return fine[1] // ratio == coarse[1] and fine[2] // ratio == coarse[2]

    keep = np.array([[not overlap(a, b) for b in cells] for a in cells])
    assert terms["loss_msd_fw"] == pytest.approx(_reference_fw(teacher, student, keep), rel=1e-5)
    assert terms["loss_msd_fw"] < default["loss_msd_fw"] - 1e-3
    assert terms["loss_msd_sw"] == pytest.approx(default["loss_msd_sw"], rel=1e-6)
    # One grid has no overlapping regions: the option changes nothing.
    one_grid = [
        _terms(
            _built(
                MSDCRDVariants(projection="none", scales=(4,), feature_negatives=n), shape, shape
            ),
            teacher,
            student,
        )
        for n in ("all", "non_overlapping")
    ]
    assert one_grid[0] == pytest.approx(one_grid[1], rel=1e-6)


def test_same_class_positives():
    shape = (6, 4, 4, 8)
    teacher, student = _maps(shape, 42), _maps(shape, 43)
    default = _built(MSDCRD(projection="none"), shape, shape)
    method = _built(MSDCRDVariants(projection="none", same_class_pairs="positives"), shape, shape)
    terms, plain = _terms(method, teacher, student), _terms(default, teacher, student)
    s = _np_unit(_np_pool(student, (1, 2, 4)))
    t = _np_unit(_np_pool(teacher, (1, 2, 4)))
    same = LABELS[:, None] == LABELS[None, :]
    expected = np.mean(_np_sample_wise(s, t, 0.07, positives=same))
    assert terms["loss_msd_sw"] == pytest.approx(float(expected), rel=1e-5)
    assert abs(terms["loss_msd_sw"] - plain["loss_msd_sw"]) > 0.1
    assert terms["loss_msd_fw"] == pytest.approx(plain["loss_msd_fw"], rel=1e-6)
    # With six distinct labels there is no same-class pair: identical to the default.
    distinct = np.arange(6, dtype="int32")
    assert _terms(method, teacher, student, distinct) == pytest.approx(
        _terms(default, teacher, student, distinct), rel=1e-6
    )


CLASSES = 3


def _identity_classifier():
    """A teacher 'classifier' on 3-channel maps whose prediction is the largest channel."""
    layer = keras.layers.Dense(CLASSES, name="teacher_fc")
    layer.build((None, CLASSES))
    layer.set_weights([np.eye(CLASSES, dtype="float32"), np.zeros(CLASSES, "float32")])
    return layer


def _categorizing_method():
    return MSDCRDVariants(
        region_categorization="downweight", teacher_classifier=_identity_classifier()
    )


def _categorized(shape=(6, 4, 4, CLASSES), **kwargs):
    method = MSDCRDVariants(projection="none", teacher_classifier=_identity_classifier(), **kwargs)
    return _built(method, shape, shape)


def _numpy_consistent(teacher, reference, scales=(1, 2, 4)):
    pooled = (_np_pool(teacher, scales))
    return pooled.argmax(-1) == reference[:, None]


def test_region_categorization_consistent_only_and_downweight():
    shape = (6, 4, 4, CLASSES)
    teacher, student = _maps(shape, 46), _maps(shape, 47)
    consistent = _numpy_consistent(teacher, LABELS)
    assert 0.2 < consistent.mean() < 0.8  # a crafted mix of both groups
    default = _terms(_built(MSDCRD(projection="none"), shape, shape), teacher, student)
    s = (_np_unit(_np_pool(student, (1, 2, 4))))
    t = (_np_unit(_np_pool(teacher, (1, 2, 4))))

    only = _terms(_categorized(region_categorization="consistent_only"), teacher, student)
    pairs = consistent.T[:, :, None] & consistent.T[:, None, :]
    per_anchor = np.asarray(_np_sample_wise(s, t, 0.07, keep=pairs))
    expected = (per_anchor * consistent).sum() / consistent.sum()
    assert only["loss_msd_sw"] == pytest.approx(expected, rel=1e-5)
    assert abs(only["loss_msd_sw"] - default["loss_msd_sw"]) > 1e-2
    assert only["loss_msd_fw"] == pytest.approx(default["loss_msd_fw"], rel=1e-6)

    down = _categorized(region_categorization="downweight", complementary_weight=0.25)
    down = _terms(down, teacher, student)
    weights = np.where(consistent, 1.0, 0.25)
    for term, per_anchor in (
        ("loss_msd_sw", _np_sample_wise(s, t, 0.07)),
        ("loss_msd_fw", _np_feature_wise(s, t, 0.07)),
    ):
        expected = (np.asarray(per_anchor) * weights).sum() / weights.sum()
        assert down[term] == pytest.approx(expected, rel=1e-5)
        assert abs(down[term] - default[term]) > 1e-3


def test_region_categorization_is_a_no_op_when_every_region_is_consistent():
    shape = (6, 4, 4, CLASSES)
    teacher = _maps(shape, 48) + 10.0 * np.eye(CLASSES, dtype="float32")[LABELS][:, None, None, :]
    student = _maps(shape, 49)
    assert _numpy_consistent(teacher, LABELS).all()
    default = _terms(_built(MSDCRD(projection="none"), shape, shape), teacher, student)
    for option in ("consistent_only", "downweight"):
        terms = _terms(_categorized(region_categorization=option), teacher, student)
        assert terms == pytest.approx(default, rel=1e-5)


def test_region_reference_teacher_reads_the_teacher_logits():
    shape = (6, 4, 4, CLASSES)
    teacher, student = _maps(shape, 50), _maps(shape, 51)
    method = _categorized(region_categorization="consistent_only", region_reference="teacher")
    assert "logits" in method.teacher_taps and "logits" not in method.student_taps
    predicted = np.array([2, 2, 1, 0, 1, 2], "int32")
    logits = np.eye(CLASSES, dtype="float32")[predicted]

    def run(method, labels):
        teacher_outputs = {"feat_last": teacher, "logits": logits}
        out = method(teacher_outputs, {"feat_last": student}, labels=labels)
        return {k: float(v) for k, v in out.items()}

    by_label = _categorized(region_categorization="consistent_only")
    # Against the teacher's predictions, the labels no longer matter.
    assert run(method, LABELS) == pytest.approx(run(by_label, predicted), rel=1e-6)
    assert run(method, LABELS) != pytest.approx(run(by_label, LABELS), rel=1e-3)


def test_region_categorization_in_a_distiller_step():
    teacher = _tiny_model("teacher", 16, 1)
    student = _tiny_model("student", 8, 2)
    method = MSDCRDVariants(
        taps=("feat_1",),
        region_categorization="downweight",
        region_reference="teacher",
        teacher_classifier=teacher.get_layer("fc"),
        projection_dim=16,
    )
    distiller = Distiller(teacher, student, methods=[method])
    distiller.compile(optimizer=keras.optimizers.SGD(0.1))
    images = np.random.default_rng(52).normal(size=(6, 8, 8, 3)).astype("float32")
    logs = distiller.train_on_batch(images, LABELS, return_dict=True)
    assert np.isfinite(logs["loss_msd_sw"]) and np.isfinite(logs["loss_msd_fw"])


def test_region_categorization_needs_a_fitting_teacher_classifier():
    with pytest.raises(ValueError, match="needs teacher_classifier"):
        _built(MSDCRDVariants(region_categorization="downweight"))
    with pytest.raises(ValueError, match="takes 3 features but the taps have"):
        _built(_categorizing_method())


def test_every_stage_fits_grids_to_each_map():
    teacher_shapes = {"feat_1": (6, 8, 8, 8), "feat_2": (6, 4, 4, 8), "feat_3": (6, 2, 2, 8)}
    student_shapes = {"feat_1": (6, 8, 8, 8), "feat_2": (6, 4, 4, 8), "feat_3": (6, 1, 1, 8)}
    method = MSDCRD.every_stage(3, projection="none")
    assert method.taps == ("feat_1", "feat_2", "feat_3")
    assert method.tap_weights == pytest.approx((1 / 3,) * 3)
    method.build_from_taps(teacher_shapes, student_shapes)
    assert method._tap_scales == [(1, 2, 4), (1, 2, 4), (1,)]
    maps_t = {k: _maps(v, 60 + i) for i, (k, v) in enumerate(teacher_shapes.items())}
    maps_s = {k: _maps(v, 70 + i) for i, (k, v) in enumerate(student_shapes.items())}
    total = {k: float(v) for k, v in method(maps_t, maps_s, labels=LABELS).items()}
    expected = {"loss_msd_sw": 0.0, "loss_msd_fw": 0.0}
    for tap, scales in zip(method.taps, method._tap_scales):
        single = MSDCRD(taps=(tap,), scales=scales, projection="none")
        single.build_from_taps({tap: teacher_shapes[tap]}, {tap: student_shapes[tap]})
        for term, value in _terms(single, maps_t[tap], maps_s[tap], tap=tap).items():
            expected[term] += value / 3
    assert total == pytest.approx(expected, rel=1e-5)
    with pytest.raises(ValueError, match="num_stages must be a positive int"):
        MSDCRD.every_stage(0)
    with pytest.raises(ValueError, match="every_stage sets taps"):
        MSDCRD.every_stage(2, taps=("feat_1",))


def test_second_round_options_round_trip_through_config():
    options = {
        "scales": "auto",
        "same_class_pairs": "positives",
        "region_categorization": "consistent_only",
        "region_reference": "teacher",
        "complementary_weight": 0.25,
        "feature_negatives": "non_overlapping",
        "projection": "channel_pool",
    }
    method = MSDCRDVariants(**options)
    config = method.get_config()
    assert {k: config[k] for k in options} == options
    clone = MSDCRDVariants.from_config(config)
    assert clone.get_config() == config and clone.teacher_taps == ("feat_last", "logits")
    staged = MSDCRDVariants.every_stage(
        4, stage_weights=(0.1, 0.2, 0.3, 0.4), region_categorization="downweight"
    )
    assert isinstance(staged, MSDCRDVariants)
    assert MSDCRDVariants.from_config(staged.get_config()).get_config() == staged.get_config()
    with pytest.raises(ValueError, match="cannot be serialized by config"):
        _categorizing_method().get_config()


def test_classifier_projection_on_the_pre_pool_map_of_mobilenetv2():
    from kerasdistill import models

    teacher = models.get("resnet8x4", num_classes=5)
    student = models.get("MobileNetV2", num_classes=5)
    with pytest.raises(ValueError, match="classifier takes 1280 features but tap 'feat_last'"):
        Distiller(teacher, student, methods=[MSDCRD(projection="classifier", scales=(1, 2))])
    method = MSDCRD(taps=("pre_pool",), projection="classifier", scales=(1, 2))
    distiller = Distiller(teacher, student, methods=[method])
    images = np.random.default_rng(58).normal(size=(6, 32, 32, 3)).astype("float32")
    terms = distiller._loss_terms(images, LABELS, distiller(images, training=True))
    assert np.isfinite(float(terms["loss_msd_sw"])) and np.isfinite(float(terms["loss_msd_fw"]))
    assert method.student_classifier is student.get_layer("classifier_0")


def test_labels_are_needed_only_by_the_options_that_read_them():
    teacher, student = _maps(TEACHER_SHAPE, 0), _maps(STUDENT_SHAPE, 1)
    label_free = _built(MSDCRD())
    assert _terms(label_free, teacher, student, labels=None) == _terms(label_free, teacher, student)
    with pytest.raises(ValueError, match="same_class_pairs='exclude' .* needs the batch's labels"):
        _terms(_built(MSDCRDVariants(same_class_pairs="exclude")), teacher, student, labels=None)


def test_variants_at_their_defaults_compute_the_core():
    teacher, student = _maps(TEACHER_SHAPE, 61), _maps(STUDENT_SHAPE, 62)
    core = _built(MSDCRD(projection="channel_pool"))
    variants = _built(MSDCRDVariants(projection="channel_pool"))
    assert methods.get("msdcrd_variants").get_config()["same_class_pairs"] == "negatives"
    assert variants.min_batch_per_replica == core.min_batch_per_replica == 2
    assert _terms(variants, teacher, student) == pytest.approx(_terms(core, teacher, student))
