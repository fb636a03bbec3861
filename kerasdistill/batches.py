"""Batches as the Distiller reads them: their keys, their split, and the first batch's checks.

A batch is `(x, y)` with `x` either the images or a dict holding them under
`IMAGE_KEY` and, for methods that need each sample's dataset index (CRD's
memory bank), the indices under `INDEX_KEY`; `y` holds class ids or one-hot
rows. The input pipelines (`kerasdistill.data`) build batches with these keys.

Each check raises a `ValueError` with one line naming the bad value and what
would be accepted, before any weight changes.
"""

import keras
import numpy as np

IMAGE_KEY = "image"
INDEX_KEY = "index"


def split_images(x, index_users=()):
    """Returns `(images, indices)` of a batch's `x`, checking its structure.

    Args:
        x: Images, or a dict with images under `IMAGE_KEY` and optionally
            dataset indices under `INDEX_KEY`.
        index_users: Names of the methods that need the indices; when not
            empty, a batch without indices is refused.

    Returns:
        `(images, indices)`, `indices` being `None` when `x` holds none.

    Raises:
        ValueError: For a dict without images, or indices missing for
            `index_users`.
    """
    if isinstance(x, dict):
        if IMAGE_KEY not in x:
            raise ValueError(
                f"Dict inputs must hold the images under {IMAGE_KEY!r} (and optionally dataset "
                f"indices under {INDEX_KEY!r}); got keys {sorted(x)}."
            )
        images, indices = x[IMAGE_KEY], x.get(INDEX_KEY)
    else:
        images, indices = x, None
    if index_users and indices is None:
        raise ValueError(
            f"Method {', '.join(index_users)} needs each sample's dataset index: give batches "
            f"({{{IMAGE_KEY!r}: images, {INDEX_KEY!r}: indices}}, labels), e.g. "
            "kerasdistill.data.train_pipeline(dataset, with_index=True)."
        )
    return images, indices


def refuse_sample_weights(name, value):
    """Raises for per-sample weights (`value` not `None`): distillation terms are batch-level.

    Args:
        name: `"sample_weight"` or `"class_weight"`, for the message.
        value: What was given.
    """
    if value is not None:
        raise ValueError(
            f"Distiller.fit does not apply {name}: distillation terms are computed over the "
            "batch, not per sample; resample or reweight the data instead."
        )


def first_batch(x, y):
    """The first batch `fit` will see, as NumPy, or `None` where it cannot be read ahead.

    Args:
        x: What `fit` was given: arrays (or a dict of arrays), or a
            `keras.utils.PyDataset`. A `tf.data.Dataset` or a generator is
            not read ahead: that would consume it or advance its random state
            (its structure is still checked when the step is traced).
        y: The labels given to `fit` with arrays.

    Returns:
        `(x, y, sample_weight)` of the first batch (all of it for arrays), or `None`.
    """
    if isinstance(x, keras.utils.PyDataset):
        batch = x[0]
    elif hasattr(x, "element_spec"):
        return None
    elif isinstance(x, (np.ndarray, dict)) or hasattr(x, "__array__"):
        batch = (x, y)
    else:
        return None
    batch = keras.tree.map_structure(np.asarray, batch)
    return keras.utils.unpack_x_y_sample_weight(batch)


def check_first_batch(x, y, taps, index_users=()):
    """Checks the first batch of `fit` before any weight changes.

    Args:
        x, y: The batch, as NumPy.
        taps: The Distiller's `kerasdistill.taps.FeaturePair`.
        index_users: Names of the methods that need dataset indices.

    Raises:
        ValueError: For the batch's structure, images, labels, or models
            whose outputs are already probabilities (`FeaturePair.check_logits`).
    """
    images, _ = split_images(x, index_users)
    check_images(images, taps.image_shape)
    check_labels(y, taps.num_classes)
    taps.check_logits(images[:8])


def check_images(images, expected_shape):
    """Checks a batch of images: its shape and that every value is finite.

    Args:
        images: An array `(batch, height, width, channels)`.
        expected_shape: `(height, width, channels)` the models take (`None`
            entries match any size), or `None`.

    Raises:
        ValueError: Naming the shape or the count of non-finite values.
    """
    images = np.asarray(images)
    if expected_shape is not None and (
        images.ndim != len(expected_shape) + 1
        or any(e is not None and e != s for e, s in zip(expected_shape, images.shape[1:]))
    ):
        raise ValueError(
            f"Input images have shape {images.shape}; the models take (batch, "
            f"{', '.join('any' if d is None else str(d) for d in expected_shape)})."
        )
    if np.issubdtype(images.dtype, np.floating):
        bad = ~np.isfinite(images)
        if bad.any():
            first = int(np.argwhere(bad.reshape(len(images), -1).any(axis=1))[0, 0])
            raise ValueError(
                f"Input images hold {int(bad.sum())} NaN or infinite values (first in image "
                f"{first} of the first batch); clean the data before training."
            )


def check_labels(labels, num_classes):
    """Checks labels: sparse class ids in `[0, num_classes)` or one-hot rows.

    Args:
        labels: An array of shape `(batch,)`, `(batch, 1)` or `(batch, num_classes)`.
        num_classes: The models' class count.

    Raises:
        ValueError: For missing labels, a shape that is neither sparse nor
            one-hot, non-integer ids or ids out of range.
    """
    if labels is None:
        raise ValueError("Distiller.fit needs labels: give (images, labels) batches or y=labels.")
    labels = np.asarray(labels)
    if labels.ndim == 2 and labels.shape[1] == num_classes and num_classes > 1:
        if (labels < 0).any() or not np.allclose(labels.sum(axis=1), 1.0, atol=1e-3):
            raise ValueError(
                f"Labels of shape {labels.shape} are read as one-hot (or soft) targets, but some "
                "rows are negative or do not sum to 1."
            )
        return
    if labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]
    if labels.ndim != 1:
        raise ValueError(
            f"Labels of shape {labels.shape} are neither class ids (batch,) nor one-hot "
            f"(batch, {num_classes}) for a {num_classes}-class model."
        )
    if labels.size and not np.all(np.equal(np.mod(labels, 1), 0)):
        raise ValueError(f"Class ids must be whole numbers; got values such as {labels[0]!r}.")
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(
            f"Class ids must be in [0, {num_classes}) for a {num_classes}-class model; got "
            f"values from {labels.min()} to {labels.max()}."
        )
