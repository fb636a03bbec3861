"""Tracing a graph: nested functional and Sequential models run in place, on public Keras API."""

import pathlib
import re

import keras
import numpy as np
import pytest

import kerasdistill.taps
from kerasdistill.taps import graph


def _images(n=2, size=8):
    return np.random.default_rng(0).normal(size=(n, size, size, 3)).astype("float32")


def _inner():
    images = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, padding="same", name="conv")(images)
    return keras.Model(images, keras.layers.ReLU(name="relu")(x), name="inner")


def _outer():
    """A functional model calling a functional and a Sequential model on intermediate tensors."""
    images = keras.Input((8, 8, 3))
    x = keras.layers.Rescaling(0.5, name="scale")(images)
    x = _inner()(inputs=x)  # a keyword input
    x = keras.Sequential(
        [keras.layers.Conv2D(6, 3, strides=2, name="down"), keras.layers.ReLU(name="act")],
        name="seq",
    )(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    return keras.Model(images, keras.layers.Dense(3, name="fc")(x), name="outer")


def test_nested_models_are_inlined_with_qualified_names_in_graph_order():
    trace = graph.trace(_outer())
    assert [(s.name, s.nested) for s in trace.steps] == [
        ("scale", False),
        ("inner/conv", False), ("inner/relu", False), ("inner", True),
        ("seq/down", False), ("seq/act", False), ("seq", True),
        ("pool", False), ("fc", False),
    ]  # fmt: skip
    assert trace.step("relu").name == "inner/relu"
    assert trace.step("inner/relu") is trace.step("relu")
    assert trace.step("missing") is None


def test_every_traced_tensor_is_computed_from_the_new_inputs_as_in_the_model():
    model = _outer()
    trace = graph.trace(model)
    images = _images()
    tapped = keras.Model(
        trace.inputs, {s.name: s.outputs[0] for s in trace.steps if not s.nested}
    )
    out = {k: keras.ops.convert_to_numpy(v) for k, v in tapped(images).items()}
    np.testing.assert_allclose(out["fc"], model(images), rtol=1e-5, atol=1e-6)
    inner = model.get_layer("inner")
    np.testing.assert_allclose(out["inner/relu"], inner(images * 0.5), rtol=1e-5, atol=1e-6)
    # The nested model's output is the tensor its last step made (one tensor, not a copy).
    step = trace.step("inner")
    assert step.outputs[0] is trace.step("inner/relu").outputs[0]
    assert trace.producer(step.outputs[0]) is trace.step("inner/relu")
    assert trace.producer(trace.output) is trace.step("fc")
    assert {id(w) for w in tapped.weights} == {id(w) for w in model.weights}


def test_a_compiled_model_is_traced_without_its_compile_config():
    model = _outer()
    # A loss Keras cannot serialize: a clone compiled like the model would fail.
    model.compile(optimizer="sgd", loss=lambda y, p: keras.ops.mean(p))
    nested = keras.Model(model.input, model(model.input), name="wrapper")
    nested.compile(optimizer="sgd", loss=lambda y, p: keras.ops.mean(p))
    trace = graph.trace(nested)
    assert trace.step("relu").name == "outer/inner/relu"
    x = _images()
    np.testing.assert_allclose(keras.Model(trace.inputs, trace.output)(x), model(x), rtol=1e-6)
    assert model.compiled


def test_a_built_sequential_is_traced_layer_by_layer():
    model = keras.Sequential([keras.layers.Dense(4, name="a"), keras.layers.Dense(2, name="b")])
    model.build((None, 3))
    trace = graph.trace(model)
    assert [s.name for s in trace.steps] == ["a", "b"]
    assert tuple(trace.inputs.shape) == (None, 3)
    x = np.ones((1, 3), "float32")
    np.testing.assert_allclose(keras.Model(trace.inputs, trace.output)(x), model(x), rtol=1e-6)


def test_models_without_a_graph_or_with_several_outputs_are_refused():
    class Subclassed(keras.Model):
        def call(self, x):
            return x

    assert not graph.is_graph_model(Subclassed())
    assert not graph.is_graph_model(keras.Sequential([keras.layers.Dense(2)]))
    with pytest.raises(ValueError, match="is subclassed and has no graph to trace"):
        graph.trace(Subclassed(name="sub"))
    inputs = keras.Input((3,))
    two = keras.Model(inputs, [keras.layers.Dense(2)(inputs), inputs], name="two")
    with pytest.raises(ValueError, match="Model 'two' has 2 outputs; a classifier with one"):
        graph.trace(two)


def test_the_taps_read_no_private_keras_state():
    private = re.compile(
        r"_nodes_by_depth|_inputs_struct|_outputs_struct|\._functional\b|_run_through_graph"
        r"|_inbound_nodes|_keras_history|_fn_kwargs|\.arguments\b"
    )
    folder = pathlib.Path(kerasdistill.taps.__file__).parent
    found = [
        f"{path.name}:{n}" for path in sorted(folder.glob("*.py"))
        for n, line in enumerate(path.read_text().splitlines(), 1) if private.search(line)
    ]
    assert found == []
