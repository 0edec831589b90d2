"""Weight matching on two MNIST-shaped MLPs (784-512-512-512-10): how much of its
time is spent outside the linear-assignment solves.

    python -m benchmarks.weight_matching
"""

from __future__ import annotations

import time

import jax
import numpy as np

from benchmarks.common import best_time, print_table
from rebasin_jax.matching import weight as wm
from rebasin_jax.matching.assignment import solve_assignment
from rebasin_jax.models import MLP, mlp_spec


def mnist_mlp_pair():
    model = MLP()
    x = np.zeros((1, 784), np.float32)
    a = model.init(jax.random.key(0), x)["params"]
    b = model.init(jax.random.key(1), x)["params"]
    return mlp_spec(3), a, b


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
        _, info = wm.weight_matching(key, spec, a, b, return_info=True)
    finally:
        wm.solve_assignment = original

    total = best_time(lambda: wm.weight_matching(key, spec, a, b))
    solves = best_time(lambda: [solve_assignment(c) for c in recorded])
    return [
        ("weight matching total [s]", f"{total:.3f}", ""),
        ("  sweeps / assignment solves", f"{info.num_sweeps} / {info.num_solves}", ""),
        ("  the same solves alone [s]", f"{solves:.3f}", ""),
        ("total / solves alone", f"{total / solves:.2f}", "<= 1.5"),
    ]


def main():
    print_table("Weight matching, MNIST MLP 784-512-512-512-10 (random init pair)", run())


if __name__ == "__main__":
    main()
