"""The ops that only `MSDCRDVariants` uses, in `keras.ops` (NumPy for static masks).

- Masked InfoNCE (`masked_info_nce` and its sample-wise and feature-wise
  forms): kept candidates, extra positives (supervised-contrastive style) and
  the symmetric direction. With no mask and `symmetric=False` it is
  `kerasdistill.ops.contrastive.info_nce`.
- Masks and reductions: `different_class_mask`, `same_group_mask`,
  `anchor_weighted_mean`.
- Sample categorization: `consistent_regions` (a region is *consistent* when the
  teacher's classifier, applied to the region's pooled feature, predicts the
  reference class), `consistent_pair_mask`.
- Sliding windows: `sliding_extents` (the `extents` of
  `kerasdistill.ops.multiscale.resolve_scales` for `pooling="overlapping"`),
  `region_scale_ids`, `region_overlap_mask`.
"""

import fractions

import numpy as np
from keras import ops

# Logit of a masked-out candidate: far below any cosine / temperature, finite so
# that max subtraction never computes inf - inf.
_MASKED_LOGIT = -1e9


def _with_positives_kept(mask):
    """Casts a `(..., N, N)` mask to bool and forces its diagonal (the positives) on."""
    mask = ops.cast(mask, "bool")
    return ops.logical_or(mask, ops.cast(ops.eye(ops.shape(mask)[-1]), "bool"))


def masked_info_nce(
    anchors, candidates, temperature, keep_mask=None, symmetric=False, positive_mask=None
):
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
    if keep_mask is not None:
        logits = ops.where(keep_mask, logits, _MASKED_LOGIT)
    loss = ops.logsumexp(logits, axis=-1) - positives[-1]
    if symmetric:
        loss = 0.5 * (loss + ops.logsumexp(logits, axis=-2) - positives[-2])
    return loss


def masked_sample_wise_info_nce(
    student, teacher, temperature, keep_mask=None, symmetric=False, positive_mask=None
):
    """`sample_wise_info_nce` with the options of `masked_info_nce`.

    Args:
        student: `(batch, P, dim)` student features, L2-normalized.
        teacher: `(batch, P, dim)` teacher features, L2-normalized.
        temperature: Softmax temperature `tau > 0`.
        keep_mask: Optional boolean `(batch, batch)` (every region) or
            `(P, batch, batch)` (per region) mask of the images `[i, j]` kept
            as negatives (e.g. from `different_class_mask`).
        symmetric: Average with the teacher-anchored loss (anchor `t_ir`,
            candidates `s_jr`).
        positive_mask: Optional boolean mask, shapes as `keep_mask`, of extra
            positives `[i, j]` (e.g. the same-class pairs).

    Returns:
        A `(batch, P)` float32 tensor of per-anchor losses.
    """
    s = ops.transpose(ops.cast(student, "float32"), (1, 0, 2))
    t = ops.transpose(ops.cast(teacher, "float32"), (1, 0, 2))
    loss = masked_info_nce(s, t, temperature, keep_mask, symmetric, positive_mask)
    return ops.transpose(loss, (1, 0))


def masked_feature_wise_info_nce(student, teacher, temperature, keep_mask=None, symmetric=False):
    """`feature_wise_info_nce` with a `(P, P)` keep mask of the regions and the symmetric form.

    Args:
        student: `(batch, P, dim)` student features, L2-normalized.
        teacher: `(batch, P, dim)` teacher features, L2-normalized.
        temperature: Softmax temperature `tau > 0`.
        keep_mask: Optional boolean `(P, P)` mask of the regions `[r, r']`
            kept as negatives (e.g. from `same_group_mask`).
        symmetric: Average with the teacher-anchored loss.

    Returns:
        A `(batch, P)` float32 tensor of per-anchor losses.
    """
    s, t = ops.cast(student, "float32"), ops.cast(teacher, "float32")
    return masked_info_nce(s, t, temperature, keep_mask, symmetric)


def different_class_mask(labels):
    """Keep mask of the sample-wise negatives whose label differs from the anchor's.

    Args:
        labels: Integer labels, shape `(batch,)` or `(batch, 1)`.

    Returns:
        A boolean `(batch, batch)` tensor, `True` where `labels[i] != labels[j]`.
    """
    labels = ops.reshape(ops.cast(labels, "int32"), (-1,))
    return ops.not_equal(ops.expand_dims(labels, 1), ops.expand_dims(labels, 0))


def same_group_mask(group_ids):
    """Keep mask of the pairs whose group ids are equal (e.g. regions of one scale).

    Args:
        group_ids: A sequence of `N` group ids.

    Returns:
        A boolean NumPy `(N, N)` array, `True` where `group_ids[a] == group_ids[b]`.
    """
    ids = np.asarray(group_ids)
    return ids[:, None] == ids[None, :]


