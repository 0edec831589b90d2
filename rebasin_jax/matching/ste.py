"""Straight-through-estimator matching (Ainsworth et al. 2023, section 3.3, Algorithm 2).

Learn free weights ``theta`` (initialised at A) whose projection onto the
permutations of B -- ``P(B)`` with ``P = weight_matching(theta, B)`` -- gives a
low loss at the midpoint between A and ``P(B)``. The projection is not
differentiable, so the forward pass uses ``P(B)`` and the backward pass treats
it as ``theta`` (straight-through: ``theta + stop_gradient(P(B) - theta)``).

Every step projects ``theta`` by weight matching warm-started from the previous
step's permutation (a sweep or two instead of a cold start); the gradient step
itself is one jitted function, so only the assignment solves leave the device.
The best permutation seen -- by the midpoint loss over a fixed evaluation set,
scored at the start (plain weight matching of A and B) and after every epoch --
is returned, so the result is never worse than weight matching by that loss.
"""

from __future__ import annotations

import functools
import time
from typing import Any, Callable, Iterable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm.auto import tqdm

from rebasin_jax.interpolate import lerp
from rebasin_jax.matching.weight import weight_matching
from rebasin_jax.spec import PermutationSpec, apply_permutation, starting_permutation
from rebasin_jax.types import Params, PRNGKey

__all__ = ["ste_matching", "SteMatchingInfo"]


class SteMatchingInfo(NamedTuple):
    """Diagnostics of :func:`ste_matching`.

    Attributes:
        step_losses: training loss at every step (at ``lam``, on that batch).
        eval_losses: midpoint loss on the evaluation batches of each candidate:
            the initial weight-matching permutation, then one per epoch.
        best_index: index into ``eval_losses`` of the returned permutation.
        seconds: wall time of the whole call.
        projection_sweeps: weight-matching sweeps per step (warm starts).
    """

    step_losses: tuple
    eval_losses: tuple
    best_index: int
    seconds: float
    projection_sweeps: tuple


def _ste_loss(loss_fn, lam, theta, params_a, projected_b, batch):
    # Forward: the projection P(B); backward: identity to theta.
    straight = jax.tree_util.tree_map(lambda t, p: t + jax.lax.stop_gradient(p - t), theta, projected_b)
    return loss_fn(lerp(lam, params_a, straight), batch)


@functools.partial(jax.jit, static_argnames=("loss_fn", "tx"))
def _ste_step(loss_fn, tx, lam, theta, opt_state, params_a, projected_b, batch):
    loss, grads = jax.value_and_grad(_ste_loss, argnums=2)(loss_fn, lam, theta, params_a, projected_b, batch)
    updates, opt_state = tx.update(grads, opt_state, theta)
    return optax.apply_updates(theta, updates), opt_state, loss


@functools.partial(jax.jit, static_argnames=("loss_fn",))
def _midpoint_loss(loss_fn, params_a, projected_b, batch):
    return loss_fn(lerp(0.5, params_a, projected_b), batch)


def _eval(loss_fn, params_a, projected_b, eval_batches) -> float:
    losses = [_midpoint_loss(loss_fn, params_a, projected_b, b) for b in eval_batches]
    # One transfer for all batches instead of a host sync per batch.
    return float(np.mean(np.asarray(jax.device_get(losses), np.float64)))


