"""Batched tf.data input pipelines for training and evaluation.

Every training pipeline ends in `augmented_batches` (augment each example with
its own stateless seed, normalize, batch): `train_pipeline` and
`imagenet.imagenet_train_pipeline` seed and shuffle anew each epoch
(`reshuffled`), `epoch_pipeline` (the command line's) makes each epoch a pure
function of `(seed, epoch)`.
"""

import tensorflow as tf

from kerasdistill.data.augment import normalize as normalize_image
from kerasdistill.data.augment import random_crop_flip
from kerasdistill.batches import IMAGE_KEY, INDEX_KEY


def train_pipeline(dataset, batch_size=64, with_index=False, seed=None, cache=True):
    """Shuffled, augmented (pad-4 crop + flip), normalized training batches.

    The per-example steps are those of `epoch_pipeline` (`augmented_batches`:
    the stateless `kerasdistill.data.augment.random_crop_flip`, then
    `normalize`); the command line trains on the same crop and flip without
    the normalization, which its models hold. The order and the per-example
    seeds are drawn anew every epoch from `seed`, so the epochs differ and the
    same `seed` gives the same batches again.

    Args:
        dataset: A `kerasdistill.data.Dataset`.
        batch_size: Batch size; the last partial batch is dropped.
        with_index: Yield `({"image": x, "index": i}, y)` with each example's
            dataset index (needed by CRD) instead of `(x, y)`.
        seed: Shuffle and augmentation seed (None: different batches every run).
        cache: Cache the decoded uint8 images in memory before augmenting.

    Returns:
        A `tf.data.Dataset`, reshuffled every epoch.
    """
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}.")
    examples = dataset.train.enumerate()
    if cache:
        examples = examples.cache()
    examples = reshuffled(examples, min(dataset.num_train, 50_000), seed)
    return augmented_batches(examples, dataset, random_crop_flip, batch_size, with_index)


def reshuffled(examples, shuffle_buffer, seed):
    """Pairs examples with stateless seeds, both drawn anew every epoch, and shuffles them.

    Args:
        examples: A `tf.data.Dataset` of `(index, example)`.
        shuffle_buffer: Shuffle buffer size.
        seed: Seed of the seeds and of the shuffling (None: random).

    Returns:
        A `tf.data.Dataset` of `((index, example), seed)`, the seed a `(2,)`
        int64 tensor, reshuffled and reseeded every iteration.
    """
    seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)
    ds = tf.data.Dataset.zip(examples, seeds)
    return ds.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)


def augmented_batches(
    examples,
    dataset,
    augment,
    batch_size,
    with_index,
    normalize_images=True,
    num_parallel_calls=tf.data.AUTOTUNE,
):
    """Augments each example with its own seed, normalizes and batches them.

    The end of every training pipeline (`train_pipeline`, `epoch_pipeline`,
    `imagenet_train_pipeline`).

    Args:
        examples: A `tf.data.Dataset` of `((index, (image, label)), seed)`.
        dataset: The `kerasdistill.data.Dataset` (its normalization statistics).
        augment: `augment(image, seed)` of one example.
        batch_size: Batch size; the last partial batch is dropped.
        with_index: Yield `({"image": x, "index": i}, y)` instead of `(x, y)`.
        normalize_images: Normalize with the dataset's statistics (else the
            augmented images are batched as they are).
        num_parallel_calls: Examples augmented in parallel (default autotuned).

    Returns:
        A `tf.data.Dataset` of batches, in the order of `examples`.
    """

    def prepare(example, example_seed):
        index, (image, label) = example
        image = augment(image, example_seed)
        if normalize_images:
            image = normalize_image(image, dataset.mean, dataset.std)
        if with_index:
            return {IMAGE_KEY: image, INDEX_KEY: index}, label
        return image, label

    ds = examples.map(prepare, num_parallel_calls=num_parallel_calls, deterministic=True)
    return ds.batch(batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE)


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
    normalize=True,
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
            and its stateless seed; default the CIFAR recipe
            (`kerasdistill.data.augment.random_crop_flip`: pad 4, random crop,
            flip). ImageNet passes its random-resized crop of the encoded
            photo (`kerasdistill.data.imagenet_augment.random_resized_crop_flip`).
        shuffle_buffer: Shuffle buffer size (capped by the split's size).
        normalize: When False, the images are left as `augment` returns them
            (pixel values in [0, 255]): the models must start with
            `normalization_layer(dataset.mean, dataset.std)`.

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
    # One fixed order however often the dataset is iterated (Keras's symbolic build
    # under a distribution strategy starts an extra iteration before training).
    ds = dataset.train.enumerate().shuffle(
        min(dataset.num_train, shuffle_buffer), seed=epoch_seed, reshuffle_each_iteration=False
    )
    ds = ds.take(steps_per_epoch * batch_size).skip(skip_batches * batch_size)
    epoch_seed = tf.constant(epoch_seed, tf.int64)
    ds = ds.map(lambda index, example: ((index, example), tf.stack([epoch_seed, index])))
    return augmented_batches(
        ds, dataset, augment or random_crop_flip, batch_size, with_index, normalize_images=normalize
    )


def eval_pipeline(dataset, batch_size=256, split="test", normalize=True):
    """Evaluation batches without augmentation, in dataset order, normalized by default.

    Args:
        dataset: A `kerasdistill.data.Dataset`.
        batch_size: Batch size.
        split: `"test"` or `"train"`.
        normalize: When False, the images are the split's own (uint8, not
            normalized), as `epoch_pipeline(..., normalize=False)`.

    Returns:
        A `tf.data.Dataset` of `(images, labels)`.
    """
    ds = getattr(dataset, split)
    if normalize:
        ds = ds.map(
            lambda image, label: (normalize_image(image, dataset.mean, dataset.std), label),
            num_parallel_calls=tf.data.AUTOTUNE,
        )
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)
