"""The data loader: sources in order, the book's preprocessing, and a clear error for bad files."""

import gzip
import os
import shutil

import numpy as np
import pytest

from bnmnist import data
from bnmnist.errors import DataError

from helpers import bad_data_cases, write_idx, write_npz


def test_idx_folder_gzipped_loads_uint8_images_and_labels(tiny_mnist):
    m = data.load(tiny_mnist)
    assert m.x_train.shape == (6000, 28, 28) and m.x_train.dtype == np.uint8
    assert m.y_train.shape == (6000,) and m.y_train.dtype == np.uint8
    assert m.x_test.shape == (1000, 28, 28) and m.y_test.shape == (1000,)


def test_idx_folder_uncompressed_gives_same_arrays(tiny_mnist, tmp_path):
    for name in os.listdir(tiny_mnist):
        with gzip.open(os.path.join(tiny_mnist, name)) as f:
            (tmp_path / name[:-3]).write_bytes(f.read())
    a, b = data.load(tiny_mnist), data.load(str(tmp_path))
    assert np.array_equal(a.x_train, b.x_train) and np.array_equal(a.y_test, b.y_test)


def test_npz_in_keras_format_loads(tmp_path):
    m = data.load(write_npz(tmp_path / "mnist.npz"))
    assert m.x_train.shape == (5200, 28, 28)


def test_split_is_the_books_preprocessing(tiny_mnist):
    m = data.load(tiny_mnist)
    s = data.split(m)
    assert s.X_valid.shape == (5000, 784) and s.X_train.shape == (1000, 784)
    assert s.X_train.dtype == np.float32 and s.y_train.dtype == np.int32
    np.testing.assert_array_equal(s.X_valid[0], m.x_train[0].astype(np.float32).reshape(784) / 255.0)
    np.testing.assert_array_equal(s.y_train, m.y_train[5000:].astype(np.int32))


def test_explicit_path_beats_environment_variable(tiny_mnist, tmp_path, monkeypatch):
    monkeypatch.setenv("BNMNIST_DATA", write_npz(tmp_path / "env.npz"))
    assert len(data.load(tiny_mnist).x_train) == 6000
    assert len(data.load().x_train) == 5200


def test_keras_cache_is_used_and_honours_keras_home(tmp_path, monkeypatch):
    monkeypatch.delenv("BNMNIST_DATA", raising=False)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    (tmp_path / "datasets").mkdir()
    write_npz(tmp_path / "datasets" / "mnist.npz")
    assert data.resolve() == str(tmp_path / "datasets" / "mnist.npz")
    assert len(data.load().x_train) == 5200


def test_nothing_local_and_no_download_says_how_to_pass_a_copy(tmp_path, monkeypatch):
    monkeypatch.delenv("BNMNIST_DATA", raising=False)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    with pytest.raises(DataError, match="--data PATH"):
        data.load(download=False)


