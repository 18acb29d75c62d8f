"""Before a job exists: validate the golden image, and convert it to a fixed VHD when needed."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from .._exceptions import InvalidInput
from ._convert import check_self_contained, convert_to_fixed_vhd
from ._inspect import Inspection, detect, inspect_image

__all__ = ["PreparedImage", "converted_path", "prepare_image"]


@dataclass(frozen=True)
class PreparedImage:
    """A fixed VHD Azure can boot, and where it came from."""

    path: Path
    size: int
    inspection: Inspection
    converted_from: Path | None = None


def prepare_image(path: Path, work_dir: Path, *, convert: bool = True) -> PreparedImage:
    """Inspect ``path``; convert it into ``work_dir`` if Azure cannot boot it as it is.

    Blocking (it may read the whole disk): run it in a worker thread.

    :raises InvalidInput: for a damaged or unusable file, one that names other files, or one
        that needs converting when ``convert`` is false; nothing is written then (not even
        the work folder).
    """
    inspection = inspect_image(path)
    if inspection.azure_ready:
        return PreparedImage(path, path.stat().st_size, inspection)
    # Refuse what cannot be converted before making anything: a file naming another file first.
    found = detect(path)
    check_self_contained(found, ask_qemu=False)
    if not convert:
        reasons = "; ".join(p.rstrip(".") for p in inspection.problems)
        raise InvalidInput(
            f"{str(path)!r} is not ready for Azure ({reasons}); drop --no-convert to convert it"
            " on the way, or run `imagedist vhd convert` first."
        )
    check_self_contained(found)
    out = converted_path(path, work_dir)
    created = _make_folders(work_dir)
    try:
        if not _reusable(out):
            convert_to_fixed_vhd(path, out, force=True)
        converted = inspect_image(out)
    except BaseException:
        _remove_empty(created)
        raise
    return PreparedImage(out, out.stat().st_size, converted, converted_from=path)


def converted_path(path: Path, work_dir: Path) -> Path:
    """Where ``path`` is converted to: named after its path, size and modification time, so a
    resubmission of the same file reuses its conversion, and a changed file gets a new one."""
    stat = path.stat()
    key = f"{path.resolve()}\0{stat.st_size}\0{stat.st_mtime_ns}"
    return work_dir / f"{path.stem}-{hashlib.sha256(key.encode()).hexdigest()[:12]}.vhd"


def _reusable(out: Path) -> bool:
    """A conversion of the same file made before (a resubmission): only a regular file of ours,
    never a link planted in the work folder, and only if it is still a sound fixed VHD."""
    if out.is_symlink() or not out.is_file():
        return False
    try:
        return inspect_image(out).azure_ready
    except InvalidInput:
        return False


def _make_folders(folder: Path) -> list[Path]:
    """Create ``folder`` and its missing parents; returns the ones created, deepest first."""
    missing = []
    current = folder
    while not current.exists() and current != current.parent:
        missing.append(current)
        current = current.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        _remove_empty(missing)
        raise InvalidInput(
            f"The work folder {str(folder)!r} cannot be created ({exc.strerror or exc}); set"
            " [upload] work_dir to a folder you can write to."
        ) from exc
    return missing


def _remove_empty(folders: list[Path]) -> None:
    """Remove the folders we created for a conversion that failed, if nothing else is in them."""
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:
            return
