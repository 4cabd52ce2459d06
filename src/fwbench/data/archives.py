"""Read members of the tar.gz and zip archives that CIFAR-10, IMDB and MovieLens are published as.

Every failure is one DataError line naming the archive and what was expected in it,
so a wrong file (an HTML error page saved under the archive's name, the python
tarball where the binary one is configured) stops preprocessing before any work.
"""

from __future__ import annotations

import tarfile
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

from fwbench.errors import DataError


def raw_archive(raw_dir: Path, dataset_cfg, key: str) -> Path:
    """The downloaded file of dataset_cfg.files[key]: its path, or a one-line error naming the step to run."""
    files = dataset_cfg.get("files") or {}
    if key not in files:
        raise DataError(f"dataset {dataset_cfg['name']!r} has no files.{key}: accepted keys are {', '.join(files)}")
    path = Path(raw_dir) / str(files[key]["name"])
    if not path.exists():
        raise DataError(f"{path} not found; run the download step first")
    return path


def tar_members(path: Path, expected: str, wanted: Callable[[str], bool]) -> Iterator[tuple[str, bytes]]:
    """(name, bytes) of every regular file in a .tar.gz whose name is `wanted`, in archive order, streamed (the
    archive is not unpacked, and the other members are skipped, never read into memory)."""
    try:
        with tarfile.open(path, mode="r:gz") as archive:
            for member in archive:
                if member.isfile() and wanted(member.name):
                    yield member.name, archive.extractfile(member).read()
    except (tarfile.TarError, OSError, EOFError) as error:
        raise DataError(f"{path}: not a readable gzip-compressed tar archive ({one_line(error)}); "
                        f"expected {expected}") from None


def zip_member(path: Path, name: str, expected: str) -> bytes:
    """The bytes of one member of a zip archive."""
    try:
        with zipfile.ZipFile(path) as archive:
            if name not in archive.namelist():
                raise DataError(f"{path}: has no member {name}; expected {expected}")
            return archive.read(name)
    except (zipfile.BadZipFile, OSError, EOFError) as error:
        raise DataError(f"{path}: not a readable zip archive ({one_line(error)}); expected {expected}") from None


def one_line(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__
