"""Loading RepDistiller PyTorch checkpoints into the Keras model zoo.

A zoo layer is named after the PyTorch module path with every `.` replaced by
`_` (`layer1.0.conv1` -> `layer1_0_conv1`; Keras's torch backend refuses dots
in names). The converter maps the module paths of the state dict the same way,
so each weighted layer reads the entries `<module path>.weight`, `.bias`, ...
of the module whose path maps to its name, and converts their layout
(NCHW/OIHW to NHWC/HWIO). torch is only needed to read `.pth` files
(`read_torch_state_dict`, `from_torch_checkpoint`); `load_torch_state_dict`
takes NumPy arrays.
"""

import keras
import numpy as np

from kerasdistill.models import registry

_PREFIX = "module."  # Added by torch.nn.DataParallel.
_SKIPPED_SUFFIX = ".num_batches_tracked"  # No Keras counterpart.


def _conv_kernel(w):
    return w.transpose(2, 3, 1, 0)  # OIHW -> HWIO (also grouped: [O, I/g, kh, kw]).


def _depthwise_kernel(w):
    return w.transpose(2, 3, 0, 1)  # [C, 1, kh, kw] -> [kh, kw, C, 1].


def _same(w):
    return w


# Layer type -> ((Keras attribute, torch suffix, layout conversion), ...).
# DepthwiseConv2D is not a Conv2D subclass, but keep it first in any case.
_WEIGHT_MAPS = (
    (
        keras.layers.DepthwiseConv2D,
        (("kernel", "weight", _depthwise_kernel), ("bias", "bias", _same)),
    ),
    (keras.layers.Conv2D, (("kernel", "weight", _conv_kernel), ("bias", "bias", _same))),
    (keras.layers.Dense, (("kernel", "weight", np.transpose), ("bias", "bias", _same))),
    (
        keras.layers.BatchNormalization,
        (
            ("gamma", "weight", _same),
            ("beta", "bias", _same),
            ("moving_mean", "running_mean", _same),
            ("moving_variance", "running_var", _same),
        ),
    ),
)


def _weight_map(layer):
    for layer_type, mapping in _WEIGHT_MAPS:
        if isinstance(layer, layer_type):
            return mapping
    return ()


def _clean_state_dict(state_dict):
    cleaned = {}
    for key, value in state_dict.items():
        if key.endswith(_SKIPPED_SUFFIX):
            continue
        if key.startswith(_PREFIX):
            key = key[len(_PREFIX) :]
        cleaned[key] = np.asarray(value)
    return cleaned


def keras_layer_name(module_path):
    """The zoo's layer name for a PyTorch module path: every `.` becomes `_`.

    Args:
        module_path: A module path of a state dict, such as `layer1.0.conv1`.

    Returns:
        The Keras layer name, such as `layer1_0_conv1`.
    """
    return module_path.replace(".", "_")


def _module_paths(arrays):
    """Maps each Keras layer name to the PyTorch module path it stands for.

    Raises:
        ValueError: If two module paths of the state dict map to the same
            Keras layer name (for instance `a.b_c` and `a_b.c`).
    """
    paths = {}
    for key in arrays:
        path = key.rpartition(".")[0]
        name = keras_layer_name(path)
        if paths.setdefault(name, path) != path:
            raise ValueError(
                f"The state dict's modules {paths[name]!r} and {path!r} both map to the "
                f"Keras layer name {name!r} ('.' -> '_'); they cannot be told apart."
            )
    return paths


def _match(model, arrays):
    """Pairs every Keras weight with its converted torch array.

    Returns the `(variable, value)` pairs and a list of problem descriptions
    (empty when every key and every weight is used exactly once).
    """
    paths = _module_paths(arrays)
    assignments, missing, mismatched = [], [], []
    consumed, covered = set(), set()
    for layer in model.layers:
        for attr, suffix, convert in _weight_map(layer):
            variable = getattr(layer, attr, None)
            if variable is None:  # For instance a conv without bias.
                continue
            covered.add(id(variable))
            # A module absent from the state dict is named by the Keras layer.
            key = f"{paths.get(layer.name, layer.name)}.{suffix}"
            if key not in arrays:
                missing.append(key)
                continue
            consumed.add(key)
            value = convert(arrays[key])
            if tuple(value.shape) == tuple(variable.shape):
                assignments.append((variable, value))
            else:
                mismatched.append(
                    f"{key}: torch {arrays[key].shape} -> {value.shape}, "
                    f"Keras {tuple(variable.shape)}"
                )
    unexpected = sorted(set(arrays) - consumed)
    uncovered = [v.path for v in model.weights if id(v) not in covered]
    problems = []
    if missing:
        problems.append(f"missing keys (Keras weights without a torch entry): {missing}")
    if unexpected:
        problems.append(f"unexpected keys (torch entries no Keras weight uses): {unexpected}")
    if mismatched:
        problems.append(f"shape mismatches: {mismatched}")
    if uncovered:
        problems.append(f"Keras weights of layer types the converter does not handle: {uncovered}")
    return assignments, problems


