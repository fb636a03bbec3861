"""The cross-replica helpers through which methods see data parallelism.

Under a `tf.distribute` strategy each replica computes the taps of its shard
of the global batch. A method that needs the whole batch (contrastive
negatives, memory-bank updates, normalization constants) gathers it with
`all_gather`; everything else stays per replica. Outside a multi-replica
TensorFlow step the helpers are identities: on one device, on JAX (where
`keras.distribution.DataParallel` already gives every op the global batch)
and on PyTorch (whose Keras `fit` trains on one device).
"""

import keras
from keras import ops


def _replica_context():
    """Returns the TF replica context of a multi-replica step, else `None`."""
    if keras.backend.backend() != "tensorflow":
        return None
    import tensorflow as tf

    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync < 2:
        return None
    return context


def _gather(context, x):
    """`context.all_gather(x, axis=0)`, placing `x` on this worker's device first.

    With one device per worker (multi-worker CPU or one-GPU workers)
    TensorFlow's gather finds no destination for a tensor it cannot place.
    """
    import tensorflow as tf

    devices = tf.distribute.get_strategy().extended.worker_devices
    if len(devices) == 1:
        with tf.device(devices[0]):
            x = tf.identity(x)
    return context.all_gather(x, axis=0)


def num_replicas():
    """Returns the number of replicas sharing the global batch of this step.

    Returns:
        A Python int, 1 outside a multi-replica `tf.distribute` step.
    """
    if keras.backend.backend() != "tensorflow":
        return 1
    import tensorflow as tf

    context = tf.distribute.get_replica_context()
    if context is None:
        return tf.distribute.get_strategy().num_replicas_in_sync
    return context.num_replicas_in_sync


def all_gather(x):
    """Concatenates every replica's `x` along axis 0, in replica order.

    Gradients flow back through the gather: the gradient reaching a
    replica's shard is the sum of the gradients that every replica's loss
    sends to it, so a loss computed identically on every replica from the
    gathered batch and divided by the number of replicas (as the Distiller
    does) trains exactly like the same loss on one device.

    Args:
        x: A tensor whose first axis is the replica's share of the batch.

    Returns:
        The global tensor (`x` itself outside a multi-replica step).
    """
    context = _replica_context()
    if context is None:
        return x
    return _gather(context, x)


def local_rows(global_x, local_batch_size):
    """Returns this replica's rows of a tensor gathered with `all_gather`.

    Args:
        global_x: A tensor gathered along axis 0 (or computed from one).
        local_batch_size: The size of this replica's shard (a scalar).

    Returns:
        Rows `[offset, offset + local_batch_size)` of `global_x`, where
        `offset` is the number of rows on the replicas before this one.
    """
    context = _replica_context()
    if context is None:
        return global_x
    size = ops.reshape(ops.cast(local_batch_size, "int32"), (1,))
    sizes = _gather(context, size)
    offset = ops.sum(sizes[: context.replica_id_in_sync_group])
    return global_x[offset : offset + size[0]]


def scale_for_replicas(loss):
    """Divides a replica's estimate of the global loss by the number of replicas.

    The optimizer sums gradients over replicas, so each replica contributes
    its share of the global mean (the convention of Keras's own losses).

    Args:
        loss: A scalar tensor.

    Returns:
        `loss / num_replicas()`.
    """
    replicas = num_replicas()
    if replicas == 1:
        return loss
    return loss * ops.cast(1.0 / replicas, loss.dtype)
