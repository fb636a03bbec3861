"""Decoding and cropping of encoded ImageNet photos, with torchvision's semantics.

Training: `RandomResizedCrop(224)` + `RandomHorizontalFlip()`; evaluation:
`Resize(256)` + `CenterCrop(224)`, as in the torchvision ImageNet reference
recipe. Both take one encoded image (JPEG, or any format `tf.io.decode_image`
reads) and return a uint8 HWC RGB image; normalize it with
`kerasdistill.data.augment.normalize`, as the CIFAR images.

The training crop window is sampled in the original image's coordinates and
only that window of a JPEG is decoded (`tf.image.decode_and_crop_jpeg`). The
randomness is stateless: the same `seed` gives the same crop and flip.
"""

import math

import tensorflow as tf

# torchvision.transforms.RandomResizedCrop defaults.
CROP_SCALE = (0.08, 1.0)
CROP_RATIO = (3.0 / 4.0, 4.0 / 3.0)
CROP_ATTEMPTS = 10


def _decode(encoded):
    return tf.io.decode_image(encoded, channels=3, expand_animations=False)


def image_shape(encoded):
    """Height and width of an encoded image, read from the JPEG header when it is one.

    Args:
        encoded: A scalar string tensor, the encoded image.

    Returns:
        An int32 tensor `[height, width]`.
    """
    return tf.cond(
        tf.io.is_jpeg(encoded),
        lambda: tf.image.extract_jpeg_shape(encoded)[:2],
        lambda: tf.shape(_decode(encoded))[:2],
    )


def decode_window(encoded, window):
    """Decodes the window `[offset_y, offset_x, height, width]` of an encoded image.

    A JPEG is decoded only inside the window; other formats are decoded whole
    and cropped.

    Args:
        encoded: A scalar string tensor, the encoded image.
        window: An int32 tensor `[offset_y, offset_x, height, width]`.

    Returns:
        A uint8 RGB image of shape `(height, width, 3)`.
    """
    return tf.cond(
        tf.io.is_jpeg(encoded),
        lambda: tf.image.decode_and_crop_jpeg(encoded, window, channels=3),
        lambda: tf.image.crop_to_bounding_box(_decode(encoded), *tf.unstack(window)),
    )


def _validate_range(name, value):
    low, high = value
    if not 0 < low <= high:
        raise ValueError(f"{name} must be (low, high) with 0 < low <= high, got {value}.")


def random_resized_crop_window(
    shape, seed, scale=CROP_SCALE, ratio=CROP_RATIO, attempts=CROP_ATTEMPTS
):
    """Samples a crop window as torchvision's `RandomResizedCrop.get_params`.

    Up to `attempts` candidates draw an area fraction uniformly from `scale`
    and an aspect ratio (width / height) log-uniformly from `ratio`, with side
    lengths rounded to integers; the first that fits in the image is taken,
    at a uniformly random position. When none fits, the window is the largest
    central crop whose aspect ratio is clamped to `ratio`.

    Args:
        shape: Int tensor `[height, width]` of the image.
        seed: Int tensor of shape `(2,)`, the stateless random seed.
        scale: `(low, high)` range of the window area over the image area.
        ratio: `(low, high)` range of the window aspect ratio, width / height.
        attempts: Number of candidates before the central fallback.

    Returns:
        An int32 tensor `[offset_y, offset_x, height, width]`.
    """
    _validate_range("scale", scale)
    _validate_range("ratio", ratio)
    if attempts < 1:
        raise ValueError(f"attempts must be at least 1, got {attempts}.")
    height, width = tf.unstack(tf.cast(shape, tf.int32))
    area_seed, ratio_seed, y_seed, x_seed = tf.unstack(
        tf.random.experimental.stateless_split(seed, 4)
    )
    area = tf.cast(height * width, tf.float32)
    target_area = area * tf.random.stateless_uniform([attempts], area_seed, scale[0], scale[1])
    aspect = tf.exp(
        tf.random.stateless_uniform([attempts], ratio_seed, math.log(ratio[0]), math.log(ratio[1]))
    )
    # tf.round rounds half to even, as Python's round() in torchvision.
    widths = tf.cast(tf.round(tf.sqrt(target_area * aspect)), tf.int32)
    heights = tf.cast(tf.round(tf.sqrt(target_area / aspect)), tf.int32)
    fits = (widths > 0) & (widths <= width) & (heights > 0) & (heights <= height)
    first = tf.argmax(tf.cast(fits, tf.int32))

    in_ratio = tf.cast(width, tf.float32) / tf.cast(height, tf.float32)
    fallback_h = tf.where(
        in_ratio > ratio[1],
        height,
        tf.where(
            in_ratio < ratio[0],
            tf.cast(tf.round(tf.cast(width, tf.float32) / ratio[0]), tf.int32),
            height,
        ),
    )
    fallback_w = tf.where(
        in_ratio > ratio[1],
        tf.cast(tf.round(tf.cast(height, tf.float32) * ratio[1]), tf.int32),
        width,
    )
    found = tf.reduce_any(fits)
    crop_h = tf.where(found, heights[first], fallback_h)
    crop_w = tf.where(found, widths[first], fallback_w)
    offset_y = tf.where(
        found,
        tf.random.stateless_uniform([], y_seed, 0, height - crop_h + 1, dtype=tf.int32),
        (height - crop_h) // 2,
    )
    offset_x = tf.where(
        found,
        tf.random.stateless_uniform([], x_seed, 0, width - crop_w + 1, dtype=tf.int32),
        (width - crop_w) // 2,
    )
    return tf.stack([offset_y, offset_x, crop_h, crop_w])


