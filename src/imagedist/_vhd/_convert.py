"""Converting any disk image to a fixed VHD that Azure boots.

Raw files and VHDs are converted natively; qcow2, VMDK and VHDX go through
``qemu-img convert -O raw`` straight into the output file, which then gets its footer, once
both our reading of their headers and ``qemu-img info`` agree that they name no other file.
The output is written to a hidden temporary file next to ``OUT`` and renamed at the end:
on failure (the source changing while it is read included) nothing is left behind.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from .._exceptions import InvalidInput
from ._footer import Footer, fixed_footer
from ._foreign import external_reference
from ._inspect import FOREIGN, Detected, FileIdentity, detect, file_identity, open_detected, quote
from ._qemu import info_reference, qemu_img_path, run_convert, run_info
from ._validate import check_size_limit
from ._writer import finish_fixed_vhd, round_up_mib, write_fixed_vhd

__all__ = [
    "ConvertResult",
    "check_self_contained",
    "convert_to_fixed_vhd",
    "qemu_img_path",
    "refuse_reference",
]


@dataclass(frozen=True)
class ConvertResult:
    """A finished conversion: what it read, what it wrote."""

    source: str
    source_format: str
    source_disk_type: str | None
    output: str
    virtual_size: int
    data_bytes: int  # bytes stored in the output (the rest are holes)


@contextlib.contextmanager
def _staged(out: Path) -> Iterator[Path]:
    """A temporary file next to ``out``: renamed to ``out`` on success, removed on failure."""
    fd, name = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".part", dir=out.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, 0o644)
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _sync_folder(out.parent)


def _sync_folder(folder: Path) -> None:
    """Make the rename durable (where folders can be opened, i.e. not on Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _check_paths(src: Path, out: Path, force: bool) -> None:
    where = quote(out)
    if out.is_symlink():
        # Writing through it would put the disk wherever the link points (replacing the link
        # instead would surprise whoever made it): neither is what the user asked for.
        raise InvalidInput(
            f"{where} is a symbolic link (to {str(os.readlink(out))!r}); give the path of a"
            " regular file to write, or remove the link first."
        )
    if out.is_dir():
        raise InvalidInput(f"{where} is a directory; give the path of the VHD file to write.")
    if not out.parent.is_dir():
        raise InvalidInput(f"The folder of {where} does not exist; create it first.")
    if out.exists() and src.exists() and os.path.samefile(src, out):
        raise InvalidInput(f"{where} is the input file itself; give another output path.")
    if out.exists() and not force:
        raise InvalidInput(f"{where} already exists; pass --force to overwrite it.")


def check_self_contained(found: Detected, *, ask_qemu: bool = True) -> None:
    """Refuse an image that names any file besides itself (a backing file, an external data
    file or extent, a parent): read natively first, so qemu-img never opens such a file, then
    (with ``ask_qemu``) as qemu-img sees it: our reading and qemu's must agree there is none.

    :raises InvalidInput: naming the reference, or why qemu-img cannot read the image.
    """
    refuse_reference(found.path, external_reference(found.path, found.format))
    if ask_qemu and found.format in FOREIGN:
        chain = run_info(found.path, found.format)
        refuse_reference(found.path, info_reference(found.path, chain))
        size = chain[0].get("virtual-size")
        if isinstance(size, int):
            check_size_limit(round_up_mib(size), quote(found.path))


def refuse_reference(path: Path, what: str | None) -> None:
    if what is not None:
        raise InvalidInput(
            f"{quote(path)} names {what}; imagedist reads nothing outside the file it is given,"
            " so merge the image into one self-contained file first (with `qemu-img convert`,"
            " if you trust what it names)."
        )


def footer_maker(src: Path) -> Callable[[int], Footer]:
    """Footers for conversions of ``src`` as it is now: the unique id and timestamp come from
    its path, size and modification time, so converting the same file twice gives the same
    bytes (a re-upload's MD5 must match the first upload's) and another file another id."""
    st = src.stat()
    key = f"{src.resolve()}\0{st.st_size}\0{st.st_mtime_ns}"
    unique_id = uuid.uuid5(uuid.NAMESPACE_URL, "imagedist:" + key).bytes

    def make(size: int) -> Footer:
        return fixed_footer(size, unique_id=unique_id, when=st.st_mtime)

    return make


def _convert_foreign(found: Detected, tmp: Path) -> tuple[int, int]:
    check_size_limit(round_up_mib(found.virtual_size), quote(found.path))
    run_convert(found.path, found.format, tmp)
    fd = os.open(tmp, os.O_RDWR)
    try:
        size = finish_fixed_vhd(
            fd, os.fstat(fd).st_size, quote(found.path), footer_maker(found.path)
        )
        os.fsync(fd)
        stored = os.fstat(fd).st_blocks * 512
    finally:
        os.close(fd)
    return size, stored


def _convert(found: Detected, out: Path) -> tuple[int, int, str | None]:
    """Write the fixed VHD through a staged file; (virtual size, data bytes, source disk type)."""
    before = file_identity(found.path)
    if found.format in FOREIGN:
        with _staged(out) as tmp:
            size, stored = _convert_foreign(found, tmp)
            _check_unchanged(found.path, before)
        return size, stored, None
    with open_detected(found) as disk, _staged(out) as tmp:
        result = write_fixed_vhd(disk, tmp, footer_maker(found.path))
        _check_unchanged(found.path, before)
        return result.virtual_size, result.data_bytes, disk.disk_type


def _check_unchanged(path: Path, before: FileIdentity | None) -> None:
    """A file rewritten or replaced while we read it gives a disk that never existed."""
    if file_identity(path) != before:
        raise InvalidInput(
            f"{quote(path)} changed while it was converted; keep it unchanged (stop whatever"
            " writes to it) and convert it again."
        )


def convert_to_fixed_vhd(src: Path, out: Path, force: bool = False) -> ConvertResult:
    """Convert ``src`` (raw, VHD, qcow2, VMDK, VHDX) to a fixed VHD at ``out``.

    Raises InvalidInput for a damaged or unusable input, one that names other files, an
    existing ``out`` without ``force``, an ``out`` that is a symbolic link, or a foreign format
    without qemu-img. On any failure ``out`` is left as it was and nothing else is written.
    """
    _check_paths(src, out, force)
    found = detect(src)
    check_self_contained(found)
    try:
        size, stored, disk_type = _convert(found, out)
    except OSError as exc:
        raise InvalidInput(
            f"Converting {quote(src)} to {quote(out)} failed ({exc.strerror or exc}); check the"
            " free space and permissions of the output folder."
        ) from exc
    return ConvertResult(str(src), found.format, disk_type, str(out), size, stored)
