"""Loss building blocks shared by distillation methods, computed in float32."""

from keras import ops


def kl_divergence_with_temperature(student_logits, teacher_logits, temperature):
    """Hinton's soft-target loss: `T^2 * KL(softmax(t/T) || softmax(s/T))`.

    Summed over classes and averaged over the batch, as RepDistiller's
    `DistillKL` (`KL(reduction="sum") * T^2 / batch`).

    Args:
        student_logits: `(batch, classes)` tensor.
        teacher_logits: `(batch, classes)` tensor.
        temperature: Softening temperature `T > 0`.

    Returns:
        A float32 scalar.
    """
    s = ops.cast(student_logits, "float32") / temperature
    t = ops.cast(teacher_logits, "float32") / temperature
    log_p_s = ops.log_softmax(s, axis=-1)
    log_p_t = ops.log_softmax(t, axis=-1)
    kl = ops.sum(ops.exp(log_p_t) * (log_p_t - log_p_s), axis=-1)
    return ops.mean(kl) * (temperature**2)


def sparse_cross_entropy_per_example(labels, logits, label_smoothing=0.0):
    """Softmax cross-entropy of each example, in float32.

    With `label_smoothing = e` the target is `(1 - e) * one_hot + e / K` over
    `K` classes, as PyTorch's `CrossEntropyLoss(label_smoothing=e)` and
    Keras's `CategoricalCrossentropy(label_smoothing=e)`.

    Args:
        labels: Integer labels, shape `(batch,)`.
        logits: `(batch, classes)` tensor.
        label_smoothing: `e` in `[0, 1)`.

    Returns:
        A float32 tensor of shape `(batch,)`.
    """
    log_p = ops.log_softmax(ops.cast(logits, "float32"), axis=-1)
    labels = ops.cast(ops.reshape(labels, (-1,)), "int32")
    picked = ops.take_along_axis(log_p, ops.expand_dims(labels, -1), axis=-1)[:, 0]
    if not label_smoothing:
        return -picked
    return -((1.0 - label_smoothing) * picked + label_smoothing * ops.mean(log_p, axis=-1))


def sparse_cross_entropy(labels, logits, label_smoothing=0.0):
    """Mean softmax cross-entropy over the batch, in float32.

    Args:
        labels: Integer labels, shape `(batch,)`.
        logits: `(batch, classes)` tensor.
        label_smoothing: `e` in `[0, 1)`; see `sparse_cross_entropy_per_example`.

    Returns:
        A float32 scalar.
    """
    return ops.mean(sparse_cross_entropy_per_example(labels, logits, label_smoothing))


def is_one_hot(labels, logits):
    """Whether `labels` are one-hot (or soft) targets of `logits`' classes, by static shape."""
    classes = logits.shape[-1]
    return len(labels.shape) == 2 and classes is not None and classes > 1 and (
        labels.shape[-1] == classes
    )


def class_ids(labels, logits):
    """Integer class ids `(batch,)` of sparse `(batch,)`/`(batch, 1)` or one-hot labels."""
    if is_one_hot(labels, logits):
        return ops.argmax(labels, axis=-1)
    return ops.cast(ops.reshape(labels, (-1,)), "int32")


def cross_entropy(labels, logits, label_smoothing=0.0):
    """Mean softmax cross-entropy of class ids or one-hot (soft) targets, in float32.

    Args:
        labels: Class ids `(batch,)` or `(batch, 1)`, or targets `(batch, classes)`.
        logits: `(batch, classes)` tensor.
        label_smoothing: `e` in `[0, 1)`; the target becomes `(1 - e) * y + e / K`.

    Returns:
        A float32 scalar.
    """
    if not is_one_hot(labels, logits):
        return sparse_cross_entropy(labels, logits, label_smoothing)
    log_p = ops.log_softmax(ops.cast(logits, "float32"), axis=-1)
    targets = ops.cast(labels, "float32")
    if label_smoothing:
        targets = (1.0 - label_smoothing) * targets + label_smoothing / logits.shape[-1]
    return ops.mean(-ops.sum(targets * log_p, axis=-1))
