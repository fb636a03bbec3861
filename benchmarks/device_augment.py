"""Batched, on-device CIFAR augmentation in `keras.ops` for the device benchmarks.

The GPU machine of `gpu_study.py` has no TensorFlow, so its batches are
augmented on the device: pad-crop, flip, normalize.

The same transform as `kerasdistill.data.augment` (zero padding, a random crop
back to the input size, a random horizontal flip, per-channel normalization),
but for a whole batch at once and written in `keras.ops`, so that it can run
inside a jitted training step on any backend instead of in a tf.data pipeline.
"""

from keras import ops, random


def crop_flip(images, offsets, flips, padding=4):
    """Crops each image of a zero-padded batch at its own offset, then flips it.

    Equivalent to zero-padding every image by `padding` on each side,
    cropping the window of the original size whose top-left corner is
    `offsets[i]` in the padded image, and flipping it left-right where
    `flips[i]` is true; the padded image is never materialized.

    Args:
        images: Batch of images, `(batch, height, width, channels)`.
        offsets: Integer tensor `(batch, 2)`: row and column of each crop's
            top-left corner in the padded image, in `[0, 2 * padding]`.
        flips: Boolean or 0/1 tensor `(batch,)`: flip this image.
        padding: Zero padding on each side, `>= 0`.

    Returns:
        The cropped and flipped batch, same shape and dtype as `images`.
    """
    if padding < 0:
        raise ValueError(f"padding must be >= 0, got {padding}.")
    height, width = images.shape[1], images.shape[2]
    offsets = ops.cast(offsets, "int32")
    rows = offsets[:, :1] - padding + ops.arange(height, dtype="int32")[None, :]
    cols = offsets[:, 1:] - padding + ops.arange(width, dtype="int32")[None, :]
    cols = ops.where(ops.cast(flips, "bool")[:, None], ops.flip(cols, axis=1), cols)
    inside = ops.logical_and(
        ops.logical_and(rows >= 0, rows < height)[:, :, None],
        ops.logical_and(cols >= 0, cols < width)[:, None, :],
    )
    out = ops.take_along_axis(images, ops.clip(rows, 0, height - 1)[:, :, None, None], axis=1)
    out = ops.take_along_axis(out, ops.clip(cols, 0, width - 1)[:, None, :, None], axis=2)
    return ops.where(inside[:, :, :, None], out, ops.zeros_like(out))


def random_crop_flip(images, seed, padding=4):
    """Per-example random crop of the zero-padded image and random left-right flip.

    Every crop offset (uniform over the `(2 * padding + 1) ** 2` windows) and
    every flip (probability 1/2) is drawn independently for each image, as
    torchvision's `RandomCrop(size, padding)` and `RandomHorizontalFlip()` do.

    Args:
        images: Batch of images, `(batch, height, width, channels)`.
        seed: An int or a `keras.random.SeedGenerator` (inside a jitted
            function, a generator whose state is threaded through).
        padding: Zero padding on each side, `>= 0`.

    Returns:
        The augmented batch, same shape and dtype as `images`.
    """
    draws = random.uniform((ops.shape(images)[0], 3), seed=seed)
    choices = ops.convert_to_tensor([2 * padding + 1, 2 * padding + 1, 2], "float32")
    draws = ops.minimum(ops.floor(draws * choices), choices - 1)
    draws = ops.cast(draws, "int32")
    return crop_flip(images, draws[:, :2], draws[:, 2], padding=padding)


def normalize(images, mean, std):
    """Scales uint8 pixels to [0, 1] and standardizes each channel.

    Args:
        images: uint8 (or [0, 255] float) images, channels last.
        mean: Per-channel mean of [0, 1] pixels.
        std: Per-channel standard deviation of [0, 1] pixels.

    Returns:
        A float32 tensor of the same shape.
    """
    images = ops.cast(images, "float32") / 255.0
    mean = ops.convert_to_tensor(mean, "float32")
    std = ops.convert_to_tensor(std, "float32")
    return (images - mean) / std
