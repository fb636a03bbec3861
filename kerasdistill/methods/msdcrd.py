"""MSDCRD: contrastive representation distillation via multi-scale feature decoupling.

Wang et al., "Contrastive Representation Distillation via Multi-Scale Feature
Decoupling", arXiv 2502.05835. The paper's exact equations, windows and weights
are not public; this module implements the reading documented in
`docs/method.md`. The options measured as no better than this core (sample
categorization, feature-wise negative subsets, region weighting, the symmetric
direction, overlapping windows) are in `kerasdistill.methods.msdcrd_variants`.
"""

import keras
from keras import ops

from kerasdistill.methods.base import DistillationMethod
from kerasdistill.methods.registry import register
from kerasdistill.ops import distributed
from kerasdistill.ops.alignment import pool_channels
from kerasdistill.ops.contrastive import feature_wise_info_nce, sample_wise_info_nce
from kerasdistill.ops.multiscale import GRID, fitting_grids, matching_windows, multiscale_pool
from kerasdistill.ops.normalize import l2_normalize
from kerasdistill.tap_names import FEAT_LAST

AUTO_SCALES = "auto"
PROJECTIONS = ("auto", "linear", "none", "classifier", "channel_pool")
# Norm floor of the local features: zero vectors stay zero.
_MIN_NORM = 1e-6


def check_choice(name, value, choices):
    """Raises a ValueError unless `value` is one of `choices`."""
    if value not in choices:
        raise ValueError(f"MSDCRD {name} must be one of {choices}, got {value!r}.")


def _normalize_scales(scales, pooling):
    """Returns `scales` as nested tuples (configs round-trip them as lists)."""
    if isinstance(scales, str):
        if scales != AUTO_SCALES or pooling != GRID:
            raise ValueError(
                f"MSDCRD scales must be a sequence of scales or {AUTO_SCALES!r} (with "
                f"pooling='grid'), got {scales!r} with pooling={pooling!r}."
            )
        return scales
    if pooling == GRID:
        return tuple(scales)
    return tuple(tuple(scale) if isinstance(scale, (list, tuple)) else scale for scale in scales)


def _classifier_input_dim(layer):
    kernel = getattr(layer, "kernel", None)
    return None if kernel is None else kernel.shape[0]


