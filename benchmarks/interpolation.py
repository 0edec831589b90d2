"""Interpolation evaluation: 25 lambdas of the MNIST MLP on the full train and
test sets (70,000 examples), against the machine's matmul throughput, and its
peak memory.

    python -m benchmarks.interpolation
"""

from __future__ import annotations

import resource
import time

import jax.numpy as jnp
import numpy as np

from benchmarks.common import block, print_table
from benchmarks.training import matmul_flops_per_s
from benchmarks.weight_matching import mnist_mlp_pair
from rebasin_jax import interpolate
from rebasin_jax.metrics import ClassificationMetrics
from rebasin_jax.models import MLP


def run() -> list[tuple[str, str, str]]:
    _, a, b = mnist_mlp_pair()
    metric = ClassificationMetrics(MLP(), batch_size=10_000)
    rng = np.random.default_rng(0)
    splits = [(jnp.asarray(rng.random((n, 784), np.float32)), jnp.asarray(rng.integers(0, 10, n), jnp.int32))
              for n in (60_000, 10_000)]
    lambdas = jnp.linspace(0.0, 1.0, 25)

    def evaluate():
        return block([interpolate.interpolation_curve(metric, a, b, lambdas, x, y) for x, y in splits])

    evaluate()  # compile
    times = []
    for _ in range(2):
        t = time.perf_counter()
        evaluate()
        times.append(time.perf_counter() - t)
    dt = min(times)
    weights = 784 * 512 + 512 * 512 * 2 + 512 * 10
    flops = 2.0 * weights * 70_000 * 25
    peak = matmul_flops_per_s()
    program = max(interpolate._program_bytes(metric, a, b, lambdas, (x, y), None) for x, y in splits)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return [
        ("25 lambdas x 70,000 examples [s]", f"{dt:.2f}", ""),
        ("achieved [GFLOP/s] (forward matmuls)", f"{flops / dt / 1e9:.1f}", ""),
        ("matmul throughput [GFLOP/s]", f"{peak / 1e9:.1f}", ""),
        ("interpolation / matmul throughput", f"{flops / dt / peak:.2f}", ">= 0.5"),
        ("peak memory of the compiled program (XLA) [MiB]", f"{program / 2**20:.0f}", ""),
        ("peak resident memory of this process [MiB]", f"{rss / 2**20:.0f}", ""),
    ]


def main():
    print_table("Interpolation evaluation, MNIST MLP (random-init pair, MNIST-sized random data)", run())


if __name__ == "__main__":
    main()
