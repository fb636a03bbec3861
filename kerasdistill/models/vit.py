"""Vision Transformer (Dosovitskiy et al. 2021) for 32x32 inputs.

Pre-norm encoder blocks (LayerNorm -> multi-head self-attention, LayerNorm ->
GELU MLP, each a residual branch with optional stochastic depth) on learned
position embeddings. There is no class token: the classifier reads the global
average of the normalized patch tokens (as in Beyer et al. 2022, "Better plain
ViT baselines for ImageNet-1k"), so every token is a patch and every stage map
holds all of them. Feature taps as in `kerasdistill.models.tokens`: `feat_0`
(patch embedding plus position embedding), `feat_1`..`feat_K` (stage outputs,
8x8 maps for patch 4), `pooled` and the logits.
"""

import keras

from kerasdistill.models import layers as L
from kerasdistill.models.registry import register
from kerasdistill.models.tokens import NORM_EPSILON, mlp, patch_embedding, residual, token_stages


@keras.saving.register_keras_serializable(package="kerasdistill")
class PositionEmbedding(keras.layers.Layer):
    """Adds a learned embedding, one vector per position, to its input.

    The weight has the input's shape without the batch axis (for a token map,
    one `dim` vector per patch), initialized from a normal of std
    `stddev`.

    Args:
        stddev: Standard deviation of the initial embedding.
        **kwargs: Base `Layer` arguments (`name`, ...).
    """

    def __init__(self, stddev=0.02, **kwargs):
        super().__init__(**kwargs)
        self.stddev = stddev

    def build(self, input_shape):
        self.embedding = self.add_weight(
            shape=tuple(input_shape[1:]),
            initializer=keras.initializers.RandomNormal(stddev=self.stddev),
            name="embedding",
        )

    def call(self, inputs):
        return inputs + self.embedding

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "stddev": self.stddev}


def _encoder_block(num_heads, mlp_ratio):
    def block(tokens, drop_rate, name):
        dim = tokens.shape[-1]
        x = keras.layers.LayerNormalization(epsilon=NORM_EPSILON, name=f"{name}_norm1")(tokens)
        x = keras.layers.MultiHeadAttention(
            num_heads, dim // num_heads, name=f"{name}_attn"
        )(x, x)
        tokens = residual(tokens, x, drop_rate, name=f"{name}_add1")
        x = keras.layers.LayerNormalization(epsilon=NORM_EPSILON, name=f"{name}_norm2")(tokens)
        x = mlp(x, int(dim * mlp_ratio), name=f"{name}_mlp")
        return residual(tokens, x, drop_rate, name=f"{name}_add2")

    return block


def vit(
    patch_size,
    dim,
    depth,
    num_heads,
    mlp_ratio,
    num_stages=4,
    drop_path_rate=0.0,
    num_classes=100,
    input_shape=(32, 32, 3),
    name=None,
):
    """Builds a Vision Transformer with stage-wise feature map taps.

    Args:
        patch_size: Patch side in pixels; divides the image sides.
        dim: Token width; divisible by `num_heads`.
        depth: Number of encoder blocks.
        num_heads: Attention heads per block (head width `dim // num_heads`).
        mlp_ratio: MLP hidden width as a multiple of `dim`.
        num_stages: Number of tapped block groups (`feat_1`..`feat_{num_stages}`).
        drop_path_rate: Stochastic-depth rate of the last block (linear from 0).
        num_classes: Number of classes.
        input_shape: Input shape, NHWC without batch.
        name: Model name.

    Returns:
        A functional `keras.Model` mapping images to logits.
    """
    if num_heads < 1 or dim % num_heads:
        raise ValueError(f"dim={dim} must be divisible by num_heads, got num_heads={num_heads}.")
    inputs = keras.Input(input_shape, name="images")
    x = patch_embedding(inputs, patch_size, dim)
    x = PositionEmbedding(name="pos_embed")(x)
    block = _encoder_block(num_heads, mlp_ratio)
    x = token_stages(x, block, depth, num_stages, drop_path_rate)
    logits = L.classifier(x, num_classes, name="head")
    return keras.Model(inputs, logits, name=name)


@register("vit_tiny_p4")
def vit_tiny_p4(num_classes=100, input_shape=(32, 32, 3), drop_path_rate=0.1):
    """ViT for 32x32: patch 4 (8x8 tokens), width 192, 8 blocks of 3 heads, MLP 2x.

    Four stages of two blocks (`feat_1`..`feat_4`, 8x8x192); 2.42M parameters
    with 100 classes.
    """
    return vit(
        patch_size=4,
        dim=192,
        depth=8,
        num_heads=3,
        mlp_ratio=2,
        num_stages=4,
        drop_path_rate=drop_path_rate,
        num_classes=num_classes,
        input_shape=input_shape,
        name="vit_tiny_p4",
    )


@register("vit_mini_p4")
def vit_mini_p4(num_classes=100, input_shape=(32, 32, 3), drop_path_rate=0.0):
    """A resnet20-sized ViT for 32x32: patch 4 (8x8 tokens), width 96, 4 blocks of 3 heads.

    Four stages of one block (`feat_1`..`feat_4`, 8x8x96), MLP 2x; 319,876
    parameters with 100 classes (resnet20: 0.28M), so that heterogeneous
    CNN -> ViT ablations fit a CPU budget.
    """
    return vit(
        patch_size=4,
        dim=96,
        depth=4,
        num_heads=3,
        mlp_ratio=2,
        num_stages=4,
        drop_path_rate=drop_path_rate,
        num_classes=num_classes,
        input_shape=input_shape,
        name="vit_mini_p4",
    )
