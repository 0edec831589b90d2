"""Helpers shared by the benchmark modules: timing and a printed table."""

from __future__ import annotations

import platform
import time

import jax


def best_time(fn, repeats: int = 5) -> float:
    """Minimum wall time of ``fn()`` over ``repeats`` calls (after one warm-up call)."""
    fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def block(tree):
    """Waits for every array in ``tree`` (JAX dispatch is asynchronous)."""
    return jax.block_until_ready(tree)


def machine() -> str:
    dev = jax.devices()[0]
    return f"{platform.processor() or platform.machine()}, {jax.device_count()} x {dev.platform}:{dev.device_kind}, jax {jax.__version__}"


def print_table(title: str, rows: list[tuple[str, str, str]]) -> None:
    """Rows of ``(figure, value, target)``."""
    w0 = max(len(r[0]) for r in rows + [("figure", "", "")])
    w1 = max(len(r[1]) for r in rows + [("", "value", "")])
    print(f"\n{title}\n  machine: {machine()}")
    print(f"  {'figure'.ljust(w0)}  {'value'.ljust(w1)}  target")
    for name, value, target in rows:
        print(f"  {name.ljust(w0)}  {value.ljust(w1)}  {target}")
