"""Runs the pytest files given as arguments; the `main` of every py_test in BUILD."""

import sys

import pytest


class _Deselected:
    """Counts the tests a `-m` selection left out."""

    count = 0

    def pytest_deselected(self, items):
        self.count += len(items)


if __name__ == "__main__":
    deselected = _Deselected()
    # No cache directory: Bazel's runfiles are read-only.
    status = pytest.main(["-p", "no:cacheprovider", "-ra", *sys.argv[1:]], plugins=[deselected])
    # A file whose tests are all in the integration tier has none left under
    # the unit tier (tests/conftest.py deselects them); that passes. A file without tests still fails.
    if status == pytest.ExitCode.NO_TESTS_COLLECTED and deselected.count:
        status = pytest.ExitCode.OK
    sys.exit(status)
