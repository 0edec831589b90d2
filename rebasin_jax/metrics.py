"""Classification metrics used for training logs, interpolation curves and STE losses."""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp

__all__ = ["cross_entropy", "ClassificationMetrics", "SupervisedLoss"]


def cross_entropy(logits, labels):
    """Per-example cross-entropy ``(N,)`` from logits ``(N, C)`` and int labels ``(N,)``."""
    # float32 log-softmax: stable down to the 1e-6 test losses grokking reaches.
    logits = logits.astype(jnp.float32)
    return -jnp.take_along_axis(jax.nn.log_softmax(logits), labels[:, None], axis=1)[:, 0]


@dataclasses.dataclass(frozen=True)
class ClassificationMetrics:
    """``metric_fn(params, inputs, labels) -> {"loss", "acc"}`` for a classifier.

    A frozen dataclass (hashable by value) so it can be a static argument of
    jitted functions such as ``interpolation_curve``. With ``batch_size`` the
    data are processed in chunks by ``lax.map`` (bounded activation memory);
    the last chunk is padded and masked.
    """

    model: nn.Module
    batch_size: int | None = None

    def __call__(self, params, inputs, labels):
        variables = {"params": params}
        n = inputs.shape[0]
        if self.batch_size is None or self.batch_size >= n:
            logits = self.model.apply(variables, inputs)
            return {"loss": cross_entropy(logits, labels).mean(), "acc": (logits.argmax(-1) == labels).mean()}
        bs = self.batch_size
        chunks = -(-n // bs)
        pad = chunks * bs - n
        xs = jnp.pad(inputs, [(0, pad)] + [(0, 0)] * (inputs.ndim - 1)).reshape((chunks, bs) + inputs.shape[1:])
        ys = jnp.pad(labels, (0, pad)).reshape(chunks, bs)
        ws = (jnp.arange(chunks * bs) < n).astype(jnp.float32).reshape(chunks, bs)

        def one(args):
            x, y, w = args
            logits = self.model.apply(variables, x)
            return jnp.sum(w * cross_entropy(logits, y)), jnp.sum(w * (logits.argmax(-1) == y))

        loss, correct = jax.lax.map(one, (xs, ys, ws))
        return {"loss": loss.sum() / n, "acc": correct.sum() / n}



@dataclasses.dataclass(frozen=True)
class SupervisedLoss:
    """``loss_fn(params, (inputs, labels)) -> scalar`` from a :class:`ClassificationMetrics`.

    The form STE matching wants; hashable by value, so its jitted step is
    compiled once per model.
    """

    metric: ClassificationMetrics

    def __call__(self, params, batch):
        return self.metric(params, *batch)["loss"]
