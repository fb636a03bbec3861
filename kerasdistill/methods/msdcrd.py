"""MSDCRD: contrastive representation distillation via multi-scale feature decoupling.

Wang et al., "Contrastive Representation Distillation via Multi-Scale Feature
Decoupling", arXiv 2502.05835. The paper's exact equations, windows and weights
are not public; this module implements the reading documented in
`docs/method.md`. The options measured as no better than this core (sample
categorization, feature-wise negative subsets, region weighting, the symmetric
direction, overlapping windows, the classifier projection) are in
`kerasdistill.methods.msdcrd_variants`, which overrides the four hooks marked
below and nothing else.
"""

import dataclasses
import functools
import typing

import keras
from keras import ops

from kerasdistill.methods.base import DistillationMethod
from kerasdistill.methods.registry import register
from kerasdistill.ops import distributed, multiscale
from kerasdistill.ops.alignment import pool_channels
from kerasdistill.ops.contrastive import feature_wise_info_nce, sample_wise_info_nce
from kerasdistill.ops.normalize import l2_normalize
from kerasdistill.taps import FEAT_LAST

AUTO_SCALES = "auto"
# Norm floor of the local features: zero vectors stay zero.
_MIN_NORM = 1e-6


@dataclasses.dataclass(frozen=True)
class _Side:
    """How one model's map at one tap becomes unit local features.

    Attributes:
        windows: The regions (`multiscale.Window`s) resolved on this side's map.
        project: Maps `(batch, P, C)` local features into the common space;
            `None` is the identity.
    """

    windows: tuple
    project: typing.Optional[typing.Callable] = None

    def pool(self, feature_map):
        """The `(batch, P, C)` local features: the mean of every region."""
        return multiscale.pool_regions(feature_map, self.windows)

    def embed(self, local):
        """Projected, L2-normalized local features, gathered over replicas.

        Negatives come from the global batch: every replica's features are
        gathered (gradients flow back to each replica's own student).
        """
        if self.project is not None:
            local = self.project(local)
        return distributed.all_gather(l2_normalize(local, min_norm=_MIN_NORM))


@dataclasses.dataclass(frozen=True)
class _Tap:
    """One tap's share of the loss, fixed by `build_from_taps`.

    Attributes:
        name: The tap name.
        weight: Its tap weight.
        projection: The projection resolved for it (`"auto"` resolved).
        teacher: The teacher's `_Side`.
        student: The student's `_Side`.
    """

    name: str
    weight: float
    projection: str
    teacher: _Side
    student: _Side


class _Batch(typing.NamedTuple):
    """What the loss hooks may read of a batch besides the unit local features."""

    # The `(batch, P, C)` pooled teacher features, before projection (not gathered).
    teacher_local: typing.Any
    # The teacher's taps, `{name: tensor}`.
    teacher_outputs: dict
    # The batch's labels (this replica's), or `None`.
    labels: typing.Any


