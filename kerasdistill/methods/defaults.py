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


def default_names():
    """The registered names of the default methods, in order."""
    return [name for name, _ in DEFAULT_RECIPE]


def default_kwargs(name):
    """The constructor arguments the default recipe gives method `name` (a new dict)."""
    return dict(dict(DEFAULT_RECIPE).get(name, {}))
