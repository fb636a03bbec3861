"""Contrastive Representation Distillation (Tian et al., ICLR 2020).

Follows RepDistiller's `CRDLoss` (`crd/criterion.py`, `crd/memory.py`): each
side's pooled feature is embedded by a trainable linear head and L2-normalized;
a memory bank per side holds one embedding per *dataset sample* (non-trainable,
updated with momentum). For every batch sample, the student embedding is scored
against the teacher bank rows of the positive (the sample itself) and of
`num_negatives` other-class samples, and symmetrically the teacher embedding
against the student bank; both score sets feed the NCE loss of the paper's
Eq. 18 with noise distribution `Pn = 1 / num_samples`.
"""

import keras
import numpy as np
from keras import ops

from kerasdistill.methods.base import DistillationMethod
from kerasdistill.methods.crd_memory import MemoryBanks
from kerasdistill.methods.crd_sampler import NegativeSampler, checked_labels
from kerasdistill.methods.registry import register
from kerasdistill.models.initializers import torch_bias_initializer, torch_kernel_initializer
from kerasdistill.ops import distributed
from kerasdistill.ops.normalize import l2_normalize
from kerasdistill.taps import POOLED

# Added to the NCE denominators, as the reference's `eps`.
_NCE_EPS = 1e-7


def nce_loss(log_p, num_samples):
    """The NCE loss of CRD (Eq. 18), as RepDistiller's `ContrastLoss`.

    With `P = exp(log_p)`, `K = columns - 1` negatives, `c = K / num_samples`
    and `eps = 1e-7`: `-(sum_b log(P[b,0] / (P[b,0] + c + eps)) +
    sum_{b, j>0} log(c / (P[b,j] + c + eps))) / batch`. The value is the
    reference's; it is evaluated from the log-scores (`log P[:,0]` is used
    as is, and `log(c / (P + c + eps))` as `-log1p((P + eps) / c)`) so that no
    score over- or underflows and the tiny negative terms keep their precision.

    Args:
        log_p: `(batch, 1 + K)` float32 log normalized scores `log(exp(s/T) / Z)`,
            column 0 the positive.
        num_samples: Size of the dataset (the memory bank).

    Returns:
        A float32 scalar.
    """
    if log_p.shape[1] is None or log_p.shape[1] < 2:
        raise ValueError(
            "CRD needs contrast indices with a static number of columns >= 2 (the positive "
            f"and the negatives); got scores of shape {tuple(log_p.shape)}."
        )
    num_negatives = log_p.shape[1] - 1
    c = num_negatives / float(num_samples)
    p = ops.exp(log_p)
    positive = log_p[:, 0] - ops.log(p[:, 0] + (c + _NCE_EPS))
    negative = -ops.log1p((p[:, 1:] + _NCE_EPS) / c)
    batch = ops.cast(ops.shape(log_p)[0], "float32")
    return -(ops.sum(positive) + ops.sum(negative)) / batch