def _as_tuples(scales, method):
    """`scales` with lists made tuples (configs round-trip them as lists)."""
    if isinstance(scales, str):
        if scales != AUTO_SCALES:
            raise ValueError(
                f"{method} scales must be {AUTO_SCALES!r} or a sequence of scales, got {scales!r}."
            )
        return scales
    return tuple(tuple(s) if isinstance(s, (list, tuple)) else s for s in scales)


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

    Reported terms: `loss_msd_sw = weight * sw_weight * sum_m a_m L_sw(m)` and
    `loss_msd_fw = weight * fw_weight * sum_m a_m L_fw(m)`, summed over the taps
    `m` with their `tap_weights` `a_m`, each `L` the mean over anchors. Combine
    with KD by listing both methods in the Distiller.

    Args:
        taps: Tap names read from both models (the Distiller's
            `teacher_layers` / `student_layers` map them to layers). Default:
            `("feat_last",)`, the last feature map before pooling.
        tap_weights: One weight per tap (default: 1.0 each, or `1 / K` with
            `stages`).
        stages: An int `K`: decouple every stage map `feat_1 .. feat_K`
            instead of `taps` (the CIFAR ResNets have 3 stages, the ImageNet
            ResNets 4), each with tap weight `1 / K` unless `tap_weights` is
            given, so the terms keep the scale of one tap. On resnet20 ->
            resnet8 it was about 1 point worse than the last map alone
            (`docs/results.md`).
        scales: Pooling grids. `"auto"` (default): per tap, the grids 1, 2, 4
            that fit both maps (`multiscale.fitting_grids`): 1, 2 and 4 on 4x4
            maps and larger (CIFAR's 8x8, ImageNet's 7x7), 1 and 2 on the 2x2
            maps of a 64 px input. Otherwise grid sizes `g` (a `g x g` grid of
            cells, adaptive where `g` does not divide the map; see
            `kerasdistill.ops.multiscale`). Regions are relative boxes, so a
            teacher's and a student's maps of different sizes give matching
            regions.
        projection: How local features reach a common space: `"auto"`
            (default: `"none"` for a tap whose teacher and student channel
            counts match, else `"linear"`; chosen by the ablation in
            `docs/results.md`, where the parameter-free form was best),
            `"linear"` (a trainable Dense head per side and tap, trained with
            the student, not part of the exported student), `"none"`
            (identity; teacher and student channel counts must match) or
            `"channel_pool"` (the wider side's channels averaged in contiguous
            groups down to the narrower width; parameter-free). On a CNN ->
            ViT pair `"channel_pool"` tied `"linear"` (`docs/results.md`).
        projection_dim: Output size of the `"linear"` heads.
        temperature: InfoNCE temperature `tau > 0` (0.07: best of 0.07, 0.1,
            0.2, 0.5 in `docs/results.md`).
        weight: Overall weight of the method, both terms (see
            `DistillationMethod`; 0 computes neither).
        sw_weight: Weight of the sample-wise term (0 drops it).
        fw_weight: Weight of the feature-wise term (0 drops it).
        **kwargs: Passed to `DistillationMethod`'s Layer base (`name`).
    """

    needs_tap_shapes = True
    normalizes_student_features = True
    # The sample-wise negatives are the other images of the batch.
    min_batch_per_replica = 2
    renamed_arguments = {"beta": "weight", "lambda_sw": "sw_weight", "lambda_fw": "fw_weight"}
    # The accepted `projection` values (`MSDCRDVariants` adds "classifier").
    projections = ("auto", "linear", "none", "channel_pool")

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
        **kwargs,
    ):
        name = type(self).__name__
        if stages is not None:
            if isinstance(stages, bool) or not isinstance(stages, int) or stages < 1:
                raise ValueError(f"{name} stages must be a positive int, got {stages!r}.")
            if taps is not None:
                raise ValueError(f"{name} takes taps or stages, not both; got taps={taps!r}.")
            taps = tuple(f"feat_{k}" for k in range(1, stages + 1))
            if tap_weights is None:
                tap_weights = (1.0 / stages,) * stages
        taps = (FEAT_LAST,) if taps is None else (taps,) if isinstance(taps, str) else tuple(taps)
        super().__init__(teacher_taps=taps, student_taps=taps, weight=weight, **kwargs)
        if not taps:
            raise ValueError(f"{name} needs at least one tap.")
        tap_weights = (1.0,) * len(taps) if tap_weights is None else tuple(tap_weights)
        if len(tap_weights) != len(taps):
            raise ValueError(
                f"{name} got {len(tap_weights)} tap_weights for {len(taps)} taps {taps}."
            )
        self._check_choice("projection", projection, self.projections)
        if temperature <= 0:
            raise ValueError(f"{name} temperature must be > 0, got {temperature}.")
        if min(sw_weight, fw_weight, *tap_weights) < 0:
            raise ValueError(f"{name} sw_weight, fw_weight and tap_weights must be >= 0.")
        self.taps = taps
        self.stages = stages
        self.tap_weights = tuple(float(w) for w in tap_weights)
        self.scales = _as_tuples(scales, name)
        self.projection = projection
        self.projection_dim = int(projection_dim)
        self.temperature = float(temperature)
        self.sw_weight = float(sw_weight)
        self.fw_weight = float(fw_weight)

    @classmethod
    def every_stage(cls, *args, **kwargs):
        """Gone: `MSDCRD(stages=K)` reads feat_1 .. feat_K (reachable from JSON).

        Raises:
            AttributeError: Naming what replaces it.
        """
        raise AttributeError("MSDCRD.every_stage(K) is gone; use MSDCRD(stages=K).")

    def _check_choice(self, argument, value, choices):
        """Raises a ValueError unless `value` is one of `choices`."""
        if value not in choices:
            hint = ""
            if (argument, value) == ("projection", "classifier"):
                hint = " (projection='classifier' moved to MSDCRDVariants, with the layers given)"
            raise ValueError(
                f"{type(self).__name__} {argument} must be one of {choices}, got {value!r}{hint}."
            )

    def loss_terms(self):
        return ("loss_msd_sw", "loss_msd_fw")

    def build_from_taps(self, teacher_shapes, student_shapes):
        """Resolves every tap's regions and projections; creates the linear heads."""
        plan = []
        for name, weight in zip(self.taps, self.tap_weights):
            t_shape, s_shape = tuple(teacher_shapes[name]), tuple(student_shapes[name])
            t_windows, s_windows = self._regions(t_shape, s_shape)
            projection, t_project, s_project = self._projectors(name, t_shape[-1], s_shape[-1])
            teacher, student = _Side(t_windows, t_project), _Side(s_windows, s_project)
            plan.append(_Tap(name, weight, projection, teacher, student))
        self._plan = tuple(plan)
        self.teacher_heads = [tap.teacher.project for tap in plan if tap.projection == "linear"]
        self.student_heads = [tap.student.project for tap in plan if tap.projection == "linear"]
        super().build_from_taps(teacher_shapes, student_shapes)

    def _regions(self, teacher_shape, student_shape):
        """Hook: the regions of one tap, `(teacher_windows, student_windows)`."""
        scales = self.scales
        if scales == AUTO_SCALES:
            scales = multiscale.fitting_grids((teacher_shape[1:3], student_shape[1:3]))
        return multiscale.matching_windows(teacher_shape, student_shape, scales)

    def _projectors(self, tap, teacher_channels, student_channels):
        """Hook: `(projection, teacher_project, student_project)` of one tap.

        `projection` is the resolved option; each `project` maps that side's
        `(batch, P, C)` local features into the common space (`None`: identity).
        """
        projection = self.projection
        if projection == "auto":
            projection = "none" if teacher_channels == student_channels else "linear"
        if projection == "none":
            if teacher_channels != student_channels:
                raise ValueError(
                    f"projection='none' needs equal channel counts, but tap {tap!r} has "
                    f"{teacher_channels} teacher and {student_channels} student channels; "
                    "use projection='linear' or 'channel_pool'."
                )
            return projection, None, None
        if projection == "channel_pool":
            pool = functools.partial(pool_channels, width=min(teacher_channels, student_channels))
            return projection, pool, pool
        teacher_head = self._make_head(f"{tap}_teacher_head", teacher_channels)
        return projection, teacher_head, self._make_head(f"{tap}_student_head", student_channels)

    def _make_head(self, name, channels):
        # float32 heads: large float16 features cannot overflow the projection.
        head = keras.layers.Dense(self.projection_dim, dtype="float32", name=name)
        head.build((None, None, channels))
        return head

    def call(self, teacher_outputs, student_outputs, labels=None, sample_indices=None, step=None):
        sw = fw = ops.zeros((), "float32")
        if self.weight > 0 and (self.sw_weight > 0 or self.fw_weight > 0):
            for tap in self._plan:
                if tap.weight == 0:
                    continue
                teacher_local = tap.teacher.pool(ops.stop_gradient(teacher_outputs[tap.name]))
                student = tap.student.embed(tap.student.pool(student_outputs[tap.name]))
                teacher = tap.teacher.embed(teacher_local)
                batch = _Batch(teacher_local, teacher_outputs, labels)
                if self.sw_weight > 0:
                    sw = sw + tap.weight * self._sample_wise(tap, student, teacher, batch)
                if self.fw_weight > 0:
                    fw = fw + tap.weight * self._feature_wise(tap, student, teacher, batch)
        return {"loss_msd_sw": self.sw_weight * sw, "loss_msd_fw": self.fw_weight * fw}

    def _sample_wise(self, tap, student, teacher, batch):
        """Hook: `L_sw` of one tap, the sample-wise InfoNCE averaged over anchors."""
        del tap, batch
        return ops.mean(sample_wise_info_nce(student, teacher, self.temperature))

    def _feature_wise(self, tap, student, teacher, batch):
        """Hook: `L_fw` of one tap, the feature-wise InfoNCE averaged over anchors."""
        del tap, batch
        return ops.mean(feature_wise_info_nce(student, teacher, self.temperature))

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "taps": None if self.stages else list(self.taps),
                "tap_weights": list(self.tap_weights),
                "stages": self.stages,
                "scales": (
                    self.scales
                    if self.scales == AUTO_SCALES
                    else [list(s) if isinstance(s, tuple) else s for s in self.scales]
                ),
                "projection": self.projection,
                "projection_dim": self.projection_dim,
                "temperature": self.temperature,
                "sw_weight": self.sw_weight,
                "fw_weight": self.fw_weight,
            }
        )
        return config
