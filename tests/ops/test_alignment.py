import numpy as np
import pytest

from kerasdistill.ops.alignment import channel_pool_matrix, pool_channels


def _numpy_channel_pool(x, width):
    """Independent reference: output channel i averages channels [iC/w, ceil((i+1)C/w))."""
    channels = x.shape[-1]
    out = []
    for i in range(width):
        start = int(np.floor(i * channels / width))
        stop = int(np.ceil((i + 1) * channels / width))
        out.append(x[..., start:stop].mean(axis=-1))
    return np.stack(out, axis=-1)


@pytest.mark.parametrize("channels, width", [(64, 32), (192, 64), (10, 4), (7, 7)])
def test_channel_pooling_matches_a_numpy_reference(channels, width):
    x = np.random.default_rng(channels + width).normal(size=(3, 5, channels)).astype("float32")
    expected = _numpy_channel_pool(x, width)
    np.testing.assert_allclose(np.asarray(pool_channels(x, width)), expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(channel_pool_matrix(channels, width).sum(axis=0), 1.0, rtol=1e-6)


def test_channel_pool_matrix_refuses_a_wider_output():
    with pytest.raises(ValueError, match="maps 4 channels to 1..4, got 5"):
        channel_pool_matrix(4, 5)
