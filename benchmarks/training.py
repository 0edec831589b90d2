"""Training throughput: MNIST MLP against the machine's matmul throughput, and
modular addition with 1 seed vs several seeds vmapped.

    python -m benchmarks.training
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.common import best_time, block, print_table
from rebasin_jax import train as T
from rebasin_jax.data import MNIST, Split


def matmul_flops_per_s(m: int = 500, k: int = 512, n: int = 512, reps: int = 200) -> float:
    """FLOP/s of a jitted chain of ``(m, k) @ (k, n)`` matmuls (the MLP's shapes)."""

    @jax.jit
    def chain(x, w):
        def body(h, _):
            return jnp.tanh(h @ w), None  # tanh keeps values bounded and the chain sequential

        return jax.lax.scan(body, x, None, length=reps)[0]

    x = jnp.ones((m, k), jnp.float32) * 0.01
    w = jnp.ones((k, n), jnp.float32) * 0.01
    t = best_time(lambda: block(chain(x, w)))
    return 2.0 * m * k * n * reps / t


def _synthetic_mnist(n_train=60000, n_test=10000):
    rng = np.random.default_rng(0)
    mk = lambda n: Split(rng.integers(0, 256, (n, 28, 28), dtype=np.uint8), rng.integers(0, 10, n).astype(np.int32))
    return MNIST(mk(n_train), mk(n_test))


def mnist_training_flops_per_s(epochs: int = 2) -> tuple[float, float]:
    """Achieved FLOP/s and seconds per epoch of MNIST MLP training (1 seed).

    Matmul FLOPs per step: forward ``2BW``, weight gradients ``2BW``, input
    gradients ``2B(W - W_0)`` (none for the first layer's input), for batch
    ``B``, ``W`` weights in all and ``W_0`` in the first layer.
    """
    cfg = T.MNISTConfig(epochs=epochs)
    data = _synthetic_mnist()
    T.train_mnist(data, T.MNISTConfig(epochs=1), seeds=(0,), progress=False)  # compile
    t = time.perf_counter()
    T.train_mnist(data, cfg, seeds=(0,), progress=False)
    dt = (time.perf_counter() - t) / epochs
    dims = [784, *cfg.features, 10]
    weights = sum(a * b for a, b in zip(dims[:-1], dims[1:]))
    first = dims[0] * dims[1]
    steps = 60000 // cfg.batch_size
    return 2.0 * cfg.batch_size * (3 * weights - first) * steps / dt, dt


def modadd_steps_per_s(num_seeds: int, steps: int = 1000, repeats: int = 2) -> float:
    """Full-batch steps per second of ``num_seeds`` seeds vmapped on one device
    (one compiled chunk of ``steps`` steps; the first call compiles)."""
    cfg = T.ModularAdditionConfig(max_steps=steps, stop_test_loss=0.0, log_every=steps)
    seeds = tuple(range(num_seeds))
    t = best_time(lambda: T.train_modular_addition(cfg, seeds, progress=False), repeats=repeats)
    return steps / t


SHARDED = """
import json, time, jax
from rebasin_jax import train as T
cfg = T.ModularAdditionConfig(max_steps=1000, stop_test_loss=0.0, log_every=1000)
out = {}
for name, devices in (("one", jax.devices()[:1]), ("all", None)):
    T.train_modular_addition(cfg, (0, 1), progress=False, devices=devices)
    t = time.perf_counter()
    T.train_modular_addition(cfg, (0, 1), progress=False, devices=devices)
    out[name] = 1000 / (time.perf_counter() - t)
print(json.dumps(out))
"""


def sharded_modadd_steps_per_s(num_devices: int = 2) -> dict:
    """2 seeds on 1 vs ``num_devices`` simulated host devices (a subprocess:
    the device count is fixed when JAX starts)."""
    import json
    import os
    import subprocess
    import sys

    env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={num_devices}")
    proc = subprocess.run([sys.executable, "-c", SHARDED], capture_output=True, text=True, env=env, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run() -> list[tuple[str, str, str]]:
    peak = matmul_flops_per_s()
    achieved, epoch_s = mnist_training_flops_per_s()
    one = modadd_steps_per_s(1)
    two = modadd_steps_per_s(2)
    eight = modadd_steps_per_s(8, steps=300, repeats=1)
    sharded = sharded_modadd_steps_per_s(2)
    return [
        ("matmul throughput (500x512 @ 512x512) [GFLOP/s]", f"{peak / 1e9:.1f}", ""),
        ("MNIST MLP training [GFLOP/s], 1 seed", f"{achieved / 1e9:.1f}", ""),
        ("  seconds per epoch (60k examples, batch 500)", f"{epoch_s:.2f}", ""),
        ("MNIST training / matmul throughput", f"{achieved / peak:.2f}", ">= 0.5"),
        ("modular addition steps/s, 1 seed", f"{one:.0f}", ""),
        ("modular addition steps/s, 2 seeds vmapped", f"{two:.0f}", ""),
        ("per-seed cost, 2 seeds / 1 seed", f"{one / (2 * two):.2f}", "<= 1.0"),
        ("modular addition steps/s, 8 seeds vmapped", f"{eight:.0f}", ""),
        ("per-seed cost, 8 seeds / 1 seed", f"{one / (8 * eight):.2f}", ""),
        ("2 seeds sharded on 2 host devices: steps/s", f"{sharded['all']:.0f} (1 device: {sharded['one']:.0f})", ""),
        ("per-seed cost, 2 seeds on 2 host devices / 1 seed", f"{one / (2 * sharded['all']):.2f}", "<= 1.0"),
    ]


def main():
    print_table("Training throughput", run())


if __name__ == "__main__":
    main()
