"""Image-folder checks: undecodable files found, and the check remembered for unchanged files."""

import numpy as np
import pytest
import tensorflow as tf

from kerasdistill.data import DatasetUnavailableError, validation


def _folder(root):
    """`train/` and `test/` with one class of two PNGs each; `train/a/1.png` is corrupt."""
    for split in ("train", "test"):
        folder = root / split / "a"
        folder.mkdir(parents=True)
        for i in range(2):
            image = np.full((4, 4, 3), 10 * i, np.uint8)
            tf.io.write_file(str(folder / f"{i}.png"), tf.io.encode_png(image))
    (root / "train" / "a" / "1.png").write_bytes(b"not a png")
    return root


def test_the_check_names_the_corrupt_file_and_is_remembered(tmp_path, monkeypatch):
    root, cache = _folder(tmp_path / "data"), tmp_path / "cache"
    corrupt = [str(root / "train" / "a" / "1.png")]
    assert validation.check_image_folder(root, cache_dir=cache) == corrupt
    assert len(list((cache / "image_checks").glob("*.json"))) == 1

    def no_decoding(paths):
        raise AssertionError("decoded again")

    monkeypatch.setattr(validation, "undecodable_images", no_decoding)
    assert validation.check_image_folder(root, cache_dir=cache) == corrupt


def test_a_changed_file_is_checked_again(tmp_path, monkeypatch):
    root, cache = _folder(tmp_path / "data"), tmp_path / "cache"
    validation.check_image_folder(root, cache_dir=cache)
    bad = root / "train" / "a" / "1.png"
    tf.io.write_file(str(bad), tf.io.encode_png(np.zeros((4, 4, 3), np.uint8)))
    decoded = []
    decode = validation.undecodable_images
    monkeypatch.setattr(
        validation, "undecodable_images", lambda paths: decoded.append(len(paths)) or decode(paths)
    )
    assert validation.check_image_folder(root, cache_dir=cache) == []
    assert decoded == [4]
    assert validation.check_image_folder(root, cache_dir=None) == []
    assert decoded == [4, 4]  # Without a cache every check decodes.


def test_a_missing_split_is_refused(tmp_path):
    root = _folder(tmp_path / "data")
    with pytest.raises(DatasetUnavailableError) as error:
        validation.check_image_folder(root, splits=("train", "val"), cache_dir=None)
    assert str(root / "val") in str(error.value)
