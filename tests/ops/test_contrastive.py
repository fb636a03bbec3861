import numpy as np
import pytest

from kerasdistill.ops.contrastive import (
    different_class_mask,
    feature_wise_info_nce,
    same_group_mask,
    sample_wise_info_nce,
    weighted_region_mean,
)
from kerasdistill.ops.normalize import l2_normalize

B, P, D = 5, 4, 6


def _unit(x):
    x = np.asarray(x, "float64")
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _features(seed=0):
    rng = np.random.default_rng(seed)
    teacher = _unit(rng.normal(size=(B, P, D)))
    student = _unit(teacher + 0.5 * rng.normal(size=(B, P, D)))
    return student.astype("float32"), teacher.astype("float32")


def _nll(anchor, positive, candidates, tau):
    """-log softmax of the positive among the candidates, written out term by term."""
    denominator = 0.0
    for c in candidates:
        denominator += np.exp(np.dot(anchor, c) / tau)
    return -(np.dot(anchor, positive) / tau - np.log(denominator))


def reference_sample_wise(s, t, tau, keep=None, symmetric=False):
    s, t = s.astype("float64"), t.astype("float64")
    out = np.zeros((B, P))
    for i in range(B):
        for r in range(P):
            js = [j for j in range(B) if j == i or keep is None or keep[i, j]]
            loss = _nll(s[i, r], t[i, r], [t[j, r] for j in js], tau)
            if symmetric:
                reverse = _nll(t[i, r], s[i, r], [s[j, r] for j in js], tau)
                loss = 0.5 * (loss + reverse)
            out[i, r] = loss
    return out


def reference_feature_wise(s, t, tau, keep=None, symmetric=False):
    s, t = s.astype("float64"), t.astype("float64")
    out = np.zeros((B, P))
    for i in range(B):
        for r in range(P):
            rs = [q for q in range(P) if q == r or keep is None or keep[r, q]]
            loss = _nll(s[i, r], t[i, r], [t[i, q] for q in rs], tau)
            if symmetric:
                reverse = _nll(t[i, r], s[i, r], [s[i, q] for q in rs], tau)
                loss = 0.5 * (loss + reverse)
            out[i, r] = loss
    return out


@pytest.mark.parametrize("symmetric", [False, True])
@pytest.mark.parametrize("tau", [0.1, 0.5])
def test_sample_wise_matches_numpy(symmetric, tau):
    s, t = _features()
    out = np.asarray(sample_wise_info_nce(s, t, tau, symmetric=symmetric))
    expected = reference_sample_wise(s, t, tau, symmetric=symmetric)
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=2e-6)


@pytest.mark.parametrize("symmetric", [False, True])
def test_feature_wise_matches_numpy(symmetric):
    s, t = _features(1)
    out = np.asarray(feature_wise_info_nce(s, t, 0.2, symmetric=symmetric))
    expected = reference_feature_wise(s, t, 0.2, symmetric=symmetric)
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=2e-6)


@pytest.mark.parametrize("symmetric", [False, True])
def test_same_class_negatives_are_masked(symmetric):
    s, t = _features(2)
    labels = np.array([0, 1, 0, 2, 1])
    keep = labels[:, None] != labels[None, :]
    mask = different_class_mask(labels)
    np.testing.assert_array_equal(np.asarray(mask), keep)
    out = np.asarray(sample_wise_info_nce(s, t, 0.1, mask, symmetric))
    np.testing.assert_allclose(
        out, reference_sample_wise(s, t, 0.1, keep, symmetric), rtol=1e-5, atol=2e-6
    )
    # Moving the teacher features of image 2 (class 0) leaves image 0 (class 0)
    # untouched but changes image 1 (class 1), for which image 2 is a negative.
    moved = t.copy()
    moved[2] = -moved[2]
    out_moved = np.asarray(sample_wise_info_nce(s, moved, 0.1, mask, symmetric))
    np.testing.assert_allclose(out_moved[0], out[0], rtol=1e-6)
    assert not np.allclose(out_moved[1], out[1])


