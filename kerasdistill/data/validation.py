"""Checks of an image-folder dataset before training: layout, classes, decodable files."""

import os
import pathlib
import shutil

import numpy as np
import tensorflow as tf

from kerasdistill.data.datasets import IMAGE_EXTENSIONS

SPLITS = ("train", "test")


def _images(split_folder):
    """The image files of a split, `<split>/<class>/<file>`, as the folder loader reads them."""
    return sorted(
        p for p in split_folder.glob("*/*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
    )


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


def check_image_folder(root):
    """Checks an image-folder dataset laid out as `train/<class>/*` and `test/<class>/*`.

    Args:
        root: The dataset folder.

    Returns:
        The list of image files that cannot be decoded (empty when all can).

    Raises:
        ValueError: When a split is missing or holds no image, or a test class
            has no training folder.
    """
    root = pathlib.Path(root)
    classes = {}
    for split in SPLITS:
        folder = root / split
        if not folder.is_dir():
            raise ValueError(
                f"{folder} does not exist; expected {root}/train/<class>/* and "
                f"{root}/test/<class>/*."
            )
        classes[split] = sorted({p.parent.name for p in _images(folder)})
        if not classes[split]:
            raise ValueError(
                f"The {split} split {folder} holds no image ({', '.join(IMAGE_EXTENSIONS)}) in "
                "any class folder."
            )
    unknown = sorted(set(classes["test"]) - set(classes["train"]))
    if unknown:
        raise ValueError(
            f"Class folder(s) {', '.join(unknown)} of {root / 'test'} have no training images "
            f"in {root / 'train'}; every test class must be a training class."
        )
    return undecodable_images([p for split in SPLITS for p in _images(root / split)])


def without_files(root, excluded, target):
    """Mirrors the folder `root` under `target` with symbolic links, leaving out `excluded`.

    Args:
        root: The dataset folder.
        excluded: Files under `root` to leave out.
        target: The mirror folder; replaced if it exists.

    Returns:
        `target` as a `pathlib.Path`.
    """
    root, target = pathlib.Path(root).resolve(), pathlib.Path(target)
    excluded = {pathlib.Path(p).resolve() for p in excluded}
    shutil.rmtree(target, ignore_errors=True)
    for split in SPLITS:
        for path in _images(root / split):
            if path.resolve() in excluded:
                continue
            link = target / path.relative_to(root)
            link.parent.mkdir(parents=True, exist_ok=True)
            os.symlink(path.resolve(), link)
    return target
