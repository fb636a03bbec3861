import numpy as np
import pytest

from kerasdistill.ops.multiscale import (
    fitting_grids,
    matching_windows,
    multiscale_pool,
    pool_regions,
    resolve_scales,
)


def _ramp(height, width):
    """A `(1, H, W, 2)` map: channel 0 holds 0..H*W-1 row-major, channel 1 its negation."""
    values = np.arange(height * width, dtype="float32").reshape(1, height, width, 1)
    return np.concatenate([values, -values], axis=-1)


def _reference_adaptive_pool(x, grids):
    """Loop-based NumPy adaptive average pooling; cell i spans floor(iH/g) .. ceil((i+1)H/g)."""
    batch, height, width, channels = x.shape
    regions = []
    for g in grids:
        for i in range(g):
            r0, r1 = (i * height) // g, -(-(i + 1) * height // g)
            for j in range(g):
                c0, c1 = (j * width) // g, -(-(j + 1) * width // g)
                total = np.zeros((batch, channels), "float64")
                for r in range(r0, r1):
                    for c in range(c0, c1):
                        total += x[:, r, c, :]
                regions.append(total / ((r1 - r0) * (c1 - c0)))
    return np.stack(regions, axis=1)


def _coordinates(height, width):
    """A `(1, H, W, 2)` map holding each pixel's centre in relative (row, col) coordinates."""
    rows = (np.arange(height) + 0.5) / height
    cols = (np.arange(width) + 0.5) / width
    grid = np.stack(np.meshgrid(rows, cols, indexing="ij"), axis=-1)
    return grid[None].astype("float32")


@pytest.mark.parametrize("side", [7, 14])
def test_grid_pooling_of_non_divisible_maps_matches_numpy_reference(side):
    x = np.random.default_rng(side).normal(size=(2, side, side, 3)).astype("float32")
    grids = (1, 2, 3, 4, 7)
    out = np.asarray(multiscale_pool(x, grids))
    windows = resolve_scales((side, side), grids)
    np.testing.assert_array_equal(np.asarray(pool_regions(x, windows)), out)
    assert out.shape == (2, 1 + 4 + 9 + 16 + 49, 3)
    np.testing.assert_allclose(out, _reference_adaptive_pool(x, grids), rtol=1e-5, atol=1e-6)


@pytest.fixture(scope="module")
def torch():
    # Imported in setup: the import alone takes most of the unit tier's 3 s per call.
    return pytest.importorskip("torch")


def test_grid_pooling_matches_torch_adaptive_avg_pool(torch):
    x = np.random.default_rng(0).normal(size=(2, 7, 5, 3)).astype("float32")
    expected = torch.nn.functional.adaptive_avg_pool2d(torch.from_numpy(x).permute(0, 3, 1, 2), 4)
    expected = expected.permute(0, 2, 3, 1).reshape(2, 16, 3).numpy()
    np.testing.assert_allclose(np.asarray(multiscale_pool(x, (4,))), expected, rtol=1e-5)


def test_non_divisible_grid_cells_share_boundary_pixels():
    (window,) = resolve_scales((7, 7), (4,))
    assert window.row_spans == ((0, 2), (1, 4), (3, 6), (5, 7))
    assert window.regions == (4, 4)


def test_regions_of_different_map_sizes_cover_the_same_relative_area():
    grids = (1, 2, 4)
    teacher = np.asarray(multiscale_pool(_coordinates(8, 8), grids))
    student = np.asarray(multiscale_pool(_coordinates(4, 4), grids))
    # Divisible maps: region r has exactly the same centre on both maps.
    np.testing.assert_allclose(teacher, student, atol=1e-6)
    np.testing.assert_allclose(teacher[0, 5], [0.125, 0.125], atol=1e-6)  # first 4x4 cell
    np.testing.assert_allclose(teacher[0, 2], [0.25, 0.75], atol=1e-6)  # top-right quadrant
    # 7x7 vs 14x14 (4 divides neither): cells widened to whole pixels keep their centre
    # within half a pixel of the ideal cell centre, on both maps.
    ideal = [((i + 0.5) / g, (j + 0.5) / g) for g in grids for i in range(g) for j in range(g)]
    for side in (7, 14):
        pooled = np.asarray(multiscale_pool(_coordinates(side, side), grids))[0]
        np.testing.assert_allclose(pooled, ideal, atol=0.5 / side + 1e-6)
        assert np.abs(pooled - ideal).max() > 0.01  # the widening is real, not a no-op


def test_fitting_grids_drop_levels_finer_than_the_smallest_map():
    assert fitting_grids((8, 8)) == (1, 2, 4)
    assert fitting_grids((7, 7)) == (1, 2, 4)
    assert fitting_grids(((8, 8), (2, 2))) == (1, 2)
    assert fitting_grids((1, 5)) == (1,)


def test_grid_pooling_exact_values_and_region_order():
    out = np.asarray(multiscale_pool(_ramp(4, 4), scales=(1, 2)))
    # 1x1: the global mean; 2x2: top-left, top-right, bottom-left, bottom-right cells.
    expected = np.array([7.5, 2.5, 4.5, 10.5, 12.5], "float32")
    assert out.shape == (1, 5, 2)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out[0, :, 0], expected)
    np.testing.assert_allclose(out[0, :, 1], -expected)


def test_grid_pooling_non_square_map():
    out = np.asarray(multiscale_pool(_ramp(2, 4), scales=(2,)))
    # Cells of 1x2 pixels: [0,1], [2,3], [4,5], [6,7].
    np.testing.assert_allclose(out[0, :, 0], [0.5, 2.5, 4.5, 6.5])


def test_default_grids_give_21_regions():
    windows = resolve_scales((8, 8), (1, 2, 4))
    assert [w.row_spans for w in windows] == [
        ((0, 8),),
        ((0, 4), (4, 8)),
        ((0, 2), (2, 4), (4, 6), (6, 8)),
    ]
    out = multiscale_pool(np.zeros((3, 8, 8, 4), "float32"))
    assert tuple(out.shape) == (3, 21, 4)


def test_heterogeneous_grid_maps_give_the_same_regions():
    teacher, student = matching_windows((None, 8, 8, 64), (None, 4, 4, 32), (1, 2, 4))
    assert [w.regions for w in teacher] == [w.regions for w in student]
    assert student[-1].col_spans == ((0, 1), (1, 2), (2, 3), (3, 4))


def test_float16_maps_are_pooled_in_float32_without_overflow():
    x = np.full((1, 4, 4, 1), 6e4, "float16")
    out = np.asarray(multiscale_pool(x, (1, 2)))
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, 6e4, rtol=1e-3)


@pytest.mark.parametrize(
    "spatial, scales, message",
    [
        ((2, 2), (4,), "Grid 4x4 is finer than the feature map"),
        ((8, 3), (4,), "width is 3 pixels, fewer than 4 cells"),
        ((8, 8), (2.0,), "positive ints"),
        ((4, 4), (), "At least one"),
        ((None, 4), (1,), "static"),
    ],
)
def test_invalid_scales_raise_clear_errors(spatial, scales, message):
    with pytest.raises(ValueError, match=message):
        resolve_scales(spatial, scales)


def test_matching_windows_need_static_nhwc_maps():
    with pytest.raises(ValueError, match="static spatial size"):
        matching_windows((1, None, None, 4), (1, 4, 4, 4), (1,))
