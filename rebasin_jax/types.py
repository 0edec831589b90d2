"""Type aliases shared by the whole package (kept in one place on purpose)."""

from __future__ import annotations

from typing import Any, Callable, Mapping

import jax

#: A parameter pytree: the nested dict a Flax ``init`` returns, with or without
#: the outer ``{"params": ...}`` level. Leaves are arrays.
Params = Any

#: A permutation assignment: permutation name -> int array of shape ``(n,)``.
#: Applied to model B, unit ``i`` of the result is unit ``perm[name][i]`` of B.
Permutation = Mapping[str, jax.Array]

#: A PRNG key made by ``jax.random.key`` or ``jax.random.PRNGKey``.
PRNGKey = jax.Array

#: ``metric_fn(params, *args) -> dict of scalars`` (e.g. loss and accuracy).
MetricFn = Callable[..., Mapping[str, jax.Array]]
