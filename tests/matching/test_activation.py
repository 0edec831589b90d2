import functools

import jax
import numpy as np
import pytest

from rebasin_jax.matching.activation import activation_matching, activation_statistics
from rebasin_jax.models import hidden_activations, mlp_spec, modular_addition_mlp_spec
from rebasin_jax.spec import SpecError, apply_permutation, inverse_permutation, random_permutation
from tests.conftest import tiny_mlp, tiny_modadd


def _same(p, q, names=None):
    return all(np.array_equal(np.asarray(p[k]), np.asarray(q[k])) for k in (names or p))


def _batches(x, size):
    return [x[i : i + size] for i in range(0, len(x), size)]


@pytest.mark.parametrize("embed_mode", ["sum", "concat"])
@pytest.mark.parametrize("method", ["correlation", "inner"])
def test_recovers_planted_permutation_including_embedding(embed_mode, method):
    model, params_a, x = tiny_modadd(p=13, d=10, hidden=(20, 14), embed_mode=embed_mode)
    spec = modular_addition_mlp_spec(2, embed_mode)
    planted = random_permutation(jax.random.key(3), spec, params_a)
    params_b = apply_permutation(spec, planted, params_a)
    act = functools.partial(hidden_activations, model)
    perm = activation_matching(spec, params_a, params_b, act, _batches(x, 50), method=method)
    assert _same(perm, inverse_permutation(planted))  # P_embed included
    assert not np.array_equal(perm["P_embed"], np.arange(10))


def test_recovers_planted_permutation_with_noise_mlp():
    model, params_a, x = tiny_mlp(features=(24, 20, 16))
    spec = mlp_spec(3)
    planted = random_permutation(jax.random.key(0), spec, params_a)
    params_b = apply_permutation(spec, planted, params_a)
    leaves, tree = jax.tree_util.tree_flatten(params_b)
    keys = jax.random.split(jax.random.key(1), len(leaves))
    noisy = [w + 1e-3 * jax.random.normal(k, w.shape) for w, k in zip(leaves, keys)]
    params_b = jax.tree_util.tree_unflatten(tree, noisy)
    xs = jax.random.normal(jax.random.key(2), (512, x.shape[1]))
    perm = activation_matching(spec, params_a, params_b, functools.partial(hidden_activations, model), _batches(xs, 128))
    assert _same(perm, inverse_permutation(planted))


def test_streaming_equals_one_batch():
    model, params_a, x = tiny_mlp(seed=0)
    _, params_b, _ = tiny_mlp(seed=1)
    xs = jax.random.normal(jax.random.key(5), (300, x.shape[1])) * 3 + 1  # offset: tests the stable merge
    act = functools.partial(hidden_activations, model)
    names = ("P_0", "P_1", "P_2")
    whole = activation_statistics(act, names, params_a, params_b, [xs])
    parts = activation_statistics(act, names, params_a, params_b, _batches(xs, 37))
    for name in names:
        for field in ("count", "mean_a", "mean_b", "m2_a", "m2_b", "cross"):
            np.testing.assert_allclose(getattr(parts[name], field), getattr(whole[name], field), rtol=2e-4, atol=2e-4)
        np.testing.assert_allclose(parts[name].correlation(), whole[name].correlation(), atol=1e-4)
    # correlation agrees with numpy's
    a = np.asarray(act(params_a, xs)["P_1"], np.float64)
    b = np.asarray(act(params_b, xs)["P_1"], np.float64)
    alive = (a.std(0) > 0)[:, None] & (b.std(0) > 0)[None, :]
    ref = np.corrcoef(a.T, b.T)[: a.shape[1], a.shape[1] :]
    np.testing.assert_allclose(np.asarray(whole["P_1"].correlation())[alive], ref[alive], atol=1e-4)


def test_dead_units_give_no_nans():
    model, params_a, x = tiny_mlp(features=(16, 12, 8))
    _, params_b, _ = tiny_mlp(features=(16, 12, 8), seed=1)
    # kill half of A's first-layer units: zero weights, negative bias -> always 0 after ReLU
    params_a = jax.tree_util.tree_map(lambda v: v, params_a)
    params_a["Dense_0"]["kernel"] = params_a["Dense_0"]["kernel"].at[:, :8].set(0.0)
    params_a["Dense_0"]["bias"] = params_a["Dense_0"]["bias"].at[:8].set(-1.0)
    perm, info = activation_matching(
        mlp_spec(3), params_a, params_b, functools.partial(hidden_activations, model), [x], return_info=True
    )
    corr = np.asarray(info.scores["P_0"])
    assert np.isfinite(corr).all() and np.all(corr[:8] == 0)
    assert sorted(np.asarray(perm["P_0"]).tolist()) == list(range(16))
    assert all(np.isfinite(v) for v in info.matched_score.values())


def test_fixed_and_errors():
    model, params_a, x = tiny_modadd()
    _, params_b, _ = tiny_modadd(seed=1)
    spec = modular_addition_mlp_spec()
    act = functools.partial(hidden_activations, model)
    perm = activation_matching(spec, params_a, params_b, act, [x], fixed=("P_embed", "P_1"))
    np.testing.assert_array_equal(perm["P_embed"], np.arange(8))
    np.testing.assert_array_equal(perm["P_1"], np.arange(8))
    assert not np.array_equal(perm["P_0"], np.arange(12))
    _, wider, _ = tiny_modadd(hidden=(12, 9), seed=1)
    with pytest.raises(SpecError, match="'Dense_1/kernel'|'Dense_2/kernel'"):
        activation_matching(spec, params_a, wider, act, [x])
    with pytest.raises(SpecError, match="no activations for \\['P_0'\\]"):
        activation_matching(spec, params_a, params_b, lambda p, b: {"P_embed": b, "P_1": b}, [x])
    with pytest.raises(ValueError, match="batches is empty"):
        activation_matching(spec, params_a, params_b, act, [])
    with pytest.raises(ValueError, match="method"):
        activation_matching(spec, params_a, params_b, act, [x], method="cosine")
