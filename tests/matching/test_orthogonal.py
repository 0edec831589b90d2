import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.stats import ortho_group

from rebasin_jax.matching.orthogonal import align, apply_orthogonal, orthogonal_weight_matching, procrustes
from rebasin_jax.matching.weight import weight_matching, weight_matching_objective
from rebasin_jax.models import modular_addition_mlp_spec
from rebasin_jax.spec import SpecError, apply_permutation, random_permutation
from tests.conftest import tiny_modadd


def _close(a, b, atol):
    return all(np.allclose(x, y, atol=atol) for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)))


@pytest.mark.parametrize("embed_mode", ["sum", "concat"])
def test_rotation_keeps_the_function(embed_mode):
    model, params, x = tiny_modadd(embed_mode=embed_mode, use_bias=True)
    spec = modular_addition_mlp_spec(2, embed_mode, True)
    q = ortho_group.rvs(8, random_state=0)
    rotated = apply_orthogonal(spec, {"P_embed": q}, params)
    np.testing.assert_allclose(model.apply({"params": rotated}, x), model.apply({"params": params}, x), atol=1e-5)
    assert not _close(rotated, params, 1e-3)
    # rotating back restores the params
    assert _close(apply_orthogonal(spec, {"P_embed": q.T}, rotated), params, 1e-5)


def test_procrustes_maximises_trace():
    rng = np.random.default_rng(0)
    c = rng.normal(size=(6, 6))
    q = procrustes(c)
    np.testing.assert_allclose(q @ q.T, np.eye(6), atol=1e-10)
    best = np.trace(c @ q)
    for _ in range(200):
        assert np.trace(c @ ortho_group.rvs(6, random_state=rng)) <= best + 1e-9
    # a permutation is orthogonal, so the rotation is at least as good as the best permutation
    import itertools

    assert best >= max(np.trace(c @ np.eye(6)[list(p)]) for p in itertools.permutations(range(6))) - 1e-9


def test_recovers_planted_rotation_and_permutation():
    model, params_a, x = tiny_modadd(p=13, d=10, hidden=(20, 14))
    spec = modular_addition_mlp_spec()
    q = ortho_group.rvs(10, random_state=3)
    planted = random_permutation(jax.random.key(4), spec, params_a)
    planted["P_embed"] = jnp.arange(10)
    params_b = apply_permutation(spec, planted, apply_orthogonal(spec, {"P_embed": q}, params_a))
    result = orthogonal_weight_matching(jax.random.key(0), spec, params_a, params_b, orthogonal=("P_embed",))
    aligned = align(spec, result, params_b)
    assert _close(aligned, params_a, 1e-4)
    np.testing.assert_allclose(model.apply({"params": aligned}, x), model.apply({"params": params_b}, x), atol=1e-4)
    hist = np.asarray(result.objective_history)
    assert np.all(np.diff(hist) >= -1e-6 * abs(hist).max())  # float32 rotations: rounding only


def test_at_least_as_good_as_weight_matching_on_independent_models():
    model, params_a, x = tiny_modadd(p=13, d=10, hidden=(20, 14), seed=0)
    _, params_b, _ = tiny_modadd(p=13, d=10, hidden=(20, 14), seed=1)
    spec = modular_addition_mlp_spec()
    wm = weight_matching(jax.random.key(0), spec, params_a, params_b, fixed=("P_embed",))
    result = orthogonal_weight_matching(jax.random.key(0), spec, params_a, params_b, orthogonal=("P_embed",),
                                        init_perm=wm)
    # started from weight matching's hidden permutations, it can only improve on them
    assert result.objective_history[-1] >= weight_matching_objective(spec, wm, params_a, params_b) - 1e-6
    aligned = align(spec, result, params_b)
    np.testing.assert_allclose(model.apply({"params": aligned}, x), model.apply({"params": params_b}, x), atol=1e-4)
    np.testing.assert_array_equal(result.perm["P_embed"], np.arange(10))
    with pytest.raises(SpecError, match="unknown permutations"):
        orthogonal_weight_matching(jax.random.key(0), spec, params_a, params_b, orthogonal=("embed",))
