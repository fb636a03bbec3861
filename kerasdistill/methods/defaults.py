"""The default methods: what `Distiller(teacher, student)` distils with.

Chosen by the defaults study (`experiments/defaults_study.py`; table and
reasons in `docs/results.md`, "Defaults study"): cross-entropy (weight 1) plus
KD on standardized logits at temperature 2 (weight 1) plus MSDCRD with its own
defaults. The name `"default"` stands for these methods wherever methods are
named (`Distiller(methods="default")`, `methods="default,crd"`,
`--method=default`).
"""

DEFAULT = "default"
# (method name, constructor arguments) of each default method, in order.
DEFAULT_RECIPE = (
    ("kd", {"temperature": 2.0, "weight": 1.0, "standardize": True}),
    ("msdcrd", {}),
)


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
