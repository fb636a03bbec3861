import keras
import numpy as np
import pytest
import tensorflow as tf

from kerasdistill import Distiller, methods
from kerasdistill.methods import MSDCRD
from tests.methods import msdcrd_reference as ref

TEACHER_SHAPE = (6, 8, 8, 64)
STUDENT_SHAPE = (6, 4, 4, 32)
LABELS = np.array([0, 1, 2, 0, 1, 2], "int32")


def _built(method, teacher_shape=TEACHER_SHAPE, student_shape=STUDENT_SHAPE, tap="feat_last"):
    method.build_from_taps({tap: teacher_shape}, {tap: student_shape})
    return method


def _terms(method, teacher_map, student_map, labels=LABELS, tap="feat_last"):
    out = method({tap: teacher_map}, {tap: student_map}, labels=labels)
    return {k: float(v) for k, v in out.items()}


def _dense(x, layer):
    kernel, bias = (np.asarray(w, "float64") for w in layer.weights)
    return x @ kernel + bias


def test_differing_widths_get_linear_heads_matching_numpy():
    method = _built(MSDCRD(projection_dim=16))
    assert method.loss_terms() == ("loss_msd_sw", "loss_msd_fw")
    assert method.teacher_heads[0].kernel.shape == (64, 16)
    assert method.student_heads[0].kernel.shape == (32, 16)
    teacher, student = ref.maps(TEACHER_SHAPE, 59), ref.maps(STUDENT_SHAPE, 60)
    terms = _terms(method, teacher, student)
    s = ref.unit(_dense(ref.pool(student, (1, 2, 4)), method.student_heads[0]))
    t = ref.unit(_dense(ref.pool(teacher, (1, 2, 4)), method.teacher_heads[0]))
    assert terms["loss_msd_sw"] == pytest.approx(np.mean(ref.sample_wise(s, t, 0.07)), rel=1e-5)
    assert terms["loss_msd_fw"] == pytest.approx(np.mean(ref.feature_wise(s, t, 0.07)), rel=1e-5)


def test_matching_widths_are_parameter_free_and_match_numpy():
    shape = (6, 8, 8, 16)
    method = _built(MSDCRD(), shape, shape)
    assert method.trainable_weights == []
    teacher = ref.maps(shape, 7)
    student = teacher + 0.2 * ref.maps(shape, 8)
    sw, fw = ref.terms(teacher, student)
    terms = _terms(method, teacher, student)
    # Near-aligned maps: float32 losses of ~1e-3 are exact to ~1e-6 (logits ~14).
    assert terms["loss_msd_sw"] == pytest.approx(sw, rel=1e-5, abs=1e-6)
    assert terms["loss_msd_fw"] == pytest.approx(fw, rel=1e-5, abs=1e-6)
    # Labels are not read.
    assert _terms(method, teacher, student, labels=None) == terms


def test_term_weights_multiply_the_numpy_terms():
    shape = (6, 4, 4, 8)
    teacher, student = ref.maps(shape, 2), ref.maps(shape, 3)
    sw, fw = ref.terms(teacher, student)
    method = _built(MSDCRD(weight=2.0, sw_weight=0.25, fw_weight=0.5), shape, shape)
    terms = _terms(method, teacher, student)
    assert terms["loss_msd_sw"] == pytest.approx(2.0 * 0.25 * sw, rel=1e-5)
    assert terms["loss_msd_fw"] == pytest.approx(2.0 * 0.5 * fw, rel=1e-5)
    no_fw = _terms(_built(MSDCRD(fw_weight=0.0), shape, shape), teacher, student)
    assert no_fw == pytest.approx({"loss_msd_sw": sw, "loss_msd_fw": 0.0}, rel=1e-5)
    off = _terms(_built(MSDCRD(weight=0.0), shape, shape), teacher, student)
    assert off == {"loss_msd_sw": 0.0, "loss_msd_fw": 0.0}


def test_several_taps_sum_with_tap_weights():
    teacher_shapes = {"feat_2": (6, 8, 8, 8), "feat_3": (6, 4, 4, 16)}
    student_shapes = {"feat_2": (6, 8, 8, 8), "feat_3": (6, 4, 4, 8)}
    method = MSDCRD(taps=("feat_2", "feat_3"), tap_weights=(0.5, 0.0), projection_dim=4)
    method.build_from_taps(teacher_shapes, student_shapes)
    # Heads only where the widths differ, also for a tap of weight 0.
    assert [h.kernel.shape for h in method.student_heads] == [(8, 4)]
    teacher = {k: ref.maps(v, i) for i, (k, v) in enumerate(teacher_shapes.items())}
    student = {k: ref.maps(v, 10 + i) for i, (k, v) in enumerate(student_shapes.items())}
    out = {k: float(v) for k, v in method(teacher, student, labels=LABELS).items()}
    sw, fw = ref.terms(teacher["feat_2"], student["feat_2"])
    assert out == pytest.approx({"loss_msd_sw": 0.5 * sw, "loss_msd_fw": 0.5 * fw}, rel=1e-5)


