"""Linear interpolation between two models and loss barriers.

``interpolation_curve`` evaluates a metric at every lambda in one compiled,
vmapped program (Ainsworth et al. 2023, section 4 figures; Frankle et al.
2020). When 25 copies of the model and its activations would not fit in
memory, it falls back to ``lax.map`` over chunks of lambdas, chosen from XLA's
own memory analysis of the compiled program.
"""

from __future__ import annotations

import functools
import os
from typing import Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from rebasin_jax.types import MetricFn, Params

__all__ = ["lerp", "interpolation_curve", "loss_barrier", "curve_barriers", "memory_budget_bytes"]


def lerp(lam, params_a: Params, params_b: Params) -> Params:
    """``(1 - lam) * A + lam * B`` leaf by leaf; ``lam=0`` gives A, ``lam=1`` gives B."""
    return jax.tree_util.tree_map(lambda a, b: (1 - lam) * a + lam * b, params_a, params_b)


@functools.partial(jax.jit, static_argnames=("metric_fn", "batch_size"))
def _curve(metric_fn, params_a, params_b, lambdas, args, batch_size):
    def at(lam):
        return metric_fn(lerp(lam, params_a, params_b), *args)

    if batch_size is None or batch_size >= lambdas.shape[0]:
        return jax.vmap(at)(lambdas)
    return jax.lax.map(at, lambdas, batch_size=batch_size)


def memory_budget_bytes(device=None) -> int:
    """Bytes an evaluation may use on ``device``: 80% of free accelerator memory,
    or half of the host's available memory on CPU."""
    device = device or jax.devices()[0]
    stats = device.memory_stats() if hasattr(device, "memory_stats") else None
    if stats and "bytes_limit" in stats:
        return int(0.8 * (stats["bytes_limit"] - stats.get("bytes_in_use", 0)))
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024 // 2
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2


def _program_bytes(metric_fn, params_a, params_b, lambdas, args, batch_size) -> int:
    compiled = _curve.lower(metric_fn, params_a, params_b, lambdas, args, batch_size).compile()
    mem = compiled.memory_analysis()
    if mem is None:  # backend without memory analysis: assume it fits
        return 0
    return int(mem.temp_size_in_bytes + mem.argument_size_in_bytes + mem.output_size_in_bytes)


def _auto_batch_size(metric_fn, params_a, params_b, lambdas, args, budget) -> int | None:
    n = lambdas.shape[0]
    size = n
    while True:
        bs = None if size >= n else size
        if size == 1 or _program_bytes(metric_fn, params_a, params_b, lambdas, args, bs) <= budget:
            return bs
        size = (size + 1) // 2


def interpolation_curve(
    metric_fn: MetricFn,
    params_a: Params,
    params_b: Params,
    lambdas,
    *args,
    batch_size: int | None | str = "auto",
    memory_budget: int | None = None,
) -> dict[str, jax.Array]:
    """Evaluates ``metric_fn`` along the line from A to B.

    Args:
        metric_fn: ``metric_fn(params, *args) -> {name: scalar}``; must be
            jittable and hashable (a module-level function or a
            ``functools.partial`` of one). Data goes in ``args`` rather than a
            closure so it is an argument of the compiled program.
        params_a, params_b: parameter pytrees of the same structure.
        lambdas: ``(L,)`` interpolation weights (0 is A, 1 is B).
        *args: extra arguments passed to ``metric_fn`` (e.g. inputs, labels).
        batch_size: lambdas evaluated at once: ``None`` for all (plain vmap), an
            int for ``lax.map`` in chunks of that size, or ``"auto"`` to use all
            unless XLA's memory analysis says the program exceeds
            ``memory_budget``, halving until it fits.
        memory_budget: bytes for ``"auto"`` (default :func:`memory_budget_bytes`).

    Returns:
        ``{name: array (L,)}``, the metric at every lambda.
    """
    lambdas = jnp.asarray(lambdas, jnp.float32)
    if lambdas.ndim != 1:
        raise ValueError(f"lambdas must be 1-D, got shape {lambdas.shape}")
    if batch_size == "auto":
        budget = memory_budget_bytes() if memory_budget is None else memory_budget
        batch_size = _auto_batch_size(metric_fn, params_a, params_b, lambdas, args, budget)
    elif batch_size is not None and (not isinstance(batch_size, int) or batch_size < 1):
        raise ValueError(f"batch_size must be None, 'auto' or a positive int, got {batch_size!r}")
    return dict(_curve(metric_fn, params_a, params_b, lambdas, args, batch_size))


def loss_barrier(values, lambdas, *, higher_is_better: bool = False, reference: str = "mean") -> float:
    """Barrier of a curve along the interpolation path.

    ``reference="mean"`` (Ainsworth et al. 2023, Definition of loss barrier):
    ``max_lambda value(lambda) - (value(0) + value(1)) / 2``.
    ``reference="linear"`` (Entezari et al. 2021): ``max_lambda [value(lambda) -
    ((1 - lambda) value(0) + lambda value(1))]``.
    For metrics where higher is better (accuracy) the sign flips: the barrier is
    the largest drop below the reference.

    Args:
        values: ``(L,)`` metric at each lambda.
        lambdas: ``(L,)`` interpolation weights; must include 0 and 1.
        higher_is_better: True for accuracies.
        reference: ``"mean"`` or ``"linear"``.

    Returns:
        The barrier as a Python float (may be negative when the midpoints are
        better than the endpoints).
    """
    values = np.asarray(values, np.float64)
    lambdas = np.asarray(lambdas, np.float64)
    if values.shape != lambdas.shape or values.ndim != 1:
        raise ValueError(f"values {values.shape} and lambdas {lambdas.shape} must be 1-D of equal length")
    i0 = np.flatnonzero(np.isclose(lambdas, 0.0))
    i1 = np.flatnonzero(np.isclose(lambdas, 1.0))
    if not len(i0) or not len(i1):
        raise ValueError("lambdas must include the endpoints 0 and 1")
    v0, v1 = values[i0[0]], values[i1[0]]
    if reference == "mean":
        ref = np.full_like(values, (v0 + v1) / 2)
    elif reference == "linear":
        ref = (1 - lambdas) * v0 + lambdas * v1
    else:
        raise ValueError(f"reference must be 'mean' or 'linear', got {reference!r}")
    gap = ref - values if higher_is_better else values - ref
    return float(np.max(gap))


def curve_barriers(curve: Mapping[str, Sequence[float]], lambdas, *, reference: str = "mean") -> dict[str, float]:
    """:func:`loss_barrier` of every metric in ``curve``; names containing
    ``"acc"`` are treated as higher-is-better."""
    return {
        name: loss_barrier(values, lambdas, higher_is_better="acc" in name, reference=reference)
        for name, values in curve.items()
    }
