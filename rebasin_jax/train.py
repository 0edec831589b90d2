"""jit-compiled training of several seeds at once, with checkpoints and resume.

Each chunk of steps (an MNIST epoch, or ``log_every`` full-batch steps of
modular addition) is one ``lax.scan`` inside one compiled program that is
``vmap``-ped over the seed axis of the parameters and optimizer state, so models
A and B come from a single call. The host only syncs at chunk ends (logging,
stopping, NaN checks, checkpoints).

Every seed carries its own step counter and "done" flag and stops updating
(a chunk's result is discarded with ``jnp.where``) once it reaches
``max_steps`` or the stop criterion; its trajectory therefore does not depend on which other seeds share
the program, and a run resumed from a checkpoint ends with the same parameters
as an uninterrupted one.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from typing import Any, Callable, NamedTuple, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm.auto import tqdm

from rebasin_jax.checkpoint import (
    CheckpointError,
    atomic_write_json,
    list_step_checkpoints,
    load_checkpoint,
    save_checkpoint,
    seed_dir,
    step_checkpoint_path,
)
from rebasin_jax.data import MNIST, ModularAdditionData, modular_addition_data
from rebasin_jax.distributed import (
    is_writer,
    padded_seeds,
    replicate,
    seed_mesh,
    shard_seeds,
    to_host,
)
from rebasin_jax.metrics import ClassificationMetrics, cross_entropy
from rebasin_jax.models import (
    MLP,
    ModularAdditionMLP,
    example_input,
    model_config,
    model_name,
)
from rebasin_jax.types import Params

__all__ = [
    "ModularAdditionConfig",
    "MNISTConfig",
    "TrainState",
    "TrainResult",
    "TrainingDivergedError",
    "ClassificationMetrics",
    "train_modular_addition",
    "train_mnist",
    "mnist_arrays",
    "unstack",
    "seed_dir",
    "step_checkpoint_path",
    "list_step_checkpoints",
]


# ---------------------------------------------------------------------------
# Configs
# ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ModularAdditionConfig:
    """Full-batch AdamW on ``(a + b) mod p`` (Nanda et al. 2023 / the ported study).

    ``max_steps`` and ``stop_test_loss`` end training; checkpoints every
    ``checkpoint_every`` steps (rounded up to a multiple of ``log_every``).
    ``max_steps`` must be a multiple of ``log_every`` (one compiled chunk).
    """

    p: int = 113
    d: int = 64
    hidden: tuple[int, ...] = (128, 64)
    embed_mode: str = "sum"
    use_bias: bool = False
    train_frac: float = 0.3
    data_seed: int = 0
    lr: float = 1e-3
    b1: float = 0.9
    b2: float = 0.98
    weight_decay: float = 1.0
    warmup_steps: int = 10
    max_steps: int = 10_000
    stop_test_loss: float = 3e-6
    log_every: int = 100
    checkpoint_every: int = 100

    def __post_init__(self):
        if self.log_every < 1 or self.max_steps % self.log_every:
            raise ValueError(f"max_steps ({self.max_steps}) must be a multiple of log_every ({self.log_every})")

    def model(self) -> ModularAdditionMLP:
        return ModularAdditionMLP(self.p, self.d, tuple(self.hidden), self.embed_mode, self.use_bias)


@dataclasses.dataclass(frozen=True)
class MNISTConfig:
    """Adam on MNIST minibatches (Ainsworth et al. 2023: lr 1e-3, batch 500, 100 epochs)."""

    features: tuple[int, ...] = (512, 512, 512)
    lr: float = 1e-3
    batch_size: int = 500
    epochs: int = 100
    checkpoint_every_epochs: int = 1

    def model(self) -> MLP:
        return MLP(tuple(self.features))


# Fields that only say when to stop; a checkpoint written under a different
# value can still be resumed (e.g. training on for more epochs).
_STOP_FIELDS = ("max_steps", "epochs")


@functools.lru_cache(maxsize=None)
def _make_optimizer(kind: str, lr: float, b1: float, b2: float, weight_decay: float, warmup_steps: int):
    if kind == "adamw":
        warmup = optax.linear_schedule(0.0, lr, warmup_steps)
        return optax.adamw(warmup, b1=b1, b2=b2, weight_decay=weight_decay)
    return optax.adam(lr)


def _optimizer(config) -> optax.GradientTransformation:
    # Cached on the optimizer's own hyperparameters, so the jitted chunk
    # functions (which take it as a static argument) hit their compilation
    # cache across runs that differ only in, e.g., the number of epochs.
    if isinstance(config, ModularAdditionConfig):
        return _make_optimizer("adamw", config.lr, config.b1, config.b2, config.weight_decay, config.warmup_steps)
    return _make_optimizer("adam", config.lr, 0.9, 0.999, 0.0, 0)


# ---------------------------------------------------------------------------
# State, metrics and the compiled step
# ---------------------------------------------------------------------------


class TrainState(NamedTuple):
    """Per-seed training state; in the vmapped program every leaf has a leading seed axis."""

    params: Params
    opt_state: Any
    step: jax.Array  # () int32: optimizer steps taken
    done: jax.Array  # () bool: stopped by the stop criterion


class TrainResult(NamedTuple):
    """``params`` stacked over seeds (leading axis ``len(seeds)``); per-seed
    ``history`` (list of dicts: step, train/test loss and accuracy) and final ``steps``."""

    params: Params
    history: list
    steps: np.ndarray
    seeds: tuple


class TrainingDivergedError(FloatingPointError):
    """A loss became NaN or infinite; the message names the seed and step."""


def _train_step(model, tx, state: TrainState, x, y):
    def loss_fn(params):
        logits = model.apply({"params": params}, x)
        return cross_entropy(logits, y).mean(), (logits.argmax(-1) == y).mean()

    (loss, acc), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    return TrainState(optax.apply_updates(state.params, updates), opt_state, state.step + 1, state.done), (loss, acc)


def _masked_chunk(run, state: TrainState, max_steps):
    """Runs ``run(state) -> (state, (losses, accs))`` and keeps the result only if
    the seed was active (not done, below ``max_steps``) at the chunk's start.

    Chunks never straddle ``max_steps`` (it is a multiple of the chunk length),
    so masking once per chunk is exact and cheaper than masking every step.
    Inactive chunks report zero losses so they never trip the NaN check.
    """
    active = jnp.logical_and(jnp.logical_not(state.done), state.step < max_steps)
    new, (losses, accs) = run(state)
    state = jax.tree_util.tree_map(lambda n, o: jnp.where(active, n, o), new, state)
    return state, (jnp.where(active, losses, 0.0), jnp.where(active, accs, 0.0))


@functools.partial(jax.jit, static_argnames=("model", "tx"))
def _init_states(model, tx, seeds) -> TrainState:
    def one(seed):
        # Keys derive from the integer seed only: fold_in(key(seed), 0) for
        # init, fold_in(key(seed), 1) for data order (never Python's hash()).
        params = model.init(jax.random.fold_in(jax.random.key(seed), 0), example_input(model))["params"]
        return TrainState(params, tx.init(params), jnp.zeros((), jnp.int32), jnp.zeros((), bool))

    return jax.vmap(one)(seeds)


@functools.partial(jax.jit, static_argnames=("model", "tx", "num_steps"))
def _full_batch_chunk(model, tx, num_steps, state, max_steps, x, y):
    def run(st):
        return jax.lax.scan(lambda s, _: _train_step(model, tx, s, x, y), st, None, length=num_steps)

    return jax.vmap(lambda st: _masked_chunk(run, st, max_steps))(state)


@functools.partial(jax.jit, static_argnames=("model", "tx", "batch_size", "steps_per_epoch"))
def _minibatch_epoch(model, tx, batch_size, steps_per_epoch, state, seeds, max_steps, x, y):
    def one(st, seed):
        epoch = st.step // steps_per_epoch
        key = jax.random.fold_in(jax.random.fold_in(jax.random.key(seed), 1), epoch)
        order = jax.random.permutation(key, x.shape[0])[: steps_per_epoch * batch_size]
        order = order.reshape(steps_per_epoch, batch_size)

        def body(s, idx):
            xb = x[idx].astype(jnp.float32) / 255.0
            return _train_step(model, tx, s, xb, y[idx])

        return _masked_chunk(lambda s: jax.lax.scan(body, s, order), st, max_steps)

    return jax.vmap(one)(state, seeds)


@functools.partial(jax.jit, static_argnames=("metric_fn",))
def _eval_seeds(metric_fn, params, x, y):
    return jax.vmap(lambda p: metric_fn(p, x, y))(params)


# ---------------------------------------------------------------------------
# Checkpoint layout
# ---------------------------------------------------------------------------


def unstack(tree, i: int):
    """Element ``i`` of the leading (seed) axis of every leaf."""
    return jax.tree_util.tree_map(lambda x: x[i], tree)


def _stack(trees):
    return jax.tree_util.tree_map(lambda *xs: jnp.stack([jnp.asarray(x) for x in xs]), *trees)


def _config_dict(config) -> dict:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(config).items()}


def _metadata(task: "_Task", seed: int, step: int, metrics: dict, done: bool) -> dict:
    return {
        "model": model_name(task.model),
        "model_config": model_config(task.model),
        "train_config": _config_dict(task.config),
        "config_type": type(task.config).__name__,
        "seed": int(seed),
        "step": int(step),
        "done": bool(done),
        "metrics": metrics,
    }


def _load_resume(task: "_Task", ckpt_dir, seed: int, template: TrainState):
    """Resume state and history of ``seed``, or None when there is no checkpoint."""
    path = seed_dir(ckpt_dir, seed) / "resume.ckpt"
    if not path.exists():
        return None
    ckpt = load_checkpoint(path, template=template.params, opt_template=template.opt_state)
    meta = ckpt.metadata
    want = _config_dict(task.config)
    got = meta.get("train_config", {})
    diff = sorted(k for k in set(want) | set(got) if k not in _STOP_FIELDS and want.get(k) != got.get(k))
    if meta.get("config_type") != type(task.config).__name__ or diff:
        raise CheckpointError(
            f"{path}: written with a different training config (fields {diff or ['config_type']}: "
            f"{ {k: got.get(k) for k in diff} } vs now { {k: want.get(k) for k in diff} }); "
            f"use another output directory or delete this one"
        )
    params = jax.tree_util.tree_map(jnp.asarray, ckpt.params)
    state = TrainState(params, ckpt.opt_state, jnp.asarray(meta["step"], jnp.int32), jnp.asarray(meta["done"]))
    hist_path = seed_dir(ckpt_dir, seed) / "history.json"
    history = json.loads(hist_path.read_text()) if hist_path.exists() else []
    history = [h for h in history if h["step"] <= meta["step"]]
    return state, history


# ---------------------------------------------------------------------------
# The driver shared by both tasks
# ---------------------------------------------------------------------------


class _Task(NamedTuple):
    model: nn.Module
    config: Any
    data: tuple  # device arrays the chunk and eval functions read (replicated on a mesh)
    run_chunk: Callable  # (state, seeds, max_steps, data) -> (state, (losses, accs)) with (S, n) arrays
    evaluate: Callable  # (state, losses, accs, before, after, data) -> {metric: (S,) np.ndarray}
    max_steps: int
    checkpoint_every: int
    stop_test_loss: float | None
    desc: str


def _train(task: _Task, seeds: Sequence[int], ckpt_dir, progress: bool, devices=None, init_params=None) -> TrainResult:
    seeds = tuple(int(s) for s in seeds)
    if len(set(seeds)) != len(seeds) or not seeds:
        raise ValueError(f"seeds must be distinct and non-empty, got {seeds}")
    n = len(seeds)
    mesh = seed_mesh(devices)
    run_seeds = padded_seeds(seeds, mesh)  # padding copies the last seed; dropped from all results
    tx = _optimizer(task.config)
    fresh = _init_states(task.model, tx, jnp.asarray(run_seeds, jnp.int32))
    if init_params is not None:
        if len(init_params) != n:
            raise ValueError(f"init_params has {len(init_params)} entries for {n} seeds")
        starts = [jax.tree_util.tree_map(jnp.asarray, p) for p in init_params]
        starts += [starts[-1]] * (len(run_seeds) - n)
        fresh = TrainState(_stack(starts), jax.vmap(tx.init)(_stack(starts)), fresh.step, fresh.done)
    states, histories = [], []
    for i, seed in enumerate(seeds):
        loaded = _load_resume(task, ckpt_dir, seed, unstack(fresh, i)) if ckpt_dir is not None else None
        states.append(loaded[0] if loaded else unstack(fresh, i))
        histories.append(loaded[1] if loaded else [])
    states += [states[-1]] * (len(run_seeds) - n)
    state = shard_seeds(_stack(states), mesh)
    seeds_arr = shard_seeds(jnp.asarray(run_seeds, jnp.int32), mesh)
    data = replicate(task.data, mesh)
    max_steps = jnp.asarray(task.max_steps, jnp.int32)

    steps = to_host(state.step)
    bar = tqdm(total=task.max_steps, initial=int(steps.min()), desc=task.desc, disable=not progress, leave=False)
    while True:
        done = to_host(state.done)
        active = ~done & (steps < task.max_steps)
        if not active.any():
            break
        before = steps
        state, (losses, accs) = task.run_chunk(state, seeds_arr, max_steps, data)
        losses = to_host(losses)
        steps = to_host(state.step)
        bad = ~np.isfinite(losses[:n])
        if bad.any():
            s, j = map(int, np.argwhere(bad)[0])
            raise TrainingDivergedError(
                f"seed {seeds[s]}: loss is {losses[s, j]} at step {int(before[s]) + j + 1}; training stopped "
                f"(lower the learning rate or check the data)"
            )
        metrics = task.evaluate(state, losses, to_host(accs), before, steps, data)
        done = to_host(state.done)
        if task.stop_test_loss is not None:
            done = done | (metrics["test_loss"] < task.stop_test_loss)
            state = state._replace(done=shard_seeds(jnp.asarray(done), mesh))
        host_state = None
        for i, seed in enumerate(seeds):
            if steps[i] == before[i]:
                continue
            record = {"step": int(steps[i]), **{k: float(v[i]) for k, v in metrics.items()}}
            histories[i].append(record)
            finished = bool(done[i]) or steps[i] >= task.max_steps
            crossed = steps[i] // task.checkpoint_every > before[i] // task.checkpoint_every
            if ckpt_dir is not None and (crossed or finished) and is_writer():
                host_state = host_state or jax.tree_util.tree_map(to_host, state)
                _save(task, ckpt_dir, seed, unstack(host_state, i), record, histories[i])
        running = (~done & (steps < task.max_steps))[:n]
        bar.update(int(steps[:n][running].min() if running.any() else steps[:n].max()) - bar.n)
        bar.set_postfix({k: f"{float(np.mean(v[:n])):.3g}" for k, v in metrics.items()})
    bar.close()
    params = jax.tree_util.tree_map(lambda x: to_host(x)[:n], state.params)
    return TrainResult(params, histories, steps[:n], seeds)


def _save(task: _Task, ckpt_dir, seed: int, state: TrainState, record: dict, history: list) -> None:
    step = int(state.step)
    metrics = {k: v for k, v in record.items() if k != "step"}
    meta = _metadata(task, seed, step, metrics, bool(state.done))
    save_checkpoint(step_checkpoint_path(ckpt_dir, seed, step), state.params, metadata=meta)
    atomic_write_json(seed_dir(ckpt_dir, seed) / "history.json", history)
    # resume.ckpt last: it is the commit point of this save.
    save_checkpoint(seed_dir(ckpt_dir, seed) / "resume.ckpt", state.params, metadata=meta, opt_state=state.opt_state)


# ---------------------------------------------------------------------------
# Public entry points
# ---------------------------------------------------------------------------


def train_modular_addition(
    config: ModularAdditionConfig = ModularAdditionConfig(),
    seeds: Sequence[int] = (0, 1),
    *,
    ckpt_dir=None,
    data: ModularAdditionData | None = None,
    progress: bool = True,
    devices: Sequence[jax.Device] | None = None,
    init_params: Sequence[Params] | None = None,
) -> TrainResult:
    """Trains ``ModularAdditionMLP`` for every seed at once (full batch).

    Stops a seed when its test loss falls below ``config.stop_test_loss`` (checked
    every ``log_every`` steps) or at ``config.max_steps``. With ``ckpt_dir``,
    writes ``seed_<s>/step_<n>.ckpt`` every ``checkpoint_every`` steps and at the
    end, ``history.json`` and ``resume.ckpt``, and resumes from them.

    ``init_params`` (one params tree per seed) starts training from given
    weights at step 0 with a fresh optimizer state instead of the seed's
    initialisation -- e.g. to spawn a model from another one's checkpoint
    (Frankle et al. 2020). Give such runs their own ``ckpt_dir``: resuming only
    checks the config, not where the weights started.

    With several ``devices`` (default: all of ``jax.devices()``) the seed axis is
    sharded over them (see :mod:`rebasin_jax.distributed`); the parameters are
    the same as on one device.

    Returns:
        :class:`TrainResult` with params stacked over ``seeds`` (host arrays).

    Raises:
        TrainingDivergedError: on a non-finite loss (names seed and step).
        CheckpointError: if ``ckpt_dir`` holds checkpoints of another config.
    """
    data = data or modular_addition_data(config.p, config.train_frac, config.data_seed)
    model = config.model()
    tx = _optimizer(config)
    x_tr, y_tr = jnp.asarray(data.train.images), jnp.asarray(data.train.labels)
    x_te, y_te = jnp.asarray(data.test.images), jnp.asarray(data.test.labels)
    metric = ClassificationMetrics(model)

    def run_chunk(state, seeds, max_steps, data):
        x_tr, y_tr, _, _ = data
        return _full_batch_chunk(model, tx, config.log_every, state, max_steps, x_tr, y_tr)

    def evaluate(state, losses, accs, before, after, data):
        x_tr, y_tr, x_te, y_te = data
        tr = _eval_seeds(metric, state.params, x_tr, y_tr)
        te = _eval_seeds(metric, state.params, x_te, y_te)
        return {"train_loss": to_host(tr["loss"]), "train_acc": to_host(tr["acc"]),
                "test_loss": to_host(te["loss"]), "test_acc": to_host(te["acc"])}

    every = max(1, -(-config.checkpoint_every // config.log_every)) * config.log_every
    task = _Task(model, config, (x_tr, y_tr, x_te, y_te), run_chunk, evaluate, config.max_steps, every,
                 config.stop_test_loss, "modular addition")
    return _train(task, seeds, ckpt_dir, progress, devices, init_params)


def mnist_arrays(mnist: MNIST):
    """Device arrays ``(x_train uint8 (N, 784), y_train, x_test float32 (M, 784), y_test)``."""
    x_tr = jnp.asarray(mnist.train.images.reshape(len(mnist.train.images), -1))
    x_te = jnp.asarray(mnist.test.images.reshape(len(mnist.test.images), -1), jnp.float32) / 255.0
    return x_tr, jnp.asarray(mnist.train.labels), x_te, jnp.asarray(mnist.test.labels)


def train_mnist(
    mnist: MNIST,
    config: MNISTConfig = MNISTConfig(),
    seeds: Sequence[int] = (0, 1),
    *,
    ckpt_dir=None,
    progress: bool = True,
    devices: Sequence[jax.Device] | None = None,
) -> TrainResult:
    """Trains the MNIST :class:`MLP` for every seed at once (one epoch per compiled chunk).

    Each epoch visits the training set in a seed- and epoch-specific random
    order (``fold_in(fold_in(key(seed), 1), epoch)``), dropping the last partial
    batch. History records per epoch: the mean training loss/accuracy over the
    epoch's minibatches and the loss/accuracy on the full test set. Checkpoints
    as in :func:`train_modular_addition`, every ``checkpoint_every_epochs``.
    """
    model = config.model()
    tx = _optimizer(config)
    x_tr, y_tr, x_te, y_te = mnist_arrays(mnist)
    steps_per_epoch = x_tr.shape[0] // config.batch_size
    if steps_per_epoch < 1:
        raise ValueError(f"batch_size {config.batch_size} exceeds the {x_tr.shape[0]} training examples")
    metric = ClassificationMetrics(model, batch_size=2000)

    def run_chunk(state, seeds, max_steps, data):
        x_tr, y_tr, _, _ = data
        return _minibatch_epoch(model, tx, config.batch_size, steps_per_epoch, state, seeds, max_steps, x_tr, y_tr)

    def evaluate(state, losses, accs, before, after, data):
        _, _, x_te, y_te = data
        te = _eval_seeds(metric, state.params, x_te, y_te)
        n = np.maximum(after - before, 1)
        return {"train_loss": losses.sum(1) / n, "train_acc": accs.sum(1) / n,
                "test_loss": to_host(te["loss"]), "test_acc": to_host(te["acc"])}

    task = _Task(model, config, (x_tr, y_tr, x_te, y_te), run_chunk, evaluate, config.epochs * steps_per_epoch,
                 config.checkpoint_every_epochs * steps_per_epoch, None, "MNIST")
    return _train(task, seeds, ckpt_dir, progress, devices)
