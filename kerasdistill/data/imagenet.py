"""ImageNet-1k (ILSVRC-2012): sources, input pipelines and the top-5 metric.

Two sources, both returning a `Dataset` whose splits hold the *encoded* photos
(`(scalar string, int64 label)`; labels are the sorted-wnid class indices,
n01440764 -> 0):

- `load_imagenet`: tensorflow-datasets' `imagenet2012`, built offline from
  the user's own ILSVRC-2012 archives;
- `load_imagenet_folder`: an image folder of the ILSVRC layout
  (`train/<wnid>/*.JPEG`, `val/<wnid>/*.JPEG`), or a `.tar.gz` of one.

The photos are decoded, cropped and normalized per batch by
`imagenet_train_pipeline` and `imagenet_eval_pipeline` (torchvision's
reference augmentation, see `imagenet_augment`). With `normalize=False` both
yield uint8 images instead, about a quarter of the bytes and cheaper to make;
the models then normalize them themselves, with `normalization_layer()` as
their first layer (on the accelerator).
"""

import functools
import os
import pathlib

import keras
import numpy as np
import tensorflow as tf

from kerasdistill.data.augment import normalization_layer  # noqa: F401 - for `normalize=False`.
from kerasdistill.data.augment import normalize as normalize_image
from kerasdistill.data.datasets import Dataset, load_tfds
from kerasdistill.data.folders import DatasetUnavailableError, folder_of, list_split
from kerasdistill.data.imagenet_augment import random_resized_crop_flip, resize_center_crop
from kerasdistill.data.pipeline import augmented_batches, reshuffled
from kerasdistill.data.stats import IMAGENET_MEAN, IMAGENET_STD

IMAGE_SIZE = 224
RESIZE_SIZE = 256
IMAGENET_ARCHIVES = ("ILSVRC2012_img_train.tar", "ILSVRC2012_img_val.tar")
# The training and evaluation split folders of an ImageNet image folder.
FOLDER_SPLITS = ("train", "val")
# Seed of the fixed order of an image folder's training split (see load_imagenet_folder).
_FOLDER_ORDER_SEED = 0


def load_imagenet(data_dir=None, manual_dir=None):
    """Loads ImageNet-1k through tensorflow-datasets' `imagenet2012`, offline.

    When tfds has not prepared `imagenet2012` in `data_dir` yet, it is built
    from `ILSVRC2012_img_train.tar` and `ILSVRC2012_img_val.tar` (from
    https://image-net.org/download-images) in `manual_dir` (a one-time job of
    hours that writes about 150 GB); nothing is downloaded. When an archive is
    missing, this fails at once.

    Args:
        data_dir: tfds data directory (default: tfds's, `~/tensorflow_datasets`).
        manual_dir: Folder of the two archives (default
            `<data_dir>/downloads/manual`).

    Returns:
        A `Dataset` of encoded JPEGs: `train` is the 1,281,167 training
        photos in tfds's fixed order, `test` the 50,000 validation photos.

    Raises:
        DatasetUnavailableError: Naming the missing archives and where they go.
    """
    import tensorflow_datasets as tfds

    data_dir = os.path.expanduser(data_dir or tfds.core.constants.DATA_DIR)
    manual_dir = pathlib.Path(manual_dir or pathlib.Path(data_dir, "downloads", "manual"))
    manual_dir = manual_dir.expanduser()

    def unavailable():
        missing = [name for name in IMAGENET_ARCHIVES if not (manual_dir / name).exists()]
        if not missing:
            return None
        return (
            f"imagenet2012 is not prepared in data_dir={data_dir!r} and "
            f"{' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} missing: "
            f"place {' and '.join(IMAGENET_ARCHIVES)} (from "
            f"https://image-net.org/download-images) in {manual_dir}/ and tfds builds "
            f"it offline, or pass the data_dir where tfds already prepared it."
        )

    return load_tfds(
        "imagenet2012",
        ("train", "validation"),
        data_dir,
        unavailable,
        IMAGENET_MEAN,
        IMAGENET_STD,
        decoders={"image": tfds.decode.SkipDecoding()},
        download_and_prepare_kwargs={
            "download_config": tfds.download.DownloadConfig(manual_dir=str(manual_dir))
        },
    )


def _read_split(paths, labels):
    ds = tf.data.Dataset.from_tensor_slices((paths, np.asarray(labels, np.int64)))
    return ds.map(
        lambda path, label: (tf.io.read_file(path), label),
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True,
    )


def load_imagenet_folder(path, cache_dir=None):
    """Loads an ImageNet image folder: `train/<wnid>/*.JPEG` and `val/<wnid>/*.JPEG`.

    Labels are the indices of the sorted `train/` class folders (with all
    1,000 wnids, the standard ImageNet-1k indices). Files are read lazily
    and kept encoded. The training split is put in a fixed pseudo-random
    order (the position of a photo is its dataset index), so that a shuffle
    buffer mixes classes; the validation split stays sorted.

    Args:
        path: The folder, or a `.tar.gz` archive of it (extracted once under
            `cache_dir`).
        cache_dir: Where archives are extracted (default
            `~/.cache/kerasdistill`).

    Returns:
        A `Dataset` of encoded images, with ImageNet's normalization statistics.

    Raises:
        DatasetUnavailableError: When the path, `train/` or `val/` is missing
            or holds no images.
    """
    path = folder_of(path, cache_dir)
    if not all((path / split).is_dir() for split in FOLDER_SPLITS):
        raise DatasetUnavailableError(
            f"ImageNet folder {path} must hold train/<wnid>/*.JPEG and val/<wnid>/*.JPEG "
            f"(or be a .tar.gz of such a folder)."
        )
    class_names, train_paths, train_labels = list_split(path, FOLDER_SPLITS[0])
    _, val_paths, val_labels = list_split(path, FOLDER_SPLITS[1], class_names)
    order = np.random.default_rng(_FOLDER_ORDER_SEED).permutation(len(train_paths))
    return Dataset(
        train=_read_split(np.asarray(train_paths)[order], np.asarray(train_labels)[order]),
        test=_read_split(val_paths, val_labels),
        num_classes=len(class_names),
        num_train=len(train_paths),
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        name=path.name,
    )


