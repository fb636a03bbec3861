"""Batched tf.data input pipelines for training and evaluation."""

import tensorflow as tf

from kerasdistill.data.augment import normalize, random_crop_flip
from kerasdistill.batch_keys import IMAGE_KEY, INDEX_KEY


def train_pipeline(dataset, batch_size=64, with_index=False, seed=None, cache=True):
    """Shuffled, augmented (pad-4 crop + flip), normalized training batches.

    Args:
        dataset: A `kerasdistill.data.Dataset`.
        batch_size: Batch size; the last partial batch is dropped.
        with_index: Yield `({"image": x, "index": i}, y)` with each example's
            dataset index (needed by CRD) instead of `(x, y)`.
        seed: Shuffle and augmentation seed.
        cache: Cache the decoded uint8 images in memory before augmenting.

    Returns:
        A `tf.data.Dataset`, reshuffled every epoch.
    """
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}.")
    ds = dataset.train.enumerate()
    if cache:
        ds = ds.cache()
    ds = ds.shuffle(min(dataset.num_train, 50_000), seed=seed, reshuffle_each_iteration=True)

    def prepare(index, example):
        image, label = example
        image = normalize(random_crop_flip(image), dataset.mean, dataset.std)
        if with_index:
            return {IMAGE_KEY: image, INDEX_KEY: index}, label
        return image, label

    ds = ds.map(prepare, num_parallel_calls=tf.data.AUTOTUNE)
    return ds.batch(batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE)


def _stateless_crop_flip(image, seed, size=32, padding=4):
    """`random_crop_flip` with stateless randomness: the same `seed` gives the same result."""
    crop_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    padded = size + 2 * padding
    image = tf.image.pad_to_bounding_box(image, padding, padding, padded, padded)
    image = tf.image.stateless_random_crop(image, (size, size, tf.shape(image)[-1]), crop_seed)
    return tf.image.stateless_random_flip_left_right(image, flip_seed)


def epoch_pipeline(
    dataset,
    batch_size,
    steps_per_epoch,
    epoch,
    seed,
    skip_batches=0,
    with_index=False,
    augment=None,
    shuffle_buffer=50_000,
):
    """The training batches of one epoch, a pure function of `(seed, epoch)`.

    The training split is shuffled with a seed made of `seed` and `epoch`,
    each example is augmented (pad-4 crop + flip) with a seed made of the same
    and its dataset index, and the first `steps_per_epoch` batches are kept.
    Nothing depends on earlier epochs, so a run resumed at batch `b` of epoch
    `e` (`skip_batches=b`) sees exactly the batches an uninterrupted run sees.

    Args:
        dataset: A `kerasdistill.data.Dataset`.
        batch_size: Batch size.
        steps_per_epoch: Batches per epoch, at most `num_train // batch_size`.
        epoch: The epoch number.
        seed: Integer seed of shuffling and augmentation.
        skip_batches: Leading batches to leave out (already trained on).
        with_index: Yield `({"image": x, "index": i}, y)` as `train_pipeline`.
        augment: `augment(image, seed) -> uint8-range image` for one example
            and its stateless seed; default the CIFAR recipe (pad 4, random
            crop, flip). ImageNet passes its random-resized crop of the
            encoded photo (`kerasdistill.data.imagenet.random_resized_crop_flip`).
        shuffle_buffer: Shuffle buffer size (capped by the split's size).

    Returns:
        A `tf.data.Dataset` of `steps_per_epoch - skip_batches` batches.
    """
    if not 0 < steps_per_epoch * batch_size <= dataset.num_train:
        raise ValueError(
            f"steps_per_epoch * batch_size must be in [1, {dataset.num_train}] (the training "
            f"examples), got {steps_per_epoch} * {batch_size}."
        )
    if not 0 <= skip_batches < steps_per_epoch:
        raise ValueError(
            f"skip_batches must be in [0, steps_per_epoch={steps_per_epoch}), got {skip_batches}."
        )
    epoch_seed = int(seed) * 1_000_003 + int(epoch)
    augment = augment or _stateless_crop_flip
    # One fixed order however often the dataset is iterated (Keras's symbolic build
    # under a distribution strategy starts an extra iteration before training).
    ds = dataset.train.enumerate().shuffle(
        min(dataset.num_train, shuffle_buffer), seed=epoch_seed, reshuffle_each_iteration=False
    )
    ds = ds.take(steps_per_epoch * batch_size).skip(skip_batches * batch_size)

    def prepare(index, example):
        image, label = example
        image = augment(image, tf.stack([tf.constant(epoch_seed, tf.int64), index]))
        image = normalize(image, dataset.mean, dataset.std)
        if with_index:
            return {IMAGE_KEY: image, INDEX_KEY: index}, label
        return image, label

    ds = ds.map(prepare, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.batch(batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE)


def eval_pipeline(dataset, batch_size=256, split="test"):
    """Normalized evaluation batches without augmentation, in dataset order.

    Args:
        dataset: A `kerasdistill.data.Dataset`.
        batch_size: Batch size.
        split: `"test"` or `"train"`.

    Returns:
        A `tf.data.Dataset` of `(images, labels)`.
    """
    source = getattr(dataset, split)
    ds = source.map(
        lambda image, label: (normalize(image, dataset.mean, dataset.std), label),
        num_parallel_calls=tf.data.AUTOTUNE,
    )
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)
