"""CRD's negative sampler: per anchor, training samples of the other classes.

Draws in-graph, uniformly among the samples whose label differs from the
anchor's, without replacement as RepDistiller's `CIFAR100InstanceSample`
(`np.random.choice(..., replace=False)`; with replacement when a class has
fewer other-class samples than `num_negatives`, as there).
"""

import math

import keras
import numpy as np
from keras import ops

# Exclusive upper bound of the raw random integers folded into each row's range.
_RANDINT_MAX = 2**31 - 1


def _draws_for_distinct(k, m):
    """Iid uniform draws from `m` values after which `k` distinct ones occur.

    The number of distinct values among `d` draws has mean
    `m * (1 - q^d)` with `q = 1 - 1/m`; returns the smallest `d` whose mean
    exceeds `k` by 10 standard deviations (a shortfall is then below 1e-20),
    or `k` when `k > m` (sampling with replacement needs no more).
    """
    if k > m:
        return k
    q = 1.0 - 1.0 / m
    d = k
    while True:
        mean = m * (1.0 - q**d)
        variance = m * q**d * (1.0 - m * q**d) + m * (m - 1) * (1.0 - 2.0 / m) ** d
        if mean - 10.0 * math.sqrt(max(variance, 0.0)) >= k:
            return d
        d = max(d + 1, int(d * 1.01))


def checked_labels(train_labels):
    """`train_labels` as a 1-D int array of classes >= 0, or a ValueError."""
    labels = np.asarray(train_labels)
    if labels.ndim != 1 or labels.size == 0 or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(
            "CRD train_labels must be a non-empty 1-D array of integer class labels, one "
            f"per training sample; got dtype {labels.dtype} and shape {labels.shape}."
        )
    if labels.min() < 0:
        raise ValueError(f"CRD train_labels must be >= 0, got {labels.min()}.")
    return labels


class NegativeSampler:
    """Draws the contrast indices of CRD batches.

    Its state is the owning layer's, created with `layer.add_weight` so that it
    is saved with the layer: `sample_labels` (the class of every sample) and
    `samples_by_class` (sample indices sorted by class), int32
    `(num_samples,)`, and a `keras.random.SeedGenerator` named
    `negative_sampler`, which the layer must hold as an attribute.

    Args:
        layer: The Keras layer that owns the label tables.
        labels: `checked_labels(train_labels)`, or `None` when the tables are
            to be loaded with the layer's weights.
        counts: Number of training samples of each class.
        num_negatives: Negatives per anchor.
        replacement: Draw with replacement even where distinct draws are
            possible.
        seed: Seed of the draws (`None`: from Keras' global seed).
    """

    def __init__(self, layer, labels, counts, num_negatives, replacement, seed):
        self.num_samples = int(counts.sum())
        self.num_negatives = int(num_negatives)
        # Without replacement unless some class has fewer candidates than K.
        fewest_others = int(self.num_samples - counts.max())
        self.replacement = bool(replacement) or self.num_negatives > fewest_others
        self._draws = _draws_for_distinct(self.num_negatives, fewest_others)
        # Each class's [start, start + count) range among the samples sorted by
        # class (`samples_by_class`). A draw r in [0, num_samples - count[y])
        # skips y's range.
        self.class_count = counts.astype("int32")
        self._class_start = (np.cumsum(counts) - counts).astype("int32")
        self.sample_labels = self._add_label_table(layer, "sample_labels", labels)
        self.samples_by_class = self._add_label_table(
            layer, "samples_by_class", None if labels is None else np.argsort(labels, kind="stable")
        )
        self.seed_generator = keras.random.SeedGenerator(seed, name="negative_sampler")

    def _add_label_table(self, layer, name, values):
        """A constant int32 `(num_samples,)` weight: `values`, or zeros to be loaded."""

        def initializer(shape, dtype=None):
            if values is None:
                return ops.zeros(shape, dtype)
            return ops.convert_to_tensor(np.asarray(values, "int32"), dtype)

        return layer.add_weight(
            shape=(self.num_samples,), initializer=initializer, trainable=False,
            dtype="int32", name=name,
        )

    def __call__(self, sample_indices):
        """Draws the contrast indices of a batch: the positive, then the negatives.

        Each row's negatives are drawn uniformly among the training samples
        whose class differs from `train_labels[index]`: distinct samples
        unless `replacement`.

        Args:
            sample_indices: `(batch,)` integer dataset indices.

        Returns:
            An int32 tensor `(batch, 1 + num_negatives)`; column 0 is
            `sample_indices`.
        """
        idx = ops.reshape(ops.cast(sample_indices, "int32"), (-1,))
        anchor_class = ops.take(self.sample_labels, idx, axis=0)
        count = ops.take(ops.convert_to_tensor(self.class_count), anchor_class, axis=0)
        start = ops.take(ops.convert_to_tensor(self._class_start), anchor_class, axis=0)
        num_other = ops.expand_dims(self.num_samples - count, -1)
        if self.replacement:
            rank = self._uniform_ranks(ops.shape(idx)[0], self.num_negatives, num_other)
        else:
            rank = self._distinct_ranks(ops.shape(idx)[0], num_other)
        skip = ops.where(rank >= ops.expand_dims(start, -1), ops.expand_dims(count, -1), 0)
        negatives = ops.take(self.samples_by_class, rank + skip, axis=0)
        return ops.concatenate([ops.expand_dims(idx, -1), negatives], axis=1)

    def _uniform_ranks(self, rows, columns, num_other):
        """`(rows, columns)` iid ranks, row `i` uniform in `[0, num_other[i])`."""
        raw = keras.random.randint(
            (rows, columns), 0, _RANDINT_MAX, dtype="int32", seed=self.seed_generator
        )
        return ops.mod(raw, num_other)

    def _distinct_ranks(self, rows, num_other):
        """`(rows, num_negatives)` ranks, distinct within each row, uniform.

        Draws `self._draws` iid ranks per row (enough that at least
        `num_negatives` distinct values occur but with negligible
        probability), keeps the distinct values, and picks `num_negatives`
        of them by random keys. The distinct set of iid draws is exchangeable,
        so the pick is a uniform subset; the cost does not depend on the
        dataset size.
        """
        draws = ops.sort(self._uniform_ranks(rows, self._draws, num_other), axis=-1)
        first = ops.concatenate(
            [ops.ones_like(draws[:, :1], "bool"), draws[:, 1:] != draws[:, :-1]], axis=-1
        )
        keys = keras.random.uniform((rows, self._draws), seed=self.seed_generator)
        keys = ops.where(first, keys, -1.0)
        _, picked = ops.top_k(keys, self.num_negatives, sorted=False)
        return ops.take_along_axis(draws, picked, axis=-1)

