"""A re-basin study of one model pair: match with every method, check, interpolate, record.

This is the pipeline the experiment modules share: run each matching method
(and variant, i.e. set of fixed permutations), check that every permuted B
still computes B's function, evaluate the interpolation curves on train and
test data, and write the results in the ``results.json`` schema that other
tools read.
"""

from __future__ import annotations

import dataclasses
import io
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from rebasin_jax.checkpoint import atomic_write_bytes
from rebasin_jax.interpolate import curve_barriers, interpolation_curve
from rebasin_jax.matching.activation import activation_matching
from rebasin_jax.matching.ste import ste_matching
from rebasin_jax.matching.weight import weight_matching
from rebasin_jax.spec import PermutationSpec, apply_permutation
from rebasin_jax.types import Params

__all__ = [
    "METHODS",
    "MatchingInputs",
    "MatchResult",
    "run_matching",
    "output_difference",
    "assert_same_function",
    "evaluate_curves",
    "save_permutation",
    "load_permutation",
    "validate_results",
    "CURVE_KEYS",
    "compare_methods",
]

METHODS = ("weight", "activation", "ste")
CURVE_KEYS = ("train_loss", "test_loss", "train_acc", "test_acc")


@dataclasses.dataclass(frozen=True)
class MatchingInputs:
    """What the data-driven matchers need.

    Attributes:
        activations_fn: ``(params, inputs) -> {name: (rows, n)}`` (hashable).
        activation_batches: input batches for activation matching.
        loss_fn: ``(params, (inputs, labels)) -> scalar`` (hashable).
        ste_batches: ``(inputs, labels)`` batches, or ``epoch -> batches``.
        ste_epochs, ste_lr: STE schedule.
        ste_eval_batches: batches scoring STE's candidates (None: first epoch's).
    """

    activations_fn: Callable
    activation_batches: Sequence[Any]
    loss_fn: Callable
    ste_batches: Any
    ste_epochs: int = 10
    ste_lr: float = 1e-3
    ste_eval_batches: Sequence[Any] | None = None


@dataclasses.dataclass(frozen=True)
class MatchResult:
    """A permutation, the wall time the matcher took, and its info object."""

    perm: dict
    seconds: float
    info: Any = None


def run_matching(
    method: str,
    key,
    spec: PermutationSpec,
    params_a: Params,
    params_b: Params,
    inputs: MatchingInputs,
    *,
    fixed: Sequence[str] = (),
    progress: bool = False,
) -> MatchResult:
    """Runs ``method`` (``"weight"``, ``"activation"`` or ``"ste"``) and times it."""
    start = time.perf_counter()
    if method == "weight":
        perm, info = weight_matching(key, spec, params_a, params_b, fixed=fixed, return_info=True)
    elif method == "activation":
        perm, info = activation_matching(
            spec, params_a, params_b, inputs.activations_fn, inputs.activation_batches, fixed=fixed,
            progress=progress, return_info=True,
        )
        info = {"matched_correlation": info.matched_score}
    elif method == "ste":
        perm, info = ste_matching(
            key, spec, params_a, params_b, inputs.loss_fn, inputs.ste_batches, epochs=inputs.ste_epochs,
            lr=inputs.ste_lr, fixed=fixed, eval_batches=inputs.ste_eval_batches, progress=progress, return_info=True,
        )
    else:
        raise ValueError(f"unknown matching method {method!r}; choose from {METHODS}")
    perm = jax.block_until_ready(perm)  # so `seconds` includes the device work
    return MatchResult(perm, time.perf_counter() - start, info)


def output_difference(apply_fn: Callable, params: Params, other: Params, inputs) -> float:
    """Largest ``|apply_fn(params, x) - apply_fn(other, x)|`` relative to ``max(1, |outputs|)``."""
    ref = np.asarray(apply_fn(params, inputs), np.float64)
    out = np.asarray(apply_fn(other, inputs), np.float64)
    return float(np.abs(ref - out).max() / max(1.0, np.abs(ref).max()))


def assert_same_function(apply_fn: Callable, params_b: Params, permuted_b: Params, inputs, *, what: str,
                         rtol: float = 1e-4) -> float:
    """Raises ``RuntimeError`` unless the permuted B reproduces B's outputs.

    A permutation found under a broken spec would fail here, before any figure
    is drawn from it.
    """
    diff = output_difference(apply_fn, params_b, permuted_b, inputs)
    if not diff <= rtol:
        raise RuntimeError(
            f"{what}: the permuted model B does not reproduce B's outputs (relative difference {diff:.3g} > "
            f"{rtol}); the permutation spec is not a symmetry of this model -- run validate_spec"
        )
    return diff


def evaluate_curves(metric_fn, params_a: Params, params_b: Params, lambdas, splits: Mapping[str, tuple],
                    *, batch_size="auto") -> dict:
    """Loss and accuracy along the path on every split, plus their barriers.

    Args:
        metric_fn: ``(params, x, y) -> {"loss", "acc"}`` (hashable).
        splits: ``{"train": (x, y), "test": (x, y)}``.

    Returns:
        ``{"train_loss": [...], "train_acc": [...], "test_loss": ..., "test_acc": ...,
        "barrier": {same four keys: float}}`` with plain Python floats.
    """
    out: dict = {}
    for split, (x, y) in splits.items():
        curve = interpolation_curve(metric_fn, params_a, params_b, lambdas, x, y, batch_size=batch_size)
        out[f"{split}_loss"] = [float(v) for v in np.asarray(curve["loss"])]
        out[f"{split}_acc"] = [float(v) for v in np.asarray(curve["acc"])]
    out["barrier"] = curve_barriers({k: out[k] for k in out}, np.asarray(lambdas))
    return out


