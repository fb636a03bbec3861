"""The input layer does not depend on the training layer."""

import ast
import pathlib

import kerasdistill
from kerasdistill import batch_keys, data

PACKAGE = pathlib.Path(kerasdistill.__file__).parent
TRAINING_LAYER = ("kerasdistill.distiller", "kerasdistill.methods", "kerasdistill.training")


def _imported_modules(path):
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            yield node.module


def test_data_modules_import_nothing_from_training():
    files = sorted((PACKAGE / "data").glob("*.py"))
    assert len(files) > 5
    offending = [
        f"{path.name}: {module}"
        for path in files
        for module in _imported_modules(path)
        if module.startswith(TRAINING_LAYER)
    ]
    assert offending == []


def test_batch_keys_are_shared_by_pipelines_and_distiller():
    from kerasdistill import distiller

    assert (distiller.IMAGE_KEY, distiller.INDEX_KEY) == ("image", "index")
    assert data.pipeline.IMAGE_KEY is batch_keys.IMAGE_KEY
    assert not list(_imported_modules(pathlib.Path(batch_keys.__file__)))
