import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from kerasdistill import Distiller, methods
from kerasdistill.methods import CRD
from tests.conftest import FIXTURES, require

# Any labelling of the fixture's 200 samples: the golden test injects its indices.
GOLDEN_LABELS = np.arange(200) % 10


def _golden():
    return np.load(require(FIXTURES / "crd_golden.npz"), allow_pickle=False)


def _golden_method(z):
    method = CRD(
        train_labels=GOLDEN_LABELS,
        feat_dim=int(z["cfg_feat_dim"]),
        num_negatives=int(z["cfg_nce_k"]),
        temperature=float(z["cfg_nce_t"]),
        momentum=float(z["cfg_nce_m"]),
    )
    method.build_from_taps(
        {"pooled": (None, int(z["cfg_t_dim"]))}, {"pooled": (None, int(z["cfg_s_dim"]))}
    )
    method.embed_s.kernel.assign(z["embed_s_weight"].T)
    method.embed_s.bias.assign(z["embed_s_bias"])
    method.embed_t.kernel.assign(z["embed_t_weight"].T)
    method.embed_t.bias.assign(z["embed_t_bias"])
    method.memory_v1.assign(z["memory_v1_init"])
    method.memory_v2.assign(z["memory_v2_init"])
    return method


def _assert_grad(actual, expected):
    # Elementwise rtol 1e-4 (README), with an absolute floor scaled to the tensor.
    np.testing.assert_allclose(
        np.asarray(actual), expected, rtol=1e-4, atol=1e-6 * np.abs(expected).max()
    )


def test_two_step_trace_matches_repdistiller_golden():
    z = _golden()
    method = _golden_method(z)
    np.testing.assert_array_equal(
        [float(method.z_v1.numpy()), float(method.z_v2.numpy())], z["params_init"][2:4]
    )
    for step in ("step1_", "step2_"):
        f_s = tf.Variable(z[step + "f_s"])
        f_t = tf.Variable(z[step + "f_t"])
        heads = [method.embed_s.kernel, method.embed_s.bias]
        heads += [method.embed_t.kernel, method.embed_t.bias]
        with tf.GradientTape() as tape:
            out = method.compute_loss_terms(f_s, f_t, z[step + "idx"], z[step + "contrast_idx"])
            loss = out["loss_student_anchor"] + out["loss_teacher_anchor"]
        grads = tape.gradient(loss, [f_s, f_t] + heads)

        np.testing.assert_allclose(out["embed_s"], z[step + "embed_v1"], atol=1e-6)
        np.testing.assert_allclose(out["embed_t"], z[step + "embed_v2"], atol=1e-6)
        np.testing.assert_allclose(out["p_v1"], z[step + "out_v1"][..., 0], rtol=1e-5)
        np.testing.assert_allclose(out["p_v2"], z[step + "out_v2"][..., 0], rtol=1e-5)
        np.testing.assert_allclose(float(loss), z[step + "loss"][0], rtol=1e-5)
        np.testing.assert_allclose(
            float(out["loss_student_anchor"]), z[step + "loss_student_anchor"][0], rtol=1e-5
        )
        np.testing.assert_allclose(
            float(out["loss_teacher_anchor"]), z[step + "loss_teacher_anchor"][0], rtol=1e-5
        )
        np.testing.assert_allclose(float(out["z_v1"]), z[step + "Z_v1"], rtol=1e-5)
        np.testing.assert_allclose(float(out["z_v2"]), z[step + "Z_v2"], rtol=1e-5)
        # The stored constants are the first step's, frozen.
        np.testing.assert_allclose(
            [float(method.z_v1.numpy()), float(method.z_v2.numpy())],
            z[step + "params_after"][2:4],
            rtol=1e-5,
        )
        np.testing.assert_allclose(method.memory_v1.numpy(), z[step + "memory_v1_after"], atol=1e-6)
        np.testing.assert_allclose(method.memory_v2.numpy(), z[step + "memory_v2_after"], atol=1e-6)

        expected = [z[step + "grad_f_s"], z[step + "grad_f_t"]]
        expected += [z[step + "grad_embed_s_weight"].T, z[step + "grad_embed_s_bias"]]
        expected += [z[step + "grad_embed_t_weight"].T, z[step + "grad_embed_t_bias"]]
        for actual, reference in zip(grads, expected):
            _assert_grad(actual, reference)


