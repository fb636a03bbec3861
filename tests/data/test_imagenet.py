import dataclasses
import tarfile

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from kerasdistill import data
from kerasdistill.data import imagenet, imagenet_augment
from tests.conftest import SHARED

SAMPLES_ARCHIVE = SHARED / "data" / "imagenet-1k-samples.tar.gz"
# Normalized values of pixels 0 and 255 bound every channel.
LOW = min((0.0 - m) / s for m, s in zip(data.IMAGENET_MEAN, data.IMAGENET_STD))
HIGH = max((1.0 - m) / s for m, s in zip(data.IMAGENET_MEAN, data.IMAGENET_STD))


def test_tfds_imagenet2012_through_the_loader_with_mocked_data(tmp_path):
    with tfds.testing.mock_data(num_examples=8):
        dataset = data.load_imagenet(data_dir=str(tmp_path))
        assert (dataset.num_classes, dataset.num_train, dataset.name) == (1000, 8, "imagenet2012")
        assert dataset.train.element_spec[0].dtype == tf.string  # kept encoded
        train = data.imagenet_train_pipeline(dataset, batch_size=4, with_index=True, seed=0)
        x, y = next(iter(train))
        images, _ = next(iter(data.imagenet_eval_pipeline(dataset, batch_size=8)))
    assert x["image"].shape == (4, 224, 224, 3) and x["image"].dtype == tf.float32
    assert set(x["index"].numpy()) <= set(range(8)) and len(set(x["index"].numpy())) == 4
    assert y.dtype == tf.int64 and ((0 <= y.numpy()) & (y.numpy() < 1000)).all()
    assert images.shape == (8, 224, 224, 3)


def test_missing_manual_archives_fail_fast_naming_files_and_folder(tmp_path, monkeypatch):
    def no_prepare(*args, **kwargs):
        pytest.fail("tried to prepare the dataset")  # Not an Exception: not caught.

    monkeypatch.setattr(tfds.core.DatasetBuilder, "download_and_prepare", no_prepare)
    manual = tmp_path / "downloads" / "manual"
    with pytest.raises(
        data.DatasetUnavailableError,
        match=r"ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar are missing.*downloads/manual",
    ):
        data.load_imagenet(data_dir=str(tmp_path))
    manual.mkdir(parents=True)
    (manual / "ILSVRC2012_img_train.tar").touch()
    with pytest.raises(data.DatasetUnavailableError, match="and ILSVRC2012_img_val.tar is missing"):
        data.load_imagenet(data_dir=str(tmp_path))


def test_crop_window_falls_back_to_central_crop_like_torchvision():
    # No window of area >= 90% and ratio in [3/4, 4/3] fits 10 x 1000: the fallback is
    # the full height, width round(10 * 4/3) = 13, centered at (1000 - 13) // 2.
    window = imagenet_augment.random_resized_crop_window([10, 1000], [1, 2], scale=(0.9, 1.0))
    np.testing.assert_array_equal(window, [0, 493, 10, 13])
    window = imagenet_augment.random_resized_crop_window([1000, 10], [1, 2], scale=(0.9, 1.0))
    np.testing.assert_array_equal(window, [493, 0, 13, 10])  # round(10 / (3/4)) = 13


def _accepted_area_mean(height, width, draws=100_000):
    """Mean area fraction of torchvision's accepted windows, by Monte Carlo in numpy."""
    rng = np.random.default_rng(0)
    area = rng.uniform(0.08, 1.0, (draws, 10)) * height * width
    ratio = np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3), (draws, 10)))
    w, h = np.round(np.sqrt(area * ratio)), np.round(np.sqrt(area / ratio))
    fits = (w <= width) & (h <= height)
    first = fits.argmax(1)[fits.any(1)]
    return ((w * h)[fits.any(1), first] / (height * width)).mean()


def test_crop_windows_follow_scale_and_ratio_and_fit_the_image():
    sample = tf.function(imagenet_augment.random_resized_crop_window)
    shape = tf.constant([300, 400])
    windows = np.stack([sample(shape, tf.constant([seed, 7])) for seed in range(300)])
    y, x, h, w = windows.T
    area = h * w / (300 * 400)
    assert area.min() >= 0.07 and area.max() <= 1.0
    assert area.mean() == pytest.approx(_accepted_area_mean(300, 400), abs=0.05)
    assert (w / h).min() >= 0.74 and (w / h).max() <= 1.34
    assert y.min() >= 0 and x.min() >= 0 and (y + h).max() <= 300 and (x + w).max() <= 400
    assert len({tuple(v) for v in windows}) > 250  # seeds give different windows
    again = imagenet_augment.random_resized_crop_window([300, 400], [5, 7])
    np.testing.assert_array_equal(again, windows[5])


