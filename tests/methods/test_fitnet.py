import keras
import numpy as np
import pytest
import tensorflow as tf

from kerasdistill import Distiller, methods
from kerasdistill.methods import FitNet


def _built(teacher_shape, student_shape, **kwargs):
    method = FitNet(**kwargs)
    method.build_from_taps({"feat_2": (None,) + teacher_shape}, {"feat_2": (None,) + student_shape})
    return method


def _maps(shape, seed, dtype="float32"):
    return np.random.default_rng(seed).normal(size=shape).astype(dtype)


def _numpy_conv(x, kernel, bias, stride=1, pad=0):
    """Cross-correlation of NHWC `x` with an HWIO kernel, symmetric zero padding."""
    x = np.pad(x.astype("float64"), ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    kh, kw = kernel.shape[:2]
    oh = (x.shape[1] - kh) // stride + 1
    ow = (x.shape[2] - kw) // stride + 1
    out = np.zeros((x.shape[0], oh, ow, kernel.shape[-1]))
    for i in range(oh):
        for j in range(ow):
            patch = x[:, i * stride:i * stride + kh, j * stride:j * stride + kw, :]
            out[:, i, j, :] = np.einsum("bhwc,hwco->bo", patch, kernel)
    return out + bias


def _numpy_conv_transpose(x, kernel, bias, stride=2, crop=1):
    """Transposed conv of NHWC `x` with a Keras `(kh, kw, out, in)` kernel, then a crop."""
    kh, kw = kernel.shape[:2]
    b, h, w, _ = x.shape
    full = np.zeros((b, (h - 1) * stride + kh, (w - 1) * stride + kw, kernel.shape[2]))
    for i in range(h):
        for j in range(w):
            full[:, i * stride:i * stride + kh, j * stride:j * stride + kw, :] += np.einsum(
                "bi,hwoi->bhwo", x[:, i, j, :].astype("float64"), kernel
            )
    return full[:, crop:-crop, crop:-crop, :] + bias


def _numpy_hint_loss(method, f_t, f_s, case):
    conv = next(layer for layer in method.regressor.layers if layer.name.endswith("_conv"))
    kernel, bias = (np.asarray(v, "float64") for v in conv.weights)
    if case == "down":
        y = _numpy_conv(f_s, kernel, bias, stride=2, pad=1)
    elif case == "up":
        y = _numpy_conv_transpose(f_s, kernel, bias)
    else:
        y = _numpy_conv(f_s, kernel, bias)
    # Training-mode BatchNorm (gamma 1, beta 0, biased variance, eps 1e-5), then ReLU.
    y = (y - y.mean(axis=(0, 1, 2))) / np.sqrt(y.var(axis=(0, 1, 2)) + 1e-5)
    y = np.maximum(y, 0.0)
    return np.mean((y - f_t.astype("float64")) ** 2)


@pytest.mark.parametrize(
    "teacher_shape, student_shape, case",
    [
        ((4, 4, 6), (4, 4, 3), "same"),
        ((4, 4, 6), (8, 8, 3), "down"),
        ((8, 8, 6), (4, 4, 3), "up"),
        ((3, 4, 6), (5, 5, 3), "valid"),
    ],
)
def test_loss_matches_numpy_for_each_regressor_shape(teacher_shape, student_shape, case):
    method = _built(teacher_shape, student_shape, weight=100.0)
    f_t = _maps((3,) + teacher_shape, 0)
    f_s = _maps((3,) + student_shape, 1)
    out = method({"feat_2": f_t}, {"feat_2": f_s}, labels=None)
    expected = 100.0 * _numpy_hint_loss(method, f_t, f_s, case)
    assert out["loss_fitnet"].dtype == "float32"
    np.testing.assert_allclose(float(out["loss_fitnet"]), expected, rtol=1e-5)


def test_regressor_batchnorm_trains_by_default_and_can_run_in_inference():
    method = _built((4, 4, 6), (4, 4, 3))
    bn = method.regressor.get_layer("regressor_bn")
    f_t, f_s = _maps((2, 4, 4, 6), 0), _maps((2, 4, 4, 3), 1)
    method({"feat_2": f_t}, {"feat_2": f_s}, labels=None)
    moved = np.asarray(bn.moving_mean)
    assert np.any(moved != 0.0)
    method({"feat_2": f_t}, {"feat_2": f_s}, labels=None, training=False)
    np.testing.assert_array_equal(np.asarray(bn.moving_mean), moved)


def test_gradients_reach_student_and_regressor_not_teacher():
    method = _built((4, 4, 6), (8, 8, 3))
    f_t = tf.Variable(_maps((2, 4, 4, 6), 0))
    f_s = tf.Variable(_maps((2, 8, 8, 3), 1))
    with tf.GradientTape() as tape:
        loss = method({"feat_2": f_t}, {"feat_2": f_s}, labels=None)["loss_fitnet"]
    grads = tape.gradient(loss, [f_s, f_t] + method.trainable_weights)
    assert grads[1] is None
    assert all(g is not None and np.any(np.asarray(g) != 0) for g in grads[:1] + grads[2:])
    assert len(method.trainable_weights) == 4  # Conv kernel/bias, BN gamma/beta.


def test_float16_maps_give_float32_loss():
    method = _built((4, 4, 6), (4, 4, 3))
    out = method(
        {"feat_2": _maps((2, 4, 4, 6), 0, "float16")},
        {"feat_2": _maps((2, 4, 4, 3), 1, "float16")},
        labels=None,
    )
    assert out["loss_fitnet"].dtype == "float32" and np.isfinite(float(out["loss_fitnet"]))


def test_config_round_trip_and_custom_taps():
    method = methods.get("fitnet", teacher_tap="feat_3", student_tap="feat_1", weight=3.0,
                         use_relu=False)
    assert (method.teacher_taps, method.student_taps) == (("feat_3",), ("feat_1",))
    revived = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(method))
    assert isinstance(revived, FitNet) and revived.get_config() == method.get_config()


