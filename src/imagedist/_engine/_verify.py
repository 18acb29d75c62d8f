"""What makes a finished copy the disk: checks of a copy's result, pure and I/O-free."""

from __future__ import annotations

from .._vhd import fixed_footer_problem
from ..abc import BlobProperties

__all__ = ["copy_problem"]


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
    return fixed_footer_problem(footer, size)
