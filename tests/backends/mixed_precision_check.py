"""Every method's loss under a mixed policy vs float32, on large activations.

Feature maps and logits of magnitude up to 1e3 fit float16, but their squares
and exponentials do not: a method computing in the policy's dtype overflows.
`relative_errors(policy)` builds each method twice from the same seed (float32
policy, then `policy`), feeds the same values (in float16 / bfloat16 under the
mixed policy) and returns `{term: relative error}`. Run as a script it prints
the errors of both mixed policies as JSON (the JAX test runs it so).
"""

import json

import keras
import numpy as np

from kerasdistill import methods

BATCH, SIDE, CHANNELS, CLASSES = 8, 4, 8, 10
SCALE = 1e3


def _inputs(dtype):
    rng = np.random.default_rng(0)

    def tensor(shape):
        value = rng.uniform(-SCALE, SCALE, size=shape).astype("float32")
        # The values the mixed run sees, also given to the float32 run.
        return keras.ops.cast(keras.ops.cast(value, "float16"), dtype)

    taps = {f"feat_{k}": tensor((BATCH, SIDE, SIDE, CHANNELS)) for k in range(1, 4)}
    teacher = {**taps, "logits": tensor((BATCH, CLASSES)), "pooled": tensor((BATCH, CHANNELS))}
    taps = {f"feat_{k}": tensor((BATCH, SIDE, SIDE, CHANNELS)) for k in range(1, 4)}
    student = {**taps, "logits": tensor((BATCH, CLASSES)), "pooled": tensor((BATCH, CHANNELS))}
    teacher["feat_last"], student["feat_last"] = teacher["feat_3"], student["feat_3"]
    return teacher, student


def _method(name):
    kwargs = {"msdcrd": {"scales": (1, 2)}, "crd": {"feat_dim": 8, "num_negatives": 4}}
    data = methods.TrainingData(train_labels=np.arange(32) % CLASSES, steps_per_epoch=10)
    method = methods.get(name, **kwargs.get(name, {}))
    if method.needs:
        method.set_up(data)
    return method


def _loss_terms(name, policy):
    keras.config.set_dtype_policy(policy)
    keras.utils.set_random_seed(0)
    compute = keras.DTypePolicy(policy).compute_dtype
    teacher, student = _inputs(compute)
    method = _method(name)
    method.build_from_taps(
        {k: v.shape for k, v in teacher.items()}, {k: v.shape for k, v in student.items()}
    )
    labels = keras.ops.convert_to_tensor(np.arange(BATCH) % CLASSES, "int32")
    terms = method(
        teacher, student, labels=labels,
        sample_indices=keras.ops.arange(BATCH, dtype="int32"),
        step=keras.ops.convert_to_tensor(5, "int64"),
    )
    keras.config.set_dtype_policy("float32")
    return {k: float(keras.ops.convert_to_numpy(v)) for k, v in terms.items()}


def relative_errors(policy):
    """Returns `{term: |mixed - float32| / |float32|}` over every method."""
    errors = {}
    for name in methods.available():
        reference = _loss_terms(name, "float32")
        mixed = _loss_terms(name, policy)
        for term, value in reference.items():
            errors[term] = abs(mixed[term] - value) / max(abs(value), 1e-12)
            if not np.isfinite(mixed[term]):
                errors[term] = float("inf")
    return errors


if __name__ == "__main__":
    result = {p: relative_errors(p) for p in ("mixed_float16", "mixed_bfloat16")}
    result["backend"] = keras.backend.backend()
    print(json.dumps(result))