def load_torch_state_dict(model, state_dict):
    """Sets the weights of a zoo model from a PyTorch state dict.

    The entry `<module path>.<suffix>` goes to the layer named
    `keras_layer_name(<module path>)`. Conv2d weights go from OIHW to HWIO
    (depthwise ones to `[kh, kw, C, 1]`), Linear weights are transposed, and
    BatchNorm `weight`, `bias`, `running_mean`, `running_var` become `gamma`,
    `beta`, `moving_mean`, `moving_variance`. A leading `module.` is stripped
    from keys and `num_batches_tracked` entries are ignored. Nothing is
    assigned unless every entry maps to exactly one Keras weight and every
    Keras weight is covered.

    Args:
        model: A Keras model whose layer names are the PyTorch module paths
            with `.` replaced by `_` (any model of the zoo).
        state_dict: A mapping from torch key to array (NumPy arrays, or
            anything `np.asarray` accepts, in PyTorch layout).

    Returns:
        `model`, with its weights set.

    Raises:
        ValueError: If keys are missing or unexpected, if a shape does not
            match, if the model has weights of an unsupported layer type, or
            if two module paths map to the same layer name. The message lists
            the offending keys (a missing module's by its Keras layer name).
    """
    assignments, problems = _match(model, _clean_state_dict(state_dict))
    if problems:
        raise ValueError(
            f"Cannot load the state dict into model {model.name!r}; " + "; ".join(problems)
        )
    for variable, value in assignments:
        variable.assign(value.astype(variable.dtype))
    return model


def read_torch_state_dict(path, weights_only=True):
    """Reads the state dict of a PyTorch `.pth` file as NumPy arrays.

    Accepts the reference training scripts' checkpoints (a dict whose
    `"model"` entry is the state dict, as RepDistiller and mdistiller save)
    as well as a bare state dict (as torchvision publishes). Tensors are
    mapped to the CPU, so GPU-trained checkpoints load on CPU-only machines.
    Needs torch.

    Args:
        path: Path of the `.pth` file.
        weights_only: Passed to `torch.load`. Keep `True` unless the file is
            trusted and stores other objects (for instance the `opt`
            namespace of `<model>_last.pth` files).

    Returns:
        A dict from torch key to NumPy array, in PyTorch layout.

    Raises:
        ImportError: If torch is not installed.
        ValueError: If the file holds no state dict.
    """
    try:
        import torch
    except ImportError as error:
        raise ImportError(
            "Reading PyTorch checkpoints needs torch: pip install torch "
            "(or pip install 'kerasdistill[torch]')."
        ) from error
    checkpoint = torch.load(path, map_location="cpu", weights_only=weights_only)
    state_dict = checkpoint.get("model", checkpoint) if isinstance(checkpoint, dict) else None
    if not isinstance(state_dict, dict):
        raise ValueError(
            f"{path} holds no state dict (expected a dict, or a dict with a 'model' entry)."
        )
    return {key: value.detach().cpu().numpy() for key, value in state_dict.items()}


def from_torch_checkpoint(name, path, num_classes=100, weights_only=True):
    """Builds a zoo model and loads a RepDistiller PyTorch checkpoint into it.

    Reads the file with `read_torch_state_dict` (a training checkpoint or a
    bare state dict). Needs torch.

    Args:
        name: Registered model name (for instance `"resnet32x4"`).
        path: Path of the `.pth` file.
        num_classes: Number of classes of the checkpoint's classifier.
        weights_only: Passed to `torch.load` (see `read_torch_state_dict`).

    Returns:
        The built `keras.Model` with the checkpoint's weights.

    Raises:
        ImportError: If torch is not installed.
        ValueError: If the checkpoint does not match the model (see
            `load_torch_state_dict`).
    """
    arrays = read_torch_state_dict(path, weights_only=weights_only)
    model = registry.get(name, num_classes=num_classes)
    return load_torch_state_dict(model, arrays)
