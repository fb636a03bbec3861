"""PyTorch's default initialization of `nn.Linear` and `nn.Conv*` layers, in Keras.

PyTorch initializes both weights and biases of these layers uniformly in
`[-1/sqrt(fan_in), 1/sqrt(fan_in)]` (weights through `kaiming_uniform_` with
`a=sqrt(5)`). Layers that reproduce a reference PyTorch module (the zoo's
classifiers, CRD's embeddings, FitNet's regressor) use these so that training
starts from the same distribution.
"""

import math

import keras


def torch_kernel_initializer():
    """The kernel initializer: `U(-1/sqrt(fan_in), 1/sqrt(fan_in))`.

    Returns:
        A `keras.initializers.VarianceScaling` (fan-in computed by Keras from
        the kernel's shape).
    """
    return keras.initializers.VarianceScaling(scale=1.0 / 3.0, mode="fan_in", distribution="uniform")


def torch_bias_initializer(fan_in):
    """The bias initializer of a layer whose kernel has fan-in `fan_in`.

    Args:
        fan_in: Inputs per output unit (`in_features`, or `in_channels *
            kernel area` of a convolution).

    Returns:
        A `keras.initializers.RandomUniform` on `[-1/sqrt(fan_in), 1/sqrt(fan_in)]`.
    """
    bound = 1.0 / math.sqrt(fan_in)
    return keras.initializers.RandomUniform(-bound, bound)
