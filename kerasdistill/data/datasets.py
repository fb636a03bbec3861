"""Dataset sources: CIFAR-10/100 through tensorflow-datasets and image folders.

Every source returns a `Dataset`: unbatched `(uint8 image, int64 label)` splits
plus what the input pipeline and the methods need (class count, sizes,
normalization statistics).
"""

import dataclasses
import os
import pathlib

import numpy as np
import tensorflow as tf

from kerasdistill.data.folders import DatasetUnavailableError, folder_of, list_split
from kerasdistill.data.stats import CIFAR_STATS

_CIFAR_ARCHIVES = {
    "cifar100": "cifar-100-binary.tar.gz",
    "cifar10": "cifar-10-binary.tar.gz",
}
# The training and evaluation split folders of an image folder.
FOLDER_SPLITS = ("train", "test")


@dataclasses.dataclass
class Dataset:
    """A classification dataset with unbatched `(image, label)` splits.

    Attributes:
        train: `tf.data.Dataset` of `(uint8 HWC image, int64 label)`, or of
            `(encoded image string, int64 label)` for ImageNet (decoded by
            `imagenet_train_pipeline` / `imagenet_eval_pipeline`), in a fixed
            order (the position of an example is its dataset index).
        test: Same for the evaluation split.
        num_classes: Number of classes.
        num_train: Number of training examples.
        mean: Per-channel mean over [0, 1] pixels.
        std: Per-channel standard deviation over [0, 1] pixels.
        name: A short name for logs.
    """

    train: tf.data.Dataset
    test: tf.data.Dataset
    num_classes: int
    num_train: int
    mean: tuple
    std: tuple
    name: str

    def train_labels(self):
        """Returns the labels of the training split in index order, as int64 numpy."""
        labels = self.train.map(lambda image, label: label).batch(4096)
        return np.concatenate([batch.numpy() for batch in labels])


def _count(ds):
    """Number of examples of a dataset, counting only when it is not known."""
    count = int(ds.cardinality())
    if count < 0:
        count = int(ds.reduce(0, lambda total, _: total + 1))
    return count


def load_cifar(name, data_dir=None, download=False):
    """Loads CIFAR-10 or CIFAR-100 through tensorflow-datasets.

    Never waits on the network unless asked: with `download=False` a missing
    dataset fails at once, unless the official binary archive has been placed
    in `<data_dir>/downloads/manual/`, from which tfds builds it offline.

    Args:
        name: `"cifar10"` or `"cifar100"`.
        data_dir: tfds data directory (default: tfds's, `~/tensorflow_datasets`).
        download: Allow tfds to download the archive.

    Returns:
        A `Dataset`.

    Raises:
        DatasetUnavailableError: With instructions, when the data is missing.
    """
    import tensorflow_datasets as tfds

    if name not in CIFAR_STATS:
        raise ValueError(f"Unknown CIFAR dataset {name!r}; expected one of {sorted(CIFAR_STATS)}.")
    data_dir = os.path.expanduser(data_dir or tfds.core.constants.DATA_DIR)
    manual = pathlib.Path(data_dir, "downloads", "manual", _CIFAR_ARCHIVES[name])

    def unavailable():
        if download or manual.exists():
            return None
        return (
            f"{name} is not prepared in data_dir={data_dir!r} and downloads are off. "
            f"Either place the official archive {_CIFAR_ARCHIVES[name]} in "
            f"{manual.parent}/ (tfds then builds it offline), point --data_dir at a "
            f"directory where tfds already prepared {name}, or allow downloading "
            f"(--download)."
        )

    mean, std = CIFAR_STATS[name]
    return load_tfds(name, ("train", "test"), data_dir, unavailable, mean, std)


def load_tfds(name, splits, data_dir, unavailable, mean, std, **load_kwargs):
    """Loads a tensorflow-datasets dataset, preparing it only when allowed.

    Args:
        name: tfds name.
        splits: Names of the training and the evaluation split.
        data_dir: tfds data directory.
        unavailable: Called when the dataset is not prepared; returns why it
            cannot be prepared now (a message), or `None` to let tfds prepare it.
        mean: Per-channel mean over [0, 1] pixels, for normalization.
        std: Per-channel standard deviation over [0, 1] pixels.
        **load_kwargs: More `tfds.load` arguments (decoders, download config).

    Returns:
        A `Dataset`.

    Raises:
        DatasetUnavailableError: With the message of `unavailable`.
    """
    import tensorflow_datasets as tfds

    def tfds_load(prepare):
        return tfds.load(
            name,
            split=list(splits),
            data_dir=data_dir,
            as_supervised=True,
            with_info=True,
            shuffle_files=False,
            download=prepare,
            **load_kwargs,
        )

    try:
        loaded, info = tfds_load(False)
    except (tfds.core.DatasetNotFoundError, AssertionError) as error:
        # tfds raises either, depending on how far it got, when nothing is prepared.
        reason = unavailable()
        if reason is not None:
            raise DatasetUnavailableError(reason) from error
        loaded, info = tfds_load(True)
    return Dataset(
        train=loaded[0],
        test=loaded[1],
        num_classes=info.features["label"].num_classes,
        num_train=_count(loaded[0]),
        mean=mean,
        std=std,
        name=name,
    )


def _decode_split(paths, labels):
    def decode(path, label):
        image = tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)
        return image, label

    ds = tf.data.Dataset.from_tensor_slices((paths, np.asarray(labels, np.int64)))
    return ds.map(decode, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


def _channel_stats(ds):
    """Per-channel mean and std over [0, 1] pixels of an image dataset."""
    total = np.zeros(3)
    total_sq = np.zeros(3)
    count = 0
    for images in ds.map(lambda image, label: image).batch(1024):
        pixels = images.numpy().reshape(-1, 3).astype(np.float64) / 255.0
        total += pixels.sum(0)
        total_sq += (pixels**2).sum(0)
        count += len(pixels)
    mean = total / count
    std = np.sqrt(total_sq / count - mean**2)
    return tuple(float(v) for v in mean), tuple(float(v) for v in std)


def load_image_folder(path, cache_dir=None):
    """Loads an image-folder dataset laid out as `train/<class>/*` and `test/<class>/*`.

    Class labels are the sorted class folder names. Normalization statistics
    are measured on the training split.

    Args:
        path: The folder, or a `.tar.gz` archive of it (extracted once under
            `cache_dir`).
        cache_dir: Where archives are extracted (default
            `~/.cache/kerasdistill`).

    Returns:
        A `Dataset` whose splits are decoded and cached in memory.

    Raises:
        DatasetUnavailableError: When the folder or archive is missing or empty.
    """
    path = pathlib.Path(path).expanduser()
    if not path.exists():
        raise DatasetUnavailableError(
            f"Dataset path {path} does not exist. Pass a folder with train/<class>/* and "
            f"test/<class>/* images (or a .tar.gz of one), or --dataset=cifar10|cifar100."
        )
    path = folder_of(path, cache_dir)
    class_names, train_paths, train_labels = list_split(path, FOLDER_SPLITS[0])
    _, test_paths, test_labels = list_split(path, FOLDER_SPLITS[1], class_names)
    train = _decode_split(train_paths, train_labels).cache()
    test = _decode_split(test_paths, test_labels).cache()
    mean, std = _channel_stats(train)
    return Dataset(
        train=train,
        test=test,
        num_classes=len(class_names),
        num_train=len(train_paths),
        mean=mean,
        std=std,
        name=path.name,
    )
