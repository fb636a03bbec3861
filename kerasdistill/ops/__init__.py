"""Building blocks of the distillation methods, in `keras.ops`.

On the TensorFlow backend `distributed` and `state` also call TensorFlow.
"""

from kerasdistill.ops.losses import kl_divergence_with_temperature, sparse_cross_entropy

__all__ = ["kl_divergence_with_temperature", "sparse_cross_entropy"]

from kerasdistill.ops.contrastive import (  # noqa: E402
    different_class_mask,
    feature_wise_info_nce,
    info_nce,
    sample_wise_info_nce,
    same_group_mask,
    weighted_region_mean,
)
from kerasdistill.ops.multiscale import (  # noqa: E402
    matching_windows,
    multiscale_pool,
    resolve_scales,
)

__all__ += [
    "different_class_mask",
    "feature_wise_info_nce",
    "info_nce",
    "l2_normalize",
    "matching_windows",
    "multiscale_pool",
    "resolve_scales",
    "same_group_mask",
    "sample_wise_info_nce",
    "weighted_region_mean",
]

from kerasdistill.ops.normalize import l2_normalize  # noqa: E402
