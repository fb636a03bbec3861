"""The token models of the zoo (ViT, MLP-Mixer): taps, sizes, training, saving, JAX."""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

import kerasdistill
from kerasdistill import methods, models, taps
from kerasdistill.models import mixer, tokens, vit
from tests.conftest import REPO

# name -> token width (channels of every feature map)
TOKEN_MODELS = {
    "vit_tiny_p4": 192,
    "vit_mini_p4": 96,
    "mixer_s_p4": 256,
}


def _vit_params(dim=192, depth=8, mlp_hidden=384, tokens=64, patch=4, classes=100):
    attention = 4 * (dim * dim + dim)  # query, key, value, output projections
    mlp = dim * mlp_hidden + mlp_hidden + mlp_hidden * dim + dim
    block = 2 * 2 * dim + attention + mlp  # two LayerNorms
    stem = patch * patch * 3 * dim + dim + tokens * dim  # patch conv, position embedding
    return stem + depth * block + 2 * dim + dim * classes + classes


def _mixer_params(dim=256, depth=8, tokens_mlp=128, channels_mlp=512, tokens=64, patch=4,
                  classes=100):
    token_mix = tokens * tokens_mlp + tokens_mlp + tokens_mlp * tokens + tokens
    channel_mix = dim * channels_mlp + channels_mlp + channels_mlp * dim + dim
    block = 2 * 2 * dim + token_mix + channel_mix
    stem = patch * patch * 3 * dim + dim
    return stem + depth * block + 2 * dim + dim * classes + classes


# Small instances of both families for the behaviour tests, which run the same code
# as the registered sizes (whose taps and sizes are checked on the models themselves).
# Depth 3 in 3 stages: feat_0..feat_3 (feat_last), 8x8x32.
SMALL = {
    "vit": lambda **kw: vit.vit(4, 32, depth=3, num_heads=2, mlp_ratio=2, num_stages=3,
                                num_classes=4, **kw),
    "mixer": lambda **kw: mixer.mlp_mixer(4, 32, depth=3, tokens_mlp_dim=16,
                                          channels_mlp_dim=64, num_stages=3, num_classes=4,
                                          **kw),
}


def _images(n=2, seed=0):
    return np.random.default_rng(seed).standard_normal((n, 32, 32, 3)).astype("float32")


def test_token_models_are_registered():
    assert set(TOKEN_MODELS) <= set(models.available())


@pytest.mark.parametrize("name", sorted(TOKEN_MODELS))
def test_taps_are_8x8_maps_and_pooled_is_their_mean(name):
    dim = TOKEN_MODELS[name]
    model = models.get(name, num_classes=10)
    feats = sorted(layer.name for layer in model.layers if layer.name.startswith("feat_"))
    assert feats == [f"feat_{k}" for k in range(5)]
    for tap in feats:
        assert tuple(model.get_layer(tap).output.shape) == (None, 8, 8, dim)
    assert tuple(model.get_layer("pooled").output.shape) == (None, dim)
    assert tuple(model.output.shape) == (None, 10)
    assert taps.resolve_taps(model, ["feat_last"]) == {"feat_last": "feat_4"}

    out = taps.tap_model(model, ["feat_3", "feat_last", "pooled"])(_images(), training=False)
    feat_last = keras.ops.convert_to_numpy(out["feat_last"])
    np.testing.assert_allclose(out["pooled"], feat_last.mean(axis=(1, 2)), atol=1e-5)
    # feat_last is after the final LayerNorm (at initialization: zero channel mean);
    # the intermediate stage map is the raw residual stream.
    np.testing.assert_allclose(feat_last.mean(axis=-1), 0.0, atol=1e-4)
    assert np.abs(keras.ops.convert_to_numpy(out["feat_3"]).mean(axis=-1)).max() > 1e-2


@pytest.mark.parametrize(
    "name, formula, stated",
    [
        ("vit_tiny_p4", _vit_params(), 2_417_572),
        ("vit_mini_p4", _vit_params(dim=96, depth=4, mlp_hidden=192), 319_876),
        ("mixer_s_p4", _mixer_params(), 2_282_852),
    ],
)
def test_parameter_counts_match_the_architecture(name, formula, stated):
    model = models.get(name, num_classes=100)
    assert model.count_params() == formula == stated  # stated in the builder docstrings
    assert not model.non_trainable_weights


def test_tokens_and_maps_are_row_major_inverses():
    x = np.arange(2 * 3 * 4 * 5, dtype="float32").reshape(2, 3, 4, 5)
    seq = keras.ops.convert_to_numpy(tokens.map_to_tokens(keras.ops.convert_to_tensor(x)))
    assert seq.shape == (2, 12, 5)
    np.testing.assert_array_equal(seq[:, 1 * 4 + 2], x[:, 1, 2])
    back = tokens.tokens_to_map(keras.ops.convert_to_tensor(seq), (3, 4))
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(back), x)


def test_stages_split_blocks_evenly_with_linear_drop_path():
    model = vit.vit(4, 32, depth=5, num_heads=2, mlp_ratio=2, num_stages=3,
                    drop_path_rate=0.2, num_classes=3)
    # Stages of 2, 2, 1 blocks: stage s starts by flattening feat_{s-1}.
    for stage, first_block in ((1, 0), (2, 2), (3, 4)):
        tokens_layer = model.get_layer(f"stage{stage}_tokens")
        assert tokens_layer.input.name == model.get_layer(f"feat_{stage - 1}").output.name
        assert model.get_layer(f"blocks_{first_block}_norm1").input.name == (
            tokens_layer.output.name
        )
    rates = [model.get_layer(f"blocks_{i}_add1_drop_path").rate for i in range(1, 5)]
    np.testing.assert_allclose(rates, [0.05, 0.1, 0.15, 0.2])
    with pytest.raises(ValueError):
        model.get_layer("blocks_0_add1_drop_path")  # rate 0: no layer


