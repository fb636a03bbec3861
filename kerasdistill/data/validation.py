"""Checks of an image-folder dataset before training: layout, classes, decodable files.

Both folder layouts are checked alike: `train/` and `test/`
(`datasets.FOLDER_SPLITS`, the CIFAR-style folders) and `train/` and `val/`
(`imagenet.FOLDER_SPLITS`), each `<split>/<class>/<image>`; the files checked
are the ones the loaders read (`folders.list_split`).
"""

import hashlib
import json
import os
import pathlib
import shutil

import numpy as np
import tensorflow as tf

from kerasdistill.data.datasets import FOLDER_SPLITS
from kerasdistill.data.folders import DEFAULT_CACHE_DIR, list_split


def _files(root, split):
    """The image files of `<root>/<split>/<class>/*` and their class names."""
    class_names, paths, labels = list_split(root, split)
    return paths, [class_names[label] for label in labels]


def undecodable_images(paths):
    """Returns the paths among `paths` that TensorFlow cannot read or decode as an image.

    Args:
        paths: Image file paths.

    Returns:
        The list of bad paths, in input order.
    """
    paths = [str(p) for p in paths]
    if not paths:
        return []

    def decode(index, path):
        image = tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)
        return index, tf.shape(image)[0]

    ds = tf.data.Dataset.from_tensor_slices((np.arange(len(paths)), paths))
    ds = ds.map(decode, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    ds = ds.ignore_errors().map(lambda index, height: index).batch(4096)
    good = np.zeros(len(paths), bool)
    for indices in ds:
        good[indices.numpy()] = True
    return [p for p, ok in zip(paths, good) if not ok]


def _listing_digest(paths):
    """A digest of the files' paths, sizes and modification times."""
    digest = hashlib.sha256()
    for path in paths:
        stat = os.stat(path)
        digest.update(f"{os.path.abspath(path)}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def undecodable_images_cached(paths, cache_dir=DEFAULT_CACHE_DIR):
    """`undecodable_images(paths)`, remembered for files that did not change.

    Decoding every image of a large folder takes minutes (ImageNet's 1.28M
    photos), so the result is stored under `cache_dir/image_checks/`, keyed
    by each file's path, size and modification time: a later run or a resume
    on the same files reads it back; any added, removed or rewritten file
    makes a new check.

    Args:
        paths: Image file paths.
        cache_dir: The cache folder, or `None` to always decode.

    Returns:
        The list of bad paths, in input order.
    """
    if cache_dir is None:
        return undecodable_images(paths)
    record = pathlib.Path(cache_dir) / "image_checks" / f"{_listing_digest(paths)}.json"
    if record.is_file():
        return json.loads(record.read_text())["undecodable"]
    bad = undecodable_images(paths)
    record.parent.mkdir(parents=True, exist_ok=True)
    scratch = record.with_suffix(f".{os.getpid()}.tmp")
    scratch.write_text(json.dumps({"files": len(paths), "undecodable": bad}))
    os.replace(scratch, record)
    return bad


def check_image_folder(root, splits=FOLDER_SPLITS, cache_dir=DEFAULT_CACHE_DIR):
    """Checks an image-folder dataset laid out as `<split>/<class>/*` for both `splits`.

    Args:
        root: The dataset folder.
        splits: Its training and evaluation split folders: `("train", "test")`
            (default) or ImageNet's `("train", "val")`.
        cache_dir: Where the decode check of unchanged files is remembered
            (see `undecodable_images_cached`); `None` decodes every time.

    Returns:
        The list of image files that cannot be decoded (empty when all can).

    Raises:
        DatasetUnavailableError: When a split is missing or holds no image.
        ValueError: When an evaluation class has no training images.
    """
    root = pathlib.Path(root)
    train_split, eval_split = splits
    train_files, train_classes = _files(root, train_split)
    eval_files, eval_classes = _files(root, eval_split)
    unknown = sorted(set(eval_classes) - set(train_classes))
    if unknown:
        raise ValueError(
            f"Class folder(s) {', '.join(unknown)} of {root / eval_split} have no training "
            f"images in {root / train_split}; every {eval_split} class must be a training class."
        )
    return undecodable_images_cached(train_files + eval_files, cache_dir)


def without_files(root, excluded, target, splits=FOLDER_SPLITS):
    """Mirrors the folder `root` under `target` with symbolic links, leaving out `excluded`.

    Args:
        root: The dataset folder.
        excluded: Files under `root` to leave out.
        target: The mirror folder; replaced if it exists.
        splits: The split folders to mirror, as `check_image_folder`.

    Returns:
        `target` as a `pathlib.Path`.
    """
    root, target = pathlib.Path(root).resolve(), pathlib.Path(target)
    excluded = {pathlib.Path(p).resolve() for p in excluded}
    shutil.rmtree(target, ignore_errors=True)
    for split in splits:
        for path in map(pathlib.Path, _files(root, split)[0]):
            if path.resolve() in excluded:
                continue
            link = target / path.relative_to(root)
            link.parent.mkdir(parents=True, exist_ok=True)
            os.symlink(path.resolve(), link)
    return target
