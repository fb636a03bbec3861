"""MSDCRD's measured-as-noise options, as one opt-in subclass.

`MSDCRDVariants` (registry name `"msdcrd_variants"`) is `MSDCRD` plus the
readings that `docs/results.md` measured as no better than the core: sample
categorization (`same_class_pairs`, `region_categorization`,
`region_reference`, `complementary_weight`), feature-wise negative subsets
(`feature_negatives`), `region_weighting`, the `symmetric` direction and
`pooling="overlapping"`. With every option at its default it computes what
`MSDCRD` computes. The ablation rows of `experiments/ablation.py` use it.
"""

import inspect

import keras
import numpy as np
from keras import ops

from kerasdistill.methods.msdcrd import (
    MSDCRD,
    _classifier_input_dim,
    _normalize_scales,
    check_choice,
)
from kerasdistill.methods.registry import register
from kerasdistill.ops import distributed
from kerasdistill.ops.categorization import (
    anchor_weighted_mean,
    consistent_pair_mask,
    consistent_regions,
)
from kerasdistill.ops.contrastive import (
    different_class_mask,
    feature_wise_info_nce,
    same_group_mask,
    sample_wise_info_nce,
    weighted_region_mean,
)
from kerasdistill.ops.multiscale import GRID, MODES, region_overlap_mask, region_scale_ids
from kerasdistill.tap_names import LOGITS

SAME_CLASS_PAIRS = ("negatives", "exclude", "positives")
REGION_CATEGORIZATIONS = ("none", "consistent_only", "downweight")
REGION_REFERENCES = ("label", "teacher")
FEATURE_NEGATIVES = ("all", "same_scale", "non_overlapping")
REGION_WEIGHTINGS = ("uniform", "per_scale")


def _region_weights(scale_ids, weighting):
    """Per-region weights summing to 1, or `None` for a plain mean over regions."""
    if weighting == "uniform":
        return None
    num_scales = max(scale_ids) + 1
    counts = [scale_ids.count(k) for k in range(num_scales)]
    return tuple(1.0 / (num_scales * counts[k]) for k in scale_ids)


