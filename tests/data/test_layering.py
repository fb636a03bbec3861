"""The modules of `data` import each other one way.

Which room may import which is checked for every package in tests/test_layering.py.
"""

import ast
import pathlib

from kerasdistill import data

def test_data_modules_import_each_other_one_way_at_module_level():
    """Every `kerasdistill.data` module imports the others at its top, without a cycle."""
    folder = pathlib.Path(data.__file__).parent
    graph, late = {}, []
    for path in folder.glob("*.py"):
        tree = ast.parse(path.read_text())
        top = {node for node in tree.body if isinstance(node, ast.ImportFrom)}
        graph[path.stem] = set()
        for node in ast.walk(tree):
            module = isinstance(node, ast.ImportFrom) and node.module or ""
            if module.startswith("kerasdistill.data."):
                graph[path.stem].add(module.split(".")[2])
                if node not in top:
                    late.append(f"{path.name}:{node.lineno}")
    assert late == []
    done = set()

    def visit(module, chain):
        assert module not in chain, f"import cycle: {' -> '.join((*chain, module))}"
        if module not in done:
            for imported in graph[module]:
                visit(imported, (*chain, module))
            done.add(module)

    for module in graph:
        visit(module, ())
