"""The paper's three ways to find a permutation: weight, activation and STE matching.

All three return the same permutation type (``{name: int32 array}``), accept
``fixed``, and check that both parameter trees fit the spec.
"""

from rebasin_jax.matching.activation import (
    ActivationMatchingInfo,
    ActivationStats,
    activation_matching,
)
from rebasin_jax.matching.assignment import solve_assignment
from rebasin_jax.matching.orthogonal import OrthogonalAlignment, align, apply_orthogonal, orthogonal_weight_matching
from rebasin_jax.matching.ste import SteMatchingInfo, ste_matching
from rebasin_jax.matching.weight import (
    WeightMatchingInfo,
    weight_matching,
    weight_matching_objective,
)

__all__ = [
    "weight_matching",
    "WeightMatchingInfo",
    "weight_matching_objective",
    "activation_matching",
    "ActivationMatchingInfo",
    "ActivationStats",
    "ste_matching",
    "SteMatchingInfo",
    "orthogonal_weight_matching",
    "OrthogonalAlignment",
    "align",
    "apply_orthogonal",
    "solve_assignment",
]
