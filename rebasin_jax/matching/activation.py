"""Activation matching (Ainsworth et al. 2023, section 3.1).

For every permutation, match each of A's units to one of B's units so that the
summed correlation (or inner product) of their activations over a data set is
maximal: one linear assignment per permutation, solved independently, because
each model's activations are computed in its own basis.

Statistics stream over the batches: one jitted update per batch merges that
batch's means, variances and cross-covariance into running ones (Chan et al.'s
pairwise update, numerically stable in float32), so a whole data set's
activations are never held at once.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Iterable, Mapping, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from rebasin_jax.matching.assignment import solve_assignment
from rebasin_jax.spec import (
    PermutationSpec,
    SpecError,
    perm_sizes,
    starting_permutation,
)
from rebasin_jax.types import Params

__all__ = ["activation_matching", "ActivationStats", "ActivationMatchingInfo", "activation_statistics"]

METHODS = ("correlation", "inner")


class ActivationStats(NamedTuple):
    """Running statistics of one permutation's units in models A and B.

    Attributes:
        count: rows seen (scalar).
        mean_a, mean_b: ``(n,)`` means.
        m2_a, m2_b: ``(n,)`` sums of squared deviations from the mean.
        cross: ``(n, n)`` sum of ``(a_i - mean_a_i)(b_j - mean_b_j)``.
    """

    count: jax.Array
    mean_a: jax.Array
    mean_b: jax.Array
    m2_a: jax.Array
    m2_b: jax.Array
    cross: jax.Array

    def covariance(self) -> jax.Array:
        return self.cross / self.count

    def correlation(self) -> jax.Array:
        """Pearson correlation ``(n, n)``; 0 where a unit is dead (zero variance)."""
        denom = jnp.sqrt(jnp.outer(self.m2_a, self.m2_b))
        return jnp.where(denom > 0, self.cross / jnp.where(denom > 0, denom, 1.0), 0.0)

    def inner_product(self) -> jax.Array:
        """Mean of ``a_i * b_j`` over the rows (uncentered)."""
        return self.cross / self.count + jnp.outer(self.mean_a, self.mean_b)


class ActivationMatchingInfo(NamedTuple):
    """``stats``: {name: ActivationStats}; ``scores``: {name: (n, n) matrix that was
    maximised}; ``matched_score``: {name: mean score of the chosen pairs}."""

    stats: dict
    scores: dict
    matched_score: dict


def _batch_stats(a: jax.Array, b: jax.Array) -> ActivationStats:
    a = a.reshape(-1, a.shape[-1]).astype(jnp.float32)
    b = b.reshape(-1, b.shape[-1]).astype(jnp.float32)
    mean_a, mean_b = a.mean(0), b.mean(0)
    ca, cb = a - mean_a, b - mean_b
    cross = jnp.matmul(ca.T, cb, precision=jax.lax.Precision.HIGHEST)
    return ActivationStats(jnp.asarray(a.shape[0], jnp.float32), mean_a, mean_b, (ca**2).sum(0), (cb**2).sum(0), cross)


def _merge(s: ActivationStats, t: ActivationStats) -> ActivationStats:
    n = s.count + t.count
    w = s.count * t.count / n
    da, db = t.mean_a - s.mean_a, t.mean_b - s.mean_b
    return ActivationStats(
        n,
        s.mean_a + da * (t.count / n),
        s.mean_b + db * (t.count / n),
        s.m2_a + t.m2_a + da**2 * w,
        s.m2_b + t.m2_b + db**2 * w,
        s.cross + t.cross + jnp.outer(da, db) * w,
    )


@functools.partial(jax.jit, static_argnames=("activations_fn", "names"))
def _update(activations_fn, names, stats, params_a, params_b, batch):
    acts_a = activations_fn(params_a, batch)
    acts_b = activations_fn(params_b, batch)
    new = {name: _batch_stats(acts_a[name], acts_b[name]) for name in names}
    if stats is None:
        return new
    return {name: _merge(stats[name], new[name]) for name in names}


def activation_statistics(
    activations_fn: Callable[[Params, Any], Mapping[str, jax.Array]],
    names: Sequence[str],
    params_a: Params,
    params_b: Params,
    batches: Iterable[Any],
    *,
    progress: bool = False,
) -> dict[str, ActivationStats]:
    """Streams ``batches`` through both models and accumulates :class:`ActivationStats`.

    Args:
        activations_fn: ``activations_fn(params, batch) -> {name: (rows, n)}``;
            jittable and hashable (create it once, e.g. ``functools.partial(
            hidden_activations, model)``).
        names: permutation names to accumulate.
        batches: iterable of batches (any pytree ``activations_fn`` accepts).
    """
    names = tuple(sorted(names))
    stats = None
    for batch in tqdm(batches, desc="activation statistics", disable=not progress, leave=False):
        if stats is None:
            acts = jax.eval_shape(activations_fn, params_a, batch)
            missing = [n for n in names if n not in acts]
            if missing:
                raise SpecError(
                    f"activations_fn returned no activations for {missing}; it returned {sorted(acts)}. "
                    f"Return one (rows, n) array per permutation, or list the others in `fixed`"
                )
        stats = _update(activations_fn, names, stats, params_a, params_b, batch)
    if stats is None:
        raise ValueError("batches is empty; activation matching needs data")
    return stats


def activation_matching(
    spec: PermutationSpec,
    params_a: Params,
    params_b: Params,
    activations_fn: Callable[[Params, Any], Mapping[str, jax.Array]],
    batches: Iterable[Any],
    *,
    method: str = "correlation",
    fixed: Sequence[str] = (),
    init_perm=None,
    solver: str = "scipy",
    progress: bool = False,
    return_info: bool = False,
):
    """Permutation of B's units whose activations best match A's.

    Args:
        spec: the models' permutation spec.
        params_a, params_b: parameter pytrees of the same architecture.
        activations_fn: ``activations_fn(params, batch) -> {name: (rows, n)}``
            giving, per permutation, the activations it permutes (for an
            embedding: the embedding vectors of the input tokens). Must be
            jittable and hashable; create it once.
        batches: iterable of batches; statistics are accumulated batch by batch.
        method: ``"correlation"`` (Pearson, the original code's choice) or
            ``"inner"`` (mean product of activations).
        fixed: permutation names held at ``init_perm`` (identity by default).
        init_perm: values for the fixed names.
        solver: assignment backend (see ``solve_assignment``).
        progress: show a progress bar over the batches.
        return_info: also return an :class:`ActivationMatchingInfo`.

    Returns:
        ``{name: int32 array (n,)}`` (apply to B with ``apply_permutation``), and
        the info when ``return_info``. Deterministic for a given data order.

    Raises:
        SpecError: models that do not fit the spec or each other, unknown
            ``fixed`` names, or activations of the wrong width.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    perm = starting_permutation(spec, params_a, params_b, fixed=fixed, init_perm=init_perm)
    free = [name for name in spec.names if name not in set(fixed)]
    if not free:
        return (perm, ActivationMatchingInfo({}, {}, {})) if return_info else perm
    sizes = perm_sizes(spec, params_a)
    stats = activation_statistics(activations_fn, free, params_a, params_b, batches, progress=progress)
    scores, matched = {}, {}
    for name in free:
        st = stats[name]
        if st.mean_a.shape[0] != sizes[name]:
            raise SpecError(
                f"activations for {name!r} have {st.mean_a.shape[0]} units but the permutation has size {sizes[name]}"
            )
        score = st.correlation() if method == "correlation" else st.inner_product()
        score_np = np.asarray(score, np.float64)
        cols = solve_assignment(score_np, solver=solver)
        perm[name] = jnp.asarray(cols, jnp.int32)
        scores[name] = score
        matched[name] = float(score_np[np.arange(len(cols)), cols].mean())
    if return_info:
        return perm, ActivationMatchingInfo(stats, scores, matched)
    return perm
