"""IDX files (the MNIST format) and Fashion-MNIST as an image folder.

Debian's `dataset-fashion-mnist` package installs the four gzipped IDX files of
Fashion-MNIST (Xiao et al., 2017) in `/usr/share/datasets/fashion-mnist`.
`write_fashion_mnist_folder` writes them once as the `train/<class>/*.png`,
`test/<class>/*.png` folder that `kerasdistill.data.load` reads, each 28x28
image padded with black to 32x32 (the size of the CIFAR input pipeline). Needs
NumPy and Pillow, not TensorFlow.
"""

import gzip
import pathlib

import numpy as np

FASHION_MNIST_DIR = pathlib.Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_PACKAGE = "dataset-fashion-mnist"
# split -> (images, labels) file names.
FASHION_MNIST_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
# Class folders in label order; the index prefix keeps that order when sorted.
FASHION_MNIST_CLASSES = tuple(
    f"{i}_{name}" for i, name in enumerate((
        "tshirt_top", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker",
        "bag", "ankle_boot",
    ))
)
# IDX type codes (the third byte of the magic number) -> NumPy dtypes, big-endian.
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_COMPLETE = ".complete"


def read_idx(path):
    """Reads an IDX file (gzipped when its name ends in `.gz`).

    Args:
        path: The file.

    Returns:
        A NumPy array of the file's shape and type (uint8 for MNIST images).

    Raises:
        ValueError: When the file is not an IDX file or its size disagrees with its header.
    """
    path = pathlib.Path(path)
    data = (gzip.open if path.name.endswith(".gz") else open)(path, "rb").read()
    if len(data) < 4 or data[:2] != b"\0\0" or data[2] not in _IDX_DTYPES:
        raise ValueError(f"{path} is not an IDX file (magic number {data[:4].hex()}).")
    ndim = data[3]
    shape = tuple(int(d) for d in np.frombuffer(data, ">u4", count=ndim, offset=4))
    dtype = np.dtype(_IDX_DTYPES[data[2]])
    body = data[4 + 4 * ndim:]
    if len(body) != int(np.prod(shape)) * dtype.itemsize:
        raise ValueError(
            f"{path}: the header's shape {shape} needs {int(np.prod(shape)) * dtype.itemsize} "
            f"bytes of data, the file has {len(body)}."
        )
    return np.frombuffer(body, dtype).reshape(shape).astype(dtype.newbyteorder("="))


def missing_fashion_mnist_files(source=FASHION_MNIST_DIR):
    """The Fashion-MNIST files missing from `source` (a list of paths; empty when all are there)."""
    source = pathlib.Path(source)
    return [source / name for pair in FASHION_MNIST_FILES.values() for name in pair
            if not (source / name).is_file()]


def write_fashion_mnist_folder(target, source=FASHION_MNIST_DIR, size=32):
    """Writes Fashion-MNIST as `target/{train,test}/<class>/<index>.png`, once.

    Args:
        target: The folder to write (left as it is when a previous call completed it).
        source: The folder of the four IDX files.
        size: Side of the written images; the 28x28 images are padded with black
            to it, centred.

    Returns:
        `target`, a `pathlib.Path`.

    Raises:
        FileNotFoundError: When a file is missing from `source`, naming the package.
    """
    from PIL import Image

    target = pathlib.Path(target)
    if (target / _COMPLETE).exists():
        return target
    missing = missing_fashion_mnist_files(source)
    if missing:
        raise FileNotFoundError(
            f"Fashion-MNIST: {missing[0]} is missing; apt-get install {FASHION_MNIST_PACKAGE}."
        )
    for split, (images_file, labels_file) in FASHION_MNIST_FILES.items():
        images = read_idx(pathlib.Path(source) / images_file)
        labels = read_idx(pathlib.Path(source) / labels_file)
        before = (size - images.shape[1]) // 2
        after = size - images.shape[1] - before
        padded = np.pad(images, ((0, 0), (before, after), (before, after)))
        for class_name in FASHION_MNIST_CLASSES:
            (target / split / class_name).mkdir(parents=True, exist_ok=True)
        for index, (image, label) in enumerate(zip(padded, labels)):
            path = target / split / FASHION_MNIST_CLASSES[label] / f"{index:05d}.png"
            Image.fromarray(image).save(path)
    (target / _COMPLETE).touch()
    return target
