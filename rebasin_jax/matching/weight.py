"""Weight matching (Ainsworth et al. 2023, section 3.2, Algorithm 1).

Finds the permutation of model B's hidden units that maximises the summed inner
product ``sum_l <W_l^A, P_l W_l^B P_{l-1}^T>`` with model A, by coordinate
descent: visit the permutations in random order and solve one linear assignment
problem for each while holding the others fixed; stop after a full sweep that
improves nothing.

Each cost matrix is a sum of per-parameter terms, each one jitted matmul; a
term is rebuilt only when a permutation it depends on has changed, so late
sweeps cost little more than their assignment solves, which run on the host.
"""

from __future__ import annotations

import functools
import sys
from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from rebasin_jax.matching.assignment import solve_assignment
from rebasin_jax.spec import (
    PermutationSpec,
    _permute_leaf,
    flatten_params,
    starting_permutation,
)
from rebasin_jax.types import Params, PRNGKey

__all__ = ["weight_matching", "WeightMatchingInfo", "weight_matching_objective", "cost_matrix"]

# Relative margin an assignment must beat the current one by to count as
# progress; guards against cycling between equally good assignments.
_PROGRESS_RTOL = 1e-12


class WeightMatchingInfo(NamedTuple):
    """Diagnostics of one :func:`weight_matching` call.

    Attributes:
        objective_history: the objective ``sum <A, P(B)>`` at the start and after
            every sweep (length ``num_sweeps + 1``).
        num_sweeps: sweeps over all free permutations that were run.
        converged: True when the last sweep improved nothing (False when
            ``max_iter`` ran out first).
        num_solves: linear assignment problems solved.
    """

    objective_history: tuple[float, ...]
    num_sweeps: int
    converged: bool
    num_solves: int


@functools.partial(jax.jit, static_argnames=("axes", "axis"))
def _term(axes: tuple, axis: int, perm, w_a, w_b) -> jax.Array:
    """One param's contribution to a cost matrix: ``(n, n)`` inner products of
    A's and B's slices along ``axis`` (B's other axes permuted by ``perm``)."""
    w_b = _permute_leaf(w_b, axes, perm, except_axis=axis)
    n = w_a.shape[axis]
    w_a = jnp.moveaxis(w_a, axis, 0).reshape(n, -1).astype(jnp.float32)
    w_b = jnp.moveaxis(w_b, axis, 0).reshape(n, -1).astype(jnp.float32)
    # HIGHEST: TPUs would otherwise multiply in bfloat16, enough to flip
    # near-tied assignments.
    return jnp.matmul(w_a, w_b.T, precision=jax.lax.Precision.HIGHEST)


@functools.partial(jax.jit, static_argnames=("axis", "other"))
def _term_delta(axis: int, other: int, w_a, w_b, rows, new_src, old_src, mask) -> jax.Array:
    """Change of a term when the permutation on axis ``other`` changes at ``rows``.

    With one other permuted axis, ``T[i, j] = sum_k A[k, i] B[p[k], j]`` (axes
    flattened), so changing ``p`` at rows ``K`` adds ``A[K]^T (B[p_new[K]] -
    B[p_old[K]])``: a rank-``|K|`` update instead of a full ``n^3`` matmul.
    ``mask`` zeroes the padding rows (``rows`` is padded to a bucket size to
    bound recompilation).
    """
    a_k = jnp.take(w_a, rows, axis=other)
    shape = [1] * w_b.ndim
    shape[other] = rows.shape[0]
    d = (jnp.take(w_b, new_src, axis=other) - jnp.take(w_b, old_src, axis=other)) * mask.reshape(shape)
    n = w_a.shape[axis]
    a_k = jnp.moveaxis(a_k, axis, 0).reshape(n, -1).astype(jnp.float32)
    d = jnp.moveaxis(d, axis, 0).reshape(n, -1).astype(jnp.float32)
    return jnp.matmul(a_k, d.T, precision=jax.lax.Precision.HIGHEST)


class _Term(NamedTuple):
    value: jax.Array  # (n, n) float32
    used: dict  # {perm name: host int array} the value was built with
    drift: int  # rows changed by low-rank updates since the last full build


