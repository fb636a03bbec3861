"""Feature maps of a model found in its graph, and the tapped model returning them.

A tap is a name a distillation method asks for. Any model whose graph Keras
records (functional models, `keras.Sequential`, `keras.applications`,
KerasHub classifiers, nested models included) has these taps, found in its
graph rather than named by hand:

- `"logits"`: the model's output before a final softmax. A model ending in
  `Activation("softmax")`, `Softmax` or a `Dense(..., activation="softmax")`
  (the `keras.applications` default) is read before the softmax.
- `"pre_pool"`: the map that the model's global pooling reduces (whatever the
  pooling layer is called: `GlobalAveragePooling2D`/`GlobalMaxPooling2D`, a
  flatten, or the selection or mean of a ViT's or Mixer's tokens), found by
  walking back from the logits. A token sequence becomes an NHWC map of its
  patch grid (a class token, if any, dropped).
- `"pooled"`: that pooling's output, one vector per image.
- `"feat_0"` ... `"feat_K"`: stage maps, the last NHWC map at each spatial
  resolution on the main path (a map every path from the input to
  `pre_pool` goes through: block outputs, not side branches), largest first;
  a 1x1 widening at the end of a resolution (inverted residuals) belongs to
  what follows, so the map before it is taken. `"feat_last"` is the last of
  them. A token model has one: its `pre_pool` grid.

Models of the zoo name these layers (`feat_k`, `pooled`, `preact_k`), and a
layer of that name is used as is. Any other tap is a layer name, bare or
qualified by the nested models holding it (`"res_net_backbone/stack1_out"`).
A subclassed model has no graph: it offers `"logits"` only.

The tapped model shares every layer (and weight) with the original, so calling
it once in training mode updates BatchNorm statistics once.
"""

import re

import keras
from keras import ops

from kerasdistill.taps import graph, stage_maps
from kerasdistill.taps.heads import DenseLogits, is_softmax, token_map

# The taps every classifier with a graph offers (a subclassed model: `LOGITS` only).
LOGITS = "logits"
FEAT_LAST = "feat_last"
PRE_POOL = "pre_pool"
POOLED = "pooled"

_FEAT_PATTERN = re.compile(r"^feat_(\d+)$")
_ZOO_TAP_PATTERN = re.compile(r"^(feat|preact)_\d+$|^pooled$")
_GLOBAL_POOLS = (
    keras.layers.GlobalAveragePooling1D,
    keras.layers.GlobalAveragePooling2D,
    keras.layers.GlobalMaxPooling1D,
    keras.layers.GlobalMaxPooling2D,
)


def _shape_text(tensor):
    return "x".join(str(d) for d in tensor.shape[1:])


