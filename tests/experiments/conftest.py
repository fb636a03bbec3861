"""Fixtures of the experiment-runner tests: a tiny image folder and a tiny configuration."""

import numpy as np
import pytest


def write_image_folder(root, per_class=(("train", 12), ("test", 4)), classes=("a", "b"), noise=30):
    """Writes PNGs `root/<split>/<class>/<i>.png` of 32x32 noisy flat colours, one per class.

    Pixels are the class colour plus integer noise uniform in `[-noise, noise)`.
    """
    import tensorflow as tf

    rng = np.random.default_rng(0)
    for split, count in per_class:
        for label, class_name in enumerate(classes):
            folder = root / split / class_name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                image = np.full((32, 32, 3), 40 + 150 * label, np.int64)
                image = np.clip(image + rng.integers(-noise, noise, image.shape), 0, 255)
                tf.io.write_file(str(folder / f"{i}.png"), tf.io.encode_png(image.astype(np.uint8)))
    return root


@pytest.fixture(scope="session")
def tiny_folder(tmp_path_factory):
    return write_image_folder(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="session")
def teacher_file(tmp_path_factory):
    """An (untrained) resnet8 teacher for the 2 classes of `tiny_folder`, as a .keras file."""
    from kerasdistill import models

    path = tmp_path_factory.mktemp("teacher") / "resnet8.keras"
    models.get("resnet8", num_classes=2).save(path)
    return path


def small_cnn(num_classes=2, input_shape=(32, 32, 3), final_activation=None):
    """A functional classifier outside the zoo: no feat_k / pooled layer names."""
    import keras

    inputs = keras.Input(input_shape)
    x = keras.layers.Conv2D(8, 3, strides=2, padding="same")(inputs)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(num_classes, activation=final_activation)(x)
    return keras.Model(inputs, outputs, name="small_cnn")


@pytest.fixture(scope="session")
def small_cnn_file(tmp_path_factory):
    """An (untrained) non-zoo teacher for the 2 classes of `tiny_folder`, as a .keras file."""
    path = tmp_path_factory.mktemp("small_cnn") / "small_cnn.keras"
    small_cnn().save(path)
    return path


def tiny_config(dataset, output_dir, **overrides):
    """A `RunConfig` of a seconds-long run on `dataset`."""
    from experiments import runner

    base = dict(
        mode="student", teacher="resnet8", student="resnet8", dataset=str(dataset),
        epochs=2, steps_per_epoch=3, batch_size=4, lr=0.01, output_dir=str(output_dir),
        verbose=0, export="keras",
    )
    return runner.RunConfig(**{**base, **overrides})
