"""Decoding and cropping of encoded ImageNet photos, with torchvision's semantics.

Training: `RandomResizedCrop(224)` + `RandomHorizontalFlip()`; evaluation:
`Resize(256)` + `CenterCrop(224)`, as in the torchvision ImageNet reference
recipe. Both take one encoded image (JPEG, or any format `tf.io.decode_image`
reads) and return a uint8 HWC RGB image (the training crop also a float32 one,
unrounded, for `normalize`); normalize it with
`kerasdistill.data.augment.normalize`, as the CIFAR images.

The training crop window is sampled in the original image's coordinates and
only that window of a JPEG is decoded (`tf.image.decode_and_crop_jpeg`). The
randomness is stateless: the same `seed` gives the same crop and flip. The
window is resized to the output size with `resize="area"` (default: an area
average, i.e. a box filter, on the sides that shrink, bilinear on those that
grow; about twice as fast) or `resize="bilinear"` (antialiased bilinear, a
triangle filter, as PIL and torchvision); the crop and flip distributions are
the same with both.
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


RESIZE_METHODS = ("area", "bilinear")


def _resize_to_uint8(image, size):
    """Bilinear, antialiased resize (as PIL's), rounded back to uint8."""
    image = tf.image.resize(image, size, method="bilinear", antialias=True)
    return tf.cast(tf.clip_by_value(tf.round(image), 0.0, 255.0), tf.uint8)


def resize_window(image, size, method="area"):
    """Resizes a decoded crop window to `size`, without rounding.

    Both methods are weighted averages with non-negative weights, so the
    result stays within the input's range, and both interpolate bilinearly
    along a side that grows (where antialiasing does nothing).

    Args:
        image: A uint8 HWC image (the decoded window).
        size: `(height, width)` of the output, Python ints.
        method: `"area"`: each output pixel averages the input pixels its
            footprint covers (`tf.image.resize(method="area")`, a box filter;
            OpenCV's `INTER_AREA`) along the sides that shrink, then bilinear
            along those that grow. `"bilinear"`: antialiased bilinear (a
            triangle filter as wide as the scale, PIL's and torchvision's
            `BILINEAR`), the plain bilinear resize when no side shrinks
            (identical there, at a third of the cost).

    Returns:
        A float32 image of shape `size + (channels,)`, values in the input's range.
    """
    if method not in RESIZE_METHODS:
        raise ValueError(f"resize must be one of {RESIZE_METHODS}, got {method!r}.")
    size = tf.constant(size, tf.int32)
    shape = tf.shape(image)[:2]
    if method == "area":
        # Scale 1 is the identity for both ops, so a side that does not shrink
        # passes the area step unchanged, and one already at `size` the bilinear step.
        image = tf.image.resize(image, tf.minimum(shape, size), method="area")
        return tf.image.resize(image, size, method="bilinear")
    return tf.cond(
        tf.reduce_all(shape <= size),
        lambda: tf.image.resize(image, size, method="bilinear"),
        lambda: tf.image.resize(image, size, method="bilinear", antialias=True),
    )


def crop_and_flip_seeds(seed):
    """The seeds of the window and of the flip that `random_resized_crop_flip` draws.

    Args:
        seed: Int tensor of shape `(2,)`, the example's stateless random seed.

    Returns:
        Two int tensors of shape `(2,)`: the window's seed (for
        `random_resized_crop_window`) and the flip's.
    """
    window_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    return window_seed, flip_seed


def random_resized_crop_flip(
    encoded,
    seed,
    size=224,
    scale=CROP_SCALE,
    ratio=CROP_RATIO,
    attempts=CROP_ATTEMPTS,
    resize="area",
    dtype=tf.uint8,
):
    """Decodes a random window, resizes it to `size` x `size` and flips it at random.

    Args:
        encoded: A scalar string tensor, the encoded image.
        seed: Int tensor of shape `(2,)`, the stateless random seed.
        size: Output height and width.
        scale: Window area range, see `random_resized_crop_window`.
        ratio: Window aspect-ratio range, see `random_resized_crop_window`.
        attempts: Candidates before the central fallback.
        resize: `"area"` (default) or `"bilinear"` (antialiased, as PIL and
            torchvision), see `resize_window`. The window and the flip drawn
            from a seed do not depend on it.
        dtype: `tf.uint8` (rounded) or `tf.float32` (not rounded, in [0, 255];
            cheaper to normalize).

    Returns:
        An image of shape `(size, size, 3)` and type `dtype`.
    """
    dtype = tf.as_dtype(dtype)
    if dtype not in (tf.uint8, tf.float32):
        raise ValueError(f"dtype must be uint8 or float32, got {dtype.name}.")
    window_seed, flip_seed = crop_and_flip_seeds(seed)
    window = random_resized_crop_window(
        image_shape(encoded), window_seed, scale=scale, ratio=ratio, attempts=attempts
    )
    image = resize_window(decode_window(encoded, window), (size, size), resize)
    if dtype == tf.uint8:
        # Rounds half up; the resize stays within [0, 255] up to float rounding, so no
        # clipping is needed before the truncating cast.
        image = tf.cast(image + 0.5, tf.uint8)
    else:
        image = tf.clip_by_value(image, 0.0, 255.0)  # The float rounding of the resize.
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
