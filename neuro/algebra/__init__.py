"""Clifford (geometric) algebra on torch tensors: products, grades, rotors, equivariant layers.

Self-contained: imports only torch (and the standard library), nothing else from ``neuro``.
"""

from neuro.algebra.clifford import Algebra
from neuro.algebra.layers import GradeLinear

__all__ = ["Algebra", "GradeLinear"]
