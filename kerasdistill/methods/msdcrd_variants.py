"""MSDCRD's measured-as-noise options, as one opt-in subclass.

`MSDCRDVariants` (registry name `"msdcrd_variants"`) is `MSDCRD` plus the
readings that `docs/results.md` measured as no better than the core: sample
categorization (`same_class_pairs`, `region_categorization`,
`region_reference`, `complementary_weight`), feature-wise negative subsets
(`feature_negatives`), `region_weighting`, the `symmetric` direction,
`pooling="overlapping"` and `projection="classifier"`. With every option at
its default it computes what `MSDCRD` computes. It overrides only the core's
hooks (`_regions`, `_projectors`, `_sample_wise`, `_feature_wise`); its ops
are in `kerasdistill.methods.msdcrd_variants_ops`. The ablation rows of
`experiments/ablation.py` use it.
"""

import keras
import numpy as np
from keras import ops

from kerasdistill.methods import msdcrd_variants_ops as variant_ops
from kerasdistill.methods.msdcrd import AUTO_SCALES, MSDCRD
from kerasdistill.methods.registry import register
from kerasdistill.ops import distributed, multiscale
from kerasdistill.taps import LOGITS

POOLINGS = ("grid", "overlapping")
SAME_CLASS_PAIRS = ("negatives", "exclude", "positives")
REGION_CATEGORIZATIONS = ("none", "consistent_only", "downweight")
REGION_REFERENCES = ("label", "teacher")
FEATURE_NEGATIVES = ("all", "same_scale", "non_overlapping")
REGION_WEIGHTINGS = ("uniform", "per_scale")


def _input_width(layer):
    """The number of features a Dense layer takes, or `None` before it is built."""
    kernel = getattr(layer, "kernel", None)
    return None if kernel is None else kernel.shape[0]


