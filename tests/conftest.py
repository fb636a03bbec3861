"""Shared test fixtures and paths."""

import os
import pathlib

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import pytest  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[1]
SHARED = pathlib.Path(os.environ.get("KERASDISTILL_SHARED", REPO.parent / "shared"))
FIXTURES = SHARED / "fixtures"
CIFAR10_ARCHIVE = SHARED / "data" / "cifar10-jpeg.tar.gz"


def require(path):
    """Returns `path`, failing (not skipping) the test when it is missing."""
    if not path.exists():
        pytest.fail(f"Required shared file {path} is missing; set KERASDISTILL_SHARED.")
    return path


@pytest.fixture(autouse=True)
def _seed_and_clear():
    keras.utils.set_random_seed(0)
    yield
    keras.backend.clear_session()