def test_bad_shapes_raise():
    with pytest.raises(ValueError, match="at least as large, or exactly half"):
        _built((8, 8, 6), (3, 3, 3))
    with pytest.raises(ValueError, match=r"static shape \(batch, H, W, C\)"):
        _built((6,), (4, 4, 3))
    method = _built((4, 4, 6), (4, 4, 3))
    with pytest.raises(ValueError, match="built for a teacher map of shape"):
        method({"feat_2": _maps((2, 2, 2, 6), 0)}, {"feat_2": _maps((2, 4, 4, 3), 1)}, None)
    with pytest.raises(ValueError, match="build_from_taps"):
        FitNet()({"feat_2": _maps((2, 4, 4, 6), 0)}, {"feat_2": _maps((2, 4, 4, 3), 1)}, None)


def test_distiller_step_trains_student_and_regressor_not_teacher():
    def tiny(name, filters, strides):
        inputs = keras.Input((8, 8, 3))
        x = keras.layers.Conv2D(filters, 3, strides=strides, padding="same", name="feat_2")(inputs)
        x = keras.layers.GlobalAveragePooling2D(name="pooled")(x)
        return keras.Model(inputs, keras.layers.Dense(3, name="fc")(x), name=name)

    teacher, student = tiny("teacher", 6, 2), tiny("student", 4, 1)
    method = FitNet(weight=10.0)
    distiller = Distiller(teacher, student, methods=method)
    distiller.compile(optimizer=keras.optimizers.SGD(0.1))
    before = [np.array(v) for v in teacher.weights + method.trainable_weights]
    images = _maps((4, 8, 8, 3), 2)
    logs = distiller.train_on_batch(images, np.array([0, 1, 2, 0]), return_dict=True)
    assert np.isfinite(logs["loss_fitnet"])
    n_teacher = len(teacher.weights)
    for b, v in zip(before[:n_teacher], teacher.weights):
        np.testing.assert_array_equal(b, np.array(v))
    assert any(not np.array_equal(b, np.array(v))
               for b, v in zip(before[n_teacher:], method.trainable_weights))
    # The regressor's BatchNorm ran in training mode inside the compiled step.
    assert np.any(np.asarray(method.regressor.get_layer("regressor_bn").moving_mean) != 0.0)
