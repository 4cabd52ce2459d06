"""Download dataset files from a list of mirrors, verified by SHA-256, never half-written.

Each file is streamed into a temporary file beside its destination and hashed on
the way; only a verified file is renamed into place, so an interrupted or
tampered download can never be mistaken for good data by a later pipeline step.

verify="archive" hashes the .gz bytes as served; verify="content" hashes the
gunzipped bytes, for datasets whose mirrors recompress the same data (Debian's
dataset-fashion-mnist package does, so its .gz bytes differ from upstream's).
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import socket
import sys
import tempfile
import time
import urllib.error
import urllib.request
import zlib
from pathlib import Path

from fwbench.errors import ConfigError, DownloadError
from fwbench.units import BYTES_PER_MIB

log = logging.getLogger(__name__)

VERIFY_MODES = ("archive", "content")
MIRROR_SCHEMES = ("http://", "https://", "file://")
CHUNK_BYTES = 1 << 16  # 64 KiB: small enough to keep memory flat, large enough to be fast
PROGRESS_MIN_BYTES = BYTES_PER_MIB  # below 1 MiB a progress line would only flicker
GZIP_WBITS = 16 + zlib.MAX_WBITS  # tells zlib to expect a gzip header and trailer
FILE_MODE = 0o644  # NamedTemporaryFile creates 0600; data files should be readable like any other
HTTP_TOO_MANY_REQUESTS = 429
HTTP_SERVER_ERROR_MIN = 500
LOCAL_MIRROR_HINT = (
    "to use a local copy, add a directory holding the file as a file:// mirror with the Hydra override "
    "'dataset.mirrors=[file:///path/to/dir/]' or add it to mirrors in config/dataset/<name>.yaml"
)


class _MirrorFailure(Exception):
    """A mirror could not deliver a verified file; `transient` says whether retrying may help."""

    def __init__(self, reason: str, transient: bool):
        super().__init__(reason)
        self.transient = transient


def download_file(
    filename: str,
    mirrors: list[str],
    dest_dir: Path,
    sha256: str,
    verify: str,
    retries: int = 3,
    backoff_s: float = 1.0,
    timeout_s: float = 30.0,
) -> Path:
    """Return dest_dir/filename, downloaded from the first mirror that serves a verified copy.

    An existing file that already verifies is reused without touching the network.
    Transient failures are retried `retries` times (so at most retries + 1 attempts per
    mirror) with exponential backoff; permanent ones move on to the next mirror at once.
    """
    _check_arguments(filename, mirrors, sha256, verify, retries)
    dest_dir = Path(dest_dir)
    dest_dir.mkdir(parents=True, exist_ok=True)
    dest = dest_dir / filename
    expected = sha256.lower()
    if dest.exists():
        if _hash_local_file(dest, verify) == expected:
            log.info("using verified %s", dest)
            return dest
        log.warning("%s exists but fails %s verification; downloading it again", dest, verify)

    failures = []
    for mirror in mirrors:
        url = mirror + filename
        try:
            _fetch_with_retries(url, dest, expected, verify, retries, backoff_s, timeout_s)
        except _MirrorFailure as failure:
            log.warning("mirror failed: %s: %s", url, failure)
            failures.append(f"{url}: {failure}")
            continue
        log.info("downloaded %s from %s", dest, url)
        return dest
    raise DownloadError(f"no mirror delivered a verified {filename}: " + "; ".join(failures) + "; " + LOCAL_MIRROR_HINT)


def dataset_files(dataset_cfg) -> list:
    """The file specs (name, sha256) a dataset downloads: none for digits, none when synthetic (made in preprocess)."""
    if dataset_cfg.get("synthetic"):
        return []
    return list((dataset_cfg.get("files") or {}).values())


def download_dataset(dataset_cfg, dest_dir: Path, only: str | None = None) -> list[Path]:
    """Download every file of dataset_files, or the one named `only`; a dataset without any (digits,
    synthetic data) yields []."""
    mirrors = [str(m) for m in dataset_cfg.get("mirrors") or []]
    verify = str(dataset_cfg.get("verify", "archive"))
    specs = dataset_files(dataset_cfg)
    if only is not None:
        names = [str(spec["name"]) for spec in specs]
        if only not in names:
            raise ConfigError(f"download_file={only!r} is not a file of dataset {dataset_cfg.name!r}: accepted are "
                              f"{', '.join(names) or 'none (nothing to download)'}")
        specs = [spec for spec in specs if spec["name"] == only]
    paths = []
    for spec in specs:
        paths.append(download_file(str(spec["name"]), mirrors, Path(dest_dir), str(spec["sha256"]), verify))
    return paths


def _check_arguments(filename: str, mirrors: list[str], sha256: str, verify: str, retries: int) -> None:
    """Reject configuration mistakes before any network traffic, one line each."""
    if verify not in VERIFY_MODES:
        raise ConfigError(f"verify '{verify}' for {filename} is unknown; accepted: {', '.join(VERIFY_MODES)}")
    if not filename or "/" in filename or filename.startswith("."):
        raise ConfigError(f"file name '{filename}' is invalid; accepted: a plain file name without '/' or leading '.'")
    if len(sha256) != hashlib.sha256().digest_size * 2:
        raise ConfigError(f"sha256 '{sha256}' for {filename} is not a 64-character hex digest")
    if retries < 0:
        raise ConfigError(f"retries={retries} is negative; accepted: 0 or more")
    if not mirrors:
        raise DownloadError(f"no mirrors configured for {filename}; {LOCAL_MIRROR_HINT}")
    for mirror in mirrors:
        if not mirror.startswith(MIRROR_SCHEMES) or not mirror.endswith("/"):
            raise ConfigError(
                f"mirror '{mirror}' is invalid; accepted: a base URL starting with "
                f"{', '.join(MIRROR_SCHEMES)} and ending with '/'"
            )


def _fetch_with_retries(
    url: str, dest: Path, sha256: str, verify: str, retries: int, backoff_s: float, timeout_s: float
) -> None:
    """Retry transient failures on one mirror; re-raise permanent ones (and the last transient one)."""
    for attempt in range(retries + 1):
        try:
            _fetch_once(url, dest, sha256, verify, timeout_s)
            return
        except _MirrorFailure as failure:
            if not failure.transient:
                raise
            if attempt == retries:
                raise _MirrorFailure(f"{failure} (gave up after {retries + 1} attempts)", transient=True) from None
            delay = backoff_s * 2**attempt
            log.info("transient failure for %s (%s); retrying in %.1f s", url, failure, delay)
            time.sleep(delay)


def _fetch_once(url: str, dest: Path, sha256: str, verify: str, timeout_s: float) -> None:
    """Stream url into a temp file beside dest, verify it, then rename it into place."""
    tmp = tempfile.NamedTemporaryFile(delete=False, dir=dest.parent, prefix=f".{dest.name}.part-")
    tmp_path = Path(tmp.name)
    try:  # finally (not except) so that KeyboardInterrupt also removes the partial file
        with tmp:
            digest = _download_into(url, tmp, verify, timeout_s)
            tmp.flush()
            os.fsync(tmp.fileno())
        if digest != sha256:
            raise _MirrorFailure(f"checksum mismatch: {verify} sha256 is {digest}, expected {sha256}", transient=False)
        os.chmod(tmp_path, FILE_MODE)
        os.replace(tmp_path, dest)
        tmp_path = None
    finally:
        if tmp_path is not None:
            tmp_path.unlink(missing_ok=True)


def _download_into(url: str, out, verify: str, timeout_s: float) -> str:
    """Copy the response body to `out` in chunks; return the hex digest of the chosen verify mode."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            total = _content_length(response)
            digest = _new_digest(verify)
            received = _copy_chunks(response, out, digest, total, url)
            if total is not None and received != total:
                raise http.client.IncompleteRead(b"", total - received)
            return digest.hexdigest()
    except _MirrorFailure:
        raise
    except Exception as error:  # classify, then decide: retry, next mirror, or propagate
        transient, reason = _classify(error)
        if reason is None:
            raise
        raise _MirrorFailure(reason, transient) from None


