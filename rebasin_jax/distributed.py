"""Many seeds across devices: the seed axis of vmapped training on a device mesh.

Training vmaps over a leading seed axis; with more than one device that axis
is sharded over a 1-D :class:`jax.sharding.Mesh` named ``"seed"`` (data are
replicated), and XLA partitions the same compiled program so each device runs
its share of the seeds. Nothing here assumes a GPU: the same code runs on CPU
(try ``XLA_FLAGS=--xla_force_host_platform_device_count=4``), GPU and TPU.

When the number of seeds is not a multiple of the device count, the seed list
is *padded* by repeating its last seed; the copies train in lockstep with it
and are dropped from every result (no checkpoint, no history).

Several hosts: call ``jax.distributed.initialize()`` in every process before
training; ``jax.devices()`` then lists every host's devices, host values are
gathered with ``process_allgather`` and only process 0 writes files.
"""

from __future__ import annotations

from typing import Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

__all__ = ["SEED_AXIS", "seed_mesh", "padded_seeds", "shard_seeds", "replicate", "to_host", "is_writer"]

SEED_AXIS = "seed"


def seed_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh | None:
    """A 1-D mesh over ``devices`` (default: all devices), or None for a single device."""
    devices = list(jax.devices() if devices is None else devices)
    if not devices:
        raise ValueError("devices is empty")
    return None if len(devices) == 1 else Mesh(np.asarray(devices), (SEED_AXIS,))


def padded_seeds(seeds: Sequence[int], mesh: Mesh | None) -> tuple[int, ...]:
    """``seeds`` padded with copies of its last seed to a multiple of the mesh size."""
    seeds = tuple(seeds)
    if mesh is None:
        return seeds
    return seeds + (seeds[-1],) * (-len(seeds) % mesh.size)


def shard_seeds(tree, mesh: Mesh | None):
    """Places every leaf's leading (seed) axis across the mesh."""
    if mesh is None:
        return tree
    return jax.device_put(tree, NamedSharding(mesh, PartitionSpec(SEED_AXIS)))


def replicate(tree, mesh: Mesh | None):
    """A full copy of every leaf on every device of the mesh."""
    if mesh is None:
        return tree
    return jax.device_put(tree, NamedSharding(mesh, PartitionSpec()))


def to_host(x) -> np.ndarray:
    """A NumPy copy of ``x``, gathered from other processes when it spans several hosts."""
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
        from jax.experimental import multihost_utils

        return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return np.asarray(x)


def is_writer() -> bool:
    """True in the one process that writes checkpoints and results (process 0)."""
    return jax.process_index() == 0
