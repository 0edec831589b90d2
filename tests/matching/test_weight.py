import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from rebasin_jax.matching.weight import weight_matching, weight_matching_objective
from rebasin_jax.models import mlp_spec, modular_addition_mlp_spec
from rebasin_jax.spec import SpecError, apply_permutation, inverse_permutation, random_permutation
from tests.conftest import tiny_mlp, tiny_modadd


def _same(p, q):
    return all(np.array_equal(np.asarray(p[k]), np.asarray(q[k])) for k in p)


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 10_000), depth=st.integers(2, 4))
def test_recovers_planted_permutation(seed, depth):
    widths = [24, 20, 16, 12][:depth]
    _, params_a, _ = tiny_mlp(features=widths, seed=seed % 7)
    spec = mlp_spec(depth)
    planted = random_permutation(jax.random.key(seed), spec, params_a)
    params_b = apply_permutation(spec, planted, params_a)
    perm = weight_matching(jax.random.key(seed + 1), spec, params_a, params_b)
    # applying the result to B gives back A exactly: perm is planted's inverse
    assert _same(perm, inverse_permutation(planted))
    back = apply_permutation(spec, perm, params_b)
    for x, y in zip(jax.tree_util.tree_leaves(back), jax.tree_util.tree_leaves(params_a)):
        np.testing.assert_array_equal(x, y)


def test_recovers_planted_permutation_modular_addition_with_outer_level():
    _, params_a, _ = tiny_modadd(p=13, d=10, hidden=(20, 14), embed_mode="concat", use_bias=True)
    spec = modular_addition_mlp_spec(2, "concat", True)
    planted = random_permutation(jax.random.key(5), spec, params_a)
    params_b = apply_permutation(spec, planted, params_a)
    perm = weight_matching(jax.random.key(0), spec, {"params": params_a}, {"params": params_b})
    assert _same(perm, inverse_permutation(planted))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_objective_never_decreases_on_independent_models(seed):
    _, params_a, _ = tiny_mlp(features=(32, 32, 32), seed=seed)
    _, params_b, _ = tiny_mlp(features=(32, 32, 32), seed=seed + 10)
    spec = mlp_spec(3)
    perm, info = weight_matching(jax.random.key(seed), spec, params_a, params_b, return_info=True)
    hist = np.asarray(info.objective_history)
    assert len(hist) == info.num_sweeps + 1 and info.converged
    assert np.all(np.diff(hist) >= -1e-9 * np.abs(hist).max())
    assert hist[-1] > hist[0]  # independent random models: matching must gain something
    assert hist[-1] == pytest.approx(weight_matching_objective(spec, perm, params_a, params_b))


def test_fixed_permutations_keep_initial_value():
    _, params_a, _ = tiny_modadd(p=13, d=10, hidden=(20, 14), seed=0)
    _, params_b, _ = tiny_modadd(p=13, d=10, hidden=(20, 14), seed=1)
    spec = modular_addition_mlp_spec()
    # default: identity for fixed names
    perm = weight_matching(jax.random.key(0), spec, params_a, params_b, fixed=("P_embed",))
    np.testing.assert_array_equal(perm["P_embed"], np.arange(10))
    assert not np.array_equal(perm["P_0"], np.arange(20))
    # with init_perm: fixed names keep init_perm's value
    init = random_permutation(jax.random.key(9), spec, params_a)
    perm = weight_matching(jax.random.key(0), spec, params_a, params_b, init_perm=init, fixed=("P_embed", "P_1"))
    np.testing.assert_array_equal(perm["P_embed"], init["P_embed"])
    np.testing.assert_array_equal(perm["P_1"], init["P_1"])


def test_deterministic_for_a_key():
    _, params_a, _ = tiny_mlp(features=(32, 32, 32), seed=0)
    _, params_b, _ = tiny_mlp(features=(32, 32, 32), seed=1)
    spec = mlp_spec(3)
    p1 = weight_matching(jax.random.key(4), spec, params_a, params_b)
    p2 = weight_matching(jax.random.key(4), spec, params_a, params_b)
    assert _same(p1, p2)


def test_warm_start_from_optimum_needs_one_sweep():
    _, params_a, _ = tiny_mlp(features=(32, 32, 32), seed=0)
    _, params_b, _ = tiny_mlp(features=(32, 32, 32), seed=1)
    spec = mlp_spec(3)
    perm = weight_matching(jax.random.key(4), spec, params_a, params_b)
    again, info = weight_matching(jax.random.key(4), spec, params_a, params_b, init_perm=perm, return_info=True)
    assert info.num_sweeps == 1 and _same(perm, again)


def test_hungarian_solver_agrees_with_scipy():
    _, params_a, _ = tiny_mlp(features=(16, 16), seed=0)
    spec = mlp_spec(2)
    planted = random_permutation(jax.random.key(3), spec, params_a)
    params_b = apply_permutation(spec, planted, params_a)
    perm = weight_matching(jax.random.key(0), spec, params_a, params_b, solver="hungarian")
    assert _same(perm, inverse_permutation(planted))
    with pytest.raises(ValueError, match="solver"):
        weight_matching(jax.random.key(0), spec, params_a, params_b, solver="magic")


def test_errors_name_the_problem():
    _, params_a, _ = tiny_mlp(features=(16, 12), seed=0)
    _, params_b, _ = tiny_mlp(features=(16, 10), seed=1)
    spec = mlp_spec(2)
    with pytest.raises(SpecError, match="'Dense_1/bias'|'Dense_1/kernel'"):
        weight_matching(jax.random.key(0), spec, params_a, params_b)
    _, params_b, _ = tiny_mlp(features=(16, 12), seed=1)
    with pytest.raises(SpecError, match="unknown permutations.*'P_7'"):
        weight_matching(jax.random.key(0), spec, params_a, params_b, fixed=("P_7",))
    bad = {"P_0": jnp.zeros(16, jnp.int32), "P_1": jnp.arange(12)}
    with pytest.raises(SpecError, match="init_perm\\['P_0'\\]"):
        weight_matching(jax.random.key(0), spec, params_a, params_b, init_perm=bad)
