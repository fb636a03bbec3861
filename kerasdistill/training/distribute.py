"""Choosing a `tf.distribute` strategy, synchronized BatchNorm and mixed precision.

The batch a user feeds is the global batch: a strategy splits it over its
replicas, and the Distiller computes every loss as on one device (see
`kerasdistill.ops.distributed`).
"""

import keras

STRATEGIES = ("auto", "default", "mirrored", "multi_worker")
MIXED_PRECISION = {"none": "float32", "float16": "mixed_float16", "bfloat16": "mixed_bfloat16"}


def split_cpu(num_devices):
    """Splits the first physical CPU into `num_devices` logical devices.

    For testing multi-replica code on a machine without several GPUs. Must
    run before TensorFlow initializes its devices (before any op runs).

    Args:
        num_devices: Number of logical CPU devices, >= 1.

    Raises:
        ValueError: For `num_devices < 1`, or when TensorFlow's devices are
            already initialized with another split.
    """
    import tensorflow as tf

    if num_devices < 1:
        raise ValueError(f"The number of logical CPU devices must be >= 1; got {num_devices}.")
    cpu = tf.config.list_physical_devices("CPU")[0]
    config = [tf.config.LogicalDeviceConfiguration() for _ in range(num_devices)]
    try:
        tf.config.set_logical_device_configuration(cpu, config)
    except RuntimeError as error:
        if len(tf.config.list_logical_devices("CPU")) != num_devices:
            raise ValueError(
                f"Cannot split the CPU into {num_devices} logical devices: TensorFlow is "
                "already initialized; split it before anything else runs."
            ) from error


def make_strategy(name="auto", logical_devices=0):
    """Returns the `tf.distribute` strategy called `name`.

    Args:
        name: `"auto"` (mirrored over all GPUs when more than one is visible,
            else the default strategy), `"default"` (one device, no
            distribution), `"mirrored"` (every GPU, or every logical CPU device
            when there is no GPU), or `"multi_worker"` (synchronous
            all-reduce across the workers that `TF_CONFIG` describes).
        logical_devices: When > 0, first split the CPU into this many logical
            devices (`split_cpu`), so that `"mirrored"` runs that many
            replicas on a CPU-only machine.

    Returns:
        A `tf.distribute.Strategy`.
    """
    import tensorflow as tf

    if name not in STRATEGIES:
        raise ValueError(f"Unknown strategy {name!r}; expected one of {', '.join(STRATEGIES)}.")
    if name == "multi_worker":
        # Collectives must be configured before anything lists or initializes devices.
        return tf.distribute.MultiWorkerMirroredStrategy()
    if logical_devices:
        split_cpu(logical_devices)
    gpus = tf.config.list_logical_devices("GPU")
    if name == "auto":
        name = "mirrored" if len(gpus) > 1 else "default"
    if name == "default":
        return tf.distribute.get_strategy()
    devices = gpus or tf.config.list_logical_devices("CPU")
    return tf.distribute.MirroredStrategy([d.name for d in devices])


def is_chief(strategy):
    """Whether this process writes a run's outputs: the chief of its cluster.

    The chief is the `"chief"` task, or worker 0 in a cluster without one (the
    `tf.distribute` convention); a process outside any cluster is its own chief.

    Args:
        strategy: A `tf.distribute.Strategy`.

    Returns:
        True for the chief.
    """
    resolver = getattr(strategy, "cluster_resolver", None)
    cluster = resolver.cluster_spec().as_dict() if resolver is not None else {}
    if not cluster or not resolver.task_type:
        return True
    if resolver.task_type == "chief":
        return True
    return resolver.task_type == "worker" and resolver.task_id == 0 and "chief" not in cluster


def synchronized_batchnorm(model):
    """Returns a copy of `model` whose BatchNorm layers use global-batch statistics.

    Under a multi-replica strategy each `BatchNormalization(synchronized=True)`
    all-reduces its batch moments, so training statistics are those of the
    global batch, as on one device (TensorFlow backend only).

    Args:
        model: A functional `keras.Model`.

    Returns:
        A functional model with the same layers, names and weights.
    """

    def clone_layer(layer):
        config = layer.get_config()
        if isinstance(layer, keras.layers.BatchNormalization):
            config["synchronized"] = True
        return layer.__class__.from_config(config)

    clone = keras.models.clone_model(model, clone_function=clone_layer)
    clone.set_weights(model.get_weights())
    return clone


def set_mixed_precision(name):
    """Sets Keras's global dtype policy from a `--mixed_precision` value.

    Layers built afterwards compute in the lower precision and keep float32
    weights; every distillation loss still computes in float32, and `compile`
    adds loss scaling for `float16`.

    Args:
        name: `"none"`, `"float16"` or `"bfloat16"`.
    """
    if name not in MIXED_PRECISION:
        raise ValueError(
            f"Unknown mixed precision {name!r}; expected one of {', '.join(MIXED_PRECISION)}."
        )
    keras.config.set_dtype_policy(MIXED_PRECISION[name])
