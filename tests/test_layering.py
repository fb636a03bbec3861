"""Every package of the library imports only the layers below it (read from the source)."""

import pathlib
import sys

import kerasdistill
from tests.conftest import REPO

sys.path.insert(0, str(REPO / "bazel"))
import layering_check  # noqa: E402

PACKAGE = pathlib.Path(kerasdistill.__file__).parent

# Each room -> the rooms of the library it may import (its own modules always): the table
# Bazel builds the rooms from (bazel/rooms.bzl). `methods` reads `models.initializers`, not
# the zoo.
ALLOWED, _ = layering_check.read_rooms(REPO / "bazel" / "rooms.bzl")


def _room(path):
    relative = path.relative_to(PACKAGE).with_suffix("")
    return relative.parts[0]


def _room_files():
    """Room -> its source files; the package's front door (`kerasdistill/__init__.py`) is none."""
    rooms = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        if path != PACKAGE / "__init__.py":
            rooms.setdefault(_room(path), []).append(path)
    return rooms


def test_every_room_of_the_library_is_listed():
    assert set(_room_files()) == set(ALLOWED)


def test_no_room_imports_a_room_above_it():
    # The reader Bazel's build-time check uses (bazel/layering_check.py): `from M import n`
    # counts as importing the module `M.n` or `M`, relative imports are resolved.
    offending = []
    for room, paths in _room_files().items():
        allowed = [f"kerasdistill.{a}" for a in ALLOWED[room]]
        offending += layering_check.offending_imports([str(p) for p in paths], allowed)
    assert offending == []


def test_an_upward_import_is_found(tmp_path):
    ops_file = tmp_path / "kerasdistill" / "ops" / "extra.py"
    ops_file.parent.mkdir(parents=True)
    ops_file.write_text("from kerasdistill import distiller\nfrom kerasdistill.ops import losses\n")
    assert layering_check.offending_imports([str(ops_file)], ["kerasdistill.ops"]) == [
        f"{ops_file}:1: from kerasdistill import distiller"
    ]
