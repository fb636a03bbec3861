"""Name -> class registry of distillation methods (the `--method` flag)."""

_METHODS = {}


def register(name):
    """Class decorator registering a `DistillationMethod` under `name`."""

    def decorator(cls):
        if name in _METHODS:
            raise ValueError(f"Method {name!r} is already registered.")
        _METHODS[name] = cls
        return cls

    return decorator


def available():
    """Returns the sorted list of registered method names."""
    return sorted(_METHODS)


def method_class(name):
    """Returns the class registered under `name`.

    Raises:
        ValueError: Listing the available names when `name` is unknown.
    """
    if name not in _METHODS:
        raise ValueError(f"Unknown method {name!r}. Available methods: {', '.join(available())}.")
    return _METHODS[name]


def get(identifier, data=None, **kwargs):
    """Instantiates a method by name.

    Args:
        identifier: A registered method name (see `available()`).
        data: A `TrainingData` telling the method what it needs of the
            training set (CRD: the labels; DKD: steps per epoch for
            `warmup_epochs`), or `None`.
        **kwargs: Hyper-parameters passed to the method's constructor.

    Returns:
        A `DistillationMethod` instance.
    """
    return method_class(identifier).from_data(data, **kwargs)
