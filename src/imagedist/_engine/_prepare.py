"""Before a job exists: validate the golden image, and convert it to a fixed VHD when needed."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from .._exceptions import InvalidInput
from .._vhd import Inspection, convert_to_fixed_vhd, inspect_image

__all__ = ["PreparedImage", "prepare_image"]


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

    :raises InvalidInput: for a damaged or unusable file, or one that needs converting when
        ``convert`` is false; nothing is written then.
    """
    inspection = inspect_image(path)
    if inspection.azure_ready:
        return PreparedImage(path, path.stat().st_size, inspection)
    if not convert:
        reasons = "; ".join(p.rstrip(".") for p in inspection.problems)
        raise InvalidInput(
            f"{str(path)!r} is not ready for Azure ({reasons}); drop --no-convert to convert it"
            " on the way, or run `imagedist vhd convert` first."
        )
    work_dir.mkdir(parents=True, exist_ok=True)
    out = work_dir / f"{path.stem}-{_identity(path)}.vhd"
    if not out.exists():  # the same file was converted before (a resubmission): reuse it
        convert_to_fixed_vhd(path, out, force=True)
    converted = inspect_image(out)
    return PreparedImage(out, out.stat().st_size, converted, converted_from=path)


def _identity(path: Path) -> str:
    """Names a conversion after the source's path, size and modification time."""
    stat = path.stat()
    key = f"{path.resolve()}\0{stat.st_size}\0{stat.st_mtime_ns}"
    return hashlib.sha256(key.encode()).hexdigest()[:12]