@register("msdcrd_variants")
@keras.saving.register_keras_serializable(package="kerasdistill")
class MSDCRDVariants(MSDCRD):
    """`MSDCRD` with the categorization and region options (see `docs/method.md`).

    Args:
        pooling: `"grid"` or `"overlapping"` (`scales` are then
            `(window, stride)` pairs, each an int (pixels) or a float fraction
            of the map side; see `kerasdistill.ops.multiscale`).
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
            `complementary_weight` in both terms). Needs `teacher_classifier`
            (found by the Distiller); applies to the taps whose width matches
            it. Both readings measured within noise of `"none"`.
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
        teacher_classifier: As in `MSDCRD`; also used by a
            `region_categorization`.
        **kwargs: `MSDCRD`'s arguments.
    """

    def __init__(
        self,
        pooling=GRID,
        symmetric=False,
        same_class_pairs="negatives",
        region_categorization="none",
        region_reference="label",
        complementary_weight=0.5,
        feature_negatives="all",
        region_weighting="uniform",
        teacher_classifier=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        check_choice("pooling", pooling, MODES)
        check_choice("same_class_pairs", same_class_pairs, SAME_CLASS_PAIRS)
        check_choice("region_categorization", region_categorization, REGION_CATEGORIZATIONS)
        check_choice("region_reference", region_reference, REGION_REFERENCES)
        if not 0.0 <= complementary_weight <= 1.0:
            raise ValueError(
                f"MSDCRD complementary_weight must be in [0, 1], got {complementary_weight}."
            )
        check_choice("feature_negatives", feature_negatives, FEATURE_NEGATIVES)
        check_choice("region_weighting", region_weighting, REGION_WEIGHTINGS)
        self.pooling = pooling
        self.scales = _normalize_scales(kwargs.get("scales", self.scales), pooling)
        self.symmetric = bool(symmetric)
        self.same_class_pairs = same_class_pairs
        self.region_categorization = region_categorization
        self.region_reference = region_reference
        self.complementary_weight = float(complementary_weight)
        self.feature_negatives = feature_negatives
        self.region_weighting = region_weighting
        if region_categorization != "none" and region_reference == "teacher":
            self.teacher_taps = self.teacher_taps + (LOGITS,)
        if teacher_classifier is not None and not self._uses_teacher_classifier():
            raise ValueError(
                "teacher_classifier needs projection='classifier' or a region_categorization."
            )
        self.teacher_classifier = teacher_classifier
        self._given_classifiers = self._given_classifiers or teacher_classifier is not None

    def _uses_teacher_classifier(self):
        return self.projection == "classifier" or self.region_categorization != "none"

    def build_from_taps(self, teacher_shapes, student_shapes):
        super().build_from_taps(teacher_shapes, student_shapes)
        self._scale_ids = [region_scale_ids(windows) for windows in self._windows]
        self._overlaps = [region_overlap_mask(windows) for windows in self._windows]
        self._categorized_taps = self._find_categorized_taps(teacher_shapes)

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

    def _uses_labels(self):
        """Whether an option reads the batch's labels."""
        return self.same_class_pairs != "negatives" or (
            self.region_categorization != "none" and self.region_reference == "label"
        )

    def _consistent_regions(self, index, teacher_local, teacher_outputs, labels):
        """Gathered boolean `(batch, P)`: the regions the teacher classifies as the reference.

        `None` for a tap without categorization.
        """
        if index not in self._categorized_taps:
            return None
        reference = labels
        if self.region_reference == "teacher":
            reference = ops.argmax(teacher_outputs[LOGITS], axis=-1)
        consistent = consistent_regions(self.teacher_classifier(teacher_local), reference)
        # Gathered as int32: collectives do not all support booleans.
        return ops.cast(distributed.all_gather(ops.cast(consistent, "int32")), "bool")

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
        return sample_wise_info_nce(
            student, teacher, self.temperature, keep_mask, self.symmetric, positive_mask
        )

    def _reduce(self, index, per_anchor_loss, consistent, term):
        region_weights = _region_weights(self._scale_ids[index], self.region_weighting)
        anchor_weights = self._anchor_weights(consistent, term)
        if anchor_weights is None:
            return weighted_region_mean(per_anchor_loss, region_weights)
        return anchor_weighted_mean(per_anchor_loss, anchor_weights, region_weights)

    def _tap_terms(self, index, tap, teacher_outputs, student_outputs, labels):
        if labels is None and self._uses_labels():
            raise ValueError(
                f"MSDCRD with same_class_pairs={self.same_class_pairs!r} and "
                f"region_categorization={self.region_categorization!r} needs the batch's labels."
            )
        student, teacher = self._pooled(index, tap, teacher_outputs, student_outputs)
        consistent = self._consistent_regions(index, teacher, teacher_outputs, labels)
        student, teacher = self._unit_features(index, student, teacher)
        sw = fw = ops.zeros((), "float32")
        if self.sw_weight > 0:
            global_labels = None if labels is None else distributed.all_gather(labels)
            loss = self._sample_wise(student, teacher, global_labels, consistent)
            sw = self._reduce(index, loss, consistent, "sw")
        if self.fw_weight > 0:
            loss = feature_wise_info_nce(
                student, teacher, self.temperature, self._feature_mask(index), self.symmetric
            )
            fw = self._reduce(index, loss, consistent, "fw")
        return sw, fw

    def get_config(self):
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


def _full_signature():
    """`MSDCRD`'s arguments and the variants', so callers checking names see both."""
    own = inspect.signature(MSDCRDVariants.__init__).parameters
    core = inspect.signature(MSDCRD.__init__).parameters
    keyword = inspect.Parameter.VAR_KEYWORD
    params = [p for p in own.values() if p.kind != keyword]
    params += [p for name, p in core.items() if name not in own and p.kind != keyword]
    return inspect.Signature(params + [own["kwargs"]])


MSDCRDVariants.__init__.__signature__ = _full_signature()
