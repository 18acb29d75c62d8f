"""How long read access to a copy's source must last: one rule for a blob's SAS and a managed
disk's access URL alike (issue 9)."""

from __future__ import annotations

import math
from datetime import timedelta

__all__ = ["ACCESS_MAX", "ACCESS_MIN", "COPY_RATE", "copy_access_lifetime"]

#: A pessimistic server-side copy rate, across accounts, in bytes per second (PERF-MODEL.md).
COPY_RATE = 4_000_000
#: Added to the copy's time, for a slow start or a retried copy.
ACCESS_MARGIN = timedelta(hours=1)
ACCESS_MIN = timedelta(hours=1)
ACCESS_MAX = timedelta(days=7)  # the longest a user delegation key may live


def copy_access_lifetime(copied_bytes: int) -> timedelta:
    """How long a copy's read access must live: the copy at a pessimistic rate, plus a margin.

    :param copied_bytes: what the copy moves (a page blob's written ranges, a disk's size).
    :return: at least one hour, at most seven days, in whole seconds.
    :raises ValueError: if ``copied_bytes`` is negative.
    """
    if copied_bytes < 0:
        raise ValueError(f"copied bytes cannot be negative: {copied_bytes}")
    copying = timedelta(seconds=math.ceil(copied_bytes / COPY_RATE))
    return min(ACCESS_MAX, max(ACCESS_MIN, copying + ACCESS_MARGIN))
