"""Pieces shared by the token models of the zoo (ViT, MLP-Mixer).

A token model cuts the image into non-overlapping patches, embeds each patch
as a token and runs a stack of residual blocks on the `(batch, tokens, dim)`
sequence. To give it the feature taps of the convolutional zoo, the blocks are
grouped into stages and every stage output is reshaped to an NHWC map of the
patch grid (`feat_1` ... `feat_K`); the patch embedding map is `feat_0`. The
maps are on the main path (sequence -> map -> sequence between stages, two
free reshapes), so a functional model keeps them as layers. The last stage
ends with the final LayerNorm, so `pooled` is the spatial mean of `feat_K`,
as in the convolutional zoo.
"""

import keras

from kerasdistill.models import layers as L

NORM_EPSILON = 1e-6


def patch_embedding(images, patch_size, dim, name="patch_embed"):
    """Embeds non-overlapping `patch_size` x `patch_size` patches (a strided conv).

    Args:
        images: Input tensor, NHWC, with static height and width.
        patch_size: Patch side in pixels; must divide the image height and width.
        dim: Token width.
        name: Name of the convolution layer.

    Returns:
        The `(batch, height / patch_size, width / patch_size, dim)` token map.

    Raises:
        ValueError: If `patch_size` does not divide the image sides.
    """
    height, width = images.shape[1:3]
    if patch_size < 1 or height % patch_size or width % patch_size:
        raise ValueError(
            f"patch_size must be a positive divisor of the image sides {height}x{width}, "
            f"got {patch_size}."
        )
    return keras.layers.Conv2D(dim, patch_size, strides=patch_size, name=name)(images)


def map_to_tokens(feature_map, name=None):
    """Flattens an NHWC map to a `(batch, height * width, channels)` sequence.

    Args:
        feature_map: NHWC tensor with static height, width and channels.
        name: Layer name.

    Returns:
        The token sequence, in row-major order of the map.
    """
    height, width, channels = feature_map.shape[1:]
    return keras.layers.Reshape((height * width, channels), name=name)(feature_map)


def tokens_to_map(tokens, grid, name=None):
    """Lays a `(batch, height * width, channels)` sequence out as an NHWC map.

    The inverse of `map_to_tokens`.

    Args:
        tokens: Token sequence with static length and width.
        grid: `(height, width)` of the patch grid; `height * width` must equal
            the number of tokens.
        name: Layer name (a feature tap such as `feat_2`).

    Returns:
        The `(batch, height, width, channels)` map.

    Raises:
        ValueError: If the grid does not hold exactly the tokens.
    """
    num_tokens, channels = tokens.shape[1:]
    height, width = grid
    if height * width != num_tokens:
        raise ValueError(
            f"A {height}x{width} grid holds {height * width} tokens, got {num_tokens}."
        )
    return keras.layers.Reshape((height, width, channels), name=name)(tokens)


def mlp(x, hidden_dim, name):
    """Dense -> GELU -> Dense on the last axis, back to the input width.

    Args:
        x: Input tensor.
        hidden_dim: Width of the hidden layer.
        name: Prefix of the two Dense layer names (`{name}_fc1`, `{name}_fc2`).

    Returns:
        A tensor shaped like `x`.
    """
    out = keras.layers.Dense(hidden_dim, activation="gelu", name=f"{name}_fc1")(x)
    return keras.layers.Dense(x.shape[-1], name=f"{name}_fc2")(out)


def residual(x, branch, drop_rate, name):
    """Adds a residual branch, dropped per sample with probability `drop_rate`.

    Stochastic depth (Huang et al. 2016): in training, each sample's branch is
    zeroed with probability `drop_rate` and scaled by `1 / (1 - drop_rate)`
    otherwise; at inference the branch is added unchanged.

    Args:
        x: The residual stream, `(batch, tokens, dim)`.
        branch: The branch output, shaped like `x`.
        drop_rate: Drop probability in `[0, 1)`; 0 adds no layer.
        name: Name of the Add layer (the drop layer is `{name}_drop_path`).

    Returns:
        `x + branch`, with the branch dropped as above.
    """
    if drop_rate > 0:
        branch = keras.layers.Dropout(
            drop_rate, noise_shape=(None, 1, 1), name=f"{name}_drop_path"
        )(branch)
    return keras.layers.Add(name=name)([x, branch])


def _stage_sizes(depth, num_stages):
    if not 1 <= num_stages <= depth:
        raise ValueError(
            f"num_stages must be between 1 and depth={depth} (each stage needs a block), "
            f"got {num_stages}."
        )
    return [depth // num_stages + (s < depth % num_stages) for s in range(num_stages)]


def token_stages(stem_map, block, depth, num_stages, drop_path_rate=0.0):
    """Runs `depth` residual blocks grouped into stages, tapping each stage as a map.

    Names `feat_0` (the stem map), `feat_1` ... `feat_{num_stages}` (stage
    outputs as NHWC maps; the last after the final LayerNorm `norm`). Stages
    hold `depth // num_stages` blocks, the first `depth % num_stages` one more.

    Args:
        stem_map: The embedded patches, `(batch, height, width, dim)`.
        block: Callable `block(tokens, drop_rate, name) -> tokens` building one
            residual block on a `(batch, tokens, dim)` sequence.
        depth: Number of blocks.
        num_stages: Number of tapped stages, `1 <= num_stages <= depth`.
        drop_path_rate: Stochastic-depth rate of the last block; block `i`
            uses `drop_path_rate * i / (depth - 1)` (DeiT's linear rule).

    Returns:
        The last stage map `feat_{num_stages}`, `(batch, height, width, dim)`.
    """
    if not 0 <= drop_path_rate < 1:
        raise ValueError(f"drop_path_rate must be in [0, 1), got {drop_path_rate}.")
    grid = stem_map.shape[1:3]
    x = L.tap(stem_map, "feat_0")
    index = 0
    for stage, size in enumerate(_stage_sizes(depth, num_stages), start=1):
        tokens = map_to_tokens(x, name=f"stage{stage}_tokens")
        for _ in range(size):
            rate = drop_path_rate * index / max(depth - 1, 1)
            tokens = block(tokens, rate, name=f"blocks_{index}")
            index += 1
        if stage == num_stages:
            tokens = keras.layers.LayerNormalization(epsilon=NORM_EPSILON, name="norm")(tokens)
        x = tokens_to_map(tokens, grid, name=f"feat_{stage}")
    return x
