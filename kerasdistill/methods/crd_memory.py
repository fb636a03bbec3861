"""CRD's memory banks: one embedding per dataset sample and side, with their `Z`."""

import math

import keras
from keras import ops

from kerasdistill.ops import distributed
from kerasdistill.ops.normalize import l2_normalize
from kerasdistill.ops.state import gather_rows, scatter_rows


class MemoryBanks:
    """The student (`memory_v1`) and teacher (`memory_v2`) banks and constants.

    Variables of the owning layer (created with `layer.add_weight`, in this
    order, so checkpoints keep their paths): `memory_v1` and `memory_v2`, each
    `(num_samples, feat_dim)`, initialised i.i.d. uniform in `[-s, s]` with
    `s = 1 / sqrt(feat_dim / 3)`; `z_v1` and `z_v2`, the normalization
    constants, `-1` until set from the first batch's scores and frozen
    afterwards. All are updated with every replica's rows, so they are the
    same on all replicas.

    Args:
        layer: The Keras layer that owns the variables.
        num_samples: Rows per bank (the dataset size).
        feat_dim: Embedding size.
        momentum: Bank update momentum in `[0, 1]`.
    """

    def __init__(self, layer, num_samples, feat_dim, momentum):
        self.num_samples = int(num_samples)
        self.momentum = float(momentum)
        stdv = 1.0 / math.sqrt(feat_dim / 3.0)
        bank_init = keras.initializers.RandomUniform(-stdv, stdv)
        self.memory_v1, self.memory_v2 = (
            self._add(layer, name, (self.num_samples, feat_dim), bank_init)
            for name in ("memory_v1", "memory_v2")
        )
        minus_one = keras.initializers.Constant(-1.0)
        self.z_v1, self.z_v2 = (self._add(layer, name, (), minus_one) for name in ("z_v1", "z_v2"))

    @staticmethod
    def _add(layer, name, shape, initializer):
        return layer.add_weight(
            shape=shape,
            initializer=initializer,
            trainable=False,
            dtype="float32",
            aggregation="only_first_replica",
            name=name,
        )

    @staticmethod
    def rows(bank, contrast_indices):
        """The bank rows of `(batch, 1 + K)` contrast indices, as constants."""
        return ops.stop_gradient(gather_rows(bank, contrast_indices))

    def update_z(self, z_var, logits):
        """Returns `Z` (set from `logits` while negative, then frozen), storing it.

        `Z = mean(exp(logits)) * num_samples` over the global batch (every
        replica's rows), with the peak factored out against overflow.
        """
        logits = ops.stop_gradient(logits)
        peak = ops.max(distributed.all_gather(ops.reshape(ops.max(logits), (1,))))
        local = ops.stack(
            [ops.sum(ops.exp(logits - peak)), ops.cast(ops.size(logits), "float32")]
        )
        sums = ops.sum(distributed.all_gather(local[None]), axis=0)
        total, count = sums[0], sums[1]
        first = ops.exp(peak) * (total / count * float(self.num_samples))
        current = ops.convert_to_tensor(z_var)
        z = ops.where(current < 0, first, current)
        z_var.assign(z)
        return z

    def update_bank(self, bank, idx, v):
        """`bank[idx] <- normalize(momentum * bank[idx] + (1 - momentum) * v)`.

        Uses every replica's rows, so the bank is the same on all replicas;
        only the rows of the batch are written, and a row whose new value is not
        finite keeps its old one (the Distiller does not copy the banks back
        after a non-finite step).
        """
        idx = distributed.all_gather(idx)
        v = distributed.all_gather(ops.stop_gradient(v))
        old = gather_rows(bank, idx)
        rows = l2_normalize(old * self.momentum + v * (1.0 - self.momentum))
        finite = ops.all(ops.isfinite(rows), axis=-1, keepdims=True)
        scatter_rows(bank, idx, ops.where(finite, rows, old))

