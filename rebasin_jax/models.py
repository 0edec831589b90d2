"""The two model families of the study and their registered permutation specs.

* :class:`MLP` -- the paper's MNIST network (784-512-512-512-10, ReLU), spec ``"mlp"``.
* :class:`ModularAdditionMLP` -- the grokking model of the ported study: one
  token embedding shared by both operands (summed or concatenated), ReLU
  hidden layers, an unembedding to ``p`` logits; spec ``"modular_addition_mlp"``.

Both ``sow`` the activations each permutation acts on into the
``"intermediates"`` collection under the permutation's name, which
:func:`hidden_activations` returns for activation matching.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from rebasin_jax.spec import (
    PermutationSpec,
    permutation_spec_from_axes_to_perm,
    register_spec,
)
from rebasin_jax.types import Params

__all__ = [
    "MLP",
    "ModularAdditionMLP",
    "mlp_spec",
    "modular_addition_mlp_spec",
    "hidden_activations",
    "as_variables",
    "MODELS",
    "build_model",
    "EMBED_PERM",
    "example_input",
    "init_shapes",
    "model_name",
    "model_config",
]

#: Name of the permutation on the embedding's feature axis.
EMBED_PERM = "P_embed"


def _hidden_name(i: int) -> str:
    return f"P_{i}"


def as_variables(params: Params) -> Mapping[str, Any]:
    """``{"params": params}`` unless ``params`` already has that outer level."""
    if isinstance(params, Mapping) and list(params.keys()) == ["params"]:
        return params
    return {"params": params}


def hidden_activations(model: nn.Module, params: Params, inputs) -> dict[str, jax.Array]:
    """Activations each permutation acts on, keyed by permutation name.

    Returns:
        ``{name: array (rows, n)}`` where ``n`` is the permutation's size; rows
        are examples (``2 * batch`` for the embedding: one per input token).
    """
    _, state = model.apply(as_variables(params), inputs, mutable=["intermediates"])
    return {name: value[0] for name, value in state["intermediates"].items()}


# ---------------------------------------------------------------------------
# MNIST MLP
# ---------------------------------------------------------------------------


class MLP(nn.Module):
    """Fully connected ReLU network (the paper's MNIST MLP by default).

    Inputs ``(batch, ...)`` are flattened; parameters are ``Dense_i/kernel``
    ``(in, out)`` and ``Dense_i/bias`` ``(out,)`` for ``i = 0..len(features)``.
    """

    features: Sequence[int] = (512, 512, 512)
    num_classes: int = 10
    use_bias: bool = True
    input_dim: int = 784

    @nn.compact
    def __call__(self, x):
        x = x.reshape((x.shape[0], -1))
        if x.shape[1] != self.input_dim:
            raise ValueError(f"MLP expects {self.input_dim} input features per example, got {x.shape[1]}")
        for i, width in enumerate(self.features):
            x = nn.relu(nn.Dense(width, use_bias=self.use_bias, name=f"Dense_{i}")(x))
            self.sow("intermediates", _hidden_name(i), x)
        return nn.Dense(self.num_classes, use_bias=self.use_bias, name=f"Dense_{len(self.features)}")(x)


@register_spec("mlp")
def mlp_spec(num_hidden_layers: int = 3, use_bias: bool = True) -> PermutationSpec:
    """Spec of :class:`MLP`: permutation ``P_i`` on hidden layer ``i``'s units.

    ``Dense_i/kernel`` gets ``(P_{i-1}, P_i)``; the input axis of ``Dense_0``
    and the logit axis of the last layer are not permuted.
    """
    if num_hidden_layers < 1:
        raise ValueError(f"num_hidden_layers must be >= 1, got {num_hidden_layers}")
    axes = {}
    for i in range(num_hidden_layers + 1):
        p_in = _hidden_name(i - 1) if i > 0 else None
        p_out = _hidden_name(i) if i < num_hidden_layers else None
        axes[f"Dense_{i}/kernel"] = (p_in, p_out)
        if use_bias:
            axes[f"Dense_{i}/bias"] = (p_out,)
    return permutation_spec_from_axes_to_perm(axes)


# ---------------------------------------------------------------------------
# Modular addition MLP
# ---------------------------------------------------------------------------


def _torch_uniform(fan_in_axes):
    # PyTorch's nn.Linear default: U(-1/sqrt(fan_in), 1/sqrt(fan_in)), i.e.
    # variance 1/(3 fan_in). The ported study's model groks with this init.
    return nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform", in_axis=fan_in_axes, out_axis=-1)


def _torch_bias(fan_in: int):
    bound = 1.0 / float(fan_in) ** 0.5

    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


class _TorchDense(nn.Module):
    features: int
    use_bias: bool

    @nn.compact
    def __call__(self, x):
        kernel = self.param("kernel", _torch_uniform(-2), (x.shape[-1], self.features))
        y = x @ kernel
        if self.use_bias:
            y = y + self.param("bias", _torch_bias(x.shape[-1]), (self.features,))
        return y


class _PairDense(nn.Module):
    """First hidden layer: reads the two operands' embeddings.

    ``mode="sum"``: kernel ``(d, h)`` applied to ``e_a + e_b``.
    ``mode="concat"``: kernel ``(2, d, h)`` applied to ``[e_a; e_b]`` -- stored
    with a separate operand axis so that one permutation of the embedding's
    features acts on the rows of both halves.
    """

    features: int
    mode: str
    use_bias: bool

    @nn.compact
    def __call__(self, emb):  # emb: (batch, 2, d)
        d = emb.shape[-1]
        if self.mode == "sum":
            kernel = self.param("kernel", _torch_uniform(-2), (d, self.features))
            y = emb.sum(axis=1) @ kernel
            fan_in = d
        else:
            kernel = self.param("kernel", _torch_uniform((0, 1)), (2, d, self.features))
            y = jnp.einsum("btd,tdh->bh", emb, kernel)
            fan_in = 2 * d
        if self.use_bias:
            y = y + self.param("bias", _torch_bias(fan_in), (self.features,))
        return y


class ModularAdditionMLP(nn.Module):
    """MLP for ``(a + b) mod p`` from token pairs ``(batch, 2)`` to ``(batch, p)`` logits.

    Parameters: ``Embed_0/embedding`` ``(p, d)`` (N(0, 1/d) init),
    ``Dense_0/kernel`` ``(d, h0)`` or ``(2, d, h0)`` when concatenating,
    ``Dense_i/kernel`` ``(h_{i-1}, h_i)``, unembedding ``Dense_{k}/kernel``
    ``(h_{k-1}, p)``; biases ``Dense_i/bias`` when ``use_bias``. Dense weights use
    PyTorch's default uniform init, as in the ported study.
    """

    p: int = 113
    d: int = 64
    hidden: Sequence[int] = (128, 64)
    embed_mode: str = "sum"
    use_bias: bool = False

    @nn.compact
    def __call__(self, tokens):
        if self.embed_mode not in ("sum", "concat"):
            raise ValueError(f"embed_mode must be 'sum' or 'concat', got {self.embed_mode!r}")
        embed = nn.Embed(self.p, self.d, embedding_init=nn.initializers.normal(1.0 / self.d**0.5), name="Embed_0")
        emb = embed(tokens)  # (batch, 2, d)
        self.sow("intermediates", EMBED_PERM, emb.reshape(-1, self.d))
        x = emb
        for i, width in enumerate(self.hidden):
            if i == 0:
                x = _PairDense(width, self.embed_mode, self.use_bias, name="Dense_0")(x)
            else:
                x = _TorchDense(width, self.use_bias, name=f"Dense_{i}")(x)
            x = nn.relu(x)
            self.sow("intermediates", _hidden_name(i), x)
        logits = _TorchDense(self.p, self.use_bias, name=f"Dense_{len(self.hidden)}")(x)
        return logits.astype(jnp.float32)


@register_spec("modular_addition_mlp")
def modular_addition_mlp_spec(
    num_hidden_layers: int = 2, embed_mode: str = "sum", use_bias: bool = False
) -> PermutationSpec:
    """Spec of :class:`ModularAdditionMLP`.

    ``P_embed`` permutes the embedding's feature axis and the matching input
    rows of ``Dense_0`` (both halves when concatenating); ``P_i`` permutes hidden
    layer ``i``. The vocabulary axis and the logit axis are never permuted.
    """
    if num_hidden_layers < 1:
        raise ValueError(f"num_hidden_layers must be >= 1, got {num_hidden_layers}")
    if embed_mode not in ("sum", "concat"):
        raise ValueError(f"embed_mode must be 'sum' or 'concat', got {embed_mode!r}")
    axes: dict[str, tuple] = {"Embed_0/embedding": (None, EMBED_PERM)}
    first = (EMBED_PERM, _hidden_name(0))
    axes["Dense_0/kernel"] = first if embed_mode == "sum" else (None,) + first
    for i in range(1, num_hidden_layers + 1):
        p_out = _hidden_name(i) if i < num_hidden_layers else None
        axes[f"Dense_{i}/kernel"] = (_hidden_name(i - 1), p_out)
    if use_bias:
        for i in range(num_hidden_layers + 1):
            axes[f"Dense_{i}/bias"] = (_hidden_name(i) if i < num_hidden_layers else None,)
    return permutation_spec_from_axes_to_perm(axes)


# ---------------------------------------------------------------------------
# Construction from a (model name, config) pair, as stored in checkpoints
# ---------------------------------------------------------------------------

MODELS = {"mlp": MLP, "modular_addition_mlp": ModularAdditionMLP}


def build_model(name: str, config: Mapping[str, Any]) -> tuple[nn.Module, PermutationSpec]:
    """Builds a registered model and its spec from a JSON-style config.

    Args:
        name: ``"mlp"`` or ``"modular_addition_mlp"``.
        config: the module's dataclass fields (e.g. ``{"features": [512, 512]}``).

    Raises:
        KeyError: for an unknown model name (lists the known ones).
        ValueError: for a config field the model does not have.
    """
    if name not in MODELS:
        raise KeyError(f"unknown model {name!r}; known models: {sorted(MODELS)}")
    cls = MODELS[name]
    fields = {f.name for f in dataclasses.fields(cls)} - {"parent", "name"}
    unknown = set(config) - fields
    if unknown:
        raise ValueError(f"model {name!r} has no config field(s) {sorted(unknown)}; fields: {sorted(fields)}")
    kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in config.items()}
    model = cls(**kwargs)
    if name == "mlp":
        spec = mlp_spec(len(model.features), model.use_bias)
    else:
        spec = modular_addition_mlp_spec(len(model.hidden), model.embed_mode, model.use_bias)
    return model, spec


def example_input(model: nn.Module):
    """A one-example input batch of the right shape and dtype for ``model``."""
    if isinstance(model, MLP):
        return jnp.zeros((1, model.input_dim), jnp.float32)
    if isinstance(model, ModularAdditionMLP):
        return jnp.zeros((1, 2), jnp.int32)
    raise TypeError(f"no example input known for {type(model).__name__}")


def init_shapes(model: nn.Module) -> Params:
    """``jax.ShapeDtypeStruct`` tree of the model's params (no computation)."""
    return jax.eval_shape(lambda: model.init(jax.random.key(0), example_input(model)))["params"]


def model_name(model: nn.Module) -> str:
    """Registry name of a model instance (inverse of :data:`MODELS`)."""
    for name, cls in MODELS.items():
        if type(model) is cls:
            return name
    raise TypeError(f"{type(model).__name__} is not a registered model; known: {sorted(MODELS)}")


def model_config(model: nn.Module) -> dict[str, Any]:
    """The JSON-serialisable config that :func:`build_model` inverts."""
    fields = [f.name for f in dataclasses.fields(model) if f.name not in ("parent", "name")]
    return {k: list(v) if isinstance(v, tuple) else v for k, v in ((k, getattr(model, k)) for k in fields)}
