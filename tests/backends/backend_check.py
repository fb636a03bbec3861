"""The library on the backend `KERAS_BACKEND` names; prints one JSON line.

tests/test_backends.py runs it in a subprocess per backend (JAX, PyTorch):

    KERAS_BACKEND=torch python -m tests.backends.backend_check <fixtures dir> [--zoo]

The JSON holds:

- `backend`: `keras.backend.backend()`.
- `methods`: for each method alone and for KD+MSDCRD, two training batches
  through the Distiller's `fit` (resnet14 teacher -> resnet8 student on
  16x16 images): the last logged value of every term, whether every teacher
  weight (BatchNorm statistics included) is unchanged and whether some
  student weight changed.
- `evaluate_loss` and `predict_vs_student`: after the last of those runs, the
  Distiller's `evaluate` loss, and the largest |difference| between its
  `predict` and the student's own `predict`.
- `converter`: for fixture checkpoints (resnet8x4; ShuffleV1, with grouped
  and depthwise convolutions), `max |logits - reference|` divided by
  `max(1, max |reference|)` (the fixtures' README, 4.6) of the converted
  model on the fixture input.
- `keras_file`: the largest |difference| of the logits of the trained student
  and of the converted ShuffleV1 (the zoo's `ChannelShuffle`) before and
  after a `.keras` save and load.
- `evaluate_keys`: the keys `evaluate` reports (no distillation term).
- `your_models`: a `keras.applications.MobileNetV2` teacher (its default
  softmax head) distilled with KD+MSDCRD into a `keras.Sequential` student
  with no `Input` (32x32 images): the taps the Distiller resolved, the last
  logged terms and whether the student changed with finite weights.
- `zoo` (with `--zoo`): for every model of `models.available()`, the shape of
  its logits on one image in inference mode and whether they are finite.
"""

import json
import pathlib
import sys
import tempfile

import keras
import numpy as np

import kerasdistill
from kerasdistill import methods, models
from kerasdistill.training import TorchSGD

IMAGE = (16, 16, 3)
NUM_CLASSES, NUM_SAMPLES, BATCH = 5, 16, 8
CHECKPOINTS = ("resnet8x4", "ShuffleV1")
# ImageNet models run smaller images than their 224 default, to keep the check cheap.
IMAGENET_MODELS = ("ResNet18", "ResNet34", "ResNet50_imagenet", "MobileNetV1")


def _method_configs(labels):
    return {
        "kd": lambda: [methods.KD()],
        "fitnet": lambda: [methods.FitNet()],
        "at": lambda: [methods.AT()],
        "crd": lambda: [methods.CRD(train_labels=labels, num_negatives=8)],
        "dkd": lambda: [methods.DKD(warmup_steps=2)],
        "msdcrd": lambda: [methods.MSDCRD()],
        "kd+msdcrd": lambda: [methods.KD(), methods.MSDCRD()],
    }


def _numpy(variables):
    return [keras.ops.convert_to_numpy(v).copy() for v in variables]


def _train(method_list, x, labels):
    """Two batches of `fit`; returns the run's record and the Distiller."""
    teacher = models.get("resnet14", num_classes=NUM_CLASSES, input_shape=IMAGE)
    student = models.get("resnet8", num_classes=NUM_CLASSES, input_shape=IMAGE)
    distiller = kerasdistill.Distiller(teacher, student, method_list)
    distiller.compile(optimizer=TorchSGD(0.05, momentum=0.9), metrics=["accuracy"])
    teacher_before = _numpy(teacher.weights)
    student_before = _numpy(student.trainable_weights)
    history = distiller.fit(x, labels, batch_size=BATCH, epochs=1, shuffle=False, verbose=0)
    record = {
        "terms": {k: v[-1] for k, v in history.history.items()},
        "teacher_unchanged": all(
            np.array_equal(b, a) for b, a in zip(teacher_before, _numpy(teacher.weights))
        ),
        "student_changed": any(
            not np.array_equal(b, a)
            for b, a in zip(student_before, _numpy(student.trainable_weights))
        ),
    }
    return record, distiller


