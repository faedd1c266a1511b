"""File integrity and fetching: streamed sha256, clear errors, atomic verified downloads."""

from __future__ import annotations

import hashlib
import http.client
import os
import tempfile
import urllib.request
import zipfile
import zlib
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from fedcore.datasets.base import DatasetError
from fedcore.datasets.paths import ENV_VAR

CHUNK_BYTES = 1 << 20
USER_AGENT = "fedcore-datasets"  # some hosts answer 403 to urllib's default agent
REDOWNLOAD_HINT = (
    "delete it and run again with download=True (CLI: --set data.download=true), "
    f"or set {ENV_VAR} to a folder that holds a good copy"
)


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in chunks so large files never sit whole in memory."""
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for chunk in iter(lambda: stream.read(CHUNK_BYTES), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verify_sha256(path: Path, expected: str, *, remedy: str = REDOWNLOAD_HINT) -> None:
    """Raise ``DatasetError`` unless ``path`` hashes to ``expected``; ``remedy`` says what to do."""
    actual = sha256_file(path)
    if actual != expected:
        raise DatasetError(
            f"{path} is corrupt or incomplete: sha256 is {actual}, expected {expected}. "
            f"To fix it, {remedy}."
        )


def read_npz(path: Path, what: str) -> dict[str, np.ndarray]:
    """Every array of the NPZ archive ``path`` (pickles refused), or :class:`DatasetError`
    naming ``what`` it should be. A damaged archive fails in many ways (an empty file, a
    truncated or corrupt zip, a bad compressed stream, an unknown compression method, a
    header claiming more than it holds); all of them mean the file cannot be used."""
    try:
        with open(path, "rb") as stream:
            archive = np.load(stream, allow_pickle=False)
            if not isinstance(archive, np.lib.npyio.NpzFile):
                raise ValueError("it holds one bare array, not an NPZ archive of named arrays")
            with archive:
                return {k: archive[k] for k in archive.files}
    except (
        OSError,
        EOFError,
        ValueError,
        MemoryError,
        NotImplementedError,
        zipfile.BadZipFile,
        zlib.error,
    ) as err:
        raise DatasetError(f"{what} {path} is not a readable NPZ file: {err}") from None


def missing_files(folder: Path, names: Iterable[str]) -> list[Path]:
    """The paths under ``folder`` among ``names`` that are not regular files."""
    return [folder / name for name in names if not (folder / name).is_file()]


def missing_error(dataset: str, paths: Sequence[Path], *, downloadable: bool) -> DatasetError:
    """The error for absent files: what was looked for, where, and how to get it."""
    listed = ", ".join(str(path) for path in paths)
    how = (
        "pass download=True (CLI: --set data.download=true) to fetch it there, or "
        if downloadable
        else ""
    )
    return DatasetError(
        f"{dataset} data not found: missing {listed}. To get it, {how}"
        f"set {ENV_VAR} to a folder that holds {dataset}/."
    )


def _fetch_verified(url: str, target: Path, expected_sha256: str, timeout_s: float) -> None:
    """Stream ``url`` to a temp file beside ``target``, check it, then rename it in place.

    The rename is atomic, so ``target`` is either absent or complete and verified, even if
    the process dies mid-download; a failure of any kind removes the temp file.
    """
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    tmp = Path(tmp_name)
    try:
        digest = hashlib.sha256()
        request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(request, timeout=timeout_s) as src:
            for chunk in iter(lambda: src.read(CHUNK_BYTES), b""):
                digest.update(chunk)
                out.write(chunk)
        if digest.hexdigest() != expected_sha256:
            raise DatasetError(
                f"downloaded bytes have sha256 {digest.hexdigest()}, expected {expected_sha256}"
            )
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def download_file(
    filename: str,
    dest_dir: Path,
    expected_sha256: str,
    base_urls: Sequence[str],
    *,
    timeout_s: float = 60.0,
) -> Path:
    """Fetch ``filename`` from the first of ``base_urls`` that serves the right bytes.

    Each base URL is a folder (``https://...``, ``file://...``); a mirror that fails or
    serves bytes with the wrong sha256 is skipped. Raises ``DatasetError`` listing every
    attempt when none succeeds. Returns the verified file's path.
    """
    if not base_urls:
        raise ValueError("download_file needs at least one base URL")
    dest_dir.mkdir(parents=True, exist_ok=True)
    target = dest_dir / filename
    failures = []
    for base in base_urls:
        url = f"{base.rstrip('/')}/{filename}"
        try:
            _fetch_verified(url, target, expected_sha256, timeout_s)
        except (OSError, http.client.HTTPException, DatasetError) as err:
            failures.append(f"{url}: {err}")
            continue
        return target
    raise DatasetError(
        f"could not download {filename} into {dest_dir}; tried:\n  "
        + "\n  ".join(failures)
        + f"\nCheck the network, or place the file there yourself (or set {ENV_VAR})."
    )
