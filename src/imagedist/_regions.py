"""Temporary alias (issue 9): see :mod:`imagedist._domain.regions`."""

from ._domain.regions import region_name

__all__ = ["region_name"]
