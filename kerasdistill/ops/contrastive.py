"""In-batch contrastive (InfoNCE) losses between student and teacher local features.

Features are `(batch, P, dim)` tensors: `P` local feature vectors (regions) per
image, the student's and the teacher's in the same region order. The positive
of the student vector `(i, r)` is always the teacher vector `(i, r)`; the losses
differ in their negatives:

- sample-wise: the teacher vectors `(j, r)` of the other images `j != i`, at the
  same region;
- feature-wise: the teacher vectors `(i, r')` of the other regions `r' != r` of
  the same image.

Both are `info_nce`, the one masked InfoNCE of the library (the
multi-positive, supervised-contrastive form included). Everything runs in
float32 (inputs of any float dtype are cast), with a max-subtracted
log-sum-exp, and costs `O(B^2 P + B P^2)` similarities computed by batched
matmuls. The losses return one value per anchor, `(batch, P)`; reduce
them with `weighted_region_mean`.
"""

from keras import ops

# Logit of a masked-out candidate: far below any cosine / temperature, finite so
# that max subtraction never computes inf - inf.
_MASKED_LOGIT = -1e9


def _with_positives_kept(mask):
    """Casts a `(..., N, N)` mask to bool and forces its diagonal (the positives) on."""
    mask = ops.cast(mask, "bool")
    return ops.logical_or(mask, ops.cast(ops.eye(ops.shape(mask)[-1]), "bool"))


def _logsumexp(logits, keep_mask, axis):
    """Masked log-sum-exp along `axis`, with the (constant) maximum subtracted."""
    if keep_mask is not None:
        logits = ops.where(keep_mask, logits, _MASKED_LOGIT)
    peak = ops.stop_gradient(ops.max(logits, axis=axis, keepdims=True))
    total = ops.sum(ops.exp(logits - peak), axis=axis)
    return ops.log(total) + ops.squeeze(peak, axis=axis)


def info_nce(anchors, candidates, temperature, keep_mask=None, symmetric=False, positive_mask=None):
    """Masked InfoNCE of every anchor against the candidates of its group.

    `L[g, n] = log sum_{m in K(n)} exp(a_gn . c_gm / tau)
               - mean_{p in Pos(n)} a_gn . c_gp / tau`

    with `K(n)` the kept candidates (`keep_mask`, `n` itself always kept) and
    `Pos(n)` the kept positives (`positive_mask`, `n` itself always one): the
    plain InfoNCE without `positive_mask`, the supervised-contrastive loss of
    Khosla et al. 2020 (positives averaged outside the log) with it.

    Args:
        anchors: `(G, N, D)` float32 tensor; anchor `(g, n)` has positive
            `candidates[g, n]` and negatives `candidates[g, m]`, `m != n`.
        candidates: `(G, N, D)` float32 tensor.
        temperature: Softmax temperature `tau > 0`.
        keep_mask: `None` or a boolean `(N, N)` or `(G, N, N)` mask of the
            (anchor, candidate) pairs that enter the loss; its diagonal is
            forced on.
        symmetric: Also anchor on the candidates (the transposed similarity
            matrix) and average both directions; masks must then be symmetric.
        positive_mask: `None` or a boolean mask, shapes as `keep_mask`, of the
            extra positives; a positive that is not kept is dropped.

    Returns:
        A `(G, N)` float32 tensor of per-anchor losses.

    Raises:
        ValueError: If `temperature <= 0`.
    """
    if temperature <= 0:
        raise ValueError(f"Contrastive temperature must be > 0, got {temperature}.")
    if keep_mask is not None:
        keep_mask = _with_positives_kept(keep_mask)
    logits = ops.matmul(anchors, ops.transpose(candidates, (0, 2, 1))) / temperature
    if positive_mask is None:
        diagonal = ops.sum(anchors * candidates, axis=-1) / temperature
        positives = {-1: diagonal, -2: diagonal}
    else:
        pos = _with_positives_kept(positive_mask)
        if keep_mask is not None:
            pos = ops.logical_and(pos, keep_mask)
        pos = ops.broadcast_to(ops.cast(pos, "float32"), ops.shape(logits))
        positives = {
            axis: ops.sum(logits * pos, axis=axis) / ops.sum(pos, axis=axis) for axis in (-1, -2)
        }
    loss = _logsumexp(logits, keep_mask, axis=-1) - positives[-1]
    if symmetric:
        reverse = _logsumexp(logits, keep_mask, axis=-2) - positives[-2]
        loss = 0.5 * (loss + reverse)
    return loss


