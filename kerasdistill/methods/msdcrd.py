"""MSDCRD: contrastive representation distillation via multi-scale feature decoupling.

Wang et al., "Contrastive Representation Distillation via Multi-Scale Feature
Decoupling", arXiv 2502.05835. The paper's exact equations, windows and weights
are not public; this module implements the reading documented in
`docs/method.md`, with every unknown a constructor option.
"""

import keras
import numpy as np
from keras import ops

from kerasdistill.methods.base import DistillationMethod
from kerasdistill.methods.registry import register
from kerasdistill.models.taps import FEAT_LAST, LOGITS, classifier_layer
from kerasdistill.ops import distributed
from kerasdistill.ops.alignment import pool_channels
from kerasdistill.ops.categorization import (
    anchor_weighted_mean,
    consistent_pair_mask,
    consistent_regions,
    multi_positive_sample_wise_info_nce,
)
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
    fitting_grids,
    matching_windows,
    multiscale_pool,
    region_overlap_mask,
    region_scale_ids,
)

AUTO_SCALES = "auto"
PROJECTIONS = ("auto", "linear", "none", "classifier", "channel_pool")
SAME_CLASS_PAIRS = ("negatives", "exclude", "positives")
REGION_CATEGORIZATIONS = ("none", "consistent_only", "downweight")
REGION_REFERENCES = ("label", "teacher")
FEATURE_NEGATIVES = ("all", "same_scale", "non_overlapping")
REGION_WEIGHTINGS = ("uniform", "per_scale")


def _check_choice(name, value, choices):
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


