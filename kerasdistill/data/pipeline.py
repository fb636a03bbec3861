"""Batched tf.data input pipelines for training and evaluation."""

import tensorflow as tf

from kerasdistill.data.augment import normalize, random_crop_flip
from kerasdistill.distiller import IMAGE_KEY, INDEX_KEY


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
