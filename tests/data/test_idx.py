"""IDX files and the Fashion-MNIST image folder, on small synthetic files."""

import gzip
import struct

import numpy as np
import pytest
from PIL import Image

from kerasdistill.data import folders, idx


def _write_idx(path, array, type_code=0x08):
    """An IDX file as the MNIST page describes it: 0, 0, type, ndim, big-endian dims, data."""
    header = bytes([0, 0, type_code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    data = header + array.astype(array.dtype.newbyteorder(">")).tobytes()
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "wb") as file:
        file.write(data)


def test_read_idx_reads_gzipped_and_plain_files_of_any_type(tmp_path):
    images = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    _write_idx(tmp_path / "images.gz", images)
    np.testing.assert_array_equal(idx.read_idx(tmp_path / "images.gz"), images)
    values = np.array([-70000, 5, 123456], np.int32)
    _write_idx(tmp_path / "values", values, type_code=0x0C)
    assert idx.read_idx(tmp_path / "values").tolist() == values.tolist()


def test_read_idx_rejects_other_files_and_short_data(tmp_path):
    (tmp_path / "text").write_bytes(b"hello world")
    with pytest.raises(ValueError, match=r"text is not an IDX file \(magic number 68656c6c\)"):
        idx.read_idx(tmp_path / "text")
    _write_idx(tmp_path / "short", np.zeros((2, 2), np.uint8))
    (tmp_path / "short").write_bytes((tmp_path / "short").read_bytes()[:-1])
    with pytest.raises(ValueError, match=r"shape \(2, 2\) needs 4 bytes of data, the file has 3"):
        idx.read_idx(tmp_path / "short")


def test_fashion_mnist_folder_pads_to_32_and_keeps_the_label_order(tmp_path):
    source = tmp_path / "source"
    source.mkdir()
    rng = np.random.default_rng(0)
    labels = {"train": np.array([9, 0, 3], np.uint8), "test": np.array([1, 9], np.uint8)}
    images = {split: rng.integers(1, 256, (len(y), 28, 28), dtype=np.uint8)
              for split, y in labels.items()}
    for split, (images_file, labels_file) in idx.FASHION_MNIST_FILES.items():
        _write_idx(source / images_file, images[split])
        _write_idx(source / labels_file, labels[split])
    target = idx.write_fashion_mnist_folder(tmp_path / "folder", source)
    for split in ("train", "test"):
        class_names, paths, read_labels = folders.list_split(target, split)
        assert class_names == list(idx.FASHION_MNIST_CLASSES) and class_names[9] == "9_ankle_boot"
        assert sorted(read_labels) == sorted(labels[split].tolist())
        for path, label in zip(paths, read_labels):
            index = int(path.rsplit("/", 1)[1][:-4])
            pixels = np.asarray(Image.open(path))
            assert pixels.shape == (32, 32) and labels[split][index] == label
            np.testing.assert_array_equal(pixels[2:30, 2:30], images[split][index])
            assert pixels.sum() == images[split][index].sum()  # The border is black.


def test_fashion_mnist_folder_names_the_package_when_files_are_missing(tmp_path):
    assert len(idx.missing_fashion_mnist_files(tmp_path)) == 4
    with pytest.raises(FileNotFoundError, match=r"train-images-idx3-ubyte.gz is missing; "
                       r"apt-get install dataset-fashion-mnist\.$"):
        idx.write_fashion_mnist_folder(tmp_path / "folder", tmp_path)