class _CostCache:
    """Cost matrices for coordinate descent, reusing and updating terms.

    A cost matrix is a sum of one term per ``(path, axis)`` the permutation acts
    on; a term depends only on the permutations of the param's *other* axes.
    Terms are reused while those are unchanged (first-layer kernels, biases and
    the logit layer are built once), updated by a low-rank correction when few
    rows of the single other permutation changed (the common case after the
    first sweeps), and rebuilt otherwise -- or after ``n`` updated rows, which
    bounds float32 round-off.
    """

    def __init__(self, spec: PermutationSpec, flat_a, flat_b):
        self.spec, self.flat_a, self.flat_b = spec, flat_a, flat_b
        self.terms: dict[tuple[str, int], _Term] = {}

    def _term(self, path: str, axis: int, perm, perm_host) -> jax.Array:
        axes = self.spec.axes_to_perm[path]
        others = [(i, p) for i, p in enumerate(axes) if p is not None and i != axis]
        entry = self.terms.get((path, axis))
        if entry is not None:
            changed = {p: np.flatnonzero(perm_host[p] != entry.used[p]) for _, p in others}
            if not any(len(c) for c in changed.values()):
                return entry.value
            if len(others) == 1:
                other, p = others[0]
                rows = changed[p]
                n_other = len(perm_host[p])
                if 4 * len(rows) <= n_other and entry.drift + len(rows) <= n_other:
                    bucket = min(n_other, max(8, 1 << int(len(rows) - 1).bit_length()))
                    pad = bucket - len(rows)
                    mask = np.concatenate([np.ones(len(rows), np.float32), np.zeros(pad, np.float32)])
                    rows_p = np.concatenate([rows, np.zeros(pad, rows.dtype)]).astype(np.int32)
                    delta = _term_delta(axis, other, self.flat_a[path], self.flat_b[path], rows_p,
                                        perm_host[p][rows_p], entry.used[p][rows_p], mask)
                    entry = _Term(entry.value + delta, {p: perm_host[p]}, entry.drift + len(rows))
                    self.terms[(path, axis)] = entry
                    return entry.value
        sub = {p: perm[p] for _, p in others}
        entry = _Term(_term(axes, axis, sub, self.flat_a[path], self.flat_b[path]), {p: perm_host[p] for _, p in others}, 0)
        self.terms[(path, axis)] = entry
        return entry.value

    def cost(self, name: str, perm, perm_host) -> jax.Array:
        """``(n, n)`` scores for ``name`` given device ``perm`` and its host copy."""
        terms = [self._term(path, axis, perm, perm_host) for path, axis in self.spec.perm_to_axes[name]]
        return functools.reduce(jnp.add, terms)


def cost_matrix(spec: PermutationSpec, name: str, perm, params_a: Params, params_b: Params) -> jax.Array:
    """Linear-assignment scores for permutation ``name`` with the others held fixed.

    Returns:
        ``(n, n)`` float32 matrix ``C`` with ``C[i, j]`` the inner product of
        A's unit ``i`` with B's unit ``j`` over every param the permutation
        touches (B's other axes permuted by ``perm``).
    """
    host = {k: np.asarray(v) for k, v in perm.items()}
    return _CostCache(spec, flatten_params(params_a), flatten_params(params_b)).cost(name, perm, host)


def weight_matching_objective(spec: PermutationSpec, perm, params_a: Params, params_b: Params) -> float:
    """``sum over params <A, P(B)>`` in float64 (the quantity Algorithm 1 maximises)."""
    flat_a, flat_b = flatten_params(params_a), flatten_params(params_b)
    total = 0.0
    for path, axes in spec.axes_to_perm.items():
        b = np.asarray(_permute_leaf(flat_b[path], axes, perm), np.float64)
        total += float(np.vdot(np.asarray(flat_a[path], np.float64), b))
    return total


