"""Per-example augmentation and normalization of the reference CIFAR protocol."""

import tensorflow as tf


def random_crop_flip(image, size=32, padding=4):
    """Zero-pads by `padding`, crops a random `size` x `size` patch, flips at random.

    Args:
        image: One uint8 or float image, HWC.
        size: Output height and width.
        padding: Zero padding added on each side before cropping.

    Returns:
        The augmented image, same dtype.
    """
    image = tf.image.pad_to_bounding_box(image, padding, padding, size + 2 * padding, size + 2 * padding)
    image = tf.image.random_crop(image, (size, size, tf.shape(image)[-1]))
    return tf.image.random_flip_left_right(image)


def normalize(image, mean, std):
    """Scales a uint8 image to [0, 1] and standardizes each channel.

    Args:
        image: uint8 image(s), channels last.
        mean: Per-channel mean over [0, 1] pixels.
        std: Per-channel standard deviation over [0, 1] pixels.

    Returns:
        A float32 tensor.
    """
    image = tf.cast(image, tf.float32) / 255.0
    return (image - tf.constant(mean, tf.float32)) / tf.constant(std, tf.float32)
