import numpy as np
import pytest

from rebasin_jax.fourier import embedding_frequency_norms, fourier_basis, jaccard, key_frequencies, neuron_frequencies


@pytest.mark.parametrize("p", [7, 12, 113])
def test_basis_is_orthonormal(p):
    basis = fourier_basis(p)
    np.testing.assert_allclose(basis.matrix @ basis.matrix.T, np.eye(p), atol=1e-10)
    assert basis.freq[0] == 0 and basis.freq.max() == p // 2 and len(basis.labels) == p


def test_embedding_with_known_frequencies():
    p, d = 31, 12
    x = np.arange(p)
    rng = np.random.default_rng(0)
    emb = np.zeros((p, d))
    for k, scale in ((3, 2.0), (11, 1.0)):
        emb += np.outer(np.cos(2 * np.pi * k * x / p), rng.normal(size=d)) * scale
        emb += np.outer(np.sin(2 * np.pi * k * x / p), rng.normal(size=d)) * scale
    emb += 1e-3 * rng.normal(size=(p, d))
    norms = embedding_frequency_norms(emb)
    assert norms.shape == (15,)
    assert key_frequencies(norms) == (3, 11)
    assert key_frequencies(norms, fraction=0.5) == (3,)
    # a constant offset (frequency 0) is not a frequency
    assert key_frequencies(embedding_frequency_norms(emb + 5.0)) == (3, 11)
    assert key_frequencies(np.zeros(5)) == ()


def test_neuron_frequencies_on_constructed_neurons():
    p = 23
    a, b = np.meshgrid(np.arange(p), np.arange(p), indexing="ij")
    w = lambda k: 2 * np.pi * k / p
    neurons = np.stack([
        np.maximum(0, np.cos(w(5) * (a + b))),                 # ReLU of cos(5(a+b)): mostly frequency 5 (+ harmonics)
        np.cos(w(7) * a) + 0.5 * np.sin(w(7) * b),             # linear terms in frequency 7
        np.cos(w(2) * a) * np.cos(w(2) * b),                   # a product term in frequency 2
        np.full((p, p), 3.0),                                  # constant: no frequency
        np.cos(w(4) * a) + np.cos(w(9) * b) * 0.2,             # mostly 4
    ], axis=-1)
    nf = neuron_frequencies(neurons)
    np.testing.assert_array_equal(nf.dominant, [5, 7, 2, 0, 4])
    np.testing.assert_allclose(nf.fraction[1:3], 1.0, atol=1e-10)
    assert nf.fraction[0] > 0.5 and nf.fraction[3] == 0.0
    assert nf.fraction[4] == pytest.approx(1 / 1.04, rel=1e-6)
    with pytest.raises(ValueError, match="p, p, n"):
        neuron_frequencies(np.zeros((3, 4, 2)))


def test_jaccard():
    assert jaccard([1, 2, 3], [2, 3, 4]) == 0.5
    assert jaccard([], []) == 1.0 and jaccard([1], []) == 0.0
