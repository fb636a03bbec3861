"""Checks of what a user hands the Distiller: its models, and the first batch of `fit`.

Each check raises a `ValueError` or `TypeError` with one line naming the bad
value and what would be accepted, before any weight changes.
"""

import keras
import numpy as np

from kerasdistill.batch_keys import IMAGE_KEY, INDEX_KEY


def check_models(teacher, student):
    """Checks that `teacher` and `student` are two distinct Keras models.

    Raises:
        TypeError: If either is not a `keras.Model`.
        ValueError: If they are the same object.
    """
    for role, model in (("teacher", teacher), ("student", student)):
        if not isinstance(model, keras.Model):
            hint = (
                " (load it first: keras.saving.load_model(path), kerasdistill.models.get(name) "
                "or a keras.applications constructor)"
                if isinstance(model, str)
                else ""
            )
            raise TypeError(
                f"The {role} must be a keras.Model (functional, Sequential, subclassed, "
                f"keras.applications or KerasHub); got {type(model).__name__} {model!r}{hint}."
            )
    if teacher is student:
        raise ValueError(
            f"The teacher and the student are the same model {teacher.name!r}; distil into a "
            "separate student (e.g. keras.models.clone_model(teacher) for self-distillation)."
        )


def image_shape(model):
    """The `(height, width, channels)` a model's inputs declare, or `None`."""
    try:
        inputs = model.inputs
    except (AttributeError, ValueError):
        return None
    if not inputs:
        return None
    return tuple(inputs[0].shape[1:])


def shared_image_shape(teacher, student):
    """The image shape both models take, from whichever declares it.

    Returns:
        `(height, width, channels)`, or `None` when neither model has inputs.

    Raises:
        ValueError: Naming both shapes when a known dimension differs.
    """
    teacher_shape, student_shape = image_shape(teacher), image_shape(student)
    if teacher_shape is not None and student_shape is not None and (
        len(teacher_shape) != len(student_shape)
        or any(
            t is not None and s is not None and t != s
            for t, s in zip(teacher_shape, student_shape)
        )
    ):
        raise ValueError(
            f"The teacher takes images of shape {teacher_shape} and the student {student_shape}; "
            "both must take the same images (rebuild one with the other's input_shape)."
        )
    return teacher_shape or student_shape


def check_class_counts(teacher_logits, student_logits):
    """Checks that the two models predict the same number of classes.

    Raises:
        ValueError: Naming both class counts.
    """
    teacher_classes, student_classes = teacher_logits.shape[-1], student_logits.shape[-1]
    if teacher_classes != student_classes:
        raise ValueError(
            f"The teacher predicts {teacher_classes} classes and the student {student_classes}; "
            "distillation needs the same classes (build the student with "
            f"num_classes={teacher_classes})."
        )


def first_batch(x, y):
    """The first batch `fit` will see, as NumPy, or `None` where it cannot be read ahead.

    Args:
        x, y: What `fit` was given: arrays (or a dict of arrays) and labels,
            or a `keras.utils.PyDataset`. A `tf.data.Dataset` or a generator
            is not read ahead: that would consume it or advance its random
            state (its structure is still checked when the step is traced).

    Returns:
        `(x, y, sample_weight)` of the first batch (all of it for arrays), or `None`.
    """
    if isinstance(x, keras.utils.PyDataset):
        batch = x[0]
    elif hasattr(x, "element_spec"):
        # Reading a tf.data batch ahead would advance its shuffle and augmentation
        # state, so training would see other batches than without the check.
        return None
    elif isinstance(x, (np.ndarray, dict)) or hasattr(x, "__array__"):
        batch = (x, y)
    else:
        return None
    batch = keras.tree.map_structure(np.asarray, batch)
    return keras.utils.unpack_x_y_sample_weight(batch)


def split_images(x, needs_indices, method_names):
    """Returns `(images, indices)` of a batch's `x`, checking its structure.

    Raises:
        ValueError: For a dict without images, or methods that need sample
            indices (CRD) when the batch carries none.
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
    if needs_indices and indices is None:
        raise ValueError(
            f"Method {', '.join(method_names)} needs each sample's dataset index: give batches "
            f"({{{IMAGE_KEY!r}: images, {INDEX_KEY!r}: indices}}, labels), e.g. "
            "kerasdistill.data.train_pipeline(dataset, with_index=True)."
        )
    return images, indices


def check_images(images, expected_shape):
    """Checks a batch of images: its shape and that every value is finite.

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


def check_not_probabilities(role, logits):
    """Checks that a model's logits on real images are not already probabilities.

    Raises:
        ValueError: If every row is non-negative and sums to 1.
    """
    logits = np.asarray(keras.ops.convert_to_numpy(logits), dtype=np.float64)
    if logits.shape[-1] > 1 and (logits >= 0).all() and np.allclose(logits.sum(-1), 1.0, atol=1e-4):
        raise ValueError(
            f"The {role}'s outputs on the first batch are probabilities (each row sums to 1), "
            "but distillation needs logits; remove its final softmax (e.g. "
            "classifier_activation=None) or end the model in a Dense/Activation('softmax') "
            "layer that the Distiller can read before."
        )
