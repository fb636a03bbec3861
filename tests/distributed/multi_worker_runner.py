"""Runs experiments/cifar100.py and saves the weights of the model it exports, for the tests.

    TF_CONFIG=... python -m tests.distributed.multi_worker_runner WEIGHTS.npz FLAG...

The script runs unchanged (flags, runner, exit status); only two of its calls
are wrapped: `trainer.build_models`, to write the initial weights of the model
it builds to `WEIGHTS.init.npz`, and the runner's `export`, to first write the
weights of the model it receives (the trained student in distill mode) to
`WEIGHTS.npz`, both in `model.weights` order. A worker other than the chief
exports to a directory it deletes, so this is how a test sees its weights.
"""

import os
import runpy
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from tests.conftest import REPO  # noqa: E402

SCRIPT = REPO / "experiments" / "cifar100.py"


def main():
    import numpy as np

    from experiments import runner, trainer

    weights_path, *flags = sys.argv[1:]
    export, build_models = runner.export, trainer.build_models

    def build_models_then_save_weights(*args, **kwargs):
        models = build_models(*args, **kwargs)
        initial = weights_path.removesuffix(".npz") + ".init.npz"
        np.savez(initial, *[np.asarray(w) for w in models.trained.weights])
        return models

    def save_weights_then_export(model, *args, **kwargs):
        np.savez(weights_path, *[np.asarray(w) for w in model.weights])
        return export(model, *args, **kwargs)

    runner.export = save_weights_then_export
    trainer.build_models = build_models_then_save_weights
    sys.argv = [str(SCRIPT), *flags]
    runpy.run_path(str(SCRIPT), run_name="__main__")


if __name__ == "__main__":
    main()
