"""Name -> builder registry of the model zoo."""

_BUILDERS = {}


def register(name):
    """Decorator registering a model builder under `name`.

    Args:
        name: Registry name, as in the reference code (`resnet8x4`, `wrn_40_2`).

    Returns:
        A decorator that records the builder and returns it unchanged.
    """

    def decorator(builder):
        if name in _BUILDERS:
            raise ValueError(f"Model {name!r} is already registered.")
        _BUILDERS[name] = builder
        return builder

    return decorator


def available():
    """Returns the sorted list of registered model names."""
    return sorted(_BUILDERS)


def get(name, num_classes=100, **kwargs):
    """Builds a zoo model by name.

    Args:
        name: A registered model name (see `available()`).
        num_classes: Number of output classes.
        **kwargs: Passed to the builder (for instance `input_shape`).

    Returns:
        A functional `keras.Model` mapping NHWC images to logits, whose feature
        layers are named `feat_0`, `feat_1`, ..., `pooled`.
    """
    if name not in _BUILDERS:
        raise ValueError(f"Unknown model {name!r}. Available models: {', '.join(available())}.")
    return _BUILDERS[name](num_classes=num_classes, **kwargs)
