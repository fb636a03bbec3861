"""Per-example augmentation and normalization of the reference CIFAR protocol."""

import numpy as np
import tensorflow as tf

from kerasdistill.ops.pixels import NORMALIZATION_LAYER, normalization_layer  # noqa: F401

# Largest image (height x width x channels) whose normalization constants are tiled.
_MAX_TILED = 1 << 22


def random_crop_flip(image, seed, size=32, padding=4):
    """Zero-pads by `padding`, crops a random `size` x `size` patch, flips at random.

    The crop offset and the flip are drawn with stateless randomness: the same
    `seed` gives the same result, whatever ran before.

    Args:
        image: One uint8 or float image, HWC.
        seed: Shape `(2,)` integer tensor, the stateless seed of this example.
        size: Output height and width.
        padding: Zero padding added on each side before cropping.

    Returns:
        The augmented image, same dtype.
    """
    crop_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    padded = size + 2 * padding
    image = tf.image.pad_to_bounding_box(image, padding, padding, padded, padded)
    image = tf.image.stateless_random_crop(image, (size, size, tf.shape(image)[-1]), crop_seed)
    return tf.image.stateless_random_flip_left_right(image, flip_seed)


def normalize(image, mean, std):
    """Scales a uint8 image to [0, 1] and standardizes each channel.

    Args:
        image: uint8 image(s), channels last (or float32 ones in [0, 255]).
        mean: Per-channel mean over [0, 1] pixels.
        std: Per-channel standard deviation over [0, 1] pixels.

    Returns:
        A float32 tensor.
    """
    image = tf.cast(image, tf.float32) / 255.0
    mean = np.asarray(mean, np.float32)
    std = np.asarray(std, np.float32)
    pixel = image.shape[-3:]
    if (
        pixel.rank == 3
        and pixel.is_fully_defined()
        and pixel.num_elements() <= _MAX_TILED
        and np.broadcast_shapes(mean.shape, std.shape, pixel) == tuple(pixel)
    ):
        # The same arithmetic, without broadcasting over a last axis of a few channels,
        # which TensorFlow's CPU kernels do element by element: the constants are tiled
        # to the image's shape when the function is traced (for a 224 x 224 ImageNet crop
        # this cuts the cost of `normalize` several times; results are bit-identical).
        mean = np.broadcast_to(mean, pixel.as_list())
        std = np.broadcast_to(std, pixel.as_list())
    return (image - tf.constant(mean)) / tf.constant(std)
