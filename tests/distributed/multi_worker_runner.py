"""Runs experiments/cifar100.py and saves the weights of the model it exports, for the tests.

    TF_CONFIG=... python -m tests.distributed.multi_worker_runner WEIGHTS.npz FLAG...

The script runs unchanged (flags, runner, exit status); only the runner's
`export` is wrapped to first write the weights of the model it receives (the
trained student in distill mode) to `WEIGHTS.npz`, in `model.weights` order.
A worker other than the chief exports to a directory it deletes, so this is
how a test sees its final weights.
"""

import os
import runpy
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from tests.conftest import REPO  # noqa: E402

SCRIPT = REPO / "experiments" / "cifar100.py"


def main():
    import numpy as np

    from experiments import runner

    weights_path, *flags = sys.argv[1:]
    export = runner.export

    def save_weights_then_export(model, *args, **kwargs):
        np.savez(weights_path, *[np.asarray(w) for w in model.weights])
        return export(model, *args, **kwargs)

    runner.export = save_weights_then_export
    sys.argv = [str(SCRIPT), *flags]
    runpy.run_path(str(SCRIPT), run_name="__main__")


if __name__ == "__main__":
    main()