def _same_class_option(same_class_pairs, exclude_same_class_negatives):
    """Folds the older boolean `exclude_same_class_negatives` into `same_class_pairs`."""
    if not exclude_same_class_negatives:
        return same_class_pairs
    if same_class_pairs not in ("negatives", "exclude"):
        raise ValueError(
            "exclude_same_class_negatives=True (the older spelling of "
            f"same_class_pairs='exclude') conflicts with same_class_pairs={same_class_pairs!r}."
        )
    return "exclude"


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
    `MSDCRD.every_stage(num_stages)` decouples every stage map.

    Args:
        taps: Tap names read from both models (the Distiller's `teacher_taps`
            / `student_taps` renames map them to layers). Default: the last
            feature map before pooling.
        tap_weights: One weight per tap (default: 1.0 each).
        scales: Pooling scales. `"auto"` (default, grid pooling only): per
            tap, the grids 1, 2, 4 that fit both maps (`fitting_grids`): 1, 2
            and 4 on 4x4 maps and larger (CIFAR's 8x8, ImageNet's 7x7), 1 and 2
            on the 2x2 maps of a 64 px input. With `pooling="grid"`, grid sizes
            `g` (a `g x g` grid of cells, adaptive where `g` does not divide
            the map); with `"overlapping"`, `(window, stride)` pairs, each an
            int (pixels) or a float fraction of the map side. See
            `kerasdistill.ops.multiscale`. Regions are relative boxes, so a
            teacher's and a student's maps of different sizes give matching
            regions.
        pooling: `"grid"` or `"overlapping"`.
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
        symmetric: Add the teacher-anchored direction of both losses and
            average the two directions.
        same_class_pairs: Sample-wise role of the other images of the
            anchor's class: `"negatives"` (label-free, like CRD),
            `"exclude"` (removed from the denominator) or `"positives"`
            (extra positives, supervised-contrastive style). Measured:
            `"exclude"` ties the default, `"positives"` is worse.
        region_categorization: Treatment of the regions the teacher
            classifies as complementary (its classifier, applied to the
            region's pooled feature, misses `region_reference`):
            `"none"`, `"consistent_only"` (the sample-wise term contrasts
            consistent regions only: complementary regions are neither
            anchors nor negatives there) or `"downweight"` (complementary
            anchors weigh `complementary_weight` in both terms). Needs
            `teacher_classifier`; applies to the taps whose width matches it.
            Both readings measured within noise of `"none"`.
        region_reference: What a consistent region predicts: the `"label"`
            or the `"teacher"`'s global prediction (its logits).
        complementary_weight: Anchor weight of complementary regions with
            `region_categorization="downweight"`, in `[0, 1]`.
        feature_negatives: Feature-wise negatives: `"all"` other regions of the
            image, `"same_scale"` only the regions of the anchor's scale, or
            `"non_overlapping"` only the regions sharing no area with the
            anchor (neither its parent cells nor its sub-cells). The three
            measured within noise of each other.
        region_weighting: `"uniform"` (every region counts the same) or
            `"per_scale"` (every scale counts the same, split over its regions).
        beta: Weight of the method (both terms).
        lambda_sw: Relative weight of the sample-wise term (0 drops it).
        lambda_fw: Relative weight of the feature-wise term (0 drops it).
        teacher_classifier: The teacher's final Dense layer, with
            `projection="classifier"` or a `region_categorization`; found in
            the teacher by the Distiller when not given.
        student_classifier: The student's final Dense layer, with
            `projection="classifier"` only; found likewise when not given.
        exclude_same_class_negatives: Older spelling of
            `same_class_pairs="exclude"` (`True`), kept for compatibility.
        **kwargs: Passed to `DistillationMethod`'s Layer base (`name`).
    """

    needs_tap_shapes = True

    def __init__(
        self,
        taps=(FEAT_LAST,),
        tap_weights=None,
        scales=AUTO_SCALES,
        pooling=GRID,
        projection="auto",
        projection_dim=128,
        temperature=0.07,
        symmetric=False,
        same_class_pairs="negatives",
        region_categorization="none",
        region_reference="label",
        complementary_weight=0.5,
        feature_negatives="all",
        region_weighting="uniform",
        beta=1.0,
        lambda_sw=1.0,
        lambda_fw=1.0,
        teacher_classifier=None,
        student_classifier=None,
        exclude_same_class_negatives=False,
        **kwargs,
    ):
        taps = (taps,) if isinstance(taps, str) else tuple(taps)
        teacher_taps = taps
        if region_categorization != "none" and region_reference == "teacher":
            teacher_taps = taps + (LOGITS,)
        super().__init__(teacher_taps=teacher_taps, student_taps=taps, **kwargs)
        if not taps:
            raise ValueError("MSDCRD needs at least one tap.")
        tap_weights = (1.0,) * len(taps) if tap_weights is None else tuple(tap_weights)
        if len(tap_weights) != len(taps):
            raise ValueError(
                f"MSDCRD got {len(tap_weights)} tap_weights for {len(taps)} taps {taps}."
            )
        _check_choice("pooling", pooling, MODES)
        _check_choice("projection", projection, PROJECTIONS)
        same_class_pairs = _same_class_option(same_class_pairs, exclude_same_class_negatives)
        _check_choice("same_class_pairs", same_class_pairs, SAME_CLASS_PAIRS)
        _check_choice("region_categorization", region_categorization, REGION_CATEGORIZATIONS)
        _check_choice("region_reference", region_reference, REGION_REFERENCES)
        if not 0.0 <= complementary_weight <= 1.0:
            raise ValueError(
                f"MSDCRD complementary_weight must be in [0, 1], got {complementary_weight}."
            )
        _check_choice("feature_negatives", feature_negatives, FEATURE_NEGATIVES)
        _check_choice("region_weighting", region_weighting, REGION_WEIGHTINGS)
        if temperature <= 0:
            raise ValueError(f"MSDCRD temperature must be > 0, got {temperature}.")
        if min(beta, lambda_sw, lambda_fw, *tap_weights) < 0:
            raise ValueError("MSDCRD beta, lambda_sw, lambda_fw and tap_weights must be >= 0.")
        has_classifiers = (teacher_classifier is not None, student_classifier is not None)
        if projection != "classifier" and has_classifiers[1]:
            raise ValueError("student_classifier needs projection='classifier'.")
        if projection != "classifier" and region_categorization == "none" and has_classifiers[0]:
            raise ValueError(
                "teacher_classifier needs projection='classifier' or a region_categorization."
            )
        self.taps = taps
        self.tap_weights = tuple(float(w) for w in tap_weights)
        self.scales = _normalize_scales(scales, pooling)
        self.pooling = pooling
        self.projection = projection
        self.projection_dim = int(projection_dim)
        self.temperature = float(temperature)
        self.symmetric = bool(symmetric)
        self.same_class_pairs = same_class_pairs
        self.region_categorization = region_categorization
        self.region_reference = region_reference
        self.complementary_weight = float(complementary_weight)
        self.feature_negatives = feature_negatives
        self.region_weighting = region_weighting
        self.beta = float(beta)
        self.lambda_sw = float(lambda_sw)
        self.lambda_fw = float(lambda_fw)
        self.teacher_classifier = teacher_classifier
        self.student_classifier = student_classifier
        # Layers given by the caller cannot be serialized; found ones are found again.
        self._given_classifiers = any(has_classifiers)

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
        needs_teacher = self.projection == "classifier" or self.region_categorization != "none"
        if needs_teacher and self.teacher_classifier is None:
            self.teacher_classifier = classifier_layer(teacher)
        if self.projection == "classifier" and self.student_classifier is None:
            self.student_classifier = classifier_layer(student)

    def build_from_taps(self, teacher_shapes, student_shapes):
        """Checks that both sides give matching regions and creates the heads."""
        self._tap_scales = []
        self._scale_ids = []
        self._overlaps = []
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
            self._scale_ids.append(region_scale_ids(windows))
            self._overlaps.append(region_overlap_mask(windows))
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
        self._categorized_taps = self._find_categorized_taps(teacher_shapes)
        super().build_from_taps(teacher_shapes, student_shapes)

    def _find_categorized_taps(self, teacher_shapes):
        """Indices of the taps whose regions the teacher classifier can categorize."""
        if self.region_categorization == "none":
            return frozenset()
        if self.teacher_classifier is None:
            raise ValueError(
                f"region_categorization={self.region_categorization!r} needs "
                "teacher_classifier, the teacher's final Dense layer (e.g. "
                "teacher.get_layer('fc')), to classify each region; the Distiller "
                "finds it when MSDCRD is given to one."
            )
        width = _classifier_input_dim(self.teacher_classifier)
        widths = {tap: teacher_shapes[tap][-1] for tap in self.taps}
        fitting = frozenset(
            i for i, tap in enumerate(self.taps) if width is None or widths[tap] == width
        )
        if not fitting:
            raise ValueError(
                f"The teacher classifier takes {width} features but the taps have "
                f"{widths} teacher channels; region_categorization needs a tap that "
                "feeds the classifier (tap 'pre_pool')."
            )
        return fitting

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
        return l2_normalize(local)

    def _uses_labels(self):
        """Whether an option reads the batch's labels."""
        return self.same_class_pairs != "negatives" or (
            self.region_categorization != "none" and self.region_reference == "label"
        )

    def _consistent_regions(self, index, teacher_local, teacher_outputs, labels):
        """Which regions the teacher classifies as `region_reference`.

        Returns a boolean `(batch, P)` tensor, or `None` for a tap without
        categorization.
        """
        if index not in self._categorized_taps:
            return None
        reference = labels
        if self.region_reference == "teacher":
            reference = ops.argmax(teacher_outputs[LOGITS], axis=-1)
        return consistent_regions(self.teacher_classifier(teacher_local), reference)

    def _local_features(self, index, tap, teacher_outputs, student_outputs, labels):
        """Returns the unit local features of one tap and their categorization.

        Returns `(student, teacher, consistent)`: `(batch, P, dim)` features
        gathered over replicas, and the gathered `consistent_regions` (`None`
        without region categorization).
        """
        scales = self._tap_scales[index]
        teacher_map = ops.stop_gradient(teacher_outputs[tap])
        student = multiscale_pool(student_outputs[tap], scales, self.pooling)
        teacher = multiscale_pool(teacher_map, scales, self.pooling)
        consistent = self._consistent_regions(index, teacher, teacher_outputs, labels)
        # Negatives come from the global batch: gather every replica's features
        # (gradients flow back to each replica's own student).
        student = distributed.all_gather(self._project(index, student, "student"))
        teacher = distributed.all_gather(self._project(index, teacher, "teacher"))
        if consistent is not None:
            # Gathered as int32: collectives do not all support booleans.
            consistent = distributed.all_gather(ops.cast(consistent, "int32"))
            consistent = ops.cast(consistent, "bool")
        return student, teacher, consistent

    def _feature_mask(self, index):
        if self.feature_negatives == "all":
            return None
        if self.feature_negatives == "same_scale":
            return same_group_mask(self._scale_ids[index])
        return ops.convert_to_tensor(np.logical_not(self._overlaps[index]))

    def _anchor_weights(self, consistent, term):
        """Per-anchor weights of a term, or `None` when every anchor counts fully."""
        if consistent is None:
            return None
        if self.region_categorization == "consistent_only":
            return ops.cast(consistent, "float32") if term == "sw" else None
        return ops.where(consistent, 1.0, self.complementary_weight)

    def _sample_wise(self, student, teacher, labels, consistent):
        """Per-anchor sample-wise losses under the categorization options."""
        positive_mask = keep_mask = None
        if self.same_class_pairs == "exclude":
            keep_mask = different_class_mask(labels)
        elif self.same_class_pairs == "positives":
            positive_mask = ops.logical_not(different_class_mask(labels))
        if consistent is not None and self.region_categorization == "consistent_only":
            pairs = consistent_pair_mask(consistent)
            keep_mask = pairs if keep_mask is None else ops.logical_and(pairs, keep_mask)
        elif positive_mask is None:
            return sample_wise_info_nce(student, teacher, self.temperature, keep_mask, self.symmetric)
        return multi_positive_sample_wise_info_nce(
            student, teacher, self.temperature, positive_mask, keep_mask, self.symmetric
        )

    def _reduce(self, per_anchor_loss, anchor_weights, region_weights):
        if anchor_weights is None:
            return weighted_region_mean(per_anchor_loss, region_weights)
        return anchor_weighted_mean(per_anchor_loss, anchor_weights, region_weights)

    def call(self, teacher_outputs, student_outputs, labels=None, sample_indices=None, step=None):
        if labels is None and self._uses_labels():
            raise ValueError(
                f"MSDCRD with same_class_pairs={self.same_class_pairs!r} and "
                f"region_categorization={self.region_categorization!r} needs the batch's labels."
            )
        global_labels = None if labels is None else distributed.all_gather(labels)
        compute_sw = self.beta * self.lambda_sw > 0
        compute_fw = self.beta * self.lambda_fw > 0
        zero = ops.zeros((), "float32")
        sw_total, fw_total = zero, zero
        for index, (tap, tap_weight) in enumerate(zip(self.taps, self.tap_weights)):
            if tap_weight == 0 or not (compute_sw or compute_fw):
                continue
            student, teacher, consistent = self._local_features(
                index, tap, teacher_outputs, student_outputs, labels
            )
            region_weights = _region_weights(self._scale_ids[index], self.region_weighting)
            if compute_sw:
                loss = self._sample_wise(student, teacher, global_labels, consistent)
                weights = self._anchor_weights(consistent, "sw")
                sw_total = sw_total + tap_weight * self._reduce(loss, weights, region_weights)
            if compute_fw:
                loss = feature_wise_info_nce(
                    student, teacher, self.temperature, self._feature_mask(index), self.symmetric
                )
                weights = self._anchor_weights(consistent, "fw")
                fw_total = fw_total + tap_weight * self._reduce(loss, weights, region_weights)
        return {
            "loss_msd_sw": self.beta * self.lambda_sw * sw_total,
            "loss_msd_fw": self.beta * self.lambda_fw * fw_total,
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
                "pooling": self.pooling,
                "projection": self.projection,
                "projection_dim": self.projection_dim,
                "temperature": self.temperature,
                "symmetric": self.symmetric,
                "same_class_pairs": self.same_class_pairs,
                "region_categorization": self.region_categorization,
                "region_reference": self.region_reference,
                "complementary_weight": self.complementary_weight,
                "feature_negatives": self.feature_negatives,
                "region_weighting": self.region_weighting,
                "beta": self.beta,
                "lambda_sw": self.lambda_sw,
                "lambda_fw": self.lambda_fw,
            }
        )
        return config
