"""Readers for the two on-disk formats the suite's datasets come in.

IDX (MNIST, Fashion-MNIST): a big-endian header (two zero bytes, a type code, the number of
dimensions, one 32-bit size per dimension) followed by the array, as described on the MNIST page.
CIFAR-10 binary version: records of one label byte and 3072 pixel bytes (1024 red, 1024 green,
1024 blue, each row-major 32x32). The pickled "python version" of CIFAR-10 is deliberately not
supported, because unpickling a downloaded file can run arbitrary code.

This module must stay importable on Python 3.7 with NumPy 1.18: the paper-era runtime uses it.
"""

from __future__ import annotations

import gzip
import hashlib
import struct
from pathlib import Path

import numpy as np

GZIP_MAGIC = b"\x1f\x8b"
IDX_DTYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
CIFAR10_RECORD_BYTES = 1 + 32 * 32 * 3


class DataFormatError(ValueError):
    """A data file that is truncated, corrupt or not in the expected format."""


def read_decompressed(path: Path) -> bytes:
    """Return the content of `path`, gunzipped when it starts with the gzip magic bytes."""
    raw = Path(path).read_bytes()
    if not raw.startswith(GZIP_MAGIC):
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError) as error:  # gzip.BadGzipFile (3.8+) is an OSError
        raise DataFormatError(
            "{} is not a valid gzip file ({}); it is probably truncated or corrupt.".format(path, error)
        ) from error


def sha256_hex(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()


def parse_idx(content: bytes, source: str = "<bytes>") -> np.ndarray:
    """Parse IDX bytes into an array with the shape the header declares.

    Raises DataFormatError naming `source` when the header is not IDX or when the file contains
    fewer or more bytes than its header declares (a truncated or padded file).
    """
    if len(content) < 4 or content[0:2] != b"\x00\x00":
        raise DataFormatError(
            "{} is not an IDX file: it must start with two zero bytes, a type code and a dimension count.".format(
                source
            )
        )

    type_code, ndim = content[2], content[3]
    if type_code not in IDX_DTYPES:
        raise DataFormatError(
            "{} has IDX type code 0x{:02x}; expected one of {}.".format(
                source, type_code, ", ".join("0x{:02x}".format(code) for code in sorted(IDX_DTYPES))
            )
        )

    header_bytes = 4 + 4 * ndim
    if len(content) < header_bytes:
        raise DataFormatError(
            "{} is truncated inside its header: {} bytes, expected at least {}.".format(
                source, len(content), header_bytes
            )
        )
    shape = struct.unpack(">" + "I" * ndim, content[4:header_bytes])

    dtype = IDX_DTYPES[type_code]
    expected = header_bytes + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(content) != expected:
        raise DataFormatError(
            "{} contains {} bytes but its header declares shape {} ({} bytes), so the file is {}.".format(
                source,
                len(content),
                tuple(shape),
                expected,
                "truncated" if len(content) < expected else "longer than declared",
            )
        )
    array = np.frombuffer(content, dtype=dtype, offset=header_bytes).reshape(shape)
    return array.astype(dtype.newbyteorder("="))


def load_idx(path: Path) -> np.ndarray:
    """Read one IDX file, gzipped or not."""
    return parse_idx(read_decompressed(path), source=str(path))


def parse_cifar10_batch(content: bytes, source: str = "<bytes>") -> tuple:
    """Parse one CIFAR-10 binary batch into (images N x 32 x 32 x 3 uint8, labels N uint8)."""
    if len(content) == 0 or len(content) % CIFAR10_RECORD_BYTES != 0:
        raise DataFormatError(
            "{} contains {} bytes, which is not a whole number of {}-byte CIFAR-10 records. The file "
            "is truncated or not from the binary version of CIFAR-10 (cifar-10-binary.tar.gz).".format(
                source, len(content), CIFAR10_RECORD_BYTES
            )
        )

    records = np.frombuffer(content, dtype=np.uint8).reshape(-1, CIFAR10_RECORD_BYTES)
    labels = records[:, 0].copy()
    if labels.max() > 9:
        raise DataFormatError(
            "{} has label {} in record {}; CIFAR-10 labels are 0 to 9. The file is corrupt or not "
            "a CIFAR-10 batch.".format(source, int(labels.max()), int(labels.argmax()))
        )
    images = records[:, 1:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1).copy()
    return images, labels


def read_cifar10_members(location: Path, names: list) -> dict:
    """Return {name: bytes} for CIFAR-10 batch files, from a .tar.gz archive or a folder.

    Members are looked up by base name, so both the canonical archive (whose files sit in
    cifar-10-batches-bin/) and a flat folder work. Only regular files are read from the archive;
    nothing is extracted to disk.
    """
    import tarfile

    location = Path(location)
    if location.is_dir():
        found = {}
        for name in names:
            candidates = [location / name, location / "cifar-10-batches-bin" / name]
            existing = [path for path in candidates if path.is_file()]
            if not existing:
                raise FileNotFoundError(
                    "{} is missing from {} (looked for {}).".format(
                        name, location, " and ".join(str(path) for path in candidates)
                    )
                )
            found[name] = existing[0].read_bytes()
        return found

    try:
        with tarfile.open(str(location), "r:*") as archive:
            members = {Path(member.name).name: member for member in archive.getmembers() if member.isfile()}
            missing = [name for name in names if name not in members]
            if missing:
                raise DataFormatError(
                    "{} does not contain {}. Expected the binary version of CIFAR-10 (cifar-10-binary.tar.gz).".format(
                        location, ", ".join(missing)
                    )
                )
            return {name: archive.extractfile(members[name]).read() for name in names}
    except (tarfile.TarError, EOFError, OSError) as error:
        if isinstance(error, FileNotFoundError):
            raise
        raise DataFormatError(
            "{} could not be read as a tar archive ({}); it is probably truncated or corrupt.".format(location, error)
        ) from error


def load_cifar10_binary(location: Path) -> tuple:
    """Read the CIFAR-10 binary version from an archive or folder.

    Returns ((train_images, train_labels), (test_images, test_labels), {file name: sha256}).
    """
    train_names = ["data_batch_{}.bin".format(index) for index in range(1, 6)]
    contents = read_cifar10_members(location, [*train_names, "test_batch.bin"])
    checksums = {name: sha256_hex(content) for name, content in contents.items()}

    train_parts = [parse_cifar10_batch(contents[name], "{}:{}".format(location, name)) for name in train_names]
    train_images = np.concatenate([images for images, _ in train_parts])
    train_labels = np.concatenate([labels for _, labels in train_parts])
    test = parse_cifar10_batch(contents["test_batch.bin"], "{}:test_batch.bin".format(location))
    return (train_images, train_labels), test, checksums


__all__ = [
    "DataFormatError",
    "load_cifar10_binary",
    "load_idx",
    "parse_cifar10_batch",
    "parse_idx",
    "read_decompressed",
    "sha256_hex",
]
