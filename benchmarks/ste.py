"""STE matching wall time against weight matching on the same MNIST-shaped pair.

    python -m benchmarks.ste
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.common import print_table
from benchmarks.weight_matching import mnist_mlp_pair
from rebasin_jax.matching.ste import ste_matching
from rebasin_jax.matching.weight import weight_matching
from rebasin_jax.metrics import ClassificationMetrics
from rebasin_jax.models import MLP

METRIC = ClassificationMetrics(MLP())


def loss_fn(params, batch):
    return METRIC(params, *batch)["loss"]


def run(epochs: int = 1) -> list[tuple[str, str, str]]:
    spec, a, b = mnist_mlp_pair()
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.random((60_000, 784), np.float32))
    y = jnp.asarray(rng.integers(0, 10, 60_000), jnp.int32)
    batches = [(x[i : i + 500], y[i : i + 500]) for i in range(0, 60_000, 500)]
    weight_matching(jax.random.key(0), spec, a, b)  # compile
    t = time.perf_counter()
    weight_matching(jax.random.key(0), spec, a, b)
    t_wm = time.perf_counter() - t
    ste_matching(jax.random.key(0), spec, a, b, loss_fn, batches[:2], epochs=1, eval_batches=batches[:1])  # compile
    t = time.perf_counter()
    _, info = ste_matching(jax.random.key(0), spec, a, b, loss_fn, batches, epochs=epochs,
                           eval_batches=[(x[:10_000], y[:10_000])], return_info=True)
    t_ste = time.perf_counter() - t
    steps = len(info.step_losses)
    return [
        ("weight matching [s]", f"{t_wm:.2f}", ""),
        (f"STE matching, {epochs} epoch(s) = {steps} steps of batch 500 [s]", f"{t_ste:.1f}", ""),
        ("  per step [ms] / mean projection sweeps", f"{1e3 * t_ste / steps:.0f} / {np.mean(info.projection_sweeps):.1f}", ""),
        ("STE (per epoch) / weight matching", f"{t_ste / epochs / t_wm:.0f}x", ""),
    ]


def main():
    print_table("STE vs weight matching, MNIST MLP (random-init pair, random data)", run())


if __name__ == "__main__":
    main()
