"""The rooms of kerasdistill and what each may import: the one layering table.

BUILD loads it (`kerasdistill_rooms`, bazel/layering.bzl: a py_library per room, whose
imports `bazel build` checks) and tests/test_layering.py reads it (`ALLOWED`). Written in the
part of Starlark that is also a Python literal, so both read the same file.

ROOMS: room -> the rooms it may import (its own modules always). A room is a module
(`distiller` -> kerasdistill/distiller.py) or a package (`ops` -> kerasdistill/ops/).
PARTS: part -> its modules, for a part of a package room that a higher room imports alone
(`methods` reads `models.initializers`, not the zoo).
"""

ROOMS = {
    "ops": [],
    "batches": [],
    "data": ["batches", "ops"],
    "taps": [],
    "models": [],
    "training": ["ops"],
    "methods": ["ops", "taps", "models.initializers"],
    "distiller": [
        "batches",
        "methods",
        "ops",
        "taps",
        "training.callbacks",
        "training.losses",
    ],
}

PARTS = {
    "models.initializers": ["initializers"],
    "training.callbacks": ["callbacks"],
    "training.losses": ["losses"],
}
