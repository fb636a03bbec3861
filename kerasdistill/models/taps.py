"""Feature taps: one forward of a functional model returning named intermediate tensors.

A tap is a name a distillation method asks for. For any functional Keras model a
tap is a layer name (its output tensor) or an alias mapped to a layer name.
Three names are special:

- `"logits"`: the model's output.
- `"feat_last"`: the zoo's last stage feature map, i.e. the layer `feat_k` with
  the highest `k`.
- `"pre_pool"`: the map the global pooling layer `pooled` averages, i.e. the one
  that feeds the classifier. It is `feat_last` for most of the zoo, but
  MobileNetV2 and ShuffleV2 widen the last stage map with a 1x1 convolution
  (to 1280 and 1024 channels) before pooling.

The tapped model shares every layer (and weight) with the original, so calling
it once in training mode updates BatchNorm statistics once.
"""

import re

import keras

LOGITS = "logits"
FEAT_LAST = "feat_last"
PRE_POOL = "pre_pool"
POOLED = "pooled"
_FEAT_PATTERN = re.compile(r"^feat_(\d+)$")


def _last_feature_layer(model):
    stages = [
        (int(m.group(1)), layer.name)
        for layer in model.layers
        if (m := _FEAT_PATTERN.match(layer.name))
    ]
    if not stages:
        raise ValueError(
            f"Tap {FEAT_LAST!r} needs layers named feat_0, feat_1, ... but model "
            f"{model.name!r} has none; name the layer explicitly instead."
        )
    return max(stages)[1]


def _pre_pool_layer(model):
    names = [layer.name for layer in model.layers]
    if POOLED in names:
        pooled_input = model.get_layer(POOLED).input
        for layer in model.layers:
            if layer.output is pooled_input:
                return layer.name
    raise ValueError(
        f"Tap {PRE_POOL!r} needs a global pooling layer named {POOLED!r} fed by a layer, but "
        f"model {model.name!r} has none; name the layer explicitly instead."
    )


def resolve_taps(model, taps):
    """Maps tap names to layer names of `model`, validating them.

    Args:
        model: A functional `keras.Model`.
        taps: An iterable of tap names, or a dict `{alias: layer_name}`.

    Returns:
        A dict `{tap: layer_name_or_LOGITS}`.

    Raises:
        ValueError: If the model is not functional or a layer name is unknown;
            the message lists the valid names.
    """
    if not hasattr(model, "inputs") or not model.inputs:
        raise ValueError(
            f"Feature taps need a functional keras.Model with defined inputs; got {model!r}."
        )
    mapping = dict(taps) if isinstance(taps, dict) else {t: t for t in taps}
    names = [layer.name for layer in model.layers]
    resolved = {}
    for alias, layer_name in mapping.items():
        if layer_name == LOGITS:
            resolved[alias] = LOGITS
        elif layer_name == FEAT_LAST:
            resolved[alias] = _last_feature_layer(model)
        elif layer_name == PRE_POOL:
            resolved[alias] = _pre_pool_layer(model)
        elif layer_name in names:
            resolved[alias] = layer_name
        else:
            raise ValueError(
                f"Unknown tap {layer_name!r} for model {model.name!r}. Valid taps: "
                f"{LOGITS!r}, {FEAT_LAST!r}, {PRE_POOL!r} or a layer name: {', '.join(names)}."
            )
    return resolved


def classifier_layer(model):
    """The Dense layer that produces `model`'s logits (its final classifier).

    Args:
        model: A functional `keras.Model` whose output is a Dense layer's.

    Returns:
        That `keras.layers.Dense` layer (shared, not a copy).

    Raises:
        ValueError: If the model's output does not come from a Dense layer.
    """
    output = model.outputs[0]
    for layer in reversed(model.layers):
        if isinstance(layer, keras.layers.Dense) and layer.output is output:
            return layer
    raise ValueError(
        f"Model {model.name!r} does not end in a Dense classifier layer; pass the "
        "classifier layer explicitly (e.g. teacher_classifier=model.get_layer('fc'))."
    )


def tap_model(model, taps):
    """Builds a model returning a dict of tapped tensors in one forward pass.

    Args:
        model: A functional `keras.Model`.
        taps: An iterable of tap names or a dict `{alias: layer_name}`; see
            `resolve_taps`. `"logits"` is always included.

    Returns:
        A `keras.Model` sharing `model`'s layers, whose output is a dict
        `{tap: tensor}`.
    """
    taps = dict(taps) if isinstance(taps, dict) else {t: t for t in taps}
    taps.setdefault(LOGITS, LOGITS)
    resolved = resolve_taps(model, taps)
    outputs = {
        alias: model.outputs[0] if name == LOGITS else model.get_layer(name).output
        for alias, name in resolved.items()
    }
    return keras.Model(model.input, outputs, name=f"{model.name}_taps")
