"""Building blocks of the distillation methods, in `keras.ops`, and the pixel
normalization layer that models and exports put before their inputs (`pixels`).

On the TensorFlow backend `distributed` and `state` also call TensorFlow.
"""

from kerasdistill.ops.contrastive import feature_wise_info_nce, info_nce, sample_wise_info_nce
from kerasdistill.ops.losses import kl_divergence_with_temperature, sparse_cross_entropy
from kerasdistill.ops.multiscale import matching_windows, multiscale_pool, resolve_scales
from kerasdistill.ops.normalize import l2_normalize

__all__ = [
    "feature_wise_info_nce",
    "info_nce",
    "kl_divergence_with_temperature",
    "l2_normalize",
    "matching_windows",
    "multiscale_pool",
    "resolve_scales",
    "sample_wise_info_nce",
    "sparse_cross_entropy",
]

# Ops only MSDCRDVariants uses, moved out of the shared ops in the third plan (2026-12-06).
_MOVED_TO_VARIANTS = ("different_class_mask", "same_group_mask", "weighted_region_mean")


def __getattr__(name):
    if name in _MOVED_TO_VARIANTS or name == "categorization":
        raise ImportError(
            f"kerasdistill.ops.{name} is gone; the variant-only ops are in "
            "kerasdistill.methods.msdcrd_variants_ops."
        )
    raise AttributeError(f"module 'kerasdistill.ops' has no attribute {name!r}")
