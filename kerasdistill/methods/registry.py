"""Name -> class registry of distillation methods (the `--method` flag)."""

import difflib

from kerasdistill.methods import defaults

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
        close = difflib.get_close_matches(str(name).lower(), available(), n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ValueError(
            f"Unknown method {name!r}.{hint} Available methods: {', '.join(available())}."
        )
    return _METHODS[name]


def get(identifier, **kwargs):
    """Returns a method from a name, a config dict or an instance, like Keras's `*.get`.

    Args:
        identifier: A registered method name (see `available()`), a dict
            `{"name": ..., **hyper_parameters}` or a Keras config dict
            (`{"class_name": ..., "config": ...}`), or a
            `DistillationMethod` (returned as is).
        **kwargs: Hyper-parameters passed to the method's constructor.

    Returns:
        A `DistillationMethod` instance. What it needs of the training set
        (its `needs`: CRD's labels, DKD's steps per epoch for `warmup_epochs`)
        it takes in `set_up`, from `Distiller(..., training_data=...)`.

    Raises:
        ValueError: For an unknown name (the closest one suggested).
        TypeError: For an identifier of another type, or a misspelled
            hyper-parameter (the closest one suggested).
    """
    from kerasdistill.methods.base import DistillationMethod

    if "data" in kwargs:
        raise TypeError(
            "methods.get no longer takes data=: pass Distiller(..., training_data=TrainingData(...)) "
            "or call method.set_up(TrainingData(...))."
        )
    if isinstance(identifier, DistillationMethod):
        if kwargs:
            raise TypeError(f"Hyper-parameters {sorted(kwargs)} given with a method instance.")
        return identifier
    if isinstance(identifier, dict) and "class_name" in identifier:
        import keras

        return keras.saving.deserialize_keras_object(identifier)
    if isinstance(identifier, dict):
        config = dict(identifier)
        if "name" not in config:
            raise ValueError(
                f"A method dict needs a 'name' key (one of {available()}); got {identifier!r}."
            )
        return get(config.pop("name"), **config, **kwargs)
    if not isinstance(identifier, str):
        raise TypeError(
            f"A method is a name ({', '.join(available())}), a dict or a DistillationMethod; "
            f"got {identifier!r}."
        )
    return method_class(identifier)(**kwargs)


def get_list(identifiers):
    """Returns the methods of a Distiller from what a user may write.

    Args:
        identifiers: `None` or `[]` (no method: the student alone), one
            identifier accepted by `get`, a comma-separated string of names
            (`"kd,msdcrd"`), or a list of identifiers. The name `"default"`
            stands for the default methods
            (`kerasdistill.methods.defaults.DEFAULT_RECIPE`).

    Returns:
        A list of new `DistillationMethod` instances (a given instance is
        used as is).
    """
    found = []
    for identifier in defaults.listed(identifiers):
        if isinstance(identifier, str):
            found += [get(name, **kwargs) for name, kwargs in defaults.expand([identifier])]
        else:
            found.append(get(identifier))
    return found
