"""A model's computation as one flat list of operations, nested models inlined.

Feature taps read intermediate tensors of a model. In a functional model whose
layers include other functional models (a KerasHub classifier calls its
backbone; a `keras.applications` model can be wrapped in a user's model), the
inner tensors live in the inner model's own graph and cannot be outputs of a
model built on the outer input. `trace` re-runs the model's graph on new
symbolic inputs, calling every layer (shared, with its weights) and running
the graph of every nested functional or `Sequential` model in place, so that
every intermediate tensor is connected to one input. A model built from those
tensors computes exactly what the original does, in one forward pass.

The graph is run with `keras.models.clone_model`, keeping every layer
(`clone_function`) and calling it through a recorder (`call_function`); a
`Sequential` model is run layer by layer.
"""

import dataclasses

import keras
from keras import tree


@dataclasses.dataclass
class Step:
    """One operation of a traced graph.

    Attributes:
        name: The operation's name, prefixed by the names of the nested models
            that hold it (`"res_net_backbone/stack1_block0_out"`).
        operation: The layer (or `keras.ops` operation) that ran.
        inputs: Its symbolic input tensors, in the traced graph.
        outputs: Its symbolic output tensors, in the traced graph.
        nested: Whether the operation is a nested model, whose own steps
            precede this one (its inputs and outputs summarize them).
    """

    name: str
    operation: object
    inputs: list
    outputs: list
    nested: bool = False


@dataclasses.dataclass
class Trace:
    """A model's graph re-run on new inputs.

    Attributes:
        inputs: The new `keras.Input` tensors (the model's input structure).
        output: The model's output tensor in the traced graph.
        steps: Every operation in execution order (nested models inlined).
    """

    inputs: object
    output: object
    steps: list

    def __post_init__(self):
        # The innermost step that computed each tensor, found once: walks back
        # through the graph ask for it at every step.
        self._producers = {}
        for step in self.steps:
            if not step.nested:
                for out in step.outputs:
                    self._producers.setdefault(id(out), step)

    def producer(self, tensor):
        """Returns the innermost `Step` that outputs `tensor`, or `None` for an input."""
        return self._producers.get(id(tensor))

    def step(self, name):
        """Returns the `Step` named `name` (qualified or, if unique, bare), or `None`."""
        exact = [s for s in self.steps if s.name == name]
        if exact:
            return exact[-1]
        bare = [s for s in self.steps if s.name.rsplit("/", 1)[-1] == name]
        return bare[-1] if len(bare) == 1 else None


def is_graph_model(model):
    """Whether `model` has a graph to trace (functional, or a `Sequential` with inputs).

    Args:
        model: Any object.

    Returns:
        `True` for a functional `keras.Model` (KerasHub models included) or a
        `keras.Sequential` that knows its input shape; `False` for a
        subclassed model, an unbuilt `Sequential` or anything else.
    """
    if not isinstance(model, keras.Model):
        return False
    try:
        return bool(model.inputs)
    except (AttributeError, ValueError):  # a subclassed model, an unbuilt Sequential
        return False


def _same_layer(layer):
    """`clone_function` of `keras.models.clone_model` that keeps each layer (and its weights)."""
    return layer


def _clone(model, **kwargs):
    """`keras.models.clone_model` of a functional `model`, keeping its layers.

    The clone is taken of an uncompiled functional model on `model`'s own
    graph: `clone_model` would compile a clone of a compiled model from its
    compile config, which fails for a loss or metric Keras cannot serialize.
    """
    plain = keras.Model(model.input, model.output, name=model.name)
    return keras.models.clone_model(plain, clone_function=_same_layer, **kwargs)


def _output_positions(model):
    """Where `model`'s outputs come from in its graph: `(call, output)` indices.

    The calls are counted in the order `keras.models.clone_model` makes them
    (the order of the graph, the same on any inputs), their outputs
    flattened. Run on new `keras.Input`s, the clone's outputs are the very
    tensors its calls returned, so they can be found among them.
    """
    calls = []

    def record(operation, *args, **kwargs):
        outputs = operation(*args, **kwargs)
        calls.append(tree.flatten(outputs))
        return outputs

    clone = _clone(model, call_function=record)
    found = {id(t): (i, j) for i, outputs in enumerate(calls) for j, t in enumerate(outputs)}
    return [found[id(t)] for t in clone.outputs]


class _Tracer:
    """Runs graphs on new tensors, appending every operation to `steps`."""

    def __init__(self):
        self.steps = []

    def call(self, operation, prefix, *args, **kwargs):
        """Calls `operation` (a nested model's graph in place); records and returns its outputs."""
        name = f"{prefix}{operation.name}"
        inputs = [t for t in tree.flatten((args, kwargs)) if isinstance(t, keras.KerasTensor)]
        nested = is_graph_model(operation)
        if nested:
            outputs = self.inline(operation, inputs, f"{name}/")
        else:
            outputs = operation(*args, **kwargs)
        self.steps.append(
            Step(name=name, operation=operation, inputs=inputs, outputs=tree.flatten(outputs),
                 nested=nested)
        )
        return outputs

    def inline(self, model, inputs, prefix):
        """Runs `model`'s graph on `inputs` (a flat list), each operation recorded; returns its outputs."""
        if isinstance(model, keras.Sequential):
            (outputs,) = inputs
            for layer in model.layers:
                outputs = self.call(layer, prefix, outputs)
            return outputs
        # A clone on tensors that are not `keras.Input`s returns a model whose outputs are copies
        # cut from these tensors: the outputs are taken from the recorded calls instead.
        positions = _output_positions(model)
        calls = []

        def record(operation, *args, **kwargs):
            outputs = self.call(operation, prefix, *args, **kwargs)
            calls.append(tree.flatten(outputs))
            return outputs

        _clone(
            model,
            input_tensors=tree.pack_sequence_as(model.input, inputs),
            call_function=record,
        )
        return tree.pack_sequence_as(model.output, [calls[i][j] for i, j in positions])

    def run(self, model):
        """Runs `model`'s graph on new `keras.Input`s; returns `(inputs, outputs)`."""
        if isinstance(model, keras.Sequential):
            source = model.inputs[0]
            inputs = keras.Input(batch_shape=source.shape, dtype=source.dtype)
            return inputs, self.inline(model, [inputs], "")
        clone = _clone(
            model,
            call_function=lambda operation, *args, **kwargs: self.call(
                operation, "", *args, **kwargs
            ),
        )
        return clone.input, clone.output


def trace(model):
    """Re-runs `model`'s graph on new symbolic inputs, nested models inlined.

    Args:
        model: A functional `keras.Model` or a `keras.Sequential` with inputs.

    Returns:
        A `Trace`. Its tensors are connected to `Trace.inputs`, so any of them
        can be an output of `keras.Model(trace.inputs, ...)`, which shares
        `model`'s layers and weights.

    Raises:
        ValueError: If `model` has no graph (a subclassed model) or several outputs.
    """
    if not is_graph_model(model):
        raise ValueError(f"Model {model.name!r} is subclassed and has no graph to trace.")
    if len(model.outputs) != 1:
        raise ValueError(
            f"Model {model.name!r} has {len(model.outputs)} outputs; a classifier with one "
            "logits output is expected."
        )
    tracer = _Tracer()
    inputs, output = tracer.run(model)
    return Trace(inputs=inputs, output=tree.flatten(output)[0], steps=tracer.steps)
