"""JAX: `keras.distribution.DataParallel` over 2 devices trains like 1 device.

Run with `KERAS_BACKEND=jax` and `XLA_FLAGS=--xla_force_host_platform_device_count=2`
(two host devices on a CPU-only machine); prints JSON with both runs' per-step
losses and the largest weight difference. Under DataParallel JAX compiles one
program over the global batch, so MSDCRD's negatives and BatchNorm statistics
are the global batch's without any gather.
"""

import json

import jax
import keras
import numpy as np

import kerasdistill
from kerasdistill import methods, models
from kerasdistill.training.optimizers import TorchSGD

SHAPE = (16, 16, 3)


def _run(distribution, initial=None):
    keras.distribution.set_distribution(distribution)
    keras.utils.set_random_seed(0)
    teacher = models.get("resnet14", num_classes=4, input_shape=SHAPE)
    student = models.get("resnet8", num_classes=4, input_shape=SHAPE)
    distiller = kerasdistill.Distiller(teacher, student, [methods.KD(), methods.MSDCRD()])
    distiller.compile(optimizer=TorchSGD(0.05, momentum=0.9, weight_decay=5e-4))
    if initial is not None:
        distiller.set_weights(initial)
    start = [np.asarray(w) for w in distiller.get_weights()]
    rng = np.random.default_rng(0)
    x = rng.normal(size=(48,) + SHAPE).astype("float32")
    y = np.arange(48) % 4
    losses = []
    distiller.fit(
        x, y, batch_size=16, epochs=1, shuffle=False, verbose=0,
        callbacks=[keras.callbacks.LambdaCallback(
            on_train_batch_end=lambda b, logs: losses.append(float(logs["loss"])))],
    )
    keras.distribution.set_distribution(None)
    return start, losses, [np.asarray(w) for w in distiller.get_weights()]


def main():
    devices = jax.devices()
    initial, one_losses, one_weights = _run(None)
    _, many_losses, many_weights = _run(keras.distribution.DataParallel(devices=devices), initial)
    diff = max(float(np.max(np.abs(a - b))) for a, b in zip(one_weights, many_weights))
    moved = max(float(np.max(np.abs(a - b))) for a, b in zip(one_weights, initial))
    print(json.dumps({"devices": len(devices), "one": one_losses, "many": many_losses,
                      "max_weight_diff": diff, "max_weight_change": moved}))


if __name__ == "__main__":
    main()
