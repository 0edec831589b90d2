"""Datasets: MNIST from IDX files (or TFDS) and modular addition.

MNIST sources, in order: the ``data_dir`` argument, the ``MNIST_DIR``
environment variable, then TensorFlow Datasets (which downloads when online).
No function here downloads anything unless TFDS is reached.
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path
from typing import NamedTuple

import numpy as np

__all__ = [
    "Split",
    "MNIST",
    "MnistDataError",
    "load_mnist",
    "read_idx",
    "ModularAdditionData",
    "modular_addition_data",
]


class Split(NamedTuple):
    """One split: ``images`` uint8 ``(N, 28, 28)`` (or tokens), ``labels`` int ``(N,)``."""

    images: np.ndarray
    labels: np.ndarray


class MNIST(NamedTuple):
    train: Split
    test: Split


class MnistDataError(RuntimeError):
    """MNIST could not be read or found; the message says which file and what to do."""


_FILES = {
    ("train", "images"): "train-images-idx3-ubyte",
    ("train", "labels"): "train-labels-idx1-ubyte",
    ("test", "images"): "t10k-images-idx3-ubyte",
    ("test", "labels"): "t10k-labels-idx1-ubyte",
}
_COUNTS = {"train": 60000, "test": 10000}
_MAGIC = {"images": 2051, "labels": 2049}
_HOW_TO = (
    "Put the four IDX files (train-images-idx3-ubyte[.gz], train-labels-idx1-ubyte[.gz], "
    "t10k-images-idx3-ubyte[.gz], t10k-labels-idx1-ubyte[.gz]) in a directory and pass it as "
    "data_dir / --data-dir or set MNIST_DIR to it"
)


def read_idx(path: str | os.PathLike, *, kind: str, count: int | None = None) -> np.ndarray:
    """Reads one IDX file (gzipped or not) and checks its header.

    Args:
        path: file path.
        kind: ``"images"`` (magic 2051, 28x28) or ``"labels"`` (magic 2049).
        count: expected number of records, if known.

    Returns:
        uint8 array ``(N, 28, 28)`` for images, ``(N,)`` for labels.

    Raises:
        MnistDataError: truncated or corrupted file, wrong magic or count;
            the message names the file.
    """
    path = Path(path)
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, gzip.BadGzipFile) as err:
        raise MnistDataError(f"{path}: cannot read ({err}); the file is damaged, replace it") from None
    header_len = 16 if kind == "images" else 8
    if len(raw) < header_len:
        raise MnistDataError(f"{path}: truncated ({len(raw)} bytes, header needs {header_len})")
    header = np.frombuffer(raw[:header_len], dtype=">u4")
    if int(header[0]) != _MAGIC[kind]:
        raise MnistDataError(
            f"{path}: magic number {int(header[0])} is not {_MAGIC[kind]} (IDX {kind}); wrong or corrupted file"
        )
    n = int(header[1])
    if count is not None and n != count:
        raise MnistDataError(f"{path}: header says {n} records, expected {count}")
    shape = (n, int(header[2]), int(header[3])) if kind == "images" else (n,)
    if kind == "images" and shape[1:] != (28, 28):
        raise MnistDataError(f"{path}: images are {shape[1]}x{shape[2]}, expected 28x28")
    size = int(np.prod(shape))
    body = raw[header_len:]
    if len(body) != size:
        raise MnistDataError(f"{path}: {'truncated' if len(body) < size else 'too long'}: {len(body)} data bytes, header implies {size}")
    data = np.frombuffer(body, dtype=np.uint8).reshape(shape)
    if kind == "labels" and data.size and data.max() > 9:
        raise MnistDataError(f"{path}: label {int(data.max())} out of range 0..9; corrupted file")
    return data.copy()


def _find(directory: Path, stem: str) -> Path | None:
    # The usual mirrors spell the files either "x-idx3-ubyte" or "x.idx3-ubyte".
    alt = stem.replace("-idx", ".idx")
    for name in (stem, stem + ".gz", alt, alt + ".gz"):
        if (directory / name).is_file():
            return directory / name
    return None


def _load_idx_dir(directory: Path) -> MNIST:
    if not directory.is_dir():
        raise MnistDataError(f"MNIST directory {directory} does not exist. {_HOW_TO}")
    arrays = {}
    for (split, kind), stem in _FILES.items():
        path = _find(directory, stem)
        if path is None:
            raise MnistDataError(f"{directory}: missing {stem}[.gz]. {_HOW_TO}")
        arrays[split, kind] = read_idx(path, kind=kind, count=_COUNTS[split])
    return MNIST(*(Split(arrays[s, "images"], arrays[s, "labels"].astype(np.int32)) for s in ("train", "test")))


def _load_tfds(tfds_dir: str | None) -> MNIST:
    try:
        import tensorflow_datasets as tfds
    except ImportError as err:  # pragma: no cover - tfds is a requirement
        raise MnistDataError(f"no local MNIST and tensorflow-datasets is not importable ({err}). {_HOW_TO}") from None
    splits = {}
    try:
        for split in ("train", "test"):
            source = tfds.data_source("mnist", split=split, data_dir=tfds_dir, download=True)
            records = [source[i] for i in range(len(source))]
            images = np.stack([np.asarray(r["image"], np.uint8).reshape(28, 28) for r in records])
            labels = np.asarray([int(r["label"]) for r in records], np.int32)
            splits[split] = Split(images, labels)
    except Exception as err:  # TFDS raises many kinds (network, missing deps)
        raise MnistDataError(
            f"no local MNIST was given and TensorFlow Datasets could not provide it ({type(err).__name__}: "
            f"{str(err)[:300]}). {_HOW_TO}"
        ) from None
    return MNIST(splits["train"], splits["test"])


def load_mnist(data_dir: str | os.PathLike | None = None, *, tfds_dir: str | None = None) -> MNIST:
    """Loads MNIST: ``data_dir``, else ``$MNIST_DIR``, else TensorFlow Datasets.

    Args:
        data_dir: directory with the four standard IDX files (gzipped or not).
        tfds_dir: ``data_dir`` for TFDS (its cache) when falling back to it.

    Returns:
        :class:`MNIST` with ``train`` (60000) and ``test`` (10000) splits; images
        uint8 ``(N, 28, 28)``, labels int32 ``(N,)``.

    Raises:
        MnistDataError: naming the bad file, or saying how to provide the data.
    """
    if data_dir is not None:
        return _load_idx_dir(Path(data_dir))
    env = os.environ.get("MNIST_DIR")
    if env:
        return _load_idx_dir(Path(env))
    return _load_tfds(tfds_dir)


class ModularAdditionData(NamedTuple):
    """Token pairs ``(N, 2)`` int32 and labels ``(a + b) mod p`` ``(N,)`` int32."""

    train: Split
    test: Split
    p: int


def modular_addition_data(p: int = 113, train_frac: float = 0.3, seed: int = 0) -> ModularAdditionData:
    """All ``p * p`` pairs ``(a, b)``, split at random into train and test.

    The split depends only on ``(p, train_frac, seed)`` (NumPy's PCG64), so it
    is identical on every machine. The default fraction 0.3 follows Nanda et
    al. (2023) and the ported study.
    """
    if not 0.0 < train_frac < 1.0:
        raise ValueError(f"train_frac must be in (0, 1), got {train_frac}")
    if p < 2:
        raise ValueError(f"p must be >= 2, got {p}")
    a, b = np.meshgrid(np.arange(p), np.arange(p), indexing="ij")
    pairs = np.stack([a.ravel(), b.ravel()], axis=1).astype(np.int32)
    labels = ((pairs[:, 0] + pairs[:, 1]) % p).astype(np.int32)
    order = np.random.default_rng(seed).permutation(len(pairs))
    n_train = int(round(train_frac * len(pairs)))
    tr, te = order[:n_train], order[n_train:]
    return ModularAdditionData(Split(pairs[tr], labels[tr]), Split(pairs[te], labels[te]), p)
