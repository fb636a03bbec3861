"""Writing rows of a large non-trainable state variable (a memory bank)."""

import keras
from keras import ops


def scatter_rows(variable, indices, rows):
    """Sets `variable[indices] = rows`, touching only those rows where possible.

    On TensorFlow this is an in-place sparse update, so the cost does not
    grow with the number of rows of `variable` (CRD's bank holds one row per
    training sample: 1.28M on ImageNet). Elsewhere (JAX, whose variables are
    immutable arrays) the updated array is assigned, which XLA performs in
    place on donated buffers.

    Args:
        variable: A `keras.Variable` of shape `(num_rows, ...)`.
        indices: `(n,)` integer row indices, all different.
        rows: `(n, ...)` new rows.
    """
    indices = ops.cast(indices, "int32")
    rows = ops.cast(rows, variable.dtype)
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        variable.value.scatter_update(tf.IndexedSlices(rows, indices))
        return
    variable.assign(ops.scatter_update(variable, ops.expand_dims(indices, -1), rows))
