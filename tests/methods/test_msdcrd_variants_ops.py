import numpy as np
import pytest

from kerasdistill.methods.msdcrd_variants_ops import (
    anchor_weighted_mean,
    consistent_pair_mask,
    consistent_regions,
    different_class_mask,
    masked_feature_wise_info_nce,
    masked_sample_wise_info_nce,
    region_overlap_mask,
    region_scale_ids,
    same_group_mask,
    sliding_extents,
)
from kerasdistill.ops.contrastive import feature_wise_info_nce, sample_wise_info_nce
from kerasdistill.ops.multiscale import matching_windows, pool_regions, resolve_scales

LABELS = np.array([0, 1, 0, 2, 1, 0], "int32")


def _unit(shape, seed):
    x = np.random.default_rng(seed).normal(size=shape)
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype("float32")


def _nll(anchor, positives, candidates, tau):
    """-mean log softmax of the positives among the candidates, written out term by term."""
    log_denominator = np.log(sum(np.exp(float(anchor @ c) / tau) for c in candidates))
    return log_denominator - np.mean([float(anchor @ p) / tau for p in positives])


def _reference_sample_wise(s, t, tau, keep=None, positives=None, symmetric=False):
    """Loop-based NumPy loss; `keep` / `positives` are `(P, B, B)` booleans or `None`."""
    batch, regions, _ = s.shape
    keep = np.ones((regions, batch, batch), bool) if keep is None else keep
    positives = np.zeros((regions, batch, batch), bool) if positives is None else positives
    loss = np.zeros((batch, regions))
    for r in range(regions):
        for i in range(batch):
            kept = [j for j in range(batch) if keep[r, i, j] or j == i]
            pos = [j for j in kept if positives[r, i, j] or j == i]
            loss[i, r] = _nll(s[i, r], [t[j, r] for j in pos], [t[j, r] for j in kept], tau)
            if symmetric:
                reverse = _nll(t[i, r], [s[j, r] for j in pos], [s[j, r] for j in kept], tau)
                loss[i, r] = 0.5 * (loss[i, r] + reverse)
    return loss


def _reference_feature_wise(s, t, tau, keep, symmetric=False):
    batch, regions, _ = s.shape
    loss = np.zeros((batch, regions))
    for i in range(batch):
        for r in range(regions):
            kept = [q for q in range(regions) if keep[r, q] or q == r]
            loss[i, r] = _nll(s[i, r], [t[i, r]], [t[i, q] for q in kept], tau)
            if symmetric:
                reverse = _nll(t[i, r], [s[i, r]], [s[i, q] for q in kept], tau)
                loss[i, r] = 0.5 * (loss[i, r] + reverse)
    return loss


def test_without_masks_it_is_the_core_info_nce():
    s, t = _unit((6, 5, 8), 2), _unit((6, 5, 8), 3)
    np.testing.assert_allclose(
        masked_sample_wise_info_nce(s, t, 0.1), sample_wise_info_nce(s, t, 0.1), rtol=1e-6
    )
    np.testing.assert_allclose(
        masked_feature_wise_info_nce(s, t, 0.1), feature_wise_info_nce(s, t, 0.1), rtol=1e-6
    )
    with pytest.raises(ValueError, match="temperature must be > 0"):
        masked_sample_wise_info_nce(s, t, 0.0)


@pytest.mark.parametrize("symmetric", [False, True])
def test_masked_sample_wise_matches_numpy(symmetric):
    s, t = _unit((6, 5, 8), 4), _unit((6, 5, 8), 5)
    different = np.asarray(different_class_mask(LABELS))
    np.testing.assert_array_equal(different, LABELS[:, None] != LABELS[None, :])
    consistent = np.random.default_rng(6).random((6, 5)) > 0.3
    pairs = np.asarray(consistent_pair_mask(consistent))
    cases = [
        ({"keep_mask": different}, {"keep": np.broadcast_to(different, pairs.shape)}),
        ({"positive_mask": ~different}, {"positives": np.broadcast_to(~different, pairs.shape)}),
        (
            {"keep_mask": pairs, "positive_mask": ~different},
            {"keep": pairs, "positives": np.broadcast_to(~different, pairs.shape)},
        ),
    ]
    for masks, reference in cases:
        out = np.asarray(masked_sample_wise_info_nce(s, t, 0.2, symmetric=symmetric, **masks))
        expected = _reference_sample_wise(s, t, 0.2, symmetric=symmetric, **reference)
        np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)


def test_masked_feature_wise_matches_numpy():
    s, t = _unit((5, 4, 6), 3), _unit((5, 4, 6), 4)
    groups = [0, 1, 1, 1]
    keep = np.array(groups)[:, None] == np.array(groups)[None, :]
    np.testing.assert_array_equal(same_group_mask(groups), keep)
    out = np.asarray(masked_feature_wise_info_nce(s, t, 0.1, keep, symmetric=True))
    np.testing.assert_allclose(
        out, _reference_feature_wise(s, t, 0.1, keep, True), rtol=1e-5, atol=2e-6
    )
    # Region 0 is alone in its group: only its positive remains, the loss is 0.
    np.testing.assert_allclose(out[:, 0], 0.0, atol=1e-6)


def test_consistent_regions_and_pairs_match_numpy():
    logits = np.random.default_rng(0).normal(size=(6, 5, 3)).astype("float32")
    consistent = np.asarray(consistent_regions(logits, LABELS.reshape(-1, 1)))
    np.testing.assert_array_equal(consistent, logits.argmax(-1) == LABELS[:, None])
    assert 0 < consistent.sum() < consistent.size
    expected = np.array(
        [
            [[consistent[i, r] and consistent[j, r] for j in range(6)] for i in range(6)]
            for r in range(5)
        ]
    )
    np.testing.assert_array_equal(np.asarray(consistent_pair_mask(consistent)), expected)


