"""Runs the library core under whatever KERAS_BACKEND is set; prints one JSON line.

Used by tests/test_jax_backend.py in a subprocess with KERAS_BACKEND=jax.
"""

import json
import os
import sys

import keras
import numpy as np

import kerasdistill
from kerasdistill import methods, models
from kerasdistill.training import TorchSGD


def distill_steps():
    num_classes, n = 5, 16
    teacher = models.get("resnet8", num_classes=num_classes)
    student = models.get("resnet8", num_classes=num_classes)
    labels = np.arange(n) % num_classes
    method_list = [
        methods.KD(),
        methods.MSDCRD(),
        methods.CRD(train_labels=labels, num_negatives=8),
        methods.DKD(warmup_steps=2),
        methods.FitNet(),
        methods.AT(),
    ]
    distiller = kerasdistill.Distiller(teacher, student, method_list)
    distiller.compile(optimizer=TorchSGD(0.01), metrics=["accuracy"])
    rng = np.random.default_rng(0)
    x = {"image": rng.normal(size=(n, 32, 32, 3)).astype("float32"), "index": np.arange(n)}
    teacher_before = [w.numpy().copy() for w in teacher.weights]
    student_before = [w.numpy().copy() for w in student.trainable_weights]
    history = distiller.fit(x, labels, batch_size=8, epochs=2, verbose=0).history
    crd = method_list[2]
    return {
        "backend": keras.backend.backend(),
        "losses": {k: v[-1] for k, v in history.items()},
        "teacher_unchanged": all(
            np.array_equal(b, w.numpy()) for b, w in zip(teacher_before, teacher.weights)
        ),
        "student_changed": any(
            not np.array_equal(b, w.numpy())
            for b, w in zip(student_before, student.trainable_weights)
        ),
        "crd_z_set": bool(float(keras.ops.convert_to_numpy(crd.z_v1)) > 0),
    }


def forward_parity(fixtures):
    z = np.load(os.path.join(fixtures, "forward_parity.npz"), allow_pickle=False)
    model = models.from_torch_checkpoint(
        "resnet8x4", os.path.join(fixtures, "torch_ckpt", "resnet8x4.pth")
    )
    logits = keras.ops.convert_to_numpy(model(z["input_nchw"].transpose(0, 2, 3, 1)))
    ref = z["resnet8x4/logits"]
    return float(np.abs(logits - ref).max() / max(1.0, np.abs(ref).max()))


if __name__ == "__main__":
    result = distill_steps()
    result["resnet8x4_relative_logit_error"] = forward_parity(sys.argv[1])
    print(json.dumps(result))
