"""Feature taps: the intermediate tensors of any Keras classifier that distillation reads.

A tap is a name a distillation method asks for: `LOGITS`, `PRE_POOL`,
`POOLED`, `FEAT_LAST`, `"feat_k"` or a layer name. `tap_model` finds them in a
model's graph and returns a model computing them in one forward pass (see
`kerasdistill.taps.feature_maps`); `FeaturePair` does so for a teacher and a
student after checking that they fit together.
"""

from kerasdistill.taps.feature_maps import (
    FEAT_LAST,
    LOGITS,
    POOLED,
    PRE_POOL,
    classifier_layer,
    resolve_taps,
    tap_model,
)
from kerasdistill.taps.pair import FeaturePair

__all__ = [
    "FEAT_LAST",
    "LOGITS",
    "POOLED",
    "PRE_POOL",
    "FeaturePair",
    "classifier_layer",
    "resolve_taps",
    "tap_model",
]
