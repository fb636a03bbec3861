"""The ImageNet training crop: torchvision's crop and flip distribution, resize methods, uint8."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

import kerasdistill
from kerasdistill import methods, models
from kerasdistill.data import augment, imagenet, imagenet_augment

# Image sizes (height, width): ImageNet's usual 375 x 500 and 500 x 375, the shared
# samples' 256 x 341, a panorama, and a strip where most draws end in the central fallback.
SHAPES = ((375, 500), (500, 375), (256, 341), (375, 997), (120, 1000))
DRAWS = 4000
# Two-sample Kolmogorov-Smirnov critical value at alpha = 0.001: c(alpha) sqrt(2 / n).
KS_CRITICAL = 1.949 * math.sqrt(2 / DRAWS)


def _torchvision_boxes(height, width, draws, rng, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3)):
    """`torchvision.transforms.RandomResizedCrop.get_params`, in numpy: (y, x, h, w) rows."""
    area = height * width
    boxes = []
    for _ in range(draws):
        for _ in range(10):
            target = area * rng.uniform(*scale)
            aspect = math.exp(rng.uniform(math.log(ratio[0]), math.log(ratio[1])))
            w, h = round(math.sqrt(target * aspect)), round(math.sqrt(target / aspect))
            if 0 < w <= width and 0 < h <= height:
                y, x = rng.integers(0, height - h + 1), rng.integers(0, width - w + 1)
                boxes.append((y, x, h, w))
                break
        else:
            in_ratio = width / height
            if in_ratio < ratio[0]:
                w, h = width, round(width / ratio[0])
            elif in_ratio > ratio[1]:
                w, h = round(height * ratio[1]), height
            else:
                w, h = width, height
            boxes.append(((height - h) // 2, (width - w) // 2, h, w))
    return np.array(boxes)


def _pipeline_boxes(height, width, draws, seed):
    """The windows `random_resized_crop_flip` crops for `draws` example seeds."""
    shape = tf.constant([height, width])

    def window(example_seed):
        window_seed, _ = imagenet_augment.crop_and_flip_seeds(example_seed)
        return imagenet_augment.random_resized_crop_window(shape, window_seed)

    seeds = tf.data.Dataset.random(seed=seed).batch(2).take(draws)
    return next(iter(seeds.map(window).batch(draws))).numpy()


def _ks_statistic(a, b):
    """The two-sample Kolmogorov-Smirnov statistic: the largest gap between the two CDFs."""
    values = np.sort(np.concatenate([a, b]))
    cdf_a = np.searchsorted(np.sort(a), values, side="right") / len(a)
    cdf_b = np.searchsorted(np.sort(b), values, side="right") / len(b)
    return np.abs(cdf_a - cdf_b).max()


@pytest.mark.parametrize("height,width", SHAPES)
def test_crop_boxes_follow_torchvision_distribution_and_fit_the_image(height, width):
    ours = _pipeline_boxes(height, width, DRAWS, seed=height + width)
    reference = _torchvision_boxes(height, width, DRAWS, np.random.default_rng(height * width))
    y, x, h, w = ours.T
    assert (h > 0).all() and (w > 0).all()
    assert (y >= 0).all() and (x >= 0).all() and (y + h <= height).all() and (x + w <= width).all()
    for name, stat in (("area fraction", lambda b: b[:, 2] * b[:, 3] / (height * width)),
                       ("aspect ratio", lambda b: b[:, 3] / b[:, 2]),
                       ("offset y", lambda b: b[:, 0] / height),
                       ("offset x", lambda b: b[:, 1] / width)):
        a, b = stat(ours), stat(reference)
        assert _ks_statistic(a, b) < KS_CRITICAL, name
        np.testing.assert_allclose(
            np.quantile(a, [0.1, 0.25, 0.5, 0.75, 0.9]),
            np.quantile(b, [0.1, 0.25, 0.5, 0.75, 0.9]),
            atol=0.05 * (b.max() - b.min()) + 1e-9,
            err_msg=name,
        )
    # The scale and ratio ranges hold, up to the rounding of the sides (the central
    # fallback of the strip is 120 x 160: within them too).
    fraction = h * w / (height * width)
    assert fraction.min() >= 0.075 and fraction.max() <= 1.0
    assert (w / h).min() >= 0.74 and (w / h).max() <= 1.35


def _old_random_resized_crop_flip(encoded, seed, size=224):
    """The training crop as it was before the resize methods (antialiased, round half even)."""
    window_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    window = imagenet_augment.random_resized_crop_window(
        imagenet_augment.image_shape(encoded), window_seed
    )
    image = tf.image.resize(
        imagenet_augment.decode_window(encoded, window), (size, size), antialias=True
    )
    image = tf.cast(tf.clip_by_value(tf.round(image), 0.0, 255.0), tf.uint8)
    return tf.image.stateless_random_flip_left_right(image, flip_seed)


def _photo(height=375, width=500):
    """A JPEG with detail at every scale (smooth ramps plus noise), no symmetry."""
    rng = np.random.default_rng(0)
    rows, cols = np.mgrid[0:height, 0:width]
    image = np.stack([cols * 0.4, rows * 0.5, (rows + cols) * 0.2], -1)
    image = image + rng.normal(0, 20, image.shape)
    return tf.io.encode_jpeg(np.clip(image, 0, 255).astype(np.uint8), quality=90)


def test_new_crop_draws_the_same_window_and_flip_per_seed_as_the_old_one():
    encoded = _photo()
    for seed in range(20):
        old = _old_random_resized_crop_flip(encoded, [seed, 3]).numpy().astype(int)
        bilinear = imagenet_augment.random_resized_crop_flip(
            encoded, [seed, 3], resize="bilinear"
        ).numpy()
        area = imagenet_augment.random_resized_crop_flip(encoded, [seed, 3]).numpy()
        # Rounding half up instead of half to even: off by one at exact halves only.
        assert np.abs(bilinear - old).max() <= 1
        # Another filter, the same window and flip: another window or a flip would be off by
        # tens of levels on this ramp.
        assert np.abs(area - old).mean() < 4.0, seed


def test_flips_are_drawn_half_the_time():
    encoded = tf.io.encode_png(np.tile(np.arange(224, dtype=np.uint8)[None, :, None], (224, 1, 3)))
    crop = imagenet_augment.random_resized_crop_flip  # the whole image, flipped or not
    seeds = tf.data.Dataset.range(400).map(lambda seed: tf.stack([seed, 1]))
    corners = seeds.map(lambda seed: crop(encoded, seed, scale=(1.0, 1.0), ratio=(1, 1))[0, 0, 0])
    flipped = np.array(list(corners.as_numpy_iterator())) > 100
    assert 0.42 < np.mean(flipped) < 0.58


@pytest.mark.parametrize("shape", [(375, 500), (150, 200), (300, 200), (200, 300), (224, 224)])
def test_resize_methods(shape):
    image = np.random.default_rng(1).integers(0, 256, shape + (3,), np.uint8)
    bilinear = imagenet_augment.resize_window(image, (224, 224), "bilinear")
    area = imagenet_augment.resize_window(image, (224, 224), "area")
    assert bilinear.shape == area.shape == (224, 224, 3)
    assert bilinear.dtype == area.dtype == tf.float32
    # "bilinear" is TensorFlow's (and PIL's) antialiased bilinear resize, whatever the scale.
    antialiased = tf.image.resize(image, (224, 224), antialias=True)
    np.testing.assert_allclose(bilinear, antialiased, atol=1e-3)
    # "area": an area average along the shrinking sides, bilinear along the growing ones.
    shrunk = tf.image.resize(image, np.minimum(shape, 224), method="area")
    np.testing.assert_allclose(area, tf.image.resize(shrunk, (224, 224)), atol=1e-3)
    if max(shape) <= 224:  # Only growing: both are plain bilinear.
        np.testing.assert_allclose(area, bilinear, atol=1e-3)
    assert area.numpy().min() >= -1e-3 and area.numpy().max() <= 255 + 1e-2


def test_area_resize_is_antialiased():
    # Stripes of period 2 px shrunk 1.9x: the ideal is flat gray. Bilinear without
    # antialiasing turns them into stripes of almost full contrast.
    stripes = np.zeros((426, 426, 3), np.uint8)
    stripes[:, ::2] = 255
    resize = imagenet_augment.resize_window
    contrast = {
        method: float(tf.math.reduce_std(resize(stripes, (224, 224), method)))
        for method in imagenet_augment.RESIZE_METHODS
    }
    aliased = float(tf.math.reduce_std(tf.image.resize(stripes, (224, 224))))
    assert aliased > 60 and contrast["bilinear"] < 5 and contrast["area"] < 10


def test_crop_options_are_validated():
    with pytest.raises(ValueError, match=r"one of \('area', 'bilinear'\), got 'nearest'"):
        imagenet_augment.random_resized_crop_flip(_photo(), [0, 1], resize="nearest")
    with pytest.raises(ValueError, match="dtype must be uint8 or float32, got float16"):
        imagenet_augment.random_resized_crop_flip(_photo(), [0, 1], dtype=tf.float16)


def test_float_crop_is_the_unrounded_uint8_crop():
    encoded = _photo()
    for resize in imagenet_augment.RESIZE_METHODS:
        as_uint8 = imagenet_augment.random_resized_crop_flip(encoded, [4, 2], resize=resize)
        as_float = imagenet_augment.random_resized_crop_flip(
            encoded, [4, 2], resize=resize, dtype=tf.float32
        )
        assert as_float.dtype == tf.float32 and as_uint8.dtype == tf.uint8
        assert 0.0 <= float(tf.reduce_min(as_float)) and float(tf.reduce_max(as_float)) <= 255.0
        np.testing.assert_allclose(as_uint8, as_float, atol=0.5 + 1e-3)


def test_normalize_is_bit_identical_to_broadcasting_the_channels():
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)

    def broadcasting(image):
        image = tf.cast(image, tf.float32) / 255.0
        return (image - tf.constant(mean, tf.float32)) / tf.constant(std, tf.float32)

    images = np.random.default_rng(2).integers(0, 256, (2, 224, 224, 3), np.uint8)
    for x in (images, images[0], images[0, :, :, :1]):  # batch, one image, a gray one
        np.testing.assert_array_equal(augment.normalize(x, mean, std), broadcasting(x))
        ds = tf.data.Dataset.from_tensors(x)
        np.testing.assert_array_equal(
            next(iter(ds.map(lambda v: augment.normalize(v, mean, std)))),
            next(iter(ds.map(broadcasting))),
        )


def test_normalization_layer_matches_the_pipelines_normalization():
    images = np.random.default_rng(3).integers(0, 256, (2, 8, 8, 3), np.uint8)
    layer = imagenet.normalization_layer(imagenet.IMAGENET_MEAN, imagenet.IMAGENET_STD)
    expected = augment.normalize(images, imagenet.IMAGENET_MEAN, imagenet.IMAGENET_STD)
    np.testing.assert_allclose(layer(images), expected, atol=1e-5)
    # It round-trips through a saved model's config.
    clone = keras.layers.Rescaling.from_config(layer.get_config())
    np.testing.assert_allclose(clone(images), expected, atol=1e-5)


def test_normalization_layer_computes_in_float32_under_mixed_precision():
    images = np.random.default_rng(5).integers(0, 256, (2, 8, 8, 3), np.uint8)
    expected = augment.normalize(images, imagenet.IMAGENET_MEAN, imagenet.IMAGENET_STD)
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_float16")
    try:
        layer = imagenet.normalization_layer(imagenet.IMAGENET_MEAN, imagenet.IMAGENET_STD)
        out = layer(images)
    finally:
        keras.config.set_dtype_policy(previous)
    assert layer.compute_dtype == "float32" and out.dtype == "float32"
    np.testing.assert_allclose(out, expected, atol=1e-5)  # float16 would be off by ~1e-3.


def _wrap(model, shape):
    """What a caller of `normalize=False` does: normalization first, inside the model."""
    inputs = keras.Input(shape, dtype="uint8")
    normalization = imagenet.normalization_layer(imagenet.IMAGENET_MEAN, imagenet.IMAGENET_STD)
    return keras.Model(inputs, model(normalization(inputs)))


def test_distiller_trains_on_uint8_batches_with_models_that_normalize():
    teacher = _wrap(models.get("resnet8", num_classes=4, input_shape=(16, 16, 3)), (16, 16, 3))
    student = _wrap(models.get("resnet8", num_classes=4, input_shape=(16, 16, 3)), (16, 16, 3))
    distiller = kerasdistill.Distiller(
        teacher=teacher, student=student, methods=[methods.KD(), methods.get("msdcrd")]
    )
    # The feature maps are found inside the wrapped models.
    assert distiller.tap_layers["student"]["feat_last"] == "resnet8/feat_3"
    distiller.compile(optimizer="sgd", run_eagerly=True)
    images = np.random.default_rng(4).integers(0, 256, (8, 16, 16, 3), np.uint8)
    batches = tf.data.Dataset.from_tensor_slices((images, np.arange(8) % 4)).batch(8)
    history = distiller.fit(batches, epochs=1, verbose=0).history
    assert np.isfinite(history["loss"][0]) and history["loss_msd_sw"][0] > 0