def _your_models():
    """A keras.applications teacher and a Sequential student, two batches of KD+MSDCRD."""
    teacher = keras.applications.MobileNetV2(
        weights=None, input_shape=(32, 32, 3), classes=NUM_CLASSES, alpha=0.35
    )
    student = keras.Sequential([
        keras.layers.Conv2D(8, 3, strides=2, padding="same", activation="relu"),
        keras.layers.Conv2D(16, 3, strides=2, padding="same", activation="relu"),
        keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(NUM_CLASSES),
    ])
    distiller = kerasdistill.Distiller(teacher, student, "kd,msdcrd")
    distiller.compile(optimizer=TorchSGD(0.05, momentum=0.9))
    images = np.random.default_rng(2).normal(size=(NUM_SAMPLES, 32, 32, 3)).astype("float32")
    labels = np.arange(NUM_SAMPLES) % NUM_CLASSES
    before = _numpy(student.trainable_weights)
    history = distiller.fit(images, labels, batch_size=BATCH, verbose=0)
    after = _numpy(student.trainable_weights)
    return {
        "taps": distiller.tap_layers,
        "softmax_layer": distiller.taps.teacher_model.softmax_layer,
        "terms": {k: v[-1] for k, v in history.history.items()},
        "student_changed": any(not np.array_equal(b, a) for b, a in zip(before, after)),
        "student_finite": all(np.isfinite(a).all() for a in after),
    }


def _converted(fixtures):
    """Returns `{name: model}` converted from the fixture checkpoints and their errors."""
    z = np.load(fixtures / "forward_parity.npz", allow_pickle=False)
    x = z["input_nchw"].transpose(0, 2, 3, 1)
    converted, errors = {}, {}
    for name in CHECKPOINTS:
        model = models.from_torch_checkpoint(name, fixtures / "torch_ckpt" / f"{name}.pth")
        logits = keras.ops.convert_to_numpy(model(x, training=False))
        ref = z[f"{name}/logits"]
        errors[name] = float(np.abs(logits - ref).max() / max(1.0, np.abs(ref).max()))
        converted[name] = model
    return converted, errors, x


def _round_trip(model, x, directory):
    path = pathlib.Path(directory) / f"{model.name}.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    before = keras.ops.convert_to_numpy(model(x, training=False))
    after = keras.ops.convert_to_numpy(loaded(x, training=False))
    return float(np.max(np.abs(before - after)))


def _zoo():
    results = {}
    for name in models.available():
        kwargs = {"input_shape": (64, 64, 3)} if name in IMAGENET_MODELS else {}
        model = models.get(name, num_classes=NUM_CLASSES, **kwargs)
        image = np.random.default_rng(1).normal(size=(1, *model.input_shape[1:]))
        logits = keras.ops.convert_to_numpy(model(image.astype("float32"), training=False))
        results[name] = {"shape": list(logits.shape), "finite": bool(np.isfinite(logits).all())}
        keras.backend.clear_session()
    return results


def main(fixtures, zoo):
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    labels = np.arange(NUM_SAMPLES) % NUM_CLASSES
    images = rng.normal(size=(NUM_SAMPLES, *IMAGE)).astype("float32")
    x = {"image": images, "index": np.arange(NUM_SAMPLES)}
    result = {"backend": keras.backend.backend(), "methods": {}}
    for name, make in _method_configs(labels).items():
        result["methods"][name], distiller = _train(make(), x, labels)
    evaluation = distiller.evaluate(x, labels, batch_size=BATCH, verbose=0, return_dict=True)
    result["evaluate_loss"] = evaluation["loss"]
    result["evaluate_keys"] = sorted(evaluation)
    predicted = distiller.predict(images, batch_size=BATCH, verbose=0)
    own = distiller.student.predict(images, batch_size=BATCH, verbose=0)
    result["predict_vs_student"] = float(np.max(np.abs(np.asarray(predicted) - own)))
    converted, result["converter"], fixture_input = _converted(fixtures)
    with tempfile.TemporaryDirectory() as directory:
        result["keras_file"] = {
            "student": _round_trip(distiller.student, images, directory),
            "ShuffleV1": _round_trip(converted["ShuffleV1"], fixture_input, directory),
        }
    result["your_models"] = _your_models()
    if zoo:
        result["zoo"] = _zoo()
    print(json.dumps(result))


if __name__ == "__main__":
    main(pathlib.Path(sys.argv[1]), "--zoo" in sys.argv[2:])
