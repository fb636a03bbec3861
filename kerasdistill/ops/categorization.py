"""Sample categorization: which local features are positives, negatives or left out.

Building blocks for MSDCRD's categorization options, in `keras.ops`:

- `consistent_regions`: a region is *consistent* when the teacher's classifier,
  applied to the region's pooled feature, predicts the reference class (the
  label or the teacher's global prediction), *complementary* otherwise.
- `consistent_pair_mask`: per region, the sample pairs whose two regions are
  both consistent.
- `anchor_weighted_mean`: the reduction of per-anchor losses with one weight
  per anchor.
"""

from keras import ops

def consistent_regions(local_logits, reference):
    """Marks the regions whose local prediction is the reference class.

    Args:
        local_logits: `(batch, P, classes)` logits of each region's feature.
        reference: Integer classes, shape `(batch,)` or `(batch, 1)`: the
            labels or the teacher's global predictions.

    Returns:
        A boolean `(batch, P)` tensor, `True` for consistent regions.
    """
    predicted = ops.argmax(local_logits, axis=-1)
    reference = ops.reshape(ops.cast(reference, predicted.dtype), (-1, 1))
    return ops.equal(predicted, reference)


def consistent_pair_mask(consistent):
    """Per region, the sample pairs whose two regions are both consistent.

    Args:
        consistent: Boolean `(batch, P)` tensor from `consistent_regions`.

    Returns:
        A boolean `(P, batch, batch)` tensor, `True` at `[r, i, j]` where
        region `r` is consistent in both image `i` and image `j` (symmetric in
        `i, j`).
    """
    per_region = ops.transpose(ops.cast(consistent, "bool"), (1, 0))
    return ops.logical_and(ops.expand_dims(per_region, 2), ops.expand_dims(per_region, 1))


def anchor_weighted_mean(per_anchor_loss, anchor_weights, region_weights=None):
    """Reduces a `(batch, P)` loss with one weight per anchor.

    `sum_{i,r} a_ir w_r L_ir / sum_{i,r} a_ir w_r`, 0 when every anchor weight
    is 0. With all `a_ir = 1` this is `weighted_region_mean`.

    Args:
        per_anchor_loss: `(batch, P)` tensor.
        anchor_weights: `(batch, P)` non-negative weights.
        region_weights: `None` (every region 1) or `P` region weights.

    Returns:
        A float32 scalar.
    """
    weights = ops.cast(anchor_weights, "float32")
    if region_weights is not None:
        weights = weights * ops.convert_to_tensor(region_weights, dtype="float32")
    total = ops.sum(weights * ops.cast(per_anchor_loss, "float32"))
    return total / ops.maximum(ops.sum(weights), 1e-12)