@pytest.mark.parametrize("family", sorted(SMALL))
def test_stochastic_depth_only_acts_in_training(family):
    images = _images(8)
    plain = SMALL[family](drop_path_rate=0.0)
    assert not [layer for layer in plain.layers if isinstance(layer, keras.layers.Dropout)]
    np.testing.assert_allclose(plain(images, training=True), plain(images, training=False),
                               atol=1e-5)
    dropped = SMALL[family](drop_path_rate=0.5)
    assert not np.allclose(dropped(images, training=True), dropped(images, training=False),
                           atol=1e-3)


@pytest.mark.parametrize("family", sorted(SMALL))
def test_one_training_step_is_finite_and_changes_every_weight(family):
    model = SMALL[family](drop_path_rate=0.1)
    model.compile(optimizer=keras.optimizers.SGD(0.1),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    before = [w.numpy().copy() for w in model.trainable_weights]
    loss = model.train_on_batch(_images(4), np.array([0, 1, 2, 3]))
    assert np.isfinite(loss)
    for old, var in zip(before, model.trainable_weights):
        new = var.numpy()
        assert np.isfinite(new).all(), var.path
        assert not np.array_equal(old, new), f"no gradient reached {var.path}"


@pytest.mark.parametrize("family", sorted(SMALL))
def test_keras_file_and_config_round_trip(family, tmp_path):
    model = SMALL[family](drop_path_rate=0.1)
    images = _images()
    path = tmp_path / f"{family}.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_allclose(loaded(images), model(images), atol=1e-6)
    assert [layer.name for layer in loaded.layers] == [layer.name for layer in model.layers]

    clone = keras.Model.from_config(model.get_config())
    clone.set_weights(model.get_weights())
    np.testing.assert_allclose(clone(images), model(images), atol=1e-6)


def test_position_embedding_config_round_trip():
    layer = vit.PositionEmbedding(stddev=0.5, name="pe")
    clone = vit.PositionEmbedding.from_config(layer.get_config())
    assert (clone.name, clone.stddev) == ("pe", 0.5)


@pytest.mark.integration
def test_distiller_trains_token_student_from_resnet_teacher():
    teacher = models.get("resnet8x4", num_classes=4)
    student = SMALL["vit"]()
    distiller = kerasdistill.Distiller(
        teacher,
        student,
        [methods.KD(), methods.MSDCRD(taps=("feat_2", "feat_last"))],
        ce_weight=0.1,
    )
    distiller.compile(optimizer=keras.optimizers.AdamW(1e-3))
    logs = distiller.train_on_batch(_images(4), np.array([0, 1, 2, 3]), return_dict=True)
    for term in ("loss", "loss_ce", "loss_kd", "loss_msd_sw", "loss_msd_fw"):
        assert np.isfinite(logs[term]), (term, logs)
    # 128/256 teacher vs 32 student channels: linear heads; both InfoNCE terms > 0.
    assert logs["loss_msd_sw"] > 0 and logs["loss_msd_fw"] > 0


@pytest.mark.parametrize(
    "build, message",
    [
        (lambda: vit.vit(5, 32, 2, 2, 2), r"patch_size.*32x32.*got 5"),
        (lambda: vit.vit(4, 30, 2, 4, 2), r"dim=30.*num_heads=4"),
        (lambda: mixer.mlp_mixer(4, 32, 2, 16, 32, num_stages=3), r"num_stages.*depth=2.*got 3"),
        (lambda: mixer.mlp_mixer(4, 32, 2, 16, 32, drop_path_rate=1.0), r"drop_path_rate.*1.0"),
    ],
)
def test_bad_arguments_fail_early(build, message):
    with pytest.raises(ValueError, match=message):
        build()


def test_tokens_to_map_rejects_a_wrong_grid():
    with pytest.raises(ValueError, match=r"3x3 grid holds 9 tokens, got 8"):
        tokens.tokens_to_map(keras.ops.zeros((1, 8, 4)), (3, 3))


_JAX_SCRIPT = """
import json, keras, numpy as np
from kerasdistill.models import mixer, vit
result = {"backend": keras.backend.backend(), "losses": {}}
for name, model in (("vit", vit.vit(4, 32, 2, 2, 2, num_stages=2, num_classes=4)),
                    ("mixer", mixer.mlp_mixer(4, 32, 2, 16, 64, num_stages=2, num_classes=4))):
    model.compile(optimizer="adamw",
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x = np.random.default_rng(0).standard_normal((4, 32, 32, 3)).astype("float32")
    result["losses"][name] = float(model.train_on_batch(x, np.arange(4)))
print(json.dumps(result))
"""


@pytest.mark.integration  # A JAX subprocess.
def test_token_models_train_under_jax():
    import jax  # noqa: F401  (a missing JAX must fail here, not skip)

    env = {**os.environ, "KERAS_BACKEND": "jax"}
    proc = subprocess.run([sys.executable, "-c", _JAX_SCRIPT], env=env, capture_output=True,
                          text=True, timeout=600, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-4000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["backend"] == "jax"
    assert set(result["losses"]) == set(SMALL)
    assert all(np.isfinite(v) and v > 0 for v in result["losses"].values()), result
