"""Permutation specs: which axis of which parameter each hidden-unit permutation acts on.

A :class:`PermutationSpec` is the single source of truth for a model's
permutation symmetry (Ainsworth et al. 2023, section 2). Applying, validating,
matching and interpolating all read it. Parameter paths are the ``/``-joined
keys of the nested params dict (``"Dense_0/kernel"``); every function here
accepts the params with or without Flax's outer ``{"params": ...}`` level and
returns the structure it was given.
"""

from __future__ import annotations

import dataclasses
import types
from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from rebasin_jax.types import Params, Permutation, PRNGKey

__all__ = [
    "PermutationSpec",
    "SpecError",
    "permutation_spec_from_axes_to_perm",
    "register_spec",
    "get_spec",
    "available_specs",
    "flatten_params",
    "unflatten_like",
    "perm_sizes",
    "identity_permutation",
    "random_permutation",
    "inverse_permutation",
    "compose_permutations",
    "apply_permutation",
    "validate_spec",
    "check_pair",
    "check_permutation",
    "starting_permutation",
]


class SpecError(ValueError):
    """A permutation spec does not fit a parameter tree or a model's function."""


@dataclasses.dataclass(frozen=True, eq=False)
class PermutationSpec:
    """Immutable description of a model's permutation symmetry.

    Attributes:
        axes_to_perm: param path -> tuple with one entry per array axis: the
            permutation name acting on that axis, or ``None``.
        perm_to_axes: permutation name -> tuple of ``(path, axis)`` pairs it
            acts on. Derived from ``axes_to_perm``.

    Specs are hashable (by content) so they can be static arguments of jitted
    functions.
    """

    axes_to_perm: Mapping[str, tuple[str | None, ...]]
    perm_to_axes: Mapping[str, tuple[tuple[str, int], ...]]

    def __post_init__(self):
        # Freeze both mappings: a spec shared between jitted functions must not
        # change under them.
        a2p = {str(k): tuple(v) for k, v in self.axes_to_perm.items()}
        p2a = {str(k): tuple((str(p), int(a)) for p, a in v) for k, v in self.perm_to_axes.items()}
        object.__setattr__(self, "axes_to_perm", types.MappingProxyType(a2p))
        object.__setattr__(self, "perm_to_axes", types.MappingProxyType(p2a))

    def _key(self):
        return tuple(sorted(self.axes_to_perm.items()))

    def __eq__(self, other):
        return isinstance(other, PermutationSpec) and self._key() == other._key()

    def __hash__(self):
        return hash(self._key())

    @property
    def names(self) -> tuple[str, ...]:
        """Permutation names, sorted (the canonical order used everywhere)."""
        return tuple(sorted(self.perm_to_axes))

    def __repr__(self):
        lines = [f"  {p!r}: {axes}" for p, axes in sorted(self.axes_to_perm.items())]
        return "PermutationSpec(\n" + "\n".join(lines) + "\n)"


def permutation_spec_from_axes_to_perm(
    axes_to_perm: Mapping[str, Sequence[str | None]],
) -> PermutationSpec:
    """Builds a spec from ``{path: (perm name or None per axis)}``.

    Mirrors the function of the same name in the original Git Re-Basin code.

    Raises:
        SpecError: if an entry is not a sequence of names / ``None``.
    """
    perm_to_axes: dict[str, list[tuple[str, int]]] = {}
    for path, axes in axes_to_perm.items():
        if isinstance(axes, str) or not isinstance(axes, Sequence):
            raise SpecError(
                f"spec entry {path!r} must be a tuple with one permutation name or None per "
                f"axis, got {axes!r}"
            )
        for axis, name in enumerate(axes):
            if name is None:
                continue
            if not isinstance(name, str):
                raise SpecError(f"spec entry {path!r} axis {axis}: permutation name must be a str, got {name!r}")
            perm_to_axes.setdefault(name, []).append((path, axis))
    return PermutationSpec(
        axes_to_perm={p: tuple(a) for p, a in axes_to_perm.items()},
        perm_to_axes={k: tuple(v) for k, v in perm_to_axes.items()},
    )


# ---------------------------------------------------------------------------
# Registry
# ---------------------------------------------------------------------------

_REGISTRY: dict[str, Callable[..., PermutationSpec]] = {}


