"""The input pipeline of a run, and its dataset: the one place that tells ImageNet from CIFAR.

`--input_pipeline=cifar` feeds 32x32 images with the pad-4 crop and flip of
`kerasdistill.data` and scores top-1; `--input_pipeline=imagenet` feeds encoded
photos through the random-resized crop at 224 (resize 256 and center crop 224
for evaluation) and scores top-1 and top-5. Everything else of a run asks the
`Pipeline` that `for_config` returns.

Both yield unnormalized images (pixel values in [0, 255]): the run's models
normalize them in their first layer (`trainer.build_models`).
"""

import dataclasses
import functools
import pathlib
import sys
from typing import Callable, Optional

from experiments.errors import UsageError

# The CIFAR pipeline's pad-4 random crop (kerasdistill.data.augment) keeps 32x32 images.
CIFAR_IMAGE_SIZE = 32


@dataclasses.dataclass(frozen=True)
class Pipeline:
    """How a run's images are read, augmented, evaluated and scored.

    Attributes:
        image_shape: `(height, width, channels)` the models receive.
        eval_batches: `Dataset -> tf.data` batches of the test split, unnormalized.
        augment: The training batches' augmentation for `epoch_pipeline`
            (None: `epoch_pipeline`'s own, CIFAR's).
        shuffle_buffer: `epoch_pipeline`'s shuffle buffer.
        top5: Whether top-5 accuracy is reported besides top-1.
        load_folder: Loads a folder dataset of this pipeline's layout (None:
            `kerasdistill.data.load`'s `train/` / `test/` folders).
        folder_splits: The training and evaluation split folders of that
            layout (`<split>/<class>/<image>`), checked before loading.
    """

    image_shape: tuple
    eval_batches: Callable
    augment: Optional[Callable] = None
    shuffle_buffer: int = 50_000
    top5: bool = False
    load_folder: Optional[Callable] = None
    folder_splits: tuple = ("train", "test")


def for_config(config):
    """The `Pipeline` of `config.input_pipeline`."""
    from kerasdistill import data

    if config.input_pipeline == "imagenet":
        from kerasdistill.data.imagenet import FOLDER_SPLITS, IMAGE_SIZE, load_imagenet_folder
        from kerasdistill.data.imagenet_augment import random_resized_crop_flip

        return Pipeline(
            image_shape=(IMAGE_SIZE, IMAGE_SIZE, 3),
            eval_batches=functools.partial(data.imagenet_eval_pipeline, normalize=False),
            augment=random_resized_crop_flip, shuffle_buffer=10_000, top5=True,
            load_folder=load_imagenet_folder, folder_splits=FOLDER_SPLITS,
        )
    return Pipeline(image_shape=(CIFAR_IMAGE_SIZE, CIFAR_IMAGE_SIZE, 3),
                    eval_batches=functools.partial(data.eval_pipeline, normalize=False))


def load_dataset(config, output_dir, pipeline=None):
    """Checks and loads `config.dataset`; an image folder's undecodable files fail or are skipped.

    Image folders (or archives of them) of either layout, `train/` and `test/`
    or ImageNet's `train/` and `val/`, are checked before loading: with
    corrupt images the run fails naming the first, or, with
    `config.skip_corrupt_images`, trains on the others.

    Args:
        config: The run's `RunConfig`.
        output_dir: The run's output folder (where a folder without the
            corrupt images is mirrored).
        pipeline: The run's `Pipeline` (default `for_config(config)`).

    Returns:
        A `kerasdistill.data.Dataset`.

    Raises:
        UsageError: For a missing dataset, a bad folder layout or corrupt images:
            whatever `kerasdistill.data` documents it raises for them.
    """
    from kerasdistill import data
    from kerasdistill.data import folders

    pipeline = pipeline or for_config(config)
    source = config.dataset
    try:
        if pathlib.Path(source).is_file() and source.endswith(folders.ARCHIVE_SUFFIXES):
            source = str(folders.extract_archive(source))  # Extracted once, then a folder.
        if pathlib.Path(source).is_dir():
            source = _without_corrupt_images(source, config, output_dir, pipeline.folder_splits)
        if pipeline.load_folder is not None and source != "imagenet2012":
            return pipeline.load_folder(source)
        return data.load(source, data_dir=config.data_dir or None, download=config.download)
    except UsageError:
        raise
    except (data.DatasetUnavailableError, ValueError, OSError) as error:
        raise UsageError(f"--dataset={config.dataset!r}: {error}") from error


def _without_corrupt_images(folder, config, output_dir, splits):
    """`folder`, or a mirror of it without its undecodable images under `--skip_corrupt_images`.

    Args:
        folder: An image folder.
        config: The run's `RunConfig`.
        output_dir: Where the mirror is made.
        splits: The folder's training and evaluation split folders.

    Returns:
        The folder to load.

    Raises:
        UsageError: Naming the first undecodable image, without `--skip_corrupt_images`.
    """
    from kerasdistill.data import validation

    corrupt = validation.check_image_folder(folder, splits)
    if not corrupt:
        return folder
    if not config.skip_corrupt_images:
        raise UsageError(
            f"--dataset={config.dataset!r} holds {len(corrupt)} image(s) that cannot be decoded, "
            f"first {corrupt[0]}; fix or remove them, or pass --skip_corrupt_images."
        )
    print(f"warning: skipping {len(corrupt)} undecodable image(s), first {corrupt[0]}.",
          file=sys.stderr, flush=True)
    mirror = output_dir / "dataset_without_corrupt_images" / pathlib.Path(folder).name
    return str(validation.without_files(folder, corrupt, mirror, splits))
