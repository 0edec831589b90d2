"""All three matchers on two independently trained models (tiny MNIST-like MLPs)."""

import functools

import jax
import jax.numpy as jnp
import pytest

from rebasin_jax import train as T
from rebasin_jax.interpolate import lerp
from rebasin_jax.matching.activation import activation_matching
from rebasin_jax.matching.ste import ste_matching
from rebasin_jax.matching.weight import weight_matching
from rebasin_jax.models import hidden_activations, mlp_spec
from rebasin_jax.spec import apply_permutation
from tests.conftest import synthetic_mnist


@pytest.fixture(scope="module")
def trained_pair():
    data = synthetic_mnist(n_train=2000, n_test=200)
    cfg = T.MNISTConfig(features=(64, 64), batch_size=100, epochs=5)
    result = T.train_mnist(data, cfg, seeds=(0, 1), progress=False)
    x = jnp.asarray(data.train.images.reshape(len(data.train.images), -1), jnp.float32) / 255
    y = jnp.asarray(data.train.labels)
    return cfg.model(), T.unstack(result.params, 0), T.unstack(result.params, 1), x, y


def test_every_method_beats_naive_interpolation(trained_pair):
    model, pa, pb, x, y = trained_pair
    spec = mlp_spec(2)
    metric = T.ClassificationMetrics(model)

    def loss_fn(params, batch):
        return metric(params, *batch)["loss"]

    def midpoint(perm):
        return float(metric(lerp(0.5, pa, pb if perm is None else apply_permutation(spec, perm, pb)), x, y)["loss"])

    naive = midpoint(None)
    batches = [(x[i : i + 200], y[i : i + 200]) for i in range(0, len(x), 200)]
    perms = {
        "weight": weight_matching(jax.random.key(0), spec, pa, pb),
        "activation": activation_matching(spec, pa, pb, functools.partial(hidden_activations, model), [b[0] for b in batches]),
        "ste": ste_matching(jax.random.key(0), spec, pa, pb, loss_fn, batches, epochs=2),
    }
    endpoints = max(float(metric(pa, x, y)["loss"]), float(metric(pb, x, y)["loss"]))
    assert naive > endpoints + 0.5  # there is a real barrier to remove
    for name, perm in perms.items():
        assert midpoint(perm) < 0.5 * naive, name
