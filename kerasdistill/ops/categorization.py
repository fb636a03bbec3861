"""Sample categorization: which local features are positives, negatives or left out.

Building blocks for MSDCRD's categorization options, in `keras.ops`:

- `consistent_regions`: a region is *consistent* when the teacher's classifier,
  applied to the region's pooled feature, predicts the reference class (the
  label or the teacher's global prediction), *complementary* otherwise.
- `consistent_pair_mask`: per region, the sample pairs whose two regions are
  both consistent.
- `multi_positive_sample_wise_info_nce`: the sample-wise InfoNCE with several
  positives per anchor (e.g. the same-class images, supervised-contrastive
  style) and per-region masks.
- `anchor_weighted_mean`: the reduction of per-anchor losses with one weight
  per anchor.
"""

from keras import ops

# Logit of a masked-out candidate: far below any cosine / temperature, finite so
# that the log-sum-exp never computes inf - inf.
_MASKED_LOGIT = -1e9


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


def multi_positive_sample_wise_info_nce(
    student, teacher, temperature=0.1, positive_mask=None, keep_mask=None, symmetric=False
):
    """Sample-wise InfoNCE with several positives per anchor and per-region masks.

    For the student anchor `(i, r)`, with `K(i, r)` the kept images `j`
    (`keep_mask`, the image `i` itself always kept) and `Pos(i, r)` the kept
    positives (`positive_mask`, `i` itself always one):

    `L[i, r] = log sum_{j in K} exp(s_ir . t_jr / tau)
               - mean_{p in Pos} s_ir . t_pr / tau`

    the supervised-contrastive loss of Khosla et al. 2020 (positives averaged
    outside the log). With both masks `None` it is the plain sample-wise
    InfoNCE.

    Args:
        student: `(batch, P, dim)` student features, L2-normalized.
        teacher: `(batch, P, dim)` teacher features, L2-normalized.
        temperature: Softmax temperature `tau > 0`.
        positive_mask: `None` or a boolean mask, `(batch, batch)` or
            `(P, batch, batch)`, of the extra positives `[i, j]` (e.g. the
            same-class pairs).
        keep_mask: `None` or a boolean mask, same shapes, of the candidates
            that enter the loss at all; a positive that is not kept is dropped.
        symmetric: Average with the teacher-anchored loss (anchor `t_jr`,
            candidates `s_ir`); both masks must then be symmetric in `i, j`.

    Returns:
        A `(batch, P)` float32 tensor of per-anchor losses.

    Raises:
        ValueError: If `temperature <= 0`.
    """
    if temperature <= 0:
        raise ValueError(f"Contrastive temperature must be > 0, got {temperature}.")
    s = ops.transpose(ops.cast(student, "float32"), (1, 0, 2))
    t = ops.transpose(ops.cast(teacher, "float32"), (1, 0, 2))
    logits = ops.matmul(s, ops.transpose(t, (0, 2, 1))) / temperature
    eye = ops.cast(ops.eye(ops.shape(s)[1]), "bool")
    masked, positives = logits, eye
    if keep_mask is not None:
        keep = ops.logical_or(ops.cast(keep_mask, "bool"), eye)
        masked = ops.where(keep, logits, _MASKED_LOGIT)
    if positive_mask is not None:
        positives = ops.logical_or(ops.cast(positive_mask, "bool"), eye)
        if keep_mask is not None:
            positives = ops.logical_and(positives, keep)
    positives = ops.broadcast_to(ops.cast(positives, "float32"), ops.shape(logits))

    def direction(axis):
        mean_positive = ops.sum(logits * positives, axis=axis) / ops.sum(positives, axis=axis)
        return ops.logsumexp(masked, axis=axis) - mean_positive

    loss = direction(-1)
    if symmetric:
        loss = 0.5 * (loss + direction(-2))
    return ops.transpose(loss, (1, 0))


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
