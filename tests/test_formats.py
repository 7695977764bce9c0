"""IDX and CIFAR-10 binary readers, on the real MNIST files and on damaged or hand-written copies."""

from __future__ import annotations

import gzip
import io
import tarfile
from pathlib import Path

import numpy as np
import pytest
from conftest import MNIST_DIR

from src.data.formats import (
    CIFAR10_RECORD_BYTES,
    DataFormatError,
    load_cifar10_binary,
    load_idx,
    parse_cifar10_batch,
)

MNIST_TRAIN_LABEL_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]


def test_mnist_training_labels_match_published_counts():
    labels = load_idx(MNIST_DIR / "train-labels-idx1-ubyte")

    assert labels.shape == (60000,)
    assert np.bincount(labels).tolist() == MNIST_TRAIN_LABEL_COUNTS


def test_mnist_images_have_expected_shape_and_mean():
    images = load_idx(MNIST_DIR / "t10k-images-idx3-ubyte")

    assert images.shape == (10000, 28, 28)
    assert images.dtype == np.uint8
    # The mean pixel of the canonical MNIST test images is 33.79.
    assert images.mean() == pytest.approx(33.79, abs=0.01)


def test_gzipped_idx_reads_like_plain(tmp_path: Path):
    plain = MNIST_DIR / "t10k-labels-idx1-ubyte"
    zipped = tmp_path / "t10k-labels-idx1-ubyte.gz"
    zipped.write_bytes(gzip.compress(plain.read_bytes()))

    assert np.array_equal(load_idx(zipped), load_idx(plain))


def test_truncated_idx_names_file_and_sizes(tmp_path: Path):
    truncated = tmp_path / "train-labels-idx1-ubyte"
    truncated.write_bytes((MNIST_DIR / "train-labels-idx1-ubyte").read_bytes()[:-100])

    with pytest.raises(DataFormatError) as raised:
        load_idx(truncated)

    message = str(raised.value)
    assert str(truncated) in message
    assert "truncated" in message
    assert "59908 bytes" in message
    assert "60008 bytes" in message


def test_truncated_gzip_is_reported(tmp_path: Path):
    zipped = gzip.compress((MNIST_DIR / "t10k-labels-idx1-ubyte").read_bytes())
    damaged = tmp_path / "t10k-labels-idx1-ubyte.gz"
    damaged.write_bytes(zipped[: len(zipped) // 2])

    with pytest.raises(DataFormatError, match="not a valid gzip file"):
        load_idx(damaged)


def test_non_idx_header_is_rejected(tmp_path: Path):
    bogus = tmp_path / "train-images-idx3-ubyte"
    bogus.write_bytes(b"<html>not found</html>")

    with pytest.raises(DataFormatError, match="is not an IDX file"):
        load_idx(bogus)


def _cifar_records(labels: list[int]) -> bytes:
    """CIFAR-10 binary records whose red plane is the label, green 100 and blue 200."""
    records = bytearray()
    for label in labels:
        records.append(label)
        records += bytes([label]) * 1024 + bytes([100]) * 1024 + bytes([200]) * 1024
    return bytes(records)


def _write_cifar_archive(path: Path, records_per_batch: int = 3, skip: str | None = None) -> None:
    with tarfile.open(path, "w:gz") as archive:
        names = ["data_batch_{}.bin".format(index) for index in range(1, 6)] + ["test_batch.bin"]
        for index, name in enumerate(names):
            if name == skip:
                continue
            content = _cifar_records([(index + offset) % 10 for offset in range(records_per_batch)])
            member = tarfile.TarInfo("cifar-10-batches-bin/" + name)
            member.size = len(content)
            archive.addfile(member, io.BytesIO(content))


def test_cifar10_archive_reads_images_channels_last(tmp_path: Path):
    archive = tmp_path / "cifar-10-binary.tar.gz"
    _write_cifar_archive(archive)

    (train_images, train_labels), (test_images, test_labels), checksums = load_cifar10_binary(archive)

    assert train_images.shape == (15, 32, 32, 3)
    assert test_images.shape == (3, 32, 32, 3)
    assert train_labels.tolist()[:6] == [0, 1, 2, 1, 2, 3]
    assert test_labels.tolist() == [5, 6, 7]
    # The red channel contains the label, green 100 and blue 200, so the planes were transposed to HWC.
    assert (train_images[1, :, :, 0] == 1).all()
    assert (train_images[:, :, :, 1] == 100).all()
    assert (train_images[:, :, :, 2] == 200).all()
    assert set(checksums) == {"data_batch_{}.bin".format(index) for index in range(1, 6)} | {"test_batch.bin"}


def test_cifar10_extracted_folder_reads_like_archive(tmp_path: Path):
    archive = tmp_path / "cifar-10-binary.tar.gz"
    _write_cifar_archive(archive)
    with tarfile.open(archive) as opened:
        opened.extractall(tmp_path / "extracted", filter="data")

    from_folder = load_cifar10_binary(tmp_path / "extracted")
    from_archive = load_cifar10_binary(archive)

    assert np.array_equal(from_folder[0][0], from_archive[0][0])
    assert np.array_equal(from_folder[1][1], from_archive[1][1])


def test_cifar10_truncated_batch_is_rejected():
    content = _cifar_records([1, 2])[:-10]

    with pytest.raises(DataFormatError, match="not a whole number of {}-byte".format(CIFAR10_RECORD_BYTES)):
        parse_cifar10_batch(content, "data_batch_1.bin")


def test_cifar10_label_out_of_range_is_rejected():
    content = bytearray(_cifar_records([1, 2]))
    content[CIFAR10_RECORD_BYTES] = 42

    with pytest.raises(DataFormatError, match="label 42 in record 1"):
        parse_cifar10_batch(bytes(content), "data_batch_1.bin")


def test_cifar10_archive_missing_batch_is_named(tmp_path: Path):
    archive = tmp_path / "cifar-10-binary.tar.gz"
    _write_cifar_archive(archive, skip="data_batch_3.bin")

    with pytest.raises(DataFormatError, match=r"does not contain data_batch_3\.bin"):
        load_cifar10_binary(archive)


def test_cifar10_truncated_archive_is_reported(tmp_path: Path):
    archive = tmp_path / "cifar-10-binary.tar.gz"
    _write_cifar_archive(archive, records_per_batch=50)
    archive.write_bytes(archive.read_bytes()[:2000])

    with pytest.raises(DataFormatError, match="truncated or corrupt"):
        load_cifar10_binary(archive)