def test_crop_ranges_are_validated():
    with pytest.raises(ValueError, match=r"scale must be .* got \(0.5, 0.1\)"):
        imagenet_augment.random_resized_crop_window([8, 8], [0, 0], scale=(0.5, 0.1))
    with pytest.raises(ValueError, match="resize must be at least size=224, got 200"):
        imagenet_augment.resize_center_crop(tf.constant(b""), resize=200)


def _gradient(height, width):
    """uint8 image whose red channel is column / 2 and green channel row / 2."""
    rows, cols = np.mgrid[0:height, 0:width] / 2.0
    return np.stack([cols, rows, np.zeros_like(rows)], -1).round().astype(np.uint8)


def test_eval_crop_is_resize_256_then_center_224():
    # 300 x 400 -> Resize(256): 256 x int(256 * 400 / 300) = 256 x 341; CenterCrop(224)
    # starts at round(16.0) = 16 and round(58.5) = 58. A linear ramp survives bilinear
    # resizing, so each output pixel shows which source coordinate it came from.
    image = imagenet_augment.resize_center_crop(tf.io.encode_png(_gradient(300, 400))).numpy()
    assert image.shape == (224, 224, 3)
    scale = 300 / 256
    source_x = (np.arange(224) + 58 + 0.5) * scale - 0.5
    source_y = (np.arange(224) + 16 + 0.5) * scale - 0.5
    np.testing.assert_allclose(image[100, :, 0], source_x / 2, atol=1.01)
    np.testing.assert_allclose(image[:, 100, 1], source_y / 2, atol=1.01)


@pytest.mark.parametrize("resize", ["area", "bilinear"])
def test_train_crop_decodes_only_its_window_of_a_jpeg(resize):
    encoded = tf.io.encode_jpeg(_gradient(300, 400), quality=100)
    seed = tf.constant([3, 9])
    window_seed, flip_seed = imagenet_augment.crop_and_flip_seeds(seed)
    y, x, h, w = imagenet_augment.random_resized_crop_window([300, 400], window_seed).numpy()
    decoded = tf.io.decode_jpeg(encoded).numpy()
    expected = imagenet_augment.resize_window(decoded[y : y + h, x : x + w], (224, 224), resize)
    if resize == "bilinear":  # PIL's and torchvision's resize
        np.testing.assert_allclose(
            expected, tf.image.resize(decoded[y : y + h, x : x + w], (224, 224), antialias=True),
            atol=1e-3,
        )
    expected = tf.image.stateless_random_flip_left_right(expected, flip_seed).numpy()
    got = imagenet_augment.random_resized_crop_flip(encoded, seed, resize=resize).numpy()
    assert got.dtype == np.uint8 and got.shape == (224, 224, 3)
    error = np.abs(got.astype(float) - expected)
    # Rounding to uint8, plus chroma upsampling at the window's edges; a window shifted
    # by one pixel is off by more than 1 at about 12% of the values.
    assert error.max() <= 2.01 and (error > 1.01).mean() < 0.01
    np.testing.assert_array_equal(
        imagenet_augment.random_resized_crop_flip(encoded, seed, resize=resize), got
    )


def test_grayscale_jpeg_and_png_named_jpeg_come_out_rgb():
    # ILSVRC has grayscale JPEGs and one PNG under a .JPEG name (n02105855_2933.JPEG).
    gray = tf.io.encode_jpeg(np.full((50, 70, 1), 90, np.uint8))
    png = tf.io.encode_png(np.full((70, 50, 3), 200, np.uint8))
    for encoded, value in ((gray, 90), (png, 200)):
        train = imagenet_augment.random_resized_crop_flip(encoded, [0, 1]).numpy()
        evaluated = imagenet_augment.resize_center_crop(encoded).numpy()
        assert train.shape == evaluated.shape == (224, 224, 3)
        assert np.abs(train.astype(int) - value).max() <= 1
        assert np.abs(evaluated.astype(int) - value).max() <= 1


def _write_ilsvrc_folder(root, wnids=("n02", "n01"), per_class=2):
    for split in ("train", "val"):
        for wnid in wnids:
            (root / split / wnid).mkdir(parents=True)
            for i in range(per_class):
                image = np.full((40 + i, 50, 3), 10 * i, np.uint8)
                path = root / split / wnid / f"{wnid}_{i}.JPEG"
                tf.io.write_file(str(path), tf.io.encode_jpeg(image))