def _resize_to_uint8(image, size):
    """Bilinear, antialiased resize (as PIL's), rounded back to uint8."""
    image = tf.image.resize(image, size, method="bilinear", antialias=True)
    return tf.cast(tf.clip_by_value(tf.round(image), 0.0, 255.0), tf.uint8)


def random_resized_crop_flip(
    encoded, seed, size=224, scale=CROP_SCALE, ratio=CROP_RATIO, attempts=CROP_ATTEMPTS
):
    """Decodes a random window, resizes it to `size` x `size` and flips it at random.

    Args:
        encoded: A scalar string tensor, the encoded image.
        seed: Int tensor of shape `(2,)`, the stateless random seed.
        size: Output height and width.
        scale: Window area range, see `random_resized_crop_window`.
        ratio: Window aspect-ratio range, see `random_resized_crop_window`.
        attempts: Candidates before the central fallback.

    Returns:
        A uint8 image of shape `(size, size, 3)`.
    """
    window_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    window = random_resized_crop_window(
        image_shape(encoded), window_seed, scale=scale, ratio=ratio, attempts=attempts
    )
    image = _resize_to_uint8(decode_window(encoded, window), (size, size))
    return tf.image.stateless_random_flip_left_right(image, flip_seed)


def resize_center_crop(encoded, size=224, resize=256):
    """Resizes the short side to `resize` and crops the central `size` x `size`.

    Matches torchvision's `Resize(resize)` (the long side becomes
    `int(resize * long / short)`) followed by `CenterCrop(size)` (offsets
    `round((side - size) / 2)`). The whole image is decoded.

    Args:
        encoded: A scalar string tensor, the encoded image.
        size: Output height and width.
        resize: Length of the short side after resizing; at least `size`.

    Returns:
        A uint8 image of shape `(size, size, 3)`.
    """
    if resize < size:
        raise ValueError(f"resize must be at least size={size}, got {resize}.")
    image = _decode(encoded)
    shape = tf.shape(image)[:2]
    short = tf.reduce_min(shape)
    long_side = tf.cast(resize * tf.reduce_max(shape) // short, tf.int32)
    new_shape = tf.where(shape[0] <= shape[1], [resize, long_side], [long_side, resize])
    image = _resize_to_uint8(image, new_shape)
    offsets = tf.cast(tf.round(tf.cast(new_shape - size, tf.float32) / 2.0), tf.int32)
    return tf.image.crop_to_bounding_box(image, offsets[0], offsets[1], size, size)