def sample_wise_info_nce(
    student, teacher, temperature=0.1, keep_mask=None, symmetric=False, positive_mask=None
):
    """Contrasts each student local feature with the same region of other images.

    `L[i, r] = -log( exp(s_ir . t_ir / tau) / sum_j exp(s_ir . t_jr / tau) )`,
    the sum running over the batch images `j` kept by `keep_mask[i, j]`. With
    `positive_mask`, the numerator's `s_ir . t_ir` becomes the mean over the
    kept positives `j` (supervised-contrastive style, see `info_nce`).

    Args:
        student: `(batch, P, dim)` student features, L2-normalized.
        teacher: `(batch, P, dim)` teacher features, L2-normalized.
        temperature: Softmax temperature `tau > 0`.
        keep_mask: Optional boolean `(batch, batch)` (every region) or
            `(P, batch, batch)` (per region) mask of the negatives to keep
            (e.g. from `different_class_mask`); must be symmetric when
            `symmetric=True`. The positive is always kept.
        symmetric: Average with the teacher-anchored loss (anchor `t_ir`,
            candidates `s_jr`).
        positive_mask: Optional boolean mask, shapes as `keep_mask`, of extra
            positives `[i, j]` (e.g. the same-class pairs).

    Returns:
        A `(batch, P)` float32 tensor of per-anchor losses.
    """
    s = ops.transpose(ops.cast(student, "float32"), (1, 0, 2))
    t = ops.transpose(ops.cast(teacher, "float32"), (1, 0, 2))
    loss = info_nce(s, t, temperature, keep_mask, symmetric, positive_mask)
    return ops.transpose(loss, (1, 0))


def feature_wise_info_nce(student, teacher, temperature=0.1, keep_mask=None, symmetric=False):
    """Contrasts each student local feature with the other regions of its image.

    `L[i, r] = -log( exp(s_ir . t_ir / tau) / sum_r' exp(s_ir . t_ir' / tau) )`,
    the sum running over the regions `r'` kept by `keep_mask[r, r']`.

    Args:
        student: `(batch, P, dim)` student features, L2-normalized.
        teacher: `(batch, P, dim)` teacher features, L2-normalized.
        temperature: Softmax temperature `tau > 0`.
        keep_mask: Optional boolean `(P, P)` mask of the negatives to keep (e.g.
            from `same_group_mask`); must be symmetric when `symmetric=True`.
            The positive is always kept.
        symmetric: Average with the teacher-anchored loss.

    Returns:
        A `(batch, P)` float32 tensor of per-anchor losses.
    """
    s = ops.cast(student, "float32")
    t = ops.cast(teacher, "float32")
    return info_nce(s, t, temperature, keep_mask, symmetric)


def different_class_mask(labels):
    """Keep mask of the sample-wise negatives whose label differs from the anchor's.

    Args:
        labels: Integer labels, shape `(batch,)` or `(batch, 1)`.

    Returns:
        A boolean `(batch, batch)` tensor, `True` where `labels[i] != labels[j]`
        (the diagonal is re-enabled by the losses, as it holds the positives).
    """
    labels = ops.reshape(ops.cast(labels, "int32"), (-1,))
    return ops.not_equal(ops.expand_dims(labels, 1), ops.expand_dims(labels, 0))


def same_group_mask(group_ids):
    """Keep mask of the pairs whose group ids are equal (e.g. regions of one scale).

    Args:
        group_ids: A sequence or integer tensor of `N` group ids.

    Returns:
        A boolean `(N, N)` tensor, `True` where `group_ids[a] == group_ids[b]`.
    """
    ids = ops.convert_to_tensor(group_ids, dtype="int32")
    return ops.equal(ops.expand_dims(ids, 1), ops.expand_dims(ids, 0))


def weighted_region_mean(per_anchor_loss, region_weights=None):
    """Reduces a `(batch, P)` loss: mean over the batch, weighted sum over regions.

    Args:
        per_anchor_loss: `(batch, P)` tensor.
        region_weights: `None` (plain mean over all anchors) or `P` weights
            summing to 1.

    Returns:
        A float32 scalar.
    """
    if region_weights is None:
        return ops.mean(per_anchor_loss)
    weights = ops.convert_to_tensor(region_weights, dtype="float32")
    return ops.sum(ops.mean(per_anchor_loss, axis=0) * weights)
