import flax
import jax
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from rebasin_jax import spec as S
from rebasin_jax.models import mlp_spec, modular_addition_mlp_spec
from tests.conftest import tiny_mlp, tiny_modadd


def _allclose_trees(a, b, atol=0.0):
    la, lb = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
    return len(la) == len(lb) and all(np.allclose(x, y, atol=atol, rtol=0) for x, y in zip(la, lb))


def _random_mlp_params(widths, seed, d_in=3, d_out=2):
    rng = np.random.default_rng(seed)
    dims = [d_in, *widths, d_out]
    return {
        f"Dense_{i}": {"kernel": rng.normal(size=(dims[i], dims[i + 1])).astype(np.float32),
                       "bias": rng.normal(size=(dims[i + 1],)).astype(np.float32)}
        for i in range(len(dims) - 1)
    }


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), widths=st.lists(st.integers(1, 9), min_size=1, max_size=4))
def test_permutation_then_inverse_is_identity(seed, widths):
    params = _random_mlp_params(widths, seed)
    spec = mlp_spec(len(widths))
    perm = S.random_permutation(jax.random.key(seed), spec, params)
    permuted = S.apply_permutation(spec, perm, params)
    back = S.apply_permutation(spec, S.inverse_permutation(perm), permuted)
    assert _allclose_trees(back, params)
    # compose(perm, inverse) is the identity permutation
    ident = S.compose_permutations(perm, S.inverse_permutation(perm))
    for name, p in ident.items():
        np.testing.assert_array_equal(p, np.arange(len(p)))


def test_compose_matches_sequential_application():
    _, params, _ = tiny_mlp()
    spec = mlp_spec(3)
    p1 = S.random_permutation(jax.random.key(1), spec, params)
    p2 = S.random_permutation(jax.random.key(2), spec, params)
    seq = S.apply_permutation(spec, p2, S.apply_permutation(spec, p1, params))
    assert _allclose_trees(seq, S.apply_permutation(spec, S.compose_permutations(p1, p2), params))


def test_random_permutation_deterministic_and_key_dependent():
    _, params, _ = tiny_mlp()
    spec = mlp_spec(3)
    a = S.random_permutation(jax.random.key(7), spec, params)
    b = S.random_permutation(jax.random.key(7), spec, params)
    c = S.random_permutation(jax.random.key(8), spec, params)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert any(not np.array_equal(a[k], c[k]) for k in a)


@pytest.mark.parametrize("wrap", ["plain", "outer", "frozen"])
def test_apply_preserves_structure_and_function(wrap):
    model, params, x = tiny_mlp()
    spec = mlp_spec(3)
    given_params = {"plain": params, "outer": {"params": params}, "frozen": flax.core.freeze({"params": params})}[wrap]
    perm = S.random_permutation(jax.random.key(3), spec, given_params)
    out = S.apply_permutation(spec, perm, given_params)
    assert jax.tree_util.tree_structure(out) == jax.tree_util.tree_structure(given_params)
    variables = out if wrap != "plain" else {"params": out}
    np.testing.assert_allclose(model.apply(variables, x), model.apply({"params": params}, x), atol=1e-5)
    # and it is really permuted, not a no-op
    assert not _allclose_trees(out, given_params)


def test_identity_permutation_is_noop():
    _, params, _ = tiny_modadd()
    spec = modular_addition_mlp_spec()
    assert _allclose_trees(S.apply_permutation(spec, S.identity_permutation(spec, params), params), params)


def test_spec_is_immutable_and_hashable():
    spec = mlp_spec(2)
    assert spec == mlp_spec(2) and hash(spec) == hash(mlp_spec(2))
    assert spec != mlp_spec(3)
    with pytest.raises(TypeError):
        spec.axes_to_perm["x"] = (None,)
    with pytest.raises(Exception):
        spec.axes_to_perm = {}
    assert set(spec.perm_to_axes["P_0"]) == {("Dense_0/kernel", 1), ("Dense_0/bias", 0), ("Dense_1/kernel", 0)}


