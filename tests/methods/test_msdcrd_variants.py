import inspect

import keras
import numpy as np
import pytest

from kerasdistill import Distiller, methods
from kerasdistill.methods import MSDCRD, MSDCRDVariants
from tests.methods import msdcrd_reference as ref

SHAPE = (6, 4, 4, 8)
LABELS = np.array([0, 1, 2, 0, 1, 2], "int32")
CLASSES = 3


def _built(method, teacher_shape=SHAPE, student_shape=SHAPE, tap="feat_last"):
    method.build_from_taps({tap: teacher_shape}, {tap: student_shape})
    return method


def _terms(method, teacher_map, student_map, labels=LABELS, logits=None):
    teacher_outputs = {"feat_last": teacher_map}
    if logits is not None:
        teacher_outputs["logits"] = logits
    out = method(teacher_outputs, {"feat_last": student_map}, labels=labels)
    return {k: float(v) for k, v in out.items()}


def _units(teacher, student, grids=(1, 2, 4)):
    return ref.unit(ref.pool(student, grids)), ref.unit(ref.pool(teacher, grids))


def test_at_their_defaults_the_variants_compute_the_core():
    core_parameters = inspect.signature(MSDCRD.__init__).parameters
    variant_parameters = inspect.signature(MSDCRDVariants.__init__).parameters
    for name, parameter in core_parameters.items():
        assert variant_parameters[name].default == parameter.default, name
    teacher, student = ref.maps((6, 8, 8, 64), 61), ref.maps((6, 4, 4, 32), 62)
    core = _built(MSDCRD(projection="channel_pool"), (6, 8, 8, 64), (6, 4, 4, 32))
    variants = _built(MSDCRDVariants(projection="channel_pool"), (6, 8, 8, 64), (6, 4, 4, 32))
    assert variants.min_batch_per_replica == core.min_batch_per_replica == 2
    assert _terms(variants, teacher, student) == pytest.approx(_terms(core, teacher, student))


def test_excluded_and_positive_same_class_pairs_match_numpy():
    teacher, student = ref.maps(SHAPE, 9), ref.maps(SHAPE, 10)
    s, t = _units(teacher, student)
    same = LABELS[:, None] == LABELS[None, :]
    fw = np.mean(ref.feature_wise(s, t, 0.07))
    for option, masks in (("exclude", {"keep": ~same}), ("positives", {"positives": same})):
        terms = _terms(_built(MSDCRDVariants(same_class_pairs=option)), teacher, student)
        sw = np.mean(ref.sample_wise(s, t, 0.07, **masks))
        assert terms == pytest.approx({"loss_msd_sw": sw, "loss_msd_fw": fw}, rel=1e-5)
    # With every image of one class only the positive is left: the loss is 0.
    exclude = _built(MSDCRDVariants(same_class_pairs="exclude"))
    single = _terms(exclude, teacher, student, labels=np.zeros(6, "int32"))
    assert single["loss_msd_sw"] == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError, match="same_class_pairs='exclude' needs the batch's labels"):
        _terms(exclude, teacher, student, labels=None)


def test_symmetric_averages_both_directions_and_is_permutation_invariant():
    teacher, student = ref.maps(SHAPE, 7), ref.maps(SHAPE, 8)
    method = _built(MSDCRDVariants(symmetric=True, same_class_pairs="exclude"))
    terms = _terms(method, teacher, student)
    s, t = _units(teacher, student)
    keep = LABELS[:, None] != LABELS[None, :]
    sw = 0.5 * (ref.sample_wise(s, t, 0.07, keep) + ref.sample_wise(t, s, 0.07, keep))
    fw = 0.5 * (ref.feature_wise(s, t, 0.07) + ref.feature_wise(t, s, 0.07))
    assert terms == pytest.approx({"loss_msd_sw": sw.mean(), "loss_msd_fw": fw.mean()}, rel=1e-5)
    perm = np.array([3, 5, 0, 2, 4, 1])
    assert _terms(method, teacher[perm], student[perm], LABELS[perm]) == pytest.approx(
        terms, rel=1e-5
    )