def save_permutation(path: str | Path, perm: Mapping[str, Any]) -> Path:
    """Writes ``{name: int array}`` to an ``.npz`` file (atomically)."""
    buf = io.BytesIO()
    np.savez(buf, **{name: np.asarray(p, np.int32) for name, p in perm.items()})
    atomic_write_bytes(path, buf.getvalue())
    return Path(path)


def load_permutation(path: str | Path) -> dict[str, jax.Array]:
    """Reads a permutation written by :func:`save_permutation`."""
    with np.load(path) as f:
        return {name: jnp.asarray(f[name]) for name in f.files}


def validate_results(results: Mapping) -> None:
    """Checks the ``results.json`` schema; raises ``ValueError`` naming the first problem."""

    def need(obj, key, where):
        if not isinstance(obj, Mapping) or key not in obj:
            raise ValueError(f"results.json: {where} lacks {key!r}")
        return obj[key]

    for key in ("experiment", "config", "models", "lambdas", "curves"):
        need(results, key, "top level")
    n = len(results["lambdas"])
    for model in ("a", "b"):
        entry = need(results["models"], model, "models")
        for key in ("seed", "train_loss", "test_loss", "train_acc", "test_acc", "checkpoint"):
            need(entry, key, f"models.{model}")
    curves = results["curves"]
    need(curves, "naive", "curves")
    for name, curve in curves.items():
        for key in CURVE_KEYS:
            values = need(curve, key, f"curves[{name!r}]")
            if len(values) != n:
                raise ValueError(f"results.json: curves[{name!r}].{key} has {len(values)} values, lambdas has {n}")
        barrier = need(curve, "barrier", f"curves[{name!r}]")
        for key in CURVE_KEYS:
            need(barrier, key, f"curves[{name!r}].barrier")
        if name != "naive":
            need(curve, "permutation", f"curves[{name!r}]")
            need(curve, "seconds", f"curves[{name!r}]")
            if "/" not in name:
                raise ValueError(f"results.json: curve name {name!r} is not '<method>/<variant>'")


def compare_methods(
    *,
    key,
    spec: PermutationSpec,
    apply_fn: Callable,
    metric_fn: Callable,
    params_a: Params,
    params_b: Params,
    splits: Mapping[str, tuple],
    check_inputs,
    matching_inputs: MatchingInputs,
    methods: Sequence[str],
    variants: Mapping[str, Sequence[str]],
    lambdas,
    perm_dir: str | Path,
    results_dir: str | Path,
    progress: bool = False,
    log: Callable[[str], None] = lambda msg: None,
) -> dict:
    """Every method x variant on one pair: match, check, interpolate, save.

    Args:
        key: PRNG key; method ``i`` and variant ``j`` use ``fold_in(fold_in(key, i), j)``.
        apply_fn: ``(params, x) -> outputs``, to check permuted endpoints.
        metric_fn: ``(params, x, y) -> {"loss", "acc"}`` for the curves.
        splits: ``{"train": (x, y), "test": (x, y)}``.
        check_inputs: inputs on which every permuted B must reproduce B.
        variants: ``{variant name: permutation names held at identity}``.
        perm_dir: where ``<method>_<variant>.npz`` files go.
        results_dir: the ``permutation`` paths are relative to it.
        log: called with one line per finished matching.

    Returns:
        ``{"naive": C, "<method>/<variant>": C, ...}`` in the results.json
        schema (C with the curves, barriers, ``permutation`` and ``seconds``).

    Raises:
        RuntimeError: if a permuted B does not reproduce B's outputs.
    """
    curves = {"naive": evaluate_curves(metric_fn, params_a, params_b, lambdas, splits)}
    for i, method in enumerate(methods):
        for j, (variant, fixed) in enumerate(variants.items()):
            name = f"{method}/{variant}"
            res = run_matching(method, jax.random.fold_in(jax.random.fold_in(key, i), j), spec, params_a, params_b,
                               matching_inputs, fixed=tuple(fixed), progress=progress)
            permuted = apply_permutation(spec, res.perm, params_b)
            assert_same_function(apply_fn, params_b, permuted, check_inputs, what=name)
            path = save_permutation(Path(perm_dir) / f"{method}_{variant}.npz", res.perm)
            curve = evaluate_curves(metric_fn, params_a, permuted, lambdas, splits)
            curve["permutation"] = str(Path(path).resolve().relative_to(Path(results_dir).resolve()))
            curve["seconds"] = res.seconds
            curves[name] = curve
            log(f"{name}: {res.seconds:.1f}s, test loss barrier {curve['barrier']['test_loss']:.4g} "
                f"(naive {curves['naive']['barrier']['test_loss']:.4g})")
    return curves
