"""Public names the third plan moved or removed fail in one line naming what replaces them."""

import importlib

import pytest

from kerasdistill import methods


@pytest.mark.parametrize(
    "module, name, new",
    [
        ("kerasdistill", "tap_names", "kerasdistill.taps"),
        ("kerasdistill", "batch_keys", "kerasdistill.batches"),
        ("kerasdistill", "input_checks", "kerasdistill.batches"),
        ("kerasdistill", "initializers", "kerasdistill.models.initializers"),
        ("kerasdistill.models", "tap_model", "kerasdistill.taps"),
        ("kerasdistill.models", "taps", "kerasdistill.taps"),
        ("kerasdistill.ops", "same_group_mask", "kerasdistill.methods.msdcrd_variants_ops"),
        ("kerasdistill.training.callbacks", "ValidationLogFilter", "evaluation logs only"),
    ],
)
def test_a_moved_name_is_an_import_error_naming_its_new_home(module, name, new):
    with pytest.raises(ImportError, match=new.replace(".", r"\.")):
        exec(f"from {module} import {name}", {})
    assert importlib.import_module(module)  # The module itself still imports.


def test_removed_method_entry_points_name_their_replacements():
    with pytest.raises(AttributeError, match=r"use MSDCRD\(stages=K\)"):
        methods.MSDCRD.every_stage(3)
    with pytest.raises(AttributeError, match=r"DKD.from_data is gone: build DKD\(...\) and pass "
                                             r"Distiller\(..., training_data="):
        methods.DKD.from_data(None, warmup_epochs=1)
    with pytest.raises(TypeError, match="methods.get no longer takes data="):
        methods.get("crd", data=methods.TrainingData())
    with pytest.raises(ValueError, match="projection='classifier' moved to MSDCRDVariants"):
        methods.MSDCRD(projection="classifier")
    with pytest.raises(TypeError, match="bind_models is no longer called"):
        type("Bound", (methods.KD,), {"bind_models": lambda self, teacher, student: None})
