"""Parameter-free alignment of feature vectors whose widths differ."""

import numpy as np
from keras import ops


def channel_pool_matrix(channels, width):
    """The `(channels, width)` matrix averaging contiguous channel groups.

    Output channel `i` is the mean of input channels `floor(i * C / w)` to
    `ceil((i + 1) * C / w) - 1`, the 1-D analogue of adaptive average pooling
    (groups of `C / w` channels when `w` divides `C`; neighbouring groups
    share a channel otherwise).

    Args:
        channels: Input width `C`.
        width: Output width `w`, `1 <= w <= C`.

    Returns:
        A float32 NumPy array whose columns each sum to 1.

    Raises:
        ValueError: If `width` is not in `[1, channels]`.
    """
    if not 1 <= width <= channels:
        raise ValueError(f"channel pooling maps {channels} channels to 1..{channels}, got {width}.")
    matrix = np.zeros((channels, width), np.float32)
    for i in range(width):
        start = (i * channels) // width
        stop = -((-(i + 1) * channels) // width)
        matrix[start:stop, i] = 1.0 / (stop - start)
    return matrix


def pool_channels(x, width):
    """Averages contiguous channel groups of `x` down to `width` channels.

    Args:
        x: A tensor `(..., C)`; computed in float32.
        width: Output width `w <= C` (`x` itself when `w == C`).

    Returns:
        A float32 tensor `(..., w)`.
    """
    channels = x.shape[-1]
    x = ops.cast(x, "float32")
    if channels == width:
        return x
    return ops.matmul(x, ops.convert_to_tensor(channel_pool_matrix(channels, width)))
