"""MSDCRD: contrastive representation distillation via multi-scale feature decoupling.

Wang et al., "Contrastive Representation Distillation via Multi-Scale Feature
Decoupling", arXiv 2502.05835. The paper's exact equations, windows and weights
are not public; this module implements the reading documented in
`docs/method.md`, with every unknown a constructor option.
"""

import keras
from keras import ops

from kerasdistill.methods.base import DistillationMethod
from kerasdistill.methods.registry import register
from kerasdistill.models.taps import FEAT_LAST
from kerasdistill.ops.contrastive import (
    different_class_mask,
    feature_wise_info_nce,
    l2_normalize,
    same_group_mask,
    sample_wise_info_nce,
    weighted_region_mean,
)
from kerasdistill.ops.multiscale import (
    GRID,
    MODES,
    matching_windows,
    multiscale_pool,
    region_scale_ids,
)

PROJECTIONS = ("auto", "linear", "none", "classifier")
FEATURE_NEGATIVES = ("all", "same_scale")
REGION_WEIGHTINGS = ("uniform", "per_scale")


def _check_choice(name, value, choices):
    if value not in choices:
        raise ValueError(f"MSDCRD {name} must be one of {choices}, got {value!r}.")


def _normalize_scales(scales, pooling):
    """Returns `scales` as nested tuples (configs round-trip them as lists)."""
    if pooling == GRID:
        return tuple(scales)
    return tuple(tuple(scale) if isinstance(scale, (list, tuple)) else scale for scale in scales)