def test_student_anchor_gradient_reaches_only_the_student_side():
    z = _golden()
    method = _golden_method(z)
    f_s = tf.Variable(z["step1_f_s"])
    f_t = tf.Variable(z["step1_f_t"])
    with tf.GradientTape() as tape:
        out = method.compute_loss_terms(f_s, f_t, z["step1_idx"], z["step1_contrast_idx"])
    grads = tape.gradient(
        out["loss_student_anchor"], [f_s, f_t, method.embed_s.kernel, method.embed_t.kernel]
    )
    assert grads[0] is not None and grads[2] is not None
    assert grads[1] is None and grads[3] is None


def test_call_weights_the_sum_and_stops_the_teacher_feature_gradient():
    z = _golden()
    method = _golden_method(z)
    reference = _golden_method(z)
    f_s = tf.Variable(z["step1_f_s"])
    f_t = tf.Variable(z["step1_f_t"])
    with tf.GradientTape() as tape:
        out = method(
            {"pooled": f_t}, {"pooled": f_s}, labels=np.zeros(6, "int32"),
            sample_indices=z["step1_idx"],
        )
    grad_s, grad_t = tape.gradient(out["loss_crd"], [f_s, f_t])
    assert set(out) == {"loss_crd"} and grad_s is not None and grad_t is None
    # Sampled negatives differ from the fixture's, but Z is set and the positives updated.
    assert float(method.z_v1.numpy()) > 0 and float(method.z_v2.numpy()) > 0
    reference.compute_loss_terms(z["step1_f_s"], z["step1_f_t"], z["step1_idx"],
                                 z["step1_contrast_idx"])
    np.testing.assert_allclose(method.memory_v1.numpy(), reference.memory_v1.numpy(), atol=1e-6)
    # Same contrast indices through call(): weight * (student + teacher anchor).
    weighted = CRD(train_labels=GOLDEN_LABELS, feat_dim=8, num_negatives=32, weight=0.8)
    weighted.build_from_taps({"pooled": (None, 24)}, {"pooled": (None, 16)})
    weighted.sample_contrast_indices = lambda idx: z["step1_contrast_idx"]
    for src, dst in zip(_golden_method(z).weights, weighted.weights):
        dst.assign(src)
    out = weighted({"pooled": z["step1_f_t"]}, {"pooled": z["step1_f_s"]}, labels=None,
                   sample_indices=z["step1_idx"])
    np.testing.assert_allclose(float(out["loss_crd"]), 0.8 * z["step1_loss"][0], rtol=1e-5)


def test_sampler_draws_only_other_class_negatives_uniformly():
    # Unbalanced classes: 5 of class 0, 20 of class 1, 35 of class 2.
    labels = np.array([0] * 5 + [1] * 20 + [2] * 35)
    labels = np.random.default_rng(0).permutation(labels)
    method = CRD(train_labels=labels, feat_dim=4, num_negatives=7000, seed=3)
    idx = np.array([np.flatnonzero(labels == c)[0] for c in (0, 1, 2)])
    contrast = np.asarray(method.sample_contrast_indices(idx))
    assert contrast.shape == (3, 7001) and contrast.dtype == np.int32
    np.testing.assert_array_equal(contrast[:, 0], idx)
    for row, anchor in zip(contrast, idx):
        negatives = row[1:]
        assert negatives.min() >= 0 and negatives.max() < labels.size
        assert not np.any(labels[negatives] == labels[anchor])
        others = np.flatnonzero(labels != labels[anchor])
        counts = np.bincount(negatives, minlength=labels.size)[others]
        expected = 7000 / others.size
        # Every other-class sample is drawn, each close to uniformly (>10 sigma margin).
        assert counts.min() > 0.6 * expected and counts.max() < 1.4 * expected
    again = np.asarray(method.sample_contrast_indices(idx))
    assert not np.array_equal(again, contrast)


def test_sampler_draws_distinct_negatives_like_the_reference():
    labels = np.random.default_rng(0).permutation(np.array([0] * 5 + [1] * 20 + [2] * 35))
    method = CRD(train_labels=labels, feat_dim=4, num_negatives=20, seed=3)
    assert not method.replacement and method.get_config()["replacement"] is False
    anchors = np.repeat([np.flatnonzero(labels == c)[0] for c in (0, 1, 2)], 1000)
    contrast = np.asarray(method.sample_contrast_indices(anchors))
    assert contrast.shape == (3000, 21)
    for c, rows in zip((0, 1, 2), np.split(contrast[:, 1:], 3)):
        # Distinct within every row, never the anchor's class.
        assert all(np.unique(row).size == 20 for row in rows)
        assert not np.any(labels[rows] == c)
        others = np.flatnonzero(labels != c)
        counts = np.bincount(rows.ravel(), minlength=labels.size)[others]
        expected = 1000 * 20 / others.size
        assert counts.min() > 0.8 * expected and counts.max() < 1.2 * expected


