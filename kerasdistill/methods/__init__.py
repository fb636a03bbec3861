"""Distillation methods, one module each, behind one registry."""

from kerasdistill.methods.base import DistillationMethod
from kerasdistill.methods.kd import KD
from kerasdistill.methods.registry import available, get, register

__all__ = ["DistillationMethod", "KD", "available", "get", "register"]