@register("msdcrd_variants")
@keras.saving.register_keras_serializable(package="kerasdistill")
class MSDCRDVariants(MSDCRD):
    """`MSDCRD` with the categorization and region options (see `docs/method.md`).

    The options that read a model's classifier take its layer explicitly:
    `teacher_classifier=kerasdistill.taps.classifier_layer(teacher)` (or
    `teacher.get_layer("fc")`), likewise `student_classifier`. A method holding
    such layers cannot be serialized by config.

    Args:
        taps, tap_weights, stages, scales, projection_dim, temperature,
            weight, sw_weight, fw_weight: As in `MSDCRD`. With
            `pooling="overlapping"`, `scales` are `(window, stride)` pairs.
        projection: As in `MSDCRD`, or `"classifier"`: each model's own
            classifier (`teacher_classifier`, `student_classifier`) maps the
            local features to class space; only for the map that feeds the
            classifier (tap `"pre_pool"`). Measured 4.9 points worse than
            linear heads on a CNN -> ViT pair.
        pooling: `"grid"` or `"overlapping"` (`scales` are then
            `(window, stride)` pairs, each an int (pixels) or a float fraction
            of the map side; see `msdcrd_variants_ops.sliding_extents`).
        symmetric: Add the teacher-anchored direction of both losses and
            average the two directions.
        same_class_pairs: Sample-wise role of the other images of the
            anchor's class: `"negatives"` (label-free, like CRD),
            `"exclude"` (removed from the denominator) or `"positives"`
            (extra positives, supervised-contrastive style). Measured:
            `"exclude"` ties the default, `"positives"` is worse.
        region_categorization: Treatment of the regions the teacher
            classifies as complementary (its classifier, applied to the
            region's pooled feature, misses `region_reference`): `"none"`,
            `"consistent_only"` (the sample-wise term contrasts consistent
            regions only: complementary regions are neither anchors nor
            negatives there) or `"downweight"` (complementary anchors weigh
            `complementary_weight` in both terms). Needs `teacher_classifier`;
            applies to the taps whose width matches it. Both readings
            measured within noise of `"none"`.
        region_reference: What a consistent region predicts: the `"label"`
            or the `"teacher"`'s global prediction (its logits).
        complementary_weight: Anchor weight of complementary regions with
            `region_categorization="downweight"`, in `[0, 1]`.
        feature_negatives: Feature-wise negatives: `"all"` other regions of
            the image, `"same_scale"` only the regions of the anchor's scale,
            or `"non_overlapping"` only the regions sharing no area with the
            anchor. The three measured within noise of each other.
        region_weighting: `"uniform"` (every region counts the same) or
            `"per_scale"` (every scale counts the same, split over its regions).
        teacher_classifier: The teacher's final Dense layer; required by
            `projection="classifier"` and a `region_categorization`, refused
            otherwise.
        student_classifier: The student's final Dense layer; required by
            `projection="classifier"`, refused otherwise.
        **kwargs: Passed to `DistillationMethod`'s Layer base (`name`).
    """

    projections = MSDCRD.projections + ("classifier",)

    def __init__(
        self,
        taps=None,
        tap_weights=None,
        stages=None,
        scales=AUTO_SCALES,
        projection="auto",
        projection_dim=128,
        temperature=0.07,
        weight=1.0,
        sw_weight=1.0,
        fw_weight=1.0,
        pooling="grid",
        symmetric=False,
        same_class_pairs="negatives",
        region_categorization="none",
        region_reference="label",
        complementary_weight=0.5,
        feature_negatives="all",
        region_weighting="uniform",
        teacher_classifier=None,
        student_classifier=None,
        **kwargs,
    ):
        super().__init__(
            taps=taps,
            tap_weights=tap_weights,
            stages=stages,
            scales=scales,
            projection=projection,
            projection_dim=projection_dim,
            temperature=temperature,
            weight=weight,
            sw_weight=sw_weight,
            fw_weight=fw_weight,
            **kwargs,
        )
        self._check_choice("pooling", pooling, POOLINGS)
        if pooling == "overlapping" and scales == AUTO_SCALES:
            raise ValueError(
                "MSDCRDVariants pooling='overlapping' needs scales as (window, stride) pairs, "
                "not 'auto'."
            )
        self._check_choice("same_class_pairs", same_class_pairs, SAME_CLASS_PAIRS)
        self._check_choice("region_categorization", region_categorization, REGION_CATEGORIZATIONS)
        self._check_choice("region_reference", region_reference, REGION_REFERENCES)
        if not 0.0 <= complementary_weight <= 1.0:
            raise ValueError(
                "MSDCRDVariants complementary_weight must be in [0, 1], got "
                f"{complementary_weight}."
            )
        self._check_choice("feature_negatives", feature_negatives, FEATURE_NEGATIVES)
        self._check_choice("region_weighting", region_weighting, REGION_WEIGHTINGS)
        needs = {
            "teacher_classifier": projection == "classifier" or region_categorization != "none",
            "student_classifier": projection == "classifier",
        }
        for argument, layer in (
            ("teacher_classifier", teacher_classifier),
            ("student_classifier", student_classifier),
        ):
            if needs[argument] and layer is None:
                raise ValueError(
                    f"MSDCRDVariants with projection={projection!r} and region_categorization="
                    f"{region_categorization!r} needs {argument}, the model's final Dense layer "
                    "(kerasdistill.taps.classifier_layer(model))."
                )
            if layer is not None and not needs[argument]:
                raise ValueError(
                    f"MSDCRDVariants {argument} is used only by projection='classifier'"
                    + (" or a region_categorization" if argument == "teacher_classifier" else "")
                    + f"; got projection={projection!r}."
                )
        self.pooling = pooling
        self.symmetric = bool(symmetric)
        self.same_class_pairs = same_class_pairs
        self.region_categorization = region_categorization
        self.region_reference = region_reference
        self.complementary_weight = float(complementary_weight)
        self.feature_negatives = feature_negatives
        self.region_weighting = region_weighting
        self.teacher_classifier = teacher_classifier
        self.student_classifier = student_classifier
        if region_categorization != "none" and region_reference == "teacher":
            self.teacher_taps = self.teacher_taps + (LOGITS,)

    def build_from_taps(self, teacher_shapes, student_shapes):
        """Checks that some tap feeds the teacher classifier, then builds the core."""
        widths = {tap: teacher_shapes[tap][-1] for tap in self.taps}
        if self.region_categorization != "none" and not any(
            map(self._categorizes, widths.values())
        ):
            raise ValueError(
                f"The teacher classifier takes {_input_width(self.teacher_classifier)} features "
                f"but the taps have {widths} teacher channels; region_categorization needs a "
                "tap that feeds the classifier (tap 'pre_pool')."
            )
        super().build_from_taps(teacher_shapes, student_shapes)

    def _categorizes(self, teacher_channels):
        """Whether the regions of a tap of that teacher width are categorized."""
        width = _input_width(self.teacher_classifier)
        return self.region_categorization != "none" and width in (None, teacher_channels)

    def _regions(self, teacher_shape, student_shape):
        if self.pooling == "grid":
            return super()._regions(teacher_shape, student_shape)
        return multiscale.matching_windows(
            teacher_shape, student_shape, self.scales, variant_ops.sliding_extents
        )

    def _projectors(self, tap, teacher_channels, student_channels):
        if self.projection != "classifier":
            return super()._projectors(tap, teacher_channels, student_channels)
        for side, channels, layer in (
            ("teacher", teacher_channels, self.teacher_classifier),
            ("student", student_channels, self.student_classifier),
        ):
            if _input_width(layer) not in (None, channels):
                raise ValueError(
                    f"The {side} classifier takes {_input_width(layer)} features but tap {tap!r} "
                    f"has {channels} channels; projection='classifier' only fits the map that "
                    "feeds the classifier (tap 'pre_pool')."
                )
        return self.projection, self.teacher_classifier, self.student_classifier

    def _sample_wise(self, tap, student, teacher, batch):
        keep = positives = None
        if self.same_class_pairs != "negatives":
            labels = self._labels(batch, "same_class_pairs", self.same_class_pairs)
            different = variant_ops.different_class_mask(distributed.all_gather(labels))
            if self.same_class_pairs == "exclude":
                keep = different
            else:
                positives = ops.logical_not(different)
        consistent = self._consistent_regions(batch)
        if consistent is not None and self.region_categorization == "consistent_only":
            pairs = variant_ops.consistent_pair_mask(consistent)
            keep = pairs if keep is None else ops.logical_and(pairs, keep)
        loss = variant_ops.masked_sample_wise_info_nce(
            student, teacher, self.temperature, keep, self.symmetric, positives
        )
        return self._mean(tap, loss, consistent)

    def _feature_wise(self, tap, student, teacher, batch):
        loss = variant_ops.masked_feature_wise_info_nce(
            student, teacher, self.temperature, self._feature_mask(tap), self.symmetric
        )
        # "consistent_only" leaves the feature-wise term as it is.
        weighted = self.region_categorization == "downweight"
        return self._mean(tap, loss, self._consistent_regions(batch) if weighted else None)

    def _labels(self, batch, argument, value):
        if batch.labels is None:
            raise ValueError(f"MSDCRDVariants {argument}={value!r} needs the batch's labels.")
        return batch.labels

    def _consistent_regions(self, batch):
        """Gathered boolean `(batch, P)`: the regions the teacher classifies as the reference.

        `None` for a tap without categorization.
        """
        if not self._categorizes(batch.teacher_local.shape[-1]):
            return None
        if self.region_reference == "teacher":
            reference = ops.argmax(batch.teacher_outputs[LOGITS], axis=-1)
        else:
            reference = self._labels(batch, "region_reference", self.region_reference)
        local_logits = self.teacher_classifier(batch.teacher_local)
        consistent = variant_ops.consistent_regions(local_logits, reference)
        # Gathered as int32: collectives do not all support booleans.
        return ops.cast(distributed.all_gather(ops.cast(consistent, "int32")), "bool")

    def _feature_mask(self, tap):
        if self.feature_negatives == "all":
            return None
        if self.feature_negatives == "same_scale":
            return variant_ops.same_group_mask(variant_ops.region_scale_ids(tap.teacher.windows))
        return np.logical_not(variant_ops.region_overlap_mask(tap.teacher.windows))

    def _mean(self, tap, per_anchor_loss, consistent):
        """The anchor mean of a term under `region_weighting` and the categorization.

        `consistent` (or `None`): the regions whose anchors count fully; the
        others count `complementary_weight` ("downweight") or not at all.
        """
        region_weights = None
        if self.region_weighting == "per_scale":
            scale_ids = variant_ops.region_scale_ids(tap.teacher.windows)
            counts = np.bincount(scale_ids)
            region_weights = [1.0 / (len(counts) * counts[k]) for k in scale_ids]
        anchor_weights = None
        if consistent is not None:
            complementary = (
                self.complementary_weight if self.region_categorization == "downweight" else 0.0
            )
            anchor_weights = ops.where(consistent, 1.0, complementary)
        return variant_ops.anchor_weighted_mean(per_anchor_loss, anchor_weights, region_weights)

    def get_config(self):
        if self.teacher_classifier is not None or self.student_classifier is not None:
            raise ValueError(
                "MSDCRDVariants holding classifier layers (projection='classifier' or a "
                "region_categorization) cannot be serialized by config; rebuild it with "
                "teacher_classifier=... instead."
            )
        config = super().get_config()
        config.update(
            {
                "pooling": self.pooling,
                "symmetric": self.symmetric,
                "same_class_pairs": self.same_class_pairs,
                "region_categorization": self.region_categorization,
                "region_reference": self.region_reference,
                "complementary_weight": self.complementary_weight,
                "feature_negatives": self.feature_negatives,
                "region_weighting": self.region_weighting,
            }
        )
        return config
