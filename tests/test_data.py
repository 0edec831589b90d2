import gzip
import struct

import numpy as np
import pytest

from rebasin_jax.data import MnistDataError, load_mnist, modular_addition_data, read_idx


def _write_idx(path, kind, n, gz=True, magic=None, count=None, body=None):
    if kind == "images":
        header = struct.pack(">IIII", magic or 2051, n if count is None else count, 28, 28)
        data = body if body is not None else np.arange(n * 784, dtype=np.uint32).astype(np.uint8).tobytes()
    else:
        header = struct.pack(">II", magic or 2049, n if count is None else count)
        data = body if body is not None else (np.arange(n) % 10).astype(np.uint8).tobytes()
    raw = header + data
    path.write_bytes(gzip.compress(raw) if gz else raw)


def _fake_mnist_dir(tmp_path, n_train=60000, n_test=10000, gz=True):
    sfx = ".gz" if gz else ""
    _write_idx(tmp_path / f"train-images-idx3-ubyte{sfx}", "images", n_train, gz)
    _write_idx(tmp_path / f"train-labels-idx1-ubyte{sfx}", "labels", n_train, gz)
    _write_idx(tmp_path / f"t10k-images-idx3-ubyte{sfx}", "images", n_test, gz)
    _write_idx(tmp_path / f"t10k-labels-idx1-ubyte{sfx}", "labels", n_test, gz)
    return tmp_path


def test_real_mnist(mnist_path):
    data = load_mnist(mnist_path)
    assert data.train.images.shape == (60000, 28, 28) and data.train.images.dtype == np.uint8
    assert data.test.images.shape == (10000, 28, 28)
    assert data.train.labels.shape == (60000,) and set(np.unique(data.train.labels)) == set(range(10))
    # MNIST's first training label is a 5 and its first test label a 7.
    assert data.train.labels[0] == 5 and data.test.labels[0] == 7
    assert 30 < data.train.images.mean() < 40


def test_env_var_is_used(mnist_path, monkeypatch):
    monkeypatch.setenv("MNIST_DIR", str(mnist_path))
    assert load_mnist().test.labels[0] == 7


@pytest.mark.parametrize("gz", [True, False])
def test_reads_gz_and_plain(tmp_path, gz):
    data = load_mnist(_fake_mnist_dir(tmp_path, gz=gz))
    assert data.train.images.shape == (60000, 28, 28)
    np.testing.assert_array_equal(data.test.labels[:12], np.arange(12) % 10)


def test_truncated_file_names_the_file(tmp_path):
    d = _fake_mnist_dir(tmp_path)
    path = d / "t10k-images-idx3-ubyte.gz"
    _write_idx(path, "images", 10000, body=b"\0" * 100)
    with pytest.raises(MnistDataError, match="t10k-images-idx3-ubyte.gz.*truncated"):
        load_mnist(d)
    # a gzip stream cut short
    raw = (d / "t10k-labels-idx1-ubyte.gz").read_bytes()
    (d / "t10k-labels-idx1-ubyte.gz").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(MnistDataError, match="t10k-labels-idx1-ubyte.gz"):
        read_idx(d / "t10k-labels-idx1-ubyte.gz", kind="labels")


def test_wrong_magic_and_count(tmp_path):
    d = _fake_mnist_dir(tmp_path)
    _write_idx(d / "train-labels-idx1-ubyte.gz", "labels", 60000, magic=2051)
    with pytest.raises(MnistDataError, match="train-labels-idx1-ubyte.gz.*magic number 2051"):
        load_mnist(d)
    _write_idx(d / "train-labels-idx1-ubyte.gz", "labels", 500)
    with pytest.raises(MnistDataError, match="train-labels-idx1-ubyte.gz.*500 records, expected 60000"):
        load_mnist(d)


def test_missing_directory_and_file_say_what_to_do(tmp_path):
    with pytest.raises(MnistDataError, match="does not exist.*MNIST_DIR"):
        load_mnist(tmp_path / "nope")
    d = _fake_mnist_dir(tmp_path)
    (d / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(MnistDataError, match="missing t10k-labels-idx1-ubyte.*--data-dir"):
        load_mnist(d)


def test_tfds_fallback_with_mock_data(monkeypatch, tmp_path):
    tfds = pytest.importorskip("tensorflow_datasets")
    monkeypatch.delenv("MNIST_DIR", raising=False)
    with tfds.testing.mock_data(num_examples=9):
        data = load_mnist(tfds_dir=str(tmp_path))
    assert data.train.images.shape == (9, 28, 28) and data.train.images.dtype == np.uint8
    assert data.test.labels.shape == (9,) and data.test.labels.dtype == np.int32


def test_tfds_failure_explains_how_to_provide_files(monkeypatch, tmp_path):
    tfds = pytest.importorskip("tensorflow_datasets")
    monkeypatch.delenv("MNIST_DIR", raising=False)

    def offline(*args, **kwargs):
        raise ConnectionError("no network")

    monkeypatch.setattr(tfds, "data_source", offline)
    with pytest.raises(MnistDataError, match="ConnectionError.*MNIST_DIR"):
        load_mnist(tfds_dir=str(tmp_path))


def test_modular_addition_data():
    data = modular_addition_data(p=13, train_frac=0.3, seed=4)
    assert len(data.train.labels) == round(0.3 * 169) and len(data.train.labels) + len(data.test.labels) == 169
    allx = np.concatenate([data.train.images, data.test.images])
    assert len({tuple(r) for r in allx}) == 169  # every pair exactly once
    np.testing.assert_array_equal(data.train.labels, (data.train.images[:, 0] + data.train.images[:, 1]) % 13)
    again = modular_addition_data(p=13, train_frac=0.3, seed=4)
    np.testing.assert_array_equal(again.train.images, data.train.images)
    other = modular_addition_data(p=13, train_frac=0.3, seed=5)
    assert not np.array_equal(other.train.images, data.train.images)
    with pytest.raises(ValueError, match="train_frac"):
        modular_addition_data(p=13, train_frac=1.5)
