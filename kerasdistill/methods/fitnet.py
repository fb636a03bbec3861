"""FitNets hint learning (Romero et al., ICLR 2015), as RepDistiller's `fitnet`.

A trainable regressor maps the student's hint feature map to the shape of the
teacher's, and the loss is the mean squared error between the regressed student
map and the teacher map (RepDistiller's `HintLoss`, `nn.MSELoss`).
"""

import keras
from keras import ops

from kerasdistill.methods.base import DistillationMethod
from kerasdistill.methods.registry import register
from kerasdistill.models.initializers import torch_bias_initializer, torch_kernel_initializer


def _conv_regressor_layers(student_shape, teacher_shape, name):
    """The conv of RepDistiller's `ConvReg` for NHWC shapes `(batch, H, W, C)`.

    - Student twice the teacher's size: 3x3 conv, stride 2, padding 1.
    - Student half the teacher's size: 4x4 transposed conv, stride 2, padding 1.
    - Student at least the teacher's size: valid conv with kernel
      `(1 + Hs - Ht, 1 + Ws - Wt)` (1x1 for equal sizes).

    Returns:
        A list of layers mapping the student map to `(Ht, Wt, Ct)`.
    """
    _, s_h, s_w, s_c = student_shape
    _, t_h, t_w, t_c = teacher_shape
    if s_h == 2 * t_h and s_w == 2 * t_w:
        kernel, bias = torch_kernel_initializer(), torch_bias_initializer(9 * s_c)
        return [
            # PyTorch pads 1 on every side; Keras "same" would pad only bottom/right.
            keras.layers.ZeroPadding2D(1, dtype="float32", name=f"{name}_pad"),
            keras.layers.Conv2D(
                t_c,
                3,
                strides=2,
                padding="valid",
                kernel_initializer=kernel,
                bias_initializer=bias,
                dtype="float32",
                name=f"{name}_conv",
            ),
        ]
    if 2 * s_h == t_h and 2 * s_w == t_w:
        # Output 2H: "same" crops one row/column on each side, as padding=1 does.
        # PyTorch's fan-in of a transposed conv weight [in, out, 4, 4] is out * 16.
        kernel, bias = torch_kernel_initializer(), torch_bias_initializer(16 * t_c)
        return [
            keras.layers.Conv2DTranspose(
                t_c,
                4,
                strides=2,
                padding="same",
                kernel_initializer=kernel,
                bias_initializer=bias,
                dtype="float32",
                name=f"{name}_conv",
            )
        ]
    if s_h >= t_h and s_w >= t_w:
        size = (1 + s_h - t_h, 1 + s_w - t_w)
        kernel, bias = torch_kernel_initializer(), torch_bias_initializer(size[0] * size[1] * s_c)
        return [
            keras.layers.Conv2D(
                t_c,
                size,
                padding="valid",
                kernel_initializer=kernel,
                bias_initializer=bias,
                dtype="float32",
                name=f"{name}_conv",
            )
        ]
    raise ValueError(
        f"FitNet cannot regress a student map of spatial size {(s_h, s_w)} to the "
        f"teacher's {(t_h, t_w)}: the student map must be at least as large, or exactly "
        "half the size (as RepDistiller's ConvReg)."
    )


@register("fitnet")
@keras.saving.register_keras_serializable(package="kerasdistill")
class FitNet(DistillationMethod):
    """Hint learning: MSE between a regressed student map and the teacher map.

    The regressor is RepDistiller's `ConvReg`: a conv mapping the student map
    to the teacher's shape (see `_conv_regressor_layers`), then BatchNorm
    (`epsilon = 1e-5`) and ReLU. It is trained with the student; its
    BatchNorm runs in training mode when the method is called (the Distiller
    calls methods only in training steps); pass `training=False` to `__call__`
    to use the moving statistics instead.

    Reference defaults (RepDistiller): hint on the feature of index 2 of both
    networks (`"feat_2"`), weight 100 (its `beta`), cross-entropy weight 1.

    Args:
        teacher_tap: Tap of the teacher hint, an NHWC map.
        student_tap: Tap of the student guided layer, an NHWC map.
        weight: Weight of the term in the total loss (see `DistillationMethod`).
        use_relu: Whether the regressor ends with a ReLU (as `ConvReg`).
        **kwargs: Passed to `DistillationMethod`'s Layer base (`name`, `dtype`;
            `dtype` defaults to float32 so the loss is computed in float32).
    """

    needs_tap_shapes = True

    def __init__(
        self, teacher_tap="feat_2", student_tap="feat_2", weight=100.0, use_relu=True, **kwargs
    ):
        super().__init__(
            teacher_taps=(teacher_tap,), student_taps=(student_tap,), weight=weight, **kwargs
        )
        self.teacher_tap = teacher_tap
        self.student_tap = student_tap
        self.use_relu = bool(use_relu)

    def loss_terms(self):
        return ("loss_fitnet",)

    def build_from_taps(self, teacher_shapes, student_shapes):
        t_shape = tuple(teacher_shapes[self.teacher_tap])
        s_shape = tuple(student_shapes[self.student_tap])
        for side, shape in (("teacher", t_shape), ("student", s_shape)):
            if len(shape) != 4 or any(d is None for d in shape[1:]):
                raise ValueError(
                    f"FitNet needs a {side} feature map of static shape (batch, H, W, C); tap "
                    f"{self.teacher_tap if side == 'teacher' else self.student_tap!r} has "
                    f"shape {shape}."
                )
        layers = _conv_regressor_layers(s_shape, t_shape, "regressor")
        layers.append(
            keras.layers.BatchNormalization(
                epsilon=1e-5, momentum=0.9, dtype="float32", name="regressor_bn"
            )
        )
        if self.use_relu:
            layers.append(keras.layers.ReLU(dtype="float32", name="regressor_relu"))
        self.regressor = keras.Sequential(layers, name="regressor")
        self.regressor.build((None,) + s_shape[1:])
        out_shape = self.regressor.compute_output_shape((None,) + s_shape[1:])
        if tuple(out_shape[1:]) != t_shape[1:]:
            raise ValueError(
                f"FitNet regressor maps {s_shape[1:]} to {tuple(out_shape[1:])}, not the "
                f"teacher's {t_shape[1:]}."
            )
        self._teacher_shape = t_shape[1:]
        super().build_from_taps(teacher_shapes, student_shapes)

    def call(
        self,
        teacher_outputs,
        student_outputs,
        labels=None,
        sample_indices=None,
        step=None,
        training=True,
    ):
        f_t = ops.stop_gradient(ops.cast(teacher_outputs[self.teacher_tap], "float32"))
        f_s = ops.cast(student_outputs[self.student_tap], "float32")
        if tuple(f_t.shape[1:]) != self._teacher_shape:
            raise ValueError(
                f"FitNet was built for a teacher map of shape {self._teacher_shape}, got "
                f"{tuple(f_t.shape[1:])}."
            )
        regressed = ops.cast(self.regressor(f_s, training=training), "float32")
        loss = ops.mean(ops.square(regressed - f_t))
        return {"loss_fitnet": loss}

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "teacher_tap": self.teacher_tap,
                "student_tap": self.student_tap,
                "use_relu": self.use_relu,
            }
        )
        return config