def test_stages_decouple_every_stage_map_with_fitted_grids():
    teacher_shapes = {"feat_1": (6, 8, 8, 8), "feat_2": (6, 4, 4, 8), "feat_3": (6, 2, 2, 8)}
    student_shapes = {"feat_1": (6, 8, 8, 8), "feat_2": (6, 4, 4, 8), "feat_3": (6, 1, 1, 8)}
    method = methods.get({"name": "msdcrd", "stages": 3})  # as --method_kwargs gives it
    assert method.taps == ("feat_1", "feat_2", "feat_3")
    assert method.tap_weights == pytest.approx((1 / 3,) * 3)
    method.build_from_taps(teacher_shapes, student_shapes)
    teacher = {k: ref.maps(v, 60 + i) for i, (k, v) in enumerate(teacher_shapes.items())}
    student = {k: ref.maps(v, 70 + i) for i, (k, v) in enumerate(student_shapes.items())}
    out = {k: float(v) for k, v in method(teacher, student, labels=LABELS).items()}
    # 8x8 and 4x4 maps take grids 1, 2, 4; a 2x2 / 1x1 pair the global grid only.
    per_tap = [
        ref.terms(teacher[tap], student[tap], grids=grids)
        for tap, grids in (("feat_1", (1, 2, 4)), ("feat_2", (1, 2, 4)), ("feat_3", (1,)))
    ]
    expected = [sum(terms[k] for terms in per_tap) / 3 for k in (0, 1)]
    assert [out["loss_msd_sw"], out["loss_msd_fw"]] == pytest.approx(expected, rel=1e-5)
    config = method.get_config()
    assert (config["stages"], config["taps"]) == (3, None)
    clone = MSDCRD.from_config(config)
    assert (clone.taps, clone.tap_weights) == (method.taps, method.tap_weights)
    with pytest.raises(ValueError, match="stages must be a positive int, got 0"):
        MSDCRD(stages=0)
    with pytest.raises(ValueError, match="takes taps or stages, not both"):
        MSDCRD(stages=2, taps=("feat_1",))


def test_default_grids_fit_the_smaller_map():
    teacher_shape, student_shape = (6, 8, 8, 8), (6, 2, 2, 8)
    teacher, student = ref.maps(teacher_shape, 20), ref.maps(student_shape, 21)
    terms = _terms(_built(MSDCRD(), teacher_shape, student_shape), teacher, student)
    sw, fw = ref.terms(teacher, student, grids=(1, 2))
    assert terms == pytest.approx({"loss_msd_sw": sw, "loss_msd_fw": fw}, rel=1e-5)
    with pytest.raises(ValueError, match="Grid 4x4 is finer than the feature map"):
        _built(MSDCRD(scales=(1, 2, 4)), teacher_shape, student_shape)


def test_non_divisible_imagenet_sized_maps_match_numpy_and_train():
    # ImageNet ResNets end on 7x7 maps; 2 and 4 do not divide 7 (adaptive cells).
    for teacher_shape in ((4, 7, 7, 8), (4, 14, 14, 8)):
        student_shape = (4, 7, 7, 8)
        method = _built(MSDCRD(), teacher_shape, student_shape)
        teacher = tf.constant(ref.maps(teacher_shape, 30))
        student = tf.Variable(ref.maps(student_shape, 31))
        with tf.GradientTape() as tape:
            out = method({"feat_last": teacher}, {"feat_last": student}, labels=LABELS[:4])
            total = out["loss_msd_sw"] + out["loss_msd_fw"]
        sw, fw = ref.terms(teacher.numpy(), student.numpy())
        assert float(out["loss_msd_sw"]) == pytest.approx(sw, rel=1e-5)
        assert float(out["loss_msd_fw"]) == pytest.approx(fw, rel=1e-5)
        grad = np.asarray(tape.gradient(total, student))
        assert np.all(np.isfinite(grad)) and np.any(grad != 0)


