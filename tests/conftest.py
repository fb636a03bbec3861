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


# The unit tier's budget: a test of the default tier whose call takes longer fails
# (docs/testing.md). KERASDISTILL_TEST_TIME_LIMIT=0 lifts it on a loaded machine.
TIME_LIMIT_S = float(os.environ.get("KERASDISTILL_TEST_TIME_LIMIT", "3"))


def pytest_addoption(parser):
    parser.addoption(
        "--run-integration",
        action="store_true",
        help="also run the integration tier (tests marked `integration`)",
    )


def pytest_collection_modifyitems(config, items):
    """Deselects the integration tier unless --run-integration is given."""
    if config.getoption("--run-integration"):
        return
    kept = [item for item in items if "integration" not in item.keywords]
    deselected = [item for item in items if "integration" in item.keywords]
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = kept


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Fails a unit-tier test whose call ran over `TIME_LIMIT_S`."""
    outcome = yield
    report = outcome.get_result()
    over = TIME_LIMIT_S and call.when == "call" and call.duration > TIME_LIMIT_S
    if over and report.passed and "integration" not in item.keywords:
        report.outcome = "failed"
        report.longrepr = (
            f"{item.nodeid} took {call.duration:.1f} s, over the unit tier's {TIME_LIMIT_S:g} s: "
            "make it faster or mark it `integration` (docs/testing.md)."
        )


@pytest.fixture(autouse=True)
def _seed_and_clear():
    keras.utils.set_random_seed(0)
    yield
    keras.backend.clear_session(free_memory=False)
