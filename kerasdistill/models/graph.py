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
    """Whether `model` has a graph to trace (functional, or a built `Sequential`)."""
    return isinstance(model, keras.Model) and _graph_of(model) is not None


def _graph_of(model):
    """The functional graph behind `model`, or `None` for a subclassed model."""
    if isinstance(model, keras.Sequential):
        return getattr(model, "_functional", None)
    if hasattr(model, "_nodes_by_depth") and getattr(model, "_inputs_struct", None) is not None:
        return model
    return None


def _run(model, inputs, prefix, steps):
    """Runs `model`'s graph on `inputs`, appending each operation to `steps`."""
    graph = _graph_of(model)
    tensors = {id(ref): value for ref, value in zip(graph.inputs, tree.flatten(inputs))}
    for depth in sorted(graph._nodes_by_depth, reverse=True):
        for node in graph._nodes_by_depth[depth]:
            if not node.operation or node.is_input:
                continue
            if any(id(t) not in tensors for t in node.input_tensors):
                continue
            args, kwargs = node.arguments.fill_in(tensors)
            operation = node.operation
            name = f"{prefix}{operation.name}"
            nested = isinstance(operation, keras.Model) and is_graph_model(operation)
            if nested:
                nested_inputs = [
                    t for t in tree.flatten((args, kwargs)) if isinstance(t, keras.KerasTensor)
                ]
                outputs = _run(operation, nested_inputs, f"{name}/", steps)
            else:
                outputs = operation(*args, **kwargs)
            flat_outputs = tree.flatten(outputs)
            steps.append(
                Step(
                    name=name,
                    operation=operation,
                    inputs=[tensors[id(t)] for t in node.input_tensors],
                    outputs=flat_outputs,
                    nested=nested,
                )
            )
            for ref, value in zip(node.outputs, flat_outputs):
                tensors[id(ref)] = value
    outputs = [tensors[id(ref)] for ref in graph.outputs]
    return tree.pack_sequence_as(graph._outputs_struct, outputs)


def trace(model):
    """Re-runs `model`'s graph on new symbolic inputs, nested models inlined.

    Args:
        model: A functional `keras.Model` or a built `keras.Sequential`.

    Returns:
        A `Trace`. Its tensors are connected to `Trace.inputs`, so any of them
        can be an output of `keras.Model(trace.inputs, ...)`, which shares
        `model`'s layers and weights.

    Raises:
        ValueError: If `model` has no graph (a subclassed model) or several outputs.
    """
    graph = _graph_of(model)
    if graph is None:
        raise ValueError(f"Model {model.name!r} is subclassed and has no graph to trace.")
    if len(graph.outputs) != 1:
        raise ValueError(
            f"Model {model.name!r} has {len(graph.outputs)} outputs; a classifier with one "
            "logits output is expected."
        )
    inputs = tree.map_structure(
        lambda t: keras.Input(batch_shape=t.shape, dtype=t.dtype),
        graph._inputs_struct,
    )
    steps = []
    output = _run(model, inputs, "", steps)
    return Trace(inputs=inputs, output=tree.flatten(output)[0], steps=steps)
