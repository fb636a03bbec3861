"""Pure `keras.ops` building blocks shared by distillation methods."""

from kerasdistill.ops.losses import kl_divergence_with_temperature, sparse_cross_entropy

__all__ = ["kl_divergence_with_temperature", "sparse_cross_entropy"]