@pytest.mark.slow
def test_real_mnist_matches_its_readme(mnist_dir):
    m = data.load(mnist_dir)
    assert m.x_train.shape == (60000, 28, 28) and m.x_test.shape == (10000, 28, 28)
    assert m.y_train[:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
    assert np.bincount(m.y_test).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    assert round(float(m.x_train.mean()) / 255, 4) == 0.1307


def test_decoding_happens_once_per_process(tiny_mnist):
    assert data.load(tiny_mnist) is data.load(tiny_mnist)


@pytest.fixture
def data_cache(tmp_path, monkeypatch):
    """An empty decoded-MNIST cache, and no arrays kept from earlier loads in this process."""
    folder = tmp_path / "cache"
    monkeypatch.setenv(data.CACHE_ENV, str(folder))
    data._load_cached.cache_clear()
    yield folder
    data._load_cached.cache_clear()


def _load_again(path):
    """What a new process would load."""
    data._load_cached.cache_clear()
    return data.load(path)


def _same(a, b):
    return all(np.array_equal(getattr(a, k), getattr(b, k)) for k in data.IDX_FILES) and (
        a.fingerprint() == b.fingerprint()
    )


def test_a_later_load_reads_the_decoded_copy_instead_of_the_source(tiny_mnist, data_cache, monkeypatch):
    decoded = data.load(tiny_mnist)
    assert sorted(p.suffix for p in data_cache.iterdir()) == [".json", ".npy"]

    def no_decoding(*args):
        raise AssertionError("the source was decoded again")

    monkeypatch.setattr(data, "_read_idx", no_decoding)
    cached = _load_again(tiny_mnist)
    assert _same(cached, decoded) and cached.source == decoded.source


def test_a_damaged_cache_entry_is_decoded_again_and_replaced(tiny_mnist, data_cache):
    decoded = data.load(tiny_mnist)
    (npy,) = data_cache.glob("*.npy")
    (meta,) = data_cache.glob("*.json")
    intact = npy.read_bytes()
    damaged = bytearray(intact)
    damaged[len(damaged) // 2] ^= 0x10  # one bit of one training image
    for what, damage in (
        ("a flipped bit", lambda: npy.write_bytes(bytes(damaged))),
        ("a truncated file", lambda: npy.write_bytes(intact[: len(intact) // 3])),
        ("an empty record", lambda: meta.write_text("{}")),
        ("no arrays", lambda: npy.unlink()),
    ):
        damage()
        assert _same(_load_again(tiny_mnist), decoded), what
        assert npy.read_bytes() == intact, f"{what}: the entry was not written again"


def test_a_rewritten_source_file_is_decoded_again_and_its_old_entry_removed(tiny_mnist, data_cache, tmp_path):
    folder = tmp_path / "copy"
    shutil.copytree(tiny_mnist, folder)
    first = data.load(str(folder))
    labels = folder / "train-labels-idx1-ubyte.gz"
    y = first.y_train.copy()
    y[:100] = (y[:100] + 1) % 10  # same size, other content
    write_idx(labels, y)
    second = _load_again(str(folder))
    assert np.array_equal(second.y_train, y)
    assert len(list(data_cache.glob("*.npy"))) == 1


def test_the_data_cache_can_be_turned_off(tiny_mnist, data_cache, monkeypatch, tmp_path):
    monkeypatch.setenv(data.CACHE_ENV, "off")
    monkeypatch.chdir(tmp_path)
    before = set(tmp_path.iterdir())
    data.load(tiny_mnist)
    decoded = []
    read_idx = data._read_idx
    monkeypatch.setattr(data, "_read_idx", lambda *a: decoded.append(a) or read_idx(*a))
    _load_again(tiny_mnist)
    assert len(decoded) == 4, "a second load did not decode the four files"
    assert set(tmp_path.iterdir()) == before


def test_a_cache_that_cannot_be_written_still_loads_the_data(tiny_mnist, data_cache, monkeypatch):
    data_cache.write_text("a file where the folder should be")
    decoded = data.load(tiny_mnist)
    assert _same(_load_again(tiny_mnist), decoded)
    monkeypatch.setenv(data.CACHE_ENV, str(data_cache.parent / "roomless"))
    monkeypatch.setattr(shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10**12, 10**12, 10**6))
    assert _same(_load_again(tiny_mnist), decoded)
    assert list((data_cache.parent / "roomless").iterdir()) == []  # a disk short of room gets nothing


def test_every_kind_of_bad_data_is_one_clear_error(tmp_path, tiny_mnist):
    for name, path, needle in bad_data_cases(tmp_path, tiny_mnist):
        with pytest.raises(DataError) as err:
            data.load(path)
        message = str(err.value)
        assert needle in message, f"{name}: {message}"
        assert "\n" not in message, name
        assert os.path.basename(path.rstrip("/")) in message or tmp_path.name in message, name


@pytest.mark.slow  # imports Keras for its downloader
def test_offline_download_fails_in_one_line_saying_how_to_pass_a_local_copy(tmp_path):
    """The real download path (Keras get_file with its checksum) runs; offline it must fail
    clearly. Where a network is reachable the download may succeed instead, which is fine."""
    from helpers import run_train

    p = run_train("--logdir", tmp_path / "logs", "--dry-run", env={"KERAS_HOME": str(tmp_path / "keras")})
    if p.returncode == 0:
        pytest.skip("this machine could download MNIST")
    assert p.returncode == 2
    err = [l for l in p.stderr.splitlines() if l.startswith("bnmnist-train: error:")]
    assert len(err) == 1 and "could not download MNIST" in err[0] and "--data PATH" in err[0]
    assert "Traceback" not in p.stderr
    assert not (tmp_path / "logs").exists() or os.listdir(tmp_path / "logs") == []
