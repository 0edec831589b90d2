import copy
import functools

import jax
import numpy as np
import pytest

from rebasin_jax.models import hidden_activations, modular_addition_mlp_spec
from rebasin_jax.spec import permutation_spec_from_axes_to_perm, random_permutation
from rebasin_jax.study import (
    MatchingInputs,
    assert_same_function,
    compare_methods,
    load_permutation,
    save_permutation,
    validate_results,
)
from rebasin_jax.train import ClassificationMetrics
from tests.conftest import tiny_modadd


def _apply(model, params, x):
    return model.apply({"params": params}, x)


def _loss(metric, params, batch):
    return metric(params, *batch)["loss"]


def test_permutation_round_trip(tmp_path):
    _, params, _ = tiny_modadd()
    spec = modular_addition_mlp_spec()
    perm = random_permutation(jax.random.key(0), spec, params)
    back = load_permutation(save_permutation(tmp_path / "p.npz", perm))
    assert set(back) == set(perm) and all(np.array_equal(back[k], perm[k]) for k in perm)


def test_assert_same_function_catches_a_broken_spec():
    model, params, x = tiny_modadd()
    good = modular_addition_mlp_spec()
    axes = dict(good.axes_to_perm)
    axes["Dense_1/kernel"] = ("Q", "P_1")  # the ported study's bug: the next layer's input uses another permutation
    bad = permutation_spec_from_axes_to_perm(axes)
    from rebasin_jax.spec import apply_permutation

    apply_fn = functools.partial(_apply, model)
    perm = random_permutation(jax.random.key(1), bad, params)
    with pytest.raises(RuntimeError, match="weight/all.*does not reproduce"):
        assert_same_function(apply_fn, params, apply_permutation(bad, perm, params), x, what="weight/all")
    perm = random_permutation(jax.random.key(1), good, params)
    assert assert_same_function(apply_fn, params, apply_permutation(good, perm, params), x, what="ok") < 1e-5


def test_compare_methods_schema(tmp_path):
    model, pa, x = tiny_modadd()
    _, pb, _ = tiny_modadd(seed=1)
    y = (x[:, 0] + x[:, 1]) % 11
    spec = modular_addition_mlp_spec()
    metric = ClassificationMetrics(model)
    inputs = MatchingInputs(functools.partial(hidden_activations, model), [x], functools.partial(_loss, metric),
                            [(x, y)], ste_epochs=1)
    curves = compare_methods(
        key=jax.random.key(0), spec=spec, apply_fn=functools.partial(_apply, model), metric_fn=metric,
        params_a=pa, params_b=pb, splits={"train": (x[:60], y[:60]), "test": (x[60:], y[60:])}, check_inputs=x,
        matching_inputs=inputs, methods=("weight", "activation", "ste"), variants={"all": (), "no_embed": ("P_embed",)},
        lambdas=[0.0, 0.5, 1.0], perm_dir=tmp_path / "perms", results_dir=tmp_path,
    )
    assert set(curves) == {"naive", "weight/all", "weight/no_embed", "activation/all", "activation/no_embed",
                           "ste/all", "ste/no_embed"}
    assert curves["weight/no_embed"]["permutation"] == "perms/weight_no_embed.npz"
    np.testing.assert_array_equal(load_permutation(tmp_path / "perms/weight_no_embed.npz")["P_embed"], np.arange(8))
    results = {"experiment": "t", "config": {}, "lambdas": [0.0, 0.5, 1.0], "curves": curves,
               "models": {m: {"seed": 0, "train_loss": 0, "test_loss": 0, "train_acc": 0, "test_acc": 0,
                              "checkpoint": "x"} for m in "ab"}}
    validate_results(results)
    broken = copy.deepcopy(results)
    del broken["curves"]["ste/all"]["barrier"]["test_acc"]
    with pytest.raises(ValueError, match="ste/all.*barrier lacks 'test_acc'"):
        validate_results(broken)
    broken = copy.deepcopy(results)
    broken["curves"]["naive"]["test_loss"] = [1.0]
    with pytest.raises(ValueError, match="naive.*test_loss has 1 values"):
        validate_results(broken)
