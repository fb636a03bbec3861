"""Names of the feature taps every model offers (see `kerasdistill.models.taps`).

Kept apart from `kerasdistill.models` so that distillation methods can name
taps without importing the model zoo.
"""

LOGITS = "logits"
FEAT_LAST = "feat_last"
PRE_POOL = "pre_pool"
POOLED = "pooled"