def _check_encoded(dataset):
    spec = dataset.train.element_spec[0]
    if spec.dtype != tf.string:
        raise ValueError(
            f"ImageNet pipelines take a Dataset of encoded images (tf.string); {dataset.name} "
            f"holds {spec.dtype.name} images: use data.train_pipeline / data.eval_pipeline."
        )


def _with_threads(ds, threads):
    """Runs `ds` on its own pool of `threads` threads, when given."""
    if threads is None:
        return ds
    options = tf.data.Options()
    options.threading.private_threadpool_size = threads
    options.threading.max_intra_op_parallelism = 1
    return ds.with_options(options)


def imagenet_train_pipeline(
    dataset,
    batch_size=256,
    with_index=False,
    seed=None,
    shuffle_buffer=10_000,
    num_parallel_calls=tf.data.AUTOTUNE,
    threads=None,
    image_size=IMAGE_SIZE,
    resize="area",
    normalize=True,
):
    """Shuffled training batches: random-resized crop, flip, normalization.

    The shuffle buffer holds encoded photos (about 110 kB each for ImageNet);
    each is then decoded inside its random window only. Crops and flips are
    drawn from per-example stateless seeds, new each epoch.

    Args:
        dataset: A `Dataset` of encoded images (`load_imagenet`,
            `load_imagenet_folder`).
        batch_size: Batch size; the last partial batch is dropped.
        with_index: Yield `({"image": x, "index": i}, y)` with each example's
            dataset index (needed by CRD) instead of `(x, y)`.
        seed: Shuffle and augmentation seed.
        shuffle_buffer: Examples in the shuffle buffer.
        num_parallel_calls: Examples decoded in parallel (default autotuned).
        threads: Size of a private tf.data thread pool (default: the shared one).
        image_size: Output height and width.
        resize: How the crop window is resized to `image_size`: `"area"`
            (default; an area average where the window shrinks, bilinear
            where it grows) or `"bilinear"` (antialiased, as PIL and
            torchvision; about half as fast). See
            `imagenet_augment.resize_window`. The crops and flips drawn are
            the same.
        normalize: When False, the images are uint8 (0-255), not normalized:
            the models must start with `normalization_layer(dataset.mean,
            dataset.std)`.

    Returns:
        A `tf.data.Dataset` of float32 `(batch_size, image_size, image_size, 3)`
        images (uint8 with `normalize=False`), or the dict above, and int64
        labels, reshuffled every epoch.
    """
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}.")
    if shuffle_buffer <= 0:
        raise ValueError(f"shuffle_buffer must be positive, got {shuffle_buffer}.")
    _check_encoded(dataset)
    augment = functools.partial(
        random_resized_crop_flip,
        size=image_size,
        resize=resize,
        # Normalizing the unrounded resize skips a round trip through uint8.
        dtype=tf.float32 if normalize else tf.uint8,
    )
    ds = augmented_batches(
        reshuffled(dataset.train.enumerate(), shuffle_buffer, seed),
        dataset,
        augment,
        batch_size,
        with_index,
        normalize_images=normalize,
        num_parallel_calls=num_parallel_calls,
    )
    return _with_threads(ds, threads)


def imagenet_eval_pipeline(
    dataset,
    batch_size=256,
    split="test",
    num_parallel_calls=tf.data.AUTOTUNE,
    threads=None,
    image_size=IMAGE_SIZE,
    resize_size=RESIZE_SIZE,
    normalize=True,
):
    """Evaluation batches in dataset order: resize, center crop, normalization.

    Args:
        dataset: A `Dataset` of encoded images.
        batch_size: Batch size.
        split: `"test"` (ImageNet's validation set) or `"train"`.
        num_parallel_calls: Examples decoded in parallel (default autotuned).
        threads: Size of a private tf.data thread pool (default: the shared one).
        image_size: Output height and width (the center crop).
        resize_size: Short side after resizing, before the center crop.
        normalize: When False, the images are uint8 (0-255), not normalized,
            as `imagenet_train_pipeline(normalize=False)`.

    Returns:
        A `tf.data.Dataset` of float32 `(batch, image_size, image_size, 3)`
        images (uint8 with `normalize=False`) and int64 labels.
    """
    if split not in ("test", "train"):
        raise ValueError(f"split must be 'test' or 'train', got {split!r}.")
    _check_encoded(dataset)

    def prepare(encoded, label):
        image = resize_center_crop(encoded, size=image_size, resize=resize_size)
        if normalize:
            image = normalize_image(image, dataset.mean, dataset.std)
        return image, label

    ds = getattr(dataset, split).map(prepare, num_parallel_calls=num_parallel_calls)
    return _with_threads(ds.batch(batch_size).prefetch(tf.data.AUTOTUNE), threads)


def top5_accuracy():
    """The top-5 accuracy metric of ImageNet reports, named `top5`.

    Returns:
        A `keras.metrics.SparseTopKCategoricalAccuracy(k=5)` for integer labels
        and logits, e.g. `compile(metrics=["accuracy", data.top5_accuracy()])`.
    """
    return keras.metrics.SparseTopKCategoricalAccuracy(k=5, name="top5")
