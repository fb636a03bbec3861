"""Layering checks of kerasdistill: run by the genrules of bazel/layering.bzl at build time.

Each `kerasdistill` import of the given source files names one of their own modules or a
room in the target's Bazel `deps` (or a module inside one). `from M import n` counts as
importing `M.n` (a submodule) or `M`; relative imports are resolved against the importing
file. A violation prints `file:line: <import>: a room outside the deps of //:target` and
exits 1, which fails `bazel build`. tests/test_layering.py runs the same reading over the
library, with the table of bazel/rooms.bzl (`read_rooms`).

Standard library only: Bazel runs it with the `python3` on PATH.
"""

import argparse
import ast
import pathlib
import sys

LIBRARY = "kerasdistill"


def module_name(path):
    """`kerasdistill/ops/losses.py` -> `kerasdistill.ops.losses`; an __init__ -> its package.

    The package is the last folder named `kerasdistill` (Bazel's runfiles of the workspace
    `kerasdistill` hold `.../kerasdistill/kerasdistill/ops/losses.py`).
    """
    parts = pathlib.PurePosixPath(path).with_suffix("").parts
    parts = parts[max(i for i, part in enumerate(parts[:-1]) if part == LIBRARY):]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path, source=None):
    """(line, statement, candidates) per module `path` imports; it imports one candidate."""
    source = pathlib.Path(path).read_text() if source is None else source
    package = module_name(path).split(".")
    if pathlib.PurePosixPath(path).name != "__init__.py":
        package = package[:-1]
    for node in ast.walk(ast.parse(source, filename=str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, f"import {alias.name}", (alias.name,)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # `from ..ops import x` in kerasdistill/methods/kd.py
                anchor = package[: len(package) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:
                statement = f"from {'.' * node.level}{node.module or ''} import {alias.name}"
                candidates = (base,) if alias.name == "*" else (f"{base}.{alias.name}", base)
                yield node.lineno, statement, candidates


def _within(module, allowed):
    return any(module == a or module.startswith(a + ".") for a in allowed)


def offending_imports(paths, allowed):
    """`file:line: statement` per library import of `paths` outside `allowed` and themselves."""
    allowed = set(allowed) | {module_name(p) for p in paths}
    found = []
    for path in paths:
        for line, statement, candidates in imports(path):
            if candidates[0].split(".")[0] != LIBRARY:
                continue
            if not any(_within(c, allowed) for c in candidates):
                found.append(f"{path}:{line}: {statement}")
    return found


def read_rooms(path):
    """`(ROOMS, PARTS)` of bazel/rooms.bzl: dicts of lists, as BUILD loads them."""
    found = {}
    for node in ast.parse(pathlib.Path(path).read_text()).body:
        if isinstance(node, ast.Assign):
            for target in node.targets:
                if getattr(target, "id", None) in ("ROOMS", "PARTS"):
                    found[target.id] = ast.literal_eval(node.value)
    return found["ROOMS"], found["PARTS"]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--target", required=True, help="the Bazel target, for the message")
    parser.add_argument("--allow", action="append", default=[], help="a room in deps (repeat)")
    parser.add_argument("files", nargs="+")
    args = parser.parse_args(argv)
    found = offending_imports(args.files, [f"{LIBRARY}.{a}" for a in args.allow])
    for line in found:
        print(f"{line}: a room outside the deps of {args.target} (an upward import; it may "
              f"import {', '.join(args.allow) or 'no other room'})", file=sys.stderr)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
