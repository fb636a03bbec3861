"""NumPy references of MSDCRD's pooling and losses, independent of kerasdistill."""

import numpy as np


def maps(shape, seed):
    return np.random.default_rng(seed).normal(size=shape).astype("float32")


def pool_spans(x, spans):
    """`(B, P, C)` means of `x` over `(r0, r1, c0, c1)` pixel boxes, in order."""
    return np.stack([x[:, r0:r1, c0:c1].mean(axis=(1, 2)) for r0, r1, c0, c1 in spans], axis=1)


def grid_spans(height, width, grids):
    """Adaptive-pooling cells `(r0, r1, c0, c1)`: cell `i` of grid `g` spans `floor(iH/g)` to
    `ceil((i+1)H/g) - 1`."""
    return [
        (i * height // g, -(-(i + 1) * height // g), j * width // g, -(-(j + 1) * width // g))
        for g in grids
        for i in range(g)
        for j in range(g)
    ]


def pool(x, grids):
    """Adaptive average pooling of an NHWC map at several grid sizes, `(B, P, C)`."""
    return pool_spans(x, grid_spans(x.shape[1], x.shape[2], grids))


def unit(x):
    x = np.asarray(x, "float64")
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def sample_wise(s, t, tau, keep=None, positives=None):
    """`(B, P)` InfoNCE of `s[i, r]` against `t[j, r]`; masks `(B, B)` or `(P, B, B)`.

    The positive `j = i` is always kept; extra positives are averaged outside the log.
    """
    logits = np.einsum("ird,jrd->rij", s, t) / tau  # anchor i against image j, per region
    eye = np.eye(s.shape[0], dtype=bool)
    kept = np.broadcast_to(True if keep is None else eye | keep, logits.shape)
    pos = np.broadcast_to(eye if positives is None else eye | positives, logits.shape) & kept
    log_denominator = np.log((np.exp(logits) * kept).sum(-1))
    return (log_denominator - (logits * pos).sum(-1) / pos.sum(-1)).T


def feature_wise(s, t, tau, keep=None):
    """`(B, P)` InfoNCE of `s[i, r]` against `t[i, q]`; `keep` a `(P, P)` mask."""
    logits = np.einsum("ird,iqd->irq", s, t) / tau  # region r against region q, per image
    eye = np.eye(s.shape[1], dtype=bool)
    kept = True if keep is None else eye | np.asarray(keep)
    return np.log((np.exp(logits) * kept).sum(-1)) - np.einsum("irr->ir", logits)


def terms(teacher_map, student_map, tau=0.07, grids=(1, 2, 4)):
    """`(L_sw, L_fw)` of one tap with `projection="none"`, means over anchors."""
    s, t = unit(pool(student_map, grids)), unit(pool(teacher_map, grids))
    return float(np.mean(sample_wise(s, t, tau))), float(np.mean(feature_wise(s, t, tau)))