def test_feature_wise_group_mask_matches_numpy():
    s, t = _features(3)
    groups = [0, 1, 1, 1]
    keep = np.array(groups)[:, None] == np.array(groups)[None, :]
    mask = same_group_mask(groups)
    np.testing.assert_array_equal(np.asarray(mask), keep)
    out = np.asarray(feature_wise_info_nce(s, t, 0.1, mask, symmetric=True))
    expected = reference_feature_wise(s, t, 0.1, keep, True)
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=2e-6)
    # Region 0 is alone in its group: only its positive remains, the loss is 0.
    np.testing.assert_allclose(out[:, 0], 0.0, atol=1e-6)


def test_aligned_student_scores_lower_than_shuffled():
    _, t = _features(4)
    shuffled = t[np.roll(np.arange(B), 1)]
    for loss_fn in (sample_wise_info_nce, feature_wise_info_nce):
        aligned = float(np.mean(loss_fn(t, t, 0.1)))
        assert aligned < float(np.mean(loss_fn(shuffled, t, 0.1)))
    region_shuffled = t[:, np.roll(np.arange(P), 1)]
    assert float(np.mean(feature_wise_info_nce(t, t, 0.1))) < float(
        np.mean(feature_wise_info_nce(region_shuffled, t, 0.1))
    )


def test_batch_permutation_leaves_the_loss_unchanged():
    s, t = _features(5)
    labels = np.array([3, 1, 3, 0, 1])
    perm = np.array([4, 2, 0, 1, 3])

    def total(s, t, labels):
        sw = sample_wise_info_nce(s, t, 0.1, different_class_mask(labels), symmetric=True)
        fw = feature_wise_info_nce(s, t, 0.1)
        return float(weighted_region_mean(sw)), float(weighted_region_mean(fw))

    permuted = total(s[perm], t[perm], labels[perm])
    np.testing.assert_allclose(total(s, t, labels), permuted, rtol=1e-6)


def test_float16_large_features_stay_finite_at_low_temperature():
    rng = np.random.default_rng(6)
    t = (rng.normal(size=(B, P, D)) * 3e4).clip(-6e4, 6e4).astype("float16")
    s = (rng.normal(size=(B, P, D)) * 3e4).clip(-6e4, 6e4).astype("float16")
    s_unit, t_unit = l2_normalize(s, min_norm=1e-6), l2_normalize(t, min_norm=1e-6)
    assert np.asarray(s_unit).dtype == np.float32
    for loss_fn in (sample_wise_info_nce, feature_wise_info_nce):
        out = loss_fn(s_unit, t_unit, 0.07, symmetric=True)
        assert np.asarray(out).dtype == np.float32
        assert np.all(np.isfinite(np.asarray(out)))
    # Unnormalized float16 similarities (|logit| ~ 1e11) still give finite values.
    raw = sample_wise_info_nce(s, t, 0.07)
    assert np.all(np.isfinite(np.asarray(raw)))


def test_l2_normalize_unit_norm_and_zero_vector():
    x = np.array([[3.0, 4.0], [0.0, 0.0]], "float32")
    out = np.asarray(l2_normalize(x, min_norm=1e-6))
    np.testing.assert_allclose(out, [[0.6, 0.8], [0.0, 0.0]])
    # Without a floor it is RepDistiller's plain x / ||x||: a zero vector gives NaN.
    assert np.isnan(np.asarray(l2_normalize(x))[1]).all()
    # The floor clamps the norm: x / max(||x||, min_norm).
    np.testing.assert_allclose(np.asarray(l2_normalize(x[:1], min_norm=10.0)), [[0.3, 0.4]])
    with pytest.raises(ValueError, match="min_norm"):
        l2_normalize(x, min_norm=-1.0)


def test_weighted_region_mean():
    loss = np.array([[1.0, 2.0, 4.0], [3.0, 2.0, 0.0]], "float32")
    assert float(weighted_region_mean(loss)) == pytest.approx(2.0)
    # Per-region batch means are (2, 2, 2) -> any weights summing to 1 give 2.
    assert float(weighted_region_mean(loss, (0.5, 0.25, 0.25))) == pytest.approx(2.0)
    assert float(weighted_region_mean(loss[:1], (1.0, 0.0, 0.0))) == pytest.approx(1.0)


def test_nonpositive_temperature_raises():
    s, t = _features()
    with pytest.raises(ValueError, match="temperature must be > 0"):
        sample_wise_info_nce(s, t, 0.0)
