"""Shared fixtures: tiny models, so the whole suite stays fast on 2 CPU cores."""

import os
from pathlib import Path

import jax
import jax.numpy as jnp
import pytest

from rebasin_jax.models import MLP, ModularAdditionMLP

# ../shared/data/mnist relative to the repository root, unless MNIST_DIR says otherwise.
DEFAULT_MNIST = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "mnist"


def mnist_dir():
    path = Path(os.environ.get("MNIST_DIR", DEFAULT_MNIST))
    return path if (path / "train-images-idx3-ubyte.gz").exists() or (path / "train-images-idx3-ubyte").exists() else None


@pytest.fixture
def mnist_path():
    path = mnist_dir()
    if path is None:
        pytest.skip(f"MNIST IDX files not found (set MNIST_DIR; looked in {DEFAULT_MNIST})")
    return path


def tiny_mlp(features=(16, 12, 8), input_dim=6, num_classes=5, use_bias=True, seed=0):
    model = MLP(tuple(features), num_classes=num_classes, use_bias=use_bias, input_dim=input_dim)
    x = jax.random.normal(jax.random.key(100 + seed), (32, input_dim))
    params = model.init(jax.random.key(seed), x)["params"]
    return model, params, x


def tiny_modadd(p=11, d=8, hidden=(12, 8), embed_mode="sum", use_bias=False, seed=0):
    model = ModularAdditionMLP(p, d, tuple(hidden), embed_mode, use_bias)
    a, b = jnp.meshgrid(jnp.arange(p), jnp.arange(p), indexing="ij")
    x = jnp.stack([a.ravel(), b.ravel()], axis=1)
    params = model.init(jax.random.key(seed), x)["params"]
    return model, params, x


def synthetic_mnist(n_train=600, n_test=200, seed=0):
    """An MNIST-shaped dataset an MLP can learn: the label is the 28x28 image's
    brightest of ten horizontal bands."""
    from rebasin_jax.data import MNIST, Split
    import numpy as np

    rng = np.random.default_rng(seed)

    def make(n):
        labels = rng.integers(0, 10, n)
        images = rng.integers(0, 120, (n, 28, 28)).astype(np.uint8)
        for i, y in enumerate(labels):
            images[i, 2 + 2 * y : 4 + 2 * y, :] += 120
        return Split(images, labels.astype(np.int32))

    return MNIST(make(n_train), make(n_test))