def anchor_weighted_mean(per_anchor_loss, anchor_weights=None, region_weights=None):
    """Reduces a `(batch, P)` loss with one weight per anchor and one per region.

    `sum_{i,r} a_ir w_r L_ir / sum_{i,r} a_ir w_r`, 0 when every weight is 0;
    `None` weights are 1. With `region_weights` summing to 1 and no anchor
    weights this is the mean over the batch, summed over regions with `w_r`.

    Args:
        per_anchor_loss: `(batch, P)` tensor.
        anchor_weights: `None` or `(batch, P)` non-negative weights.
        region_weights: `None` or `P` non-negative region weights.

    Returns:
        A float32 scalar.
    """
    loss = ops.cast(per_anchor_loss, "float32")
    weights = ops.ones_like(loss) if anchor_weights is None else ops.cast(anchor_weights, "float32")
    if region_weights is not None:
        weights = weights * ops.convert_to_tensor(region_weights, dtype="float32")
    return ops.sum(weights * loss) / ops.maximum(ops.sum(weights), 1e-12)


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
        region `r` is consistent in both image `i` and image `j`.
    """
    per_region = ops.transpose(ops.cast(consistent, "bool"), (1, 0))
    return ops.logical_and(ops.expand_dims(per_region, 2), ops.expand_dims(per_region, 1))


def _fraction(value, what, scale):
    """A float in `(0, 1]` as an exact fraction (0.1 is 1/10, not its binary value)."""
    if not 0.0 < value <= 1.0:
        raise ValueError(
            f"Scale {scale!r}: a float {what} is a fraction of the map side and must be "
            f"in (0, 1], got {value}."
        )
    return fractions.Fraction(repr(value))


def _pixels(value, side, what, scale):
    """A window or stride entry (int pixels or float fraction) in pixels."""
    if isinstance(value, int):
        if value < 1:
            raise ValueError(f"Scale {scale!r}: {what} must be >= 1 pixel, got {value}.")
        return value
    length = _fraction(value, what, scale) * side
    if length.denominator != 1:
        raise ValueError(
            f"Scale {scale!r}: {what} fraction {value} of a side of {side} is "
            f"{float(length):g}, not a whole number of pixels."
        )
    return int(length)


def _windows(window, stride, count):
    return tuple((k * stride, k * stride + window) for k in range(count))


def _fractional_extents(side, scale, axis):
    window, stride = (_fraction(v, what, scale) for v, what in zip(scale, ("window", "stride")))
    steps = (1 - window) / stride
    if steps.denominator != 1:
        raise ValueError(
            f"Scale {scale!r}: a window fraction {scale[0]} with stride fraction {scale[1]} "
            "does not tile the side ((1 - window) / stride must be a whole number)."
        )
    if window * side < 1 or (steps and stride * side < 1):
        raise ValueError(
            f"Scale {scale!r}: on a map {axis} of {side} pixels the window or stride is "
            "less than one pixel."
        )
    return _windows(window, stride, int(steps) + 1)


def _pixel_extents(side, scale, axis):
    window = _pixels(scale[0], side, "window", scale)
    stride = _pixels(scale[1], side, "stride", scale)
    if window > side:
        raise ValueError(f"Scale {scale!r}: window {window} exceeds the map {axis} {side}.")
    if (side - window) % stride:
        raise ValueError(
            f"Scale {scale!r}: window {window} with stride {stride} does not tile the "
            f"map {axis} {side} exactly ((side - window) must be a multiple of stride)."
        )
    unit = fractions.Fraction(1, side)
    return _windows(window * unit, stride * unit, (side - window) // stride + 1)


def sliding_extents(side, scale, axis):
    """The relative extents of sliding `(window, stride)` windows along one side.

    - Both entries floats in `(0, 1]`: fractions of the side. Window `k` has
      extent `[k s, k s + w)`, `k = 0 .. (1 - w) / s`, which must be a whole
      number; any map accepts it, provided window and stride each cover at
      least one pixel (otherwise widened to whole pixels by `resolve_scales`).
    - Otherwise pixels: an `int` entry is a number of pixels and a `float` one a
      fraction that must be a whole number of pixels on that map; the windows
      must tile the side exactly (`(side - window) % stride == 0`), so the
      number of regions depends on the map size.

    Args:
        side: The side's length in pixels.
        scale: A `(window, stride)` pair.
        axis: `"height"` or `"width"`, for error messages.

    Returns:
        A tuple of `(start, stop)` pairs of `fractions.Fraction`s.

    Raises:
        ValueError: If the pair is malformed or does not fit the side.
    """
    if not isinstance(scale, (tuple, list)) or len(scale) != 2:
        raise ValueError(f"Overlapping scales must be (window, stride) pairs, got {scale!r}.")
    for value, what in zip(scale, ("window", "stride")):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"Scale {scale!r}: {what} must be an int or a float, got {value!r}.")
    if all(isinstance(v, float) for v in scale):
        return _fractional_extents(side, scale, axis)
    return _pixel_extents(side, scale, axis)


def region_scale_ids(windows):
    """Returns, for each region in output order, the index of its scale."""
    return tuple(i for i, w in enumerate(windows) for _ in range(w.regions[0] * w.regions[1]))


def region_overlap_mask(windows):
    """Which regions share area, by their relative extents.

    Cells of one grid only touch and never overlap, even where the pooled
    pixel spans of a non-divisible map share a boundary pixel.

    Args:
        windows: `Window`s from `kerasdistill.ops.multiscale.resolve_scales`.

    Returns:
        A boolean NumPy `(P, P)` array, `True` where region `a` and region `b`
        intersect with a positive area (the diagonal is `True`).
    """
    boxes = [(r, c) for w in windows for r in w.row_extents for c in w.col_extents]

    def overlaps(first, second):
        return first[0] < second[1] and second[0] < first[1]

    return np.array([[overlaps(a[0], b[0]) and overlaps(a[1], b[1]) for b in boxes] for a in boxes])
