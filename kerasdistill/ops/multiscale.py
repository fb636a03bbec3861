"""Multi-scale average pooling: one feature map decoupled into local feature vectors.

A *scale* cuts the map into *regions*; each region is average-pooled into one
local feature vector. The regions of all scales, concatenated, form a
`(batch, P, channels)` tensor.

Every region is first an *extent*, a box of the unit square (relative
coordinates, the same on maps of any size), then a *pixel span* on one map:
along an axis of length `H`, the extent `[a, b)` covers the pixels
`floor(a * H)` to `ceil(b * H) - 1`, the smallest set of whole pixels that
contains it.

A scale here is a grid size `g`, a `g x g` grid: cell `i` along an axis has
extent `[i / g, (i + 1) / g)`, hence pixels `floor(i H / g)` to
`ceil((i + 1) H / g) - 1`, adaptive average pooling as defined by PyTorch's
`adaptive_avg_pool2d`. Where `g` divides `H` the cells are the
non-overlapping `H / g` windows; otherwise neighbouring cells share the
boundary pixel (a 4-grid on 7 pixels: 0-1, 1-3, 3-5, 5-6). A grid needs
`g <= H`, so that no two cells pool the same pixels. Other ways of cutting a
side into extents plug in through the `extents` argument (`MSDCRDVariants`'
sliding windows).

Grids refer to the map's geometry rather than to pixel counts: maps of
different spatial sizes (a teacher's 8x8 and a student's 4x4, or 7x7 and
14x14) give the same regions, region `r` covering the same relative area on
both.

Region order is fixed: scales in the given order; within a scale, regions in
row-major order (top to bottom, then left to right).
"""

import collections
import fractions
import math

import numpy as np
from keras import ops


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


def grid_extents(side, grid, axis):
    """The relative extents of the cells of a `grid x grid` grid along one side.

    Args:
        side: The side's length in pixels.
        grid: The grid size `g`, a positive int `<= side`.
        axis: `"height"` or `"width"`, for error messages.

    Returns:
        A tuple of `g` `(start, stop)` pairs of `fractions.Fraction`s.

    Raises:
        ValueError: If `grid` is not a positive int or exceeds `side`.
    """
    if isinstance(grid, bool) or not isinstance(grid, int) or grid < 1:
        raise ValueError(f"Grid scales must be positive ints, got {grid!r}.")
    if grid > side:
        raise ValueError(
            f"Grid {grid}x{grid} is finer than the feature map: its {axis} is {side} "
            f"pixels, fewer than {grid} cells; use grids of at most {side}."
        )
    return tuple(
        (fractions.Fraction(i, grid), fractions.Fraction(i + 1, grid)) for i in range(grid)
    )


def _covering_span(extent, side):
    """The whole pixels `[floor(a H), ceil(b H))` covering the extent `[a, b)`."""
    start, stop = extent
    return math.floor(start * side), math.ceil(stop * side)


def resolve_scales(spatial_shape, scales, extents=grid_extents):
    """Resolves scales into the regions of a map of a given spatial size.

    Args:
        spatial_shape: `(height, width)` of the feature map (static ints).
        scales: Grid sizes (or, with other `extents`, what those accept).
        extents: `extents(side, scale, axis)`, the relative extents a scale
            cuts one side into; default `grid_extents`.

    Returns:
        A tuple of `Window`s, one per scale.

    Raises:
        ValueError: If the shape is not static or a scale does not fit the map
            (a grid finer than a side).
    """
    if len(spatial_shape) != 2 or any(s is None for s in spatial_shape):
        raise ValueError(
            f"Multi-scale pooling needs a static (height, width), got {tuple(spatial_shape)}."
        )
    height, width = (int(s) for s in spatial_shape)
    if not scales:
        raise ValueError("At least one pooling scale is required.")
    windows = []
    for scale in scales:
        rows = extents(height, scale, "height")
        cols = extents(width, scale, "width")
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


def matching_windows(teacher_shape, student_shape, scales, extents=grid_extents):
    """Resolves scales on both maps and checks that their regions correspond.

    Args:
        teacher_shape: Shape of the teacher map, `(batch, height, width, channels)`.
        student_shape: Shape of the student map, same layout.
        scales: See `resolve_scales`.
        extents: See `resolve_scales`.

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
    teacher = resolve_scales(teacher_shape[1:3], scales, extents)
    student = resolve_scales(student_shape[1:3], scales, extents)
    for scale, t, s in zip(scales, teacher, student):
        if t.regions != s.regions:
            raise ValueError(
                f"Scale {scale!r} gives {t.regions[0]}x{t.regions[1]} regions on the teacher "
                f"map {tuple(teacher_shape[1:3])} but {s.regions[0]}x{s.regions[1]} on the "
                f"student map {tuple(student_shape[1:3])}; use scales in relative units so "
                "that both sides give the same regions."
            )
    return teacher, student


def pool_regions(feature_map, windows, dtype="float32"):
    """Average-pools every region of resolved `windows` in one matrix product.

    Args:
        feature_map: `(batch, height, width, channels)` tensor with static
            spatial size, the one `windows` were resolved on.
        windows: `Window`s from `resolve_scales` or `matching_windows`.
        dtype: Dtype the map is cast to before pooling (float32 by default, so
            float16 maps are averaged without overflow).

    Returns:
        A `(batch, P, channels)` tensor, `P` the number of regions over all
        windows, in the order documented in the module docstring. It costs
        `P x H W` multiply-adds per image and channel (`pooling_matrix`).
    """
    x = ops.cast(feature_map, dtype)
    height, width, channels = x.shape[1:]
    weights = pooling_matrix((height, width), windows)
    pixels = ops.reshape(x, (-1, height * width, channels))
    return ops.einsum("pk,nkc->npc", ops.convert_to_tensor(weights, dtype), pixels)


def multiscale_pool(feature_map, scales=(1, 2, 4), dtype="float32"):
    """Decouples an NHWC feature map into local features at several grid sizes.

    Args:
        feature_map: `(batch, height, width, channels)` tensor with static
            spatial size.
        scales: Grid sizes. Default: 1x1, 2x2 and 4x4 grids.
        dtype: See `pool_regions`.

    Returns:
        A `(batch, P, channels)` tensor, `P` the number of cells over all
        grids, in the order documented in the module docstring.
    """
    return pool_regions(feature_map, resolve_scales(feature_map.shape[1:3], scales), dtype)