class FeatureMaps:
    """The taps of one model, found in its graph.

    Args:
        model: A `keras.Model`: functional, `Sequential` (built here with
            `input_shape` if it was not) or subclassed (logits only).
        input_shape: Image shape `(height, width, channels)`, used when
            `model` has no inputs of its own yet.

    Attributes:
        inputs: The symbolic inputs every tap is connected to.
        logits: The logits tensor.
        softmax_layer: Name of the softmax layer the logits are read before,
            or `None`.
        stage_maps: List of `(layer_name, tensor)`, largest resolution first.

    Raises:
        ValueError: If neither `model` nor `input_shape` tells the input shape.
    """

    def __init__(self, model, input_shape=None):
        self.model = model
        if isinstance(model, keras.Sequential) and not graph.is_graph_model(model):
            if input_shape is None:
                raise ValueError(
                    f"Sequential model {model.name!r} has no input shape; start it with "
                    "keras.Input(shape=...) or call model.build((None, height, width, channels))."
                )
            model.build((None, *input_shape))
        self.softmax_layer = None
        self._pool = None
        self.stage_maps = []
        if not graph.is_graph_model(model):
            self._trace = None
            if input_shape is None:
                raise ValueError(
                    f"Subclassed model {model.name!r} has no input shape; build it with "
                    "model.build((None, height, width, channels)) or give the other model "
                    "keras.Input."
                )
            self.inputs = keras.Input(shape=tuple(input_shape))
            self.logits = model(self.inputs)
            return
        self._trace = graph.trace(model)
        self.inputs = self._trace.inputs
        self.logits = self._find_logits()
        self._pool = self._find_pool()
        if self._pool is not None and len(self._pool.inputs[0].shape) == 3:
            # A token model's one map: its last tokens laid out on the patch grid.
            self.stage_maps = [(self._pre_pool_name(), self._pre_pool())]
        elif self._pool is not None:
            self.stage_maps = stage_maps.find(self._trace, self._pool, self.inputs)

    @property
    def subclassed(self):
        """Whether the model has no graph (its feature maps cannot be found)."""
        return self._trace is None

    def _find_logits(self):
        output = self._trace.output
        step = self._trace.producer(output)
        if step is None:
            return output
        layer = step.operation
        if isinstance(layer, keras.layers.Softmax) or (
            isinstance(layer, keras.layers.Activation) and is_softmax(layer.activation)
        ):
            self.softmax_layer = step.name
            return step.inputs[0]
        if isinstance(layer, keras.layers.Dense) and is_softmax(layer.activation):
            self.softmax_layer = step.name
            return DenseLogits(layer, name=f"{layer.name}_logits")(step.inputs[0])
        return output

    def _find_pool(self):
        """The step that reduces the last map to one vector per image, or `None`.

        Walking back from the output along each step's first input: the first
        global pooling layer, else the first step from a map (rank >= 3) to
        vectors (a flatten, a token selection or mean).
        """
        path = []
        step = self._trace.producer(self._trace.output)
        while step is not None and step.inputs:
            path.append(step)
            step = self._trace.producer(step.inputs[0])
        pools = [s for s in path if isinstance(s.operation, _GLOBAL_POOLS)]
        if pools:
            return pools[0]
        reducing = [
            s for s in path if len(s.inputs[0].shape) >= 3 and len(s.outputs[0].shape) == 2
        ]
        return reducing[0] if reducing else None

    def _pre_pool(self):
        source = self._pool.inputs[0]
        if len(source.shape) == 3:
            return token_map(source, f"The input of {self._pool.name!r}")
        return source

    def _pooled(self):
        pooled = self._pool.outputs[0]
        return pooled if len(pooled.shape) == 2 else ops.reshape(pooled, (-1, pooled.shape[-1]))

    def producer(self, tensor):
        """The traced step that computed `tensor`, or `None`."""
        return self._trace.producer(tensor)

    def _zoo_stage(self):
        """`feat_last` of a zoo model: its `feat_k` layer with the highest k."""
        stages = [
            (int(m.group(1)), step.name)
            for step in self._trace.steps
            if (m := _FEAT_PATTERN.match(step.name))
        ]
        return max(stages)[1] if stages else None

    def candidates(self):
        """One line listing the feature maps found, with their shapes."""
        if self.subclassed:
            return "none (a subclassed model offers 'logits' only)"
        zoo = [
            f"{step.name} ({_shape_text(step.outputs[0])})"
            for step in self._trace.steps
            if _ZOO_TAP_PATTERN.match(step.name)
        ]
        if zoo:
            return ", ".join(zoo)
        found = [
            f"feat_{k} = {name} ({_shape_text(t)})" for k, (name, t) in enumerate(self.stage_maps)
        ]
        if self._pool is not None:
            found.append(f"pre_pool = {self._pre_pool_name()} ({_shape_text(self._pre_pool())})")
            found.append(f"pooled = {self._pool.name} ({self._pooled().shape[-1]})")
        return "; ".join(found) or "none"

    def _pre_pool_name(self):
        source = self._trace.producer(self._pool.inputs[0])
        name = source.name if source is not None else "the input"
        if len(self._pool.inputs[0].shape) == 3:
            return f"{name} (tokens as a grid)"
        return name

    def _subclassed_error(self, tap):
        return ValueError(
            f"Tap {tap!r} needs a feature map, but model {self.model.name!r} is a subclassed "
            "keras.Model whose layers Keras does not record; build it as a functional model "
            "(inputs = keras.Input(shape); logits = head(backbone(inputs)); "
            "keras.Model(inputs, logits)) or name the tap's layer in such a model."
        )

    def _unknown(self, tap, layer):
        what = f"Tap {tap!r}" if tap == layer else f"Tap {tap!r} -> layer {layer!r}"
        return ValueError(
            f"{what} not found in model {self.model.name!r}. Taps: 'logits', 'pre_pool', "
            f"'pooled', 'feat_last', 'feat_k' or a layer name; feature maps found: "
            f"{self.candidates()}."
        )

    def resolve(self, tap, layer=None):
        """Returns `(description, tensor)` of tap `tap`.

        Args:
            tap: The tap name a method reads.
            layer: The layer name it is mapped to (default: `tap`).

        Returns:
            A layer name (or a short description of what was found) and the
            symbolic tensor.

        Raises:
            ValueError: Naming the tap and listing the feature maps found.
        """
        layer = tap if layer is None else layer
        if layer == LOGITS:
            return LOGITS, self.logits
        if self.subclassed:
            raise self._subclassed_error(tap)
        step = self._trace.step(layer)
        if step is not None:
            return step.name, step.outputs[0]
        if layer == FEAT_LAST:
            zoo = self._zoo_stage()
            if zoo is not None:
                return self.resolve(tap, zoo)
            if self.stage_maps:
                return self.stage_maps[-1]
        if layer in (PRE_POOL, POOLED) and self._pool is not None:
            if layer == POOLED:
                return self._pool.name, self._pooled()
            return self._pre_pool_name(), self._pre_pool()
        match = _FEAT_PATTERN.match(layer)
        if match and int(match.group(1)) < len(self.stage_maps):
            return self.stage_maps[int(match.group(1))]
        raise self._unknown(tap, layer)