def test_anchor_weighted_mean():
    loss = np.arange(6, dtype="float32").reshape(2, 3)
    weights = np.array([[1, 0, 1], [0, 1, 0.5]], "float32")
    assert float(anchor_weighted_mean(loss, weights)) == pytest.approx((0 + 2 + 4 + 2.5) / 3.5)
    regions = np.array([0.5, 0.25, 0.25], "float32")
    expected = (0 * 0.5 + 2 * 0.25 + 4 * 0.25 + 5 * 0.125) / (0.5 + 0.25 + 0.25 + 0.125)
    assert float(anchor_weighted_mean(loss, weights, regions)) == pytest.approx(expected)
    assert float(anchor_weighted_mean(loss)) == pytest.approx(2.5)
    assert float(anchor_weighted_mean(loss, region_weights=regions)) == pytest.approx(
        float(np.sum(loss.mean(0) * regions))
    )
    assert float(anchor_weighted_mean(loss, np.zeros((2, 3)))) == 0.0


def _ramp(height, width):
    """A `(1, H, W, 1)` map holding 0..H*W-1 row-major."""
    return np.arange(height * width, dtype="float32").reshape(1, height, width, 1)


def test_sliding_windows_in_pixels_and_fractions():
    pixels = resolve_scales((4, 4), ((2, 1), (4, 4)), sliding_extents)
    out = np.asarray(pool_regions(_ramp(4, 4), pixels))[0, :, 0]
    # 2x2 windows at stride 1: mean of a[i:i+2, j:j+2] = 4i + j + 2.5, then the global window.
    np.testing.assert_allclose(out, [4 * i + j + 2.5 for i in range(3) for j in range(3)] + [7.5])
    fractions = resolve_scales((4, 4), ((0.5, 0.25),), sliding_extents)
    assert fractions[0].row_spans == pixels[0].row_spans
    teacher, student = matching_windows((2, 8, 8, 3), (2, 4, 4, 5), ((0.5, 0.25),), sliding_extents)
    assert teacher[0].row_spans == teacher[0].col_spans == ((0, 4), (2, 6), (4, 8))
    assert student[0].row_spans == ((0, 2), (1, 3), (2, 4))
    # A 7-pixel side: extents [0, .5), [.25, .75), [.5, 1) widened to whole pixels.
    (window,) = resolve_scales((7, 7), ((0.5, 0.25),), sliding_extents)
    assert window.row_spans == ((0, 4), (1, 6), (3, 7))


@pytest.mark.parametrize(
    "spatial, scale, message",
    [
        ((8, 8), (0.3, 1), "not a whole number of pixels"),
        ((8, 8), (3, 2), "does not tile"),
        ((4, 4), (8, 1), "exceeds the map"),
        ((9, 9), (0.3, 0.3), "does not tile the side"),
        ((4, 4), (0.125, 0.125), "less than one pixel"),
        ((4, 4), (0.5, "1"), "must be an int or a float"),
        ((4, 4), (1.5, 0.5), r"must be in \(0, 1\]"),
        ((4, 4), 2, r"\(window, stride\) pairs"),
        ((4, 4), (0, 1), "must be >= 1 pixel"),
    ],
)
def test_invalid_sliding_windows_raise_clear_errors(spatial, scale, message):
    with pytest.raises(ValueError, match=message):
        resolve_scales(spatial, (scale,), sliding_extents)


def _reference_overlap(boxes):
    """Boxes `(r0, r1, c0, c1)` overlap where both intervals intersect with positive length."""
    boxes = np.asarray(boxes, "float64")

    def intersection(lo, hi):
        upper = np.minimum(boxes[:, None, hi], boxes[None, :, hi])
        return upper - np.maximum(boxes[:, None, lo], boxes[None, :, lo])

    return (intersection(0, 1) > 1e-9) & (intersection(2, 3) > 1e-9)


@pytest.mark.parametrize("side", [7, 8])
def test_region_overlap_mask_and_scale_ids_of_grids(side):
    grids = (1, 2, 4)
    boxes = [
        (i / g, (i + 1) / g, j / g, (j + 1) / g) for g in grids for i in range(g) for j in range(g)
    ]
    windows = resolve_scales((side, side), grids)
    mask = region_overlap_mask(windows)
    np.testing.assert_array_equal(mask, _reference_overlap(boxes))
    # The first 4x4 cell (region 5) overlaps the global region, the top-left quadrant and
    # itself only, even on 7x7 maps where its rows (0-1) and its neighbour's (1-3) share one.
    assert np.flatnonzero(mask[5]).tolist() == [0, 1, 5]
    assert region_scale_ids(windows) == (0,) + (1,) * 4 + (2,) * 16


def test_region_overlap_mask_of_sliding_windows():
    windows = resolve_scales((8, 8), ((1.0, 1.0), (0.5, 0.25)), sliding_extents)
    starts = (0.0, 0.25, 0.5)
    boxes = [(0, 1, 0, 1)] + [(a, a + 0.5, b, b + 0.5) for a in starts for b in starts]
    mask = region_overlap_mask(windows)
    np.testing.assert_array_equal(mask, _reference_overlap(boxes))
    assert not mask[1, 9]  # top-left and bottom-right half-windows only touch at a corner
