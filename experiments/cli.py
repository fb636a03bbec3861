"""The `main` shared by the experiment scripts (cifar100.py, imagenet.py)."""

import json

from absl import flags

from experiments import quiet, run_flags


def main(argv):
    """Runs the configuration the parsed absl flags describe; prints its metrics.

    Args:
        argv: Positional arguments left by absl (none are accepted).
    """
    del argv
    run_config = run_flags.config_from_flags(flags.FLAGS)
    quiet.quiet_libraries(run_config.verbose)
    from experiments import runner

    metrics = runner.run(run_config)
    print(json.dumps({k: v for k, v in metrics.items() if k != "config"}, indent=2))
