"""Multi-scale average pooling: one feature map decoupled into local feature vectors.

A *scale* cuts the map into *regions*; each region is average-pooled into one
local feature vector. The regions of all scales, concatenated, form a
`(batch, P, channels)` tensor.

Every region is first an *extent*, a box of the unit square (relative
coordinates, the same on maps of any size), then a *pixel span* on one map:
along an axis of length `H`, the extent `[a, b)` covers the pixels
`floor(a * H)` to `ceil(b * H) - 1`, the smallest set of whole pixels that
contains it. Two modes describe the scales:

- `"grid"`: each scale is an integer `g`, a `g x g` grid; cell `i` along an
  axis has extent `[i / g, (i + 1) / g)`, hence pixels `floor(i H / g)` to
  `ceil((i + 1) H / g) - 1`: adaptive average pooling as defined by PyTorch's
  `adaptive_avg_pool2d`. Where `g` divides `H` the cells are the
  non-overlapping `H / g` windows; otherwise neighbouring cells share the
  boundary pixel (a 4-grid on 7 pixels: 0-1, 1-3, 3-5, 5-6). A grid needs
  `g <= H`, so that no two cells pool the same pixels.
- `"overlapping"`: each scale is a `(window, stride)` pair of sliding-window
  pooling.
  - Both entries floats in `(0, 1]`: fractions of the map side. Window `k`
    along an axis has extent `[k s, k s + w)`, for `k = 0 .. (1 - w) / s`,
    which must be a whole number; a map of any size accepts it, provided
    window and stride each cover at least one pixel. Where `w H` and `s H` are
    whole numbers this is plain sliding-window pooling; otherwise each window
    is widened to whole pixels as above.
  - Otherwise pixels: an `int` entry is a number of pixels and a `float` one a
    fraction that must be a whole number of pixels on that map; the windows
    must tile the side exactly (`(H - window) % stride == 0`), and the
    number of regions depends on the map size.

Grids and fractional windows refer to the map's geometry rather than to pixel
counts: maps of different spatial sizes (a teacher's 8x8 and a student's 4x4,
or 7x7 and 14x14) give the same regions, region `r` covering the same relative
area on both.

Region order is fixed: scales in the given order; within a scale, windows in
row-major order (top to bottom, then left to right).
"""

import collections
import fractions
import math

import numpy as np
from keras import ops

GRID = "grid"
OVERLAPPING = "overlapping"
MODES = (GRID, OVERLAPPING)


class Window(
    collections.namedtuple("Window", ["row_spans", "col_spans", "row_extents", "col_extents"])
):
    """One resolved scale on one map.

    Attributes:
        row_spans: One `(start, stop)` pixel range (stop excluded) per region row.
        col_spans: Same for the region columns.
        row_extents: One `(start, stop)` pair of `fractions.Fraction`s per
            region row: the rows' boxes in relative coordinates (`[0, 1]`).
        col_extents: Same for the region columns.
    """

    __slots__ = ()

    @property
    def regions(self):
        """Number of regions `(rows, columns)`."""
        return (len(self.row_spans), len(self.col_spans))


def _check_mode(mode):
    if mode not in MODES:
        raise ValueError(f"Unknown pooling mode {mode!r}; expected one of {MODES}.")


def _is_number(value):
    return not isinstance(value, bool) and isinstance(value, (int, float))


def _fraction(value, what, scale):
    """A float in `(0, 1]` as an exact fraction (0.1 is 1/10, not its binary value)."""
    if not 0.0 < value <= 1.0:
        raise ValueError(
            f"Scale {scale!r}: a float {what} is a fraction of the map side and must be "
            f"in (0, 1], got {value}."
        )
    return fractions.Fraction(repr(value))


def _resolve_pixels(value, side, what, scale):
    """Resolves a window or stride entry (int pixels or float fraction) to pixels."""
    if isinstance(value, int):
        if value < 1:
            raise ValueError(f"Scale {scale!r}: {what} must be >= 1 pixel, got {value}.")
        return value
    length = _fraction(value, what, scale) * side
    if length.denominator != 1:
        raise ValueError(
            f"Scale {scale!r}: {what} fraction {value} of a side of {side} is "
            f"{float(length):g}, not a whole number of pixels."
        )
    return int(length)


def _covering_span(extent, side):
    """The whole pixels `[floor(a H), ceil(b H))` covering the extent `[a, b)`."""
    start, stop = extent
    return math.floor(start * side), math.ceil(stop * side)


def _relative_extents(window, stride, count):
    return tuple((k * stride, k * stride + window) for k in range(count))


def _grid_extents(side, grid, axis):
    if isinstance(grid, bool) or not isinstance(grid, int) or grid < 1:
        raise ValueError(f"Grid scales must be positive ints, got {grid!r}.")
    if grid > side:
        raise ValueError(
            f"Grid {grid}x{grid} is finer than the feature map: its {axis} is {side} "
            f"pixels, fewer than {grid} cells; use grids of at most {side}."
        )
    cell = fractions.Fraction(1, grid)
    return _relative_extents(cell, cell, grid)


def _fractional_extents(side, scale, axis):
    window, stride = (_fraction(v, what, scale) for v, what in zip(scale, ("window", "stride")))
    steps = (1 - window) / stride
    if steps.denominator != 1:
        raise ValueError(
            f"Scale {scale!r}: a window fraction {scale[0]} with stride fraction {scale[1]} "
            "does not tile the side ((1 - window) / stride must be a whole number)."
        )
    if window * side < 1 or (steps and stride * side < 1):
        raise ValueError(
            f"Scale {scale!r}: on a map {axis} of {side} pixels the window or stride is "
            "less than one pixel."
        )
    return _relative_extents(window, stride, int(steps) + 1)


