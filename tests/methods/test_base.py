"""What every method inherits from `DistillationMethod`."""

import inspect

import keras
import numpy as np
import pytest

from kerasdistill import methods
from kerasdistill.methods.base import DistillationMethod
from kerasdistill.models.initializers import torch_bias_initializer, torch_kernel_initializer

NAMES = ("kd", "fitnet", "at", "crd", "dkd", "msdcrd")
BUILT_FIRST = {"fitnet", "crd", "msdcrd"}
IN_BATCH_CONTRASTIVE = {"msdcrd"}


def _method(name):
    return methods.get(name)


@pytest.mark.parametrize("name", NAMES)
def test_one_call_signature(name):
    method = _method(name)
    base = inspect.signature(DistillationMethod.call)
    params = list(inspect.signature(type(method).call).parameters.values())
    # FitNet's regressor has BatchNorm: Keras's `training` argument comes last.
    if name == "fitnet":
        assert params[-1].name == "training"
        params = params[:-1]
    assert [(p.name, p.default) for p in params] == [
        (p.name, p.default) for p in base.parameters.values()
    ]


@pytest.mark.parametrize("name", NAMES)
def test_float32_under_any_policy_and_one_guard_before_build(name):
    keras.config.set_dtype_policy("mixed_float16")
    try:
        method = _method(name)
    finally:
        keras.config.set_dtype_policy("float32")
    assert method.compute_dtype == "float32"
    assert method.needs_tap_shapes == (name in BUILT_FIRST)
    if name in BUILT_FIRST:
        method.set_up(methods.TrainingData(train_labels=np.arange(20) % 4))
        with pytest.raises(ValueError, match=rf"{type(method).__name__}.build_from_taps\("):
            method({}, {}, labels=None)


@pytest.mark.parametrize("name", NAMES)
def test_methods_declare_their_batch_contract(name):
    method = _method(name)
    assert method.min_batch_per_replica == (2 if name in IN_BATCH_CONTRASTIVE else 1)
    assert type(method).min_batch_per_replica == method.min_batch_per_replica
    assert method.uses_sample_indices == (name == "crd")


DEFAULT_WEIGHTS = {"kd": 0.9, "fitnet": 100.0, "at": 1000.0, "crd": 0.8, "dkd": 1.0, "msdcrd": 1.0}


@pytest.mark.parametrize("name", NAMES)
def test_every_method_has_one_overall_weight_kept_in_its_config(name):
    method = _method(name)
    assert inspect.signature(type(method).__init__).parameters["weight"].default == (
        DEFAULT_WEIGHTS[name]
    )
    assert method.weight == DEFAULT_WEIGHTS[name]
    weighted = methods.get(name, weight=2.5)
    config = weighted.get_config()
    assert config["weight"] == 2.5
    assert type(weighted).from_config(config).weight == 2.5
    for bad in (-1.0, float("nan"), float("inf"), True, "1"):
        with pytest.raises(ValueError, match=r"weight must be a finite number >= 0"):
            methods.get(name, weight=bad)


@pytest.mark.parametrize("name", ["kd", "dkd"])
def test_the_overall_weight_multiplies_every_term_once(name):
    rng = np.random.default_rng(0)
    teacher = {"logits": rng.normal(size=(4, 5)).astype("float32")}
    student = {"logits": rng.normal(size=(4, 5)).astype("float32")}
    labels = np.array([0, 1, 2, 3])
    one = methods.get(name, weight=1.0)(teacher, student, labels=labels)
    three = methods.get(name, weight=3.0)(teacher, student, labels=labels)
    assert set(one) == set(three) == set(methods.get(name).loss_terms())
    for term in one:
        assert float(one[term]) > 0
        np.testing.assert_allclose(float(three[term]), 3.0 * float(one[term]), rtol=1e-6)


NEEDS = {"crd": ("train_labels",)}


@pytest.mark.parametrize("name", NAMES)
def test_every_method_is_built_from_its_arguments_alone_and_declares_what_it_needs(name):
    method = methods.get(name)
    assert method.needs == NEEDS.get(name, ())
    shape = {"logits": (None, 10), "pooled": (None, 8), "feat_last": (None, 4, 4, 8),
             "feat_2": (None, 4, 4, 8), "pre_pool": (None, 4, 4, 8)}
    teacher = {tap: shape.get(tap, (None, 4, 4, 8)) for tap in method.teacher_taps}
    student = {tap: shape.get(tap, (None, 4, 4, 8)) for tap in method.student_taps}
    if method.needs:
        with pytest.raises(ValueError, match=rf"^{type(method).__name__} needs "
                           rf"TrainingData.{method.needs[0]}: pass Distiller\(\.\.\., "
                           rf"training_data=TrainingData\({method.needs[0]}=\.\.\.\)\)"):
            method.build_from_taps(teacher, student)
        with pytest.raises(ValueError, match=rf"^{type(method).__name__} needs "
                           rf"TrainingData.{method.needs[0]}:"):
            method.set_up(methods.TrainingData(steps_per_epoch=10))
        method.set_up(methods.TrainingData(train_labels=np.arange(20) % 4))
    method.build_from_taps(teacher, student)


def test_weight_applies_to_methods_that_do_not_declare_it():
    class Plain(DistillationMethod):
        def __init__(self, **kwargs):
            super().__init__(teacher_taps=("logits",), student_taps=("logits",), **kwargs)

        def loss_terms(self):
            return ("loss_plain",)

        def call(self, teacher_outputs, student_outputs, labels=None, sample_indices=None,
                 step=None):
            return {"loss_plain": keras.ops.mean(student_outputs["logits"])}

    ones = {"logits": np.ones((2, 3), "float32")}
    assert float(Plain(weight=0.25)(ones, ones)["loss_plain"]) == 0.25
    assert Plain(weight=0.25).get_config()["weight"] == 0.25
    with pytest.raises(TypeError, match="unexpected argument 'wieght'; did you mean 'weight'"):
        Plain(wieght=0.25)


def test_in_batch_contrastive_has_no_negative_in_a_batch_of_one():
    method = methods.get("msdcrd", projection="none")
    shape = (1, 4, 4, 8)
    method.build_from_taps({"feat_last": shape}, {"feat_last": shape})
    maps = np.random.default_rng(0).normal(size=shape).astype("float32")
    out = method({"feat_last": maps}, {"feat_last": -maps}, labels=np.zeros(1, "int32"))
    # Alone in its batch, an anchor's only sample-wise candidate is its positive.
    assert float(out["loss_msd_sw"]) == pytest.approx(0.0, abs=1e-6)


def test_torch_default_initializers_bound_by_fan_in():
    fan_in = 48
    kernel = keras.ops.convert_to_numpy(torch_kernel_initializer()((3, 4, 4, 8)))  # fan-in 48
    bias = keras.ops.convert_to_numpy(torch_bias_initializer(fan_in)((10_000,)))
    bound = 1 / np.sqrt(fan_in)
    for values in (kernel, bias):
        assert np.abs(values).max() <= bound
        # Uniform on [-b, b]: standard deviation b / sqrt(3).
        np.testing.assert_allclose(values.std(), bound / np.sqrt(3), rtol=0.1)