def resolve_taps(model, taps, input_shape=None):
    """Maps tap names to what they read in `model`.

    Args:
        model: A `keras.Model` (see `FeatureMaps`).
        taps: An iterable of tap names, or a dict `{alias: layer_name}`.
        input_shape: Image shape for a model without inputs (see `FeatureMaps`).

    Returns:
        A dict `{tap: layer name or description}`.

    Raises:
        ValueError: For a tap that cannot be found; the message lists the
            feature maps found.
    """
    found = FeatureMaps(model, input_shape)
    mapping = dict(taps) if isinstance(taps, dict) else {t: t for t in taps}
    return {alias: found.resolve(alias, layer)[0] for alias, layer in mapping.items()}


def classifier_layer(model):
    """The Dense layer that produces `model`'s logits (its final classifier).

    Args:
        model: A `keras.Model` whose logits come from a Dense layer (before a
            final softmax, if any).

    Returns:
        That `keras.layers.Dense` layer (shared, not a copy).

    Raises:
        ValueError: If the logits do not come from a Dense layer.
    """
    found = FeatureMaps(model)
    step = None if found.subclassed else found.producer(found.logits)
    layer = None if step is None else step.operation
    if isinstance(layer, DenseLogits):
        layer = layer.dense
    if isinstance(layer, keras.layers.Dense):
        return layer
    raise ValueError(
        f"Model {model.name!r} does not end in a Dense classifier layer; pass the "
        "classifier layer explicitly (e.g. teacher_classifier=model.get_layer('fc'))."
    )


def tap_model(model, taps, input_shape=None):
    """Builds a model returning a dict of tapped tensors in one forward pass.

    Args:
        model: A `keras.Model` (see `FeatureMaps`).
        taps: An iterable of tap names or a dict `{alias: layer_name}`; see
            `FeatureMaps.resolve`. `"logits"` is always included.
        input_shape: Image shape for a model without inputs (see `FeatureMaps`).

    Returns:
        A `keras.Model` sharing `model`'s layers, whose output is a dict
        `{tap: tensor}`. Its attribute `tap_layers` maps each tap to the layer
        it reads, and `softmax_layer` names the final softmax the logits are
        read before (or is `None`).
    """
    taps = dict(taps) if isinstance(taps, dict) else {t: t for t in taps}
    taps.setdefault(LOGITS, LOGITS)
    found = FeatureMaps(model, input_shape)
    resolved = {alias: found.resolve(alias, layer) for alias, layer in taps.items()}
    tapped = keras.Model(
        found.inputs, {alias: tensor for alias, (_, tensor) in resolved.items()},
        name=f"{model.name}_taps",
    )
    tapped.tap_layers = {alias: name for alias, (name, _) in resolved.items()}
    tapped.softmax_layer = found.softmax_layer
    return tapped
