"""Methods (and the ops they use) load without the model zoo."""

import pathlib
import subprocess
import sys
import textwrap

import kerasdistill
from kerasdistill import initializers, tap_names
from kerasdistill.models import initializers as zoo_initializers
from kerasdistill.models import taps

PACKAGE = pathlib.Path(kerasdistill.__file__).parent


def test_methods_import_no_zoo_module():
    # `kerasdistill/__init__` imports everything, so the package is stubbed and
    # only what `kerasdistill.methods` itself needs gets loaded.
    script = textwrap.dedent(
        f"""
        import sys, types
        package = types.ModuleType("kerasdistill")
        package.__path__ = [{str(PACKAGE)!r}]
        sys.modules["kerasdistill"] = package
        import kerasdistill.methods, kerasdistill.ops
        assert len(kerasdistill.methods.available()) >= 6
        print(sorted(m for m in sys.modules if m.startswith("kerasdistill.models")))
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip().splitlines()[-1] == "[]"


def test_tap_names_and_initializers_keep_their_old_homes():
    assert (taps.LOGITS, taps.FEAT_LAST, taps.PRE_POOL, taps.POOLED) == (
        tap_names.LOGITS,
        tap_names.FEAT_LAST,
        tap_names.PRE_POOL,
        tap_names.POOLED,
    )
    assert zoo_initializers.torch_kernel_initializer is initializers.torch_kernel_initializer
    assert zoo_initializers.torch_bias_initializer is initializers.torch_bias_initializer
