"""The default methods: what `Distiller(teacher, student)` distils with.

Chosen by the defaults study (`experiments/defaults_study.py`; table and
reasons in `docs/results.md`, "Defaults study"): Sun et al.'s logit
standardization recipe (KD on standardized logits at temperature 2, weight 9,
beside a cross-entropy of weight 0.1) plus MSDCRD with its own defaults. The
name `"default"` stands for these methods wherever methods are named
(`Distiller(methods="default")`, `methods="default,crd"`, `--method=default`),
and a run that names it and leaves the cross-entropy weight unset gets
`DEFAULT_CE_WEIGHT`.
"""

DEFAULT = "default"
# (method name, constructor arguments) of each default method, in order.
DEFAULT_RECIPE = (
    ("kd", {"temperature": 2.0, "weight": 9.0, "standardize": True}),
    ("msdcrd", {}),
)
# The cross-entropy weight of the recipe; 1 for runs that do not name "default".
DEFAULT_CE_WEIGHT = 0.1


def listed(identifiers):
    """`identifiers` as a list: a comma-separated string split, one identifier wrapped.

    Args:
        identifiers: `None`, a method or name, `"kd,default"`, or a list of these.

    Returns:
        A list: `[]` for `None`, the stripped non-empty names of a string.
    """
    if identifiers is None:
        return []
    if isinstance(identifiers, str):
        return [name.strip() for name in identifiers.split(",") if name.strip()]
    if isinstance(identifiers, (list, tuple)):
        return list(identifiers)
    return [identifiers]


def names_default(identifiers):
    """Whether `identifiers` (what `registry.get_list` takes) name `"default"`.

    Args:
        identifiers: As `listed` takes them.

    Returns:
        True when one of the names is `"default"`.
    """
    return any(isinstance(name, str) and name == DEFAULT for name in listed(identifiers))


def ce_weight(identifiers):
    """The cross-entropy weight of a run whose methods are `identifiers` and that sets none.

    Args:
        identifiers: As `names_default` takes them.

    Returns:
        `DEFAULT_CE_WEIGHT` when they name `"default"`, else 1.0.
    """
    return DEFAULT_CE_WEIGHT if names_default(identifiers) else 1.0


def expand(names):
    """`names` with `"default"` spelled out, each with the arguments the recipe gives it.

    Args:
        names: Method names (`["default", "crd"]`).

    Returns:
        A list of `(name, constructor arguments)`: the recipe's arguments (a new
        dict) for the methods `"default"` stands for, `{}` for the others.
    """
    return [(n, dict(kwargs)) for name in names
            for n, kwargs in (DEFAULT_RECIPE if name == DEFAULT else ((name, {}),))]
