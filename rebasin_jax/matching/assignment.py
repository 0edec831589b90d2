"""Linear assignment backends shared by all matching methods.

scipy's ``linear_sum_assignment`` (Jonker-Volgenant, on the host) is the
default; ``optax.assignment.hungarian_algorithm`` runs on the accelerator and
avoids a device-to-host copy per solve, which can pay off on GPU/TPU.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import scipy.optimize

__all__ = ["solve_assignment", "SOLVERS"]

SOLVERS = ("scipy", "hungarian")

_hungarian = jax.jit(optax.assignment.hungarian_algorithm)


def solve_assignment(score, solver: str = "scipy") -> np.ndarray:
    """Column assigned to each row so that ``sum_i score[i, cols[i]]`` is maximal.

    Args:
        score: ``(n, n)`` array of scores (higher is better).
        solver: ``"scipy"`` or ``"hungarian"``.

    Returns:
        ``cols``: int array ``(n,)``, a permutation of ``range(n)``.
    """
    if solver == "scipy":
        rows, cols = scipy.optimize.linear_sum_assignment(np.asarray(score), maximize=True)
        # rows come back sorted as arange(n) for a square matrix.
        assert np.array_equal(rows, np.arange(len(rows)))
        return cols
    if solver == "hungarian":
        rows, cols = _hungarian(-jnp.asarray(score, jnp.float32))
        out = np.empty(len(rows), dtype=np.int64)
        out[np.asarray(rows)] = np.asarray(cols)
        return out
    raise ValueError(f"unknown assignment solver {solver!r}; choose one of {SOLVERS}")
