"""The L2 normalizer shared by distillation methods, computed in float32."""

from keras import ops


def l2_normalize(x, axis=-1, min_norm=0.0):
    """Divides `x` by its L2 norm along `axis`.

    With `min_norm = 0` this is the plain `x / sqrt(sum(x^2))` of RepDistiller's
    CRD `Normalize` module (no guard: an all-zero vector gives NaN). With
    `min_norm > 0` the norm is clamped from below, `x / max(||x||, min_norm)`,
    as PyTorch's `F.normalize` (whose default is `1e-12`, used by attention
    transfer); zero vectors then stay zero.

    Args:
        x: A floating tensor; computed in float32.
        axis: The axis to normalize along.
        min_norm: Lower bound of the norm, `>= 0`.

    Returns:
        A float32 tensor shaped like `x`.
    """
    if min_norm < 0:
        raise ValueError(f"l2_normalize min_norm must be >= 0, got {min_norm}.")
    x = ops.cast(x, "float32")
    norm = ops.sqrt(ops.sum(ops.square(x), axis=axis, keepdims=True))
    if min_norm > 0:
        norm = ops.maximum(norm, min_norm)
    return x / norm
