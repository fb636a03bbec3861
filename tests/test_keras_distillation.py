"""kerasdistill's KD against Keras's own `keras.distillation` (docs/keras_distillation.md).

Pins the facts that document states: kerasdistill's KD term is Hinton's
`T^2 * KL(softmax(t/T) || softmax(s/T))` averaged over the batch; Keras's
`LogitsDistillation` gives the same value only with a `keras.losses.KLDivergence()`
instance (up to its clipping of probabilities at `1e-7`), while its default
`loss="kl_divergence"` applies the KL formula to the scaled logits themselves;
and a `FeatureDistillation` makes Keras's Distiller run the student twice.
"""

import keras
import numpy as np
import pytest
from keras import distillation as kdist  # Keras >= 3.12 (requirements.txt)

from kerasdistill import methods
from kerasdistill.ops import kl_divergence_with_temperature

BATCH, CLASSES, SCALE, SEED = 64, 100, 3.0, 0
# Keras clips probabilities (and, with the default loss, scaled logits) to [EPSILON, 1].
EPSILON = 1e-7
RTOL = 1e-5


def fixed_logits():
    """Teacher and student logits of the doc's example: N(0, 3^2), seed 0."""
    rng = np.random.default_rng(SEED)
    teacher = (SCALE * rng.standard_normal((BATCH, CLASSES))).astype("float32")
    student = (SCALE * rng.standard_normal((BATCH, CLASSES))).astype("float32")
    return teacher, student


def log_softmax(z):
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def hinton_kd(teacher, student, temperature):
    """`T^2 * KL(softmax(t/T) || softmax(s/T))`, summed over classes, batch mean, float64."""
    log_p_t = log_softmax(teacher.astype("float64") / temperature)
    log_p_s = log_softmax(student.astype("float64") / temperature)
    kl = (np.exp(log_p_t) * (log_p_t - log_p_s)).sum(axis=-1)
    return temperature**2 * kl.mean()


def clipped_kl(p, q):
    """Keras's `kl_divergence` on arbitrary arrays: inputs clipped to [1e-7, 1], batch mean."""
    p = np.clip(p.astype("float64"), EPSILON, 1.0)
    q = np.clip(q.astype("float64"), EPSILON, 1.0)
    return (p * np.log(p / q)).sum(axis=-1).mean()


def softmax(z):
    return np.exp(log_softmax(z.astype("float64")))


@pytest.mark.parametrize("temperature", [2.0, 4.0])
def test_kd_term_is_hintons_formula_and_keras_kldivergence_instance(temperature):
    teacher, student = fixed_logits()
    expected = hinton_kd(teacher, student, temperature)
    op = float(kl_divergence_with_temperature(student, teacher, temperature))
    method = methods.KD(temperature=temperature, weight=1.0)
    term = float(method({"logits": teacher}, {"logits": student})["loss_kd"])
    keras_loss = kdist.LogitsDistillation(
        temperature=temperature, loss=keras.losses.KLDivergence()
    ).compute_loss(teacher, student)
    # At these temperatures no probability falls below Keras's clip, so the clip is inert.
    assert softmax(teacher / temperature).min() > EPSILON
    assert softmax(student / temperature).min() > EPSILON
    np.testing.assert_allclose(op, expected, rtol=RTOL)
    np.testing.assert_allclose(term, expected, rtol=RTOL)
    np.testing.assert_allclose(float(keras_loss), expected, rtol=RTOL)


def test_kd_method_weight_scales_the_term():
    teacher, student = fixed_logits()
    term = methods.KD(temperature=4.0, weight=0.9)({"logits": teacher}, {"logits": student})
    expected = 0.9 * hinton_kd(teacher, student, 4.0)
    np.testing.assert_allclose(float(term["loss_kd"]), expected, rtol=RTOL)


def test_keras_kldivergence_clips_small_probabilities_at_low_temperature():
    # T = 1 on these logits: some student probabilities are below 1e-7. Keras clips
    # them before the log, kerasdistill does not (it works on log-softmax).
    teacher, student = fixed_logits()
    assert softmax(student).min() < EPSILON
    keras_loss = float(
        kdist.LogitsDistillation(temperature=1.0, loss=keras.losses.KLDivergence()).compute_loss(
            teacher, student
        )
    )
    ours = float(kl_divergence_with_temperature(student, teacher, 1.0))
    np.testing.assert_allclose(ours, hinton_kd(teacher, student, 1.0), rtol=RTOL)
    clipped = clipped_kl(softmax(teacher), softmax(student))
    np.testing.assert_allclose(keras_loss, clipped, rtol=RTOL)
    assert abs(keras_loss - ours) / ours > 1e-4


