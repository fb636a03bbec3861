"""Distils your teacher into a smaller model on an image folder.

The folder holds one sub-folder of images per class (`keras.utils.
image_dataset_from_directory`'s layout; class ids follow the sorted folder
names, so an ImageNet-style folder of WordNet ids matches the ImageNet class
order of `keras.applications` weights). The teacher is a `.keras` file of any
architecture (a KerasHub classifier too), a `keras.applications` name, or
`keras_hub:<preset>`; the student a `keras.applications` name or a `.keras`
file. Images reach both models as [0, 255] pixels: each `keras.applications`
model is wrapped with its own `preprocess_input`.

    python examples/distill_your_model.py --data=photos/ --teacher=teacher.keras \\
        --student=MobileNetV3Small --image_size=224 --methods=kd,msdcrd --epochs=10

It prints the teacher's and the distilled student's accuracy on the held-out
split and saves the student (taking [0, 255] images, returning logits).
"""

import argparse
import importlib
import pathlib
import sys

import keras

import kerasdistill

APPLICATIONS = sorted(
    name for name in dir(keras.applications) if name[0].isupper() and callable(
        getattr(keras.applications, name)
    )
)


def _with_preprocessing(constructor, model, image_size):
    """`model` behind its application's `preprocess_input`, taking [0, 255] pixels."""
    preprocess = importlib.import_module(constructor.__module__).preprocess_input
    inputs = keras.Input((image_size, image_size, 3))
    return keras.Model(inputs, model(preprocess(inputs)), name=f"{model.name}_from_pixels")


def _application(name, role, num_classes, image_size, weights):
    if name not in APPLICATIONS:
        raise ValueError(
            f"--{role}={name!r} is neither a .keras file nor a keras.applications model; "
            f"e.g. {', '.join(APPLICATIONS[:4])}, ..."
        )
    constructor = getattr(keras.applications, name)
    model = constructor(
        weights=weights, input_shape=(image_size, image_size, 3), classes=num_classes,
        classifier_activation=None,
    )
    return _with_preprocessing(constructor, model, image_size)


def load_model(spec, role, num_classes, image_size, weights=None):
    """Builds or loads the teacher or student named by `spec`.

    Args:
        spec: A `.keras` path, a `keras.applications` name, or (teacher only)
            `keras_hub:<preset>`.
        role: `"teacher"` or `"student"`, for messages.
        num_classes: Classes of the image folder.
        image_size: Side of the square input images.
        weights: `keras.applications` weights (`"imagenet"` or `None`).

    Returns:
        A `keras.Model` taking [0, 255] images.

    Raises:
        ValueError: For a spec that names no model.
    """
    if spec.endswith(".keras"):
        if not pathlib.Path(spec).is_file():
            raise ValueError(f"--{role}={spec!r}: no such file.")
        try:
            import keras_hub  # noqa: F401  (registers KerasHub classes for loading)
        except ImportError:
            pass
        return keras.saving.load_model(spec)
    if spec.startswith("keras_hub:"):
        import keras_hub

        return keras_hub.models.ImageClassifier.from_preset(spec.split(":", 1)[1])
    return _application(spec, role, num_classes, image_size, weights)


def image_folder(path, image_size, batch_size, validation_split, seed):
    """Training and held-out `tf.data` splits of an image folder, [0, 255] pixels."""
    folder = pathlib.Path(path)
    if not folder.is_dir() or not any(p.is_dir() for p in folder.iterdir()):
        raise ValueError(
            f"--data={path!r} is not a folder of class sub-folders (e.g. photos/cat/1.jpg)."
        )
    train, held_out = keras.utils.image_dataset_from_directory(
        folder, image_size=(image_size, image_size), batch_size=batch_size, seed=seed,
        validation_split=validation_split, subset="both", verbose=False,
    )
    return train, held_out, len(train.class_names)


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", required=True, help="Image folder, one sub-folder per class.")
    parser.add_argument("--teacher", required=True,
                        help=".keras file, keras.applications name or keras_hub:<preset>.")
    parser.add_argument("--teacher_weights", default="imagenet", choices=["imagenet", "none"],
                        help="Weights of a keras.applications teacher.")
    parser.add_argument("--student", default="MobileNetV3Small",
                        help="keras.applications name (random init) or .keras file.")
    parser.add_argument("--methods", default="kd", help="Comma-separated: kd, dkd, msdcrd, ...")
    parser.add_argument("--image_size", type=int, default=224)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--learning_rate", type=float, default=0.01)
    parser.add_argument("--ce_weight", type=float, default=0.1)
    parser.add_argument("--validation_split", type=float, default=0.2)
    parser.add_argument("--output", default="student.keras")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    keras.utils.set_random_seed(args.seed)
    train, held_out, num_classes = image_folder(
        args.data, args.image_size, args.batch_size, args.validation_split, args.seed
    )
    weights = None if args.teacher_weights == "none" else args.teacher_weights
    teacher = load_model(args.teacher, "teacher", num_classes, args.image_size, weights)
    student = load_model(args.student, "student", num_classes, args.image_size)
    distiller = kerasdistill.Distiller(teacher, student, args.methods, ce_weight=args.ce_weight)
    for tap, layer in distiller.tap_layers["student"].items():
        print(f"{tap}: teacher {distiller.tap_layers['teacher'][tap]}, student {layer}")
    distiller.compile(
        optimizer=keras.optimizers.SGD(args.learning_rate, momentum=0.9), metrics=["accuracy"]
    )
    distiller.fit(train, epochs=args.epochs, verbose=2)
    teacher_accuracy = keras.metrics.SparseCategoricalAccuracy()
    for images, labels in held_out:
        teacher_accuracy.update_state(labels, teacher(images, training=False))
    student_accuracy = distiller.evaluate(held_out, verbose=0, return_dict=True)["accuracy"]
    distiller.student.save(args.output)
    print(f"held-out accuracy: teacher {float(teacher_accuracy.result()):.3f}, "
          f"student {student_accuracy:.3f}; student saved to {args.output}")
    return distiller


if __name__ == "__main__":
    try:
        main()
    except (ValueError, TypeError) as error:
        print(f"distill_your_model: error: {error}", file=sys.stderr)
        sys.exit(2)