def test_folder_archive_keeps_images_encoded_with_sorted_wnid_labels(tmp_path):
    _write_ilsvrc_folder(tmp_path / "src" / "ilsvrc")
    archive = tmp_path / "ilsvrc.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(tmp_path / "src" / "ilsvrc", arcname="ilsvrc")
    dataset = data.load_imagenet_folder(archive, cache_dir=tmp_path / "cache")
    assert (dataset.num_classes, dataset.num_train) == (2, 4)
    val = list(dataset.test.as_numpy_iterator())
    assert [label for _, label in val] == [0, 0, 1, 1]  # n01 -> 0, n02 -> 1
    assert tf.io.is_jpeg(val[0][0])
    assert sorted(dataset.train_labels()) == [0, 0, 1, 1]


def test_folder_without_val_fails_with_layout(tmp_path):
    (tmp_path / "train" / "n01").mkdir(parents=True)
    with pytest.raises(data.DatasetUnavailableError, match=r"train/<wnid>/\*.JPEG and val/<wnid>"):
        data.load_imagenet_folder(tmp_path)


def test_imagenet_pipelines_reject_decoded_datasets():
    ds = tf.data.Dataset.from_tensor_slices((np.zeros((2, 32, 32, 3), np.uint8), [0, 1]))
    dataset = data.Dataset(ds, ds, 2, 2, (0.5,) * 3, (0.25,) * 3, "decoded")
    with pytest.raises(ValueError, match="encoded images.*holds uint8"):
        data.imagenet_train_pipeline(dataset)
    with pytest.raises(ValueError, match="split must be 'test' or 'train', got 'val'"):
        data.imagenet_eval_pipeline(dataset, split="val")


def test_top5_accuracy_counts_labels_among_five_highest_logits():
    metric = data.top5_accuracy()
    logits = np.tile(np.arange(10, dtype=np.float32), (2, 1))  # top five: classes 5..9
    metric.update_state([9, 2], logits)
    assert metric.name == "top5" and float(metric.result()) == 0.5


@pytest.fixture(scope="module")
def samples(tmp_path_factory):
    """The 1,000 shared ImageNet photos as an ILSVRC folder (train/ and val/ both hold all)."""
    if not SAMPLES_ARCHIVE.exists():
        pytest.skip(f"shared ImageNet samples {SAMPLES_ARCHIVE} are absent")
    root = tmp_path_factory.mktemp("imagenet")
    with tarfile.open(SAMPLES_ARCHIVE) as tar:
        tar.extractall(root, filter="data")
    for split in ("train", "val"):
        (root / split).symlink_to(root / "imagenet-1k-samples", target_is_directory=True)
    return data.load_imagenet_folder(root)


def test_real_photos_train_pipeline(samples):
    assert (samples.num_classes, samples.num_train) == (1000, 1000)
    x, y = next(iter(data.imagenet_train_pipeline(samples, batch_size=16, with_index=True, seed=1)))
    images, index = x["image"].numpy(), x["index"].numpy()
    assert images.shape == (16, 224, 224, 3) and images.dtype == np.float32
    assert LOW - 1e-5 <= images.min() < -1.0 and 1.0 < images.max() <= HIGH + 1e-5
    np.testing.assert_array_equal(y.numpy(), samples.train_labels()[index])
    assert ((0 <= y.numpy()) & (y.numpy() < 1000)).all()
    # uint8 batches of the same examples, crops and flips; the model's first layer
    # normalizes them to the same images up to the uint8 rounding.
    pipeline = data.imagenet_train_pipeline(
        samples, batch_size=16, with_index=True, seed=1, normalize=False
    )
    x8, y8 = next(iter(pipeline))
    assert x8["image"].dtype == tf.uint8 and x8["image"].shape == (16, 224, 224, 3)
    np.testing.assert_array_equal(x8["index"], index)
    np.testing.assert_array_equal(y8, y)
    normalized = imagenet.normalization_layer(samples.mean, samples.std)(x8["image"])
    np.testing.assert_allclose(normalized, images, atol=0.5 / 255 / min(data.IMAGENET_STD) + 1e-5)


def test_real_photos_eval_pipeline_is_deterministic_in_wnid_order(samples):
    pipeline = data.imagenet_eval_pipeline(
        dataclasses.replace(samples, test=samples.test.take(16)), batch_size=16
    )
    (first, labels), = list(pipeline)
    (second, _), = list(pipeline)
    assert first.shape == (16, 224, 224, 3)
    np.testing.assert_array_equal(first, second)
    np.testing.assert_array_equal(labels, np.arange(16))  # one photo per class, n01440764 -> 0
    assert LOW - 1e-5 <= first.numpy().min() and first.numpy().max() <= HIGH + 1e-5
    pipeline = data.imagenet_eval_pipeline(
        dataclasses.replace(samples, test=samples.test.take(16)), batch_size=16, normalize=False
    )
    (as_uint8, _), = list(pipeline)
    assert as_uint8.dtype == tf.uint8
    normalized = imagenet.normalization_layer(samples.mean, samples.std)(as_uint8)
    np.testing.assert_allclose(normalized, first, atol=1e-5)