@register("msdcrd")
@keras.saving.register_keras_serializable(package="kerasdistill")
class MSDCRD(DistillationMethod):
    """Multi-scale decoupled, in-batch contrastive distillation of feature maps.

    Each tapped feature map (teacher and student) is average-pooled at several
    scales into `P` local feature vectors per image, projected to a common
    space and L2-normalized. The student vector of image `i`, region `r` has the
    teacher vector `(i, r)` as positive; a sample-wise InfoNCE contrasts it with
    the teacher vectors `(j, r)` of the other images of the batch, a
    feature-wise InfoNCE with the teacher vectors `(i, r')` of the other
    regions. No memory buffer: everything is computed within the batch.

    Reported terms: `loss_msd_sw = weight * sw_weight * L_sw` and
    `loss_msd_fw = weight * fw_weight * L_fw`, each summed over taps with
    `tap_weights`. Combine with KD by listing both methods in the Distiller.
    `MSDCRD.every_stage(num_stages)` decouples every stage map.

    Args:
        taps: Tap names read from both models (the Distiller's `teacher_taps`
            / `student_taps` renames map them to layers). Default: the last
            feature map before pooling.
        tap_weights: One weight per tap (default: 1.0 each).
        scales: Pooling scales. `"auto"` (default, grid pooling only): per
            tap, the grids 1, 2, 4 that fit both maps (`fitting_grids`): 1, 2
            and 4 on 4x4 maps and larger (CIFAR's 8x8, ImageNet's 7x7), 1 and 2
            on the 2x2 maps of a 64 px input. Otherwise grid sizes `g` (a
            `g x g` grid of cells, adaptive where `g` does not divide the map;
            see `kerasdistill.ops.multiscale`). Regions are relative boxes, so a
            teacher's and a student's maps of different sizes give matching
            regions.
        projection: How local features reach a common space: `"auto"`
            (default: `"none"` for a tap whose teacher and student channel
            counts match, else `"linear"`; chosen by the ablation in
            `docs/results.md`, where the parameter-free form was best),
            `"linear"` (a
            trainable Dense head per side and tap, trained with the student,
            not part of the exported student), `"none"` (identity; teacher and
            student channel counts must match), `"classifier"` (each model's
            own frozen-for-the-teacher classifier maps local features to class
            space; only for the map that feeds the classifier) or
            `"channel_pool"` (the wider side's channels averaged in contiguous
            groups down to the narrower width; parameter-free). On a CNN ->
            ViT pair `"channel_pool"` tied `"linear"` and `"classifier"` was
            worse (`docs/results.md`, second round).
        projection_dim: Output size of the `"linear"` heads.
        temperature: InfoNCE temperature `tau > 0` (0.07: best of 0.07, 0.1,
            0.2, 0.5 in `docs/results.md`).
        weight: Overall weight of the method, both terms (see
            `DistillationMethod`; 0 computes neither).
        sw_weight: Weight of the sample-wise term (0 drops it).
        fw_weight: Weight of the feature-wise term (0 drops it).
        teacher_classifier: The teacher's final Dense layer, with
            `projection="classifier"`; found in the teacher by the Distiller
            when not given.
        student_classifier: The student's final Dense layer, with
            `projection="classifier"`; found likewise when not given.
        **kwargs: Passed to `DistillationMethod`'s Layer base (`name`).
    """

    needs_tap_shapes = True
    # The sample-wise negatives are the other images of the batch.
    min_batch_per_replica = 2
    # Overlapping windows: `MSDCRDVariants`.
    pooling = GRID
    renamed_arguments = {"beta": "weight", "lambda_sw": "sw_weight", "lambda_fw": "fw_weight"}

    def __init__(
        self,
        taps=(FEAT_LAST,),
        tap_weights=None,
        scales=AUTO_SCALES,
        projection="auto",
        projection_dim=128,
        temperature=0.07,
        weight=1.0,
        sw_weight=1.0,
        fw_weight=1.0,
        teacher_classifier=None,
        student_classifier=None,
        **kwargs,
    ):
        taps = (taps,) if isinstance(taps, str) else tuple(taps)
        super().__init__(teacher_taps=taps, student_taps=taps, weight=weight, **kwargs)
        if not taps:
            raise ValueError("MSDCRD needs at least one tap.")
        tap_weights = (1.0,) * len(taps) if tap_weights is None else tuple(tap_weights)
        if len(tap_weights) != len(taps):
            raise ValueError(
                f"MSDCRD got {len(tap_weights)} tap_weights for {len(taps)} taps {taps}."
            )
        check_choice("projection", projection, PROJECTIONS)
        if temperature <= 0:
            raise ValueError(f"MSDCRD temperature must be > 0, got {temperature}.")
        if min(sw_weight, fw_weight, *tap_weights) < 0:
            raise ValueError("MSDCRD sw_weight, fw_weight and tap_weights must be >= 0.")
        if projection != "classifier" and student_classifier is not None:
            raise ValueError("student_classifier needs projection='classifier'.")
        self.taps = taps
        self.tap_weights = tuple(float(w) for w in tap_weights)
        self.scales = _normalize_scales(scales, self.pooling)
        self.projection = projection
        self.projection_dim = int(projection_dim)
        self.temperature = float(temperature)
        self.sw_weight = float(sw_weight)
        self.fw_weight = float(fw_weight)
        self.teacher_classifier = teacher_classifier
        self.student_classifier = student_classifier
        # Layers given by the caller cannot be serialized; found ones are found again.
        self._given_classifiers = teacher_classifier is not None or student_classifier is not None
        if teacher_classifier is not None and not self._uses_teacher_classifier():
            raise ValueError(
                "teacher_classifier needs projection='classifier' (or, in MSDCRDVariants, "
                "a region_categorization)."
            )

    def _uses_teacher_classifier(self):
        return self.projection == "classifier"

    @classmethod
    def every_stage(cls, num_stages, stage_weights=None, **kwargs):
        """MSDCRD on every stage map `feat_1 .. feat_K`, grids fitted to each map.

        Each stage is decoupled with `scales="auto"` (the grids 1, 2, 4 that
        fit its teacher and student maps: fewer levels on small maps) unless
        `scales` is given. On resnet20 -> resnet8 (`docs/results.md`) it was
        about 1 point worse than the default last map alone.

        Args:
            num_stages: `K`, the number of stages (`feat_1` to `feat_K`; the
                CIFAR ResNets have 3, ImageNet ResNets 4).
            stage_weights: `K` tap weights; default `1 / K` each, so that the
                terms keep the scale of a single tap.
            **kwargs: Other `MSDCRD` arguments (not `taps` or `tap_weights`).

        Returns:
            An `MSDCRD`.
        """
        if isinstance(num_stages, bool) or not isinstance(num_stages, int) or num_stages < 1:
            raise ValueError(f"num_stages must be a positive int, got {num_stages!r}.")
        for name in ("taps", "tap_weights"):
            if name in kwargs:
                raise ValueError(f"MSDCRD.every_stage sets {name}; got {name}={kwargs[name]!r}.")
        if stage_weights is None:
            stage_weights = (1.0 / num_stages,) * num_stages
        taps = tuple(f"feat_{k}" for k in range(1, num_stages + 1))
        return cls(taps=taps, tap_weights=stage_weights, **kwargs)

    def loss_terms(self):
        return ("loss_msd_sw", "loss_msd_fw")

    def bind_models(self, teacher, student):
        """Finds the models' classifiers where the options use them and none was given."""
        # Imported here: the models package loads the zoo, which methods do not need.
        from kerasdistill.models.taps import classifier_layer

        if self._uses_teacher_classifier() and self.teacher_classifier is None:
            self.teacher_classifier = classifier_layer(teacher)
        if self.projection == "classifier" and self.student_classifier is None:
            self.student_classifier = classifier_layer(student)

    def build_from_taps(self, teacher_shapes, student_shapes):
        """Checks that both sides give matching regions and creates the heads."""
        self._tap_scales = []
        self._windows = []
        self._tap_projections = []
        self._head_index = {}
        self._pooled_width = {}
        teacher_heads, student_heads = [], []
        for index, tap in enumerate(self.taps):
            t_shape, s_shape = tuple(teacher_shapes[tap]), tuple(student_shapes[tap])
            scales = self.scales
            if scales == AUTO_SCALES:
                scales = fitting_grids((t_shape[1:3], s_shape[1:3]))
            windows, _ = matching_windows(t_shape, s_shape, scales, self.pooling)
            self._tap_scales.append(scales)
            self._windows.append(windows)
            projection = self.projection
            if projection == "auto":
                projection = "none" if t_shape[-1] == s_shape[-1] else "linear"
            self._tap_projections.append(projection)
            self._check_channels(tap, projection, t_shape[-1], s_shape[-1])
            if projection == "channel_pool":
                self._pooled_width[index] = min(t_shape[-1], s_shape[-1])
            if projection == "linear":
                self._head_index[index] = len(teacher_heads)
                teacher_heads.append(self._make_head(f"{tap}_teacher_head", t_shape[-1]))
                student_heads.append(self._make_head(f"{tap}_student_head", s_shape[-1]))
        self.teacher_heads = teacher_heads
        self.student_heads = student_heads
        super().build_from_taps(teacher_shapes, student_shapes)

    def _make_head(self, name, channels):
        # float32 heads: large float16 features cannot overflow the projection.
        head = keras.layers.Dense(self.projection_dim, dtype="float32", name=name)
        head.build((None, None, channels))
        return head

    def _check_channels(self, tap, projection, teacher_channels, student_channels):
        if projection == "none" and teacher_channels != student_channels:
            raise ValueError(
                f"projection='none' needs equal channel counts, but tap {tap!r} has "
                f"{teacher_channels} teacher and {student_channels} student channels; "
                "use projection='linear', 'channel_pool' or 'classifier'."
            )
        if projection == "classifier":
            if self.teacher_classifier is None or self.student_classifier is None:
                raise ValueError(
                    "projection='classifier' needs teacher_classifier and student_classifier "
                    "(each model's final Dense layer, e.g. model.get_layer('fc')); the "
                    "Distiller finds them when MSDCRD is given to one."
                )
            for side, channels, layer in (
                ("teacher", teacher_channels, self.teacher_classifier),
                ("student", student_channels, self.student_classifier),
            ):
                expected = _classifier_input_dim(layer)
                if expected is not None and expected != channels:
                    raise ValueError(
                        f"The {side} classifier takes {expected} features but tap {tap!r} "
                        f"has {channels} channels; projection='classifier' only fits the "
                        "map that feeds the classifier (tap 'pre_pool')."
                    )

    def _project(self, index, local, side):
        """Maps `(batch, P, C)` local features of one side to unit vectors."""
        projection = self._tap_projections[index]
        if projection == "linear":
            heads = self.teacher_heads if side == "teacher" else self.student_heads
            local = heads[self._head_index[index]](local)
        elif projection == "classifier":
            layer = self.teacher_classifier if side == "teacher" else self.student_classifier
            local = layer(local)
        elif projection == "channel_pool":
            local = pool_channels(local, self._pooled_width[index])
        return l2_normalize(local, min_norm=_MIN_NORM)

    def _pooled(self, index, tap, teacher_outputs, student_outputs):
        """The `(batch, P, C)` local features of one tap, student and teacher."""
        scales = self._tap_scales[index]
        teacher = multiscale_pool(ops.stop_gradient(teacher_outputs[tap]), scales, self.pooling)
        return multiscale_pool(student_outputs[tap], scales, self.pooling), teacher

    def _unit_features(self, index, student, teacher):
        """Projects and normalizes local features, gathered over replicas.

        Negatives come from the global batch: every replica's features are
        gathered (gradients flow back to each replica's own student).
        """
        student = distributed.all_gather(self._project(index, student, "student"))
        return student, distributed.all_gather(self._project(index, teacher, "teacher"))

    def _tap_terms(self, index, tap, teacher_outputs, student_outputs, labels):
        """The `(L_sw, L_fw)` of one tap; a term whose weight is 0 is not computed."""
        student, teacher = self._unit_features(
            index, *self._pooled(index, tap, teacher_outputs, student_outputs)
        )
        sw = fw = ops.zeros((), "float32")
        if self.sw_weight > 0:
            sw = ops.mean(sample_wise_info_nce(student, teacher, self.temperature))
        if self.fw_weight > 0:
            fw = ops.mean(feature_wise_info_nce(student, teacher, self.temperature))
        return sw, fw

    def call(self, teacher_outputs, student_outputs, labels=None, sample_indices=None, step=None):
        sw_total = fw_total = ops.zeros((), "float32")
        if self.weight > 0 and (self.sw_weight > 0 or self.fw_weight > 0):
            for index, (tap, tap_weight) in enumerate(zip(self.taps, self.tap_weights)):
                if tap_weight == 0:
                    continue
                sw, fw = self._tap_terms(index, tap, teacher_outputs, student_outputs, labels)
                sw_total = sw_total + tap_weight * sw
                fw_total = fw_total + tap_weight * fw
        return {
            "loss_msd_sw": self.sw_weight * sw_total,
            "loss_msd_fw": self.fw_weight * fw_total,
        }

    def get_config(self):
        if self._given_classifiers:
            raise ValueError(
                "MSDCRD holding the models' own classifier layers (projection='classifier' "
                "or a region_categorization) cannot be serialized by config; save the "
                "student model (or the Distiller's weights) instead, or rebuild it with "
                "MSDCRD(**options, teacher_classifier=...)."
            )
        config = super().get_config()
        config.update(
            {
                "taps": list(self.taps),
                "tap_weights": list(self.tap_weights),
                "scales": self.scales
                if self.scales == AUTO_SCALES
                else [list(s) if isinstance(s, tuple) else s for s in self.scales],
                "projection": self.projection,
                "projection_dim": self.projection_dim,
                "temperature": self.temperature,
                "sw_weight": self.sw_weight,
                "fw_weight": self.fw_weight,
            }
        )
        return config
