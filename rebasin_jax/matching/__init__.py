"""The paper's three ways to find a permutation: weight, activation and STE matching."""

from rebasin_jax.matching.assignment import solve_assignment
from rebasin_jax.matching.weight import WeightMatchingInfo, weight_matching, weight_matching_objective

__all__ = ["weight_matching", "WeightMatchingInfo", "weight_matching_objective", "solve_assignment"]
