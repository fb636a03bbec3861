"""Shared layer builders: PyTorch padding, pooling and channel shuffle conventions."""

import keras
import numpy as np

from kerasdistill.models import layers as L


def _apply(builder, x, **kwargs):
    inputs = keras.Input(x.shape[1:])
    return np.asarray(keras.Model(inputs, builder(inputs, **kwargs))(x))


def test_channel_shuffle_matches_pytorch_channel_order():
    x = np.arange(12, dtype="float32").reshape(1, 1, 1, 12)
    out = L.ChannelShuffle(3)(x)
    np.testing.assert_array_equal(
        np.asarray(out).ravel(), [0, 4, 8, 1, 5, 9, 2, 6, 10, 3, 7, 11]
    )


def test_channel_slice_takes_a_channel_range():
    x = np.arange(6, dtype="float32").reshape(1, 1, 1, 6)
    np.testing.assert_array_equal(np.asarray(L.ChannelSlice(2, 5)(x)).ravel(), [2, 3, 4])


def test_custom_layers_round_trip_through_serialization():
    for layer in (L.ChannelShuffle(2, name="s"), L.ChannelSlice(1, 3, name="c")):
        clone = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
        assert type(clone) is type(layer)
        assert clone.get_config() == layer.get_config()


def test_avg_pool_counts_padding_like_pytorch():
    x = np.ones((1, 4, 4, 1), "float32")
    out = _apply(L.avg_pool2d, x, pool_size=3, stride=2)
    # Corner windows cover 4 real pixels out of 9, edges 6, the inside 9.
    np.testing.assert_allclose(out[0, :, :, 0], [[4 / 9, 6 / 9], [6 / 9, 1.0]], rtol=1e-6)


def test_strided_depthwise_conv_pads_symmetrically():
    x = np.ones((1, 4, 4, 2), "float32")
    inputs = keras.Input((4, 4, 2))
    model = keras.Model(inputs, L.depthwise_conv2d(inputs, 3, 2, name="dw"))
    model.get_layer("dw").kernel.assign(np.ones((3, 3, 2, 1), "float32"))
    # One pixel of zero padding on every side: the top-left output sees 2x2 pixels.
    np.testing.assert_allclose(np.asarray(model(x))[0, :, :, 0], [[4, 6], [6, 9]])


def test_conv_bn_names_its_output_tap():
    inputs = keras.Input((4, 4, 3))
    out = L.conv_bn(inputs, 8, 1, activate=False, conv_name="c", bn_name="b", out_name="t")
    model = keras.Model(inputs, out)
    assert [layer.name for layer in model.layers[1:]] == ["c", "b", "t"]
    assert model.get_layer("b").epsilon == L.BN_EPSILON
