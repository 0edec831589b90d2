"""Weight matching on two MNIST-shaped MLPs (784-512-512-512-10).

Figures: the share of time spent outside the linear-assignment solves; the
speed-up over a plain re-implementation of the original algorithm (eager,
re-permuting every weight with ``jnp.take`` at every step) on the same inputs
and key, with both objectives; scipy vs optax's on-device Hungarian solver.

    python -m benchmarks.weight_matching
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import scipy.optimize

from benchmarks.common import best_time, print_table
from rebasin_jax.matching import weight as wm
from rebasin_jax.matching.assignment import solve_assignment
from rebasin_jax.models import MLP, mlp_spec
from rebasin_jax.spec import flatten_params, perm_sizes


def mnist_mlp_pair():
    model = MLP()
    x = np.zeros((1, 784), np.float32)
    a = model.init(jax.random.key(0), x)["params"]
    b = model.init(jax.random.key(1), x)["params"]
    return mlp_spec(3), a, b


def reference_weight_matching(key, spec, params_a, params_b, max_iter: int = 100):
    """The original code's algorithm, eagerly: every cost matrix rebuilt from
    scratch, every weight of B re-permuted with ``jnp.take`` at every step, the
    objective change read off one-hot permutation matrices. Visits the
    permutations in the same order as :func:`weight_matching` for a key."""
    flat_a, flat_b = flatten_params(params_a), flatten_params(params_b)
    sizes = perm_sizes(spec, params_a)
    names = list(spec.names)
    perm = {p: jnp.arange(n) for p, n in sizes.items()}
    for sweep in range(max_iter):
        progress = False
        for idx in np.asarray(jax.random.permutation(jax.random.fold_in(key, sweep), len(names))):
            p = names[int(idx)]
            n = sizes[p]
            cost = jnp.zeros((n, n))
            for path, axis in spec.perm_to_axes[p]:
                w_a, w_b = flat_a[path], flat_b[path]
                for ax, q in enumerate(spec.axes_to_perm[path]):
                    if q is not None and ax != axis:
                        w_b = jnp.take(w_b, perm[q], axis=ax)
                w_a = jnp.moveaxis(w_a, axis, 0).reshape((n, -1))
                w_b = jnp.moveaxis(w_b, axis, 0).reshape((n, -1))
                cost = cost + w_a @ w_b.T
            _, cols = scipy.optimize.linear_sum_assignment(np.asarray(cost), maximize=True)
            eye = jnp.eye(n)
            old = jnp.vdot(cost, eye[perm[p]])
            new = jnp.vdot(cost, eye[cols])
            progress = progress or bool(new > old + 1e-12)
            perm[p] = jnp.asarray(cols)
        if not progress:
            break
    return perm


def run() -> list[tuple[str, str, str]]:
    spec, a, b = mnist_mlp_pair()
    key = jax.random.key(0)

    # Record the cost matrices one run solves, to time the solves alone.
    recorded = []
    original = wm.solve_assignment

    def recording(cost, solver="scipy"):
        recorded.append(np.array(cost))
        return original(cost, solver=solver)

    wm.solve_assignment = recording
    try:
        perm, info = wm.weight_matching(key, spec, a, b, return_info=True)
    finally:
        wm.solve_assignment = original

    total = best_time(lambda: wm.weight_matching(key, spec, a, b))
    solves = best_time(lambda: [solve_assignment(c) for c in recorded])
    reference = best_time(lambda: reference_weight_matching(key, spec, a, b), repeats=2)
    ref_perm = reference_weight_matching(key, spec, a, b)
    obj = wm.weight_matching_objective(spec, perm, a, b)
    ref_obj = wm.weight_matching_objective(spec, ref_perm, a, b)
    hungarian = best_time(lambda: wm.weight_matching(key, spec, a, b, solver="hungarian"), repeats=1)
    return [
        ("weight matching total [s]", f"{total:.3f}", ""),
        ("  sweeps / assignment solves", f"{info.num_sweeps} / {info.num_solves}", ""),
        ("  the same solves alone [s]", f"{solves:.3f}", ""),
        ("total / solves alone", f"{total / solves:.2f}", "<= 1.5"),
        ("plain eager re-implementation [s]", f"{reference:.3f}", ""),
        ("speed-up over the plain re-implementation", f"{reference / total:.2f}x", ">= 4x"),
        ("objective: ours / plain (equal or better)", f"{obj:.2f} / {ref_obj:.2f}", "ours >= plain"),
        ("with optax Hungarian solver on this device [s]", f"{hungarian:.3f}", "(scipy kept as default if faster)"),
    ]


def main():
    print_table("Weight matching, MNIST MLP 784-512-512-512-10 (random init pair)", run())


if __name__ == "__main__":
    main()