def weight_matching(
    key: PRNGKey,
    spec: PermutationSpec,
    params_a: Params,
    params_b: Params,
    *,
    max_iter: int = 100,
    init_perm=None,
    fixed: Sequence[str] = (),
    verbose: bool = False,
    return_info: bool = False,
    solver: str = "scipy",
    track_objective: bool = True,
):
    """Permutation of B's units that maximises its weight inner product with A.

    Args:
        key: PRNG key; fixes the order permutations are visited in, so the
            result is deterministic for a given key.
        spec: the models' permutation spec.
        params_a, params_b: parameter pytrees of the same architecture.
        max_iter: maximum number of sweeps.
        init_perm: starting permutation (default identity); also the value
            held by ``fixed`` names. Warm starts (e.g. in STE matching) pass the
            previous result here.
        fixed: permutation names that are not optimised (e.g. the embedding).
        verbose: print the objective after each sweep to stderr.
        return_info: also return a :class:`WeightMatchingInfo`.
        track_objective: with ``return_info``, compute the objective after
            every sweep (a float64 pass over all params; STE matching, which
            only needs the sweep count, turns it off; the history is then NaN).
        solver: linear-assignment backend, ``"scipy"`` (host) or ``"hungarian"``
            (``optax.assignment``, on device).

    Returns:
        ``{name: int32 array (n,)}``; apply it to B with ``apply_permutation``.
        With ``return_info=True``, ``(perm, info)``.

    Raises:
        SpecError: if a model does not fit the spec, the models' shapes differ,
            ``fixed`` names an unknown permutation or ``init_perm`` is invalid.
    """
    perm = starting_permutation(spec, params_a, params_b, fixed=fixed, init_perm=init_perm)
    perm_host = {name: np.asarray(p) for name, p in perm.items()}
    flat_a, flat_b = flatten_params(params_a), flatten_params(params_b)
    free = [name for name in spec.names if name not in set(fixed)]
    costs = _CostCache(spec, flat_a, flat_b)

    track = verbose or (return_info and track_objective)
    objective = weight_matching_objective(spec, perm, flat_a, flat_b) if track else float("nan")
    history = [objective]
    num_solves = 0
    converged = False
    sweeps = 0

    def order(sweep: int) -> list[str]:
        idx = np.asarray(jax.random.permutation(jax.random.fold_in(key, sweep), len(free)))
        return [free[int(i)] for i in idx]

    # A permutation's cost matrix depends only on the permutations on the other
    # axes of the params it touches. If none of them (nor itself) changed since
    # it was last solved, solving again cannot make progress: skip it.
    deps = {
        name: tuple(sorted({q for path, _ in spec.perm_to_axes[name] for q in spec.axes_to_perm[path] if q is not None}))
        for name in free
    }
    solved_with: dict[str, tuple] = {}

    def unchanged_since_solved(name: str) -> bool:
        seen = solved_with.get(name)
        return seen is not None and all(perm_host[q] is v for q, v in zip(deps[name], seen))

    upcoming = order(0)
    for sweep in range(max_iter):
        sweeps += 1
        progress = False
        current, upcoming = upcoming, order(sweep + 1)
        for j, name in enumerate(current):
            if unchanged_since_solved(name):
                continue
            pending = costs.cost(name, perm, perm_host)
            # Prefetch: dispatch the next cost matrix's terms now (JAX runs them
            # asynchronously) so they compute while the host solves this one.
            # Terms that depend on `name` are rebuilt if its permutation changes.
            nxt = current[j + 1] if j + 1 < len(current) else (upcoming[0] if upcoming else None)
            if nxt is not None and nxt != name:
                costs.cost(nxt, perm, perm_host)
            cost = np.asarray(pending, np.float64)
            cols = solve_assignment(cost, solver=solver)
            num_solves += 1
            rows = np.arange(cost.shape[0])
            old = cost[rows, perm_host[name]].sum()
            new = cost[rows, cols].sum()
            if new > old + _PROGRESS_RTOL * max(1.0, abs(old)):
                perm[name] = jnp.asarray(cols, jnp.int32)
                perm_host[name] = np.asarray(cols)
                progress = True
            solved_with[name] = tuple(perm_host[q] for q in deps[name])
        if track:
            objective = weight_matching_objective(spec, perm, flat_a, flat_b)
        history.append(objective)
        if verbose:
            print(f"weight_matching sweep {sweep}: objective {objective:.6g}", file=sys.stderr)
        if not progress:
            converged = True
            break
    if return_info:
        info = WeightMatchingInfo(tuple(history), sweeps, converged, num_solves)
        return perm, info
    return perm