def test_sampler_falls_back_to_replacement_when_a_class_has_too_few_others():
    labels = np.array([0] * 5 + [1] * 20 + [2] * 35)
    # Class 2 has only 25 other-class samples: fewer than 30 negatives.
    assert CRD(train_labels=labels, feat_dim=4, num_negatives=30).replacement
    assert CRD(train_labels=labels, feat_dim=4, num_negatives=10, replacement=True).replacement


def test_missing_sample_indices_raises():
    method = CRD(train_labels=GOLDEN_LABELS, feat_dim=8, num_negatives=4)
    method.build_from_taps({"pooled": (None, 24)}, {"pooled": (None, 16)})
    with pytest.raises(ValueError, match=r'"index".*with_index=True'):
        method({"pooled": np.ones((2, 24), "float32")}, {"pooled": np.ones((2, 16), "float32")},
               labels=np.zeros(2, "int32"))


def test_unbuilt_method_raises():
    method = CRD(train_labels=GOLDEN_LABELS, feat_dim=8, num_negatives=4)
    with pytest.raises(ValueError, match="build_from_taps"):
        method.compute_loss_terms(np.ones((2, 16)), np.ones((2, 24)), [0, 1], [[0, 2], [1, 3]])


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"train_labels": np.zeros(10, "int32")}, "at least two classes"),
        ({"train_labels": np.zeros((5, 2), "int32")}, "1-D array of integer"),
        ({"train_labels": np.linspace(0, 1, 5)}, "1-D array of integer"),
        ({"train_labels": [0, -1, 1]}, ">= 0"),
        ({"train_labels": [0, 1], "temperature": 0.0}, "temperature must be > 0"),
        ({"train_labels": [0, 1], "momentum": 1.5}, r"momentum must be in \[0, 1\]"),
        ({"train_labels": [0, 1], "num_negatives": 0}, "must be >= 1"),
    ],
)
def test_invalid_options_raise(kwargs, message):
    with pytest.raises(ValueError, match=message):
        CRD(**kwargs)


def test_float16_features_give_float32_loss():
    z = _golden()
    method = _golden_method(z)
    out = method(
        {"pooled": z["step1_f_t"].astype("float16")},
        {"pooled": z["step1_f_s"].astype("float16")},
        labels=None,
        sample_indices=z["step1_idx"],
    )
    assert out["loss_crd"].dtype == "float32" and np.isfinite(float(out["loss_crd"]))


def test_config_round_trip_keeps_the_labels_in_the_weights_not_the_config():
    labels = np.arange(5000) % 10
    method = methods.get("crd", train_labels=labels, feat_dim=8, num_negatives=5,
                         temperature=0.1, momentum=0.3, weight=0.5, seed=7)
    config = keras.saving.serialize_keras_object(method)
    assert len(json.dumps(config)) < 2000  # 5,000 labels would take over 15,000 characters.
    assert config["config"]["label_counts"] == [500] * 10
    revived = keras.saving.deserialize_keras_object(config)
    assert isinstance(revived, CRD) and revived.get_config() == method.get_config()
    for m in (method, revived):
        m.build_from_taps({"pooled": (None, 6)}, {"pooled": (None, 4)})
    revived.set_weights(method.get_weights())
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(revived.sample_labels), labels)
    indices = np.array([3, 4000, 17])
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(revived.sample_contrast_indices(indices)),
        keras.ops.convert_to_numpy(method.sample_contrast_indices(indices)),
    )


