"""The Distiller's Python API: the Keras contract and one-line errors before any weight changes."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import kerasdistill
from kerasdistill import methods, models
from kerasdistill.methods.base import DistillationMethod
from kerasdistill.training.callbacks import TrainingDiverged

NUM_CLASSES = 5


def _pair(teacher_classes=NUM_CLASSES):
    return (
        models.get("resnet8", num_classes=teacher_classes),
        models.get("resnet8", num_classes=NUM_CLASSES),
    )


def _data(n=8, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 32, 32, 3)).astype("float32"), rng.integers(0, NUM_CLASSES, n)


def _weights(model):
    return [keras.ops.convert_to_numpy(w).copy() for w in model.weights]


def _assert_unchanged(model, before):
    for b, w in zip(before, model.weights):
        np.testing.assert_array_equal(b, keras.ops.convert_to_numpy(w))


def _compiled(method_list="kd", run_eagerly=False, **kwargs):
    teacher, student = _pair()
    distiller = kerasdistill.Distiller(teacher, student, method_list, **kwargs)
    distiller.compile(optimizer=keras.optimizers.SGD(0.1), run_eagerly=run_eagerly)
    return distiller


class _Batches(keras.utils.PyDataset):
    def __init__(self, x, y, **kwargs):
        super().__init__(**kwargs)
        self.x, self.y = x, y

    def __len__(self):
        return 2

    def __getitem__(self, index):
        return self.x[4 * index: 4 * index + 4], self.y[4 * index: 4 * index + 4]


def test_class_counts_that_differ_fail_at_construction():
    teacher, student = _pair(teacher_classes=100)
    with pytest.raises(ValueError, match="The teacher predicts 100 classes and the student 5; "):
        kerasdistill.Distiller(teacher, student, "kd")


def test_images_of_another_shape_fail_at_construction():
    teacher = models.get("resnet8", num_classes=NUM_CLASSES)
    student = keras.applications.MobileNetV3Small(
        weights=None, input_shape=(64, 64, 3), classes=NUM_CLASSES
    )
    with pytest.raises(ValueError, match=r"takes images of shape \(32, 32, 3\) and the student "
                                         r"\(64, 64, 3\)"):
        kerasdistill.Distiller(teacher, student, "kd")


@pytest.mark.parametrize("bad", ["resnet32x4", None, 3])
def test_a_non_model_fails_with_a_type_error(bad):
    _, student = _pair()
    with pytest.raises(TypeError, match=f"The teacher must be a keras.Model .*; got "):
        kerasdistill.Distiller(bad, student, "kd")


def test_the_same_model_as_teacher_and_student_is_refused():
    teacher, _ = _pair()
    with pytest.raises(ValueError, match="are the same model 'resnet8'"):
        kerasdistill.Distiller(teacher, teacher, "kd")


def test_methods_given_as_names():
    teacher, student = _pair()
    for spec in ("kd", "kd,msdcrd", ["kd", {"name": "msdcrd", "temperature": 0.2}]):
        distiller = kerasdistill.Distiller(teacher, student, spec)
        assert type(distiller.methods[0]).__name__ == "KD"
    assert distiller.methods[1].temperature == 0.2
    with pytest.raises(ValueError, match="Unknown method 'kdd'. Did you mean 'kd'?"):
        kerasdistill.Distiller(teacher, student, "kdd")


def test_no_methods_argument_distils_with_the_default_methods_and_none_is_the_student_alone():
    teacher, student = _pair()
    distiller = kerasdistill.Distiller(teacher, student)
    kd, msdcrd = distiller.methods
    assert (type(kd), kd.temperature, kd.weight, kd.standardize) == (methods.KD, 2.0, 9.0, True)
    assert distiller.ce_weight == 0.1 and distiller.get_config()["ce_weight"] == 0.1
    assert type(msdcrd) is methods.MSDCRD and msdcrd.get_config() == {
        **methods.MSDCRD().get_config(), "name": msdcrd.name}
    assert kerasdistill.Distiller(teacher, student, ce_weight=0.5).ce_weight == 0.5
    assert kerasdistill.Distiller(teacher, student, None).methods == []
    assert kerasdistill.Distiller(teacher, student, []).methods == []
    listed = kerasdistill.Distiller(teacher, student, ["default", "at"])
    assert [type(m).__name__ for m in listed.methods] == ["KD", "MSDCRD", "AT"]
    assert listed.ce_weight == 0.1
    assert kerasdistill.Distiller(teacher, student, "kd, msdcrd").ce_weight == 1.0
    assert kerasdistill.Distiller(teacher, student, methods.MSDCRD()).ce_weight == 1.0


def test_misspelled_method_arguments_suggest_the_closest():
    with pytest.raises(TypeError, match="KD got an unexpected argument 'temprature'; did you mean "
                                        "'temperature'\\? It accepts: temperature, weight, "
                                        "standardize, name"):
        methods.KD(temprature=2.0)
    with pytest.raises(TypeError, match="MSDCRD got an unexpected argument 'sw_wieght'; did you "
                                        "mean 'sw_weight'"):
        methods.get("msdcrd", sw_wieght=2.0)


@pytest.mark.parametrize("former, name", [
    ("lambda_sw", "sw_weight"), ("lambda_fw", "fw_weight"), ("beta", "weight"),
])
def test_former_msdcrd_argument_names_suggest_the_new_ones(former, name):
    with pytest.raises(TypeError, match=f"MSDCRD got an unexpected argument '{former}'; did you "
                                        f"mean '{name}'"):
        methods.get("msdcrd", **{former: 2.0})


def test_labels_out_of_range_fail_before_any_weight_changes():
    distiller = _compiled()
    before = _weights(distiller.student)
    x, y = _data()
    bad = np.where(y == y.max(), 7, y)
    with pytest.raises(ValueError, match=r"Class ids must be in \[0, 5\) for a 5-class model; got "
                                         f"values from {bad.min()} to 7"):
        distiller.fit(x, bad, batch_size=4, verbose=0)
    with pytest.raises(ValueError, match=r"Labels of shape \(8, 3\) are neither class ids"):
        distiller.fit(x, np.zeros((8, 3)), batch_size=4, verbose=0)
    with pytest.raises(ValueError, match=r"got values from -1 to"):
        distiller.fit(_Batches(x, y - 1), verbose=0)
    _assert_unchanged(distiller.student, before)


def test_one_hot_labels_train_like_class_ids():
    x, y = _data()
    one_hot = keras.utils.to_categorical(y, NUM_CLASSES)
    sparse, dense = _compiled(run_eagerly=True), _compiled(run_eagerly=True)
    dense.set_weights(sparse.get_weights())
    sparse.fit(x, y, batch_size=4, shuffle=False, verbose=0)
    history = dense.fit(x, one_hot, batch_size=4, shuffle=False, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    for a, b in zip(sparse.student.weights, dense.student.weights):
        np.testing.assert_allclose(
            keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b), rtol=1e-4, atol=1e-5
        )


def test_dict_inputs_without_images_and_crd_without_indices_fail_at_the_first_batch():
    distiller = _compiled()
    x, y = _data()
    with pytest.raises(ValueError, match="Dict inputs must hold the images under 'image'"):
        distiller.fit({"pixels": x}, y, verbose=0)
    teacher, student = _pair()
    crd = methods.CRD(train_labels=y, num_negatives=4)
    distiller = kerasdistill.Distiller(teacher, student, crd)
    distiller.compile(optimizer="sgd")
    before = _weights(student)
    with pytest.raises(ValueError, match="Method CRD needs each sample's dataset index"):
        distiller.fit(x, y, batch_size=4, verbose=0)
    _assert_unchanged(student, before)


def test_a_nan_image_fails_at_the_first_batch():
    distiller = _compiled()
    before = _weights(distiller.student)
    x, y = _data()
    x[3, 1, 2, 0] = np.nan
    with pytest.raises(ValueError, match=r"Input images hold 1 NaN or infinite values \(first in "
                                         r"image 3"):
        distiller.fit(x, y, batch_size=4, verbose=0)
    _assert_unchanged(distiller.student, before)


@keras.saving.register_keras_serializable(package="tests")
class NaNAtSecondStep(DistillationMethod):
    """A loss term that is NaN from the second step on."""

    def __init__(self, **kwargs):
        super().__init__(teacher_taps=("logits",), student_taps=("logits",), **kwargs)

    def loss_terms(self):
        return ("loss_bad",)

    def call(self, teacher_outputs, student_outputs, labels=None, sample_indices=None, step=None):
        logits = student_outputs["logits"]
        bad = keras.ops.where(step >= 1, np.nan, 0.0)
        return {"loss_bad": bad * keras.ops.mean(logits)}


def test_a_non_finite_loss_skips_the_step_and_stops_naming_step_and_term():
    distiller = _compiled([methods.KD(), NaNAtSecondStep()], run_eagerly=True)
    x, y = _data()
    trainable = distiller.student.trainable_weights
    weights_after_first = {}

    class Snapshot(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if batch == 0:
                weights_after_first.update(
                    {w.path: keras.ops.convert_to_numpy(w).copy() for w in trainable}
                )

    with pytest.raises(TrainingDiverged, match=r"Loss term loss_bad is nan at training step 2"):
        distiller.fit(x, y, batch_size=4, shuffle=False, verbose=0, callbacks=[Snapshot()])
    for w in trainable:
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(w), weights_after_first[w.path])


def test_a_nan_image_in_a_later_batch_changes_no_variable_batchnorm_statistics_included():
    distiller = _compiled()  # Traced: the copies and writes of the state keep their order.
    x, y = _data(12)
    x[9, 0, 0, 0] = np.nan  # Image 1 of the third batch; tf.data is not read ahead.
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(4)
    student_state = distiller.student.non_trainable_weights
    snapshots = []

    class Snapshot(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            variables = distiller.weights + distiller.optimizer.inner_optimizer.variables
            snapshots.append({id(v): keras.ops.convert_to_numpy(v).copy() for v in variables})

    with pytest.raises(TrainingDiverged, match=r"Loss term loss_ce is nan at training step 3"):
        distiller.fit(dataset, verbose=0, callbacks=[Snapshot()])
    assert len(snapshots) == 3
    for v in student_state:  # The statistics did move on the finite steps.
        assert not np.array_equal(snapshots[0][id(v)], snapshots[1][id(v)]), v.path
    # Every weight and optimizer slot; the loss-scale wrapper records the skip.
    for v in distiller.weights + distiller.optimizer.inner_optimizer.variables:
        np.testing.assert_array_equal(
            keras.ops.convert_to_numpy(v), snapshots[1][id(v)], err_msg=v.path
        )
    assert int(keras.ops.convert_to_numpy(distiller.training_steps)) == 2


def test_compile_loss_is_the_students_supervised_loss():
    x, y = _data()
    distiller = _compiled()
    distiller.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    assert distiller.student_loss.get_config()["from_logits"] is True
    y_pred = distiller(x, training=True)
    total = distiller.compute_loss(x, y, y_pred, training=True)
    focal = keras.losses.CategoricalFocalCrossentropy(from_logits=True)
    distiller.compile(optimizer="sgd", loss=lambda t, p: focal(keras.ops.one_hot(t, 5), p))
    total_focal = distiller.compute_loss(x, y, y_pred, training=True)
    logits = keras.ops.convert_to_numpy(y_pred["student"]["logits"])
    log_p = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    ce = -log_p[np.arange(8), y].mean()
    assert float(total) - float(total_focal) == pytest.approx(ce - float(focal(
        keras.ops.one_hot(y, 5), logits)), rel=1e-4)
    with pytest.raises(ValueError, match="reads probabilities, but the Distiller hands the "
                                         "student's logits"):
        distiller.compile(optimizer="sgd", loss=keras.losses.SparseCategoricalCrossentropy())
    with pytest.raises(ValueError, match="does not take loss_weights"):
        distiller.compile(optimizer="sgd", loss_weights=[1.0])


def test_sample_and_class_weights_are_refused():
    distiller = _compiled()
    x, y = _data()
    with pytest.raises(ValueError, match="Distiller.fit does not apply class_weight"):
        distiller.fit(x, y, class_weight={0: 2.0}, verbose=0)
    with pytest.raises(ValueError, match="Distiller.fit does not apply sample_weight"):
        distiller.fit(x, y, sample_weight=np.ones(8), verbose=0)
    dataset = tf.data.Dataset.from_tensor_slices((x, y, np.ones(8, "float32"))).batch(4)
    with pytest.raises(ValueError, match="does not apply sample_weight"):
        distiller.fit(dataset, verbose=0)


class _Probabilities(keras.Model):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.head = keras.layers.Dense(NUM_CLASSES)

    def call(self, x):
        return keras.ops.softmax(self.head(keras.ops.mean(x, axis=(1, 2))))


def test_a_teacher_whose_softmax_cannot_be_found_is_refused_at_the_first_batch():
    _, student = _pair()
    distiller = kerasdistill.Distiller(_Probabilities(), student, "kd")
    distiller.compile(optimizer="sgd")
    x, y = _data()
    with pytest.raises(ValueError, match="The teacher's outputs on the first batch are "
                                         "probabilities"):
        distiller.fit(x, y, verbose=0)


def test_fit_takes_arrays_tf_data_and_a_py_dataset():
    x, y = _data()
    distiller = _compiled(run_eagerly=True)
    for data in (
        (x, y),
        (tf.data.Dataset.from_tensor_slices((x, y)).batch(4),),
        (_Batches(x, y),),
    ):
        history = distiller.fit(*data, epochs=1, verbose=0).history
        assert np.isfinite(history["loss_kd"][0])
    first = y[:4] + 5  # A PyDataset is checked on its first batch.
    with pytest.raises(ValueError, match=f"got values from {first.min()} to {first.max()}"):
        _compiled().fit(_Batches(x, y + 5), verbose=0)
