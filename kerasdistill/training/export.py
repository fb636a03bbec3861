"""Export of trained models for serving: SavedModel, TFLite and ONNX, by Keras's export.

All artifacts take a float32 batch of HWC images with pixel values in
[0, 255] under the name `images` and give logits under the name `logits`.
What this module adds to `keras.Model.export`: the pixel normalization in
front of a model trained on normalized inputs (`serving_model`), and that
output name (Keras names a single output `output_0`).

SavedModel and TFLite need TensorFlow only; ONNX (on the TensorFlow backend)
also needs the packages `tf2onnx` and `onnx`, imported only by `export_onnx`.
"""

import importlib.util
import os

import keras

from kerasdistill.ops.pixels import normalization_layer

QUANTIZATIONS = ("none", "dynamic_int8")


def serving_model(model, mean=None, std=None):
    """The model that maps raw pixels in [0, 255] to logits.

    Args:
        model: A classifier of [0, 255] pixels (its normalization built in, as
            `kerasdistill.data.normalization_layer` first), or, with `mean`
            and `std`, one trained on inputs normalized with them.
        mean: Per-channel mean over [0, 1] pixels used in training, or None
            when `model` takes [0, 255] pixels itself.
        std: Per-channel standard deviation over [0, 1] pixels, or None.

    Returns:
        `model` itself without `mean` and `std`, else a functional
        `keras.Model` with that normalization in front of it.
    """
    if (mean is None) != (std is None):
        raise ValueError("Pass both mean and std (a model of normalized inputs) or neither.")
    if mean is None:
        return model
    inputs = keras.Input(model.inputs[0].shape[1:], dtype="float32", name="images")
    x = normalization_layer(mean, std)(inputs)
    return keras.Model(inputs, model(x), name=f"{model.name}_serving")


def _images_spec(model):
    return [keras.InputSpec(shape=model.inputs[0].shape, dtype="float32", name="images")]


def _named_logits(model):
    """`model` with its output named `logits` (a dict output names it; else `output_0`)."""
    images = keras.Input(model.inputs[0].shape[1:], dtype="float32", name="images")
    return keras.Model(images, {"logits": model(images)}, name=model.name)


def export_saved_model(model, path, mean=None, std=None):
    """Exports a TensorFlow SavedModel that maps raw images to logits.

    Both endpoints take a float32 batch of HWC images with pixel values in
    [0, 255] (normalization is built in): `serve(images)` returns the logits
    tensor (what `model.export(path)` writes), and the `serving_default`
    signature (TF Serving, TFLite) returns `{"logits": ...}`.

    Args:
        model: The trained classifier: [0, 255] pixels -> logits (as the
            command line's runs train it), or normalized inputs -> logits
            with `mean` and `std`.
        path: Output directory.
        mean: Per-channel training mean over [0, 1] pixels of a model of
            normalized inputs (default None: `model` takes pixels).
        std: Per-channel training standard deviation over [0, 1] pixels, or None.

    Returns:
        The serving `keras.Model` that was exported.
    """
    wrapped = serving_model(model, mean, std)
    spec = _images_spec(wrapped)
    # `model.export(path, format="tf_saved_model")` writes `serve` alone, which then also
    # serves as `serving_default` with the output named `output_0`; the archive it builds
    # takes a second endpoint that names the output.
    archive = keras.export.ExportArchive()
    archive.track(wrapped)
    archive.add_endpoint("serve", wrapped.__call__, input_signature=spec)
    archive.add_endpoint(
        "serving_default", lambda images: {"logits": wrapped(images)}, input_signature=spec
    )
    archive.write_out(str(path), verbose=False)
    return wrapped


def export_tflite(model, path, mean=None, std=None, quantization="none"):
    """Exports a TFLite flatbuffer (`model.export(path, format="litert")`).

    The model takes a float32 batch of HWC images with pixel values in
    [0, 255] (normalization is built in); its `serving_default` signature
    returns `logits`.

    Args:
        model: The trained classifier, as `export_saved_model` takes it.
        path: Output file; Keras requires the suffix `.tflite`.
        mean: As `export_saved_model`'s (None: `model` takes pixels).
        std: As `export_saved_model`'s.
        quantization: `"none"` (float32 weights) or `"dynamic_int8"` (int8
            weights, activations quantized on the fly; about 4x smaller).

    Returns:
        The size of the written file in bytes.
    """
    if quantization not in QUANTIZATIONS:
        raise ValueError(
            f"quantization={quantization!r} is not supported; expected one of {QUANTIZATIONS}."
        )
    named = _named_logits(serving_model(model, mean, std))
    options = {}
    if quantization == "dynamic_int8":
        import tensorflow as tf  # Here only: the package imports without TensorFlow (JAX).

        options["optimizations"] = [tf.lite.Optimize.DEFAULT]
    named.export(str(path), format="litert", verbose=False,
                 input_signature=_images_spec(named), **options)
    return os.path.getsize(path)


def missing_onnx_packages():
    """The packages `export_onnx` needs on this backend that are not installed.

    On the TensorFlow backend Keras converts with `tf2onnx`, which needs
    `onnx`; other backends are left to Keras's own checks.

    Returns:
        A list of package names, empty when ONNX export can run.
    """
    if keras.backend.backend() != "tensorflow":
        return []
    return [name for name in ("tf2onnx", "onnx") if importlib.util.find_spec(name) is None]


def export_onnx(model, path, mean=None, std=None, opset_version=None):
    """Exports an ONNX model (`model.export(path, format="onnx")`).

    The model takes a float32 batch of HWC images with pixel values in
    [0, 255] (normalization is built in) as its input `images` and returns
    its output `logits`; the batch size is free. On the TensorFlow backend
    Keras converts with `tf2onnx`, which needs the packages `tf2onnx` and
    `onnx` (`onnxruntime` runs the result); they are imported here only.

    Args:
        model: The trained classifier, as `export_saved_model` takes it.
        path: Output file, e.g. `model.onnx`.
        mean: As `export_saved_model`'s (None: `model` takes pixels).
        std: As `export_saved_model`'s.
        opset_version: ONNX opset to target, or None for the converter's default.

    Returns:
        The size of the written file in bytes.
    """
    missing = missing_onnx_packages()
    if missing:
        # Keras names tf2onnx alone (not onnx), and only once the model is traced.
        raise ImportError(
            f"ONNX export needs the package(s) {', '.join(missing)}, not installed; "
            "run `pip install tf2onnx onnx`."
        )
    named = _named_logits(serving_model(model, mean, std))
    named.export(str(path), format="onnx", verbose=False,
                 input_signature=_images_spec(named), opset_version=opset_version)
    return os.path.getsize(path)
