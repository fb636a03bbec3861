"""The import reading of layering_check.py (`bazel test //bazel:layering_check_test`)."""

import layering_check


def _offending(path, source, allowed, tmp_path, monkeypatch):
    """The offending statements of `source` at `path`, relative as in a genrule's $(SRCS)."""
    monkeypatch.chdir(tmp_path)
    file = tmp_path / path
    file.parent.mkdir(parents=True, exist_ok=True)
    file.write_text(source)
    found = layering_check.offending_imports([path], [f"kerasdistill.{a}" for a in allowed])
    return [line.split(": ", 1)[1] for line in found]


def test_module_names():
    assert layering_check.module_name("kerasdistill/ops/losses.py") == "kerasdistill.ops.losses"
    assert layering_check.module_name("kerasdistill/ops/__init__.py") == "kerasdistill.ops"
    runfiles = "/x/execroot/kerasdistill/bin/t.runfiles/kerasdistill/kerasdistill/ops/losses.py"
    assert layering_check.module_name(runfiles) == "kerasdistill.ops.losses"


def test_own_room_deps_and_other_libraries_pass(tmp_path, monkeypatch):
    source = (
        "import keras\nfrom keras import ops\nimport kerasdistill.ops.losses\n"
        "from kerasdistill import taps\nfrom kerasdistill.models.initializers import x\n"
        "from kerasdistill.models import initializers\nfrom . import kd\nfrom .base import Method\n"
    )
    allowed = ["methods", "ops", "taps", "models.initializers"]  # "methods": the room's __init__.py
    assert _offending("kerasdistill/methods/x.py", source, allowed, tmp_path, monkeypatch) == []


def test_imports_outside_the_deps_fail(tmp_path, monkeypatch):
    source = (
        "import kerasdistill\nimport kerasdistill.distiller\n"
        "from kerasdistill import training\nfrom kerasdistill.models import registry\n"
        "from ..models.layers import x\nfrom .. import data\n"
    )
    found = _offending(
        "kerasdistill/methods/x.py", source, ["models.initializers"], tmp_path, monkeypatch
    )
    assert found == [
        "import kerasdistill",
        "import kerasdistill.distiller",
        "from kerasdistill import training",
        "from kerasdistill.models import registry",
        "from ..models.layers import x",
        "from .. import data",
    ]


def test_rooms_are_read_as_bazel_loads_them(tmp_path):
    rooms = tmp_path / "rooms.bzl"
    rooms.write_text(
        '"""Doc."""\n\nROOMS = {\n    "ops": [],\n    "training": ["ops"],\n}\n\n'
        'PARTS = {"training.losses": ["losses"]}\n'
    )
    assert layering_check.read_rooms(rooms) == (
        {"ops": [], "training": ["ops"]}, {"training.losses": ["losses"]}
    )
