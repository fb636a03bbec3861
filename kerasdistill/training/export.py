"""Export of trained models for serving: TensorFlow SavedModel and TFLite."""

import pathlib
import tempfile

import keras

QUANTIZATIONS = ("none", "dynamic_int8")


def serving_model(model, mean, std):
    """Wraps `model` so that it takes raw pixels in [0, 255] and returns logits.

    Args:
        model: A model trained on inputs normalized with `mean` and `std`.
        mean: Per-channel mean over [0, 1] pixels used in training.
        std: Per-channel standard deviation over [0, 1] pixels.

    Returns:
        A functional `keras.Model` with the normalization built in.
    """
    inputs = keras.Input(model.inputs[0].shape[1:], dtype="float32", name="images")
    x = keras.layers.Rescaling(1.0 / 255.0, name="to_unit_range")(inputs)
    x = keras.layers.Normalization(
        mean=list(mean), variance=[s * s for s in std], name="standardize"
    )(x)
    return keras.Model(inputs, model(x), name=f"{model.name}_serving")


def export_saved_model(model, path, mean, std):
    """Exports a TensorFlow SavedModel that maps raw images to logits.

    Both endpoints take a float32 batch of HWC images with pixel values in
    [0, 255] (normalization is built in): `serve(images)` returns the logits
    tensor, and the `serving_default` signature (TF Serving, TFLite) returns
    `{"logits": ...}`.

    Args:
        model: The trained classifier (normalized inputs -> logits).
        path: Output directory.
        mean: Per-channel training mean over [0, 1] pixels.
        std: Per-channel training standard deviation over [0, 1] pixels.

    Returns:
        The serving `keras.Model` that was exported.
    """
    wrapped = serving_model(model, mean, std)
    spec = [keras.InputSpec(shape=wrapped.inputs[0].shape, dtype="float32", name="images")]
    archive = keras.export.ExportArchive()
    archive.track(wrapped)
    archive.add_endpoint("serve", wrapped.__call__, input_signature=spec)
    archive.add_endpoint(
        "serving_default", lambda images: {"logits": wrapped(images)}, input_signature=spec
    )
    archive.write_out(str(path), verbose=False)
    return wrapped


def export_tflite(model, path, mean, std, quantization="none"):
    """Exports a TFLite flatbuffer with the SavedModel's input and output.

    The model takes a float32 batch of HWC images with pixel values in
    [0, 255] (normalization is built in) and its signature returns `logits`.

    Args:
        model: The trained classifier (normalized inputs -> logits).
        path: Output file, conventionally `*.tflite`.
        mean: Per-channel training mean over [0, 1] pixels.
        std: Per-channel training standard deviation over [0, 1] pixels.
        quantization: `"none"` (float32 weights) or `"dynamic_int8"` (int8
            weights, activations quantized on the fly; about 4x smaller).

    Returns:
        The size of the written file in bytes.
    """
    if quantization not in QUANTIZATIONS:
        raise ValueError(
            f"quantization={quantization!r} is not supported; expected one of {QUANTIZATIONS}."
        )
    import tensorflow as tf  # Here only: the package imports without TensorFlow (JAX).

    with tempfile.TemporaryDirectory() as saved_model_dir:
        export_saved_model(model, saved_model_dir, mean, std)
        converter = tf.lite.TFLiteConverter.from_saved_model(
            saved_model_dir, signature_keys=["serving_default"]
        )
        if quantization == "dynamic_int8":
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
        flatbuffer = converter.convert()
    return pathlib.Path(path).write_bytes(flatbuffer)