def test_per_scale_weighting_and_same_scale_negatives_match_numpy():
    teacher, student = ref.maps(SHAPE, 16), ref.maps(SHAPE, 17)
    method = MSDCRDVariants(
        scales=(1, 2), region_weighting="per_scale", feature_negatives="same_scale"
    )
    terms = _terms(_built(method), teacher, student)
    s, t = _units(teacher, student, (1, 2))
    sw = ref.sample_wise(s, t, 0.07).mean(axis=0)
    assert terms["loss_msd_sw"] == pytest.approx(0.5 * sw[0] + 0.5 * np.mean(sw[1:]), rel=1e-5)
    # The 1x1 region has no same-scale negative (loss 0); the 2x2 regions contrast among themselves.
    fw = ref.feature_wise(s[:, 1:], t[:, 1:], 0.07)
    assert terms["loss_msd_fw"] == pytest.approx(0.5 * np.mean(fw), rel=1e-5)


def test_non_overlapping_feature_negatives_match_numpy():
    shape = (6, 8, 8, 8)
    teacher, student = ref.maps(shape, 40), ref.maps(shape, 41)
    method = MSDCRDVariants(feature_negatives="non_overlapping")
    terms = _terms(_built(method, shape, shape), teacher, student)
    # Region 0 is global, 1-4 the quadrants, 5-20 the 4x4 cells: two regions overlap where one
    # contains the other.
    cells = [(1, 0, 0)] + [(2, i, j) for i in range(2) for j in range(2)]
    cells += [(4, i, j) for i in range(4) for j in range(4)]

    def overlap(a, b):
        (coarse, ci, cj), (fine, fi, fj) = sorted((a, b))
        ratio = fine // coarse
        return fi // ratio == ci and fj // ratio == cj

    keep = np.array([[not overlap(a, b) for b in cells] for a in cells])
    s, t = _units(teacher, student)
    assert terms["loss_msd_fw"] == pytest.approx(
        np.mean(ref.feature_wise(s, t, 0.07, keep)), rel=1e-5
    )
    assert terms["loss_msd_sw"] == pytest.approx(np.mean(ref.sample_wise(s, t, 0.07)), rel=1e-5)