def test_labels_come_from_the_training_data_when_not_given():
    method = methods.get("crd", feat_dim=4, num_negatives=3, seed=1, name="crd")
    assert method.needs == ("train_labels",)
    with pytest.raises(ValueError, match=r"^CRD needs TrainingData.train_labels: pass "
                       r"Distiller\(\.\.\., training_data=TrainingData\(train_labels=\.\.\.\)\)"):
        method.build_from_taps({"pooled": (None, 6)}, {"pooled": (None, 4)})
    labels = np.arange(30) % 3
    method.set_up(methods.TrainingData(train_labels=labels))
    method.build_from_taps({"pooled": (None, 6)}, {"pooled": (None, 4)})
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(method.sample_labels), labels)
    assert method.memory_v1.shape == (30, 4)
    given = CRD(train_labels=labels, feat_dim=4, num_negatives=3, seed=1, name="crd")
    assert given.needs == () and given.get_config() == method.get_config()
    with pytest.raises(ValueError, match="at least two classes"):
        CRD().set_up(methods.TrainingData(train_labels=np.zeros(10, "int32")))


def test_distiller_sets_up_crd_from_its_training_data():
    labels = np.arange(12) % 3
    method = CRD(feat_dim=4, num_negatives=8, seed=0)
    Distiller(_tiny_model("teacher", 6), _tiny_model("student", 4), methods=method,
              training_data=methods.TrainingData(train_labels=labels))
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(method.sample_labels), labels)
    with pytest.raises(ValueError, match=r"^CRD needs TrainingData.train_labels"):
        Distiller(_tiny_model("teacher", 6), _tiny_model("student", 4), methods="crd")


def _tiny_model(name, filters):
    inputs = keras.Input((4, 4, 3))
    x = keras.layers.Conv2D(filters, 3, padding="same", name="conv")(inputs)
    x = keras.layers.GlobalAveragePooling2D(name="pooled")(x)
    return keras.Model(inputs, keras.layers.Dense(3, name="fc")(x), name=name)


def _distiller(seed):
    keras.utils.set_random_seed(seed)
    method = CRD(train_labels=np.arange(12) % 3, feat_dim=4, num_negatives=8, seed=seed)
    distiller = Distiller(_tiny_model("teacher", 6), _tiny_model("student", 4), methods=method)
    distiller.compile(optimizer=keras.optimizers.SGD(0.1))
    return distiller, method


def test_state_updates_in_training_and_survives_save_and_load(tmp_path):
    distiller, method = _distiller(0)
    rng = np.random.default_rng(1)
    images = rng.normal(size=(4, 4, 4, 3)).astype("float32")
    idx = np.array([5, 0, 9, 2])
    memory_before = method.memory_v1.numpy()
    logs = distiller.train_on_batch(
        {"image": images, "index": idx}, np.arange(12)[idx] % 3, return_dict=True
    )
    assert np.isfinite(logs["loss_crd"])
    z_v1, z_v2 = float(method.z_v1.numpy()), float(method.z_v2.numpy())
    assert z_v1 > 0 and z_v2 > 0
    memory = method.memory_v1.numpy()
    np.testing.assert_allclose(np.linalg.norm(memory[idx], axis=1), 1.0, rtol=1e-5)
    untouched = np.setdiff1d(np.arange(12), idx)
    np.testing.assert_array_equal(memory[untouched], memory_before[untouched])
    # A second step keeps Z frozen.
    distiller.train_on_batch({"image": images, "index": idx}, np.arange(12)[idx] % 3)
    assert (float(method.z_v1.numpy()), float(method.z_v2.numpy())) == (z_v1, z_v2)

    path = str(tmp_path / "crd.weights.h5")
    distiller.save_weights(path)
    restored, restored_method = _distiller(5)
    assert float(restored_method.z_v1.numpy()) == -1.0
    restored(images)  # Builds the Distiller (the student only; no CRD state changes).
    restored.load_weights(path)
    for saved, loaded in zip(method.weights, restored_method.weights):
        np.testing.assert_array_equal(np.asarray(saved), np.asarray(loaded))
    assert float(restored_method.z_v2.numpy()) == z_v2
    np.testing.assert_array_equal(restored_method.memory_v2.numpy(), method.memory_v2.numpy())


def test_sampler_and_banks_keep_the_variables_on_the_method_in_checkpoint_order():
    method = methods.get("crd", train_labels=np.arange(20) % 4, num_negatives=4)
    method.build_from_taps({"pooled": (None, 8)}, {"pooled": (None, 6)})
    assert [v.path for v in method.weights] == [
        "crd/sample_labels", "crd/samples_by_class", "crd/memory_v1", "crd/memory_v2",
        "crd/z_v1", "crd/z_v2", "embed_s/kernel", "embed_s/bias", "embed_t/kernel", "embed_t/bias",
    ]
    assert method.memory_v1 is method.memory.memory_v1
    assert method.seed_generator is method.sampler.seed_generator