def _copy_chunks(response, out, digest, total: int | None, url: str) -> int:
    show_progress = sys.stderr.isatty() and total is not None and total > PROGRESS_MIN_BYTES
    received = 0
    while chunk := response.read(CHUNK_BYTES):
        out.write(chunk)
        digest.update(chunk)
        received += len(chunk)
        if show_progress:
            percent = 100 * received // total
            sys.stderr.write(f"\r{url}: {received / BYTES_PER_MIB:.1f}/{total / BYTES_PER_MIB:.1f} MiB ({percent}%)")
            sys.stderr.flush()
    if show_progress:
        sys.stderr.write("\n")
    return received


def _classify(error: Exception) -> tuple[bool, str | None]:
    """(transient?, one-line reason) for an error from one attempt; reason None means "not ours, propagate"."""
    if isinstance(error, urllib.error.HTTPError):
        transient = error.code == HTTP_TOO_MANY_REQUESTS or error.code >= HTTP_SERVER_ERROR_MIN
        return transient, f"HTTP {error.code} {error.reason}"
    if isinstance(error, urllib.error.URLError):
        inner = error.reason
        if isinstance(inner, BaseException):
            transient, _ = _classify(inner)
            return transient, _one_line(inner)
        return False, _one_line(error)
    if isinstance(error, (socket.timeout, TimeoutError, ConnectionError, http.client.IncompleteRead)):
        return True, _one_line(error)
    if isinstance(error, (http.client.HTTPException, zlib.error)):
        return False, _one_line(error)
    if isinstance(error, OSError):  # e.g. file not found, unknown host: retrying will not help
        return False, _one_line(error)
    return False, None


def _one_line(error: BaseException) -> str:
    """The error text with newlines folded, since the final DownloadError must stay on one line."""
    return " ".join(str(error).split()) or type(error).__name__


def _content_length(response) -> int | None:
    value = response.headers.get("Content-Length")
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def _new_digest(verify: str):
    return hashlib.sha256() if verify == "archive" else _GunzipDigest()


def _hash_local_file(path: Path, verify: str) -> str | None:
    """Digest of an existing file, or None if it is unreadable or not valid gzip (so it gets replaced)."""
    digest = _new_digest(verify)
    try:
        with open(path, "rb") as f:
            while chunk := f.read(CHUNK_BYTES):
                digest.update(chunk)
        return digest.hexdigest()
    except (OSError, zlib.error, _MirrorFailure):
        return None


class _GunzipDigest:
    """SHA-256 of the decompressed bytes, fed with compressed chunks, so nothing large sits in memory."""

    def __init__(self):
        self._sha = hashlib.sha256()
        self._inflater = zlib.decompressobj(GZIP_WBITS)

    def update(self, chunk: bytes) -> None:
        try:
            while chunk:
                if self._inflater.eof:  # gzip allows several members back to back
                    self._inflater = zlib.decompressobj(GZIP_WBITS)
                self._sha.update(self._inflater.decompress(chunk))
                chunk = self._inflater.unused_data if self._inflater.eof else b""
        except zlib.error as error:
            raise _MirrorFailure(f"not a valid gzip stream ({error})", transient=False) from None

    def hexdigest(self) -> str:
        if not self._inflater.eof:
            raise _MirrorFailure("gzip stream is incomplete (truncated download or not gzip)", transient=False)
        return self._sha.hexdigest()
