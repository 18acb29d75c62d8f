"""The fleet's targets: one (subscription, region) pair each, with the storage account that serves
it. Offered by :mod:`imagedist._domain`, which imports this module when ``Target`` is first
asked for (reading a job's status needs none)."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Target"]


@dataclass(frozen=True)
class Target:
    """One (subscription, region) pair of the fleet, with the storage account that serves it."""

    name: str
    subscription: str
    region: str
    account: str
    container: str
    resource_group: str  # where its images go
    storage_resource_group: str = "imagedist-storage"  # where its storage account lives
    enabled: bool = True