@register("crd")
@keras.saving.register_keras_serializable(package="kerasdistill")
class CRD(DistillationMethod):
    """Contrastive representation distillation with memory banks.

    Reference defaults (RepDistiller): `feat_dim = 128`, `num_negatives =
    16384`, `temperature = 0.07`, `momentum = 0.5`, weight 0.8 (its `beta`) with
    cross-entropy weight 1 and no KD term.

    State (Keras variables, saved with the Distiller and restored on resume):
    `memory_v1` (student embeddings) and `memory_v2` (teacher embeddings), each
    `(num_samples, feat_dim)` and initialised i.i.d. uniform in `[-s, s]` with
    `s = 1 / sqrt(feat_dim / 3)`; `z_v1` and `z_v2`, the normalization
    constants, `-1` until set from the first batch's scores as
    `mean(exp(scores / T)) * num_samples` and frozen afterwards; and the state
    of the negative sampler's seed generator. The training labels are state
    too, like a Keras preprocessing layer's adapted statistics: `sample_labels`
    (the class of every sample) and `samples_by_class` (sample indices sorted by
    class), int32 `(num_samples,)`, saved with the weights and kept out of the
    config, which holds only the class histogram `label_counts`. CRD `needs`
    `TrainingData.train_labels`: the Distiller passes them to `set_up` (from its
    `training_data`) unless `train_labels` or `label_counts` were given here. The two
    projection heads `embed_s` and `embed_t` are trainable and owned by the
    method.

    The numbers are the reference's (no log-sum-exp reformulation of the
    loss), but evaluated in log space where that is exact: `P = exp(s / T) / Z`
    is computed as `exp(s / T - log Z)` and the loss from `log P`, so only `Z`
    itself must be finite in float32 (true unless `T` is far below 0.07).

    Negatives are drawn in-graph, uniformly among the samples whose label
    differs from the anchor's (`train_labels[sample_index]`), without
    replacement as RepDistiller's `CIFAR100InstanceSample` draws them
    (`np.random.choice(..., replace=False)`; with replacement when a class has
    fewer other-class samples than `num_negatives`, as there). Column 0 of the
    contrast indices is the positive, the sample itself. The training pipeline must therefore
    yield `({"image": x, "index": i}, y)` batches, `i` each sample's index into
    `train_labels`.

    The gathered bank rows are `(batch, 1 + num_negatives, feat_dim)` floats per
    bank (537 MB for the reference 64 x 16385 x 128), as in the reference.

    Args:
        train_labels: Class of every training sample, shape `(num_samples,)`,
            integers; at least two classes; or None to take them in `set_up`.
            Stored as the weights `sample_labels` and `samples_by_class`, not
            in the config.
        feat_dim: Embedding size.
        num_negatives: Negatives per sample (the reference's `nce_k`).
        temperature: Score temperature `T > 0` (`nce_t`).
        momentum: Memory update momentum in `[0, 1]` (`nce_m`).
        weight: Weight of the term in the total loss (RepDistiller's `beta`;
            see `DistillationMethod`).
        teacher_tap: Tap of the teacher feature (flattened if not 2-D).
        student_tap: Tap of the student feature.
        seed: Seed of the negative sampler (`None`: from Keras' global seed).
        replacement: Draw each row's negatives with replacement (cheaper,
            the behaviour of this library before 0.2) instead of the
            reference's draw without replacement.
        label_counts: Number of training samples of each class, instead of
            `train_labels` when the method is rebuilt from its config; the
            labels then come with the weights (`load_weights`, `.keras`
            files, checkpoints), and the method must not train before.
        **kwargs: Passed to `DistillationMethod`'s Layer base (`name`, `dtype`;
            `dtype` defaults to float32 so the loss is computed in float32 under
            a mixed-precision policy).
    """

    needs = ("train_labels",)
    uses_sample_indices = True
    needs_tap_shapes = True

    def __init__(
        self,
        train_labels=None,
        feat_dim=128,
        num_negatives=16384,
        temperature=0.07,
        momentum=0.5,
        weight=0.8,
        teacher_tap=POOLED,
        student_tap=POOLED,
        seed=None,
        replacement=False,
        label_counts=None,
        **kwargs,
    ):
        super().__init__(
            teacher_taps=(teacher_tap,), student_taps=(student_tap,), weight=weight, **kwargs
        )
        if feat_dim < 1 or num_negatives < 1:
            raise ValueError(
                f"CRD feat_dim and num_negatives must be >= 1, got {feat_dim}, {num_negatives}."
            )
        if temperature <= 0:
            raise ValueError(f"CRD temperature must be > 0, got {temperature}.")
        if not 0.0 <= momentum <= 1.0:
            raise ValueError(f"CRD momentum must be in [0, 1], got {momentum}.")
        self.feat_dim = int(feat_dim)
        self.num_negatives = int(num_negatives)
        self.temperature = float(temperature)
        self.momentum = float(momentum)
        self.teacher_tap = teacher_tap
        self.student_tap = student_tap
        self.seed = seed
        self.replacement = bool(replacement)
        self.sampler = None
        if train_labels is not None:
            labels = checked_labels(train_labels)
            self._set_up_sampler(labels, np.bincount(labels))
        elif label_counts is not None:
            counts = np.asarray(label_counts)
            if counts.ndim != 1 or not np.issubdtype(counts.dtype, np.integer) or counts.min() < 0:
                raise ValueError(
                    "CRD label_counts must be a 1-D list of class sizes >= 0, got "
                    f"{label_counts!r}."
                )
            self._set_up_sampler(None, counts)

    def set_up(self, data):
        """Sizes the memory banks and the negative sampler from `data.train_labels`.

        Args:
            data: A `TrainingData` with `train_labels`, one class per training
                sample in dataset-index order.
        """
        super().set_up(data)
        if self.sampler is None:
            labels = checked_labels(data.train_labels)
            self._set_up_sampler(labels, np.bincount(labels))

    def _set_up_sampler(self, labels, counts):
        """Creates the sampler and its label tables (`labels` None: loaded with the weights)."""
        if np.count_nonzero(counts) < 2:
            raise ValueError("CRD needs train_labels with at least two classes for its negatives.")
        self.needs = ()
        self.sampler = NegativeSampler(
            self, labels, counts, self.num_negatives, self.replacement, self.seed
        )
        self.num_samples = self.sampler.num_samples
        self.replacement = self.sampler.replacement
        # The layer holds the sampler's state, so that it is saved with it.
        self.sample_labels = self.sampler.sample_labels
        self.samples_by_class = self.sampler.samples_by_class
        self.seed_generator = self.sampler.seed_generator

    def loss_terms(self):
        return ("loss_crd",)

    def build_from_taps(self, teacher_shapes, student_shapes):
        self.require_set_up()
        t_dim = self._flat_dim(teacher_shapes[self.teacher_tap], "teacher")
        s_dim = self._flat_dim(student_shapes[self.student_tap], "student")
        self.embed_s = keras.layers.Dense(
            self.feat_dim,
            kernel_initializer=torch_kernel_initializer(),
            bias_initializer=torch_bias_initializer(s_dim),
            dtype="float32",
            name="embed_s",
        )
        self.embed_t = keras.layers.Dense(
            self.feat_dim,
            kernel_initializer=torch_kernel_initializer(),
            bias_initializer=torch_bias_initializer(t_dim),
            dtype="float32",
            name="embed_t",
        )
        self.embed_s.build((None, s_dim))
        self.embed_t.build((None, t_dim))
        self.memory = MemoryBanks(self, self.num_samples, self.feat_dim, self.momentum)
        self.memory_v1, self.memory_v2 = self.memory.memory_v1, self.memory.memory_v2
        self.z_v1, self.z_v2 = self.memory.z_v1, self.memory.z_v2
        # Constants, and banks that keep a row's old value when its new one is not finite.
        self.self_guarded_variables = (
            self.memory_v1, self.memory_v2, self.sampler.sample_labels,
            self.sampler.samples_by_class,
        )
        super().build_from_taps(teacher_shapes, student_shapes)

    @staticmethod
    def _flat_dim(shape, side):
        dims = tuple(shape)[1:]
        if not dims or any(d is None for d in dims):
            raise ValueError(
                f"CRD needs a {side} tap with a static feature shape; got {tuple(shape)}."
            )
        return int(np.prod(dims))

    def sample_contrast_indices(self, sample_indices):
        """Draws the contrast indices of a batch: the positive, then the negatives.

        Each row's negatives are drawn uniformly among the training samples
        whose class differs from `train_labels[index]`: distinct samples
        unless `replacement` (`crd_sampler.NegativeSampler`).

        Args:
            sample_indices: `(batch,)` integer dataset indices.

        Returns:
            An int32 tensor `(batch, 1 + num_negatives)`; column 0 is
            `sample_indices`.
        """
        return self.sampler(sample_indices)

    def compute_loss_terms(
        self, student_features, teacher_features, sample_indices, contrast_indices
    ):
        """Scores, losses and state update for given contrast indices.

        Scores both embeddings against the pre-update banks, sets `z_v1`/`z_v2`
        on the first call, then updates the banks' positive rows. Gradients
        flow to both features and both heads, as in the reference (`call`
        stops the teacher feature's gradient; the teacher head still learns).

        Args:
            student_features: `(batch, ...)` student feature (flattened).
            teacher_features: `(batch, ...)` teacher feature (flattened).
            sample_indices: `(batch,)` integer dataset indices (all different).
            contrast_indices: `(batch, 1 + K)` integer bank rows, column 0 the
                positive (`sample_indices`), e.g. from `sample_contrast_indices`.

        Returns:
            A dict of float32 tensors: `embed_s`, `embed_t` (`(batch,
            feat_dim)`), `p_v1`, `p_v2` (`(batch, 1 + K)` normalized scores of
            the student and teacher anchors), `z_v1`, `z_v2` (the constants
            used), `loss_student_anchor`, `loss_teacher_anchor` (unweighted).
        """
        self.require_built()
        f_s = ops.cast(student_features, "float32")
        f_t = ops.cast(teacher_features, "float32")
        f_s = ops.reshape(f_s, (ops.shape(f_s)[0], -1))
        f_t = ops.reshape(f_t, (ops.shape(f_t)[0], -1))
        v1 = l2_normalize(self.embed_s(f_s))
        v2 = l2_normalize(self.embed_t(f_t))
        idx = ops.reshape(ops.cast(sample_indices, "int32"), (-1,))
        contrast = ops.cast(contrast_indices, "int32")

        # Scores against the pre-update banks, which are constants.
        rows_v2 = self.memory.rows(self.memory_v2, contrast)
        rows_v1 = self.memory.rows(self.memory_v1, contrast)
        logits_v1 = ops.squeeze(ops.matmul(rows_v2, ops.expand_dims(v1, -1)), -1)
        logits_v2 = ops.squeeze(ops.matmul(rows_v1, ops.expand_dims(v2, -1)), -1)
        logits_v1 = logits_v1 / self.temperature
        logits_v2 = logits_v2 / self.temperature

        z_v1 = self.memory.update_z(self.z_v1, logits_v1)
        z_v2 = self.memory.update_z(self.z_v2, logits_v2)
        log_p_v1 = logits_v1 - ops.log(z_v1)
        log_p_v2 = logits_v2 - ops.log(z_v2)
        loss_s = nce_loss(log_p_v1, self.num_samples)
        loss_t = nce_loss(log_p_v2, self.num_samples)

        self.memory.update_bank(self.memory_v1, idx, v1)
        self.memory.update_bank(self.memory_v2, idx, v2)
        return {
            "embed_s": v1,
            "embed_t": v2,
            "p_v1": ops.exp(log_p_v1),
            "p_v2": ops.exp(log_p_v2),
            "z_v1": z_v1,
            "z_v2": z_v2,
            "loss_student_anchor": loss_s,
            "loss_teacher_anchor": loss_t,
        }

    def call(self, teacher_outputs, student_outputs, labels=None, sample_indices=None, step=None):
        if sample_indices is None:
            raise ValueError(
                "CRD needs each sample's dataset index: the input pipeline must yield "
                '({"image": images, "index": indices}, labels) batches, e.g. the library\'s '
                "data loaders with with_index=True."
            )
        # Negatives are drawn for the global batch (the same draw on every
        # replica and on one device); each replica keeps its anchors' rows.
        contrast = distributed.local_rows(
            self.sample_contrast_indices(distributed.all_gather(sample_indices)),
            ops.shape(sample_indices)[0],
        )
        terms = self.compute_loss_terms(
            student_outputs[self.student_tap],
            ops.stop_gradient(teacher_outputs[self.teacher_tap]),
            sample_indices,
            contrast,
        )
        loss = terms["loss_student_anchor"] + terms["loss_teacher_anchor"]
        return {"loss_crd": loss}

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "feat_dim": self.feat_dim,
                "num_negatives": self.num_negatives,
                "temperature": self.temperature,
                "momentum": self.momentum,
                "teacher_tap": self.teacher_tap,
                "student_tap": self.student_tap,
                "seed": self.seed,
                "replacement": self.replacement,
                "label_counts": (
                    None if self.sampler is None else self.sampler.class_count.tolist()
                ),
            }
        )
        return config
