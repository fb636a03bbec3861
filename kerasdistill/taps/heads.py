"""Reading a classifier's head: logits before a softmax, tokens as a map."""

import math

import keras
from keras import ops


def is_softmax(activation):
    """Whether a layer's `activation` is the softmax."""
    return activation is keras.activations.softmax or (
        getattr(activation, "__name__", None) == "softmax"
    )


@keras.saving.register_keras_serializable(package="kerasdistill")
class DenseLogits(keras.layers.Layer):
    """The pre-activation output of a `Dense` layer, with that layer's weights.

    Args:
        dense: The `keras.layers.Dense` layer whose `kernel` and `bias` are used.
        **kwargs: Passed to `keras.layers.Layer`.
    """

    def __init__(self, dense, **kwargs):
        super().__init__(**kwargs)
        self.dense = dense

    def call(self, inputs):
        outputs = ops.matmul(inputs, self.dense.kernel)
        return outputs + self.dense.bias if self.dense.use_bias else outputs

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.dense.units,)


def token_map(tokens, where):
    """A `(batch, tokens, dim)` sequence as the NHWC map of its square patch grid.

    Args:
        tokens: A symbolic `(batch, count, dim)` tensor.
        where: What the tokens are, for the error message.

    Returns:
        The `(batch, side, side, dim)` map of the patch tokens (a leading class
        token, when `count` is one more than a square, dropped).

    Raises:
        ValueError: If `count` is neither a square nor a square plus one.
    """
    count, dim = tokens.shape[1], tokens.shape[2]
    for extra in (0, 1):
        side = math.isqrt(count - extra) if count and count > extra else 0
        if side and side * side == count - extra:
            patches = tokens[:, extra:, :] if extra else tokens
            return ops.reshape(patches, (-1, side, side, dim))
    raise ValueError(
        f"{where} is a sequence of {count} tokens, not a square patch grid (with or without "
        "one class token); name an NHWC feature map explicitly."
    )
