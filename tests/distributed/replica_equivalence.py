"""Trains the same Distiller on 1 and on N logical CPU replicas; writes both runs.

Run as a script (TensorFlow's logical devices must be set before anything
else touches TensorFlow), so the test calls it in a subprocess:

    python tests/distributed/replica_equivalence.py OUT.npz --replicas=2 --methods='kd,msdcrd;crd'

For every method set, the teacher, student and method weights start equal in
both runs (copied from one build), the student uses synchronized BatchNorm,
and the global batch is the same; the output holds, per set and per run, the
loss logged after each step and every final weight (student, heads, banks),
in `distiller.weights` order.
"""

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ["KERAS_BACKEND"] = "tensorflow"

import numpy as np  # noqa: E402

from kerasdistill.training import distribute  # noqa: E402

NUM_CLASSES = 4
NUM_SAMPLES = 48
IMAGE_SHAPE = (16, 16, 3)

METHOD_KWARGS = {
    "kd": {},
    "crd": {"feat_dim": 16, "num_negatives": 8, "seed": 1},
    "dkd": {"warmup_steps": 2},
    "msdcrd": {},
}


def _data(global_batch, with_index):
    import tensorflow as tf

    rng = np.random.default_rng(0)
    images = rng.normal(size=(NUM_SAMPLES,) + IMAGE_SHAPE).astype("float32")
    labels = (np.arange(NUM_SAMPLES) % NUM_CLASSES).astype("int32")
    x = {"image": images, "index": np.arange(NUM_SAMPLES, dtype="int32")} if with_index else images
    ds = tf.data.Dataset.from_tensor_slices((x, labels)).batch(global_batch, drop_remainder=True)
    return ds, labels


def _build(names, labels, steps):
    import keras

    import kerasdistill
    from kerasdistill import methods, models

    keras.utils.set_random_seed(0)
    teacher = models.get("resnet14", num_classes=NUM_CLASSES, input_shape=IMAGE_SHAPE)
    student = models.get("resnet8", num_classes=NUM_CLASSES, input_shape=IMAGE_SHAPE)
    student = distribute.synchronized_batchnorm(student)
    data = methods.TrainingData(train_labels=labels, steps_per_epoch=steps)
    method_list = [methods.get(n, **METHOD_KWARGS[n]) for n in names]
    distiller = kerasdistill.Distiller(
        teacher, student, method_list, ce_weight=1.0, training_data=data
    )
    distiller.compile(
        optimizer=kerasdistill.training.TorchSGD(0.05, momentum=0.9, weight_decay=5e-4),
        metrics=["accuracy"],
    )
    return distiller


def _run(strategy, names, initial, global_batch, steps):
    import keras

    ds, labels = _data(global_batch, with_index="crd" in names)
    with strategy.scope():
        distiller = _build(names, labels, steps)
    distiller.set_weights(initial)
    losses = []
    distiller.fit(
        ds,
        epochs=1,
        steps_per_epoch=steps,
        verbose=0,
        callbacks=[keras.callbacks.LambdaCallback(
            on_train_batch_end=lambda batch, logs: losses.append(float(logs["loss"]))
        )],
    )
    # Largest difference between the replicas' copies of any variable (state
    # written by one replica only would show here).
    spread = max(
        float(np.max(np.abs(np.asarray(copy) - np.asarray(copies[0])), initial=0.0))
        for w in distiller.weights
        for copies in [strategy.experimental_local_results(w.value)]
        for copy in copies
    )
    return np.asarray(losses), [np.asarray(w) for w in distiller.weights], spread


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("--replicas", type=int, default=2)
    parser.add_argument("--methods", default="kd,msdcrd;crd,dkd")
    parser.add_argument("--global_batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=3)
    args = parser.parse_args()

    distribute.split_cpu(args.replicas)
    import tensorflow as tf

    devices = [d.name for d in tf.config.list_logical_devices("CPU")]
    one = tf.distribute.MirroredStrategy(devices[:1])
    many = tf.distribute.MirroredStrategy(devices[: args.replicas])
    results = {}
    for spec in args.methods.split(";"):
        names = spec.split(",")
        _, labels = _data(args.global_batch, False)
        initial = _build(names, labels, args.steps).get_weights()
        for tag, strategy in (("one", one), ("many", many)):
            losses, weights, spread = _run(strategy, names, initial, args.global_batch, args.steps)
            results[f"{spec}/{tag}/losses"] = losses
            results[f"{spec}/{tag}/replica_spread"] = spread
            for i, value in enumerate(weights):
                results[f"{spec}/{tag}/w/{i:04d}"] = value
    np.savez(args.out, **results)


if __name__ == "__main__":
    main()