def _region_weights(scale_ids, weighting):
    """Per-region weights summing to 1, or `None` for a plain mean over regions."""
    if weighting == "uniform":
        return None
    num_scales = max(scale_ids) + 1
    counts = [scale_ids.count(k) for k in range(num_scales)]
    return tuple(1.0 / (num_scales * counts[k]) for k in scale_ids)


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

    Reported terms: `loss_msd_sw = beta * lambda_sw * L_sw` and
    `loss_msd_fw = beta * lambda_fw * L_fw`, each summed over taps with
    `tap_weights`. Combine with KD by listing both methods in the Distiller.

    Args:
        taps: Tap names read from both models (the Distiller's `teacher_taps`
            / `student_taps` renames map them to layers). Default: the last
            feature map before pooling.
        tap_weights: One weight per tap (default: 1.0 each).
        scales: Pooling scales. With `pooling="grid"`, grid sizes `g` (a
            `g x g` grid of non-overlapping cells); with `"overlapping"`,
            `(window, stride)` pairs, each an int (pixels) or a float fraction
            of the map side. See `kerasdistill.ops.multiscale`.
        pooling: `"grid"` or `"overlapping"`.
        projection: How local features reach a common space: `"auto"`
            (default: `"none"` for a tap whose teacher and student channel
            counts match, else `"linear"`; chosen by the ablation in
            `docs/results.md`, where the parameter-free form was best),
            `"linear"` (a
            trainable Dense head per side and tap, trained with the student,
            not part of the exported student), `"none"` (identity; teacher and
            student channel counts must match), or `"classifier"` (each model's
            own classifier, passed as `teacher_classifier` and
            `student_classifier`, maps local features to class space).
        projection_dim: Output size of the `"linear"` heads.
        temperature: InfoNCE temperature `tau > 0` (0.07: best of 0.07, 0.1,
            0.2, 0.5 in `docs/results.md`).
        symmetric: Add the teacher-anchored direction of both losses and
            average the two directions.
        exclude_same_class_negatives: Drop sample-wise negatives whose label
            equals the anchor's.
        feature_negatives: Feature-wise negatives: `"all"` other regions of the
            image, or `"same_scale"` only the regions of the anchor's scale.
        region_weighting: `"uniform"` (every region counts the same) or
            `"per_scale"` (every scale counts the same, split over its regions).
        beta: Weight of the method (both terms).
        lambda_sw: Relative weight of the sample-wise term (0 drops it).
        lambda_fw: Relative weight of the feature-wise term (0 drops it).
        teacher_classifier: The teacher's final Dense layer, with
            `projection="classifier"` only.
        student_classifier: The student's final Dense layer, idem.
        **kwargs: Passed to `DistillationMethod`'s Layer base (`name`).
    """

    def __init__(
        self,
        taps=(FEAT_LAST,),
        tap_weights=None,
        scales=(1, 2, 4),
        pooling=GRID,
        projection="auto",
        projection_dim=128,
        temperature=0.07,
        symmetric=False,
        exclude_same_class_negatives=False,
        feature_negatives="all",
        region_weighting="uniform",
        beta=1.0,
        lambda_sw=1.0,
        lambda_fw=1.0,
        teacher_classifier=None,
        student_classifier=None,
        **kwargs,
    ):
        taps = (taps,) if isinstance(taps, str) else tuple(taps)
        super().__init__(teacher_taps=taps, student_taps=taps, **kwargs)
        if not taps:
            raise ValueError("MSDCRD needs at least one tap.")
        tap_weights = (1.0,) * len(taps) if tap_weights is None else tuple(tap_weights)
        if len(tap_weights) != len(taps):
            raise ValueError(
                f"MSDCRD got {len(tap_weights)} tap_weights for {len(taps)} taps {taps}."
            )
        _check_choice("pooling", pooling, MODES)
        _check_choice("projection", projection, PROJECTIONS)
        _check_choice("feature_negatives", feature_negatives, FEATURE_NEGATIVES)
        _check_choice("region_weighting", region_weighting, REGION_WEIGHTINGS)
        if temperature <= 0:
            raise ValueError(f"MSDCRD temperature must be > 0, got {temperature}.")
        if min(beta, lambda_sw, lambda_fw, *tap_weights) < 0:
            raise ValueError("MSDCRD beta, lambda_sw, lambda_fw and tap_weights must be >= 0.")
        has_classifiers = (teacher_classifier is not None, student_classifier is not None)
        if projection == "classifier" and not all(has_classifiers):
            raise ValueError(
                "projection='classifier' needs teacher_classifier and student_classifier "
                "(each model's final Dense layer, e.g. model.get_layer('fc'))."
            )
        if projection != "classifier" and any(has_classifiers):
            raise ValueError(
                "teacher_classifier / student_classifier need projection='classifier'."
            )
        self.taps = taps
        self.tap_weights = tuple(float(w) for w in tap_weights)
        self.scales = _normalize_scales(scales, pooling)
        self.pooling = pooling
        self.projection = projection
        self.projection_dim = int(projection_dim)
        self.temperature = float(temperature)
        self.symmetric = bool(symmetric)
        self.exclude_same_class_negatives = bool(exclude_same_class_negatives)
        self.feature_negatives = feature_negatives
        self.region_weighting = region_weighting
        self.beta = float(beta)
        self.lambda_sw = float(lambda_sw)
        self.lambda_fw = float(lambda_fw)
        self.teacher_classifier = teacher_classifier
        self.student_classifier = student_classifier
        self._taps_built = False

    def loss_terms(self):
        return ("loss_msd_sw", "loss_msd_fw")

    def build_from_taps(self, teacher_shapes, student_shapes):
        """Checks that both sides give matching regions and creates the heads."""
        self._scale_ids = []
        self._tap_projections = []
        self._head_index = {}
        teacher_heads, student_heads = [], []
        for index, tap in enumerate(self.taps):
            t_shape, s_shape = tuple(teacher_shapes[tap]), tuple(student_shapes[tap])
            windows, _ = matching_windows(t_shape, s_shape, self.scales, self.pooling)
            self._scale_ids.append(region_scale_ids(windows))
            projection = self.projection
            if projection == "auto":
                projection = "none" if t_shape[-1] == s_shape[-1] else "linear"
            self._tap_projections.append(projection)
            self._check_channels(tap, projection, t_shape[-1], s_shape[-1])
            if projection == "linear":
                self._head_index[index] = len(teacher_heads)
                teacher_heads.append(self._make_head(f"{tap}_teacher_head", t_shape[-1]))
                student_heads.append(self._make_head(f"{tap}_student_head", s_shape[-1]))
        self.teacher_heads = teacher_heads
        self.student_heads = student_heads
        self._taps_built = True
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
                "use projection='linear'."
            )
        if projection == "classifier":
            for side, channels, layer in (
                ("teacher", teacher_channels, self.teacher_classifier),
                ("student", student_channels, self.student_classifier),
            ):
                expected = _classifier_input_dim(layer)
                if expected is not None and expected != channels:
                    raise ValueError(
                        f"The {side} classifier takes {expected} features but tap {tap!r} "
                        f"has {channels} channels; projection='classifier' only fits the "
                        "map that feeds the classifier (usually 'feat_last')."
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
        return l2_normalize(local)

    def _local_features(self, index, tap, teacher_outputs, student_outputs):
        """Returns the `(student, teacher)` unit local features of one tap."""
        teacher_map = ops.stop_gradient(teacher_outputs[tap])
        student = multiscale_pool(student_outputs[tap], self.scales, self.pooling)
        teacher = multiscale_pool(teacher_map, self.scales, self.pooling)
        return self._project(index, student, "student"), self._project(index, teacher, "teacher")

    def _feature_mask(self, index):
        if self.feature_negatives == "all":
            return None
        return same_group_mask(self._scale_ids[index])

    def call(self, teacher_outputs, student_outputs, labels, sample_indices=None, step=None):
        if not self._taps_built:
            raise RuntimeError(
                "MSDCRD.build_from_taps(teacher_shapes, student_shapes) must run before the "
                "first call; the Distiller does this at construction."
            )
        compute_sw = self.beta * self.lambda_sw > 0
        compute_fw = self.beta * self.lambda_fw > 0
        sample_mask = None
        if compute_sw and self.exclude_same_class_negatives:
            sample_mask = different_class_mask(labels)
        zero = ops.zeros((), "float32")
        sw_total, fw_total = zero, zero
        for index, (tap, tap_weight) in enumerate(zip(self.taps, self.tap_weights)):
            if tap_weight == 0 or not (compute_sw or compute_fw):
                continue
            student, teacher = self._local_features(index, tap, teacher_outputs, student_outputs)
            region_weights = _region_weights(self._scale_ids[index], self.region_weighting)
            if compute_sw:
                loss = sample_wise_info_nce(
                    student, teacher, self.temperature, sample_mask, self.symmetric
                )
                sw_total = sw_total + tap_weight * weighted_region_mean(loss, region_weights)
            if compute_fw:
                loss = feature_wise_info_nce(
                    student, teacher, self.temperature, self._feature_mask(index), self.symmetric
                )
                fw_total = fw_total + tap_weight * weighted_region_mean(loss, region_weights)
        return {
            "loss_msd_sw": self.beta * self.lambda_sw * sw_total,
            "loss_msd_fw": self.beta * self.lambda_fw * fw_total,
        }

    def get_config(self):
        if self.projection == "classifier":
            raise ValueError(
                "MSDCRD with projection='classifier' holds references to the models' own "
                "classifier layers and cannot be serialized by config; save the student "
                "model (or the Distiller's weights) instead."
            )
        config = super().get_config()
        config.update(
            {
                "taps": list(self.taps),
                "tap_weights": list(self.tap_weights),
                "scales": [list(s) if isinstance(s, tuple) else s for s in self.scales],
                "pooling": self.pooling,
                "projection": self.projection,
                "projection_dim": self.projection_dim,
                "temperature": self.temperature,
                "symmetric": self.symmetric,
                "exclude_same_class_negatives": self.exclude_same_class_negatives,
                "feature_negatives": self.feature_negatives,
                "region_weighting": self.region_weighting,
                "beta": self.beta,
                "lambda_sw": self.lambda_sw,
                "lambda_fw": self.lambda_fw,
            }
        )
        return config
