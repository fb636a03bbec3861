"""Multi-scale average pooling: one feature map decoupled into local feature vectors.

A *scale* pools the map with one average-pooling window; every window position
is a *region* and yields one local feature vector. The regions of all scales,
concatenated, form a `(batch, P, channels)` tensor.

Two modes describe the scales:

- `"grid"`: each scale is an integer `g`, the map is cut into a `g x g` grid of
  non-overlapping cells (window = stride = side / g). A grid refers to the map's
  geometry rather than to pixel counts, so maps of different spatial sizes (a
  teacher's 8x8 and a student's 4x4) give the same regions.
- `"overlapping"`: each scale is a `(window, stride)` pair of sliding-window
  pooling. Each entry is either an `int` (pixels, the same on every map) or a
  `float` in `(0, 1]` (a fraction of the map side, resolved per map so that
  maps of different sizes give the same regions).

Region order is fixed: scales in the given order; within a scale, windows in
row-major order (top to bottom, then left to right).
"""

import collections
import math

from keras import ops

GRID = "grid"
OVERLAPPING = "overlapping"
MODES = (GRID, OVERLAPPING)

Window = collections.namedtuple("Window", ["pool_size", "strides", "regions"])
Window.__doc__ = """One resolved scale: `(height, width)` pairs of the pooling
window, of its strides and of the number of regions it yields along each axis."""


def _check_mode(mode):
    if mode not in MODES:
        raise ValueError(f"Unknown pooling mode {mode!r}; expected one of {MODES}.")


def _resolve_length(value, side, what, scale):
    """Resolves a window or stride entry (int pixels or float fraction) on one side."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"Scale {scale!r}: {what} must be an int or a float, got {value!r}.")
    if isinstance(value, int):
        if value < 1:
            raise ValueError(f"Scale {scale!r}: {what} must be >= 1 pixel, got {value}.")
        return value
    if not 0.0 < value <= 1.0:
        raise ValueError(
            f"Scale {scale!r}: a float {what} is a fraction of the map side and must be "
            f"in (0, 1], got {value}."
        )
    length = value * side
    if abs(length - round(length)) > 1e-6 or round(length) < 1:
        raise ValueError(
            f"Scale {scale!r}: {what} fraction {value} of a side of {side} is "
            f"{length:g}, not a whole number of pixels."
        )
    return int(round(length))


def _resolve_grid(side, grid, axis):
    if isinstance(grid, bool) or not isinstance(grid, int) or grid < 1:
        raise ValueError(f"Grid scales must be positive ints, got {grid!r}.")
    if side % grid:
        raise ValueError(
            f"Grid {grid}x{grid} does not divide the feature map: its {axis} is {side}, "
            f"not a multiple of {grid}."
        )
    return side // grid, side // grid, grid


def _resolve_sliding(side, scale, axis):
    if not isinstance(scale, (tuple, list)) or len(scale) != 2:
        raise ValueError(
            f"Overlapping scales must be (window, stride) pairs, got {scale!r}."
        )
    window = _resolve_length(scale[0], side, "window", scale)
    stride = _resolve_length(scale[1], side, "stride", scale)
    if window > side:
        raise ValueError(f"Scale {scale!r}: window {window} exceeds the map {axis} {side}.")
    if (side - window) % stride:
        raise ValueError(
            f"Scale {scale!r}: window {window} with stride {stride} does not tile the "
            f"map {axis} {side} exactly ((side - window) must be a multiple of stride)."
        )
    return window, stride, (side - window) // stride + 1


def resolve_scales(spatial_shape, scales, mode=GRID):
    """Resolves scales into pooling windows for a map of a given spatial size.

    Args:
        spatial_shape: `(height, width)` of the feature map (static ints).
        scales: Grid sizes (mode `"grid"`) or `(window, stride)` pairs (mode
            `"overlapping"`); see the module docstring.
        mode: `"grid"` or `"overlapping"`.

    Returns:
        A tuple of `Window`s, one per scale.

    Raises:
        ValueError: If a scale does not fit the map (a grid that does not divide
            a side, a window larger than the map, a fraction that is not a whole
            number of pixels, a window and stride that do not tile the side).
    """
    _check_mode(mode)
    if len(spatial_shape) != 2 or any(s is None for s in spatial_shape):
        raise ValueError(
            f"Multi-scale pooling needs a static (height, width), got {tuple(spatial_shape)}."
        )
    height, width = (int(s) for s in spatial_shape)
    if not scales:
        raise ValueError("At least one pooling scale is required.")
    resolve = _resolve_grid if mode == GRID else _resolve_sliding
    windows = []
    for scale in scales:
        kh, sh, nh = resolve(height, scale, "height")
        kw, sw, nw = resolve(width, scale, "width")
        windows.append(Window((kh, kw), (sh, sw), (nh, nw)))
    return tuple(windows)


def region_scale_ids(windows):
    """Returns, for each region in output order, the index of its scale."""
    return tuple(i for i, w in enumerate(windows) for _ in range(w.regions[0] * w.regions[1]))


def matching_windows(teacher_shape, student_shape, scales, mode=GRID):
    """Resolves scales on both maps and checks that their regions correspond.

    Args:
        teacher_shape: Shape of the teacher map, `(batch, height, width, channels)`.
        student_shape: Shape of the student map, same layout.
        scales: See `resolve_scales`.
        mode: See `resolve_scales`.

    Returns:
        `(teacher_windows, student_windows)`, tuples of `Window`s.

    Raises:
        ValueError: If a map is not rank 4, a scale does not fit a map, or the
            two maps would give a different number of regions at some scale.
    """
    for side, shape in (("teacher", teacher_shape), ("student", student_shape)):
        if len(shape) != 4 or shape[1] is None or shape[2] is None:
            raise ValueError(
                f"Multi-scale pooling needs a {side} NHWC map with static spatial size, "
                f"got shape {tuple(shape)}."
            )
    teacher = resolve_scales(teacher_shape[1:3], scales, mode)
    student = resolve_scales(student_shape[1:3], scales, mode)
    for scale, t, s in zip(scales, teacher, student):
        if t.regions != s.regions:
            raise ValueError(
                f"Scale {scale!r} gives {t.regions[0]}x{t.regions[1]} regions on the teacher "
                f"map {tuple(teacher_shape[1:3])} but {s.regions[0]}x{s.regions[1]} on the "
                f"student map {tuple(student_shape[1:3])}; use grid scales or fractional "
                "windows so that both sides give the same regions."
            )
    return teacher, student


def multiscale_pool(feature_map, scales=(1, 2, 4), mode=GRID, dtype="float32"):
    """Decouples an NHWC feature map into local features at several scales.

    Args:
        feature_map: `(batch, height, width, channels)` tensor with static
            spatial size.
        scales: See `resolve_scales`. Default: 1x1, 2x2 and 4x4 grids.
        mode: `"grid"` or `"overlapping"`.
        dtype: Dtype the map is cast to before pooling (float32 by default, so
            float16 maps are averaged without overflow).

    Returns:
        A `(batch, P, channels)` tensor, `P` the number of regions over all
        scales, in the order documented in the module docstring.
    """
    x = ops.cast(feature_map, dtype)
    windows = resolve_scales(x.shape[1:3], scales, mode)
    channels = x.shape[-1]
    pooled = []
    for window in windows:
        local = ops.average_pool(
            x, window.pool_size, window.strides, padding="valid", data_format="channels_last"
        )
        pooled.append(ops.reshape(local, (-1, math.prod(window.regions), channels)))
    return pooled[0] if len(pooled) == 1 else ops.concatenate(pooled, axis=1)
