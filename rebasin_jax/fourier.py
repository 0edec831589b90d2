"""Fourier analysis of modular-addition networks (Nanda et al. 2023).

Grokked networks compute ``(a + b) mod p`` with a few "key frequencies" ``k``:
the token embedding is sparse in the Fourier basis of ``Z_p`` (its norm is
concentrated on the ``cos(2 pi k x / p)``, ``sin(2 pi k x / p)`` directions of
those ``k``), and each hidden neuron responds mostly to terms of one
frequency: ``cos/sin(k a)``, ``cos/sin(k b)`` and their products.

All functions are plain NumPy on host arrays; none is on a training path.
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import numpy as np

__all__ = [
    "FourierBasis",
    "fourier_basis",
    "embedding_frequency_norms",
    "key_frequencies",
    "neuron_frequencies",
    "NeuronFrequencies",
    "jaccard",
]


class FourierBasis(NamedTuple):
    """Orthonormal Fourier basis of functions on ``Z_p``.

    Attributes:
        matrix: ``(p, p)``; row ``r`` is a basis function evaluated at ``x = 0..p-1``.
            Rows: the constant, then ``cos k``, ``sin k`` for ``k = 1..p//2``
            (only ``cos`` for ``k = p/2`` when ``p`` is even).
        freq: ``(p,)`` frequency of each row (0 for the constant).
        labels: row names (``"const"``, ``"cos 3"``, ``"sin 3"``, ...).
    """

    matrix: np.ndarray
    freq: np.ndarray
    labels: tuple


def fourier_basis(p: int) -> FourierBasis:
    """The orthonormal Fourier basis of ``Z_p`` (see :class:`FourierBasis`)."""
    if p < 2:
        raise ValueError(f"p must be >= 2, got {p}")
    x = np.arange(p)
    rows, freq, labels = [np.full(p, 1.0 / np.sqrt(p))], [0], ["const"]
    for k in range(1, p // 2 + 1):
        for name, fn in (("cos", np.cos), ("sin", np.sin)):
            if name == "sin" and 2 * k == p:
                continue  # sin(pi x) vanishes on the integers
            v = fn(2 * np.pi * k * x / p)
            rows.append(v / np.linalg.norm(v))
            freq.append(k)
            labels.append(f"{name} {k}")
    return FourierBasis(np.stack(rows), np.asarray(freq), tuple(labels))


def embedding_frequency_norms(embedding, basis: FourierBasis | None = None) -> np.ndarray:
    """Norm of the embedding's Fourier components per frequency.

    Args:
        embedding: ``(p, d)`` token embedding table (vocabulary on axis 0).

    Returns:
        ``(p // 2,)`` array; entry ``k - 1`` is the Frobenius norm of the rows of
        ``F @ embedding`` belonging to frequency ``k`` (cos and sin together).
    """
    emb = np.asarray(embedding, np.float64)
    basis = basis or fourier_basis(emb.shape[0])
    coeff = basis.matrix @ emb  # (p, d)
    energy = (coeff**2).sum(1)
    return np.sqrt(np.bincount(basis.freq, weights=energy)[1:])


def key_frequencies(norms, fraction: float = 0.2) -> tuple[int, ...]:
    """Frequencies whose squared norm is at least ``fraction`` of the largest one.

    Grokked embeddings are sparse: a few frequencies carry almost all the norm
    and the rest are near zero, so the set is insensitive to ``fraction`` over
    a wide range (the study checks this on its models).

    Returns:
        Sorted tuple of frequencies ``k`` (1-based).
    """
    e = np.asarray(norms, np.float64) ** 2
    if not len(e) or e.max() <= 0:
        return ()
    return tuple(int(k) + 1 for k in np.flatnonzero(e >= fraction * e.max()))


class NeuronFrequencies(NamedTuple):
    """Per neuron: ``dominant`` frequency (``(n,)`` int) and the ``fraction`` of its
    non-constant Fourier energy that frequency explains (``(n,)`` float; 0 for a
    dead or constant neuron, whose dominant frequency is reported as 0)."""

    dominant: np.ndarray
    fraction: np.ndarray


def neuron_frequencies(activations, basis: FourierBasis | None = None) -> NeuronFrequencies:
    """Dominant frequency of each neuron from its 2-D Fourier transform.

    Args:
        activations: ``(p, p, n)`` activations of ``n`` neurons on every input
            pair ``(a, b)`` (``a`` on axis 0, ``b`` on axis 1).

    The energy of frequency ``k`` is the summed square of the 2-D coefficients
    whose (row, column) frequencies are ``(k, 0)``, ``(0, k)`` or ``(k, k)``:
    the terms ``cos/sin(k a)``, ``cos/sin(k b)`` and their products, which is how
    a neuron of a grokked network represents ``cos(k (a + b))`` (Nanda et al.).
    """
    acts = np.asarray(activations, np.float64)
    if acts.ndim != 3 or acts.shape[0] != acts.shape[1]:
        raise ValueError(f"activations must be (p, p, n), got {acts.shape}")
    p = acts.shape[0]
    basis = basis or fourier_basis(p)
    coeff = np.einsum("ia,jb,abn->ijn", basis.matrix, basis.matrix, acts)
    energy = coeff**2
    fr, fc = basis.freq[:, None], basis.freq[None, :]
    total = energy.sum((0, 1)) - energy[0, 0]
    per_k = np.stack(
        [energy[((fr == k) & ((fc == 0) | (fc == k))) | ((fr == 0) & (fc == k))].sum(0) for k in range(1, p // 2 + 1)]
    )  # (K, n)
    best = per_k.argmax(0)
    frac = np.where(total > 0, per_k[best, np.arange(acts.shape[2])] / np.where(total > 0, total, 1.0), 0.0)
    dominant = np.where(total > 0, best + 1, 0)
    return NeuronFrequencies(dominant.astype(int), frac)


def jaccard(a: Sequence[int], b: Sequence[int]) -> float:
    """``|a & b| / |a | b|`` (1.0 for two empty sets)."""
    sa, sb = set(a), set(b)
    return 1.0 if not sa and not sb else len(sa & sb) / len(sa | sb)
