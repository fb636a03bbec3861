"""Keeps TensorFlow's and absl's own log lines out of a script's output unless `--verbose=3`.

A run prints its progress (Keras's `fit`), its warnings (`warning: ...`) and its results;
TensorFlow's start-up lines (`I0000 ... port.cc] oneDNN custom operations are on`,
`cuInit` failures on a machine without a GPU) and the INFO lines of a SavedModel export
are noise there. `errors.run_app` calls `quiet_libraries` after the flags are parsed and
before anything imports TensorFlow, so that

- `TF_CPP_MIN_LOG_LEVEL` is set (unless the environment already sets it) before the C++
  runtime loads;
- the lines TensorFlow's C++ runtime writes before its logging is initialized (which
  `TF_CPP_MIN_LOG_LEVEL` does not reach) are dropped: stderr is closed at the file
  descriptor level while TensorFlow is imported and its devices are listed;
- the Python loggers of TensorFlow and absl only pass errors.

`--verbose=3` (or `KERASDISTILL_VERBOSE=1`) leaves all of it as TensorFlow makes it.
"""

import contextlib
import logging
import os
import sys

# Hides TensorFlow's C++ INFO and WARNING lines; errors still show.
TF_CPP_MIN_LOG_LEVEL = "2"
VERBOSE_LEVEL = 3


@contextlib.contextmanager
def _stderr_dropped():
    """Sends file descriptor 2 to /dev/null inside the block (C++ writes included)."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)


def quiet_libraries(verbose=0):
    """Silences TensorFlow's and absl's logging unless `verbose` is `VERBOSE_LEVEL` or more.

    Call before TensorFlow is imported; afterwards it still quiets the Python
    loggers, but not the C++ start-up lines already written.

    Args:
        verbose: The script's `--verbose` value.
    """
    from experiments.errors import VERBOSE_ENV

    if verbose >= VERBOSE_LEVEL or os.environ.get(VERBOSE_ENV, "") not in ("", "0"):
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", TF_CPP_MIN_LOG_LEVEL)
    from absl import logging as absl_logging

    absl_logging.set_verbosity(absl_logging.ERROR)
    if "tensorflow" not in sys.modules:
        with _stderr_dropped():
            import tensorflow as tf

            tf.config.list_physical_devices()  # Loads the device plugins (cuInit) silently.
    import tensorflow as tf

    tf.get_logger().setLevel(logging.ERROR)
