import numpy as np
import pytest

from kerasdistill.ops.categorization import (
    anchor_weighted_mean,
    consistent_pair_mask,
    consistent_regions,
)
from kerasdistill.ops.contrastive import sample_wise_info_nce
from kerasdistill.ops.normalize import l2_normalize


def multi_positive(student, teacher, tau, positive_mask=None, keep_mask=None, symmetric=False):
    return sample_wise_info_nce(student, teacher, tau, keep_mask, symmetric, positive_mask)

LABELS = np.array([0, 1, 0, 2, 1, 0], "int32")


def _unit(shape, seed):
    x = np.random.default_rng(seed).normal(size=shape)
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype("float32")


def _reference_supcon(student, teacher, tau, positives, keep):
    """Loop-based NumPy loss; `positives` / `keep` are `(P, B, B)` booleans."""
    batch, regions, _ = student.shape
    loss = np.zeros((batch, regions))
    for r in range(regions):
        for i in range(batch):
            kept = [j for j in range(batch) if keep[r, i, j] or j == i]
            pos = [j for j in kept if positives[r, i, j] or j == i]
            logits = {j: float(student[i, r] @ teacher[j, r]) / tau for j in kept}
            log_denominator = np.log(sum(np.exp(logits[j]) for j in kept))
            loss[i, r] = log_denominator - np.mean([logits[j] for j in pos])
    return loss


def test_consistent_regions_match_numpy_argmax():
    logits = np.random.default_rng(0).normal(size=(6, 5, 3)).astype("float32")
    out = np.asarray(consistent_regions(logits, LABELS.reshape(-1, 1)))
    np.testing.assert_array_equal(out, logits.argmax(-1) == LABELS[:, None])
    assert 0 < out.sum() < out.size


def test_consistent_pair_mask_matches_loop():
    consistent = np.random.default_rng(1).random((6, 4)) > 0.4
    out = np.asarray(consistent_pair_mask(consistent))
    expected = np.array(
        [
            [[consistent[i, r] and consistent[j, r] for j in range(6)] for i in range(6)]
            for r in range(4)
        ]
    )
    np.testing.assert_array_equal(out, expected)


def test_with_no_extra_positive_and_everything_kept_it_is_the_plain_info_nce():
    s, t = _unit((6, 5, 8), 2), _unit((6, 5, 8), 3)
    none = np.zeros((5, 6, 6), bool)
    everything = np.ones((5, 6, 6), bool)
    expected = _reference_supcon(s, t, 0.1, none, everything)
    for masks in ((None, None), (none, everything)):
        np.testing.assert_allclose(multi_positive(s, t, 0.1, *masks), expected, rtol=1e-5)


def test_same_class_positives_and_region_keep_mask_match_numpy():
    s, t = _unit((6, 5, 8), 4), _unit((6, 5, 8), 5)
    same_class = LABELS[:, None] == LABELS[None, :]
    consistent = np.random.default_rng(6).random((6, 5)) > 0.3
    keep = np.asarray(consistent_pair_mask(consistent))
    out = np.asarray(multi_positive(s, t, 0.2, same_class, keep))
    expected = _reference_supcon(s, t, 0.2, np.broadcast_to(same_class, keep.shape), keep)
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)
    # Extra positives change the loss; a (B, B) keep mask applies to every region.
    plain = np.asarray(multi_positive(s, t, 0.2))
    assert np.abs(out - plain).max() > 0.1
    everything = np.ones((5, 6, 6), bool)
    only_classes = np.asarray(multi_positive(s, t, 0.2, same_class))
    expected = _reference_supcon(
        s, t, 0.2, np.broadcast_to(same_class, everything.shape), everything
    )
    np.testing.assert_allclose(only_classes, expected, rtol=1e-5, atol=1e-5)


def test_symmetric_multi_positive_averages_both_directions():
    s, t = _unit((6, 3, 8), 7), _unit((6, 3, 8), 8)
    same_class = LABELS[:, None] == LABELS[None, :]
    forward = np.asarray(multi_positive(s, t, 0.1, same_class))
    # The teacher-anchored direction is the same loss with the two sides swapped.
    backward = np.asarray(multi_positive(t, s, 0.1, same_class))
    both = np.asarray(multi_positive(s, t, 0.1, same_class, symmetric=True))
    np.testing.assert_allclose(both, 0.5 * (forward + backward), rtol=1e-5)


def test_anchor_weighted_mean():
    loss = np.arange(6, dtype="float32").reshape(2, 3)
    weights = np.array([[1, 0, 1], [0, 1, 0.5]], "float32")
    assert float(anchor_weighted_mean(loss, weights)) == pytest.approx((0 + 2 + 4 + 2.5) / 3.5)
    regions = np.array([0.5, 0.25, 0.25], "float32")
    expected = (0 * 0.5 + 2 * 0.25 + 4 * 0.25 + 5 * 0.125) / (0.5 + 0.25 + 0.25 + 0.125)
    assert float(anchor_weighted_mean(loss, weights, regions)) == pytest.approx(expected)
    assert float(anchor_weighted_mean(loss, np.ones((2, 3)), regions)) == pytest.approx(
        float(np.sum(loss.mean(0) * regions))
    )
    assert float(anchor_weighted_mean(loss, np.zeros((2, 3)))) == 0.0


def test_invalid_temperature_raises():
    s = np.asarray(l2_normalize(np.ones((2, 1, 3), "float32"), min_norm=1e-6))
    with pytest.raises(ValueError, match="temperature must be > 0"):
        multi_positive(s, s, 0.0)
