"""Orthogonal (Procrustes) alignment of linear feature spaces, combined with permutations.

Hidden units behind a nonlinearity can only be permuted, but a feature space
that feeds a linear layer directly -- the token embedding of the modular
addition model, read by the first Dense layer -- has every invertible
``d x d`` map as a symmetry: ``E -> E Q``, ``W -> Q^{-1} W``. For orthogonal
``Q`` (so ``Q^{-1} = Q^T``) the weight-matching objective is linear in ``Q``,
``tr(C Q)`` with ``C`` the same cost matrix weight matching builds, and its
maximiser is the orthogonal Procrustes solution ``Q = V U^T`` for ``C = U S V^T``.

:func:`orthogonal_weight_matching` alternates that step for the named spaces
with weight matching of the remaining permutations; neither step lowers the
objective.
"""

from __future__ import annotations

from typing import Mapping, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from rebasin_jax.matching.weight import (
    cost_matrix,
    weight_matching,
    weight_matching_objective,
)
from rebasin_jax.spec import (
    PermutationSpec,
    SpecError,
    apply_permutation,
    flatten_params,
    perm_sizes,
    starting_permutation,
    unflatten_like,
)
from rebasin_jax.types import Params, PRNGKey

__all__ = ["procrustes", "apply_orthogonal", "orthogonal_weight_matching", "OrthogonalAlignment", "align"]


def procrustes(cost) -> np.ndarray:
    """Orthogonal ``Q`` maximising ``tr(cost @ Q)``.

    With ``cost[i, j] = <A's feature i, B's feature j>``, ``B Q`` (along the
    feature axis) is the rotation of B closest to A.
    """
    u, _, vt = np.linalg.svd(np.asarray(cost, np.float64))
    return vt.T @ u.T


def apply_orthogonal(spec: PermutationSpec, rotations: Mapping[str, np.ndarray], params: Params) -> Params:
    """Maps every axis that permutation ``name`` acts on by ``x -> x @ Q`` (Q = ``rotations[name]``).

    For the embedding ``E (p, d)`` this is ``E Q``; for the next layer's kernel
    ``W (d, h)`` (axis 0) it is ``Q^T W``, so ``E W`` -- and the model's function
    -- is unchanged. Only valid where the named space feeds linear maps only.
    """
    flat = dict(flatten_params(params))
    for name, q in rotations.items():
        if name not in spec.perm_to_axes:
            raise SpecError(f"rotation for unknown permutation {name!r}; the spec has {list(spec.names)}")
        q = jnp.asarray(q, jnp.float32)
        for path, axis in spec.perm_to_axes[name]:
            leaf = jnp.moveaxis(flat[path], axis, -1)
            if leaf.shape[-1] != q.shape[0]:
                raise SpecError(f"rotation {name!r} is {q.shape} but {path!r} axis {axis} has size {leaf.shape[-1]}")
            flat[path] = jnp.moveaxis(jnp.matmul(leaf, q, precision=jax.lax.Precision.HIGHEST), -1, axis)
    return unflatten_like(params, flat)


class OrthogonalAlignment(NamedTuple):
    """``perm`` (identity for the orthogonal names), ``rotations`` {name: (d, d)},
    and the objective after each alternation (``objective_history``)."""

    perm: dict
    rotations: dict
    objective_history: tuple


def align(spec: PermutationSpec, alignment: OrthogonalAlignment, params: Params) -> Params:
    """Applies both parts of an :class:`OrthogonalAlignment` to B."""
    return apply_permutation(spec, alignment.perm, apply_orthogonal(spec, alignment.rotations, params))


def orthogonal_weight_matching(
    key: PRNGKey,
    spec: PermutationSpec,
    params_a: Params,
    params_b: Params,
    *,
    orthogonal: Sequence[str],
    fixed: Sequence[str] = (),
    init_perm=None,
    max_iter: int = 20,
    rtol: float = 1e-9,
) -> OrthogonalAlignment:
    """Weight matching where the ``orthogonal`` spaces get a rotation instead of a permutation.

    Alternates (1) the Procrustes rotation of each orthogonal space given the
    current permutations and (2) weight matching of the other permutations on
    the rotated B, until the objective ``sum <A, aligned B>`` improves by less
    than ``rtol`` (relative) or ``max_iter`` alternations.

    Args:
        key: PRNG key (weight matching's visiting order; alternation ``i`` uses
            ``fold_in(key, i)``).
        orthogonal: permutation names whose space is aligned by a rotation
            (e.g. ``("P_embed",)``).
        fixed: other permutation names held at their initial value.
        init_perm: starting permutations (default identity), e.g. weight
            matching's result with the orthogonal names fixed; the objective
            never falls below that starting point's. Entries for the
            orthogonal names are ignored (identity).

    Returns:
        :class:`OrthogonalAlignment`; apply it to B with :func:`align`.
    """
    unknown = [n for n in orthogonal if n not in spec.perm_to_axes]
    if unknown:
        raise SpecError(f"orthogonal names unknown permutations {unknown}; the spec has {list(spec.names)}")
    perm = starting_permutation(spec, params_a, params_b, fixed=fixed, init_perm=init_perm)
    sizes = perm_sizes(spec, params_a)
    perm.update({n: jnp.arange(sizes[n], dtype=jnp.int32) for n in orthogonal})
    rotations = {name: np.eye(sizes[name]) for name in orthogonal}
    history: list[float] = []
    for it in range(max_iter):
        for name in orthogonal:
            others = {n: q for n, q in rotations.items() if n != name}
            b_other = apply_orthogonal(spec, others, params_b) if others else params_b
            rotations[name] = procrustes(cost_matrix(spec, name, perm, params_a, b_other))
        rotated = apply_orthogonal(spec, rotations, params_b)
        perm = weight_matching(jax.random.fold_in(key, it), spec, params_a, rotated, init_perm=perm,
                               fixed=(*orthogonal, *fixed))
        history.append(weight_matching_objective(spec, perm, params_a, rotated))
        if len(history) > 1 and history[-1] - history[-2] <= rtol * max(1.0, abs(history[-2])):
            break
    return OrthogonalAlignment(perm, {n: np.asarray(q) for n, q in rotations.items()}, tuple(history))
