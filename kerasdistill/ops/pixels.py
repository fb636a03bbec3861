"""Pixel standardization as the first layer of a model that takes [0, 255] images."""

import keras
import numpy as np

# The name of `normalization_layer`'s layer, by which a model that starts with it is known.
NORMALIZATION_LAYER = "pixel_normalization"


def normalization_layer(mean, std, name=NORMALIZATION_LAYER):
    """`kerasdistill.data.augment.normalize` as a Keras layer, to put first in a model that takes [0, 255] pixels.

    For batches of unnormalized images (`normalize=False` of the pipelines,
    uint8 or float): the model normalizes them itself, on the accelerator
    (`x * (1 / (255 std)) - mean / std`, always in float32, also under a
    mixed precision policy), and the saved model needs no statistics handed
    over. The results equal `normalize`'s to within float32 rounding.

    Args:
        mean: Per-channel mean over [0, 1] pixels (`dataset.mean`).
        std: Per-channel standard deviation over [0, 1] pixels (`dataset.std`).
        name: The layer's name.

    Returns:
        A float32 `keras.layers.Rescaling` layer.
    """
    mean = np.asarray(mean, np.float64)
    std = np.asarray(std, np.float64)
    return keras.layers.Rescaling(
        scale=(1.0 / (255.0 * std)).tolist(),
        offset=(-mean / std).tolist(),
        name=name,
        dtype="float32",
    )
