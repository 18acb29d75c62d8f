"""The disk sources a job's tier 0 comes from (the :class:`~imagedist.abc.DiskSource` port's
implementations): a disk file on this machine, read sparsely (``pages``), or an Azure managed
disk, read through the image service's access grants (``sources``)."""

from __future__ import annotations

from .sources import (
    LocalDiskReading,
    LocalFileSource,
    ManagedDiskSource,
    disk_sources,
    open_disk_file,
)

__all__ = [
    "LocalDiskReading",
    "LocalFileSource",
    "ManagedDiskSource",
    "disk_sources",
    "open_disk_file",
]
