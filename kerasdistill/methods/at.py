"""Attention Transfer (Zagoruyko & Komodakis, ICLR 2017), as RepDistiller's `attention`.

The activation-based spatial attention map of a feature map `f` (NHWC) is
`normalize(mean_c(f^p))`, flattened over the spatial positions and L2-normalized
per sample (PyTorch `F.normalize`, i.e. the norm clamped at `1e-12`). The loss
of one student/teacher pair is the mean squared difference of the two maps
(mean over batch and positions); the pairs' losses are summed.
"""

import keras
from keras import ops

from kerasdistill.methods.base import DistillationMethod
from kerasdistill.methods.registry import register
from kerasdistill.ops.normalize import l2_normalize

# PyTorch `F.normalize`'s default lower bound of the norm.
_MIN_NORM = 1e-12


def attention_map(feature, p=2.0):
    """Spatial attention map of an NHWC feature map.

    `mean_c(|f|^p)` (the paper's definition; the reference's `f.pow(p)` is the
    same for even `p`).

    Args:
        feature: `(batch, H, W, C)` tensor.
        p: Exponent applied to the activations before the channel mean.

    Returns:
        A float32 `(batch, H * W)` tensor of unit L2 norm per row (row-major
        over `(H, W)`, the order of PyTorch's `view` on an NCHW map's mean).
    """
    feature = ops.cast(feature, "float32")
    powered = ops.square(feature) if p == 2 else ops.power(ops.abs(feature), p)
    pooled = ops.mean(powered, axis=-1)
    flat = ops.reshape(pooled, (ops.shape(pooled)[0], -1))
    return l2_normalize(flat, axis=-1, min_norm=_MIN_NORM)


def _pool_factor(larger, smaller, taps):
    if larger % smaller:
        raise ValueError(
            f"Attention transfer pair {taps} has spatial sizes that are not integer "
            f"multiples ({larger} vs {smaller}); the larger map is average-pooled to the "
            "smaller one only for integer ratios."
        )
    return larger // smaller


def _spatial_pool_sizes(s_shape, t_shape, taps):
    """Returns `(student_pool, teacher_pool)`: the pool sizes making the maps equal."""
    if len(s_shape) != 4 or len(t_shape) != 4:
        raise ValueError(
            f"Attention transfer needs NHWC feature maps; pair {taps} has shapes "
            f"student {tuple(s_shape)}, teacher {tuple(t_shape)}."
        )
    (s_h, s_w), (t_h, t_w) = tuple(s_shape[1:3]), tuple(t_shape[1:3])
    if None in (s_h, s_w, t_h, t_w):
        raise ValueError(f"Attention transfer pair {taps} needs static spatial sizes.")
    if (s_h, s_w) == (t_h, t_w):
        return None, None
    if s_h >= t_h and s_w >= t_w:
        return (_pool_factor(s_h, t_h, taps), _pool_factor(s_w, t_w, taps)), None
    if s_h <= t_h and s_w <= t_w:
        return None, (_pool_factor(t_h, s_h, taps), _pool_factor(t_w, s_w, taps))
    raise ValueError(
        f"Attention transfer pair {taps}: the student map {(s_h, s_w)} is larger along one "
        f"axis and smaller along the other than the teacher map {(t_h, t_w)}."
    )


def _average_pool(feature, pool_size):
    if pool_size is None or pool_size == (1, 1):
        return feature
    return ops.average_pool(feature, pool_size, strides=pool_size, padding="valid")


def attention_transfer_loss(student_feature, teacher_feature, p=2.0, taps=None):
    """Mean squared difference of the two maps' attention maps.

    If the spatial sizes differ, the larger map is first average-pooled to the
    smaller (RepDistiller's `adaptive_avg_pool2d`; integer ratios only).

    Args:
        student_feature: `(batch, Hs, Ws, Cs)` tensor.
        teacher_feature: `(batch, Ht, Wt, Ct)` tensor; channels may differ.
        p: Exponent of the attention maps.
        taps: Optional label of the pair, for error messages.

    Returns:
        A float32 scalar.
    """
    s_pool, t_pool = _spatial_pool_sizes(student_feature.shape, teacher_feature.shape, taps)
    a_s = attention_map(_average_pool(ops.cast(student_feature, "float32"), s_pool), p)
    a_t = attention_map(_average_pool(ops.cast(teacher_feature, "float32"), t_pool), p)
    return ops.mean(ops.square(a_s - a_t))


@register("at")
@keras.saving.register_keras_serializable(package="kerasdistill")
class AT(DistillationMethod):
    """Attention transfer on pairs of intermediate feature maps.

    Term `loss_at = weight * sum_k mean((at(s_k) - at(t_k))^2)` over the tap
    pairs. Reference defaults (RepDistiller): `p = 2`, the intermediate
    features `feat_s[1:-1]` (`feat_1`..`feat_3` of the CIFAR ResNets), weight
    1000 (its `beta`) with cross-entropy weight 1.

    Maps of different spatial sizes are matched as the reference does: the
    larger one is average-pooled to the smaller size (integer ratios only;
    other sizes raise a `ValueError`). Channel counts may differ.

    Args:
        teacher_taps: Tap names of the teacher maps (NHWC).
        student_taps: Tap names of the student maps, paired in order.
        p: Exponent of the attention maps.
        weight: Weight of the term in the total loss (see `DistillationMethod`).
        **kwargs: Passed to `DistillationMethod`'s Layer base (`name`, `dtype`;
            `dtype` defaults to float32 so the loss is computed in float32).
    """

    def __init__(
        self,
        teacher_taps=("feat_1", "feat_2", "feat_3"),
        student_taps=("feat_1", "feat_2", "feat_3"),
        p=2.0,
        weight=1000.0,
        **kwargs,
    ):
        super().__init__(
            teacher_taps=teacher_taps, student_taps=student_taps, weight=weight, **kwargs
        )
        if len(self.teacher_taps) != len(self.student_taps) or not self.teacher_taps:
            raise ValueError(
                "AT needs the same, non-zero number of teacher and student taps; got "
                f"teacher {self.teacher_taps} and student {self.student_taps}."
            )
        if p <= 0:
            raise ValueError(f"AT exponent p must be > 0, got {p}.")
        self.p = float(p)

    def loss_terms(self):
        return ("loss_at",)

    def _pairs(self):
        return list(zip(self.student_taps, self.teacher_taps))

    def build_from_taps(self, teacher_shapes, student_shapes):
        for s_tap, t_tap in self._pairs():
            _spatial_pool_sizes(student_shapes[s_tap], teacher_shapes[t_tap], (s_tap, t_tap))
        super().build_from_taps(teacher_shapes, student_shapes)

    def call(self, teacher_outputs, student_outputs, labels=None, sample_indices=None, step=None):
        total = 0.0
        for s_tap, t_tap in self._pairs():
            total = total + attention_transfer_loss(
                student_outputs[s_tap],
                ops.stop_gradient(teacher_outputs[t_tap]),
                self.p,
                taps=(s_tap, t_tap),
            )
        return {"loss_at": total}

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "teacher_taps": list(self.teacher_taps),
                "student_taps": list(self.student_taps),
                "p": self.p,
            }
        )
        return config
