"""One py_library per room of kerasdistill, with the layering checked at `bazel build` time.

Python resolves imports at run time, not through Bazel's deps, so each room's deps are made to
matter by a genrule that runs bazel/layering_check.py over the room's sources: every
`kerasdistill` import must name the room itself or a room in its deps, else the build fails
with `file:line: <import>: a room outside the deps of //:kerasdistill/<room> ...`. The
room's py_library carries the genrule's stamp in `data`, so building it (or anything that
depends on it) runs the check. Loading fails if a module of the library is in no room. The
table of rooms is bazel/rooms.bzl, which tests/test_layering.py reads too.
"""

_CHECK = "//bazel:layering_check.py"

def _label(room):
    """`models.initializers` -> `:kerasdistill/models/initializers`."""
    return ":kerasdistill/" + room.replace(".", "/")

def _room_library(name, srcs, allow, deps):
    """A py_library `name` of `srcs`, whose imports are checked against the rooms in `allow`."""
    genrule_name = name + "_layering"
    native.genrule(
        name = genrule_name,
        srcs = srcs,
        outs = [name + ".layering_ok"],
        cmd = "python3 $(execpath %s) --target //:%s %s $(SRCS) && touch $@" % (
            _CHECK,
            name,
            " ".join(["--allow=" + room for room in allow]),
        ),
        tools = [_CHECK],
    )
    native.py_library(
        name = name,
        srcs = srcs,
        data = [":" + genrule_name],
        srcs_version = "PY3",
        deps = deps,
    )

def kerasdistill_rooms(name, layers, parts):
    """The library's targets: `//:<name>` (the package's __init__ and every room) and a room each.

    Args:
      name: "kerasdistill", the package directory; also the target of the whole library.
      layers: room -> the rooms it may import (`ROOMS` of bazel/rooms.bzl). A room is a
        module (`distiller` -> kerasdistill/distiller.py) or a package (`ops` -> its files);
        target `//:kerasdistill/<room>`.
      parts: part -> its modules, for a part of a package room that a higher room may import
        alone (`models.initializers`): target `//:kerasdistill/models/initializers`, with the
        package room's deps; the package room depends on it.
    """
    claimed = {}
    for part, modules in parts.items():
        room = part.split(".")[0]
        srcs = ["%s/%s/%s.py" % (name, room, m) for m in modules]
        for src in srcs:
            claimed[src] = part
        _room_library(
            name = "%s/%s" % (name, part.replace(".", "/")),
            srcs = srcs,
            allow = layers[room],
            deps = [_label(r) for r in layers[room]],
        )

    for room, allowed in layers.items():
        if "." in room:
            fail("room %s: a room is a module or package of %s; name parts in `parts`" % (room, name))
        srcs = native.glob(["%s/%s.py" % (name, room)]) or [
            src
            for src in native.glob(["%s/%s/**/*.py" % (name, room)])
            if src not in claimed
        ]
        if not srcs:
            fail("room %s: no %s/%s.py and no package %s/%s" % (room, name, room, name, room))
        for src in srcs:
            claimed[src] = room
        room_parts = [p for p in parts if p.split(".")[0] == room]
        _room_library(
            name = "%s/%s" % (name, room),
            srcs = srcs,
            allow = allowed + room_parts,
            deps = [_label(r) for r in allowed + room_parts],
        )

    front_door = "%s/__init__.py" % name
    unclaimed = [
        src
        for src in native.glob(["%s/**/*.py" % name])
        if src not in claimed and src != front_door
    ]
    if unclaimed:
        fail("%s is in no room (add its room to ROOMS in bazel/rooms.bzl)" % ", ".join(unclaimed))

    # The front door (kerasdistill/__init__.py) imports the rooms it exposes; not checked.
    native.py_library(
        name = name,
        srcs = [front_door],
        srcs_version = "PY3",
        deps = [_label(room) for room in layers] + [_label(part) for part in parts],
    )
