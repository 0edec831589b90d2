import jax
import numpy as np
import pytest

from rebasin_jax.models import MLP, build_model, hidden_activations, model_config, model_name
from rebasin_jax.spec import apply_permutation, get_spec, perm_sizes, random_permutation, validate_spec
from tests.conftest import tiny_mlp, tiny_modadd


@pytest.mark.parametrize("features", [(7,), (12, 9), (16, 12, 8, 5)])
def test_mlp_spec_valid_for_depths(features):
    model, params, x = tiny_mlp(features=features)
    spec = get_spec("mlp", num_hidden_layers=len(features))
    validate_spec(spec, params, lambda p, x: model.apply({"params": p}, x), x)
    nobias = tiny_mlp(features=features, use_bias=False)
    validate_spec(get_spec("mlp", num_hidden_layers=len(features), use_bias=False), nobias[1],
                  lambda p, x: nobias[0].apply({"params": p}, x), nobias[2])


@pytest.mark.parametrize("hidden", [(12,), (12, 8), (10, 8, 6)])
@pytest.mark.parametrize("embed_mode", ["sum", "concat"])
def test_modadd_spec_valid(hidden, embed_mode):
    model, params, x = tiny_modadd(hidden=hidden, embed_mode=embed_mode, use_bias=True)
    spec = get_spec("modular_addition_mlp", num_hidden_layers=len(hidden), embed_mode=embed_mode, use_bias=True)
    validate_spec(spec, params, lambda p, x: model.apply({"params": p}, x), x)


@pytest.mark.parametrize("which", ["mlp", "modadd"])
def test_activations_follow_the_permutation(which):
    """Permuting the params permutes each sown activation along its unit axis."""
    if which == "mlp":
        model, params, x = tiny_mlp()
        spec = get_spec("mlp", num_hidden_layers=3)
    else:
        model, params, x = tiny_modadd(embed_mode="concat")
        spec = get_spec("modular_addition_mlp", embed_mode="concat")
    acts = hidden_activations(model, params, x)
    assert set(acts) == set(spec.names)
    sizes = perm_sizes(spec, params)
    for name, a in acts.items():
        assert a.shape[1] == sizes[name]
    perm = random_permutation(jax.random.key(0), spec, params)
    permuted = hidden_activations(model, apply_permutation(spec, perm, params), x)
    for name in spec.names:
        np.testing.assert_allclose(permuted[name], acts[name][:, np.asarray(perm[name])], atol=1e-5)


def test_embedding_activation_rows_are_token_embeddings():
    model, params, x = tiny_modadd()
    acts = hidden_activations(model, params, x)
    table = np.asarray(params["Embed_0"]["embedding"])
    np.testing.assert_allclose(acts["P_embed"], table[np.asarray(x).reshape(-1)], atol=1e-6)


def test_build_model_round_trip_and_errors():
    model, _, _ = tiny_modadd(embed_mode="concat")
    rebuilt, spec = build_model(model_name(model), model_config(model))
    assert rebuilt == model and spec == get_spec("modular_addition_mlp", embed_mode="concat")
    with pytest.raises(KeyError, match="known models"):
        build_model("transformer", {})
    with pytest.raises(ValueError, match="no config field.*'width'"):
        build_model("mlp", {"width": 3})


def test_mlp_input_size_checked():
    with pytest.raises(ValueError, match="784 input features.*got 10"):
        MLP().init(jax.random.key(0), np.zeros((1, 10), np.float32))


def test_torch_like_init_scales():
    model, params, _ = tiny_modadd(p=113, d=64, hidden=(128, 64))
    emb = np.asarray(params["Embed_0"]["embedding"])
    assert abs(emb.std() - 1 / 8) < 0.01
    k = np.asarray(params["Dense_1"]["kernel"])  # fan_in 128: U(-1/sqrt(128), 1/sqrt(128))
    assert np.abs(k).max() <= 1 / np.sqrt(128) + 1e-7 and np.abs(k).max() > 0.9 / np.sqrt(128)
