"""In-batch contrastive (InfoNCE) losses between student and teacher local features.

Features are `(batch, P, dim)` tensors: `P` local feature vectors (regions) per
image, the student's and the teacher's in the same region order. The positive
of the student vector `(i, r)` is always the teacher vector `(i, r)`; the losses
differ in their negatives:

- sample-wise: the teacher vectors `(j, r)` of the other images `j != i`, at the
  same region;
- feature-wise: the teacher vectors `(i, r')` of the other regions `r' != r` of
  the same image.

Both are `info_nce`. Everything runs in float32 (inputs of any float dtype are
cast), with a max-subtracted log-sum-exp, and costs `O(B^2 P + B P^2)`
similarities computed by batched matmuls. The losses return one value per
anchor, `(batch, P)`.
"""

from keras import ops


def info_nce(anchors, candidates, temperature):
    """InfoNCE of every anchor against the candidates of its group.

    `L[g, n] = log sum_m exp(a_gn . c_gm / tau) - a_gn . c_gn / tau`

    Args:
        anchors: `(G, N, D)` float32 tensor; anchor `(g, n)` has positive
            `candidates[g, n]` and negatives `candidates[g, m]`, `m != n`.
        candidates: `(G, N, D)` float32 tensor.
        temperature: Softmax temperature `tau > 0`.

    Returns:
        A `(G, N)` float32 tensor of per-anchor losses.

    Raises:
        ValueError: If `temperature <= 0`.
    """
    if temperature <= 0:
        raise ValueError(f"Contrastive temperature must be > 0, got {temperature}.")
    logits = ops.matmul(anchors, ops.transpose(candidates, (0, 2, 1))) / temperature
    positives = ops.sum(anchors * candidates, axis=-1) / temperature
    return ops.logsumexp(logits, axis=-1) - positives


def sample_wise_info_nce(student, teacher, temperature=0.1):
    """Contrasts each student local feature with the same region of other images.

    `L[i, r] = -log( exp(s_ir . t_ir / tau) / sum_j exp(s_ir . t_jr / tau) )`,
    the sum running over the batch images `j`.

    Args:
        student: `(batch, P, dim)` student features, L2-normalized.
        teacher: `(batch, P, dim)` teacher features, L2-normalized.
        temperature: Softmax temperature `tau > 0`.

    Returns:
        A `(batch, P)` float32 tensor of per-anchor losses.
    """
    s = ops.transpose(ops.cast(student, "float32"), (1, 0, 2))
    t = ops.transpose(ops.cast(teacher, "float32"), (1, 0, 2))
    return ops.transpose(info_nce(s, t, temperature), (1, 0))


def feature_wise_info_nce(student, teacher, temperature=0.1):
    """Contrasts each student local feature with the other regions of its image.

    `L[i, r] = -log( exp(s_ir . t_ir / tau) / sum_r' exp(s_ir . t_ir' / tau) )`,
    the sum running over the regions `r'` of image `i`.

    Args:
        student: `(batch, P, dim)` student features, L2-normalized.
        teacher: `(batch, P, dim)` teacher features, L2-normalized.
        temperature: Softmax temperature `tau > 0`.

    Returns:
        A `(batch, P)` float32 tensor of per-anchor losses.
    """
    return info_nce(ops.cast(student, "float32"), ops.cast(teacher, "float32"), temperature)