def test_registry():
    assert {"mlp", "modular_addition_mlp"} <= set(S.available_specs())
    assert S.get_spec("mlp", num_hidden_layers=2) == mlp_spec(2)
    with pytest.raises(KeyError, match="modular_addition_mlp"):
        S.get_spec("resnet-9000")

    @S.register_spec("test_only_spec")
    def _build(n=1):
        return S.permutation_spec_from_axes_to_perm({"w": ("P", None)})

    assert S.get_spec("test_only_spec").perm_to_axes["P"] == (("w", 0),)
    with pytest.raises(ValueError, match="already registered"):

        @S.register_spec("mlp")
        def other():
            return None


# --- validate_spec rejects each kind of broken spec ------------------------


def _mlp_axes():
    return dict(mlp_spec(3).axes_to_perm)


def _check_rejected(axes, params, match, **kw):
    spec = S.permutation_spec_from_axes_to_perm(axes)
    with pytest.raises(S.SpecError, match=match):
        S.validate_spec(spec, params, **kw)


def test_validate_accepts_registered_specs_functionally():
    for embed_mode in ("sum", "concat"):
        for use_bias in (False, True):
            model, params, x = tiny_modadd(embed_mode=embed_mode, use_bias=use_bias)
            spec = S.get_spec("modular_addition_mlp", embed_mode=embed_mode, use_bias=use_bias)
            S.validate_spec(spec, params, lambda p, x: model.apply({"params": p}, x), x)
    model, params, x = tiny_mlp()
    S.validate_spec(mlp_spec(3), {"params": params}, lambda p, x: model.apply(p, x), x)


def test_validate_rejects_missing_path():
    _, params, _ = tiny_mlp()
    axes = _mlp_axes()
    del axes["Dense_1/bias"]
    _check_rejected(axes, params, "'Dense_1/bias'.*not named")


def test_validate_rejects_extra_path():
    _, params, _ = tiny_mlp()
    axes = _mlp_axes()
    axes["Dense_9/kernel"] = ("P_2", None)
    _check_rejected(axes, params, "'Dense_9/kernel'.*does not exist")


def test_validate_rejects_wrong_axis_count():
    _, params, _ = tiny_mlp()
    axes = _mlp_axes()
    axes["Dense_1/kernel"] = ("P_0",)
    _check_rejected(axes, params, "'Dense_1/kernel'.*ndim 2")


def test_validate_rejects_size_mismatch():
    _, params, _ = tiny_mlp(features=(16, 12, 8))
    axes = _mlp_axes()
    axes["Dense_2/bias"] = ("P_0",)  # size 8 vs 16
    _check_rejected(axes, params, "'P_0'.*'Dense_2/bias' axis 0 has size 8")


def test_validate_rejects_functionally_wrong_spec():
    # The ported study's bug: a layer's output axis and the next layer's input
    # axis permuted by *different* permutations. Same sizes, so only the
    # functional check can catch it.
    model, params, x = tiny_mlp(features=(10, 10, 10))
    axes = _mlp_axes()
    axes["Dense_2/kernel"] = ("P_0", "P_2")
    spec = S.permutation_spec_from_axes_to_perm(axes)
    S.validate_spec(spec, params)  # structurally fine
    with pytest.raises(S.SpecError, match="not a symmetry.*'P_0'.*'Dense_2/kernel' axis 0"):
        S.validate_spec(spec, params, lambda p, x: model.apply({"params": p}, x), x)


def test_validate_rejects_unpermuted_embedding_consumer():
    # Permuting the embedding without the first layer's input rows breaks the model.
    model, params, x = tiny_modadd()
    axes = dict(modular_addition_mlp_spec().axes_to_perm)
    axes["Dense_0/kernel"] = (None, "P_0")
    spec = S.permutation_spec_from_axes_to_perm(axes)
    with pytest.raises(S.SpecError, match="'P_embed'"):
        S.validate_spec(spec, params, lambda p, x: model.apply({"params": p}, x), x)


def test_apply_permutation_requires_all_names():
    _, params, _ = tiny_mlp()
    spec = mlp_spec(3)
    perm = S.identity_permutation(spec, params)
    del perm["P_1"]
    with pytest.raises(S.SpecError, match="P_1"):
        S.apply_permutation(spec, perm, params)


def test_bad_spec_entries():
    with pytest.raises(S.SpecError, match="'w'"):
        S.permutation_spec_from_axes_to_perm({"w": "P_0"})
    with pytest.raises(S.SpecError, match="axis 1"):
        S.permutation_spec_from_axes_to_perm({"w": (None, 3)})
