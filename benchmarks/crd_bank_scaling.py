"""Does a training step's time grow with the dataset size? CRD vs MSDCRD, side by side.

    python benchmarks/crd_bank_scaling.py --sizes=50000,1281167 --steps=10 --repeats=3

CRD keeps two memory banks of `num_train x feat_dim` floats (ImageNet-1k:
2 x 1,281,167 x 128 float32 = 1.3 GB) and writes the batch's rows every
step; MSDCRD keeps no state that grows with the dataset. Each entry is one
Distiller (a small resnet8 -> resnet8 pair on 32x32 inputs, so the method's
own cost is visible) trained on synthetic batches whose dataset indices are
drawn from `[0, num_train)`. Entries are timed round-robin (median of
`--repeats`); a step time that does not change between the two sizes is
the result.
"""

import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from absl import app, flags  # noqa: E402

import kerasdistill  # noqa: E402
from kerasdistill import methods, models  # noqa: E402
from kerasdistill.training import TorchSGD  # noqa: E402

flags.DEFINE_list("sizes", ["50000", "1281167"], "Dataset sizes (CRD bank rows).")
flags.DEFINE_list("methods", ["crd", "msdcrd"], "Methods to time at every size.")
flags.DEFINE_integer("batch_size", 64, "Batch size.")
flags.DEFINE_integer("steps", 10, "Timed steps per repeat.")
flags.DEFINE_integer("repeats", 3, "Timed repeats per entry (median reported).")
FLAGS = flags.FLAGS

NUM_CLASSES = 100


def _dataset(num_train, batch_size):
    rng = np.random.default_rng(0)
    batches = 4
    images = rng.normal(size=(batches * batch_size, 32, 32, 3)).astype("float32")
    index = rng.choice(num_train, size=batches * batch_size, replace=False).astype("int32")
    labels = rng.integers(0, NUM_CLASSES, size=batches * batch_size).astype("int32")
    ds = tf.data.Dataset.from_tensor_slices(({"image": images, "index": index}, labels))
    return ds.batch(batch_size, drop_remainder=True).cache().repeat()


def _distiller(method, num_train):
    keras.utils.set_random_seed(0)
    labels = np.arange(num_train) % NUM_CLASSES
    data = methods.TrainingData(train_labels=labels, steps_per_epoch=num_train // FLAGS.batch_size)
    distiller = kerasdistill.Distiller(
        models.get("resnet8", num_classes=NUM_CLASSES),
        models.get("resnet8", num_classes=NUM_CLASSES),
        [methods.get(method, data=data)],
    )
    distiller.compile(optimizer=TorchSGD(0.01, momentum=0.9))
    return distiller


def _fit_seconds(distiller, ds, steps):
    start = time.perf_counter()
    distiller.fit(ds, epochs=1, steps_per_epoch=steps, verbose=0)
    return time.perf_counter() - start


def main(argv):
    del argv
    entries = {}
    for size in map(int, FLAGS.sizes):
        ds = _dataset(size, FLAGS.batch_size)
        for method in FLAGS.methods:
            distiller = _distiller(method, size)
            _fit_seconds(distiller, ds, 2)  # Trace and warm up.
            entries[(method, size)] = (distiller, ds, [])
    for _ in range(FLAGS.repeats):
        for distiller, ds, times in entries.values():
            times.append(_fit_seconds(distiller, ds, FLAGS.steps))
    print(f"\nbatch {FLAGS.batch_size}, resnet8 -> resnet8 on 32x32, {FLAGS.steps} steps x "
          f"{FLAGS.repeats} repeats (median)\n")
    print("| method | dataset size | state floats | ms/step |")
    print("|---|---:|---:|---:|")
    for (method, size), (distiller, _, times) in entries.items():
        state = sum(int(np.prod(w.shape)) for m in distiller.methods for w in m.non_trainable_weights)
        ms = 1000 * statistics.median(times) / FLAGS.steps
        print(f"| {method} | {size:,} | {state:,} | {ms:.1f} |")


if __name__ == "__main__":
    app.run(main)
