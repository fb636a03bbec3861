"""Build-time layering checks of kerasdistill, run by the genrules of bazel/layering.bzl.

`imports`: each `kerasdistill` import of the given source files names one of their own
modules or a room in the target's Bazel `deps` (or a module inside one). `from M import n`
counts as importing `M.n` (a submodule) or `M`; relative imports are resolved against the
importing file. A violation prints `file:line: <import>: a room outside the deps of //:target`
and exits 1, which fails `bazel build`.

`table`: the room graph declared in BUILD equals `ALLOWED` in tests/test_layering.py.

Standard library only: Bazel runs it with the `python3` on PATH.
"""

import argparse
import ast
import pathlib
import sys

LIBRARY = "kerasdistill"


def module_name(path):
    """`kerasdistill/ops/losses.py` -> `kerasdistill.ops.losses`; an __init__ -> its package."""
    parts = pathlib.PurePosixPath(path).with_suffix("").parts
    parts = parts[parts.index(LIBRARY):]
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


def _table(path):
    """The `ALLOWED` dict literal of tests/test_layering.py."""
    for node in ast.parse(pathlib.Path(path).read_text()).body:
        names = [getattr(t, "id", "") for t in getattr(node, "targets", ())]
        if isinstance(node, ast.Assign) and "ALLOWED" in names:
            return {room: set(rooms) for room, rooms in ast.literal_eval(node.value).items()}
    raise SystemExit(f"{path}: no ALLOWED table")


def _show(rooms):
    return "no such room" if rooms is None else f"may import {sorted(rooms)}"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    check = commands.add_parser("imports", help="check the library imports of source files")
    check.add_argument("--target", required=True, help="the Bazel target, for the message")
    check.add_argument("--allow", action="append", default=[], help="a room in deps (repeat)")
    check.add_argument("files", nargs="+")
    table = commands.add_parser("table", help="compare BUILD's room graph with the layering test")
    table.add_argument("--room", action="append", default=[], help="room=dep,dep (repeat)")
    table.add_argument("test_file")
    args = parser.parse_args(argv)

    if args.command == "imports":
        found = offending_imports(args.files, [f"{LIBRARY}.{a}" for a in args.allow])
        for line in found:
            print(f"{line}: a room outside the deps of {args.target} (an upward import; it may "
                  f"import {', '.join(args.allow) or 'no other room'})", file=sys.stderr)
        return 1 if found else 0

    declared = {}
    for item in args.room:
        room, _, deps = item.partition("=")
        declared[room] = {d for d in deps.split(",") if d}
    expected = _table(args.test_file)
    for room in sorted(declared.keys() | expected.keys()):
        if declared.get(room) != expected.get(room):
            print(f"room {room}: BUILD: {_show(declared.get(room))}, "
                  f"{args.test_file} ALLOWED: {_show(expected.get(room))}", file=sys.stderr)
    return 0 if declared == expected else 1


if __name__ == "__main__":
    sys.exit(main())
