"""Learning-rate schedules of the reference training recipes."""

import keras

REFERENCE_EPOCHS = 240
REFERENCE_MILESTONES = (150, 180, 210)
# The reference ImageNet protocol: LR / 10 at epochs 30, 60 and 90 of 100.
IMAGENET_EPOCHS = 100
IMAGENET_MILESTONES = (30, 60, 90)


def step_decay(base_lr, epochs, steps_per_epoch, milestones=REFERENCE_MILESTONES,
               reference_epochs=REFERENCE_EPOCHS, gamma=0.1):
    """The reference CIFAR schedule: LR divided by 10 at epochs 150, 180, 210 of 240.

    Milestones scale with `epochs`, so a shorter run keeps the same shape.

    Args:
        base_lr: Initial learning rate (0.05 for most students, 0.01 for
            MobileNetV2 and ShuffleNet students in the reference).
        epochs: Number of epochs actually trained.
        steps_per_epoch: Optimizer steps per epoch.
        milestones: Decay epochs for a `reference_epochs`-long run.
        reference_epochs: Length of the run `milestones` refer to.
        gamma: Multiplicative decay at each milestone.

    Returns:
        A `keras.optimizers.schedules.PiecewiseConstantDecay` over optimizer steps.
    """
    if epochs <= 0 or steps_per_epoch <= 0:
        raise ValueError(
            f"epochs and steps_per_epoch must be positive, got {epochs} and {steps_per_epoch}."
        )
    # Milestones land on the step at the same fraction of training, so short
    # runs keep distinct decays. PiecewiseConstantDecay keeps value i while
    # step <= boundary i, evaluated at the 0-based step index.
    total_steps = epochs * steps_per_epoch
    boundaries = [max(1, round(m * total_steps / reference_epochs)) - 1 for m in milestones]
    values = [base_lr * gamma**i for i in range(len(milestones) + 1)]
    return keras.optimizers.schedules.PiecewiseConstantDecay(boundaries, values)


def cosine_with_warmup(base_lr, total_steps, warmup_steps=0):
    """Linear warm-up from 0 to `base_lr`, then cosine decay to 0 at `total_steps`.

    The schedule of the ViT / MLP-Mixer CIFAR recipes (DeiT-style), built on
    `keras.optimizers.schedules.CosineDecay`.

    Args:
        base_lr: Peak learning rate, reached after the warm-up.
        total_steps: Optimizer steps of the whole run.
        warmup_steps: Steps of linear warm-up, `0 <= warmup_steps < total_steps`.

    Returns:
        A `keras.optimizers.schedules.CosineDecay` over optimizer steps.
    """
    if not 0 <= warmup_steps < total_steps:
        raise ValueError(
            f"warmup_steps must be in [0, total_steps={total_steps}), got {warmup_steps}."
        )
    if not warmup_steps:
        return keras.optimizers.schedules.CosineDecay(base_lr, total_steps)
    return keras.optimizers.schedules.CosineDecay(
        0.0, total_steps - warmup_steps, warmup_target=base_lr, warmup_steps=warmup_steps
    )
