"""Flags defined on a private `FlagValues`, so tests leave absl's global flags alone."""

from absl import flags


class Definer:
    """Stands for the `absl.flags` module in `run_flags.define_flags(flags_module)`.

    Args:
        values: The `flags.FlagValues` the flags are registered on.
    """

    def __init__(self, values):
        self._values = values

    def __getattr__(self, name):
        function = getattr(flags, name)
        return lambda *args, **kwargs: function(*args, flag_values=self._values, **kwargs)
