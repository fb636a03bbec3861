"""MLP-Mixer (Tolstikhin et al. 2021) for 32x32 inputs.

Each block mixes tokens (LayerNorm, then a GELU MLP across the patch axis,
shared by all channels) and then channels (LayerNorm, then a GELU MLP across
the channel axis, shared by all patches), each a residual branch with optional
stochastic depth. No position embedding: token mixing is position-aware. The
classifier reads the global average of the normalized tokens. Feature taps as
in `kerasdistill.models.tokens`: `feat_0` (patch embedding), `feat_1`..`feat_K`
(stage outputs, 8x8 maps for patch 4), `pooled` and the logits.
"""

import keras

from kerasdistill.models import layers as L
from kerasdistill.models.registry import register
from kerasdistill.models.tokens import NORM_EPSILON, mlp, patch_embedding, residual, token_stages


def _mixer_block(tokens_mlp_dim, channels_mlp_dim):
    def block(tokens, drop_rate, name):
        x = keras.layers.LayerNormalization(epsilon=NORM_EPSILON, name=f"{name}_norm1")(tokens)
        x = keras.layers.Permute((2, 1), name=f"{name}_to_channels")(x)
        x = mlp(x, tokens_mlp_dim, name=f"{name}_token_mlp")
        x = keras.layers.Permute((2, 1), name=f"{name}_to_tokens")(x)
        tokens = residual(tokens, x, drop_rate, name=f"{name}_add1")
        x = keras.layers.LayerNormalization(epsilon=NORM_EPSILON, name=f"{name}_norm2")(tokens)
        x = mlp(x, channels_mlp_dim, name=f"{name}_channel_mlp")
        return residual(tokens, x, drop_rate, name=f"{name}_add2")

    return block


def mlp_mixer(
    patch_size,
    dim,
    depth,
    tokens_mlp_dim,
    channels_mlp_dim,
    num_stages=4,
    drop_path_rate=0.0,
    num_classes=100,
    input_shape=(32, 32, 3),
    name=None,
):
    """Builds an MLP-Mixer with stage-wise feature map taps.

    Args:
        patch_size: Patch side in pixels; divides the image sides.
        dim: Token width (channels).
        depth: Number of Mixer blocks.
        tokens_mlp_dim: Hidden width of the token-mixing MLP.
        channels_mlp_dim: Hidden width of the channel-mixing MLP.
        num_stages: Number of tapped block groups (`feat_1`..`feat_{num_stages}`).
        drop_path_rate: Stochastic-depth rate of the last block (linear from 0).
        num_classes: Number of classes.
        input_shape: Input shape, NHWC without batch.
        name: Model name.

    Returns:
        A functional `keras.Model` mapping images to logits.
    """
    inputs = keras.Input(input_shape, name="images")
    x = patch_embedding(inputs, patch_size, dim)
    block = _mixer_block(tokens_mlp_dim, channels_mlp_dim)
    x = token_stages(x, block, depth, num_stages, drop_path_rate)
    logits = L.classifier(x, num_classes, name="head")
    return keras.Model(inputs, logits, name=name)


@register("mixer_s_p4")
def mixer_s_p4(num_classes=100, input_shape=(32, 32, 3), drop_path_rate=0.1):
    """MLP-Mixer for 32x32: patch 4 (64 tokens), width 256, 8 blocks, MLPs 128 / 512.

    Four stages of two blocks (`feat_1`..`feat_4`, 8x8x256); 2.28M parameters
    with 100 classes.
    """
    return mlp_mixer(
        patch_size=4,
        dim=256,
        depth=8,
        tokens_mlp_dim=128,
        channels_mlp_dim=512,
        num_stages=4,
        drop_path_rate=drop_path_rate,
        num_classes=num_classes,
        input_shape=input_shape,
        name="mixer_s_p4",
    )
