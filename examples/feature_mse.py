"""A distillation method of your own: the mean squared error between two feature maps.

kerasdistill's `FitNet` passes the student's map through a trained regressor
before the MSE (as RepDistiller does); Keras's `keras.distillation.
FeatureDistillation("mse")` has no regressor. `FeatureMSE` below is the
latter as a `DistillationMethod`, for maps of equal shape: the loss Keras's
Distiller reports, and the pairing `docs/keras_distillation.md` and
`benchmarks/step_time.py` (entry `kd+feature`) use.

    python examples/feature_mse.py     # one batch: FeatureMSE and Keras's loss, side by side
"""

import keras
import numpy as np
from keras import ops

import kerasdistill
from kerasdistill import methods, models


class FeatureMSE(methods.DistillationMethod):
    """Mean squared error between the teacher's and the student's map at one tap.

    Args:
        tap: Layer name read from both models (their maps must have one shape).
        weight: Weight of the term in the total loss.
        **kwargs: Passed to `DistillationMethod` (`name`).
    """

    def __init__(self, tap, weight=1.0, **kwargs):
        super().__init__(teacher_taps=(tap,), student_taps=(tap,), weight=weight, **kwargs)
        self.tap = tap

    def loss_terms(self):
        """Returns `("loss_feature_mse",)`."""
        return ("loss_feature_mse",)

    def call(self, teacher_outputs, student_outputs, labels=None, sample_indices=None, step=None):
        """Returns `{"loss_feature_mse": mean((s - t)^2)}` over all elements (before `weight`)."""
        difference = student_outputs[self.tap] - ops.stop_gradient(teacher_outputs[self.tap])
        return {"loss_feature_mse": ops.mean(ops.square(difference))}

    def get_config(self):
        """The constructor arguments."""
        return {**super().get_config(), "tap": self.tap}


def feature_maps(model, tap, images):
    """The output of `model`'s layer `tap` on `images`, in inference mode."""
    return keras.Model(model.inputs, model.get_layer(tap).output)(images, training=False)


def main():
    keras.utils.set_random_seed(0)
    teacher = models.get("resnet32x4", num_classes=100)
    student = models.get("resnet8x4", num_classes=100)
    images = np.random.default_rng(0).standard_normal((8, 32, 32, 3)).astype("float32")
    maps = {name: feature_maps(model, "feat_2", images)
            for name, model in (("teacher", teacher), ("student", student))}
    ours = FeatureMSE("feat_2")({"feat_2": maps["teacher"]}, {"feat_2": maps["student"]})
    keras_loss = keras.distillation.FeatureDistillation("mse", "feat_2", "feat_2")
    theirs = keras_loss.compute_loss(maps["teacher"], maps["student"])
    print(f"FeatureMSE {float(ours['loss_feature_mse']):.6f}, "
          f"keras.distillation.FeatureDistillation('mse') {float(theirs):.6f}")
    # Train with it as with any method:
    distiller = kerasdistill.Distiller(teacher, student, [methods.KD(), FeatureMSE("feat_2", 100.0)])
    print(f"Distiller with methods {[type(m).__name__ for m in distiller.methods]}")


if __name__ == "__main__":
    main()
