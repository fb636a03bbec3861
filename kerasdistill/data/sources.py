"""`load`: any dataset of the library by name or path, over `datasets` and `imagenet`."""

from kerasdistill.data.datasets import CIFAR_STATS, load_cifar, load_image_folder
from kerasdistill.data.imagenet import load_imagenet


def load(name_or_path, data_dir=None, download=False, cache_dir=None):
    """Loads `cifar10`, `cifar100`, `imagenet2012` or an image folder / archive by path.

    Args:
        name_or_path: `"cifar10"`, `"cifar100"`, `"imagenet2012"` (tfds, from
            the user's own archives) or a path.
        data_dir: tfds data directory for the named datasets.
        download: Allow tfds downloads.
        cache_dir: Extraction directory for archives.

    Returns:
        A `Dataset`.
    """
    if name_or_path in CIFAR_STATS:
        return load_cifar(name_or_path, data_dir=data_dir, download=download)
    if name_or_path == "imagenet2012":
        return load_imagenet(data_dir=data_dir)
    return load_image_folder(name_or_path, cache_dir=cache_dir)