def test_channel_pool_projection_pools_the_wider_side():
    method = _built(MSDCRD(projection="channel_pool"))
    assert method.trainable_weights == []
    teacher, student = ref.maps(TEACHER_SHAPE, 56), ref.maps(STUDENT_SHAPE, 57)
    terms = _terms(method, teacher, student)
    pooled = ref.pool(teacher, (1, 2, 4))
    # 64 -> 32 channels: output channel k averages input channels 2k and 2k + 1.
    t = ref.unit(pooled.reshape(*pooled.shape[:2], 32, 2).mean(-1))
    s = ref.unit(ref.pool(student, (1, 2, 4)))
    assert terms["loss_msd_sw"] == pytest.approx(np.mean(ref.sample_wise(s, t, 0.07)), rel=1e-5)
    assert terms["loss_msd_fw"] == pytest.approx(np.mean(ref.feature_wise(s, t, 0.07)), rel=1e-5)


def test_gradients_reach_student_and_heads_never_teacher():
    method = _built(MSDCRD(projection="linear", projection_dim=8))
    teacher = tf.Variable(ref.maps(TEACHER_SHAPE, 11))
    student = tf.Variable(ref.maps(STUDENT_SHAPE, 12))
    heads = [method.teacher_heads[0].kernel, method.student_heads[0].kernel]
    with tf.GradientTape() as tape:
        out = method({"feat_last": teacher}, {"feat_last": student}, labels=LABELS)
        total = out["loss_msd_sw"] + out["loss_msd_fw"]
    grad_teacher, grad_student, *grad_heads = tape.gradient(total, [teacher, student, *heads])
    assert grad_teacher is None
    assert np.any(np.asarray(grad_student) != 0)
    assert all(np.any(np.asarray(g) != 0) for g in grad_heads)
    assert {v.path for v in method.trainable_weights} == {
        v.path for h in method.teacher_heads + method.student_heads for v in h.weights
    }


def test_float16_large_features_give_finite_float32_terms():
    rng = np.random.default_rng(13)
    teacher = (rng.normal(size=TEACHER_SHAPE) * 3e4).clip(-6e4, 6e4).astype("float16")
    student = (rng.normal(size=STUDENT_SHAPE) * 3e4).clip(-6e4, 6e4).astype("float16")
    out = _built(MSDCRD())({"feat_last": teacher}, {"feat_last": student}, labels=LABELS)
    for value in out.values():
        assert np.asarray(value).dtype == np.float32
        assert np.isfinite(float(value))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"projection": "classifier"}, "projection must be one of"),
        ({"temperature": 0.0}, "temperature must be > 0"),
        ({"tap_weights": (1.0, 2.0)}, "2 tap_weights for 1 taps"),
        ({"weight": -1.0}, "weight must be a finite number >= 0"),
        ({"sw_weight": -1.0}, "sw_weight, fw_weight and tap_weights must be >= 0"),
        ({"scales": "all"}, "scales must be 'auto' or a sequence of scales"),
    ],
)
def test_invalid_options_raise(kwargs, message):
    with pytest.raises(ValueError, match=message):
        MSDCRD(**kwargs)


def test_misspelled_and_renamed_arguments_name_the_accepted_one():
    with pytest.raises(
        TypeError, match="unexpected argument 'temprature'; did you mean 'temperature'"
    ):
        MSDCRD(temprature=0.1)
    with pytest.raises(TypeError, match="'lambda_sw'; did you mean 'sw_weight'"):
        MSDCRD(lambda_sw=1.0)


def test_shape_errors_are_clear():
    with pytest.raises(ValueError, match="projection='none' needs equal channel counts"):
        _built(MSDCRD(projection="none"))
    with pytest.raises(ValueError, match="build_from_taps"):
        MSDCRD()(
            {"feat_last": ref.maps(TEACHER_SHAPE, 0)}, {"feat_last": ref.maps(STUDENT_SHAPE, 0)}
        )


def test_config_round_trip():
    assert isinstance(methods.get("msdcrd"), MSDCRD)
    method = MSDCRD(
        taps=("feat_2", "feat_3"),
        tap_weights=(0.5, 1.0),
        scales=[1, 2],
        projection="linear",
        projection_dim=64,
        temperature=0.1,
        weight=0.8,
        fw_weight=0.5,
        name="msd",
    )
    config = method.get_config()
    assert config["scales"] == [1, 2] and config["taps"] == ["feat_2", "feat_3"]
    assert MSDCRD.from_config(config).get_config() == config
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
    distiller.compile(optimizer=keras.optimizers.SGD(0.5), run_eagerly=True)
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
