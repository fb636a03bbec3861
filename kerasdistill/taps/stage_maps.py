"""Stage maps found in a traced graph: the last map at each resolution on the main path."""

import keras

# Layers whose outputs are a resolution only in passing (padding before a strided layer).
_NOT_STAGE_MAPS = (keras.layers.ZeroPadding2D, keras.layers.Cropping2D)


def _on_every_path(trace, inputs, tensor, target):
    """Whether every path from `inputs` to `target` goes through `tensor`."""
    if tensor is target:
        return True
    reached = {id(t) for t in keras.tree.flatten(inputs)}
    for step in trace.steps:
        if not step.nested and any(id(t) in reached for t in step.inputs):
            reached.update(id(t) for t in step.outputs if t is not tensor)
    return id(target) not in reached


def _is_elementwise(step):
    """A normalization or activation: one input, same shape out, no kernel."""
    return (
        len(step.inputs) == 1
        and tuple(step.inputs[0].shape) == tuple(step.outputs[0].shape)
        and not hasattr(step.operation, "kernel")
    )


def _before_expansion(trace, name, tensor):
    """The map a trailing 1x1 widening (and its norm/activation) was applied to.

    An inverted-residual network widens the last block output of a resolution
    with a 1x1 convolution before the next stage's strided depthwise
    convolution (or before the final pooling): that widened map belongs to
    what follows, and the stage map is the block output.
    """
    step = trace.producer(tensor)
    while step is not None and _is_elementwise(step):
        step = trace.producer(step.inputs[0])
    layer = None if step is None else step.operation
    if (
        isinstance(layer, keras.layers.Conv2D)
        and tuple(layer.kernel_size) == (1, 1)
        and tuple(layer.strides) == (1, 1)
        and step.inputs[0].shape[-1] < step.outputs[0].shape[-1]
    ):
        source = trace.producer(step.inputs[0])
        if source is not None and not source.nested:
            return source.name, step.inputs[0]
    return name, tensor


def find(trace, pool_step, inputs):
    """The stage maps of a traced model, largest resolution first.

    For each spatial size of the NHWC maps computed before the global
    pooling, the last map of that size that every path from the input to the
    pooled map goes through (a block output, not a side branch such as a
    squeeze-excitation or shortcut), moved back before a trailing 1x1
    widening (see `_before_expansion`). Maps of the input's own shape and
    padding outputs are skipped.

    Args:
        trace: A `kerasdistill.taps.graph.Trace`.
        pool_step: The `Step` of the global pooling.
        inputs: The trace's inputs.

    Returns:
        A list of `(layer_name, tensor)`.
    """
    image = keras.tree.flatten(inputs)[0]
    by_size = {}
    for step in trace.steps[: trace.steps.index(pool_step)]:
        if step.nested or isinstance(step.operation, _NOT_STAGE_MAPS):
            continue
        for tensor in step.outputs:
            shape = tuple(tensor.shape[1:])
            if len(shape) != 3 or None in shape or shape == tuple(image.shape[1:]):
                continue
            by_size.setdefault(shape[:2], []).append((step.name, tensor))
    target = pool_step.inputs[0]
    maps = []
    for size in sorted(by_size, key=lambda s: -s[0] * s[1]):
        for name, tensor in reversed(by_size[size]):
            if _on_every_path(trace, inputs, tensor, target):
                maps.append(_before_expansion(trace, name, tensor))
                break
    return maps
