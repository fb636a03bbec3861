import numpy as np
import pytest

from kerasdistill.ops.multiscale import (
    matching_windows,
    multiscale_pool,
    region_scale_ids,
    resolve_scales,
)


def _ramp(height, width):
    """A `(1, H, W, 2)` map: channel 0 holds 0..H*W-1 row-major, channel 1 its negation."""
    values = np.arange(height * width, dtype="float32").reshape(1, height, width, 1)
    return np.concatenate([values, -values], axis=-1)


def test_grid_pooling_exact_values_and_region_order():
    out = np.asarray(multiscale_pool(_ramp(4, 4), scales=(1, 2), mode="grid"))
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


def test_overlapping_pooling_exact_values():
    out = np.asarray(multiscale_pool(_ramp(4, 4), scales=((2, 1), (4, 4)), mode="overlapping"))
    # 2x2 windows at stride 1: mean of a[i:i+2, j:j+2] = 4i + j + 2.5, then the global window.
    sliding = [4 * i + j + 2.5 for i in range(3) for j in range(3)]
    assert out.shape == (1, 10, 2)
    np.testing.assert_allclose(out[0, :, 0], sliding + [7.5])


def test_fractional_windows_resolve_per_map():
    teacher, student = matching_windows((2, 8, 8, 3), (2, 4, 4, 5), ((0.5, 0.25),), "overlapping")
    assert teacher[0].pool_size == (4, 4) and teacher[0].strides == (2, 2)
    assert student[0].pool_size == (2, 2) and student[0].strides == (1, 1)
    assert teacher[0].regions == student[0].regions == (3, 3)
    fractional = np.asarray(multiscale_pool(_ramp(4, 4), ((0.5, 0.25),), "overlapping"))
    absolute = np.asarray(multiscale_pool(_ramp(4, 4), ((2, 1),), "overlapping"))
    np.testing.assert_array_equal(fractional, absolute)


def test_default_grid_counts_regions_and_scale_ids():
    windows = resolve_scales((8, 8), (1, 2, 4))
    assert [w.pool_size for w in windows] == [(8, 8), (4, 4), (2, 2)]
    ids = region_scale_ids(windows)
    assert len(ids) == 21 and ids[:6] == (0, 1, 1, 1, 1, 2)
    out = multiscale_pool(np.zeros((3, 8, 8, 4), "float32"))
    assert tuple(out.shape) == (3, 21, 4)


def test_heterogeneous_grid_maps_give_the_same_regions():
    teacher, student = matching_windows((None, 8, 8, 64), (None, 4, 4, 32), (1, 2, 4))
    assert [w.regions for w in teacher] == [w.regions for w in student]
    assert student[-1].pool_size == (1, 1)


def test_float16_maps_are_pooled_in_float32_without_overflow():
    x = np.full((1, 4, 4, 1), 6e4, "float16")
    out = np.asarray(multiscale_pool(x, (1, 2)))
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, 6e4, rtol=1e-3)


@pytest.mark.parametrize(
    "spatial, scales, mode, message",
    [
        ((8, 8), (3,), "grid", "Grid 3x3 does not divide"),
        ((8, 6), (4,), "grid", "width is 6, not a multiple of 4"),
        ((8, 8), (2.0,), "grid", "positive ints"),
        ((8, 8), ((0.3, 1),), "overlapping", "not a whole number of pixels"),
        ((8, 8), ((3, 2),), "overlapping", "does not tile"),
        ((4, 4), ((8, 1),), "overlapping", "exceeds the map"),
        ((4, 4), (2,), "overlapping", r"\(window, stride\) pairs"),
        ((4, 4), (1,), "pyramid", "Unknown pooling mode"),
        ((4, 4), (), "grid", "At least one"),
    ],
)
def test_invalid_scales_raise_clear_errors(spatial, scales, mode, message):
    with pytest.raises(ValueError, match=message):
        resolve_scales(spatial, scales, mode)


def test_mismatched_region_counts_raise():
    with pytest.raises(ValueError, match="3x3 regions on the teacher .* but 1x1 on the student"):
        matching_windows((1, 8, 8, 4), (1, 4, 4, 4), ((4, 2),), "overlapping")
    with pytest.raises(ValueError, match="static spatial size"):
        matching_windows((1, None, None, 4), (1, 4, 4, 4), (1,))