def register_spec(name: str):
    """Decorator registering ``fn(**kwargs) -> PermutationSpec`` under ``name``.

    Example::

        @register_spec("my_mlp")
        def my_mlp_spec(num_layers=3): ...
    """

    def decorator(fn: Callable[..., PermutationSpec]):
        existing = _REGISTRY.get(name)
        # Re-registering the same function (e.g. a module reload) is harmless;
        # a different function under a taken name is a mistake.
        if existing is not None and existing.__qualname__ != fn.__qualname__:
            raise ValueError(f"a spec named {name!r} is already registered ({existing.__qualname__})")
        _REGISTRY[name] = fn
        return fn

    return decorator


def get_spec(name: str, **kwargs) -> PermutationSpec:
    """Builds the registered spec ``name`` with keyword arguments.

    Raises:
        KeyError: if no spec of that name is registered; lists the known names.
    """
    if name not in _REGISTRY:
        raise KeyError(f"unknown permutation spec {name!r}; registered specs: {', '.join(available_specs()) or '(none)'}")
    return _REGISTRY[name](**kwargs)


def available_specs() -> tuple[str, ...]:
    """Names of all registered specs, sorted."""
    return tuple(sorted(_REGISTRY))


# ---------------------------------------------------------------------------
# Path handling
# ---------------------------------------------------------------------------


def _key_str(entry) -> str:
    for attr in ("key", "name", "idx"):
        if hasattr(entry, attr):
            return str(getattr(entry, attr))
    return str(entry)


def _has_outer_params_level(params: Params) -> bool:
    return isinstance(params, Mapping) and list(params.keys()) == ["params"] and isinstance(params["params"], Mapping)


def flatten_params(params: Params) -> dict[str, jax.Array]:
    """Returns ``{path: leaf}`` with ``/``-joined paths, outer ``params`` level dropped."""
    strip = _has_outer_params_level(params)
    flat = {}
    for key_path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
        parts = [_key_str(k) for k in key_path]
        if strip:
            parts = parts[1:]
        flat["/".join(parts)] = leaf
    return flat


def unflatten_like(params: Params, flat: Mapping[str, Any]) -> Params:
    """Inverse of :func:`flatten_params`: rebuilds ``params``' exact structure from ``flat``."""
    treedef = jax.tree_util.tree_structure(params)
    paths = list(flatten_params(params))
    return jax.tree_util.tree_unflatten(treedef, [flat[p] for p in paths])


def perm_sizes(spec: PermutationSpec, params: Params) -> dict[str, int]:
    """Size of each permutation, read from the first axis it acts on."""
    flat = flatten_params(params)
    sizes = {}
    for name in spec.names:
        path, axis = spec.perm_to_axes[name][0]
        if path not in flat:
            raise SpecError(f"permutation {name!r} acts on {path!r}, which is not in the params")
        sizes[name] = int(np.shape(flat[path])[axis])
    return sizes


# ---------------------------------------------------------------------------
# Permutations
# ---------------------------------------------------------------------------


def identity_permutation(spec: PermutationSpec, params: Params) -> dict[str, jax.Array]:
    """The identity: ``{name: arange(n)}`` for every permutation of ``spec``."""
    return {name: jnp.arange(n, dtype=jnp.int32) for name, n in perm_sizes(spec, params).items()}


def random_permutation(key: PRNGKey, spec: PermutationSpec, params: Params) -> dict[str, jax.Array]:
    """A uniformly random permutation per name; name ``i`` (sorted) uses ``fold_in(key, i)``."""
    sizes = perm_sizes(spec, params)
    return {
        name: jax.random.permutation(jax.random.fold_in(key, i), sizes[name]).astype(jnp.int32)
        for i, name in enumerate(spec.names)
    }


def inverse_permutation(perm: Permutation) -> dict[str, jax.Array]:
    """``inv[name][perm[name][i]] = i`` for every name."""
    return {name: jnp.argsort(p).astype(jnp.int32) for name, p in perm.items()}


def compose_permutations(first: Permutation, second: Permutation) -> dict[str, jax.Array]:
    """The permutation equal to applying ``first`` and then ``second``.

    ``apply(second, apply(first, x)) == apply(compose(first, second), x)``.
    """
    return {name: jnp.asarray(first[name])[jnp.asarray(second[name])] for name in first}