def ste_matching(
    key: PRNGKey,
    spec: PermutationSpec,
    params_a: Params,
    params_b: Params,
    loss_fn: Callable[[Params, Any], jax.Array],
    batches: Sequence[Any] | Callable[[int], Iterable[Any]],
    *,
    epochs: int = 10,
    lr: float = 1e-3,
    optimizer: optax.GradientTransformation | None = None,
    random_lambda: bool = False,
    fixed: Sequence[str] = (),
    eval_batches: Sequence[Any] | None = None,
    init_perm=None,
    progress: bool = False,
    return_info: bool = False,
):
    """Permutation of B found by straight-through estimation of the midpoint loss.

    Args:
        key: PRNG key (weight-matching orders and random lambdas).
        spec: the models' permutation spec.
        params_a, params_b: parameter pytrees of the same architecture.
        loss_fn: ``loss_fn(params, batch) -> scalar``; jittable and hashable
            (create it once).
        batches: a re-iterable sequence of batches (the same every epoch), or
            ``batches(epoch) -> iterable`` for a new order per epoch.
        epochs: passes over ``batches``.
        lr: Adam learning rate (ignored when ``optimizer`` is given).
        optimizer: any optax optimizer for ``theta``.
        random_lambda: sample ``lam ~ U(0, 1)`` per step instead of 0.5.
        fixed: permutation names held at identity (or ``init_perm``).
        eval_batches: batches that score candidate permutations by the midpoint
            loss (default: the first epoch's batches, materialised).
        init_perm: warm start for the first projection.
        progress: progress bar over epochs with the running loss.
        return_info: also return a :class:`SteMatchingInfo`.

    Returns:
        The best permutation ``{name: int32 array (n,)}`` by the evaluation
        midpoint loss; with ``return_info``, ``(perm, info)``.
    """
    start = time.perf_counter()
    starting_permutation(spec, params_a, params_b, fixed=fixed, init_perm=init_perm)  # checks only
    if epochs < 0:
        raise ValueError(f"epochs must be >= 0, got {epochs}")
    epoch_batches = batches if callable(batches) else (lambda epoch: batches)
    if eval_batches is None:
        eval_batches = list(epoch_batches(0))
    if not eval_batches:
        raise ValueError("no batches to evaluate on; STE matching needs data")
    tx = optimizer if optimizer is not None else _adam(lr)

    theta = jax.tree_util.tree_map(jnp.asarray, params_a)
    opt_state = tx.init(theta)
    wm_key, lam_key = jax.random.split(key)
    perm = weight_matching(jax.random.fold_in(wm_key, 0), spec, theta, params_b, init_perm=init_perm, fixed=fixed)
    best_perm = perm
    eval_losses = [_eval(loss_fn, params_a, apply_permutation(spec, perm, params_b), eval_batches)]
    best_index = 0
    step_losses, sweeps = [], []
    step = 0
    bar = tqdm(range(epochs), desc="STE matching", disable=not progress, leave=False)
    for epoch in bar:
        for batch in epoch_batches(epoch):
            step += 1
            perm, info = weight_matching(
                jax.random.fold_in(wm_key, step), spec, theta, params_b, init_perm=perm, fixed=fixed, return_info=True,
                track_objective=False,
            )
            sweeps.append(info.num_sweeps)
            projected = apply_permutation(spec, perm, params_b)
            lam = jax.random.uniform(jax.random.fold_in(lam_key, step)) if random_lambda else jnp.float32(0.5)
            theta, opt_state, loss = _ste_step(loss_fn, tx, lam, theta, opt_state, params_a, projected, batch)
            step_losses.append(loss)
        # Candidate of this epoch: the projection of the current theta.
        perm = weight_matching(jax.random.fold_in(wm_key, step + 1), spec, theta, params_b, init_perm=perm, fixed=fixed)
        eval_losses.append(_eval(loss_fn, params_a, apply_permutation(spec, perm, params_b), eval_batches))
        if eval_losses[-1] < eval_losses[best_index]:
            best_index, best_perm = len(eval_losses) - 1, perm
        bar.set_postfix(midpoint_loss=f"{eval_losses[-1]:.4g}", best=f"{eval_losses[best_index]:.4g}")
    bar.close()
    if not return_info:
        return best_perm
    info = SteMatchingInfo(
        tuple(float(l) for l in jax.device_get(step_losses)), tuple(eval_losses), best_index, time.perf_counter() - start, tuple(sweeps)
    )
    return best_perm, info


@functools.lru_cache(maxsize=None)
def _adam(lr: float) -> optax.GradientTransformation:
    # Cached so repeated calls reuse the jitted step (the optimizer is static).
    return optax.adam(lr)
