"""What makes a finished copy the disk: checks of a copy's result, pure and I/O-free."""

from __future__ import annotations

from .._vhd._footer import COOKIE, DISK_FIXED, FOOTER_SIZE, Footer
from ..abc import BlobProperties

__all__ = ["copy_problem", "footer_problem"]


def copy_problem(
    props: BlobProperties, size: int, disk_md5: str, footer: bytes | None
) -> str | None:
    """Why the finished copy ``props`` is not the job's disk of ``size`` bytes, or None.

    With the upload's MD5 (``disk_md5``, hex) the copy must carry the same Content-MD5 (Copy
    Blob copies it along); without one, ``footer`` (the blob's last 512 bytes) must be a valid
    fixed-VHD footer for its size. A size alone proves nothing: a zeroed footer has the size.
    """
    if props.size != size:
        return f"it holds {props.size} bytes, not {size}"
    if disk_md5:
        carried = props.content_md5.hex() if props.content_md5 else "none"
        if carried != disk_md5:
            return f"its Content-MD5 is {carried}, not the upload's {disk_md5}"
        return None
    if footer is None:
        return "its footer could not be read"
    return footer_problem(footer, size)


def footer_problem(raw: bytes, size: int) -> str | None:
    """Why ``raw`` is not a fixed VHD's footer for a blob of ``size`` bytes, or None."""
    if len(raw) != FOOTER_SIZE:
        return f"its footer is {len(raw)} bytes long"
    footer = Footer.unpack(raw)
    if footer.cookie != COOKIE:
        return "it does not end in a VHD footer"
    if footer.checksum != footer.computed_checksum:
        return "its VHD footer's checksum is wrong"
    if footer.disk_type != DISK_FIXED:
        return f"its VHD footer says disk type {footer.disk_type}, not fixed"
    if footer.current_size != size - FOOTER_SIZE:
        return f"its VHD footer gives {footer.current_size} bytes, not {size - FOOTER_SIZE}"
    return None