def _permute_leaf(leaf, axes: tuple[str | None, ...], perm: Permutation, except_axis: int | None = None):
    for axis, name in enumerate(axes):
        if name is not None and axis != except_axis:
            leaf = jnp.take(leaf, perm[name], axis=axis)
    return leaf


def apply_permutation(spec: PermutationSpec, perm: Permutation, params: Params) -> Params:
    """Permutes every axis the spec names; returns the structure ``params`` had.

    Args:
        spec: the model's permutation spec.
        perm: ``{name: int array (n,)}`` covering every name of ``spec``.
        params: parameter pytree (nested dict, optionally under ``"params"``).

    Raises:
        SpecError: if ``perm`` lacks a permutation the spec uses, or a params
            path is not in the spec.
    """
    missing = [n for n in spec.names if n not in perm]
    if missing:
        raise SpecError(f"permutation dict lacks {missing}; it must cover every name in the spec: {list(spec.names)}")
    flat = flatten_params(params)
    out = {}
    for path, leaf in flat.items():
        if path not in spec.axes_to_perm:
            raise SpecError(f"param {path!r} is not in the permutation spec; add it (None for unpermuted axes)")
        out[path] = _permute_leaf(leaf, spec.axes_to_perm[path], perm)
    return unflatten_like(params, out)


# ---------------------------------------------------------------------------
# Validation
# ---------------------------------------------------------------------------


def _check_structure(spec: PermutationSpec, params: Params) -> None:
    flat = flatten_params(params)
    for path in flat:
        if path not in spec.axes_to_perm:
            raise SpecError(
                f"param {path!r} (shape {tuple(np.shape(flat[path]))}) is not named in the permutation spec; "
                f"add an entry with one permutation name or None per axis"
            )
    for path, axes in spec.axes_to_perm.items():
        if path not in flat:
            raise SpecError(
                f"spec entry {path!r} names a param that does not exist; params have: {sorted(flat)}"
            )
        shape = np.shape(flat[path])
        if len(axes) != len(shape):
            raise SpecError(
                f"spec entry {path!r} lists {len(axes)} axes {axes} but the param has ndim {len(shape)} "
                f"(shape {tuple(shape)}); give exactly one entry per axis"
            )
    for name in spec.names:
        sites = spec.perm_to_axes[name]
        sizes = {(p, a): np.shape(flat[p])[a] for p, a in sites}
        (ref_site, ref_size) = next(iter(sizes.items()))
        for (p, a), n in sizes.items():
            if n != ref_size:
                raise SpecError(
                    f"permutation {name!r} acts on axes of different sizes: {p!r} axis {a} has size {n} "
                    f"but {ref_site[0]!r} axis {ref_site[1]} has size {ref_size}"
                )


def _max_abs_diff(x, y) -> float:
    diffs = jax.tree_util.tree_map(lambda u, v: jnp.max(jnp.abs(jnp.asarray(u, jnp.float32) - jnp.asarray(v, jnp.float32))), x, y)
    return float(max(jax.tree_util.tree_leaves(diffs), default=0.0))


