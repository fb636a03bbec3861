import tarfile

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from kerasdistill import data
from kerasdistill.data import augment


def _write_folder(root, per_class=(3, 2), classes=("cat", "ant"), test_per_class=1, seed=0):
    rng = np.random.default_rng(seed)
    images = {}
    for split, counts in (("train", per_class), ("test", (test_per_class,) * len(classes))):
        for class_name, count in zip(classes, counts):
            folder = root / split / class_name
            folder.mkdir(parents=True)
            for i in range(count):
                image = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
                tf.io.write_file(str(folder / f"{i:04d}.png"), tf.io.encode_png(image))
                images[(split, class_name, i)] = image
    return images


def test_image_folder_labels_order_and_statistics(tmp_path):
    images = _write_folder(tmp_path)
    dataset = data.load_image_folder(tmp_path)
    assert (dataset.num_classes, dataset.num_train) == (2, 5)
    examples = list(dataset.train.as_numpy_iterator())
    # Classes are sorted folder names: "ant" -> 0, "cat" -> 1; files sorted within a class.
    assert [int(label) for _, label in examples] == [0, 0, 1, 1, 1]
    np.testing.assert_array_equal(examples[0][0], images[("train", "ant", 0)])
    pixels = np.stack([images[k] for k in images if k[0] == "train"]) / 255.0
    np.testing.assert_allclose(dataset.mean, pixels.reshape(-1, 3).mean(0), rtol=1e-6)
    np.testing.assert_allclose(dataset.std, pixels.reshape(-1, 3).std(0), rtol=1e-6)
    np.testing.assert_array_equal(dataset.train_labels(), [0, 0, 1, 1, 1])


def test_image_folder_archive_is_extracted_once(tmp_path):
    source = tmp_path / "src" / "tiny"
    _write_folder(source)
    archive = tmp_path / "tiny.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(source, arcname="tiny")
    cache = tmp_path / "cache"
    dataset = data.load(str(archive), cache_dir=cache)
    assert dataset.num_train == 5
    assert (cache / "tiny" / ".extracted").exists()


def test_missing_folder_fails_with_layout_hint(tmp_path):
    with pytest.raises(data.DatasetUnavailableError, match="train/<class>"):
        data.load(str(tmp_path / "nowhere"))
    (tmp_path / "train").mkdir()
    with pytest.raises(data.DatasetUnavailableError, match="test"):
        data.load_image_folder(tmp_path)


def test_missing_cifar_fails_fast_with_instructions(tmp_path, monkeypatch):
    def no_prepare(*args, **kwargs):
        pytest.fail("tried to download and prepare the dataset")  # Not an Exception: not caught.

    monkeypatch.setattr(tfds.core.DatasetBuilder, "download_and_prepare", no_prepare)
    with pytest.raises(data.DatasetUnavailableError, match=r"cifar-100-binary.tar.gz.*downloads"):
        data.load("cifar100", data_dir=str(tmp_path))


def test_cifar100_through_tfds_with_mocked_data(tmp_path):
    with tfds.testing.mock_data(num_examples=20):
        dataset = data.load("cifar100", data_dir=str(tmp_path))
        assert (dataset.num_classes, dataset.num_train) == (100, 20)
        images, labels = next(iter(data.train_pipeline(dataset, batch_size=4)))
    assert images.shape == (4, 32, 32, 3) and images.dtype == tf.float32
    assert labels.shape == (4,)


def _constant_dataset(n=6):
    images = np.arange(n * 32 * 32 * 3, dtype=np.int64).reshape(n, 32, 32, 3) % 256
    labels = np.arange(n) % 3
    ds = tf.data.Dataset.from_tensor_slices((images.astype(np.uint8), labels))
    return data.Dataset(ds, ds, 3, n, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), "const"), images, labels


def test_train_pipeline_carries_dataset_indices():
    dataset, images, labels = _constant_dataset()
    batch = next(iter(data.train_pipeline(dataset, batch_size=6, with_index=True, seed=1)))
    (x, y) = batch
    index = x["index"].numpy()
    assert sorted(index) == list(range(6))
    np.testing.assert_array_equal(y.numpy(), labels[index])


def test_augmentation_is_a_shifted_padded_crop_possibly_flipped():
    dataset, images, _ = _constant_dataset(1)
    (x, _) = next(iter(data.train_pipeline(dataset, batch_size=1, with_index=True, seed=3)))
    got = x["image"].numpy()[0] * 0.25 + 0.5  # undo normalization, [0, 1]
    padded = np.pad(images[0] / 255.0, ((4, 4), (4, 4), (0, 0)))
    candidates = [
        padded[i : i + 32, j : j + 32][:, ::flip] for i in range(9) for j in range(9) for flip in (1, -1)
    ]
    assert min(np.abs(c - got).max() for c in candidates) < 1e-5


def test_train_pipeline_epochs_differ_and_a_seed_repeats_them():
    dataset, _, _ = _constant_dataset(12)

    def two_epochs(pipeline):
        return [np.concatenate([x["image"].numpy() for x, _ in pipeline]) for _ in range(2)]

    first, second = two_epochs(data.train_pipeline(dataset, batch_size=4, with_index=True, seed=5))
    assert not np.array_equal(first, second)
    again = two_epochs(data.train_pipeline(dataset, batch_size=4, with_index=True, seed=5))
    np.testing.assert_array_equal(again[0], first)
    np.testing.assert_array_equal(again[1], second)


def test_crop_flip_is_a_function_of_its_seed():
    image = tf.constant(_constant_dataset(1)[1][0], tf.uint8)
    crops = [augment.random_crop_flip(image, tf.constant([s, 0], tf.int64)) for s in (1, 2, 1)]
    np.testing.assert_array_equal(crops[0], crops[2])
    assert crops[0].shape == (32, 32, 3) and crops[0].dtype == tf.uint8
    assert not all(np.array_equal(augment.random_crop_flip(image, tf.constant([s, 0], tf.int64)),
                                  crops[0]) for s in range(2, 12))


def test_eval_pipeline_only_normalizes():
    dataset, images, labels = _constant_dataset()
    x, y = next(iter(data.eval_pipeline(dataset, batch_size=6)))
    np.testing.assert_allclose(x.numpy(), (images / 255.0 - 0.5) / 0.25, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(y.numpy(), labels)


def test_batch_size_must_be_positive():
    dataset, _, _ = _constant_dataset()
    with pytest.raises(ValueError, match="batch_size must be positive, got 0"):
        data.train_pipeline(dataset, batch_size=0)
