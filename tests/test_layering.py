"""Every package of the library imports only the layers below it (read from the source)."""

import ast
import pathlib

import kerasdistill

PACKAGE = pathlib.Path(kerasdistill.__file__).parent

# Each room -> the rooms of the library it may import (its own modules always).
# `methods` reads `models.taps` only (MSDCRD finds the classifiers it projects with).
ALLOWED = {
    "batch_keys": (),
    "tap_names": (),
    "initializers": (),
    "ops": (),
    "data": ("batch_keys",),
    "models": ("tap_names", "initializers"),
    "training": ("ops",),
    "methods": ("ops", "tap_names", "initializers", "models.taps"),
    "input_checks": ("batch_keys",),
    "distiller": (
        "batch_keys", "input_checks", "methods", "models.taps", "ops", "training.callbacks",
        "training.losses",
    ),
}


def _room(path):
    relative = path.relative_to(PACKAGE).with_suffix("")
    return relative.parts[0]


def _imports(path):
    """Modules `path` imports; `from kerasdistill import x` counts as `kerasdistill.x`."""
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module == "kerasdistill":
            yield from (f"kerasdistill.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            yield node.module


def test_every_room_of_the_library_is_listed():
    rooms = {_room(p) for p in PACKAGE.rglob("*.py") if p.name != "__init__.py" or p.parent != PACKAGE}
    assert rooms == set(ALLOWED)


def test_no_room_imports_a_room_above_it():
    offending = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.parent == PACKAGE and path.name == "__init__.py":
            continue  # The package's front door imports the rooms it exposes.
        room = _room(path)
        for module in _imports(path):
            if not module.startswith("kerasdistill"):
                continue
            target = module[len("kerasdistill."):] if module != "kerasdistill" else ""
            allowed = (room, *ALLOWED[room])
            if not any(target == a or target.startswith(a + ".") for a in allowed):
                offending.append(f"{path.relative_to(PACKAGE)} imports {module}")
    assert offending == []
