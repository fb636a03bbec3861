"""Runs the pytest files given as arguments; the `main` of every py_test in BUILD."""

import sys

import pytest

if __name__ == "__main__":
    # No cache directory: Bazel's runfiles are read-only.
    sys.exit(pytest.main(["-p", "no:cacheprovider", "-ra", *sys.argv[1:]]))
