"""Checkpoints: params (optionally optimizer state) plus JSON metadata, one file each.

File format: a header line ``rebasin_jax-checkpoint 1 <sha256 of payload>``
followed by a msgpack payload (``flax.serialization``). The checksum makes a
damaged file fail loudly instead of loading wrong numbers; writes go to a
temporary file in the same directory, are fsynced and renamed into place, so an
interrupted save never leaves a file that loads as valid.

Metadata records the model name and config (see ``models.build_model``), the
seed, the step and the metrics at that step.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Mapping, NamedTuple

import jax
import numpy as np
from flax import serialization

from rebasin_jax.spec import flatten_params
from rebasin_jax.types import Params

__all__ = [
    "CheckpointError",
    "Checkpoint",
    "save_checkpoint",
    "load_checkpoint",
    "load_model",
    "atomic_write_bytes",
    "atomic_write_json",
    "seed_dir",
    "step_checkpoint_path",
    "list_step_checkpoints",
]

_MAGIC = b"rebasin_jax-checkpoint 1 "


class CheckpointError(ValueError):
    """A checkpoint is missing, damaged or does not fit the expected model."""


class Checkpoint(NamedTuple):
    """A loaded checkpoint: ``params`` (nested dict of numpy arrays), ``metadata``
    (dict) and ``opt_state`` (restored into the template's structure, or None)."""

    params: Params
    metadata: dict
    opt_state: Any


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Writes ``data`` to ``path`` so that readers see the old file or the whole new one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    """JSON version of :func:`atomic_write_bytes` (indented, trailing newline)."""
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode())


def _to_host(tree):
    return jax.tree_util.tree_map(np.asarray, tree)


def save_checkpoint(path: str | os.PathLike, params: Params, *, metadata: Mapping[str, Any], opt_state: Any = None) -> None:
    """Saves ``params`` (and ``opt_state``) with JSON-serialisable ``metadata``, atomically."""
    payload = {
        "params": serialization.to_state_dict(_to_host(params)),
        "opt_state": None if opt_state is None else serialization.to_state_dict(_to_host(opt_state)),
        "metadata": json.dumps(dict(metadata)),
    }
    body = serialization.msgpack_serialize(payload)
    digest = hashlib.sha256(body).hexdigest().encode()
    atomic_write_bytes(path, _MAGIC + digest + b"\n" + body)


def _check_fits(params: Params, template: Params, path: Path) -> None:
    got, want = flatten_params(params), flatten_params(template)
    missing = sorted(set(want) - set(got))
    extra = sorted(set(got) - set(want))
    if missing or extra:
        raise CheckpointError(
            f"{path}: parameters do not fit the expected architecture (missing {missing or 'none'}, "
            f"unexpected {extra or 'none'})"
        )
    for key in sorted(want):
        if tuple(np.shape(got[key])) != tuple(np.shape(want[key])):
            raise CheckpointError(
                f"{path}: parameter {key!r} has shape {tuple(np.shape(got[key]))} but the model expects "
                f"{tuple(np.shape(want[key]))}; the checkpoint is from a different architecture"
            )


def load_checkpoint(path: str | os.PathLike, *, template: Params = None, opt_template: Any = None) -> Checkpoint:
    """Loads a checkpoint written by :func:`save_checkpoint`.

    Args:
        path: checkpoint file.
        template: params (or ``jax.eval_shape`` structs) of the expected
            architecture; when given, every path and shape must match.
        opt_template: optimizer state of the right structure, needed to restore
            ``opt_state`` (it is ``None`` otherwise).

    Raises:
        CheckpointError: missing or damaged file (checksum), or params that do
            not fit ``template``; the message names the file and the param.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise CheckpointError(f"{path}: cannot read checkpoint ({err})") from None
    head, _, body = raw.partition(b"\n")
    if not head.startswith(_MAGIC):
        raise CheckpointError(f"{path}: not a rebasin_jax checkpoint (bad header)")
    if hashlib.sha256(body).hexdigest().encode() != head[len(_MAGIC):]:
        raise CheckpointError(f"{path}: checksum mismatch; the file is truncated or corrupted")
    try:
        payload = serialization.msgpack_restore(body)
        metadata = json.loads(payload["metadata"])
        params = payload["params"]
    except Exception as err:  # checksum passed, so this is a format bug
        raise CheckpointError(f"{path}: unreadable payload ({err})") from None
    if template is not None:
        _check_fits(params, template, path)
    opt_state = None
    if opt_template is not None:
        if payload.get("opt_state") is None:
            raise CheckpointError(f"{path}: has no optimizer state (a params-only checkpoint)")
        try:
            opt_state = serialization.from_state_dict(opt_template, payload["opt_state"])
        except (ValueError, KeyError, TypeError) as err:
            raise CheckpointError(f"{path}: optimizer state does not fit the optimizer ({err})") from None
    return Checkpoint(params, metadata, opt_state)


def seed_dir(ckpt_dir, seed: int) -> Path:
    """``<ckpt_dir>/seed_<seed>``: a training run's ``step_<n>.ckpt`` files,
    ``resume.ckpt`` and ``history.json`` for one seed."""
    return Path(ckpt_dir) / f"seed_{seed}"


def step_checkpoint_path(ckpt_dir, seed: int, step: int) -> Path:
    return seed_dir(ckpt_dir, seed) / f"step_{step:08d}.ckpt"


def list_step_checkpoints(ckpt_dir, seed: int) -> list[tuple[int, Path]]:
    """``[(step, path)]`` of the params checkpoints of ``seed``, by step."""
    out = []
    for path in seed_dir(ckpt_dir, seed).glob("step_*.ckpt"):
        try:
            out.append((int(path.stem.split("_")[1]), path))
        except ValueError:
            continue
    return sorted(out)


def load_model(path: str | os.PathLike):
    """Loads a checkpoint together with the model it was written for.

    Returns:
        ``(model, spec, params, metadata)``; the model and spec are rebuilt
        from ``metadata["model"]`` and ``metadata["model_config"]``.

    Raises:
        CheckpointError: if the metadata has no model, or the params do not fit it.
    """
    from rebasin_jax.models import (  # models imports nothing from here
        build_model,
        init_shapes,
    )

    ckpt = load_checkpoint(path)
    meta = ckpt.metadata
    if "model" not in meta or "model_config" not in meta:
        raise CheckpointError(f"{path}: metadata lacks 'model'/'model_config'; cannot rebuild the model")
    model, spec = build_model(meta["model"], meta["model_config"])
    _check_fits(ckpt.params, init_shapes(model), Path(path))
    return model, spec, ckpt.params, meta