def validate_spec(
    spec: PermutationSpec,
    params: Params,
    apply_fn: Callable[[Params, Any], Any] | None = None,
    inputs: Any = None,
    *,
    key: PRNGKey | None = None,
    atol: float = 1e-4,
) -> None:
    """Checks that ``spec`` fits ``params`` and, optionally, that it is a real symmetry.

    Structural checks: every array leaf is named in the spec and every spec path
    exists; each entry has exactly ``ndim`` axes; all axes sharing a permutation
    have the same size. Functional check (when ``apply_fn`` and ``inputs`` are
    given): a random permutation leaves ``apply_fn(params, inputs)`` unchanged
    within ``atol``. On failure, each permutation is tried alone so the error
    names the one that breaks the function and the axes it acts on.

    This is the check that would have caught the ported study's bug: the output
    axis of one layer and the input axis of the next were permuted by different
    permutations, so "any permutation destroys model performance".

    Args:
        spec: the spec to check.
        params: the parameter pytree (with or without the outer ``params`` level).
        apply_fn: ``apply_fn(params, inputs) -> pytree of arrays``; receives
            params in the structure given here.
        inputs: inputs for ``apply_fn``.
        key: PRNG key for the random permutation (default ``jax.random.key(0)``).
        atol: absolute tolerance on the outputs (scaled by their magnitude, so
            large logits are compared relatively).

    Raises:
        SpecError: naming the offending path, axis and/or permutation.
    """
    _check_structure(spec, params)
    if apply_fn is None and inputs is None:
        return
    if apply_fn is None or inputs is None:
        raise SpecError("the functional check needs both apply_fn and inputs")
    key = jax.random.key(0) if key is None else key
    ref = apply_fn(params, inputs)
    scale = max(1.0, float(max(jnp.max(jnp.abs(jnp.asarray(x, jnp.float32))) for x in jax.tree_util.tree_leaves(ref))))
    tol = atol * scale
    perm = random_permutation(key, spec, params)
    diff = _max_abs_diff(ref, apply_fn(apply_permutation(spec, perm, params), inputs))
    if diff <= tol:
        return
    # Localise: permute one name at a time (the others at identity).
    ident = identity_permutation(spec, params)
    culprits = []
    for name in spec.names:
        one = dict(ident, **{name: perm[name]})
        d = _max_abs_diff(ref, apply_fn(apply_permutation(spec, one, params), inputs))
        if d > tol:
            culprits.append((name, d))
    detail = "; ".join(
        f"permutation {n!r} (acts on {', '.join(f'{p!r} axis {a}' for p, a in spec.perm_to_axes[n])}) changes outputs by {d:.3g}"
        for n, d in culprits
    ) or "no single permutation breaks it alone; their combination does"
    raise SpecError(
        f"spec is not a symmetry of the model: a random permutation changes the outputs by {diff:.3g} "
        f"(tolerance {tol:.3g}). {detail}. Every axis carrying the same hidden units (a layer's output "
        f"axis and the next layer's input axis) must use the same permutation name."
    )



def check_pair(spec: PermutationSpec, params_a: Params, params_b: Params) -> None:
    """Checks that both models fit ``spec`` and have equal shapes path by path.

    Raises:
        SpecError: naming the first path whose shapes differ (e.g. models of
            different widths) or the structural problem of either model.
    """
    for label, params in (("model A", params_a), ("model B", params_b)):
        try:
            _check_structure(spec, params)
        except SpecError as err:
            raise SpecError(f"{label}: {err}") from None
    flat_a, flat_b = flatten_params(params_a), flatten_params(params_b)
    for path in sorted(flat_a):
        sa, sb = tuple(np.shape(flat_a[path])), tuple(np.shape(flat_b[path]))
        if sa != sb:
            raise SpecError(
                f"models A and B differ at {path!r}: shape {sa} vs {sb}; only models of the same "
                f"architecture and widths can be matched"
            )


def check_permutation(spec: PermutationSpec, params: Params, perm: Permutation, what: str = "permutation") -> None:
    """Checks that ``perm`` covers every name of ``spec`` with a valid permutation of the right size.

    Raises:
        SpecError: naming the permutation that is missing, has the wrong size or
            repeats an index.
    """
    sizes = perm_sizes(spec, params)
    for name, n in sizes.items():
        if name not in perm:
            raise SpecError(f"{what} lacks {name!r}; it must cover {list(spec.names)}")
        p = np.asarray(perm[name])
        if p.shape != (n,) or not np.array_equal(np.sort(p), np.arange(n)):
            raise SpecError(f"{what}[{name!r}] is not a permutation of range({n}) (shape {p.shape})")


def starting_permutation(
    spec: PermutationSpec, params_a: Params, params_b: Params, *, fixed=(), init_perm=None
) -> dict[str, jax.Array]:
    """The checks every matcher starts with, and its starting point.

    Checks that both models fit ``spec`` and each other and that ``fixed``
    names known permutations; returns ``init_perm`` (validated) or the identity.

    Raises:
        SpecError: naming the model, path, permutation or fixed name at fault.
    """
    check_pair(spec, params_a, params_b)
    unknown = [f for f in fixed if f not in spec.perm_to_axes]
    if unknown:
        raise SpecError(f"fixed names unknown permutations {unknown}; the spec has {list(spec.names)}")
    if init_perm is None:
        return identity_permutation(spec, params_a)
    check_permutation(spec, params_a, init_perm, what="init_perm")
    return {name: jnp.asarray(init_perm[name], jnp.int32) for name in spec.names}
