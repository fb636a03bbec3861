"""The absl flags of the experiment scripts, one per `RunConfig` field, and the README table.

Each flag is defined from its field: the name, the default (a script may give
its own), the help and the accepted values (`choices`: an enum flag) are the
field's (`config._field`). `flag_table` writes the README's flag table from the
same fields; a test checks that the README holds it.
"""

import dataclasses
import json

from experiments import config as config_lib
from experiments.errors import UsageError

_DEFINE = {str: "DEFINE_string", int: "DEFINE_integer", float: "DEFINE_float",
           bool: "DEFINE_bool", dict: "DEFINE_string"}


def define_flags(flags_module, defaults=None):
    """Defines one absl flag per `RunConfig` field.

    Args:
        flags_module: `absl.flags` (or an object with its `DEFINE_*` functions).
        defaults: `{field: value}` replacing the fields' defaults (a script's recipe).
    """
    defaults = {**dataclasses.asdict(config_lib.RunConfig()), **(defaults or {})}
    for field in dataclasses.fields(config_lib.RunConfig):
        default, help_text = defaults[field.name], field.metadata["help"]
        choices = field.metadata.get("choices")
        if field.type is dict:
            default = json.dumps(default)
        if choices and not field.metadata.get("comma_separated"):
            flags_module.DEFINE_enum(field.name, default, choices, help_text)
        else:
            if choices:
                help_text = f"{help_text} Any of: {', '.join(choices)}."
            getattr(flags_module, _DEFINE[field.type])(field.name, default, help_text)


def config_from_flags(flag_values):
    """Builds a `RunConfig` from the parsed flags of the same names (`--method_kwargs` as JSON).

    Raises:
        UsageError: When `--method_kwargs` is not valid JSON.
    """
    kwargs = {}
    for field in dataclasses.fields(config_lib.RunConfig):
        value = flag_values[field.name].value
        if field.type is dict:
            try:
                value = json.loads(value) if value else {}
            except json.JSONDecodeError as error:
                raise UsageError(
                    f"--{field.name} is not valid JSON ({error.msg} at character {error.pos}): "
                    f'{value!r}. Expected e.g. {{"kd": {{"temperature": 4.0}}}}.'
                ) from error
        kwargs[field.name] = value
    return config_lib.RunConfig(**kwargs)


def flag_table():
    """The README's markdown table of the flags: name, meaning, accepted values, default."""
    rows = ["| flag | meaning | accepted | default |", "|---|---|---|---|"]
    for field in dataclasses.fields(config_lib.RunConfig):
        default = field.default
        if default is dataclasses.MISSING:
            default = field.default_factory()
        if field.type is dict:
            default = json.dumps(default)
        accepted = ", ".join(f"`{c}`" for c in field.metadata.get("choices") or ())
        if field.metadata.get("comma_separated"):
            accepted = f"comma-separated: {accepted}"
        help_text = field.metadata["help"].replace("|", "\\|")
        shown = f"`{default}`" if default != "" else "(empty)"
        rows.append(f"| `--{field.name}` | {help_text} | {accepted} | {shown} |")
    return "\n".join(rows) + "\n"


def write_readme_table(readme):
    """Replaces the flag table of `readme`'s "Experiment scripts" section; True if it changed."""
    text = readme.read_text()
    head, _, rest = text.partition("## Experiment scripts")
    start = rest.index("| flag |")
    end = rest.index("\n\n", start) + 1
    new = head + "## Experiment scripts" + rest[:start] + flag_table() + rest[end:]
    readme.write_text(new)
    return new != text


if __name__ == "__main__":
    import pathlib

    changed = write_readme_table(pathlib.Path(__file__).resolve().parents[1] / "README.md")
    print("README.md flag table " + ("rewritten" if changed else "up to date"))
