"""Image folders on disk: the `<split>/<class>/<image>` layout, its listing and archives.

Both folder sources read this layout: `datasets.load_image_folder` (splits
`train/` and `test/`) and `imagenet.load_imagenet_folder` (`train/` and
`val/`), and `validation` checks the same files they read.
"""

import pathlib
import tarfile

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif")
ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar")


class DatasetUnavailableError(RuntimeError):
    """Raised when a dataset is neither prepared locally nor obtainable."""
# Where archives are extracted and image-folder checks are remembered.
DEFAULT_CACHE_DIR = pathlib.Path.home() / ".cache" / "kerasdistill"


def extract_archive(archive, cache_dir=None):
    """Extracts a `.tar.gz` image-folder archive once and returns its root.

    Args:
        archive: Path of the archive (holding one `train/` folder).
        cache_dir: Where it is extracted (default `~/.cache/kerasdistill`).

    Returns:
        The folder holding `train/` (and `test/` or `val/`).

    Raises:
        DatasetUnavailableError: When the archive holds no or several `train/` folders.
    """
    archive = pathlib.Path(archive)
    cache_dir = cache_dir or DEFAULT_CACHE_DIR
    target = pathlib.Path(cache_dir) / archive.name.split(".")[0]
    marker = target / ".extracted"
    if not marker.exists():
        target.mkdir(parents=True, exist_ok=True)
        with tarfile.open(archive) as tar:
            tar.extractall(target, filter="data")
        marker.touch()
    roots = [p for p in target.rglob("train") if p.is_dir()]
    if len(roots) != 1:
        raise DatasetUnavailableError(
            f"Archive {archive} must contain exactly one train/ folder; found {len(roots)}."
        )
    return roots[0].parent


def folder_of(path, cache_dir=None):
    """The dataset folder at `path`, extracting it first when `path` is an archive.

    Args:
        path: A folder, or a `.tar.gz` / `.tgz` / `.tar` archive of one.
        cache_dir: Where archives are extracted (default `~/.cache/kerasdistill`).

    Returns:
        The folder, a `pathlib.Path`.

    Raises:
        DatasetUnavailableError: When `path` is a file but not an archive.
    """
    path = pathlib.Path(path).expanduser()
    if path.is_file():
        if not path.name.endswith(ARCHIVE_SUFFIXES):
            raise DatasetUnavailableError(f"{path} is a file but not a .tar.gz/.tar archive.")
        path = extract_archive(path, cache_dir)
    return path


def list_split(root, split, class_names=None):
    """The image files of `<root>/<split>/<class>/*` and their labels.

    Args:
        root: The dataset folder.
        split: The split's folder name (`"train"`, `"test"`, `"val"`).
        class_names: The classes, in label order (default: the split's sorted
            class folders). Class folders not listed are left out.

    Returns:
        `(class_names, paths, labels)`: paths (strings) sorted by class, then
        file name, and their int labels.

    Raises:
        DatasetUnavailableError: When the split's folder is missing or holds
            no image in any class folder.
    """
    folder = pathlib.Path(root) / split
    if not folder.is_dir():
        raise DatasetUnavailableError(
            f"{folder} does not exist; expected images in {root}/{split}/<class>/*."
        )
    if class_names is None:
        class_names = sorted(p.name for p in folder.iterdir() if p.is_dir())
    paths, labels = [], []
    for label, class_name in enumerate(class_names):
        files = sorted(
            str(p)
            for p in (folder / class_name).glob("*")
            if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
        )
        paths += files
        labels += [label] * len(files)
    if not paths:
        raise DatasetUnavailableError(
            f"The {split} split {folder} holds no image ({', '.join(IMAGE_EXTENSIONS)}) in any "
            "class folder."
        )
    return class_names, paths, labels