@pytest.mark.parametrize("temperature", [3.0, 4.0])
def test_default_logits_distillation_applies_kl_to_scaled_logits(temperature):
    # loss="kl_divergence" resolves to the function keras.losses.kl_divergence, not a
    # KLDivergence instance, so no softmax and no T^2: KL of clip(t/T) against clip(s/T).
    teacher, student = fixed_logits()
    default = kdist.LogitsDistillation(temperature=temperature).compute_loss(teacher, student)
    default = float(default)
    np.testing.assert_allclose(
        default, clipped_kl(teacher / temperature, student / temperature), rtol=RTOL
    )
    assert default > 10 * hinton_kd(teacher, student, temperature)
    assert kdist.LogitsDistillation().temperature == 3.0


def test_default_logits_distillation_values_quoted_in_the_doc():
    teacher, student = fixed_logits()
    default = float(kdist.LogitsDistillation(temperature=4.0).compute_loss(teacher, student))
    ours = float(kl_divergence_with_temperature(student, teacher, 4.0))
    np.testing.assert_allclose(default, 218.27, rtol=1e-4)
    np.testing.assert_allclose(ours, 8.6028, rtol=1e-4)


def test_categorical_crossentropy_from_logits_takes_scaled_teacher_logits_as_targets():
    # The loss instance is not a KLDivergence, so the target is t/T itself (not a
    # distribution): -sum(t/T * log_softmax(s/T)), batch mean, no T^2.
    teacher, student = fixed_logits()
    temperature = 4.0
    value = kdist.LogitsDistillation(
        temperature=temperature, loss=keras.losses.CategoricalCrossentropy(from_logits=True)
    ).compute_loss(teacher, student)
    expected = -(teacher / temperature * log_softmax(student / temperature)).sum(-1).mean()
    np.testing.assert_allclose(float(value), expected, rtol=1e-4)


def _tiny_pair():
    def model(name):
        inputs = keras.Input((8,))
        hidden = keras.layers.Dense(16, name="hidden")(inputs)
        hidden = keras.layers.BatchNormalization(momentum=0.5, name="bn")(hidden)
        return keras.Model(inputs, keras.layers.Dense(5, name="logits")(hidden), name=name)

    return model("teacher"), model("student")


@pytest.mark.parametrize("with_feature_loss, updates", [(False, 1), (True, 2)])
def test_feature_distillation_runs_the_student_twice(with_feature_loss, updates):
    # The number of BatchNorm moving-mean updates counts the student's training-mode
    # forward passes: after n updates from zero with momentum m the moving mean is
    # (1 - m^n) * batch mean (the weights do not move: learning rate 0).
    teacher, student = _tiny_pair()
    losses = [kdist.LogitsDistillation(4.0, loss=keras.losses.KLDivergence())]
    if with_feature_loss:
        losses.append(kdist.FeatureDistillation("mse", "hidden", "hidden"))
    distiller = kdist.Distiller(teacher, student, losses, student_loss_weight=0.1)
    distiller.compile(
        optimizer=keras.optimizers.SGD(0.0),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    rng = np.random.default_rng(0)
    x = rng.standard_normal((32, 8)).astype("float32") + 3.0
    y = rng.integers(0, 5, 32)
    distiller.fit(x, y, batch_size=32, epochs=1, verbose=0)
    hidden = student.get_layer("hidden")
    batch_mean = (x @ hidden.kernel.numpy() + hidden.bias.numpy()).mean(axis=0)
    bn = student.get_layer("bn")
    np.testing.assert_allclose(bn.moving_mean.numpy(), (1 - 0.5**updates) * batch_mean, rtol=1e-4)
    # evaluate() runs the student's feature extractor in training mode too.
    before = bn.moving_mean.numpy().copy()
    distiller.evaluate(x, y, batch_size=32, verbose=0)
    assert np.allclose(before, bn.moving_mean.numpy()) != with_feature_loss
