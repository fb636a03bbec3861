"""Export of trained models for serving."""

import keras


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
    """Exports a TensorFlow SavedModel whose `serving_default` signature maps images to logits.

    The signature takes a float32 batch of HWC images with pixel values in
    [0, 255] (normalization is built in) and returns float32 logits.

    Args:
        model: The trained classifier (normalized inputs -> logits).
        path: Output directory.
        mean: Per-channel training mean over [0, 1] pixels.
        std: Per-channel training standard deviation over [0, 1] pixels.

    Returns:
        The serving `keras.Model` that was exported.
    """
    wrapped = serving_model(model, mean, std)
    wrapped.export(str(path), format="tf_saved_model", verbose=False)
    return wrapped