def test_overlapping_windows_on_maps_of_two_sizes_match_numpy():
    teacher_shape, student_shape = (6, 8, 8, 8), (6, 4, 4, 8)
    teacher, student = ref.maps(teacher_shape, 14), ref.maps(student_shape, 15)
    method = MSDCRDVariants(pooling="overlapping", scales=[[1.0, 1.0], [0.5, 0.25]])
    terms = _terms(_built(method, teacher_shape, student_shape), teacher, student)

    def spans(side):  # the global window, then half-side windows at quarter-side strides
        starts = (0, side // 4, side // 2)
        return [(0, side, 0, side)] + [
            (a, a + side // 2, b, b + side // 2) for a in starts for b in starts
        ]

    s = ref.unit(ref.pool_spans(student, spans(4)))
    t = ref.unit(ref.pool_spans(teacher, spans(8)))
    assert terms["loss_msd_sw"] == pytest.approx(np.mean(ref.sample_wise(s, t, 0.07)), rel=1e-5)
    assert terms["loss_msd_fw"] == pytest.approx(np.mean(ref.feature_wise(s, t, 0.07)), rel=1e-5)
    with pytest.raises(ValueError, match="3x3 regions on the teacher .* but 1x1 on the student"):
        _built(
            MSDCRDVariants(pooling="overlapping", scales=((4, 2),)), teacher_shape, student_shape
        )


def _classifier(inputs, name):
    """A Dense 'classifier' on `inputs` channels whose prediction is the largest of the first 3."""
    layer = keras.layers.Dense(CLASSES, name=name)
    layer.build((None, inputs))
    kernel = np.zeros((inputs, CLASSES), "float32")
    kernel[:CLASSES] = np.eye(CLASSES)
    layer.set_weights([kernel, np.zeros(CLASSES, "float32")])
    return layer


def test_classifier_projection_uses_the_given_layers():
    teacher_fc, student_fc = _classifier(16, "teacher_fc"), _classifier(8, "student_fc")
    teacher_fc.set_weights([ref.maps((16, 3), 1), ref.maps((3,), 2)])
    student_fc.set_weights([ref.maps((8, 3), 3), ref.maps((3,), 4)])
    method = MSDCRDVariants(
        projection="classifier", teacher_classifier=teacher_fc, student_classifier=student_fc
    )
    teacher, student = ref.maps((6, 8, 8, 16), 18), ref.maps(SHAPE, 19)
    terms = _terms(_built(method, (6, 8, 8, 16), SHAPE), teacher, student)

    def logits(x, layer):
        kernel, bias = (np.asarray(w, "float64") for w in layer.weights)
        return ref.unit(ref.pool(x, (1, 2, 4)) @ kernel + bias)

    s, t = logits(student, student_fc), logits(teacher, teacher_fc)
    assert terms["loss_msd_sw"] == pytest.approx(np.mean(ref.sample_wise(s, t, 0.07)), rel=1e-5)
    assert terms["loss_msd_fw"] == pytest.approx(np.mean(ref.feature_wise(s, t, 0.07)), rel=1e-5)
    with pytest.raises(ValueError, match="cannot be serialized by config"):
        method.get_config()
    with pytest.raises(
        ValueError, match="teacher classifier takes 16 features but tap 'feat_last'"
    ):
        _built(
            MSDCRDVariants(
                projection="classifier",
                teacher_classifier=teacher_fc,
                student_classifier=student_fc,
            )
        )
    with pytest.raises(ValueError, match="needs student_classifier, the model's final Dense layer"):
        MSDCRDVariants(projection="classifier", teacher_classifier=teacher_fc)


def _numpy_consistent(teacher, reference):
    return ref.pool(teacher, (1, 2, 4))[..., :CLASSES].argmax(-1) == reference[:, None]


def _categorized(**kwargs):
    return _built(MSDCRDVariants(teacher_classifier=_classifier(SHAPE[-1], "fc"), **kwargs))


def test_region_categorization_consistent_only_and_downweight_match_numpy():
    teacher, student = ref.maps(SHAPE, 46), ref.maps(SHAPE, 47)
    consistent = _numpy_consistent(teacher, LABELS)
    assert 0.2 < consistent.mean() < 0.8  # a mix of both groups
    s, t = _units(teacher, student)
    fw = ref.feature_wise(s, t, 0.07)

    only = _terms(_categorized(region_categorization="consistent_only"), teacher, student)
    pairs = consistent.T[:, :, None] & consistent.T[:, None, :]
    sw = ref.sample_wise(s, t, 0.07, keep=pairs)
    assert only["loss_msd_sw"] == pytest.approx(
        (sw * consistent).sum() / consistent.sum(), rel=1e-5
    )
    assert only["loss_msd_fw"] == pytest.approx(fw.mean(), rel=1e-5)

    down = _categorized(region_categorization="downweight", complementary_weight=0.25)
    down = _terms(down, teacher, student)
    weights = np.where(consistent, 1.0, 0.25)
    for term, per_anchor in (("loss_msd_sw", ref.sample_wise(s, t, 0.07)), ("loss_msd_fw", fw)):
        assert down[term] == pytest.approx((per_anchor * weights).sum() / weights.sum(), rel=1e-5)


def test_region_reference_teacher_reads_the_teacher_logits():
    teacher, student = ref.maps(SHAPE, 50), ref.maps(SHAPE, 51)
    method = _categorized(region_categorization="consistent_only", region_reference="teacher")
    assert method.teacher_taps == ("feat_last", "logits") and method.student_taps == ("feat_last",)
    predicted = np.array([2, 2, 1, 0, 1, 2], "int32")
    logits = np.eye(CLASSES, dtype="float32")[predicted]
    by_label = _categorized(region_categorization="consistent_only")
    # Against the teacher's predictions, the labels are not read.
    by_teacher = _terms(method, teacher, student, labels=None, logits=logits)
    assert by_teacher == pytest.approx(
        _terms(by_label, teacher, student, labels=predicted), rel=1e-6
    )
    assert by_teacher != pytest.approx(_terms(by_label, teacher, student), rel=1e-3)


def test_region_categorization_needs_a_fitting_teacher_classifier():
    with pytest.raises(ValueError, match="needs teacher_classifier"):
        MSDCRDVariants(region_categorization="downweight")
    with pytest.raises(ValueError, match="teacher_classifier is used only by"):
        MSDCRDVariants(teacher_classifier=_classifier(SHAPE[-1], "fc"))
    method = MSDCRDVariants(
        region_categorization="downweight", teacher_classifier=_classifier(3, "fc")
    )
    with pytest.raises(ValueError, match="takes 3 features but the taps have"):
        _built(method)


def _tiny_model(name, filters, strides):
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(filters, 3, strides=strides, padding="same", name="conv")(inputs)
    x = keras.layers.ReLU(name="feat_1")(x)
    x = keras.layers.GlobalAveragePooling2D(name="pooled")(x)
    return keras.Model(inputs, keras.layers.Dense(CLASSES, name="fc")(x), name=name)


def test_region_categorization_in_a_distiller_step():
    teacher, student = _tiny_model("teacher", 16, 1), _tiny_model("student", 8, 2)
    method = MSDCRDVariants(
        taps=("feat_1",),
        region_categorization="downweight",
        region_reference="teacher",
        teacher_classifier=teacher.get_layer("fc"),
        projection_dim=16,
    )
    distiller = Distiller(teacher, student, methods=[method])
    distiller.compile(optimizer=keras.optimizers.SGD(0.1), run_eagerly=True)
    images = np.random.default_rng(52).normal(size=(6, 8, 8, 3)).astype("float32")
    logs = distiller.train_on_batch(images, LABELS, return_dict=True)
    assert np.isfinite(logs["loss_msd_sw"]) and np.isfinite(logs["loss_msd_fw"])


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"pooling": "pyramid"}, "pooling must be one of"),
        ({"pooling": "overlapping"}, "needs scales as \\(window, stride\\) pairs"),
        ({"feature_negatives": "none"}, "feature_negatives must be one of"),
        ({"same_class_pairs": "ignore"}, "same_class_pairs must be one of"),
        ({"region_categorization": "drop"}, "region_categorization must be one of"),
        ({"region_reference": "student"}, "region_reference must be one of"),
        ({"complementary_weight": 1.5}, r"complementary_weight must be in \[0, 1\]"),
        ({"student_classifier": keras.layers.Dense(3)}, "student_classifier is used only by"),
    ],
)
def test_invalid_options_raise(kwargs, message):
    with pytest.raises(ValueError, match=message):
        MSDCRDVariants(**kwargs)


def test_misspelled_arguments_of_both_classes_are_named():
    with pytest.raises(TypeError, match="'poolng'; did you mean 'pooling'"):
        MSDCRDVariants(poolng="grid")
    with pytest.raises(TypeError, match="'temprature'; did you mean 'temperature'"):
        MSDCRDVariants(temprature=0.1)


def test_config_round_trip():
    method = methods.get(
        "msdcrd_variants",
        stages=2,
        scales=((0.5, 0.25), (2, 1)),
        pooling="overlapping",
        projection="linear",
        projection_dim=64,
        symmetric=True,
        same_class_pairs="positives",
        feature_negatives="non_overlapping",
        region_weighting="per_scale",
        weight=0.8,
        fw_weight=0.5,
        name="msd",
    )
    config = method.get_config()
    assert config["stages"] == 2 and config["scales"] == [[0.5, 0.25], [2, 1]]
    clone = MSDCRDVariants.from_config(config)
    assert clone.get_config() == config and clone.scales == ((0.5, 0.25), (2, 1))
    revived = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(method))
    assert isinstance(revived, MSDCRDVariants) and revived.get_config() == config
