"""SGD with PyTorch semantics: coupled L2 weight decay and PyTorch's momentum form."""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="kerasdistill")
class TorchSGD(keras.optimizers.Optimizer):
    """Stochastic gradient descent exactly as `torch.optim.SGD` computes it.

    Differs from `keras.optimizers.SGD` in two ways that matter for
    reproducing the PyTorch distillation literature:

    - weight decay is coupled: `g <- g + weight_decay * w` is added to the
      gradient before momentum (Keras's `weight_decay` is decoupled);
    - momentum accumulates gradients, `b <- m * b + g`, and the learning rate
      multiplies the buffer, `w <- w - lr * b`, so a learning-rate drop takes
      effect at once (Keras folds the learning rate into the buffer).

    Weight decay applies to every trainable variable (BatchNorm and biases
    included, as in the reference) unless excluded with
    `exclude_from_weight_decay`.

    Args:
        learning_rate: A float or a `keras.optimizers.schedules` schedule.
        momentum: Momentum factor `m >= 0`.
        nesterov: Use Nesterov momentum (`g + m * b` as the step direction).
        weight_decay: Coupled L2 coefficient (PyTorch's `weight_decay`).
        **kwargs: Passed to `keras.optimizers.Optimizer` (`name`,
            `clipnorm`, `loss_scale_factor`, ...), except `weight_decay`.
    """

    def __init__(
        self,
        learning_rate=0.05,
        momentum=0.9,
        nesterov=False,
        weight_decay=5e-4,
        name="torch_sgd",
        **kwargs,
    ):
        super().__init__(learning_rate=learning_rate, name=name, **kwargs)
        if momentum < 0:
            raise ValueError(f"momentum must be >= 0, got {momentum}.")
        if weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {weight_decay}.")
        self.momentum = float(momentum)
        self.nesterov = bool(nesterov)
        self.coupled_weight_decay = float(weight_decay)

    def build(self, variables):
        if self.built:
            return
        super().build(variables)
        self.momentums = (
            self.add_optimizer_variables(variables, "momentum") if self.momentum else []
        )

    def update_step(self, gradient, variable, learning_rate):
        learning_rate = ops.cast(learning_rate, variable.dtype)
        gradient = ops.cast(gradient, variable.dtype)
        if self.coupled_weight_decay and self._use_weight_decay(variable):
            gradient = ops.add(gradient, ops.multiply(self.coupled_weight_decay, variable))
        if self.momentum:
            buffer = self.momentums[self._get_variable_index(variable)]
            self.assign(buffer, ops.add(ops.multiply(self.momentum, buffer), gradient))
            if self.nesterov:
                gradient = ops.add(gradient, ops.multiply(self.momentum, buffer))
            else:
                gradient = buffer
        self.assign_sub(variable, ops.multiply(learning_rate, gradient))

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "momentum": self.momentum,
                "nesterov": self.nesterov,
                "weight_decay": self.coupled_weight_decay,
            }
        )
        return config
