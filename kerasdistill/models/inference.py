"""A faster copy of a frozen model for inference: BatchNorm folded into convolutions.

A frozen teacher runs BatchNorm in inference mode, an affine map per channel
that can be merged into the convolution before it: with `s = gamma /
sqrt(moving_variance + epsilon)`, the kernel becomes `kernel * s` (per output
channel) and the bias `(bias - moving_mean) * s + beta`. The folded model
computes the same function with one layer fewer per block.
"""

import keras
import numpy as np

_CONVOLUTIONS = ("Conv2D", "DepthwiseConv2D")
# Layers whose outputs feature taps read: never folded away from their values.
_TAP_PREFIXES = ("feat_", "preact_", "pooled")


@keras.saving.register_keras_serializable(package="kerasdistill")
class FoldedBatchNorm(keras.layers.Layer):
    """Stands in for a BatchNormalization folded into the convolution before it.

    Passes its input through (it takes BatchNorm's call arguments, so the
    cloned graph connects unchanged) and keeps the layer's name for taps.
    """

    def call(self, inputs, training=None, mask=None):
        return inputs


def _inbound_layer_names(layer_config):
    """Names of the layers whose outputs feed the layer of `layer_config`."""
    names = []

    def walk(value):
        if isinstance(value, dict):
            if "keras_history" in value.get("config", {}):
                names.append(value["config"]["keras_history"][0])
            for item in value.values():
                walk(item)
        elif isinstance(value, (list, tuple)):
            for item in value:
                walk(item)

    walk(layer_config.get("inbound_nodes", []))
    return names


def _foldable_pairs(model):
    """Returns `{batchnorm_name: conv_name}` for every BN that can be folded.

    A BN folds into the convolution feeding it when the convolution's output
    goes nowhere else and is neither a model output nor a feature tap.
    """
    config = model.get_config()
    layers = {c["config"]["name"]: c for c in config["layers"]}
    consumers = {name: 0 for name in layers}
    for layer_config in config["layers"]:
        for name in _inbound_layer_names(layer_config):
            consumers[name] += 1
    outputs = {entry[0] for entry in keras.tree.flatten(config["output_layers"]) if isinstance(entry, str)}
    pairs = {}
    for name, layer_config in layers.items():
        if layer_config["class_name"] != "BatchNormalization":
            continue
        inbound = _inbound_layer_names(layer_config)
        if len(layer_config.get("inbound_nodes", [])) != 1 or len(inbound) != 1:
            continue
        source = inbound[0]
        if (
            layers[source]["class_name"] in _CONVOLUTIONS
            and consumers[source] == 1
            and source not in outputs
            and not source.startswith(_TAP_PREFIXES)
        ):
            pairs[name] = source
    return pairs


def _folded_weights(conv, batchnorm):
    """Returns `[kernel, bias]` of `conv` with `batchnorm` (inference mode) merged in."""
    weights = conv.get_weights()
    kernel = weights[0]
    bias = weights[1] if conv.use_bias else np.zeros(_out_channels(conv, kernel))
    gamma = np.asarray(batchnorm.gamma) if batchnorm.scale else 1.0
    beta = np.asarray(batchnorm.beta) if batchnorm.center else 0.0
    mean = np.asarray(batchnorm.moving_mean)
    variance = np.asarray(batchnorm.moving_variance)
    scale = gamma / np.sqrt(variance + batchnorm.epsilon)
    if isinstance(conv, keras.layers.DepthwiseConv2D):
        # Output channel c * multiplier + m comes from kernel[..., c, m].
        kernel = kernel * scale.reshape(kernel.shape[-2], kernel.shape[-1])
    else:
        kernel = kernel * scale
    return [kernel.astype(weights[0].dtype), ((bias - mean) * scale + beta).astype(weights[0].dtype)]


def _out_channels(conv, kernel):
    if isinstance(conv, keras.layers.DepthwiseConv2D):
        return kernel.shape[-2] * kernel.shape[-1]
    return kernel.shape[-1]


def fold_batchnorm(model, dtype=None):
    """Returns an inference copy of `model` with BatchNorm folded into convolutions.

    Every BatchNormalization directly after a `Conv2D` or `DepthwiseConv2D`
    (whose output feeds nothing else and is not a feature tap) is merged into
    it and replaced by a pass-through `FoldedBatchNorm` of the same name, so layer names and
    feature taps are unchanged. Use it for a frozen teacher; the copy is not
    meant for training.

    Args:
        model: A functional `keras.Model`.
        dtype: Optional dtype policy for every layer of the copy (for example
            `"mixed_bfloat16"` for a lower-precision teacher on hardware with
            fast bfloat16); `None` keeps each layer's own.

    Returns:
        A functional `keras.Model` computing the same outputs in inference mode.
    """
    pairs = _foldable_pairs(model)
    folded_convs = set(pairs.values())

    def clone_layer(layer):
        config = layer.get_config()
        if dtype is not None and "dtype" in config:
            config["dtype"] = dtype
        if layer.name in pairs:
            return FoldedBatchNorm(name=layer.name, dtype=config.get("dtype"))
        if layer.name in folded_convs:
            config["use_bias"] = True
        return layer.__class__.from_config(config)

    clone = keras.models.clone_model(model, clone_function=clone_layer)
    convs = {conv: bn for bn, conv in pairs.items()}
    for layer in clone.layers:
        original = model.get_layer(layer.name)
        if layer.name in convs:
            layer.set_weights(_folded_weights(original, model.get_layer(convs[layer.name])))
        elif layer.weights:
            layer.set_weights(original.get_weights())
    clone.trainable = False
    return clone
