import numpy as np
import pytest

from kerasdistill.ops.contrastive import feature_wise_info_nce, sample_wise_info_nce
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


def reference_sample_wise(s, t, tau):
    s, t = s.astype("float64"), t.astype("float64")
    out = np.zeros((B, P))
    for i in range(B):
        for r in range(P):
            out[i, r] = _nll(s[i, r], t[i, r], [t[j, r] for j in range(B)], tau)
    return out


def reference_feature_wise(s, t, tau):
    s, t = s.astype("float64"), t.astype("float64")
    out = np.zeros((B, P))
    for i in range(B):
        for r in range(P):
            out[i, r] = _nll(s[i, r], t[i, r], [t[i, q] for q in range(P)], tau)
    return out


@pytest.mark.parametrize("tau", [0.1, 0.5])
def test_sample_wise_matches_numpy(tau):
    s, t = _features()
    out = np.asarray(sample_wise_info_nce(s, t, tau))
    np.testing.assert_allclose(out, reference_sample_wise(s, t, tau), rtol=1e-5, atol=2e-6)


def test_feature_wise_matches_numpy():
    s, t = _features(1)
    out = np.asarray(feature_wise_info_nce(s, t, 0.2))
    np.testing.assert_allclose(out, reference_feature_wise(s, t, 0.2), rtol=1e-5, atol=2e-6)


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


def test_float16_large_features_stay_finite_at_low_temperature():
    rng = np.random.default_rng(6)
    t = (rng.normal(size=(B, P, D)) * 3e4).clip(-6e4, 6e4).astype("float16")
    s = (rng.normal(size=(B, P, D)) * 3e4).clip(-6e4, 6e4).astype("float16")
    s_unit, t_unit = l2_normalize(s, min_norm=1e-6), l2_normalize(t, min_norm=1e-6)
    assert np.asarray(s_unit).dtype == np.float32
    for loss_fn in (sample_wise_info_nce, feature_wise_info_nce):
        out = loss_fn(s_unit, t_unit, 0.07)
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


def test_nonpositive_temperature_raises():
    s, t = _features()
    with pytest.raises(ValueError, match="temperature must be > 0"):
        sample_wise_info_nce(s, t, 0.0)
