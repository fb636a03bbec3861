"""How closely each export format gives the Keras model's logits, on real photos.

    python benchmarks/export_parity.py [--images=1000]

The shipped CIFAR-10 teacher (`data/cifar10_resnet20_teacher.keras`, which takes
normalized images) is exported as the runner exports students, behind the dataset's
normalization, taking [0, 255] pixels: SavedModel, float and int8 TFLite, ONNX (run by
onnxruntime). Each is compared with Keras on the mini CIFAR-10 test photos normalized in
NumPy: the largest |logit difference| and the share of equal top-1 classes.
"""

import pathlib
import tarfile
import tempfile

import numpy as np
from absl import app, flags

REPO = pathlib.Path(__file__).resolve().parents[1]
flags.DEFINE_integer("images", 1000, "Test photos to compare on (at most 1,000).")
FLAGS = flags.FLAGS


def _photos(count):
    import tensorflow as tf

    pixels = []
    with tarfile.open(REPO / "data" / "cifar10-mini.tar.gz") as archive:
        for member in archive:
            if member.isfile() and "/test/" in member.name and len(pixels) < count:
                pixels.append(tf.io.decode_jpeg(archive.extractfile(member).read()).numpy())
    return np.stack(pixels).astype("float32")


def _exports(model, folder, mean, std):
    """`{format: function(pixels) -> logits}` of each exported file."""
    import onnxruntime
    import tensorflow as tf

    from kerasdistill.training import export_onnx, export_saved_model, export_tflite

    export_saved_model(model, folder / "saved_model", mean, std)
    signature = tf.saved_model.load(str(folder / "saved_model")).signatures["serving_default"]
    runs = {"saved_model": lambda x: signature(images=tf.constant(x))["logits"].numpy()}
    for quantization in ("none", "dynamic_int8"):
        path = folder / f"{quantization}.tflite"
        export_tflite(model, path, mean, std, quantization=quantization)
        runner = tf.lite.Interpreter(model_path=str(path)).get_signature_runner("serving_default")
        runs[f"tflite_{quantization}"] = lambda x, r=runner: np.concatenate(
            [r(images=row[None])["logits"] for row in x]
        )
    export_onnx(model, folder / "model.onnx", mean, std)
    session = onnxruntime.InferenceSession(str(folder / "model.onnx"))
    runs["onnx"] = lambda x: session.run(["logits"], {"images": x})[0]
    return runs


def main(argv):
    del argv
    import keras

    from kerasdistill.data.stats import CIFAR_STATS

    mean, std = CIFAR_STATS["cifar10"]
    pixels = _photos(FLAGS.images)
    model = keras.saving.load_model(REPO / "data" / "cifar10_resnet20_teacher.keras")
    expected = model.predict((pixels / 255.0 - np.array(mean)) / np.array(std), verbose=0)
    print(f"{len(pixels)} photos; largest |Keras logit| {np.abs(expected).max():.1f}")
    print("| format | max abs logit difference | top-1 agreement |\n|---|---:|---:|")
    for name, run in _exports(model, pathlib.Path(tempfile.mkdtemp()), mean, std).items():
        got = run(pixels)
        agreement = np.mean(got.argmax(-1) == expected.argmax(-1))
        print(f"| {name} | {np.abs(got - expected).max():.2g} | {agreement:.3f} |")


if __name__ == "__main__":
    app.run(main)
