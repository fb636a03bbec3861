"""Distillation methods, one module each, behind one registry."""

from kerasdistill.methods.at import AT
from kerasdistill.methods.base import DistillationMethod, TrainingData
from kerasdistill.methods.crd import CRD
from kerasdistill.methods.dkd import DKD
from kerasdistill.methods.fitnet import FitNet
from kerasdistill.methods.kd import KD
from kerasdistill.methods.msdcrd import MSDCRD
from kerasdistill.methods.msdcrd_variants import MSDCRDVariants
from kerasdistill.methods.registry import available, get, method_class, register

__all__ = [
    "AT",
    "CRD",
    "DKD",
    "DistillationMethod",
    "FitNet",
    "KD",
    "MSDCRD",
    "MSDCRDVariants",
    "TrainingData",
    "available",
    "get",
    "method_class",
    "register",
]