def _pixel_extents(side, scale, axis):
    window = _resolve_pixels(scale[0], side, "window", scale)
    stride = _resolve_pixels(scale[1], side, "stride", scale)
    if window > side:
        raise ValueError(f"Scale {scale!r}: window {window} exceeds the map {axis} {side}.")
    if (side - window) % stride:
        raise ValueError(
            f"Scale {scale!r}: window {window} with stride {stride} does not tile the "
            f"map {axis} {side} exactly ((side - window) must be a multiple of stride)."
        )
    count = (side - window) // stride + 1
    unit = fractions.Fraction(1, side)
    return _relative_extents(window * unit, stride * unit, count)


def _sliding_extents(side, scale, axis):
    if not isinstance(scale, (tuple, list)) or len(scale) != 2:
        raise ValueError(
            f"Overlapping scales must be (window, stride) pairs, got {scale!r}."
        )
    for value, what in zip(scale, ("window", "stride")):
        if not _is_number(value):
            raise ValueError(f"Scale {scale!r}: {what} must be an int or a float, got {value!r}.")
    if all(isinstance(v, float) for v in scale):
        return _fractional_extents(side, scale, axis)
    return _pixel_extents(side, scale, axis)


def resolve_scales(spatial_shape, scales, mode=GRID):
    """Resolves scales into the regions of a map of a given spatial size.

    Args:
        spatial_shape: `(height, width)` of the feature map (static ints).
        scales: Grid sizes (mode `"grid"`) or `(window, stride)` pairs (mode
            `"overlapping"`); see the module docstring.
        mode: `"grid"` or `"overlapping"`.

    Returns:
        A tuple of `Window`s, one per scale.

    Raises:
        ValueError: If a scale does not fit the map (a grid finer than a side,
            a window larger than the map or smaller than a pixel, a pixel
            window and stride that do not tile the side, fractions whose
            windows do not tile the unit side).
    """
    _check_mode(mode)
    if len(spatial_shape) != 2 or any(s is None for s in spatial_shape):
        raise ValueError(
            f"Multi-scale pooling needs a static (height, width), got {tuple(spatial_shape)}."
        )
    height, width = (int(s) for s in spatial_shape)
    if not scales:
        raise ValueError("At least one pooling scale is required.")
    resolve = _grid_extents if mode == GRID else _sliding_extents
    windows = []
    for scale in scales:
        rows = resolve(height, scale, "height")
        cols = resolve(width, scale, "width")
        windows.append(
            Window(
                tuple(_covering_span(e, height) for e in rows),
                tuple(_covering_span(e, width) for e in cols),
                rows,
                cols,
            )
        )
    return tuple(windows)


def fitting_grids(spatial_shape, grids=(1, 2, 4)):
    """Keeps the grid sizes that fit a map: at most one cell per pixel on each side.

    Args:
        spatial_shape: `(height, width)`, or several such shapes (e.g. the
            teacher's and the student's map), all of which must fit.
        grids: Candidate grid sizes.

    Returns:
        The tuple of the grid sizes `g <= min(height, width)`, in their order.
    """
    shapes = spatial_shape if isinstance(spatial_shape[0], (tuple, list)) else (spatial_shape,)
    smallest = min(int(side) for shape in shapes for side in shape)
    return tuple(g for g in grids if g <= smallest)


def region_scale_ids(windows):
    """Returns, for each region in output order, the index of its scale."""
    return tuple(i for i, w in enumerate(windows) for _ in range(w.regions[0] * w.regions[1]))


def _region_boxes(windows):
    """Relative boxes `(rows_extent, cols_extent)` of every region, in output order."""
    return [(r, c) for w in windows for r in w.row_extents for c in w.col_extents]


def region_overlap_mask(windows):
    """Which regions share area, by their relative extents.

    Cells of one grid only touch and never overlap, even where the pooled
    pixel spans of a non-divisible map share a boundary pixel.

    Args:
        windows: `Window`s from `resolve_scales`.

    Returns:
        A boolean NumPy `(P, P)` array, `True` where region `a` and region `b`
        intersect with a positive area (the diagonal is `True`).
    """
    boxes = _region_boxes(windows)

    def overlaps(first, second):
        return first[0] < second[1] and second[0] < first[1]

    return np.array(
        [[overlaps(a[0], b[0]) and overlaps(a[1], b[1]) for b in boxes] for a in boxes]
    )


def pooling_matrix(spatial_shape, windows):
    """The averaging weights of every region over the pixels of a map.

    Args:
        spatial_shape: `(height, width)` of the map.
        windows: `Window`s resolved on that map.

    Returns:
        A float32 NumPy `(P, height * width)` array; row `r` holds
        `1 / (pixels of region r)` on the pixels of region `r` (row-major
        pixel order), 0 elsewhere.
    """
    height, width = (int(s) for s in spatial_shape)
    rows = []
    for w in windows:
        for r0, r1 in w.row_spans:
            for c0, c1 in w.col_spans:
                weights = np.zeros((height, width), "float32")
                weights[r0:r1, c0:c1] = 1.0 / ((r1 - r0) * (c1 - c0))
                rows.append(weights.reshape(-1))
    return np.stack(rows)


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

    All regions are pooled by one matrix product with the constant weights of
    `pooling_matrix` (`P x H W` multiply-adds per image and channel).

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
    height, width, channels = x.shape[1:]
    weights = pooling_matrix((height, width), resolve_scales((height, width), scales, mode))
    pixels = ops.reshape(x, (-1, height * width, channels))
    return ops.einsum("pk,nkc->npc", ops.convert_to_tensor(weights, dtype), pixels)
