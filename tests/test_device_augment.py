"""benchmarks/device_augment.py: crop/flip against NumPy, random draws, normalization."""

import itertools
import sys

import keras
import numpy as np
import pytest

from tests.conftest import REPO

sys.path.insert(0, str(REPO / "benchmarks"))
import device_augment  # noqa: E402


def _numpy_crop_flip(image, row, col, flip, padding):
    """Reference: pad with zeros, crop at (row, col), flip left-right."""
    height, width = image.shape[:2]
    padded = np.pad(image, ((padding, padding), (padding, padding), (0, 0)))
    crop = padded[row : row + height, col : col + width]
    return crop[:, ::-1] if flip else crop


def _position_images(batch, height, width, channels):
    """Images whose every pixel differs (1-based), so any crop is identifiable."""
    count = height * width * channels
    base = np.arange(1, count + 1, dtype="int32").reshape(height, width, channels)
    return np.stack([base + i * count for i in range(batch)])


def test_crop_flip_matches_numpy_pad_crop_flip():
    padding = 3
    windows = list(itertools.product(range(2 * padding + 1), range(2 * padding + 1), (0, 1)))
    images = _position_images(len(windows), 5, 7, 2)
    offsets = np.array([(r, c) for r, c, _ in windows], "int32")
    flips = np.array([f for _, _, f in windows], "int32")

    out = keras.ops.convert_to_numpy(device_augment.crop_flip(images, offsets, flips, padding))

    expected = np.stack(
        [_numpy_crop_flip(img, r, c, f, padding) for img, (r, c, f) in zip(images, windows)]
    )
    np.testing.assert_array_equal(out, expected)
    assert out.dtype == images.dtype


def test_crop_flip_keeps_uint8_and_centre_is_identity():
    images = np.random.default_rng(0).integers(0, 256, (3, 8, 8, 3), dtype="uint8")
    out = device_augment.crop_flip(images, np.full((3, 2), 4), np.zeros(3), padding=4)
    assert keras.backend.standardize_dtype(out.dtype) == "uint8"
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(out), images)


def test_crop_flip_rejects_negative_padding():
    with pytest.raises(ValueError, match="padding must be >= 0, got -1"):
        device_augment.crop_flip(np.zeros((1, 4, 4, 1)), np.zeros((1, 2)), np.zeros(1), padding=-1)


def test_random_crop_flip_draws_every_window_uniformly_per_example():
    padding, batch = 2, 2000
    image = _position_images(1, 4, 4, 1)[0]
    windows = list(itertools.product(range(2 * padding + 1), range(2 * padding + 1), (0, 1)))
    candidates = np.stack([_numpy_crop_flip(image, r, c, f, padding) for r, c, f in windows])

    out = device_augment.random_crop_flip(
        np.repeat(image[None], batch, axis=0), keras.random.SeedGenerator(1), padding
    )
    out = keras.ops.convert_to_numpy(out)

    matches = (out[:, None] == candidates[None]).all(axis=(2, 3, 4))
    assert (matches.sum(axis=1) == 1).all()  # each output is exactly one window
    counts = matches.sum(axis=0)
    expected = batch / len(windows)  # 40 per window
    assert counts.min() > 0.4 * expected and counts.max() < 1.8 * expected
    flipped = sum(counts[i] for i, w in enumerate(windows) if w[2])
    assert abs(flipped / batch - 0.5) < 0.05


def test_random_crop_flip_seed_generator_advances():
    images = _position_images(16, 6, 6, 1)
    seed = keras.random.SeedGenerator(3)
    first = keras.ops.convert_to_numpy(device_augment.random_crop_flip(images, seed))
    second = keras.ops.convert_to_numpy(device_augment.random_crop_flip(images, seed))
    assert not np.array_equal(first, second)


def test_normalize_scales_then_standardizes_per_channel():
    images = np.array([[[[0, 255, 51]]]], "uint8")
    out = device_augment.normalize(images, (0.5, 0.5, 0.2), (0.5, 0.25, 0.1))
    out = keras.ops.convert_to_numpy(out)
    np.testing.assert_allclose(out, [[[[-1.0, 2.0, 0.0]]]], atol=1e-6)
    assert out.dtype == np.float32
