"""The batch keys are one definition, shared by the input pipelines and the Distiller.

Which room may import which is checked for every package in tests/test_layering.py.
"""

import ast
import pathlib

from kerasdistill import batch_keys, data


def test_batch_keys_are_shared_by_pipelines_and_distiller():
    from kerasdistill import distiller

    assert (distiller.IMAGE_KEY, distiller.INDEX_KEY) == ("image", "index")
    assert data.pipeline.IMAGE_KEY is batch_keys.IMAGE_KEY
    imports = [
        node for node in ast.walk(ast.parse(pathlib.Path(batch_keys.__file__).read_text()))
        if isinstance(node, (ast.Import, ast.ImportFrom))
    ]
    assert imports == []
